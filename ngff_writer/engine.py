"""The write engine: one per output, it stores whole write units in the background.

A region written by the caller enters level 0's assembler (:mod:`ngff_writer.assemble`);
the whole write units it hands back become *jobs* of the output's :class:`Engine`. The
engine's worker threads take the queued jobs in batches and store each batch with one
call into zarr (its coroutines gathered, so zarr encodes and writes their chunks
concurrently; runs of whole chunks are encoded and put in the store by
:class:`~ngff_writer.encode.ChunkWriter` where it gives zarr's bytes), then, for each
job, record the unit in the image's log (:mod:`ngff_writer.track`) — after its data —
and reduce it for the pyramid level below (:func:`ngff_writer.pyramid.downsample`, from
memory, beside the store: no chunk is read back). The caller's thread takes those
reductions when it waits for jobs (:meth:`Engine.drain`) and feeds them to the next
level's assembler as regions, like the valid parts of tiles. So every level goes through
one mechanism: whole units only, a record after the data, and fragments in the store
(:mod:`ngff_writer.fragments`) for units this writer cannot complete alone.

What the engine owns, and when it lets go of it:

- ``workers`` threads that store batches, two that compute level-0 statistics and the
  reductions for the level below beside the store, and a pool that encodes the chunks
  of runs stored without zarr's pipeline (:mod:`ngff_writer.encode`); made on first use,
  ended by :meth:`Engine.close` (the output's ``close``), made anew after ``fork``;
- the in-flight limit: the caller waits once more than ``max_inflight`` jobs or
  ``max_inflight_bytes`` of data are queued or being stored; store failures surface
  there, once, as a :class:`~ngff_writer.errors.StoreError`;
- a committer thread that commits each image's pending log records once they have
  waited ``commit_interval`` seconds and renews its writers' heartbeats
  (:mod:`ngff_writer.track`). An output left open at exit or dropped is closed by
  :mod:`ngff_writer.output`, which stores and records everything its images were given.

Memory: the caller's region while it is split, the jobs in flight (bounded as above;
blocks up to ``COPY_LIMIT`` bytes are copied so the call can return before they are
stored, larger ones are stored before it returns), and per level the units that are only
partly covered (capped by ``max_buffer_bytes`` each).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import threading
import warnings
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from .assemble import Assembler, BlendRule, CropRule, Piece, Policy, Region
from .encode import ChunkWriter
from .errors import ImageReplacedError, StoreError
from .finalize import finalize_image, read_checkpoint
from .fragments import Fragments
from .grid import JOIN_BELOW, box_slices, grid_shape, neighbour_runs
from .pyramid import downsample, target_region
from .spec import ImageSpec
from .stats import summarize
from .storage import join, open_array, run
from .track import Ledger
from .write import stored_space

__all__ = ["COPY_LIMIT", "Engine", "ImageWriter"]

#: Blocks up to this size are copied and stored after the write call returns.
COPY_LIMIT = 8 << 20
#: Jobs (and bytes) one worker stores in one call at most.
_BATCH_JOBS, _BATCH_BYTES = 64, 64 << 20

Derived = tuple[Region, np.ndarray]
_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()
_NUMBERS = itertools.count(1)


@dataclasses.dataclass(eq=False)
class _Job:
    writer: ImageWriter
    level: int
    array: zarr.AsyncArray[Any]
    piece: Piece
    after: Callable[[], None] | None
    #: Stores the job's chunks without zarr's pipeline, where that gives zarr's bytes.
    direct: ChunkWriter | None = None
    future: Future[Derived | None] = dataclasses.field(default_factory=Future)

    @property
    def nbytes(self) -> int:
        return self.piece.data.nbytes


class Engine:
    """Worker threads, in-flight limit and log committer shared by an output's images.

    Parameters
    ----------
    workers
        Threads that store write units (each stores a batch of queued units per call).
    max_inflight, max_inflight_bytes
        Jobs, and bytes of their data, queued or being stored before a write call waits.
        32 MiB keeps tiled writing as fast as 256 MiB did (bench_tiles, 2 cores) with
        a third of its memory: the stores, not the queue, are the bottleneck.
    commit_interval
        Seconds a log record may wait before it is committed (bounds what a killed writer
        loses).
    """

    def __init__(self, workers: int = 2, max_inflight: int = 64, max_inflight_bytes: int = 32 << 20,
                 commit_interval: float = 1.0) -> None:
        self.workers = workers
        self.max_inflight = max_inflight
        self.max_inflight_bytes = max_inflight_bytes
        self.commit_interval = commit_interval
        self._lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._inflight: deque[_Job] = deque()
        self._inflight_bytes = 0
        self._pools: tuple[ThreadPoolExecutor, ThreadPoolExecutor, ThreadPoolExecutor] | None = None
        self._ledgers: weakref.WeakSet[Ledger] = weakref.WeakSet()
        self._stop = threading.Event()
        self._committer: threading.Thread | None = None
        self._warned = False
        self._closed = False
        #: Prefix of this engine's thread names.
        self.name = f"ngff-writer-{next(_NUMBERS)}"
        _ENGINES.add(self)

    # ---- lifecycle ---------------------------------------------------------------------
    def _get_pools(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor, ThreadPoolExecutor]:
        if self._closed:
            raise RuntimeError("the engine is closed")
        if self._pools is None:
            # Chunks encoded without zarr's pipeline use as many threads as zarr's would:
            # the setting that tunes one tunes both.
            encoders = zarr.config.get("codec_pipeline.max_workers", None) or os.cpu_count() or 1
            self._pools = (_started_pool(self.workers, f"{self.name}-store"),
                           _started_pool(2, f"{self.name}-beside"),
                           _started_pool(encoders, f"{self.name}-encode"))
        return self._pools

    @property
    def helpers(self) -> ThreadPoolExecutor:
        """Threads for work beside the stores (statistics, reductions, rebuilding units)."""
        return self._get_pools()[1]

    def watch(self, ledger: Ledger) -> None:
        """Commit ``ledger``'s records in the background once they are due."""
        self._ledgers.add(ledger)
        if self._committer is None and not self._closed:
            # The thread holds the engine only while it commits, so an output dropped
            # without close() is still collected (and its thread ends).
            self._committer = threading.Thread(target=_commit_loop, args=(weakref.ref(self),),
                                               name=f"{self.name}-commit", daemon=True)
            self._committer.start()

    def commit_due(self) -> None:
        """Commit the logs whose oldest record has waited ``commit_interval``; renew heartbeats."""
        for ledger in list(self._ledgers):
            try:
                if ledger.due(self.commit_interval):
                    ledger.commit()
                if ledger.beat_due():
                    ledger.beat()
            except ImageReplacedError as exc:  # every later write of that image raises it
                if ledger.replaced is exc and not getattr(exc, "_told", False):
                    exc._told = True  # type: ignore[attr-defined]
                    warnings.warn(f"ngff-writer: {exc}", RuntimeWarning, stacklevel=1)
            except StoreError as exc:  # the records stay pending; flush/close raise
                if not self._warned:
                    warnings.warn(f"ngff-writer: committing log records failed ({exc}); "
                                  "retrying", RuntimeWarning, stacklevel=1)
                    self._warned = True

    def commit_all(self) -> None:
        """Commit every watched log now (best effort at interpreter exit)."""
        for ledger in list(self._ledgers):
            ledger.commit()

    def close(self) -> None:
        """Wait for every job, stop the threads, commit the logs. Idempotent."""
        if self._closed:
            return
        try:
            self.drain(0)
        finally:
            self._closed = True
            self._stop.set()
            if self._committer is not None:
                self._committer.join()
                self._committer = None
            if self._pools is not None:
                for pool in self._pools:
                    pool.shutdown(wait=True)
                self._pools = None

    def _forget_after_fork(self) -> None:
        # A forked child inherits this object but none of its threads.
        self._pools = None
        self._committer = None
        self._lock = threading.Lock()
        self._queue.clear()
        self._inflight.clear()
        self._inflight_bytes = 0
        self._stop = threading.Event()

    # ---- jobs --------------------------------------------------------------------------
    def submit(self, job: _Job) -> None:
        """Queue ``job``; a worker stores it (with whatever else is queued then)."""
        store_pool = self._get_pools()[0]
        with self._lock:
            self._queue.append(job)
        self._inflight.append(job)
        self._inflight_bytes += job.nbytes
        store_pool.submit(self._work)

    def _take(self) -> list[_Job]:
        with self._lock:
            batch: list[_Job] = []
            nbytes = 0
            while self._queue and len(batch) < _BATCH_JOBS and nbytes < _BATCH_BYTES:
                job = self._queue.popleft()
                batch.append(job)
                nbytes += job.nbytes
            return batch

    def _work(self) -> None:
        batch = self._take()
        if not batch:
            return  # an earlier worker took this call's job with its batch
        try:
            self._store_batch(batch)
        except BaseException as exc:  # never leave a job's caller waiting on it
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)

    def _store_batch(self, batch: list[_Job]) -> None:
        _, beside_pool, encode_pool = self._get_pools()
        # Statistics (level 0) and the reduction for the level below only read the data:
        # compute them beside the encode and store, which spend much of their time outside
        # the GIL. (Reducing after the store left a core idle for the reduction's length
        # once per unit: 3.8 ms of a 32 MiB sample's ~65 ms, bench_pyramid.)
        stats = {id(job): beside_pool.submit(summarize, job.piece.data, job.writer.channel_axis)
                 for job in batch if job.level == 0 and job.writer.statistics}
        reduced = {id(job): beside_pool.submit(job.writer.reduce, job)
                   for job in batch if job.writer.reduces(job.level)}

        runs = _runs(batch)

        def store(array: zarr.AsyncArray[Any], region: Region, data: np.ndarray,
                  direct: ChunkWriter | None) -> Any:
            if direct is not None and direct.covers(region):
                return direct.write(region, data, encode_pool)
            return array.setitem(region, data)

        async def store_all() -> list[Any]:
            return await asyncio.gather(*(store(array, region, data, jobs[0].direct)
                                          for array, region, data, jobs in runs),
                                        return_exceptions=True)

        try:
            outcomes = run(store_all())
        except Exception as exc:  # the loop itself failed: every job did
            outcomes = [exc] * len(runs)
        results = {id(job): outcome for (*_, jobs), outcome in zip(runs, outcomes, strict=True)
                   for job in jobs}
        for job in batch:
            result = results[id(job)]
            try:
                if isinstance(result, BaseException):
                    raise self._error(job, result) from result
                summary = stats[id(job)].result() if id(job) in stats else None
                derived = reduced[id(job)].result() if id(job) in reduced else None
                job.writer.stored(job, summary)
                job.future.set_result(derived)
            except BaseException as exc:  # handed to the caller by drain
                job.future.set_exception(exc)

    @staticmethod
    def _error(job: _Job, exc: BaseException) -> StoreError:
        return StoreError(
            f"storing region {job.piece.region} of level {job.level} of image "
            f"{job.writer.spec.name!r} failed: {type(exc).__name__}: {exc}"
        )

    def drain(self, limit: int | None = None, limit_bytes: int | None = None) -> None:
        """Wait for the oldest jobs until at most ``limit`` jobs and ``limit_bytes`` are in flight.

        Defaults: the engine's limits. What each stored job reduced for the pyramid
        level below is fed to that level here, in the caller's thread (assemblers are
        not thread-safe); that may queue more jobs, which count too.

        Raises
        ------
        StoreError
            Once, for every job that failed since the last call (its ``__cause__`` is the
            first backend error, the others are in its notes). Their units count as not
            stored: writing the data that covers them again stores them.
        """
        limit = self.max_inflight if limit is None else limit
        limit_bytes = self.max_inflight_bytes if limit_bytes is None else limit_bytes
        errors: list[BaseException] = []
        while self._inflight and (len(self._inflight) > limit or self._inflight_bytes > limit_bytes):
            job = self._inflight.popleft()
            self._inflight_bytes -= job.nbytes
            job.writer.landed(job)
            try:
                derived = job.future.result()
            except StoreError as exc:
                job.writer.failed(job)
                errors.append(exc)
                continue
            except Exception as exc:  # e.g. recording failed after the data was stored
                job.writer.failed(job)
                errors.append(exc)
                continue
            if derived is not None:
                try:
                    job.writer.feed(job.level + 1, *derived)
                except Exception as exc:
                    errors.append(exc)
        if errors:
            raise _one_error(errors)

    def wait(self) -> None:
        """Wait until every job in flight is stored (or failed), without taking their results.

        A pure wait: nothing is fed to the next level and nothing is raised (that happens
        at the next :meth:`drain`), so reads can see this writer's data without writing.
        """
        for job in list(self._inflight):
            if not job.future.done():
                job.future.exception()

    def wait_until(self, done: Callable[[], bool]) -> None:
        """Drain the oldest jobs one by one until ``done()`` is true."""
        while self._inflight and not done():
            self.drain(len(self._inflight) - 1, 1 << 62)

    @property
    def inflight(self) -> int:
        """Jobs queued or being stored."""
        return len(self._inflight)


