"""One writer's view of an image: its resolution levels, filled from the top down.

A region written by the caller enters level 0's assembler (:mod:`ngff_writer.assemble`);
the whole write units it hands back are stored in the background, each followed by its
ledger record (:mod:`ngff_writer.track`). A unit stored at level ``k`` is then reduced
in the same background thread (:func:`ngff_writer.pyramid.downsample`, from memory: no
chunk is read back) and enters level ``k + 1``'s assembler as a region, like the valid
part of a tile. So every level goes through one mechanism: whole units only, a ledger
record after the data, and fragments in the store (:mod:`ngff_writer.fragments`) for
units this writer cannot complete alone (shared with other writers, over the memory
cap, or held when it closes).

Memory: the caller's region, the units being stored (as many as the caller lets run
ahead, see :meth:`Levels.drain`), and per level the units that are only partly covered
(capped by ``max_bytes`` each).
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import numpy as np
import zarr
from zarr.abc.store import Store

from .assemble import Assembler, BlendRule, CropRule, Piece, Policy, Region
from .fragments import Fragments
from .pyramid import downsample, target_region
from .spec import ImageSpec
from .stats import summarize
from .storage import join, open_array
from .track import Ledger
from .write import stored_space

__all__ = ["Level", "Levels"]

_POOLS: tuple[ThreadPoolExecutor, ThreadPoolExecutor] | None = None

Derived = tuple[Region, np.ndarray]


def _pools() -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
    """Threads shared by all images: two store whole units, one computes their statistics.

    Made on first use, not at import, and made anew in a forked child (which inherits
    the pools' bookkeeping but none of their threads).
    """
    global _POOLS
    if _POOLS is None:
        _POOLS = (ThreadPoolExecutor(max_workers=2, thread_name_prefix="ngff-writer-store"),
                  ThreadPoolExecutor(max_workers=1, thread_name_prefix="ngff-writer-stats"))
    return _POOLS


def _forget_pools_after_fork() -> None:
    global _POOLS
    _POOLS = None


os.register_at_fork(after_in_child=_forget_pools_after_fork)


class Level:
    """One resolution level: its array, ledger and fragments, and this writer's assembler.

    Parameters
    ----------
    store
        The output store.
    spec
        The image.
    index
        Level number (0: full resolution).
    max_bytes, policy
        Memory cap on partly covered units, and what happens past it (level 0 only;
        pyramid levels always spill, since their regions come after level 0 is stored).
    writable
        Open the array for writing (else read-only).
    """

    def __init__(self, store: Store, spec: ImageSpec, index: int, max_bytes: int, policy: Policy,
                 writable: bool = True) -> None:
        self.store = store
        self.spec = spec
        self.index = index
        self.geometry = spec.levels[index]
        self.ledger = Ledger(store, spec.name, spec, index)
        self.fragments = Fragments(store, spec.name, index)
        self._max_bytes = max_bytes
        self._policy: Policy = policy if index == 0 else "spill"
        self._assembler: Assembler | None = None
        self._array: zarr.Array | None = None
        self._mode = "r+" if writable else "r"

    @property
    def started(self) -> bool:
        """True once this writer has taken a region for this level."""
        return self._assembler is not None

    @property
    def assembler(self) -> Assembler:
        """This writer's assembler for the level, made on first use (it reads the ledger)."""
        if self._assembler is None:
            spec, g = self.spec, self.geometry
            spatial = tuple(i for i, a in enumerate(spec.layout.axes) if a in "zyx")
            if self.index == 0 and spec.blend is not None:
                rule: CropRule | BlendRule = BlendRule(
                    g.shape, spatial, stored_space(spec, spec.blend.tile_size),
                    stored_space(spec, spec.blend.overlap), spec.blend.ramp, spec.np_dtype)
            else:
                rule = CropRule(spec.np_dtype, spec.fill_value)
            self._assembler = Assembler(g.shape, g.unit, rule, self._max_bytes, self._policy,
                                        strict=self.index == 0)
            self._assembler.mark_stored(self.ledger.covered())
        return self._assembler

    def array(self) -> zarr.Array:
        """The level's array, opened on first use."""
        if self._array is None:
            self._array = open_array(self.store, join(self.spec.name, self.geometry.path), self._mode)
        return self._array


class Levels:
    """Every level of one image, as one writer fills them.

    Parameters
    ----------
    store
        The output store.
    spec
        The image.
    max_bytes, policy
        Memory cap on partly covered units per level, and level 0's policy past it.
    writable
        Open the arrays for writing (else read-only).
    """

    def __init__(self, store: Store, spec: ImageSpec, max_bytes: int, policy: Policy,
                 writable: bool = True) -> None:
        self.spec = spec
        self.levels = [Level(store, spec, k, max_bytes, policy, writable)
                       for k in range(len(spec.levels))]
        self._inflight: deque[tuple[Level, Piece, Future[Derived | None]]] = deque()
        self._channel_axis = spec.layout.axes.index("c") if "c" in spec.layout.axes else None

    # ---- state ---------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """True once this writer has written to the image."""
        return self.levels[0].started

    @property
    def all_stored(self) -> bool:
        """True when this writer knows every unit of level 0 stored."""
        return self.started and self.levels[0].assembler.all_stored

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partly covered units held in memory, over every level."""
        return sum(lv.assembler.buffered_bytes for lv in self.levels if lv.started)

    @property
    def buffered_units(self) -> int:
        """Units partly covered and held in memory, over every level."""
        return sum(len(lv.assembler.pending_units) for lv in self.levels if lv.started)

    @property
    def ledgers(self) -> list[Ledger]:
        """Each level's ledger, level 0 first."""
        return [lv.ledger for lv in self.levels]

    # ---- data in -------------------------------------------------------------------
    def add(self, region: Region, block: np.ndarray, part_id: tuple[int, ...] | None = None,
            copy: bool = False) -> None:
        """Take a region of level 0 (stored order); whole units go to the store in the background.

        Raises what :meth:`Assembler.add` raises, before anything changes.
        """
        self._feed(self.levels[0], region, block, part_id, copy)

    def _feed(self, level: Level, region: Region, block: np.ndarray, part_id: tuple[int, ...] | None,
              copy: bool) -> None:
        pieces, to_spill = level.assembler.add(region, block, part_id, copy=copy)
        self._submit(level, pieces)
        self._spill(level, to_spill)

    def _submit(self, level: Level, pieces: list[Piece], after: Callable[[], None] | None = None) -> None:
        # Stores run in the background, two at a time: a zarr call encodes its chunks in
        # parallel, but tiles often complete one unit at a time.
        array = level.array()  # opened here, not raced for by the workers
        for piece in pieces:
            future = _pools()[0].submit(self._store_piece, level, array, piece, after)
            self._inflight.append((level, piece, future))

    def _store_piece(self, level: Level, array: zarr.Array, piece: Piece,
                     after: Callable[[], None] | None) -> Derived | None:
        # Statistics (level 0 only) just read the block: compute them beside the encode
        # and store, which spend much of their time outside the GIL.
        summary = (_pools()[1].submit(summarize, piece.data, self._channel_axis)
                   if level.index == 0 else None)
        array[piece.region] = piece.data
        level.ledger.record(piece.box, summary.result() if summary is not None else [])  # after the data
        if after is not None:
            try:
                after()
            except OSError as exc:
                # The unit is stored and recorded; what is left is scratch data that
                # finalizing sweeps, so this must not fail the write.
                warnings.warn(f"ngff-writer: could not delete the fragments of a stored unit of "
                              f"image {self.spec.name!r} ({exc}); finalizing removes them",
                              RuntimeWarning, stacklevel=1)
        if level.index + 1 == len(self.levels):
            return None
        factors = self.levels[level.index + 1].geometry.factors
        return target_region(piece.region, factors), downsample(piece.data, factors, self.spec.pyramid_method)

    def drain(self, limit: int = 0) -> bool:
        """Wait for background stores until at most ``limit`` are in flight.

        What each store reduces for the level below is taken here, in the caller's
        thread (the assemblers are not thread-safe); that may start more stores, which
        count toward the limit too. Returns True if anything was waited for.

        Raises
        ------
        Exception
            The first store that failed (an ``ExceptionGroup`` when several did), once the
            limit is reached. Its units count as not stored, so writing the same data
            again stores them.
        """
        waited = False
        errors: list[Exception] = []
        while len(self._inflight) > limit:
            waited = True
            level, piece, future = self._inflight.popleft()
            try:
                derived = future.result()
            except Exception as exc:  # raised below, once the limit is reached
                level.assembler.forget(piece.box)
                exc.add_note(
                    f"ngff-writer: storing region {piece.region} of level {level.index} of image "
                    f"{self.spec.name!r} failed; "
                    + ("finalizing rebuilds it from the level above" if level.index else
                       "write the samples or tiles that cover it again")
                )
                errors.append(exc)
                continue
            if derived is not None:
                try:
                    self._feed(self.levels[level.index + 1], *derived, None, False)
                except Exception as exc:
                    errors.append(exc)
        if len(errors) > 1:
            raise ExceptionGroup(f"{len(errors)} stores of image {self.spec.name!r} failed", errors)
        if errors:
            raise errors[0]
        return waited

    # ---- partial units ---------------------------------------------------------------
    def _spill(self, level: Level, units: list[tuple[int, ...]]) -> None:
        # Save partial units as fragments (released from memory only once saved), then
        # complete any unit whose fragments from every writer now cover it; its fragments
        # are deleted after the unit is stored and recorded.
        assembler = level.assembler
        for idx in units:
            parts = assembler.held(idx)
            if parts:
                level.fragments.save(idx, parts)
                assembler.release(idx)
            piece = assembler.complete_with(idx, level.fragments.load(idx))
            if piece is not None:
                self._submit(level, [piece], after=partial(level.fragments.delete, idx))

    def flush(self, start: int = 0) -> None:
        """Save partly covered units as fragments and complete what can be, level by level.

        Levels go in order: the stores that complete units of one level feed the next,
        so after every writer has flushed, every unit all of them together covered, at
        every level, is stored. Fragments left by other writers or by a crashed run are
        completed too.
        """
        for level in self.levels[start:]:
            self.drain(0)
            units = set(level.fragments.units())
            if level.started:
                units |= set(level.assembler.pending_units)
            if units:
                self._spill(level, sorted(units))
        self.drain(0)

    def clear_fragments(self) -> None:
        """Delete every level's fragments (once the image is final, leftovers are garbage)."""
        for level in self.levels:
            level.fragments.clear()
