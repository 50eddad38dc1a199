"""A local directory store whose chunk files bypass the page cache (``O_DIRECT``): opt-in.

Why it exists: an export of terabytes through the page cache fills the machine's memory
with data nobody will read soon, evicting what other jobs cached, and costs the kernel a
copy of every byte. On the 2-core VMs this project is measured on, that copy's cost
depends on where the page-cache memory comes from: from pages just freed (a deleted
file) it is cheap, from memory the guest has not touched for a while 2-3x dearer. Writing
the 2 GiB benchmark stream (``benchmarks/README.md``), tensorstore spent 0.8-1.0
core-seconds in the kernel from warm memory and 3.2 from cold; this store spends
0.7-1.1 either way. It is not the default because from warm memory, as on bare metal,
buffered writes are faster (800 against 660 MB/s): a direct write waits for the device
and needs a copy into an aligned buffer. Pass ``DirectLocalStore(path)`` to
:func:`~ngff_writer.open_output` to choose it. Neither zarr nor fsspec offers direct
I/O, so this subclass replaces ``LocalStore``'s one write primitive and nothing else.

How: a value of at least :attr:`DirectLocalStore.min_bytes` is copied into this thread's
page-aligned buffer (reused, so no memory is faulted in per write), written padded to
the block size into ``<name>.<uuid>.partial`` opened with ``O_DIRECT``, cut to its length
with ``ftruncate`` and renamed into place, as ``LocalStore`` renames its temporary files.
Smaller values (metadata, log segments) and every write on a filesystem that refuses
``O_DIRECT`` (``EINVAL``; the store then stops trying) go through ``LocalStore``. Reads
are ``LocalStore``'s: the kernel keeps direct writes and cached reads coherent.
"""

from __future__ import annotations

import asyncio
import errno
import mmap
import os
import threading
import uuid
from pathlib import Path
from typing import Literal, Self

from zarr.abc.buffer import Buffer
from zarr.storage import LocalStore

from .compat import ensure_open_sync

__all__ = ["DirectLocalStore", "direct_io_supported"]

#: Alignment of buffer addresses, file offsets and lengths: the largest logical block
#: size in common use (512 on this VM's disk), and the page size.
_ALIGN = 4096
#: Bytes copied and written per system call; also the size of each thread's buffer.
_STEP = 16 << 20
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_REFUSED = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP)

_buffers = threading.local()


def direct_io_supported() -> bool:
    """True where the platform has ``O_DIRECT`` (Linux, FreeBSD); each filesystem may still refuse it."""
    return bool(_O_DIRECT)


def _aligned_buffer() -> memoryview:
    # An anonymous mapping is page-aligned; one per thread, kept (never resized or
    # closed), so its pages are faulted in once, not per write.
    view = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(mmap.mmap(-1, _STEP))
    return view


def _write_direct(path: Path, data: memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file opened with ``O_DIRECT``."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_DIRECT
    try:
        fd = os.open(tmp, flags, 0o666)
    except FileNotFoundError:  # first chunk of its directory: cheaper than a mkdir per write
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o666)
    buf = _aligned_buffer()
    try:
        try:
            n = data.nbytes
            for start in range(0, n, _STEP):
                part = data[start:start + _STEP]
                size = part.nbytes
                buf[:size] = part
                padded = -(-size // _ALIGN) * _ALIGN
                written = 0
                while written < padded:
                    written += os.write(fd, buf[written:padded])
            os.ftruncate(fd, n)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class DirectLocalStore(LocalStore):
    """:class:`zarr.storage.LocalStore` writing values of ``min_bytes`` or more with ``O_DIRECT``.

    Pass it to :func:`~ngff_writer.open_output` instead of a path to keep an export out of
    the page cache (see the module docstring for when that is faster).

    Parameters
    ----------
    root
        Directory of the store.
    read_only
        Open without writes.
    min_bytes
        Smallest value written directly; smaller ones go through the page cache,
        where a direct write's padding and its wait for the device cost more than
        the copy it saves.
    """

    def __init__(self, root: Path | str, *, read_only: bool = False, min_bytes: int = 256 << 10) -> None:
        super().__init__(root, read_only=read_only)
        self.min_bytes = min_bytes
        #: False once the filesystem refused ``O_DIRECT``: every write is then buffered.
        self.direct = direct_io_supported()

    @classmethod
    async def open(cls, root: Path | str, *, read_only: bool = False,
                   mode: Literal["r", "r+", "a", "w", "w-"] | None = None,
                   min_bytes: int = 256 << 10) -> Self:
        """Create and open the store (``LocalStore.open``, which knows no ``min_bytes``)."""
        store = await super().open(root, read_only=read_only, mode=mode)
        store.min_bytes = min_bytes
        return store

    def with_read_only(self, read_only: bool = False) -> DirectLocalStore:
        store = type(self)(self.root, read_only=read_only, min_bytes=self.min_bytes)
        store.direct = self.direct
        return store

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LocalStore) and self.root == other.root

    def __repr__(self) -> str:
        return f"DirectLocalStore('{self}')"

    def _put(self, key: str, value: Buffer) -> bool:
        """Write ``value`` directly; False when it is to go through ``LocalStore`` instead."""
        if not isinstance(value, Buffer):
            return False  # LocalStore refuses it with its own TypeError
        data = memoryview(value.as_buffer_like()).cast("B")
        if not self.direct or data.nbytes < self.min_bytes:
            return False
        try:
            _write_direct(self.root / key, data)
        except OSError as exc:
            if exc.errno not in _REFUSED:
                raise
            self.direct = False  # this filesystem (tmpfs before Linux 6.6, some FUSE) refuses it
            return False
        return True

    def set_sync(self, key: str, value: Buffer) -> None:
        ensure_open_sync(self)
        self._check_writable()
        if not self._put(key, value):
            super().set_sync(key, value)

    async def set(self, key: str, value: Buffer) -> None:
        await self._ensure_open()
        self._check_writable()
        if not await asyncio.to_thread(self._put, key, value):
            await super().set(key, value)