def _started_pool(n: int, name: str) -> ThreadPoolExecutor:
    """A pool whose ``n`` threads all start now, so it never has to start one later.

    Python 3.12.0-3.12.2 refuse to start a thread once the interpreter begins to exit,
    which is when an output left open is closed (:mod:`ngff_writer.output`); a pool that
    started its threads lazily would then fail the stores that need one more.
    """
    pool = ThreadPoolExecutor(n, thread_name_prefix=name)
    started = threading.Barrier(n + 1)
    for _ in range(n):
        pool.submit(started.wait)  # each call waits, so the next one needs a new thread
    started.wait()
    return pool


def _runs(batch: list[_Job]) -> list[tuple[zarr.AsyncArray[Any], Region, np.ndarray, list[_Job]]]:
    """Group a batch into runs of small jobs that are neighbours along one axis: one zarr call each.

    zarr's cost per call (indexing, scheduling, a thread hop) is several times the cost
    of encoding a small chunk, and samples written in order are neighbours along ``s``:
    storing them as one region costs about half as much per sample. Large jobs and jobs
    that are not neighbours keep a call of their own (the calls still run concurrently).
    """
    out = []
    by_array: dict[int, list[_Job]] = {}
    for job in batch:
        if job.nbytes >= JOIN_BELOW:  # its own call: joining it would only add a copy
            out.append((job.array, job.piece.region, job.piece.data, [job]))
            continue
        by_array.setdefault(id(job.array), []).append(job)
    for jobs in by_array.values():
        for group, axis in neighbour_runs(jobs, lambda j: j.piece.box):
            first = group[0]
            if axis is None:
                out.append((first.array, first.piece.region, first.piece.data, group))
                continue
            region = tuple(slice(s.start, group[-1].piece.region[k].stop) if k == axis else s
                           for k, s in enumerate(first.piece.region))
            data = np.concatenate([j.piece.data for j in group], axis=axis)
            out.append((first.array, region, data, group))
    return out


