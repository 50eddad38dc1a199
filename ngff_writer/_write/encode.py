"""Whole chunks and shards encoded with the array's own codecs and put in the store: zarr's bytes, less work.

zarr's codec pipeline is general: for every chunk of a write it builds an index, wraps the
data in its buffer types, merges it into a chunk array, compares the whole chunk with the
fill value and calls each codec through its own wrappers. On the 2 GiB benchmark stream
that Python costs 5-9% of the CPU on two cores, where the codec itself takes 70%
(``benchmarks/README.md``, "Performance against tensorstore"). The engine's writes are
whole write units, made of whole chunks, so none of that generality is needed: each chunk
is one copy of a view, one numcodecs call (the codec zarr itself calls, with the same
settings) and one store write.

:meth:`ChunkWriter.of` takes only arrays whose stored bytes it reproduces exactly: no
filters, little-endian numeric data, and no compressor or one of Blosc, Zstd, GZip (zarr
v3) or any numcodecs compressor (zarr v2, which calls it the same way); sharded arrays
too, when their inner chunks are such and their index is zarr's default (little-endian
offsets and lengths, then a CRC32C). Every other array, a codec pipeline the user chose
(zarrs, say) and a region that is not made of whole write units keep zarr's own path.
Chunks that hold only the fill value are deleted rather than written (inside a shard:
left out of it, and a shard of nothing but fill is deleted), as zarr does when
``write_empty_chunks`` is off (its default). ``tests/test_encode.py`` compares the bytes
with zarr's for every case taken.

Shards are written by hand because zarr builds a whole shard in memory, from a copy of
its data, before storing it: on the 2 GiB stream of 32 MiB samples, one shard each, it
writes 1.6x slower than this path (``benchmarks/README.md``, "Shards"). Here the inner
chunks are encoded a few at a time, on every encoding thread, and written in zarr's order
(Morton, or C order where the codec says so) as they come; on local disk straight into
the shard's temporary file, renamed into place once its index is written after them, so
a shard costs a few encoded chunks of memory. Other stores take one value per key: the
encoded chunks are joined once, then put. A shard whose parts come at different times
(tiles, a lower level gathering samples) is filled by a :class:`ShardSink`, a few chunks
at a time, in the order they come.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.abc.codec import Codec
from zarr.buffer import default_buffer_prototype
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, GzipCodec, ShardingCodec, ZstdCodec
from zarr.storage import LocalStore

from .._storage.compat import is_zarr_pipeline
from .._storage.localstore import DirectLocalStore
from .._storage.pagecache import WrittenFiles
from .._storage.stores import run, temporary_name

__all__ = ["ChunkWriter", "ShardSink"]

Region = tuple[slice, ...]

_SHUFFLES = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
             "bitshuffle": numcodecs.Blosc.BITSHUFFLE}


def _as_bytes(chunk: np.ndarray) -> np.ndarray:
    return chunk.reshape(-1).view(np.uint8)


def _endian(codec: BytesCodec) -> str | None:
    return None if codec.endian is None else str(getattr(codec.endian, "value", codec.endian))


@dataclasses.dataclass(frozen=True)
class _Codec:
    """What zarr's codecs make of a C-ordered chunk, and the way back (a shard's chunk read back).

    ``compressor`` is the numcodecs codec zarr itself calls (None: the raw bytes); zarr v3
    hands it the serialized chunk as a uint8 array, zarr v2 the chunk array itself (``whole``).
    """

    compressor: Any | None = None
    whole: bool = False

    def encode(self, chunk: np.ndarray) -> Any:
        if self.compressor is None:
            return _as_bytes(chunk)
        return self.compressor.encode(chunk if self.whole else _as_bytes(chunk))

    def decode(self, payload: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        raw = payload if self.compressor is None else self.compressor.decode(payload)
        return np.frombuffer(raw, np.uint8).view(dtype).reshape(shape)


def _v3_codec(codecs: tuple[Codec, ...], dtype: np.dtype) -> _Codec | None:
    """What zarr's v3 codecs do to a C-ordered chunk, or None if this module cannot say."""
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None  # sharding, or an array-to-array codec (transpose) first
    if dtype.itemsize > 1 and _endian(codecs[0]) != sys.byteorder:
        return None
    if len(codecs) == 1:
        return _Codec()
    if len(codecs) > 2:
        return None
    codec = codecs[1]
    if isinstance(codec, BloscCodec):
        return _Codec(numcodecs.Blosc(cname=str(codec.cname), clevel=codec.clevel,
                                      shuffle=_SHUFFLES[str(codec.shuffle)], blocksize=codec.blocksize,
                                      typesize=codec.typesize))
    if isinstance(codec, ZstdCodec):
        return _Codec(numcodecs.Zstd(level=codec.level, checksum=codec.checksum))
    if isinstance(codec, GzipCodec):
        return _Codec(numcodecs.GZip(level=codec.level))
    return None


