"""The engine: a plain executor that stores write units in batches, beside their reductions.

It knows nothing of images. A :class:`StoreJob` is a region of an array and its data, the
computations to run on that data while it is stored (statistics, the reduction for the
pyramid level below), and a callback told the outcome. The image pipelines
(:mod:`ngff_writer._write.pipeline`) make the jobs and take the outcomes; the engine's threads
belong to the :class:`~ngff_writer.Context`.

A worker thread takes what is queued in one batch and stores it with one call into zarr
(its coroutines gathered, so zarr encodes and writes the chunks concurrently; runs of
whole chunks are encoded and put in the store by :class:`~ngff_writer._write.encode.ChunkWriter`
where it gives zarr's bytes). Small neighbouring jobs of one array are joined into one
region first: zarr's cost per call is several times the cost of encoding a small chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from typing import Any, Protocol

import numpy as np
import zarr

from .._declare.grid import JOIN_BELOW, Box, neighbour_runs
from .._storage.stores import run
from ..errors import StoreError
from .encode import ChunkWriter, ShardSink

__all__ = ["Engine", "StoreJob", "Threads"]

Region = tuple[slice, ...]
#: What a job holds once its data is stored (or its store failed).
_LET_GO = np.empty(0, np.uint8)
#: Jobs (and bytes) one worker stores in one call at most.
_BATCH_JOBS, _BATCH_BYTES = 64, 64 << 20


@dataclasses.dataclass(eq=False)
class StoreJob:
    """Store ``data`` at ``region`` of ``array``; run ``beside`` on it meanwhile; tell ``done``.

    ``done(error, results)`` is called once, in a worker thread: ``error`` is None and
    ``results`` holds what each ``beside`` call returned, in order, or ``error`` is the
    :class:`StoreError` (or the exception of a ``beside`` call) and ``results`` is empty.
    The job lets go of ``data`` first: told that it is stored, a writer may reuse its
    memory at once (:mod:`ngff_writer._write.memory`).
    """

    array: zarr.AsyncArray[Any]
    region: Region
    #: The write units the region covers (neighbouring jobs are joined along them).
    box: Box
    data: np.ndarray
    done: Callable[[BaseException | None, list[Any]], None]
    beside: Sequence[Callable[[np.ndarray], Any]] = ()
    #: Stores whole chunks without zarr's pipeline, where that gives zarr's bytes.
    direct: ChunkWriter | None = None
    #: Lays the region's whole chunks into this shard instead (a shard filled as parts arrive).
    into: ShardSink | None = None
    #: What the job stores, for error messages ("level 0 of image 'p'").
    what: str = ""
    #: Bytes of ``data`` (kept once the data is let go).
    nbytes: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.nbytes = self.data.nbytes


class Threads(Protocol):
    """The threads the engine runs on (a :class:`~ngff_writer.Context`'s)."""

    @property
    def store_pool(self) -> Executor: ...

    @property
    def helpers(self) -> Executor: ...

    @property
    def encoders(self) -> Executor: ...


class Engine:
    """Stores :class:`StoreJob` batches on a context's threads."""

    def __init__(self, threads: Threads) -> None:
        self._context = threads
        self._lock = threading.Lock()
        self._queue: deque[StoreJob] = deque()

    def submit(self, job: StoreJob) -> None:
        """Queue ``job``; a worker stores it (with whatever else is queued then). Never waits."""
        pool = self._context.store_pool
        with self._lock:
            self._queue.append(job)
        pool.submit(self._work)

    def _take(self) -> list[StoreJob]:
        with self._lock:
            batch: list[StoreJob] = []
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
            outcomes = self._store_batch(batch)
        except BaseException as exc:  # never leave a job untold
            outcomes = [(exc, [])] * len(batch)
        for job, (error, results) in zip(batch, outcomes, strict=True):
            job.data = _LET_GO
            try:
                job.done(error, results)
            except BaseException as exc:  # a callback's own bug: tell, never lose the thread
                warnings.warn(f"ngff-writer: after storing {job.what}: {type(exc).__name__}: {exc}",
                              RuntimeWarning, stacklevel=1)

    def _store_batch(self, batch: list[StoreJob]) -> list[tuple[BaseException | None, list[Any]]]:
        helpers, encoders = self._context.helpers, self._context.encoders
        # The computations beside only read the data: run them beside the encode and
        # store, which spend much of their time outside the GIL. (Reducing after the store
        # left a core idle for the reduction's length once per unit: 3.8 ms of a 32 MiB
        # sample's ~65 ms, bench_pyramid.)
        beside: list[list[Future[Any]]] = [[helpers.submit(f, job.data) for f in job.beside]
                                           for job in batch]
        runs = _runs(batch)

        def store(array: zarr.AsyncArray[Any], region: Region, data: np.ndarray, job: StoreJob) -> Any:
            direct = job.direct
            if job.into is not None:
                return job.into.write(region, data, encoders)
            if direct is not None and direct.covers(region):
                return direct.write(region, data, encoders)
            return array.setitem(region, data)

        async def store_all() -> list[Any]:
            return await asyncio.gather(*(store(array, region, data, jobs[0])
                                          for array, region, data, jobs in runs),
                                        return_exceptions=True)

        try:
            stored = run(store_all())
        except Exception as exc:  # the loop itself failed: every job did
            stored = [exc] * len(runs)
        failures = {id(job): outcome for (*_, jobs), outcome in zip(runs, stored, strict=True)
                    for job in jobs if isinstance(outcome, BaseException)}
        outcomes: list[tuple[BaseException | None, list[Any]]] = []
        for job, futures in zip(batch, beside, strict=True):
            if id(job) in failures:
                for f in futures:
                    f.cancel()
                cause = failures[id(job)]
                error = StoreError(f"storing region {job.region} of {job.what} failed: "
                                   f"{type(cause).__name__}: {cause}")
                error.__cause__ = cause
                outcomes.append((error, []))
                continue
            try:
                outcomes.append((None, [f.result() for f in futures]))
            except BaseException as exc:
                outcomes.append((exc, []))
        return outcomes


def _runs(batch: list[StoreJob]) -> list[tuple[zarr.AsyncArray[Any], Region, np.ndarray, list[StoreJob]]]:
    """Group a batch into runs of small jobs that are neighbours along one axis: one zarr call each.

    zarr's cost per call (indexing, scheduling, a thread hop) is several times the cost
    of encoding a small chunk, and samples written in order are neighbours along ``s``:
    storing them as one region costs about half as much per sample. Large jobs and jobs
    that are not neighbours keep a call of their own (the calls still run concurrently).
    """
    out = []
    by_array: dict[int, list[StoreJob]] = {}
    for job in batch:
        # Its own call: joining a large job would only add a copy; a shard being filled takes its own.
        if job.nbytes >= JOIN_BELOW or job.into is not None:
            out.append((job.array, job.region, job.data, [job]))
            continue
        by_array.setdefault(id(job.array), []).append(job)
    for jobs in by_array.values():
        for group, axis in neighbour_runs(jobs, lambda j: j.box):
            first = group[0]
            if axis is None:
                out.append((first.array, first.region, first.data, group))
                continue
            region = tuple(slice(s.start, group[-1].region[k].stop) if k == axis else s
                           for k, s in enumerate(first.region))
            data = np.concatenate([j.data for j in group], axis=axis)
            out.append((first.array, region, data, group))
    return out
