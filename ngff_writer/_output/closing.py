"""Closing outputs their users did not close: when they are dropped, and at interpreter exit.

An :class:`~ngff_writer.Output` that is never closed would lose what its images hold in
memory (parts of chunks, log records not committed, stores in flight). So every output
registers a :class:`Closer` (what closing takes: the context, the image pipelines, the
series list, none of which refer back to the output) with a ``weakref.finalize``:

- ``close()`` detaches it and closes;
- the garbage collector, when the output is dropped, closes it in a thread of its own (it
  may run wherever the collector runs, in a thread holding a lock closing needs);
- its :class:`~ngff_writer.Context` closes it when it closes first, which the default
  context does at interpreter exit (the end of a script, ``sys.exit``, an uncaught
  exception), before the process ends.

Either of the last two warns with :class:`~ngff_writer.errors.UnclosedOutputWarning`,
pointed at the ``open_output`` call, when closing had something to store.
"""

from __future__ import annotations

import os
import threading
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from .._ngff.collection import SeriesList
from .._write.context import Context, exiting
from .._write.pipeline import Pipeline
from ..errors import UnclosedOutputWarning

__all__ = ["Closer", "track", "untrack"]


class Closer:
    """What closing an output takes, held apart from the :class:`~ngff_writer.Output` itself.

    So it can close an output that was dropped without ``close()`` (a ``weakref.finalize``
    of the Output calls it) or left open when its context closes: it holds the context,
    the image pipelines and the series list, none of which refer back to the Output.
    """

    def __init__(self, context: Context, series: SeriesList, where: str, writes: bool,
                 opened_at: tuple[str, int], owns_context: bool = False) -> None:
        self.context = context
        self.series = series
        self.where = where
        self.writes = writes
        self.opened_at = opened_at  # the caller's file and line, where warnings point
        self.owns_context = owns_context
        self.pipelines: list[Pipeline] = []
        self.pid = os.getpid()  # a forked child never closes its parent's outputs
        self.forget: Callable[[], None] = lambda: None  # undoes the context's hold on it
        #: True once closing began (the output takes no more calls).
        self.done = False

    def close(self) -> None:
        """Store and record what the pipelines hold, finalize what is complete.

        Raises the first failure (a :class:`StoreError` for a failed store), the others
        in its notes; everything is attempted either way.
        """
        self.done = True
        self.forget()
        errors: list[Exception] = []
        for pipeline in self.pipelines:
            try:
                if self.writes:
                    pipeline.close()
                else:
                    pipeline.abandon()
            except Exception as exc:  # raised below, after every image
                errors.append(exc)
        if self.writes:
            try:
                self.series.register()
            except Exception as exc:
                errors.append(exc)
        self.pipelines.clear()
        self.context.recycler.trim()  # the memory of its copies, unless another output uses it
        if self.owns_context:
            try:
                self.context.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            for other in errors[1:]:
                errors[0].add_note(f"also, closing {self.where}: {type(other).__name__}: {other}")
            raise errors[0]

    def abandon(self) -> None:
        """Stop as a killed process would: nothing more is recorded, committed or finalized."""
        self.forget()
        for pipeline in self.pipelines:
            pipeline.abandon()

    def close_left_open(self) -> None:
        """Close an output its user never closed: same as close(), told as a warning."""
        if os.getpid() != self.pid:
            return
        # Told when closing saves something (a flushed output left open loses nothing).
        wrote = any(p.holds for p in self.pipelines) or bool(self.series.pending)
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


#: Outputs not closed yet, by id of their closer.
_LEFT_OPEN: dict[int, weakref.finalize[..., Any]] = {}
#: Threads closing outputs the garbage collector dropped.
_closing: set[threading.Thread] = set()


def _dropped(closer: Closer) -> None:
    """An Output was garbage collected unclosed: close it, in a thread of its own.

    The garbage collector runs this wherever it happens to run, maybe in a thread that
    holds one of the locks closing needs; a thread of its own cannot deadlock there.
    At interpreter exit no thread may start, and nothing else runs: it closes here.
    """
    closer.forget()
    _LEFT_OPEN.pop(id(closer), None)
    if exiting():
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


def _close_now(finalizer: weakref.finalize[..., Any]) -> None:
    """The context closes first: close the output here (it may still be referenced)."""
    found = finalizer.detach()
    if found is not None:
        _, _, (closer,), _ = found
        _LEFT_OPEN.pop(id(closer), None)
        closer.close_left_open()


def _forget_after_fork() -> None:
    _LEFT_OPEN.clear()
    _closing.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def track(output: Any, closer: Closer) -> weakref.finalize[..., Any]:
    """Close ``closer`` when ``output`` is dropped unclosed or its context closes; return the finalizer.

    The output's ``close()`` calls :func:`untrack` (then closes it itself).
    """
    finalizer = weakref.finalize(output, _dropped, closer)
    finalizer.atexit = False  # the context closes it at exit, while its threads still run
    closer.forget = closer.context.on_close(lambda: _close_now(finalizer))
    _LEFT_OPEN[id(closer)] = finalizer
    return finalizer


def untrack(closer: Closer, finalizer: weakref.finalize[..., Any]) -> None:
    """Never close ``closer`` when its output is dropped or its context closes (closed, or abandoned)."""
    finalizer.detach()
    closer.forget()
    _LEFT_OPEN.pop(id(closer), None)
