"""Assembly of tile parts into whole write units, so no chunk is ever read back.

A region (a sample, a tile's valid part, a whole tile in blend mode) splits into the
write units it touches. In crop mode, units the region covers entirely are stored at
once (one zarr call for all of them); every other unit gets a *part*: the region's
piece of it, kept in memory. When a unit's parts are complete it is combined and
stored once, whole. zarr then never reads a chunk to merge into it, which is both the
4x speed-up over read-modify-write and what keeps two writers from erasing each other.

- crop: parts never overlap; a unit is complete when they cover it; combining places them.
- blend: parts are whole tiles' pieces; a unit is complete when every tile of the grid
  that touches it has arrived; combining is their weighted mean (:mod:`ngff_writer.blend`),
  summed in tile order so the result does not depend on arrival order.

This module keeps memory bookkeeping only; the caller stores what it hands back.

Memory bound: only partly complete units are held. For tiles in row-major order that is
about one row of units across the image (times the tiles' depth in 3D); ``max_bytes``
caps it. Past the cap the policy decides: ``"spill"`` (default) hands the oldest partial
units back to the caller, who saves them as fragments in the store
(:mod:`ngff_writer.fragments`); ``"error"`` raises :class:`BufferFullError` before
anything changes. Nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from .blend import count_tiles, tile_weights
from .errors import BufferFullError, OverlapError
from .grid import Box

__all__ = ["Assembler", "BlendRule", "CropRule", "Part", "Piece", "merge_pieces"]

Region = tuple[slice, ...]
PartId = tuple[int, ...]
Policy = Literal["spill", "error"]
_NONE, _ASSEMBLED, _EARLIER = -1, -2, -3
_NO_DATA = np.empty(0)


@dataclasses.dataclass(frozen=True)
class Piece:
    """A block ready to store: whole write units, never a part of one."""

    region: Region
    data: np.ndarray
    box: Box


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


class CropRule:
    """Crop mode: disjoint parts; complete when they cover the unit."""

    direct = True

    def __init__(self, dtype: np.dtype, fill_value: float | int | bool) -> None:
        self.dtype = dtype
        self.fill_value = fill_value

    def complete(self, unit: Region, parts: Mapping[PartId, Part]) -> bool:
        if sum(_volume(p.local) for p in parts.values()) < _volume(unit):
            return False
        covered = np.zeros(tuple(s.stop - s.start for s in unit), bool)
        for p in parts.values():
            covered[p.local] = True
        return bool(covered.all())

    def combine(self, unit: Region, parts: Mapping[PartId, Part]) -> np.ndarray:
        out = np.full(tuple(s.stop - s.start for s in unit), self.fill_value, self.dtype)
        for key in sorted(parts):
            out[parts[key].local] = parts[key].data
        return out


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

    direct = False

    def __init__(self, shape: Sequence[int], spatial: Sequence[int], tile_size: Sequence[int],
                 overlap: Sequence[int], ramp: str, dtype: np.dtype) -> None:
        self.shape = tuple(shape)
        self.spatial = tuple(spatial)
        self.tile_size = tuple(tile_size)
        self.overlap = tuple(overlap)
        self.ramp = ramp
        self.dtype = dtype

    def expected(self, unit: Region) -> int:
        """Number of tiles of the grid that touch ``unit``."""
        return math.prod(
            count_tiles(unit[ax].start, unit[ax].stop, self.shape[ax], t, o)
            for ax, t, o in zip(self.spatial, self.tile_size, self.overlap, strict=True)
        )

    def complete(self, unit: Region, parts: Mapping[PartId, Part]) -> bool:
        return len(parts) >= self.expected(unit)

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


def merge_pieces(pieces: list[Piece]) -> list[Piece]:
    """Join pieces whose boxes are neighbours along one axis into larger boxes.

    Units completed by the same region (e.g. the z-chunks under one tile) then go to
    the store in one zarr call, which encodes their chunks in parallel, with one ledger
    record and one summary instead of one each.
    """
    pieces = list(pieces)
    merged = True
    while merged and len(pieces) > 1:
        merged = False
        for i, j in itertools.combinations(range(len(pieces)), 2):
            a, b = pieces[i], pieces[j]
            (a0, a1), (b0, b1) = a.box, b.box
            differ = [k for k in range(len(a0)) if (a0[k], a1[k]) != (b0[k], b1[k])]
            if len(differ) != 1:
                continue
            k = differ[0]
            if a1[k] == b0[k]:
                first, second = a, b
            elif b1[k] == a0[k]:
                first, second = b, a
            else:
                continue
            region = tuple(slice(first.region[d].start, second.region[d].stop) if d == k
                           else first.region[d] for d in range(len(a0)))
            box = (first.box[0], second.box[1])
            data = np.concatenate([first.data, second.data], axis=k)
            pieces = [p for n, p in enumerate(pieces) if n not in (i, j)] + [Piece(region, data, box)]
            merged = True
            break
    return pieces


def _unit_region(index: Sequence[int], unit: Sequence[int], shape: Sequence[int]) -> Region:
    return tuple(slice(i * u, min((i + 1) * u, n)) for i, u, n in zip(index, unit, shape, strict=True))


class Assembler:
    """Partial write units of one image, held until complete.

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
    """

    def __init__(self, shape: Sequence[int], unit: Sequence[int], rule: CropRule | BlendRule,
                 max_bytes: int, policy: Policy = "spill", strict: bool = True) -> None:
        self.shape = tuple(shape)
        self.unit = tuple(unit)
        self.rule = rule
        self.max_bytes = max_bytes
        self.policy = policy
        self.strict = strict
        self._partials: dict[tuple[int, ...], dict[PartId, Part]] = {}
        self._bytes = 0
        # Per unit, who stored it: the id of the region whose inner part it was, _ASSEMBLED
        # when combined from parts, _EARLIER when found stored (the ledger: an earlier run
        # or another process), _NONE not yet. Detects overlaps in memory, without I/O.
        self._stored = np.full([-(-n // u) for n, u in zip(shape, unit, strict=True)], _NONE, np.int64)
        self._regions: dict[tuple[tuple[int, int], ...], int] = {}
        # Where the parts of units handed out for spilling were (no data): lets a later
        # part tell that, with the fragments, its unit is now complete.
        self._spilled: dict[tuple[int, ...], dict[PartId, Part]] = {}
        self._dense: dict[tuple[int, ...], np.ndarray] = {}
        self._n_stored = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in parts of incomplete units."""
        return self._bytes

    @property
    def pending_units(self) -> list[tuple[int, ...]]:
        """Grid indices of units that are partly complete (their data is only in memory)."""
        return sorted(self._partials)

    def unit_region(self, idx: Sequence[int]) -> Region:
        """Array region of the unit at grid index ``idx``."""
        return _unit_region(idx, self.unit, self.shape)

    def mark_stored(self, covered: np.ndarray) -> None:
        """Take units already stored (from the ledger, e.g. after a restart) as final."""
        self._mark(covered & (self._stored == _NONE), _EARLIER)

    def _mark(self, where: Any, who: int) -> None:
        self._n_stored += int(np.count_nonzero(self._stored[where] == _NONE))
        self._stored[where] = who

    @property
    def all_stored(self) -> bool:
        """True when this writer knows every unit of the image stored."""
        return self._n_stored == self._stored.size

    # ---- taking a region ---------------------------------------------------------------
    def add(self, region: Region, block: np.ndarray, part_id: PartId | None = None,
            copy: bool = False) -> tuple[list[Piece], list[tuple[int, ...]]]:
        """Take ``block`` for ``region`` (stored order).

        Parameters
        ----------
        region, block
            Where the data lands and the data.
        part_id
            Identity of the contribution (blend: the tile start); default: the region.
        copy
            Copy the whole units of ``block`` too (they are stored after the call returns).

        Returns
        -------
        ready
            Whole units to store now.
        to_spill
            Partial units the caller should save as fragments and then :meth:`release`
            (held until then, so a failed save loses nothing): the oldest ones past
            ``max_bytes`` (policy ``"spill"``), and units only the fragments can complete now.

        Raises
        ------
        OverlapError
            The region overlaps a different region already taken (crop mode).
        BufferFullError
            Policy ``"error"`` and the parts would exceed ``max_bytes``.
        """
        key = tuple((s.start, s.stop) for s in region)
        retry = key in self._regions or not self.strict
        region_id = self._regions.get(key, len(self._regions))
        pid = part_id if part_id is not None else tuple(itertools.chain.from_iterable(key))

        # Whole units inside the region (crop only); the array's end counts as a unit edge.
        inner_box = (
            tuple(-(-r.start // u) for r, u in zip(region, self.unit, strict=True)),
            tuple(-(-n // u) if r.stop == n else r.stop // u
                  for r, u, n in zip(region, self.unit, self.shape, strict=True)),
        )
        has_inner = self.rule.direct and all(a < b for a, b in zip(*inner_box, strict=True))
        outer = [range(s.start // u, -(-s.stop // u)) for s, u in zip(region, self.unit, strict=True)]
        edges = [
            idx for idx in itertools.product(*outer)
            if not (has_inner and all(a <= i < b for i, a, b in zip(idx, *inner_box, strict=True)))
        ]

        # ---- check everything before changing anything ----------------------------------
        if has_inner:
            view = self._stored[tuple(slice(a, b) for a, b in zip(*inner_box, strict=True))]
            # Units stored by an earlier run are rewritten whole (a resumed region): no clash.
            clash = (view != _NONE) & (view != region_id) & (view != _EARLIER)
            if clash.any() and not retry:
                raise OverlapError(f"region {key} overlaps units stored by another tile")
            for idx, parts in self._partials.items():
                inside = all(a <= i < b for i, a, b in zip(idx, *inner_box, strict=True))
                if inside and any(p != pid for p in parts) and not retry:
                    raise OverlapError(f"region {key} overlaps another tile inside unit {idx}")
        new_bytes = 0
        plans = []
        for idx in edges:
            if self._stored[idx] != _NONE:
                if retry or self._stored[idx] == _EARLIER:
                    continue  # a retry, or a unit stored by an earlier run: already final
                raise OverlapError(f"region {key} overlaps unit {idx}, stored already")
            unit_region = self.unit_region(idx)
            local = tuple(slice(max(s.start, u.start) - u.start, min(s.stop, u.stop) - u.start)
                          for s, u in zip(region, unit_region, strict=True))
            source = tuple(slice(u.start + loc.start - s.start, u.start + loc.stop - s.start)
                           for s, u, loc in zip(region, unit_region, local, strict=True))
            parts = self._partials.get(idx, {})
            if pid not in parts and self.rule.direct and not retry:
                if any(_intersects(local, p.local) for p in parts.values()):
                    raise OverlapError(f"region {key} overlaps another tile inside unit {idx}")
            # Bytes that stay held: none when this part completes the unit; in crop mode
            # a whole unit buffer the first time, in blend mode the part.
            if not self.rule.complete(unit_region, {**parts, pid: Part(pid, local, block[source])}):
                if not self.rule.direct:
                    new_bytes += _volume(local) * block.itemsize
                elif idx not in self._dense:
                    new_bytes += _volume(unit_region) * block.itemsize
            plans.append((idx, local, source))
        if self.policy == "error" and new_bytes and self._bytes + new_bytes > self.max_bytes:
            raise BufferFullError(
                f"buffering region {key} needs {new_bytes} more bytes; the assembly buffer holds "
                f"{self._bytes} of max {self.max_bytes} (raise max_buffer_bytes, use "
                "buffer_policy='spill', or send tiles in row-major order so units complete sooner)"
            )

        # ---- apply ---------------------------------------------------------------------
        self._regions[key] = region_id
        ready: list[Piece] = []
        to_spill: list[tuple[int, ...]] = []
        if has_inner:
            inner_region = tuple(
                slice(a * u, min(b * u, n))
                for a, b, u, n in zip(*inner_box, self.unit, self.shape, strict=True))
            local = tuple(slice(r.start - s.start, r.stop - s.start)
                          for r, s in zip(inner_region, region, strict=True))
            self._mark(tuple(slice(a, b) for a, b in zip(*inner_box, strict=True)), region_id)
            inner = block[local]
            ready.append(Piece(inner_region, np.array(inner, copy=True) if copy else inner, inner_box))
        for idx, local, source in plans:
            parts = self._partials.setdefault(idx, {})
            # Copies: the caller's array may be reused for the next tile.
            if self.rule.direct:
                # Crop parts go straight into one unit-sized buffer (a single copy); the
                # parts are views of it, and the full buffer is the unit once complete.
                dense = self._dense.get(idx)
                if dense is None:
                    shape = tuple(r.stop - r.start for r in self.unit_region(idx))
                    # Uninitialised: the buffer is used whole only once parts cover it.
                    dense = np.empty(shape, self.rule.dtype)
                    self._dense[idx] = dense
                    self._bytes += dense.nbytes
                dense[local] = block[source]
                parts[pid] = Part(pid, local, dense[local])
            else:
                old = parts.get(pid)
                if old is not None:
                    self._bytes -= old.data.nbytes
                parts[pid] = Part(pid, local, np.array(block[source], copy=True))
                self._bytes += parts[pid].data.nbytes
            spilled = self._spilled.get(idx)
            if spilled is not None:
                if self.rule.complete(self.unit_region(idx), {**spilled, **parts}):
                    to_spill.append(idx)
                continue
            piece = self._try_complete(idx, parts)
            if piece is not None:
                ready.append(piece)

        ready = merge_pieces(ready)
        if self.policy == "spill":
            excess = self._bytes - self.max_bytes
            for idx in self._partials:  # oldest first
                if excess <= 0:
                    break
                if idx not in to_spill:
                    to_spill.append(idx)
                    excess -= self._held_bytes(idx)
        return ready, to_spill

    def _held_bytes(self, idx: tuple[int, ...]) -> int:
        dense = self._dense.get(idx)
        return dense.nbytes if dense is not None else sum(p.data.nbytes for p in self._partials[idx].values())

    def held(self, idx: tuple[int, ...]) -> dict[PartId, Part]:
        """The parts held for unit ``idx`` (empty when none); they stay held."""
        return self._partials.get(idx, {})

    def release(self, idx: tuple[int, ...]) -> None:
        """Stop holding unit ``idx`` (its parts are saved as a fragment)."""
        if idx in self._partials:
            self._pop(idx)

    def _pop(self, idx: tuple[int, ...]) -> dict[PartId, Part]:
        parts = self._partials.pop(idx)
        dense = self._dense.pop(idx, None)
        self._bytes -= dense.nbytes if dense is not None else sum(p.data.nbytes for p in parts.values())
        spilled = self._spilled.setdefault(idx, {})
        spilled.update({k: Part(k, p.local, _NO_DATA) for k, p in parts.items()})
        return parts

    def _try_complete(self, idx: tuple[int, ...], parts: dict[PartId, Part]) -> Piece | None:
        unit_region = self.unit_region(idx)
        if not self.rule.complete(unit_region, parts):
            return None
        dense = None
        if self._partials.get(idx) is parts:
            dense = self._dense.get(idx)  # crop: the parts already sit in place
            self._pop(idx)
        self._spilled.pop(idx, None)
        self._mark(idx, _ASSEMBLED)
        data = dense if dense is not None else self.rule.combine(unit_region, parts)
        return Piece(unit_region, data, (tuple(idx), tuple(i + 1 for i in idx)))

    def forget(self, box: Box) -> None:
        """A store of ``box`` failed: its units count as not stored, so a rewrite is taken."""
        where = tuple(slice(a, b) for a, b in zip(*box, strict=True))
        self._n_stored -= int(np.count_nonzero(self._stored[where] != _NONE))
        self._stored[where] = _NONE
        self._regions.clear()  # every region may be sent again, as new

    def complete_with(self, idx: tuple[int, ...], parts: dict[PartId, Part]) -> Piece | None:
        """Try to complete a unit from parts gathered elsewhere (fragments of every writer)."""
        if self._stored[idx] != _NONE:
            return None  # stored already, here or by an earlier run
        return self._try_complete(idx, parts)
