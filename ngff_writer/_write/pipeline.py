"""One image's pipeline: its levels, fed from the top down, off the caller's thread.

A write call hands level 0 a region (:meth:`Pipeline.add`): its assembler
(:mod:`ngff_writer._write.assemble`) splits it into whole write units, copied, which become
store jobs of the context's engine (:mod:`ngff_writer._write.engine`); the call waits only
while the context's budget of data in flight is spent. Each stored unit is then, in the
engine's thread, recorded in the image's log (:mod:`ngff_writer._track.log`) — after its
data — and its reduction for the level below (computed beside the store) joins this
pipeline's queue. The pipeline works through its queue on a thread of its own, feeding
each reduction to the next level's assembler like the valid parts of tiles, so every
level goes through one mechanism: whole units only, a record after the data, and
fragments in the store (:mod:`ngff_writer._write.fragments`) for units this writer cannot
complete alone. Once every unit of level 0 is handed over, the same thread finalizes the
image (:mod:`ngff_writer._write.finalize`) when the last store lands.

Who touches what: level 0's assembler belongs to the writing thread; the lower levels
belong to whoever holds the pipeline (its own thread, or a caller in :meth:`flush`,
which is the one call that synchronizes). Reads only wait (:meth:`Pipeline.wait`).
Failures in the background are raised once, by the next write, ``flush`` or ``close``.

A shard that parts fill (tiles at level 0, the samples a lower level gathers) is filled
as they arrive: the assembler hands its chunks on as parts cover them, each store lays
them into the shard's :class:`~ngff_writer._write.encode.ShardSink` and reduces them for
the level below, and once every chunk has landed the shard is put in place and recorded
(:class:`_Filling`). A store of the whole unit waits for that, as a retry waits for an
earlier store.

Memory: the context's budget of data in flight (level 0's units, and what they reduce
to), and per level the chunks or units only partly covered (``max_buffer_bytes`` each).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.abc.store import Store

from .._declare.grid import Box, box_slices, grid_shape
from .._declare.pyramid import aligned, downsample, target_region
from .._declare.spec import ImageSpec
from .._ngff.stats import merge_channels, summarize
from .._storage.pagecache import WrittenFiles
from .._storage.stores import join, open_array
from .._track.log import Ledger
from ..errors import StoreError
from .assemble import Assembler, BlendRule, CropRule, Piece, Policy, Region
from .checks import stored_space
from .encode import ChunkWriter, ShardSink
from .engine import StoreJob
from .finalize import finalize_image, read_checkpoint
from .fragments import Fragments

if TYPE_CHECKING:
    from .context import Context

__all__ = ["LevelWriter", "Pipeline"]


class LevelWriter:
    """One resolution level as this writer fills it: assembler, array and fragments.

    Parameters
    ----------
    store
        The output store.
    spec
        The image.
    index
        Level number (0: full resolution).
    ledger
        The image's log (gives the units known stored, and the writer id).
    max_bytes, policy
        Memory cap on partly covered units, and what happens past it (level 0 only;
        pyramid levels always spill, since their regions come after level 0 is stored).
    written
        What becomes of the files this level finishes on a local disk (the context's).
    """

    def __init__(self, store: Store, spec: ImageSpec, index: int, ledger: Ledger, max_bytes: int,
                 policy: Policy, written: WrittenFiles | None = None) -> None:
        self.store = store
        self.written = written
        self.spec = spec
        self.index = index
        self.geometry = spec.levels[index]
        self.ledger = ledger
        self.fragments = Fragments(store, ledger.keys, index, ledger.writer)
        self._max_bytes = max_bytes
        self._policy: Policy = policy if index == 0 else "spill"
        self._assembler: Assembler | None = None
        self._array: zarr.Array[Any] | None = None
        self._direct: ChunkWriter | None = None
        #: Jobs in flight per write unit (a unit's next store waits for the earlier one).
        self.inflight = np.zeros(grid_shape(self.geometry.shape, self.geometry.unit), np.int16)
        #: Pieces waiting for an earlier store of one of their units (retries).
        self.parked: deque[tuple[Piece, Callable[[], None] | None]] = deque()

    @property
    def started(self) -> bool:
        """True once this writer has taken a region for this level."""
        return self._assembler is not None

    @property
    def assembler(self) -> Assembler:
        """This writer's assembler for the level, made on first use (from what the log knows)."""
        if self._assembler is None:
            spec, g = self.spec, self.geometry
            spatial = tuple(i for i, a in enumerate(spec.layout.axes) if a in "zyx")
            if self.index == 0 and spec.blend is not None:
                rule: CropRule | BlendRule = BlendRule(
                    g.shape, spatial, stored_space(spec, spec.blend.tile_size),
                    stored_space(spec, spec.blend.overlap), spec.blend.ramp, spec.np_dtype)
            else:
                rule = CropRule(spec.np_dtype, spec.fill_value)
            chunks = g.chunks if self.fills_shards else None
            self._assembler = Assembler(g.shape, g.unit, rule, self._max_bytes, self._policy,
                                        strict=self.index == 0, chunks=chunks)
            self._assembler.mark_stored(self.ledger.coverage.grids[self.index])
        return self._assembler

    def array(self) -> zarr.Array[Any]:
        """The level's array, opened for writing on first use."""
        if self._array is None:
            self._array = open_array(self.store, join(self.ledger.keys.image, self.geometry.path), "r+")
            self._direct = ChunkWriter.of(self._array.async_array, self.written)
        return self._array

    @property
    def fills_shards(self) -> bool:
        """True when shards of this level are filled as their parts arrive (:class:`ShardSink`).

        That takes our own shard writer, and each chunk's reduction for the level below
        must be a block of that level no other chunk touches, as a whole unit's is.
        """
        direct = self.direct
        below = self.spec.levels[self.index + 1].factors if self.index + 1 < len(self.spec.levels) else None
        return (direct is not None and direct.sharded
                and (below is None or aligned(self.geometry.chunks, self.geometry.shape, below)))

    @property
    def direct(self) -> ChunkWriter | None:
        """Stores whole chunks of the level's array without zarr's pipeline (None: zarr stores them)."""
        self.array()
        return self._direct


class _Filling:
    """A shard being filled as its parts arrive: its sink, and the stores into it in flight.

    It ends (:meth:`Pipeline._end`) once no store is in flight and either every chunk is
    handed on (the shard is then put in place and recorded) or the unit went another way
    (cancelled: nothing of it is kept).
    """

    def __init__(self, pipeline: Pipeline, lw: LevelWriter, sink: ShardSink, box: Box) -> None:
        self.pipeline, self.lw, self.sink, self.box = pipeline, lw, sink, box
        self.jobs = 0  # stores in flight
        self.sealed = False  # every chunk handed on
        self.cancelled = False
        self.failed = False
        self.ended = False
        self.summaries: list[Any] = []

    def read(self, region: Region) -> np.ndarray:
        """What was laid out at ``region``, once the stores in flight have landed."""
        with self.pipeline._cond:
            self.pipeline._cond.wait_for(lambda: self.jobs == 0)
        return self.sink.read(region)

    def cancel(self) -> None:
        self.pipeline._cancel(self)


#: A queue item: feed a reduced region to a level, or forget a unit whose store failed.
_Item = tuple[str, int, Any, Any]


class Pipeline:
    """One output handle's writing of one image: its levels, fed from the top down.

    Parameters
    ----------
    context
        Threads, budget and committer (:class:`~ngff_writer.Context`).
    store
        The output store.
    spec
        The image.
    ledger
        The image's log, as this handle sees it.
    max_bytes, policy
        Memory cap on partly covered units per level, and level 0's policy past it.
    final
        The image is final already (writes are retries, dropped before they get here).
    commit_interval
        Seconds a log record may wait before it is committed (default: the context's).
    """

    def __init__(self, context: Context, store: Store, spec: ImageSpec, ledger: Ledger, max_bytes: int,
                 policy: Policy, final: bool = False, commit_interval: float | None = None) -> None:
        self.context = context
        self.engine = context.engine
        self.store = store
        self.spec = spec
        self.ledger = ledger
        #: True once the image is final (seen by this writer, or made final by it).
        self.final = final
        self.levels = [LevelWriter(store, spec, k, ledger, max_bytes, policy, context.written)
                       for k in range(len(spec.levels))]
        self._channel_axis = spec.layout.axes.index("c") if "c" in spec.layout.axes else None
        # Display statistics are gathered for contrast windows; label images have none.
        self._statistics = spec.label is None
        self._what = [f"level {k} of image {spec.name!r}" for k in range(len(spec.levels))]
        self._cond = threading.Condition()
        self._queue: deque[_Item] = deque()
        self._jobs = 0  # store jobs in flight
        self._busy = False  # the levels below 0 are held (by the pipeline's thread or a flush)
        self._completing = False  # every unit of level 0 is handed over: finalize when stores land
        self._errors: list[BaseException] = []
        self._failed: list[Box] = []  # level 0's units whose store failed, for the writing thread
        self._abandoned = False
        self._closed = False
        context.watch(ledger, commit_interval)
        if not final:
            ledger.start_beating()

    # ---- state ---------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        """True once this writer has written to the image."""
        return self.levels[0].started

    @property
    def holds(self) -> bool:
        """True while this writer has something not yet stored and recorded (or an image to finalize)."""
        return self.started and not self.final and bool(
            self._jobs or self._queue or self._busy or self.ledger.pending or self.all_handed
            or any(lv.assembler.pending_units for lv in self.levels if lv.started))

    @property
    def all_handed(self) -> bool:
        """True when every unit of level 0 is known stored or handed to the engine."""
        return self.started and self.levels[0].assembler.all_stored

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partly covered units held in memory, over every level (waits for the pipeline)."""
        self.wait()
        return sum(lv.assembler.buffered_bytes for lv in self.levels if lv.started)

    @property
    def buffered_units(self) -> int:
        """Units partly covered and held in memory, over every level (waits for the pipeline)."""
        self.wait()
        return sum(len(lv.assembler.pending_units) for lv in self.levels if lv.started)

    # ---- data in (the writing thread) ----------------------------------------------------------
    def add(self, region: Region, block: np.ndarray, part_id: tuple[int, ...] | None = None,
            copy: bool = True) -> None:
        """Take a region of level 0 (stored order); its whole units are stored in the background.

        Waits only while the context's budget of data in flight is spent. ``copy=False``
        when ``block`` is the pipeline's to keep (no one else holds it). Raises what
        :meth:`Assembler.add` raises, before anything changes; then, once the region is
        taken, the failures of the background since the last call (once).
        """
        self._forget_failed()  # so that writing a failed unit again is taken
        budget = self.context.budget
        budget.take(block.nbytes, give_up=lambda: bool(self._errors))
        lw = self.levels[0]
        try:
            pieces, to_spill = lw.assembler.add(region, block, part_id,
                                                copy=self.context.recycler.copy if copy else None)
        except BaseException:
            budget.give(block.nbytes)
            raise
        # What is held as parts counts against max_buffer_bytes instead.
        budget.give(block.nbytes - sum(p.data.nbytes for p in pieces))
        self._submit(lw, pieces, counted=True)
        self._spill(lw, to_spill)
        if lw.assembler.all_stored and not self.final:
            self._complete_soon()
        self.raise_errors()

    def _complete_soon(self) -> None:
        with self._cond:
            self._completing = True
            start = self._claim()
        if start:
            self.context.pipelines.submit(self._run)

    def _submit(self, lw: LevelWriter, pieces: list[Piece], after: Callable[[], None] | None = None,
                counted: bool = False) -> None:
        if not pieces:
            return
        lw.array()  # opened here, by one thread, not raced for by the workers
        # Shards to fill are opened by the thread that owns the level's assembler too.
        opened = set()
        for piece in pieces:
            if piece.into is not None and piece.into.stream is None:
                assert lw.direct is not None
                piece.into.stream = _Filling(self, lw, lw.direct.open_shard(piece.box[0]), piece.box)
                opened.add(id(piece.into))
        ready = []
        with self._cond:
            for piece in pieces:
                if not counted:
                    self.context.budget.count(piece.data.nbytes)
                where = box_slices(piece.box)
                if piece.into is not None:
                    if id(piece.into) in opened:  # a store of the whole unit waits until it ends
                        lw.inflight[where] += 1
                        opened.discard(id(piece.into))
                    piece.into.stream.jobs += 1
                    self._jobs += 1
                    ready.append(piece)
                    continue
                # A unit written again (a retry) must land after its earlier store, never
                # race it: it waits for the jobs in flight that touch the same units.
                if lw.parked or lw.inflight[where].any():
                    lw.parked.append((piece, after))
                    continue
                lw.inflight[where] += 1
                self._jobs += 1
                ready.append(piece)
            for piece in pieces:
                if piece.into is not None and piece.into.complete:
                    piece.into.stream.sealed = True
        for piece in ready:
            self._store(lw, piece, after)

    def _store(self, lw: LevelWriter, piece: Piece, after: Callable[[], None] | None) -> None:
        beside: list[Callable[[np.ndarray], Any]] = []
        if lw.index == 0 and self._statistics:
            beside.append(partial(summarize, channel_axis=self._channel_axis))
        if lw.index + 1 < len(self.levels):
            factors = self.levels[lw.index + 1].geometry.factors
            beside.append(partial(downsample, factors=factors, method=self.spec.pyramid_method))
        if piece.into is not None:
            filling = piece.into.stream
            self.engine.submit(StoreJob(
                lw.array().async_array, piece.region, piece.box, piece.data,
                done=partial(self._filled, filling, piece.region, piece.data.nbytes),
                beside=beside, into=filling.sink, what=self._what[lw.index]))
            return
        self.engine.submit(StoreJob(
            lw.array().async_array, piece.region, piece.box, piece.data,
            done=partial(self._landed, lw, piece.region, piece.box, piece.data.nbytes, after),
            beside=beside, direct=lw.direct,
            what=self._what[lw.index]))

    # ---- the engine's threads ------------------------------------------------------------------
    def _landed(self, lw: LevelWriter, region: Region, box: Box, nbytes: int,
                after: Callable[[], None] | None, error: BaseException | None, results: list[Any]) -> None:
        """A worker stored a piece (or failed to): record it, after its data; queue its reduction.

        Told where the piece was and how large, not the piece: its data is let go by now.
        """
        summary = results.pop(0) if results and lw.index == 0 and self._statistics else None
        reduced = results.pop(0) if results else None
        if error is None and not self._abandoned:
            try:
                # A completed unit's fragments go only once its record is committed.
                self.ledger.record(lw.index, box, summary, then=after)
            except BaseException as exc:
                error = exc
        self.context.budget.give(nbytes)
        self._settled(lw, box, error, region, reduced)

    def _settled(self, lw: LevelWriter, box: Box, error: BaseException | None, region: Region | None = None,
                 reduced: np.ndarray | None = None) -> None:
        """A unit's store ended: no longer in flight; a failure raised later, a reduction queued."""
        with self._cond:
            lw.inflight[box_slices(box)] -= 1
            self._jobs -= 1
            if error is not None:
                self._errors.append(error)
                self._forget(lw, box)  # so that writing its units again is taken
            else:
                self._feed(lw, region, reduced)
            freed = self._unpark(lw)
            start = self._claim()
            self._cond.notify_all()
        for parked, then in freed:
            self._store(lw, parked, then)
        if start:
            self.context.pipelines.submit(self._run)

    def _feed(self, lw: LevelWriter, region: Region | None, reduced: np.ndarray | None) -> None:
        """Under the lock: queue the reduction of ``region`` for the level below ``lw``."""
        if region is not None and reduced is not None and not self._abandoned:
            self._queue.append(("feed", lw.index + 1,
                                target_region(region, self.levels[lw.index + 1].geometry.factors), reduced))
            self.context.budget.count(reduced.nbytes)

    def _unpark(self, lw: LevelWriter) -> list[tuple[Piece, Callable[[], None] | None]]:
        """Under the lock: the parked pieces whose units have no store in flight any more."""
        freed: list[tuple[Piece, Callable[[], None] | None]] = []
        while lw.parked and not lw.inflight[box_slices(lw.parked[0][0].box)].any():
            freed.append(lw.parked.popleft())
            lw.inflight[box_slices(freed[-1][0].box)] += 1
            self._jobs += 1
        return freed

    def _filled(self, filling: _Filling, region: Region, nbytes: int, error: BaseException | None,
                results: list[Any]) -> None:
        """A worker laid chunks into a shard being filled (or failed to): queue their reduction."""
        lw = filling.lw
        summary = results.pop(0) if results and lw.index == 0 and self._statistics else None
        reduced = results.pop(0) if results else None
        self.context.budget.give(nbytes)
        with self._cond:
            filling.jobs -= 1
            if error is not None:
                self._errors.append(error)
                if not filling.failed:  # its parts are taken again: the unit counts as not stored
                    filling.failed = True
                    self._forget(lw, filling.box)
            else:
                if summary is not None:
                    filling.summaries.append(summary)
                self._feed(lw, region, reduced)
            end = self._ends(filling)
            if not end:
                self._jobs -= 1
            start = self._claim()
            self._cond.notify_all()
        if end:
            self._end(filling)
        if start:
            self.context.pipelines.submit(self._run)

    def _cancel(self, filling: _Filling) -> None:
        """The unit of a shard being filled went another way (the assembler's thread)."""
        with self._cond:
            filling.cancelled = True
            end = self._ends(filling)
            if end:
                self._jobs += 1  # _end counts the filling off as the last of its stores
        if end:
            self._end(filling)

    @staticmethod
    def _ends(filling: _Filling) -> bool:
        """Under the lock: True once, when ``filling`` has no store in flight and nothing to wait for."""
        if filling.ended or filling.jobs or not (filling.sealed or filling.cancelled):
            return False
        filling.ended = True
        return True

    def _end(self, filling: _Filling) -> None:
        """Put a filled shard in place and record it, after its data; or leave nothing of it."""
        lw = filling.lw
        error: BaseException | None = None
        try:
            if filling.cancelled or filling.failed or self._abandoned:
                filling.sink.abort()
            else:
                filling.sink.finish()
                summaries = filling.summaries
                self.ledger.record(lw.index, filling.box,
                                   merge_channels(summaries, len(summaries[0])) if summaries else None)
        except BaseException as exc:
            error = exc
            filling.sink.abort()
        self._settled(lw, filling.box, error)

    def _forget(self, lw: LevelWriter, box: Box) -> None:
        """Under the lock: count ``box`` as not stored, by the thread that owns the level's assembler."""
        if lw.index == 0:
            self._failed.append(box)
        else:
            self._queue.append(("forget", lw.index, box, None))

    def _claim(self) -> bool:
        """Under the lock: take the levels below for the pipeline's thread if it has work."""
        if self._busy or not (self._queue or self._finish_due()):
            return False
        self._busy = True
        return True

    def _finish_due(self) -> bool:
        return (self._completing and self._jobs == 0 and not self.final and not self._abandoned
                and not self._closed)

    def _run(self) -> None:
        """The pipeline's thread: work through the queue, then finalize when it is due."""
        try:
            while True:
                with self._cond:
                    if self._queue:
                        item: _Item | None = self._queue.popleft()
                    elif self._finish_due():
                        self._completing = False
                        item = None
                    else:
                        self._busy = False
                        self._cond.notify_all()
                        return
                try:
                    if item is None:
                        self._finish()
                    else:
                        self._do(item)
                except BaseException as exc:  # raised by the next write, flush or close
                    with self._cond:
                        self._errors.append(exc)
        except BaseException:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            raise

    def _do(self, item: _Item) -> None:
        what, level, where, data = item
        lw = self.levels[level]
        if what == "forget":
            lw.assembler.forget(where)
            return
        self.context.budget.give(data.nbytes)
        if self._abandoned:
            return
        pieces, to_spill = lw.assembler.add(where, data, None)
        self._submit(lw, pieces)
        self._spill(lw, to_spill)

    # ---- holding the levels (a caller's flush) ---------------------------------------------------
    def _hold(self) -> None:
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            start = self._claim()
            self._cond.notify_all()
        if start:
            self.context.pipelines.submit(self._run)

    def _settle(self) -> None:
        """While holding the levels: work through the queue until no store is in flight."""
        while True:
            with self._cond:
                while not self._queue and self._jobs:
                    self._cond.wait()
                if not self._queue:
                    return
                item = self._queue.popleft()
            self._do(item)

    def wait(self) -> None:
        """Wait until everything handed over is stored, reduced and recorded (a read's wait).

        Raises nothing and changes nothing: failures wait for the next write, flush or close.
        """
        with self._cond:
            while self._busy or self._queue or self._jobs or self._finish_due():
                self._cond.wait()

    def _forget_failed(self) -> None:
        """Count level 0's units whose store failed as not stored (the writing thread)."""
        with self._cond:
            failed, self._failed = self._failed, []
        for box in failed:
            self.levels[0].assembler.forget(box)

    def raise_errors(self) -> None:
        """Raise the failures of the background since the last call, once (the writing thread)."""
        self._forget_failed()
        with self._cond:
            errors, self._errors = self._errors, []
        if errors:
            raise _one_error(errors)

    # ---- partial units -------------------------------------------------------------------------
    def _spill(self, lw: LevelWriter, units: list[tuple[int, ...]]) -> None:
        # Save partial units as fragments (released from memory only once saved), then
        # complete any unit whose fragments from every writer now cover it; its fragments
        # are deleted once the unit is stored and its record committed.
        assembler = lw.assembler
        for idx in units:
            parts = assembler.held(idx)
            if parts:
                lw.fragments.save(idx, parts)
                assembler.release(idx)
            piece = assembler.complete_with(idx, lw.fragments.load(idx))
            if piece is not None:
                self._submit(lw, [piece], after=partial(lw.fragments.delete, idx))

    def _flush_levels(self, start: int, sweep: bool) -> None:
        # Levels go in order: the stores that complete units of one level feed the next.
        for lw in self.levels[start:]:
            self._settle()
            units = set(lw.assembler.pending_units) if lw.started else set()
            if sweep:
                units |= set(lw.fragments.units())
            if units:
                self._spill(lw, sorted(units))
        self._settle()

    # ---- synchronizing (the writing thread) -------------------------------------------------------
    def flush(self, sweep: bool = False) -> None:
        """Store what this writer holds: partly covered units as fragments, completing what can be.

        After every writer has flushed, every unit all of them together covered, at every
        level, is stored (the writer that saves a unit's last part completes it).
        ``sweep`` also tries every unit that has fragments, whoever saved them: what a
        crashed run left, complete but never stored. That costs a read per such unit, so
        it is for finalizing, not for every flush. Raises the background's failures.
        """
        self._hold()
        try:
            self._flush_levels(0, sweep)
        finally:
            self._release()
        self.wait()  # what the flush set going (finalizing, say) ends here: its failures too
        self.raise_errors()

    def finish(self) -> bool:
        """Make the image final if every unit of level 0 is stored (by any writer); True if final.

        Runs on the pipeline's thread when this writer hands over the last unit, and on
        flush, close and finalize. Never on a read.
        """
        if self.final:
            return True
        self._hold()
        try:
            done = self._finish()
        finally:
            self._release()
        self.wait()
        self.raise_errors()
        return done

    def _finish(self) -> bool:
        """While holding the levels: :meth:`finish`."""
        if self.final:
            return True
        ledger = self.ledger
        self._settle()
        ledger.commit()
        ledger.refresh()
        if not ledger.complete(0):
            # Another writer may have finalized it meanwhile (and deleted the log this view
            # missed): then adopt that, which also sweeps what this writer committed since.
            if read_checkpoint(self.store, ledger.keys) is None:
                return False
        else:
            # Level 0 is stored, so pyramid units this writer holds in part can only be
            # completed with other writers' parts: hand them over (fragments), then
            # finalizing builds whatever is still missing from the level above.
            self._flush_levels(1, sweep=False)
            ledger.commit()
            ledger.refresh()
        finalize_image(self.store, self.spec, ledger, lambda k: self.levels[k].array(), self.context.helpers)
        self.final = True
        return True

    def close(self) -> None:
        """Store what this writer holds (partial units as fragments), commit, finalize if complete.

        After every writer of the image has closed, every unit they covered together is
        stored and recorded. Stops this writer's heartbeat and background commits, whatever
        happens (the last records are committed here).
        """
        try:
            if self.started and not self.final:
                self.ledger.check_identity()
                self.flush()
                self.ledger.commit()
                self.finish()
            else:
                self.wait()
                self.raise_errors()
        finally:
            with self._cond:
                self._closed = True  # nothing starts in the background from now on
            self.wait()  # and what had started ends before close returns
            try:
                self.ledger.commit()
            finally:
                self.context.unwatch(self.ledger)
                if self.ledger.replaced is None:
                    self.ledger.stop_beating()
                # Synced to disk by that commit (durable): the last files' pages can go too.
                self.context.written.release_all()

    def retire(self) -> None:
        """Stop writing: this process replaces the image (its stores in flight end, nothing is recorded)."""
        self._abandoned = True
        self.wait()
        try:
            self.raise_errors()
        except StoreError:
            pass  # stores into an image about to be deleted: their failure changes nothing
        self.ledger.seal()
        self.context.unwatch(self.ledger)
        self.context.written.release_all()

    def abandon(self) -> None:
        """Stop as a killed writer would: nothing more is recorded, committed or finalized."""
        self._abandoned = True
        self.context.unwatch(self.ledger)
        # No file of it stays open here (its disk may be about to be unmounted).
        self.context.written.release_all()


def _one_error(errors: list[BaseException]) -> BaseException:
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    combined = StoreError(f"{len(errors)} stores failed; the first: {first}")
    for other in errors[1:]:
        combined.add_note(f"also: {other}")
    combined.__cause__ = first.__cause__ or first
    return combined
