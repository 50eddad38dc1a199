"""The resources writing takes, in one explicit object: a :class:`Context`.

Threads, the chunk encoders, the budget of data in flight, the log committer and the
settings for remote stores are shared by every output opened with the same context, the
way a tensorstore ``Context`` is shared by the arrays opened with it. A user who does
nothing gets :func:`default_context`, made on first use and closed at interpreter exit;
one who wants other limits, or threads that end at a known point, makes their own::

    with ngff_writer.Context(inflight_bytes=256 << 20) as ctx:
        with ngff_writer.open_output("a.zarr", context=ctx) as a, \\
                ngff_writer.open_output("b.zarr", context=ctx) as b:
            ...

Nothing here changes process-wide state: ``zarr.config`` is read (a codec pipeline or a
thread count the user set is respected), never written.
"""

from __future__ import annotations

import atexit
import itertools
import os
import queue
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import zarr

from .._storage.pagecache import WrittenFiles
from ..errors import ClosedError, SpecError
from .engine import Engine
from .memory import Recycler

__all__ = ["Context", "check_setting", "default_context"]


class Workers(Executor):
    """A fixed set of daemon threads, all started at once, that run what is submitted.

    Written by hand rather than a ``ThreadPoolExecutor`` because of interpreter exit: an
    output left open is closed by an ``atexit`` handler, but ``concurrent.futures`` stops
    every ``ThreadPoolExecutor`` (and refuses new work) before those handlers run, and
    Python 3.12.0-3.12.2 refuse to start a new thread then. Daemon threads started up
    front are still there, and still take work, until the handler is done.
    """

    def __init__(self, n: int, name: str, nice: int = 0) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, args=(nice,), name=f"{name}_{k}", daemon=True)
                         for k in range(n)]
        self._shut = False
        for thread in self._threads:
            thread.start()

    @property
    def size(self) -> int:
        """Number of threads."""
        return len(self._threads)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._shut:
            raise RuntimeError("the worker threads are shut down")
        future: Future[Any] = Future()
        self._queue.put((lambda: fn(*args, **kwargs), future))
        return future

    def _loop(self, nice: int) -> None:
        lower_priority(nice)
        while (item := self._queue.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = call()
            except BaseException as exc:
                del item, call  # its arguments go before anyone is told (memory.Recycler)
                future.set_exception(exc)
            else:
                del item, call
                future.set_result(result)
            del future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self._shut:
            return
        self._shut = True
        for _ in self._threads:
            self._queue.put(None)
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()


def lower_priority(nice: int) -> None:
    """Make the calling thread ``nice`` steps less favoured by the scheduler (Linux; else nothing).

    On Linux a thread's id names it alone to ``setpriority`` (not its process), so this
    reaches no other thread. Elsewhere an id would name a process: nothing is done.
    Raising a niceness needs no privilege; where it is refused anyway, the thread keeps
    its priority (writing is then only less polite, never wrong).
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


class Budget:
    """Bytes of written data not yet stored; a writer waits while they exceed the limit.

    Only callers wait (:meth:`take`); the threads that store and reduce only add and give
    back, so they can never wait on each other. One block larger than the whole budget
    is let through when nothing else is in flight, so it cannot wait forever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @property
    def used(self) -> int:
        """Bytes in flight now."""
        return self._used

    def take(self, nbytes: int, give_up: Callable[[], bool] = lambda: False) -> None:
        """Wait until ``nbytes`` fit (or ``give_up()`` is true, checked as bytes are given back)."""
        with self._cond:
            while self._used and self._used + nbytes > self.limit and not give_up():
                self._cond.wait(0.5)
            self._used += nbytes

    def count(self, nbytes: int) -> None:
        """Count ``nbytes`` more in flight without waiting (work made by the writing threads)."""
        with self._cond:
            self._used += nbytes

    def give(self, nbytes: int) -> None:
        """``nbytes`` are stored (or dropped): let waiting writers go on."""
        with self._cond:
            self._used -= nbytes
            self._cond.notify_all()

    def reset(self) -> None:
        with self._cond:
            self._used = 0


class Context:
    """Threads, encoders, the in-flight budget and the log committer shared by outputs.

    Parameters
    ----------
    store_threads
        Threads that store write units; each stores a batch of queued units per call into
        zarr (default 2).
    encode_threads
        Threads that encode chunks ngff-writer compresses itself (see
        :mod:`ngff_writer._write.encode`). Default: zarr's ``codec_pipeline.max_workers`` when the
        user set it, else one per core.
    inflight_bytes
        Bytes of written data that may be waiting to be stored, over every output of the
        context, before a write call waits (default 80 MiB: two 32 MiB samples and
        what they reduce to at the level below, so writing hides behind a model
        computing the next sample; a larger budget overlaps no better and holds more
        memory, see ``benchmarks/README.md``).
    commit_interval
        Seconds at most between a unit being stored and its record being committed to
        its image's log: what a killed writer can lose (writing it again resumes).
    timeout, retries
        For remote stores (URLs, obstore): seconds one store call may take, and further
        attempts after a timeout or a lost connection, before a
        :class:`~ngff_writer.StoreError` is raised. Local directories are not affected.
    nice
        How much less favoured by the scheduler the context's threads are than the
        process's others, on Linux (a ``nice`` increment, 0 to 19; elsewhere ignored).
        Default 10: the threads that compute a model, load data or feed a GPU get the
        cores first, and writing takes what they leave; a writer that falls behind
        slows the loop only through the budget's wait, as it would anyway. 0: equal.
    durable
        Local directories: before each commit of records, sync what was written to disk
        (one ``syncfs`` per commit), so that after a power cut no record claims a chunk
        the disk does not hold (default True). False leaves write-back to the system: a
        power cut may then leave an image that reads complete with chunks missing; a
        killed process loses nothing either way.
    keep_cached
        Local directories: leave what was written in the system's page cache, as
        buffered writes do. Default False: a file's cached pages are handed back once it
        is written to disk (64 MiB of files behind the newest, and all at :meth:`close`),
        so an export takes no more memory than it has in flight, pushes out nothing
        other jobs cached, and on VMs whose host takes freed memory back writes several
        times faster (:mod:`ngff_writer._storage.pagecache`). True suits a job that reads
        its output right back (a viewer on the same machine reads it from disk otherwise).

    Notes
    -----
    Threads start when the first output of the context writes, and end at
    :meth:`close` (the default context's at interpreter exit). Closing a context closes
    the outputs still open on it first, keeping everything written to them.
    """

    def __init__(self, *, store_threads: int = 2, encode_threads: int | None = None,
                 inflight_bytes: int = 80 << 20, commit_interval: float = 1.0,
                 timeout: float = 60.0, retries: int = 3, nice: int = 10, durable: bool = True,
                 keep_cached: bool = False) -> None:
        for name, value in (("store_threads", store_threads), ("encode_threads", encode_threads),
                            ("inflight_bytes", inflight_bytes), ("commit_interval", commit_interval),
                            ("timeout", timeout), ("retries", retries), ("nice", nice)):
            if value is not None:
                check_setting(name, value)
        self.store_threads = store_threads
        self.encode_threads = encode_threads
        self.commit_interval = float(commit_interval)
        self.timeout = float(timeout)
        self.retries = retries
        self.nice = nice
        if not isinstance(durable, bool):
            raise SpecError(f"durable must be True or False, got {durable!r}")
        self.durable = durable
        if not isinstance(keep_cached, bool):
            raise SpecError(f"keep_cached must be True or False, got {keep_cached!r}")
        #: Files finished on local disks, their cached pages handed back (unless ``keep_cached``).
        self.written = WrittenFiles(release=not keep_cached)
        self.budget = Budget(inflight_bytes)
        #: Memory for the copies write calls make, kept for the next ones (up to the budget).
        self.recycler = Recycler(inflight_bytes)
        self.name = f"ngff-writer-{next(_NUMBERS)}"
        self._lock = threading.Lock()
        self._pools: tuple[Workers, Workers, Workers, Workers] | None = None
        self._engine: Engine | None = None
        self._ledgers: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self._committer: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # a ledger was watched: the committer's wait is cut short
        self._closers: list[Callable[[], None]] = []
        self._closed = False
        _CONTEXTS.add(self)
        _hook_exit()

    def __repr__(self) -> str:
        return (f"Context(store_threads={self.store_threads}, inflight_bytes={self.budget.limit}, "
                f"commit_interval={self.commit_interval})")

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def inflight_bytes(self) -> int:
        """The budget of data in flight, in bytes."""
        return self.budget.limit

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    # ---- threads ---------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    def _get_pools(self) -> tuple[Workers, Workers, Workers, Workers]:
        self._check_open()
        with self._lock:
            if self._pools is None:
                encoders = (self.encode_threads or zarr.config.get("codec_pipeline.max_workers", None)
                            or os.cpu_count() or 1)
                nice = self.nice
                self._pools = (Workers(self.store_threads, f"{self.name}-store", nice),
                               Workers(2, f"{self.name}-beside", nice),
                               Workers(encoders, f"{self.name}-encode", nice),
                               # Apart from the helpers: a pipeline waits for stores, which
                               # wait for the helpers' statistics and reductions.
                               Workers(2, f"{self.name}-pipeline", nice))
            return self._pools

    @property
    def engine(self) -> Engine:
        """The :class:`~ngff_writer._write.engine.Engine` storing every output's units (started on use)."""
        self._check_open()
        with self._lock:
            if self._engine is None:
                self._engine = Engine(self)
            return self._engine

    @property
    def store_pool(self) -> Workers:
        """Threads that store batches of write units."""
        return self._get_pools()[0]

    @property
    def helpers(self) -> Workers:
        """Threads for work beside the stores: statistics, reductions, rebuilding units."""
        return self._get_pools()[1]

    @property
    def encoders(self) -> Workers:
        """Threads that encode chunks ngff-writer compresses itself."""
        return self._get_pools()[2]

    @property
    def pipelines(self) -> Workers:
        """Threads running the image pipelines (:mod:`ngff_writer._write.pipeline`): levels, finalizing."""
        return self._get_pools()[3]

    # ---- the log committer --------------------------------------------------------------------
    def watch(self, ledger: Any, interval: float | None = None) -> None:
        """Commit ``ledger``'s records once they waited ``interval`` (default: the context's).

        Its heartbeat is renewed too.
        """
        self._check_open()
        with self._lock:
            self._ledgers[ledger] = self.commit_interval if interval is None else float(interval)
            ledger.durable = self.durable
            if self._committer is None:
                self._committer = threading.Thread(target=_commit_loop, args=(weakref.ref(self),),
                                                   name=f"{self.name}-commit", daemon=True)
                self._committer.start()
        # The committer waits a quarter of the shortest interval it knew: a ledger with a
        # shorter one must not wait for that (an output with commit_interval=3600 opened
        # first would otherwise hold every later output's records for 15 minutes).
        self._wake.set()

    def unwatch(self, ledger: Any) -> None:
        """Stop committing ``ledger`` in the background (its writer is gone)."""
        with self._lock:
            self._ledgers.pop(ledger, None)

    def commit_due(self) -> None:
        """Commit the logs whose oldest record waited long enough; renew heartbeats (best effort)."""
        from .._track.log import commit_due  # what a failure means belongs to the log

        with self._lock:
            due = list(self._ledgers.items())
        for ledger, interval in due:
            commit_due(ledger, interval)

    def _interval(self) -> float:
        with self._lock:
            return min(self._ledgers.values(), default=self.commit_interval)

    # ---- lifecycle ----------------------------------------------------------------------------
    def on_close(self, close: Callable[[], None]) -> Callable[[], None]:
        """Call ``close`` when the context closes, before its threads stop; return an undo."""
        self._closers.append(close)

        def forget() -> None:
            if close in self._closers:
                self._closers.remove(close)

        return forget

    def close(self) -> None:
        """Close the outputs still open on this context, then stop its threads. Idempotent.

        Raises the first failure of closing an output (after trying every one); the
        threads stop either way.
        """
        if self._closed:
            return
        errors: list[Exception] = []
        for close in list(reversed(self._closers)):
            try:
                close()
            except Exception as exc:
                errors.append(exc)
        self._closers.clear()
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._committer is not None and self._committer is not threading.current_thread():
            self._committer.join()
        self._committer = None
        if self._pools is not None:
            for pool in self._pools:
                pool.shutdown(wait=True)
            self._pools = None
        self.recycler.trim()
        self.written.release_all()
        _CONTEXTS.discard(self)
        if errors:
            raise errors[0]

    def _forget_after_fork(self) -> None:
        # A forked child inherits this object but none of its threads, nor its outputs.
        self._lock = threading.Lock()
        self._pools = None
        self._engine = None
        self._committer = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._closers.clear()
        self._ledgers = weakref.WeakKeyDictionary()
        self.budget = Budget(self.budget.limit)
        self.recycler = Recycler(self.budget.limit)
        self.written.forget_after_fork()


#: The least value of each integer setting; the others are seconds (> 0).
_LEAST = {"store_threads": 1, "workers": 1, "encode_threads": 1, "inflight_bytes": 0, "retries": 0,
          "nice": 0}
_MOST = {"nice": 19}


def check_setting(name: str, value: Any) -> None:
    """Raise :class:`SpecError` unless ``value`` is a valid ``name`` (a Context's or open_output's)."""
    if name in _LEAST:
        _check_int(name, value, _LEAST[name])
    else:
        _check_seconds(name, value)


def _check_int(name: str, value: Any, least: int) -> None:
    most = _MOST.get(name)
    beyond = most is not None and isinstance(value, int) and value > most
    if isinstance(value, bool) or not isinstance(value, int) or value < least or beyond:
        bound = f"from {least} to {most}" if most is not None else f">= {least}"
        raise SpecError(f"{name} must be an int {bound}, got {value!r}")


def _check_seconds(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise SpecError(f"{name} must be a number of seconds > 0, got {value!r}")


def _commit_loop(ref: weakref.ref[Context]) -> None:
    while True:
        context = ref()
        if context is None or context._stop.is_set():
            return
        stop, wake, interval = context._stop, context._wake, context._interval()
        context.commit_due()
        del context
        wake.wait(interval / 4)
        wake.clear()
        if stop.is_set():
            return


_NUMBERS = itertools.count(1)
_CONTEXTS: weakref.WeakSet[Context] = weakref.WeakSet()
_DEFAULT: Context | None = None
_DEFAULT_LOCK = threading.Lock()
_hooked = False
_exiting = False


def default_context() -> Context:
    """The context outputs use when given none: made on first use, closed at interpreter exit."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None or _DEFAULT.closed:
            _DEFAULT = Context()
        return _DEFAULT


def exiting() -> bool:
    """True once the interpreter is exiting and the contexts are being closed."""
    return _exiting


def _at_exit() -> None:
    from .._storage.stores import without_new_threads

    global _exiting
    _exiting = True

    if any(c._closers for c in list(_CONTEXTS)):
        # Closing outputs left open may store: zarr's own pools are stopped by now.
        without_new_threads()
    for context in list(_CONTEXTS):
        try:
            context.close()
        except Exception:
            pass


def _hook_exit() -> None:
    global _hooked
    if not _hooked:
        _hooked = True
        # Registered after zarr's own exit handler (zarr is imported first), so it runs
        # before it: zarr's event loop is still there to store what is left.
        atexit.register(_at_exit)


def _after_fork() -> None:
    global _DEFAULT
    for context in list(_CONTEXTS):
        context._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork)
