"""Assembly of regions into whole write units, so no chunk is ever read back.

A region (a sample, a tile's valid part, a whole tile in blend mode) splits into the
write units it touches (:func:`plan`). In crop mode, units the region covers entirely are
stored at once; every other unit gets a *part*: the region's piece of it, held in memory
by a :class:`CropBuffer` or :class:`BlendBuffer` until the unit is complete, then
combined and stored once, whole. zarr then never reads a chunk to merge into it, which
is both the 4x speed-up over read-modify-write and what keeps two writers from erasing
each other.

Each unit is in one :class:`State`; the :class:`Assembler` is a small state machine over
them (this module keeps memory bookkeeping only; the caller stores what it hands back):

==========  =========================================================================
EMPTY       not stored, no part held here (the start, and again after a failed store)
HELD        parts of this writer's regions in memory (maybe others saved as fragments)
SPILLED     this writer's parts saved as fragments, none in memory
STORED      stored (or being stored) from regions of this writer's run only
FOUND       stored by someone else: an earlier run, another writer, or with their fragments
==========  =========================================================================

Retries and overlaps: a region sent again (same extent) is a retry; its parts already
held, spilled or stored are not taken twice. Two *different* regions of one run that
overlap raise :class:`~ngff_writer.errors.OverlapError` (before anything changes): the
overlap is seen in the parts held or spilled, or as a new region touching a STORED unit
(every pixel of which this run's regions already cover). A FOUND unit takes any region
as a retry, since what covered it is not known here: re-sending tiles after a crash, in
any order, by any process, resumes.

Memory: only parts of incomplete units are held. For tiles in row-major order that is
about one row of units across the image (times the tiles' depth in 3D); ``max_bytes``
caps it. Past the cap the policy decides: ``"spill"`` (default) hands the oldest partial
units back to the caller, who saves them as fragments (:mod:`ngff_writer._write.fragments`);
``"error"`` raises :class:`~ngff_writer.errors.BufferFullError` before anything changes.
Besides the parts, a 64-bit hash of each region taken and one byte per unit are kept.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .._declare.grid import JOIN_BELOW, Box, box_slices, neighbour_runs
from ..errors import BufferFullError, OverlapError
from .blend import count_tiles, tile_weights

__all__ = [
    "Assembler", "BlendBuffer", "BlendRule", "CropBuffer", "CropRule", "Part", "Piece", "Plan", "State",
    "merge_pieces", "plan", "unit_region",
]

Region = tuple[slice, ...]
PartId = tuple[int, ...]
Policy = Literal["spill", "error"]


class State(enum.IntEnum):
    """What a write unit is, as one writer sees it (see the module docstring)."""

    EMPTY = 0
    HELD = 1
    SPILLED = 2
    STORED = 3
    FOUND = 4


@dataclasses.dataclass(frozen=True)
class Piece:
    """A block ready to store: whole write units, never a part of one."""

    region: Region
    data: np.ndarray
    box: Box
    #: Whole chunks of a shard being filled (:class:`ShardBuffer`): the unit is ``box``,
    #: stored once every chunk of it is handed on. None: whole units.
    into: ShardBuffer | None = None


@dataclasses.dataclass(frozen=True)
class Part:
    """One region's contribution to one unit: ``data`` for ``local`` (unit coordinates)."""

    id: PartId
    local: Region
    data: np.ndarray


def _volume(region: Region) -> int:
    return math.prod(s.stop - s.start for s in region)


def _intersects(a: Region, b: Region) -> bool:
    return all(x.start < y.stop and y.start < x.stop for x, y in zip(a, b, strict=True))


def _within(region: Region, outer: Region) -> Region:
    """``region`` in the coordinates of ``outer`` (whose start becomes 0)."""
    return tuple(slice(r.start - o.start, r.stop - o.start) for r, o in zip(region, outer, strict=True))


def _at(local: Region, outer: Region) -> Region:
    """``local`` (coordinates of ``outer``) back in the coordinates ``outer`` is in."""
    return tuple(slice(o.start + r.start, o.start + r.stop) for r, o in zip(local, outer, strict=True))


def unit_region(idx: Sequence[int], unit: Sequence[int], shape: Sequence[int]) -> Region:
    """Array region of the unit at grid index ``idx``."""
    return tuple(slice(i * u, min((i + 1) * u, n)) for i, u, n in zip(idx, unit, shape, strict=True))