def _one_error(errors: list[BaseException]) -> BaseException:
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    combined = StoreError(f"{len(errors)} stores failed; the first: {first}")
    for other in errors[1:]:
        combined.add_note(f"also: {other}")
    combined.__cause__ = first.__cause__ or first
    return combined


def _commit_loop(ref: weakref.ref[Engine]) -> None:
    while True:
        engine = ref()
        if engine is None or engine._stop.is_set():
            return
        stop, interval = engine._stop, engine.commit_interval
        engine.commit_due()
        del engine
        if stop.wait(interval / 4):
            return


def _after_fork() -> None:
    for engine in list(_ENGINES):
        engine._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork)


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
    """

    def __init__(self, store: Store, spec: ImageSpec, index: int, ledger: Ledger, max_bytes: int,
                 policy: Policy) -> None:
        self.store = store
        self.spec = spec
        self.index = index
        self.geometry = spec.levels[index]
        self.ledger = ledger
        self.fragments = Fragments(store, ledger.keys, index, ledger.writer)
        self._max_bytes = max_bytes
        self._policy: Policy = policy if index == 0 else "spill"
        self._assembler: Assembler | None = None
        self._array: zarr.Array | None = None
        self._direct: ChunkWriter | None = None
        #: Jobs in flight per write unit (a unit's next store waits for the earlier one).
        self.inflight = np.zeros(grid_shape(self.geometry.shape, self.geometry.unit), np.int16)

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
            self._assembler = Assembler(g.shape, g.unit, rule, self._max_bytes, self._policy,
                                        strict=self.index == 0)
            self._assembler.mark_stored(self.ledger.coverage.grids[self.index])
        return self._assembler

    def array(self) -> zarr.Array:
        """The level's array, opened for writing on first use."""
        if self._array is None:
            self._array = open_array(self.store, join(self.ledger.keys.image, self.geometry.path), "r+")
            self._direct = ChunkWriter.of(self._array.async_array)
        return self._array

    @property
    def direct(self) -> ChunkWriter | None:
        """Stores whole chunks of the level's array without zarr's pipeline (None: zarr stores them)."""
        self.array()
        return self._direct


