"""Handing back the memory a written file took in the page cache, once it is on disk.

Why: every buffered write takes page-cache memory, and an export of terabytes holds
nothing anyone reads soon. Left to the kernel, that memory is taken from free memory
first and given back only under pressure, so a long export keeps taking memory the
machine has not touched for a while. On a VM whose host takes back the memory a guest
frees (free page reporting, balloons: the 2-core Firecracker VMs we measure on) that is
dear: 4 MiB files written with ``pwrite`` went at 350-470 MB/s, and at 1,800-2,500 MB/s
when each file's pages were handed back 16 files later, which the kernel then gives to the
next files while they are still warm (``benchmarks/encode_ceiling.py``). A model beside
the writer gets the same warm memory for its own arrays. On bare metal it keeps an export
from pushing out what other jobs cached, as ``O_DIRECT`` would
(:class:`~ngff_writer.DirectLocalStore`) but without waiting for the device.

How: a finished file's write-back is started (``sync_file_range``, no wait) and its
descriptor is kept. Once the kept files hold more than ``lag`` bytes, or number more than
``files``, the oldest are handed back with ``posix_fadvise(POSIX_FADV_DONTNEED)``, which
drops only clean pages: a page still dirty or being written back is left to the kernel,
so nothing written is ever lost or waited for. Every file left is handed back when the
context closes. Only a hint: where a call does not exist (macOS has no ``posix_fadvise``)
or fails, the file stays cached as any other.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from pathlib import Path

from .stores import start_writeback

__all__ = ["WrittenFiles"]

_DONTNEED = getattr(os, "POSIX_FADV_DONTNEED", None)
#: Bytes of finished files kept cached: by the time a file is this far behind the newest,
#: its write-back (started when it was finished) has had time to end.
LAG = 64 << 20
#: Files kept at most, whatever their size (each holds a descriptor).
FILES = 64
#: Smaller files are left cached: their memory is not worth the system calls (an open for
#: the chunk files zarr writes, a drop later), and jobs of many small chunks write little.
SMALLEST = 256 << 10


class WrittenFiles:
    """Files this process finished writing, whose cached pages are handed back (see the module).

    Parameters
    ----------
    release
        False: only start each file's write-back, and keep its pages cached (the
        ``Context(keep_cached=True)`` setting).
    lag, files
        Bytes and files kept cached before the oldest is handed back.
    """

    def __init__(self, release: bool = True, lag: int = LAG, files: int = FILES) -> None:
        self.release = release and _DONTNEED is not None
        self.lag = lag
        self.files = files
        self._lock = threading.Lock()
        self._kept: collections.deque[tuple[int, int]] = collections.deque()
        self._bytes = 0

    def hand_over(self, fd: int, nbytes: int) -> None:
        """``fd`` (of a finished file of ``nbytes``) is ours to close: start its write-back."""
        try:
            start_writeback(fd)
        except BaseException:
            os.close(fd)
            raise
        if not self.release or nbytes < SMALLEST:
            os.close(fd)
            return
        with self._lock:
            self._kept.append((fd, nbytes))
            self._bytes += nbytes
            due = self._take(lambda: self._bytes > self.lag or len(self._kept) > self.files)
        _drop(due)

    def finished(self, path: Path, nbytes: int) -> None:
        """The file at ``path`` (``nbytes``), written by someone else (zarr's ``LocalStore``), is finished."""
        if not self.release or nbytes < SMALLEST:
            return
        try:
            # Not following a link: a key replaced by a link since must not reach outside.
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return  # gone or replaced meanwhile: nothing of ours to hand back
        self.hand_over(fd, nbytes)

    def release_all(self) -> None:
        """Hand back every file kept (their write-back has been waited for, or soon will be)."""
        with self._lock:
            due = self._take(lambda: bool(self._kept))
        _drop(due)

    def forget_after_fork(self) -> None:
        """In a forked child: close the descriptors inherited, handing nothing back.

        The parent's own still refer to its files; the lock is made anew, since a thread
        of the parent (none of which is here) may have held it at the fork.
        """
        self._lock = threading.Lock()
        for fd, _ in self._kept:
            _close(fd)
        self._kept.clear()
        self._bytes = 0

    def _take(self, more: Callable[[], bool]) -> list[int]:
        due = []
        while more() and self._kept:
            fd, nbytes = self._kept.popleft()
            self._bytes -= nbytes
            due.append(fd)
        return due


def _drop(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.posix_fadvise(fd, 0, 0, _DONTNEED)  # type: ignore[arg-type]  # None never gets here
        except OSError:
            pass  # a hint only: the pages stay cached
        finally:
            _close(fd)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
