"""Closing outputs their users did not close: when they are dropped, and at interpreter exit.

An :class:`~ngff_writer.Output` that is never closed would lose what its images hold in
memory (parts of chunks, log records not committed, stores in flight). So every output
registers a :class:`Closer` (what closing takes: the engine, the image writers, the series
list, none of which refer back to the output) with a ``weakref.finalize``:

- ``close()`` detaches it and closes;
- the garbage collector, when the output is dropped, closes it in a thread of its own (it
  may run wherever the collector runs, in a thread holding a lock closing needs);
- at interpreter exit (the end of a script, ``sys.exit``, an uncaught exception), a hook
  closes every output still open, before the process ends.

Either of the last two warns with :class:`~ngff_writer.errors.UnclosedOutputWarning`,
pointed at the ``open_output`` call, when closing had something to store.
"""

from __future__ import annotations

import atexit
import os
import threading
import warnings
import weakref
from typing import Any, Protocol

from .engine import Engine, ImageWriter
from .errors import UnclosedOutputWarning
from .storage import without_new_threads

__all__ = ["Closer", "track", "untrack"]


class _Registry(Protocol):
    """What the closer needs of an output's series list (:class:`ngff_writer.output._Series`)."""

    pending: int

    def register(self) -> None: ...


class Closer:
    """What closing an output takes, held apart from the :class:`~ngff_writer.Output` itself.

    So it can close an output that was dropped without ``close()`` (a ``weakref.finalize``
    of the Output calls it) or left open at interpreter exit: it holds the engine, the
    image writers and the series list, none of which refer back to the Output.
    """

    def __init__(self, engine: Engine, series: _Registry, where: str, writes: bool,
                 opened_at: tuple[str, int]) -> None:
        self.engine = engine
        self.series = series
        self.where = where
        self.writes = writes
        self.opened_at = opened_at  # the caller's file and line, where warnings point
        self.writers: list[ImageWriter] = []
        self.pid = os.getpid()  # a forked child never closes its parent's outputs

    def close(self) -> None:
        """Store and record what the writers hold, finalize what is complete, stop the engine.

        Raises the first failure (a :class:`StoreError` for a failed store), the others
        in its notes; everything is attempted either way.
        """
        errors: list[Exception] = []
        if self.writes:
            for writer in self.writers:
                try:
                    writer.close()
                except Exception as exc:  # raised below, after every image
                    errors.append(exc)
            try:
                self.series.register()
            except Exception as exc:
                errors.append(exc)
        try:
            self.engine.close()
            self.engine.commit_all()
        except Exception as exc:
            errors.append(exc)
        self.writers.clear()
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also, closing {self.where}: {type(other).__name__}: {other}")
            raise errors[0]

    def close_left_open(self) -> None:
        """Close an output its user never closed: same as close(), told as a warning."""
        if os.getpid() != self.pid:
            return
        # Told when closing saves something (a flushed output left open loses nothing).
        wrote = any(w.holds for w in self.writers) or bool(self.series.pending)
        try:
            self.close()
        except Exception as exc:  # nobody is left to catch it
            self._warn(f"the output {self.where} was not closed, and closing it failed: "
                       f"{type(exc).__name__}: {exc}")
            return
        if wrote:
            self._warn(f"the output {self.where} was not closed; what was written to it is stored "
                       "and recorded now. Use `with open_output(...) as out:` or call out.close()")

    def _warn(self, message: str) -> None:
        # Pointed at the user's open_output call: the place to add the `with`.
        warnings.warn_explicit(f"ngff-writer: {message}", UnclosedOutputWarning, *self.opened_at)


#: Outputs not closed yet, by id of their closer: closed at interpreter exit.
_LEFT_OPEN: dict[int, weakref.finalize] = {}
_exiting = False
_closing: set[threading.Thread] = set()
_hook_lock = threading.Lock()
_hooked = False


def _dropped(closer: Closer) -> None:
    """An Output was garbage collected unclosed: close it, in a thread of its own.

    The garbage collector runs this wherever it happens to run, maybe in a thread that
    holds one of the locks closing needs; a thread of its own cannot deadlock there.
    """
    _LEFT_OPEN.pop(id(closer), None)
    if _exiting:
        closer.close_left_open()
        return
    thread = threading.Thread(target=_close_in_thread, args=(closer,), name="ngff-writer-close")
    _closing.add(thread)
    thread.start()


def _close_in_thread(closer: Closer) -> None:
    try:
        closer.close_left_open()
    finally:
        _closing.discard(threading.current_thread())


def _at_exit() -> None:
    global _exiting
    _exiting = True
    for thread in list(_closing):
        thread.join()
    if _LEFT_OPEN:
        without_new_threads()
    for finalizer in list(_LEFT_OPEN.values()):
        finalizer()  # runs _dropped, once


def _hook_exit() -> None:
    """Close left-open outputs at interpreter exit (installed when the first output opens)."""
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        _hooked = True
        # Closing needs the engine's thread pools and zarr's (asyncio.to_thread), which
        # concurrent.futures stops in threading's shutdown, before atexit handlers run and
        # refuse new work. threading's own exit hooks run earlier, newest first (so before
        # concurrent.futures', registered at its import); it is the hook concurrent.futures
        # uses itself. atexit is the fallback where it is missing.
        getattr(threading, "_register_atexit", atexit.register)(_at_exit)


def _forget_after_fork() -> None:
    _LEFT_OPEN.clear()
    _closing.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def track(output: Any, closer: Closer) -> weakref.finalize:
    """Close ``closer`` when ``output`` is dropped unclosed, or at exit; return the finalizer.

    The output's ``close()`` calls :func:`untrack` (then closes it itself).
    """
    finalizer = weakref.finalize(output, _dropped, closer)
    finalizer.atexit = False  # _at_exit calls it, while threads still run
    _LEFT_OPEN[id(closer)] = finalizer
    _hook_exit()
    return finalizer


def untrack(closer: Closer, finalizer: weakref.finalize) -> None:
    """Never close ``closer`` when its output is dropped or at exit (closed, or abandoned)."""
    finalizer.detach()
    _LEFT_OPEN.pop(id(closer), None)