# ---- planning: where a region goes (geometry only) ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """How a region splits into write units.

    Attributes
    ----------
    key
        The region's extent, ``((start, stop), ...)``: its identity for retries.
    inner
        Box of the units the region covers entirely (crop mode), or None.
    edges
        The other units it touches: ``(unit index, local extent in the unit, source extent in
        the region's block)``.
    """

    key: tuple[tuple[int, int], ...]
    inner: Box | None
    edges: tuple[tuple[tuple[int, ...], Region, Region], ...]


def plan(region: Region, shape: Sequence[int], unit: Sequence[int], whole_units: bool) -> Plan:
    """Split ``region`` of an array of ``shape`` into write units of ``unit``.

    ``whole_units``: units the region covers entirely are planned as one inner box (crop
    mode); otherwise (blend mode, where every unit mixes several tiles) every unit is an edge.
    The array's end counts as a unit edge.
    """
    key = tuple((s.start, s.stop) for s in region)
    start = tuple(-(-r.start // u) for r, u in zip(region, unit, strict=True))
    stop = tuple(-(-n // u) if r.stop == n else r.stop // u
                 for r, u, n in zip(region, unit, shape, strict=True))
    inner = (start, stop) if whole_units and all(a < b for a, b in zip(start, stop, strict=True)) else None
    outer = [range(s.start // u, -(-s.stop // u)) for s, u in zip(region, unit, strict=True)]
    edges = []
    for idx in itertools.product(*outer):
        if inner is not None and all(a <= i < b for i, a, b in zip(idx, *inner, strict=True)):
            continue
        box = unit_region(idx, unit, shape)
        local = tuple(slice(max(s.start, u.start) - u.start, min(s.stop, u.stop) - u.start)
                      for s, u in zip(region, box, strict=True))
        source = tuple(slice(u.start + loc.start - s.start, u.start + loc.stop - s.start)
                       for s, u, loc in zip(region, box, local, strict=True))
        edges.append((idx, local, source))
    return Plan(key, inner, tuple(edges))


# ---- rules: when a unit is complete and how its parts combine ----------------------------------
class CropBuffer:
    """Crop-mode parts of one unit: disjoint, copied once into one unit-sized array."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        # Uninitialised: the array is used whole only once parts cover it.
        self.array = np.empty(shape, dtype)
        self.parts: dict[PartId, Region] = {}

    @property
    def nbytes(self) -> int:
        return self.array.nbytes

    @property
    def extents(self) -> dict[PartId, Region]:
        """Where each part lies in the unit."""
        return self.parts

    def add(self, pid: PartId, local: Region, data: np.ndarray) -> int:
        self.array[local] = data
        self.parts[pid] = local
        return 0

    def held(self) -> dict[PartId, Part]:
        return {pid: Part(pid, local, self.array[local]) for pid, local in self.parts.items()}


class ShardBuffer:
    """Crop-mode parts of a unit of many chunks (a shard), handed on a chunk at a time.

    A :class:`CropBuffer` holds the whole unit until its last part arrives: for a shard of
    the sharded default that is up to 128 MiB per level. Here the chunks a part covers
    whole are handed on at once (views of the part, no copy), and a chunk a part covers
    only in part is held, in a chunk-sized :class:`CropBuffer`, until parts cover it; the
    caller lays what is handed on into the shard (``stream``: its
    :class:`~ngff_writer._write.encode.ShardSink`, with the stores in flight), and the
    unit is complete once every chunk is handed on. Its parts can still be given back
    whole (:meth:`held`), from ``stream.read`` and what is held, for fragments.
    """

    def __init__(self, unit: Region, chunks: tuple[int, ...], dtype: np.dtype) -> None:
        self.unit = unit
        self.shape = tuple(s.stop - s.start for s in unit)
        self.chunks = chunks
        self.dtype = dtype
        self.parts: dict[PartId, Region] = {}
        self.handed: list[Region] = []  # unit coordinates, whole chunks
        self.stream: Any = None  # set by the caller: read(region) and cancel()
        self.nbytes = 0
        self._held: dict[tuple[int, ...], CropBuffer] = {}
        self._done = np.zeros([-(-n // c) for n, c in zip(self.shape, chunks, strict=True)], bool)

    @property
    def extents(self) -> dict[PartId, Region]:
        """Where each part lies in the unit."""
        return self.parts

    @property
    def complete(self) -> bool:
        """True once every chunk is handed on."""
        return bool(self._done.all())

    def add(self, pid: PartId, local: Region, data: np.ndarray
            ) -> tuple[int, list[tuple[Region, np.ndarray, bool]]]:
        """Take a part; return the change in bytes held and what to hand on.

        Handed on: ``(region in array coordinates, data, owned)``, ``owned`` False where
        the data is a view of ``data`` (the caller copies it if it is not its own).
        """
        self.parts[pid] = local
        p = plan(local, self.shape, self.chunks, True)
        out: list[tuple[Region, np.ndarray, bool]] = []
        delta = 0
        if p.inner is not None:
            inside = [i for i in self._held if all(a <= j < b for j, a, b in zip(i, *p.inner, strict=True))]
            for idx in inside:
                delta -= self._held.pop(idx).nbytes  # the same pixels, whole (a pyramid level's retry)
            self._done[box_slices(p.inner)] = True
            inner = tuple(slice(a * c, min(b * c, n))
                          for a, b, c, n in zip(*p.inner, self.chunks, self.shape, strict=True))
            out.append((inner, data[_within(inner, local)], False))
        for idx, sub, source in p.edges:
            if self._done[idx]:
                continue  # handed on already: the same pixels again
            chunk = unit_region(idx, self.chunks, self.shape)
            buffer = self._held.get(idx)
            if buffer is None:
                buffer = self._held[idx] = CropBuffer(tuple(s.stop - s.start for s in chunk), self.dtype)
                delta += buffer.nbytes
            buffer.add(pid, sub, data[source])
            if CropRule.covers(chunk, buffer.parts):
                del self._held[idx]
                delta -= buffer.nbytes
                self._done[idx] = True
                out.append((chunk, buffer.array, True))
        self.handed += [region for region, _, _ in out]
        self.nbytes += delta
        return delta, [(_at(region, self.unit), d, owned) for region, d, owned in out]

    def held(self) -> dict[PartId, Part]:
        """Every part taken, whole: what was handed on read back from ``stream``, with what is held."""
        whole = np.empty(self.shape, self.dtype)
        for local in self.handed:
            whole[local] = self.stream.read(_at(local, self.unit))
        for idx, buffer in self._held.items():
            chunk = unit_region(idx, self.chunks, self.shape)
            for sub in buffer.parts.values():
                whole[_at(sub, chunk)] = buffer.array[sub]
        return {pid: Part(pid, local, whole[local]) for pid, local in self.parts.items()}

    def cancel(self) -> None:
        """Nothing handed on will be stored: the unit goes another way, or not at all."""
        self._held.clear()
        if self.stream is not None:
            self.stream.cancel()


class CropRule:
    """Crop mode: disjoint parts; complete when they cover the unit."""

    whole_units = True
    overlapping_parts = False

    def __init__(self, dtype: np.dtype, fill_value: float | int | bool) -> None:
        self.dtype = dtype
        self.fill_value = fill_value

    def buffer(self, unit: Region) -> CropBuffer:
        return CropBuffer(tuple(s.stop - s.start for s in unit), self.dtype)

    def new_bytes(self, unit: Region, local: Region, itemsize: int) -> int:
        """Bytes a first part of a unit makes this writer hold: the whole unit's array."""
        return _volume(unit) * itemsize

    def complete(self, unit: Region, extents: Mapping[PartId, Region]) -> bool:
        return self.covers(unit, extents)

    @staticmethod
    def covers(unit: Region, extents: Mapping[PartId, Region]) -> bool:
        """True when the parts at ``extents`` (unit coordinates) cover ``unit``."""
        if sum(_volume(r) for r in extents.values()) < _volume(unit):
            return False
        covered = np.zeros(tuple(s.stop - s.start for s in unit), bool)
        for r in extents.values():
            covered[r] = True
        return bool(covered.all())

    def combine(self, unit: Region, parts: Mapping[PartId, Part]) -> np.ndarray:
        out = np.full(tuple(s.stop - s.start for s in unit), self.fill_value, self.dtype)
        for key in sorted(parts):
            out[parts[key].local] = parts[key].data
        return out


class BlendBuffer:
    """Blend-mode parts of one unit: whole tiles' pieces, kept apart until combined."""

    def __init__(self) -> None:
        self.parts: dict[PartId, Part] = {}
        self.nbytes = 0

    @property
    def extents(self) -> dict[PartId, Region]:
        """Where each part lies in the unit."""
        return {pid: part.local for pid, part in self.parts.items()}

    def add(self, pid: PartId, local: Region, data: np.ndarray) -> int:
        old = self.parts.get(pid)
        self.parts[pid] = Part(pid, local, np.array(data, copy=True))
        delta = data.nbytes - (old.data.nbytes if old is not None else 0)
        self.nbytes += delta
        return delta

    def held(self) -> dict[PartId, Part]:
        return dict(self.parts)


class BlendRule:
    """Blend mode: parts are tile pieces; complete when every touching tile has arrived.

    Parameters
    ----------
    shape
        Stored array shape.
    spatial
        Stored positions of the space axes.
    tile_size, overlap
        Per space axis, in stored order.
    ramp
        Weight ramp kind.
    dtype
        Stored dtype (integer results are rounded).
    """

    whole_units = False
    overlapping_parts = True

    def __init__(self, shape: Sequence[int], spatial: Sequence[int], tile_size: Sequence[int],
                 overlap: Sequence[int], ramp: str, dtype: np.dtype) -> None:
        self.shape = tuple(shape)
        self.spatial = tuple(spatial)
        self.tile_size = tuple(tile_size)
        self.overlap = tuple(overlap)
        self.ramp = ramp
        self.dtype = dtype

    def buffer(self, unit: Region) -> BlendBuffer:
        return BlendBuffer()

    def new_bytes(self, unit: Region, local: Region, itemsize: int) -> int:
        return _volume(local) * itemsize

    def expected(self, unit: Region) -> int:
        """Number of tiles of the grid that touch ``unit``."""
        return math.prod(
            count_tiles(unit[ax].start, unit[ax].stop, self.shape[ax], t, o)
            for ax, t, o in zip(self.spatial, self.tile_size, self.overlap, strict=True)
        )

    def complete(self, unit: Region, extents: Mapping[PartId, Region]) -> bool:
        return len(extents) >= self.expected(unit)

    def _weights(self, tile_start: PartId, unit: Region, local: Region) -> np.ndarray:
        space_shape = [self.shape[ax] for ax in self.spatial]
        extent = [min(t, n) for t, n in zip(self.tile_size, space_shape, strict=True)]
        full = tile_weights(tile_start, extent, space_shape, self.overlap, self.ramp)
        index = tuple(
            slice(unit[ax].start + local[ax].start - t0, unit[ax].start + local[ax].stop - t0)
            for ax, t0 in zip(self.spatial, tile_start, strict=True)
        )
        w = full[index]
        # Broadcast over the non-space axes (t, s, c) of the stored block.
        return w.reshape([w.shape[self.spatial.index(i)] if i in self.spatial else 1
                          for i in range(len(self.shape))])

    def combine(self, unit: Region, parts: Mapping[PartId, Part]) -> np.ndarray:
        shape = tuple(s.stop - s.start for s in unit)
        total = np.zeros(shape, np.float64)
        weight = np.zeros(shape, np.float64)
        for key in sorted(parts):  # a fixed order: identical bits whatever the arrival order
            p = parts[key]
            w = self._weights(key, unit, p.local)
            total[p.local] += w * p.data
            weight[p.local] += w
        mean = total / weight
        if self.dtype.kind in "iub":
            mean = np.rint(mean)
        return mean.astype(self.dtype)


Rule = CropRule | BlendRule


def merge_pieces(pieces: list[Piece]) -> list[Piece]:
    """Join pieces whose boxes are neighbours along one axis into larger boxes.

    Small units completed by the same region (e.g. the z-chunks under one tile) then go
    to the store as one block, with one log record and one summary instead of one each.
    Pieces of ``JOIN_BELOW`` bytes or more stay apart: joining them costs a copy of the
    data while both exist, for a record that is cheap beside storing them.
    """
    out = [p for p in pieces if p.data.nbytes >= JOIN_BELOW]
    small = [p for p in pieces if p.data.nbytes < JOIN_BELOW]
    for run, axis in neighbour_runs(small, lambda p: p.box):
        if axis is None:
            out.append(run[0])
            continue
        first, last = run[0], run[-1]
        region = tuple(slice(s.start, last.region[k].stop) if k == axis else s
                       for k, s in enumerate(first.region))
        data = np.concatenate([p.data for p in run], axis=axis)
        out.append(Piece(region, data, (first.box[0], last.box[1])))
    return out


# ---- the state machine ------------------------------------------------------------------------------
class Assembler:
    """Write units of one level, as one writer fills them (see the module docstring).

    Parameters
    ----------
    shape
        Stored array shape.
    unit
        Write-unit shape (shard when sharded, else chunk).
    rule
        :class:`CropRule` or :class:`BlendRule`.
    max_bytes
        Cap on bytes held in parts.
    policy
        What to do past the cap: ``"spill"`` or ``"error"``.
    strict
        Refuse different regions that overlap (``OverlapError``). Pyramid levels pass
        False: their regions are reductions of stored units, so a region that overlaps
        another carries the same pixels (a unit stored again) and is taken as a retry.
    chunks
        The chunks of a unit that is a shard, where the caller fills shards as parts
        arrive (:class:`ShardBuffer`, crop mode only); None: units are held whole.
    """

    def __init__(self, shape: Sequence[int], unit: Sequence[int], rule: Rule, max_bytes: int,
                 policy: Policy = "spill", strict: bool = True, chunks: Sequence[int] | None = None) -> None:
        self.shape = tuple(shape)
        self.unit = tuple(unit)
        self.rule = rule
        self.max_bytes = max_bytes
        self.policy = policy
        self.strict = strict
        self.chunks = tuple(chunks) if chunks is not None and isinstance(rule, CropRule) else None
        self.state = np.full([-(-n // u) for n, u in zip(shape, unit, strict=True)], State.EMPTY, np.uint8)
        self._n_done = 0  # units STORED or FOUND
        self._seen: set[int] = set()  # hashes of the regions taken
        self._held: dict[tuple[int, ...], CropBuffer | BlendBuffer | ShardBuffer] = {}  # oldest first
        self._spilled: dict[tuple[int, ...], dict[PartId, Region]] = {}  # extents of parts saved
        self._bytes = 0

    # ---- state -------------------------------------------------------------------------------
    @property
    def buffered_bytes(self) -> int:
        """Bytes held in parts of incomplete units."""
        return self._bytes

    @property
    def pending_units(self) -> list[tuple[int, ...]]:
        """Grid indices of units whose parts are in memory."""
        return sorted(self._held)

    @property
    def all_stored(self) -> bool:
        """True when this writer knows every unit stored (or being stored)."""
        return self._n_done == self.state.size

    def unit_region(self, idx: Sequence[int]) -> Region:
        """Array region of the unit at grid index ``idx``."""
        return unit_region(idx, self.unit, self.shape)

    def _set(self, where: Any, state: State) -> None:
        view = self.state[where]
        before = np.count_nonzero(view >= State.STORED)
        self.state[where] = state
        after = np.count_nonzero(self.state[where] >= State.STORED)
        self._n_done += int(after - before)

    def mark_stored(self, covered: np.ndarray) -> None:
        """Take units known stored elsewhere (the log: earlier runs, other writers) as FOUND."""
        self._set(covered & (self.state < State.STORED), State.FOUND)

    # ---- taking a region ---------------------------------------------------------------------
    def add(self, region: Region, block: np.ndarray, part_id: PartId | None = None,
            copy: Callable[[np.ndarray], np.ndarray] | None = None
            ) -> tuple[list[Piece], list[tuple[int, ...]]]:
        """Take ``block`` for ``region`` (stored order).

        Parameters
        ----------
        region, block
            Where the data lands and the data.
        part_id
            Identity of the contribution (blend: the tile start); default: the region.
        copy
            What copies the whole units out of ``block`` (they are stored after the call
            returns); None when ``block`` is the assembler's to keep.

        Returns
        -------
        ready
            Whole units to store now (neighbours merged into boxes).
        to_spill
            Units the caller should save as fragments and then :meth:`release` (held until
            then, so a failed save loses nothing): the oldest past ``max_bytes`` (policy
            ``"spill"``), and units that only the fragments can complete now.

        Raises
        ------
        OverlapError
            The region overlaps a different region this run already took (crop mode).
        BufferFullError
            Policy ``"error"`` and the parts would exceed ``max_bytes``.
        """
        p = plan(region, self.shape, self.unit, self.rule.whole_units)
        seen = hash(p.key)
        retry = seen in self._seen or not self.strict
        pid = part_id if part_id is not None else tuple(itertools.chain.from_iterable(p.key))
        takes = self._check(p, pid, retry, block)  # raises before anything changes

        self._seen.add(seen)
        ready: list[Piece] = []
        to_spill: list[tuple[int, ...]] = []
        if p.inner is not None:
            where = box_slices(p.inner)
            # Whole units: stored again even when stored before (a region re-sent after a
            # crash rewrites what it covers whole); a unit with parts in memory is dropped.
            for idx in self._parts_in(p.inner):
                self._drop(idx)
            self._set(where, State.STORED)
            inner_region = tuple(slice(a * u, min(b * u, n))
                                 for a, b, u, n in zip(*p.inner, self.unit, self.shape, strict=True))
            local = tuple(slice(r.start - s.start, r.stop - s.start)
                          for r, s in zip(inner_region, region, strict=True))
            data = block[local]
            ready.append(Piece(inner_region, copy(data) if copy is not None else data, p.inner))
        streamed: list[Piece] = []
        for idx, local, source in takes:
            buffer = self._held.get(idx)
            if buffer is None:
                buffer = self._held[idx] = self._buffer(idx)
                self._bytes += buffer.nbytes
                self.state[idx] = State.HELD
            if isinstance(buffer, ShardBuffer):
                delta, handed = buffer.add(pid, local, block[source])
                self._bytes += delta
                box = (tuple(idx), tuple(i + 1 for i in idx))
                streamed += [Piece(r, d if owned or copy is None else copy(d), box, into=buffer)
                             for r, d, owned in handed]
                if buffer.complete:  # handed on whole: stored once the caller's stores land
                    del self._held[idx]
                    self._set(idx, State.STORED)
                continue
            self._bytes += buffer.add(pid, local, block[source])
            if idx in self._spilled:
                if self.rule.complete(self.unit_region(idx), {**self._spilled[idx], **buffer.extents}):
                    to_spill.append(idx)  # the rest of it is in the fragments
                continue
            piece = self._try_complete(idx, buffer.held(), found=False)
            if piece is not None:
                ready.append(piece)
        if self.policy == "spill":
            excess = self._bytes - self.max_bytes
            for idx, buffer in self._held.items():  # oldest first
                if excess <= 0:
                    break
                if idx not in to_spill:
                    to_spill.append(idx)
                    excess -= buffer.nbytes
        return merge_pieces(ready) + streamed, to_spill

    def _buffer(self, idx: tuple[int, ...]) -> CropBuffer | BlendBuffer | ShardBuffer:
        region = self.unit_region(idx)
        if self._streams(idx):
            assert self.chunks is not None
            return ShardBuffer(region, self.chunks, self.rule.dtype)
        return self.rule.buffer(region)

    def _streams(self, idx: tuple[int, ...]) -> bool:
        # A unit with parts in fragments is completed with them, whole (complete_with).
        unit = self.unit_region(idx)
        return (self.chunks is not None and idx not in self._spilled
                and any(s.stop - s.start > c for s, c in zip(unit, self.chunks, strict=True)))

    def _check(self, p: Plan, pid: PartId, retry: bool, block: np.ndarray
               ) -> list[tuple[tuple[int, ...], Region, Region]]:
        """The parts to take (every check made, nothing changed): OverlapError, BufferFullError."""
        if p.inner is not None and not retry:
            where = box_slices(p.inner)
            if (self.state[where] == State.STORED).any():
                raise OverlapError(f"region {p.key} overlaps units stored from another region")
            for idx in self._parts_in(p.inner):
                raise OverlapError(f"region {p.key} overlaps another region inside unit {idx}")
        takes, new_bytes = [], 0
        for idx, local, source in p.edges:
            state = State(self.state[idx])
            if state == State.FOUND:
                continue  # stored by someone else: this part is a retry
            if state == State.STORED:
                if retry:
                    continue
                raise OverlapError(f"region {p.key} overlaps unit {idx}, stored from another region")
            extents = {**self._spilled.get(idx, {}), **(self._held[idx].extents if idx in self._held else {})}
            if pid in extents:
                continue  # this part is held or spilled already
            if self.strict and not self.rule.overlapping_parts:
                clash = next((k for k, r in extents.items() if _intersects(local, r)), None)
                if clash is not None:
                    raise OverlapError(f"region {p.key} overlaps another region inside unit {idx}")
            buffer = self._held.get(idx)
            if isinstance(buffer, ShardBuffer) or (buffer is None and self._streams(idx)):
                # At most the chunks this part covers in part are held.
                assert self.chunks is not None
                unit = self.unit_region(idx)
                edges = plan(local, [s.stop - s.start for s in unit], self.chunks, True).edges
                new_bytes += len(edges) * math.prod(self.chunks) * block.itemsize
            elif not self.rule.complete(self.unit_region(idx), {**extents, pid: local}) and (
                    buffer is None or not isinstance(buffer, CropBuffer)):
                new_bytes += self.rule.new_bytes(self.unit_region(idx), local, block.itemsize)
            takes.append((idx, local, source))
        if self.policy == "error" and new_bytes and self._bytes + new_bytes > self.max_bytes:
            raise BufferFullError(
                f"buffering region {p.key} needs {new_bytes} more bytes; the assembly buffer holds "
                f"{self._bytes} of max {self.max_bytes} (raise max_buffer_bytes, use "
                "buffer_policy='spill', or send tiles in row-major order so units complete sooner)"
            )
        return takes

    def _parts_in(self, box: Box) -> list[tuple[int, ...]]:
        """Units inside ``box`` with parts held or spilled."""
        return [idx for idx in {**self._held, **self._spilled}
                if all(a <= i < b for i, a, b in zip(idx, *box, strict=True))]

    # ---- parts out (fragments) and in (other writers' fragments) ----------------------------------
    def held(self, idx: tuple[int, ...]) -> dict[PartId, Part]:
        """The parts held for unit ``idx`` (empty when none); they stay held."""
        buffer = self._held.get(idx)
        return buffer.held() if buffer is not None else {}

    def release(self, idx: tuple[int, ...]) -> None:
        """Stop holding unit ``idx``: its parts are saved as a fragment."""
        buffer = self._held.get(idx)
        if buffer is None:
            return
        self._drop(idx)
        self._spilled.setdefault(idx, {}).update(buffer.extents)
        self.state[idx] = State.SPILLED

    def _drop(self, idx: tuple[int, ...]) -> None:
        buffer = self._held.pop(idx, None)
        if buffer is not None:
            self._bytes -= buffer.nbytes
            if isinstance(buffer, ShardBuffer):
                buffer.cancel()

    def complete_with(self, idx: tuple[int, ...], parts: dict[PartId, Part]) -> Piece | None:
        """Try to complete unit ``idx`` from parts gathered elsewhere (every writer's fragments).

        Raises
        ------
        OverlapError
            Crop mode: two different parts of the unit overlap (regions of another tiling
            were saved for it, by another writer or an earlier run).
        """
        if self.state[idx] >= State.STORED:
            return None  # stored already, here or elsewhere
        mine = {**self._spilled.get(idx, {}), **(self._held[idx].extents if idx in self._held else {})}
        everything = {**parts, **self.held(idx)}
        # Pyramid levels (not strict) may hold the same pixels under two ids: the reduction
        # of a unit, and of a box of units that holds it. Same data, not another tiling.
        if self.strict and not self.rule.overlapping_parts:
            ids = sorted(everything)
            for a, b in itertools.combinations(ids, 2):
                if _intersects(everything[a].local, everything[b].local):
                    raise OverlapError(
                        f"the saved parts {a} and {b} of unit {idx} overlap: fragments of another "
                        "tiling were saved for it; `ngff-writer repair` drops them"
                    )
        return self._try_complete(idx, everything, found=not set(everything) <= set(mine))

    def _try_complete(self, idx: tuple[int, ...], parts: dict[PartId, Part], found: bool) -> Piece | None:
        region = self.unit_region(idx)
        if not self.rule.complete(region, {k: p.local for k, p in parts.items()}):
            return None
        buffer = self._held.get(idx)
        if isinstance(buffer, CropBuffer) and set(parts) <= set(buffer.parts):
            data = buffer.array  # the parts already sit in place
        else:
            data = self.rule.combine(region, parts)
        self._drop(idx)
        self._spilled.pop(idx, None)
        self._set(idx, State.FOUND if found else State.STORED)
        return Piece(region, data, (tuple(idx), tuple(i + 1 for i in idx)))

    def forget(self, box: Box) -> None:
        """A store of ``box`` failed: its units count as not stored, so a rewrite is taken.

        A shard being filled there lets go of its parts too: they are taken again.
        """
        for idx in self._parts_in(box):
            if isinstance(self._held.get(idx), ShardBuffer):
                self._drop(idx)
        self._set(box_slices(box), State.EMPTY)