class ImageWriter:
    """One output handle's writing of one image: its levels, fed from the top down.

    Parameters
    ----------
    engine
        The output's engine.
    store
        The output store.
    spec
        The image.
    ledger
        The image's log, as this handle sees it.
    max_bytes, policy
        Memory cap on partly covered units per level, and level 0's policy past it.
    """

    def __init__(self, engine: Engine, store: Store, spec: ImageSpec, ledger: Ledger, max_bytes: int,
                 policy: Policy, final: bool = False) -> None:
        self.engine = engine
        self.store = store
        self.spec = spec
        self.ledger = ledger
        #: True once the image is final (seen by this writer, or made final by it).
        self.final = final
        self.levels = [LevelWriter(store, spec, k, ledger, max_bytes, policy)
                       for k in range(len(spec.levels))]
        self.channel_axis = spec.layout.axes.index("c") if "c" in spec.layout.axes else None
        #: Display statistics are gathered for contrast windows; label images have none.
        self.statistics = spec.label is None
        engine.watch(ledger)
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
            self.engine.inflight or self.buffered_units or self.ledger.pending or self.all_handed)

    @property
    def all_handed(self) -> bool:
        """True when every unit of level 0 is known stored or handed to the engine."""
        return self.started and self.levels[0].assembler.all_stored

    @property
    def buffered_bytes(self) -> int:
        """Bytes of partly covered units held in memory, over every level."""
        return sum(lv.assembler.buffered_bytes for lv in self.levels if lv.started)

    @property
    def buffered_units(self) -> int:
        """Units partly covered and held in memory, over every level."""
        return sum(len(lv.assembler.pending_units) for lv in self.levels if lv.started)

    # ---- data in -------------------------------------------------------------------------
    def add(self, region: Region, block: np.ndarray, part_id: tuple[int, ...] | None = None) -> None:
        """Take a region of level 0 (stored order); whole units go to the engine.

        Small blocks are copied and the call returns while they are stored; larger ones
        are stored before it returns. Raises what :meth:`Assembler.add` raises, before
        anything changes, and earlier store failures (see :meth:`Engine.drain`).
        """
        copy = block.nbytes <= COPY_LIMIT
        self._feed(0, region, block, part_id, copy)
        if copy:
            self.engine.drain()
        else:
            self.engine.drain(0, 0)

    def feed(self, level: int, region: Region, block: np.ndarray) -> None:
        """Take a region of pyramid ``level`` reduced from a stored unit of the level above."""
        self._feed(level, region, block, None, False)

    def _feed(self, level: int, region: Region, block: np.ndarray, part_id: tuple[int, ...] | None,
              copy: bool) -> None:
        lw = self.levels[level]
        pieces, to_spill = lw.assembler.add(region, block, part_id, copy=copy)
        self._submit(lw, pieces)
        self._spill(lw, to_spill)

    def _submit(self, lw: LevelWriter, pieces: list[Piece], after: Callable[[], None] | None = None) -> None:
        array = lw.array().async_array  # opened here, not raced for by the workers
        for piece in pieces:
            where = box_slices(piece.box)
            # A unit written again (a retry) must land after its earlier store, never
            # race it: wait for the jobs in flight that touch the same units.
            if lw.inflight[where].any():
                self.engine.wait_until(lambda where=where: not lw.inflight[where].any())
            lw.inflight[where] += 1
            self.engine.submit(_Job(self, lw.index, array, piece, after, lw.direct))

    def landed(self, job: _Job) -> None:
        """The engine took ``job`` out of flight (stored or failed)."""
        self.levels[job.level].inflight[box_slices(job.piece.box)] -= 1

    # ---- called by the engine ---------------------------------------------------------------
    def reduces(self, level: int) -> bool:
        """True when units of ``level`` are reduced for a level below it."""
        return level + 1 < len(self.levels)

    def reduce(self, job: _Job) -> Derived:
        """``job``'s unit reduced for the level below: its region there, and its data."""
        factors = self.levels[job.level + 1].geometry.factors
        return (target_region(job.piece.region, factors),
                downsample(job.piece.data, factors, self.spec.pyramid_method))

    def stored(self, job: _Job, summary: list[Any] | None) -> None:
        """A worker stored ``job``: record it, after its data."""
        # A completed unit's fragments go only once its record is committed (see Ledger.record).
        self.ledger.record(job.level, job.piece.box, summary, then=job.after)

    def failed(self, job: _Job) -> None:
        """A job's store failed: its units count as not stored, so writing them again is taken."""
        self.levels[job.level].assembler.forget(job.piece.box)

    # ---- partial units ---------------------------------------------------------------------
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

    # ---- end of writing ----------------------------------------------------------------------
    def finish(self) -> bool:
        """Make the image final if every unit of level 0 is stored (by any writer); True if final.

        The one place an image becomes final: on a write that hands its last unit to the
        engine, and on flush, close and finalize. Never on a read.
        """
        if self.final:
            return True
        ledger = self.ledger
        self.engine.drain(0, 0)
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
            self.flush(start=1)
            ledger.commit()
            ledger.refresh()
        finalize_image(self.store, self.spec, ledger, lambda k: self.levels[k].array(), self.engine.helpers)
        self.final = True
        return True

    def close(self) -> None:
        """Store what this writer holds (partial units as fragments), commit, finalize if complete.

        After every writer of the image has closed, every unit they covered together is
        stored and recorded. Stops this writer's heartbeat, whatever happens.
        """
        try:
            if self.started and not self.final:
                self.ledger.check_identity()
                self.flush()
                self.ledger.commit()
                self.finish()
        finally:
            if self.ledger.replaced is None:
                self.ledger.stop_beating()

    def retire(self) -> None:
        """Stop writing: this process replaces the image (its jobs in flight end, nothing is recorded)."""
        try:
            self.engine.drain(0, 0)
        except StoreError:
            pass  # stores into an image about to be deleted: their failure changes nothing
        self.ledger.seal()

    def flush(self, start: int = 0, sweep: bool = False) -> None:
        """Save this writer's partly covered units as fragments and complete what can be.

        Levels go in order: the stores that complete units of one level feed the next,
        so after every writer has flushed, every unit all of them together covered, at
        every level, is stored (the writer that saves a unit's last part completes it).
        ``sweep`` also tries every unit that has fragments, whoever saved them: what a
        crashed run left, complete but never stored. That costs a read per such unit, so
        it is for finalizing, not for every flush.
        """
        for lw in self.levels[start:]:
            self.engine.drain(0, 0)
            units = set(lw.assembler.pending_units) if lw.started else set()
            if sweep:
                units |= set(lw.fragments.units())
            if units:
                self._spill(lw, sorted(units))
        self.engine.drain(0, 0)