def _v2_codec(metadata: Any) -> _Codec | None:
    """What zarr does to a C-ordered chunk of a v2 array, or None if it filters or reorders."""
    if metadata.filters or metadata.order != "C":
        return None
    return _Codec(metadata.compressor, whole=True)


#: An absent inner chunk's offset and length in a shard's index.
_ABSENT = 2**64 - 1


def _morton_order(grid: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """The coordinates of ``grid`` in Morton (Z) order, as zarr writes a shard's chunks.

    A coordinate's code takes bit ``b`` of every axis in turn, lowest bits first, skipping
    an axis once its size needs no more bits; coordinates are sorted by their code.
    """
    bits = [(n - 1).bit_length() for n in grid]

    def code(coords: tuple[int, ...]) -> int:
        value, out = 0, 0
        for b in range(max(bits, default=0)):
            for axis, width in enumerate(bits):
                if b < width:
                    value |= ((coords[axis] >> b) & 1) << out
                    out += 1
        return value

    return tuple(sorted(itertools.product(*(range(n) for n in grid)), key=code))


@dataclasses.dataclass(frozen=True)
class _ShardLayout:
    """Where a shard's inner chunks and index go: zarr's layout, for one array."""

    shard: tuple[int, ...]
    grid: tuple[int, ...]  # inner chunks per shard
    order: tuple[tuple[int, ...], ...]  # inner chunks in the order they are stored
    index_at_start: bool

    @classmethod
    def of(cls, codec: ShardingCodec, shard: tuple[int, ...]) -> _ShardLayout | None:
        """The layout of ``codec``'s shards, or None where it is not zarr's default index."""
        index = tuple(codec.index_codecs)
        if (len(index) != 2 or not isinstance(index[0], BytesCodec) or _endian(index[0]) != "little"
                or not isinstance(index[1], Crc32cCodec)):
            return None
        grid = tuple(s // c for s, c in zip(shard, codec.chunk_shape, strict=True))
        order_name = str(getattr(codec, "subchunk_write_order", "morton"))
        if order_name == "morton":
            order = _morton_order(grid)
        elif order_name == "lexicographic":
            order = tuple(itertools.product(*(range(n) for n in grid)))
        else:
            return None
        at_start = str(getattr(codec.index_location, "value", codec.index_location)) == "start"
        return cls(shard, grid, order, at_start)

    @property
    def index_size(self) -> int:
        return 16 * len(self.order) + 4

    def index(self, entries: np.ndarray) -> bytes:
        """The stored index: (offset, length) per inner chunk, little-endian, then its CRC32C."""
        raw = np.ascontiguousarray(entries, dtype="<u8").tobytes()
        crc = int(google_crc32c.value(raw))
        return raw + crc.to_bytes(4, "little")


class _ShardFile:
    """A shard written into a temporary file beside its key, renamed into place when whole.

    Like ``LocalStore``'s own writes, a reader sees the old shard or the new one, never a
    part; a failed write leaves only its temporary file, which :meth:`abort` removes.
    """

    def __init__(self, path: Path, reserve: int, written: WrittenFiles) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.written = written
        self.partial = path.with_name(temporary_name(path.name))
        self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        self.size = reserve
        if reserve:
            os.pwrite(self.fd, bytes(reserve), 0)

    def write(self, payload: Any) -> None:
        view = memoryview(payload).cast("B")
        while view:
            done = os.pwrite(self.fd, view, self.size)
            self.size += done
            view = view[done:]

    def finish(self, index: bytes, at: int | None) -> None:
        os.pwrite(self.fd, index, self.size if at is None else at)
        fd, self.fd = self.fd, -1
        self.written.hand_over(fd, self.size + (len(index) if at is None else 0))
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
        self.partial.unlink(missing_ok=True)


class _ShardBuild:
    """One shard being written: its inner chunks, encoded on several threads, laid out in order.

    Each thread encodes its chunk, then waits for the chunk before it to be laid out and
    lays out its own (written to the file, or kept), so a payload is freed by the thread
    that made it (freed elsewhere, glibc kept ~30 MiB more of the threads' arenas on a
    stream of 32 MiB shards). Chunks are submitted in order to a first-in first-out pool,
    so the chunk a thread waits for has already been taken by another thread: the wait
    ends. A failure is passed down the line, so nothing waits for a chunk that never comes.
    """

    def __init__(self, layout: _ShardLayout, sink: _ShardFile | None) -> None:
        self.layout = layout
        self.sink = sink
        self.entries = np.full((*layout.grid, 2), _ABSENT, dtype="<u8")
        self.offset = self.start = layout.index_size if layout.index_at_start else 0
        self.held: list[Any] = []
        self.failed: BaseException | None = None
        self._next = 0
        self._turn = threading.Condition()

    @property
    def empty(self) -> bool:
        return self.offset == self.start

    def add(self, seq: int, encode: Callable[[], Any | None]) -> None:
        """Encode chunk ``seq`` (of ``layout.order``) and lay it out after chunk ``seq - 1``."""
        payload = None
        try:
            if self.failed is None:
                payload = encode()
        except BaseException as exc:
            with self._turn:
                self.failed = self.failed or exc
        with self._turn:
            self._turn.wait_for(lambda: self._next == seq)
            try:
                if self.failed is None and payload is not None:
                    size = memoryview(payload).nbytes
                    self.entries[self.layout.order[seq]] = (self.offset, size)
                    self.offset += size
                    if self.sink is not None:
                        self.sink.write(payload)
                    else:
                        self.held.append(payload)
            except BaseException as exc:
                self.failed = self.failed or exc
            finally:
                self._next += 1
                self._turn.notify_all()

    def finish(self) -> None:
        """Write the index and put the shard's file in place."""
        assert self.sink is not None
        self.sink.finish(self.layout.index(self.entries), 0 if self.layout.index_at_start else None)

    def joined(self) -> bytes:
        """The whole shard as one value."""
        index = self.layout.index(self.entries)
        parts = [index, *self.held] if self.layout.index_at_start else [*self.held, index]
        self.held = []
        return b"".join(memoryview(p).cast("B") for p in parts)

    def abort(self) -> None:
        self.held = []
        if self.sink is not None:
            self.sink.abort()


class ShardSink:
    """A shard filled as its parts arrive: whole chunks encoded into it, in any order.

    A level assembled from parts (tiles, or the samples a lower level's shard gathers) would
    otherwise hold its whole shard in memory until the last part came: up to 128 MiB per
    level, the memory the sharded default cost over one file per chunk
    (``benchmarks/README.md``, "Shards"). Here every store of whole chunks (:meth:`write`)
    encodes them on the encoding threads and lays them out after what is there: on local
    disk in the shard's temporary file, elsewhere kept encoded until the end. Their order
    in the shard is the order they came in (any order is valid: readers find a chunk by
    the index). :meth:`finish` writes the index and puts the shard in place, as zarr would
    leave it; :meth:`read` decodes chunks back, for a writer that must hand its parts over
    as fragments. Thread-safe.
    """

    def __init__(self, writer: ChunkWriter, layout: _ShardLayout, coords: tuple[int, ...]) -> None:
        self._writer = writer
        self._layout = layout
        self.key = writer._prefix + writer._key(coords)
        self._origin = tuple(i * b for i, b in zip(coords, layout.shard, strict=True))
        local = writer._local
        start = layout.index_size if layout.index_at_start else 0
        self._file = (_ShardFile(Path(local.root) / self.key, start, writer.written)
                      if local is not None and not isinstance(local, DirectLocalStore) else None)
        self._held: dict[int, Any] = {}  # payloads by offset, in the order laid out, where there is no file
        self._entries = np.full((*layout.grid, 2), _ABSENT, dtype="<u8")
        self._offset = start
        self._lock = threading.Lock()

    def _chunks(self, region: Region) -> Iterator[tuple[tuple[int, ...], Region]]:
        """The chunks of ``region`` (whole chunks, in array coordinates): shard coords, extent."""
        c = self._writer.chunks
        ranges = [range(s.start // n, -(-s.stop // n)) for s, n in zip(region, c, strict=True)]
        for coords in itertools.product(*ranges):
            extent = tuple(slice(i * n, min((i + 1) * n, s.stop))
                           for i, n, s in zip(coords, c, region, strict=True))
            yield tuple(i - o // n for i, o, n in zip(coords, self._origin, c, strict=True)), extent

    async def write(self, region: Region, data: np.ndarray, executor: Executor) -> None:
        """Encode the whole chunks of ``region`` (``data``) and lay them out in the shard."""
        loop = asyncio.get_running_loop()
        views = [(coords, data[tuple(slice(e.start - r.start, e.stop - r.start)
                                     for e, r in zip(extent, region, strict=True))])
                 for coords, extent in self._chunks(region)]
        outcomes = await asyncio.gather(*(loop.run_in_executor(executor, self._put, coords, view)
                                          for coords, view in views), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _put(self, coords: tuple[int, ...], view: np.ndarray) -> None:
        # Laid out by the thread that encoded it, which frees it (see _ShardBuild).
        payload = self._writer.encode(view)
        with self._lock:
            if payload is None:  # all fill value: absent, as zarr leaves it
                self._entries[coords] = _ABSENT
                return
            size = memoryview(payload).nbytes
            self._entries[coords] = (self._offset, size)
            if self._file is not None:
                self._file.write(payload)
            else:
                self._held[self._offset] = payload
            self._offset += size

    def read(self, region: Region) -> np.ndarray:
        """The data of ``region`` (whole chunks laid out here), decoded back."""
        w = self._writer
        out = np.empty(tuple(s.stop - s.start for s in region), w.dtype)
        with self._lock:
            for coords, extent in self._chunks(region):
                where = tuple(slice(e.start - r.start, e.stop - r.start)
                              for e, r in zip(extent, region, strict=True))
                offset, size = (int(v) for v in self._entries[coords])
                if offset == _ABSENT:
                    out[where] = w.fill_value
                    continue
                if self._file is not None:
                    payload: Any = os.pread(self._file.fd, size, offset)
                else:
                    payload = self._held[offset]
                chunk = self._writer._codec.decode(payload, w.dtype, w.chunks)
                out[where] = chunk[tuple(slice(0, e.stop - e.start) for e in extent)]
        return out

    def finish(self) -> None:
        """Write the index and put the shard in place (no shard where every chunk is fill value)."""
        w = self._writer
        with self._lock:
            empty = bool((self._entries[..., 0] == _ABSENT).all())
            index = self._layout.index(self._entries)
        if empty:
            self.abort()
            if w._local is not None:
                w._local.delete_sync(self.key)
            else:
                run(w._target.delete(self.key))
        elif self._file is not None:
            self._file.finish(index, 0 if self._layout.index_at_start else None)
        else:
            held = list(self._held.values())
            parts = [index, *held] if self._layout.index_at_start else [*held, index]
            self._held = {}
            value = w._buffer.from_bytes(b"".join(memoryview(p).cast("B") for p in parts))
            if w._local is not None:
                w._local.set_sync(self.key, value)
            else:
                run(w._target.set(self.key, value))

    def abort(self) -> None:
        """Leave nothing: the shard stays as it was."""
        self._held = {}
        if self._file is not None:
            self._file.abort()


#: Files finished by a writer made without a context's: write-back started, pages kept.
_KEEP_CACHED = WrittenFiles(release=False)


class ChunkWriter:
    """Encodes whole chunks (or shards) of one array as zarr would and puts them in its store.

    Build it with :meth:`of`. Thread-safe: chunks are encoded on the executor handed to
    :meth:`write`, and the numcodecs codecs used hold no state between calls.
    """

    def __init__(self, array: zarr.AsyncArray[Any], codec: _Codec,
                 shard: _ShardLayout | None = None, written: WrittenFiles | None = None) -> None:
        self._target = array.store_path.store
        #: Where finished files go (their cached pages handed back, or kept: the context's choice).
        self.written = written if written is not None else _KEEP_CACHED
        self._prefix = f"{array.store_path.path}/" if array.store_path.path else ""
        self._key = array.metadata.encode_chunk_key
        self._codec = codec
        self._shard = shard
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.chunks: tuple[int, ...] = tuple(array.chunks)
        #: What one key holds: a shard, or a chunk.
        self.block: tuple[int, ...] = shard.shard if shard is not None else self.chunks
        self.dtype = np.dtype(array.dtype)
        self.fill_value = array.metadata.fill_value
        self._skip_empty = not array.config.write_empty_chunks
        # zarr's test for a chunk of fill value only (its buffer's all_equal) compares bit
        # patterns where the fill value is a 0.0 float, and values (NaN equal to NaN)
        # elsewhere; for integers, booleans and that float fill, both are a comparison of
        # bits, done here without zarr's wrappers (measured: they cost more GIL time per
        # chunk than encoding it).
        self._bits: np.dtype | None = None
        fill = np.asarray(self.fill_value, self.dtype)
        if self.dtype.kind in "biu" or fill == 0:
            self._bits = np.dtype(f"u{self.dtype.itemsize}")
            self._fill_bits = fill.reshape(1).view(self._bits)[0]
        # LocalStore (DirectLocalStore too) writes synchronously, so a chunk is encoded and
        # written in one task on the executor, as zarr's fused pipeline does; other stores
        # (remote ones, and wrappers such as the guard) are awaited on the event loop.
        self._local = self._target if isinstance(self._target, LocalStore) else None
        self._nd = default_buffer_prototype().nd_buffer
        self._buffer = default_buffer_prototype().buffer

    @classmethod
    def of(cls, array: zarr.AsyncArray[Any], written: WrittenFiles | None = None) -> ChunkWriter | None:
        """A writer for ``array``, or None where zarr's own path must store its chunks.

        ``written``: what becomes of the files it finishes on a local disk (the context's
        :class:`~ngff_writer._storage.pagecache.WrittenFiles`); None keeps them cached.
        """
        if not is_zarr_pipeline(array.codec_pipeline):
            return None  # a pipeline the user configured (zarrs, say) does the work
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biuf" or not dtype.isnative or array.metadata.fill_value is None:
            return None
        shard = None
        if array.metadata.zarr_format == 3:
            codecs = tuple(array.metadata.codecs)
            if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
                shard = _ShardLayout.of(codecs[0], tuple(array.metadata.chunk_grid.chunk_shape))
                if shard is None:
                    return None
                codecs = tuple(codecs[0].codecs)
            codec = _v3_codec(codecs, dtype)
        else:
            codec = _v2_codec(array.metadata)
        return None if codec is None else cls(array, codec, shard, written)

    @property
    def sharded(self) -> bool:
        """True when a key holds a shard of several chunks."""
        return self._shard is not None

    def open_shard(self, coords: tuple[int, ...]) -> ShardSink:
        """A :class:`ShardSink` for the shard at ``coords`` (of the shard grid)."""
        assert self._shard is not None
        return ShardSink(self, self._shard, coords)

    # ---- which regions ----------------------------------------------------------------------
    def covers(self, region: Region) -> bool:
        """True when ``region`` is made of whole blocks (those at the array's end may be short)."""
        return all(s.start % c == 0 and (s.stop % c == 0 or s.stop == n)
                   for s, c, n in zip(region, self.block, self.shape, strict=True))

    def _pieces(self, region: Region, data: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        ranges = [range(s.start // c, -(-s.stop // c)) for s, c in zip(region, self.block, strict=True)]
        for coords in itertools.product(*ranges):
            view = data[tuple(slice(i * c - s.start, min((i + 1) * c, s.stop) - s.start)
                              for i, c, s in zip(coords, self.block, region, strict=True))]
            yield self._prefix + self._key(coords), view

    # ---- one chunk ------------------------------------------------------------------------
    def encode(self, view: np.ndarray) -> Any | None:
        """The stored bytes of the chunk whose data is ``view``, or None if it is all fill value."""
        if view.shape == self.chunks:
            # Copied only when it is a strided view; a unit of one chunk (tiles) is encoded in place.
            chunk = np.ascontiguousarray(view, dtype=self.dtype)
        else:  # the array's last chunk along some axis: zarr pads it with the fill value
            chunk = np.full(self.chunks, self.fill_value, self.dtype)
            chunk[tuple(slice(0, n) for n in view.shape)] = view
        if self._skip_empty and self._all_fill(chunk):
            return None
        return self._codec.encode(chunk)

    def _all_fill(self, chunk: np.ndarray) -> bool:
        flat = chunk.reshape(-1)
        if self._bits is None:  # a float fill value other than 0.0 (NaN, say): zarr's own test
            return bool(self._nd.from_numpy_array(flat).all_equal(self.fill_value))
        # The first element decides almost every chunk of real data; min and max then
        # make no temporary array.
        bits, fill = flat.view(self._bits), self._fill_bits
        return bool(bits[0] == fill and bits.min() == fill and bits.max() == fill)

    def _put_sync(self, store: LocalStore, key: str, view: np.ndarray) -> None:
        payload = self.encode(view)
        if payload is None:
            store.delete_sync(key)
        else:
            store.set_sync(key, self._buffer.from_bytes(payload))
            if not isinstance(store, DirectLocalStore):  # whose writes are not cached
                self.written.finished(Path(store.root) / key, memoryview(payload).nbytes)

    async def _put(self, key: str, view: np.ndarray, executor: Executor) -> None:
        if self._shard is not None:
            await self._put_shard(self._shard, key, view, executor)
            return
        loop = asyncio.get_running_loop()
        if self._local is not None:
            await loop.run_in_executor(executor, self._put_sync, self._local, key, view)
            return
        payload = await loop.run_in_executor(executor, self.encode, view)
        if payload is None:
            await self._target.delete(key)
        else:
            await self._target.set(key, self._buffer.from_bytes(payload))

    # ---- one shard ------------------------------------------------------------------------
    def _encode_inner(self, view: np.ndarray, coords: tuple[int, ...]) -> Any | None:
        part = view[tuple(slice(i * c, (i + 1) * c) for i, c in zip(coords, self.chunks, strict=True))]
        if part.size == 0:  # wholly past the array's end: zarr leaves it out, whatever its config
            return None
        return self.encode(part)

    async def _put_shard(self, layout: _ShardLayout, key: str, view: np.ndarray,
                         executor: Executor) -> None:
        loop = asyncio.get_running_loop()
        # Streamed into a file where the store is a plain local directory; joined once elsewhere
        # (a DirectLocalStore writes whole values through its aligned buffer, see localstore).
        local = self._local if not isinstance(self._local, DirectLocalStore) else None
        reserve = layout.index_size if layout.index_at_start else 0
        sink = _ShardFile(Path(local.root) / key, reserve, self.written) if local else None
        build = _ShardBuild(layout, sink)
        encode = self._encode_inner
        outcomes = await asyncio.gather(*(
            loop.run_in_executor(executor, build.add, seq, functools.partial(encode, view, coords))
            for seq, coords in enumerate(layout.order)), return_exceptions=True)
        if build.failed is not None:
            build.abort()
            raise build.failed
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:  # not one of ours (cancelled, say): nothing half-done stays
            build.abort()
            raise errors[0]
        if build.empty:  # every inner chunk is fill value: no shard, as zarr
            build.abort()
            if local is not None:
                local.delete_sync(key)
            else:
                await self._target.delete(key)
        elif local is not None:
            build.finish()
        else:
            await self._target.set(key, self._buffer.from_bytes(build.joined()))

    # ---- a region ---------------------------------------------------------------------------
    async def write(self, region: Region, data: np.ndarray, executor: Executor) -> None:
        """Store ``data`` (shaped like ``region``, which :meth:`covers`), its chunks concurrently.

        A failure is raised once every other piece has settled, so that no piece is still
        writing (or leaves a shard's temporary file) after the call has failed.
        """
        outcomes = await asyncio.gather(*(self._put(key, view, executor)
                                          for key, view in self._pieces(region, data)),
                                        return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
