"""Whole chunks encoded with the array's own codec and put in the store: zarr's bytes, less work.

zarr's codec pipeline is general: for every chunk of a write it builds an index, wraps the
data in its buffer types, merges it into a chunk array, compares the whole chunk with the
fill value and calls each codec through its own wrappers. On the 2 GiB benchmark stream
that Python costs 5-9% of the CPU on two cores, where the codec itself takes 70%
(``benchmarks/README.md``, "Performance against tensorstore"). The engine's writes are
whole write units, made of whole chunks, so none of that generality is needed: each chunk
is one copy of a view, one numcodecs call (the codec zarr itself calls, with the same
settings) and one store write.

:meth:`ChunkWriter.of` takes only arrays whose stored bytes it reproduces exactly: no
sharding, no filters, little-endian numeric data, and no compressor or one of Blosc,
Zstd, GZip (zarr v3) or any numcodecs compressor (zarr v2, which calls it the same way).
Every other array, a codec pipeline the user chose (zarrs, say) and a region that is not
made of whole chunks keep zarr's own path. Chunks that hold only the fill value are
deleted rather than written, as zarr does when ``write_empty_chunks`` is off (its
default). ``tests/test_encode.py`` compares the bytes with zarr's for every case taken.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.abc.codec import Codec
from zarr.buffer import default_buffer_prototype
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore

from .._storage.compat import is_zarr_pipeline

__all__ = ["ChunkWriter"]

Region = tuple[slice, ...]
Compress = Callable[[np.ndarray], Any]

_SHUFFLES = {"noshuffle": numcodecs.Blosc.NOSHUFFLE, "shuffle": numcodecs.Blosc.SHUFFLE,
             "bitshuffle": numcodecs.Blosc.BITSHUFFLE}


def _as_bytes(chunk: np.ndarray) -> np.ndarray:
    return chunk.reshape(-1).view(np.uint8)


def _v3_compress(codecs: tuple[Codec, ...], dtype: np.dtype) -> Compress | None:
    """What zarr's v3 codecs do to a C-ordered chunk, or None if this module cannot say."""
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None  # sharding, or an array-to-array codec (transpose) first
    endian = codecs[0].endian
    if dtype.itemsize > 1 and (endian is None or str(getattr(endian, "value", endian)) != sys.byteorder):
        return None
    if len(codecs) == 1:
        return _as_bytes
    if len(codecs) > 2:
        return None
    codec = codecs[1]
    # zarr hands each of these codecs the serialized chunk as a uint8 array.
    if isinstance(codec, BloscCodec):
        blosc = numcodecs.Blosc(cname=str(codec.cname), clevel=codec.clevel,
                                shuffle=_SHUFFLES[str(codec.shuffle)], blocksize=codec.blocksize,
                                typesize=codec.typesize)
        return lambda chunk: blosc.encode(_as_bytes(chunk))
    if isinstance(codec, ZstdCodec):
        zstd = numcodecs.Zstd(level=codec.level, checksum=codec.checksum)
        return lambda chunk: zstd.encode(_as_bytes(chunk))
    if isinstance(codec, GzipCodec):
        gzip = numcodecs.GZip(level=codec.level)
        return lambda chunk: gzip.encode(_as_bytes(chunk))
    return None


def _v2_compress(metadata: Any) -> Compress | None:
    """What zarr does to a C-ordered chunk of a v2 array, or None if it filters or reorders."""
    if metadata.filters or metadata.order != "C":
        return None
    compressor = metadata.compressor
    if compressor is None:
        return _as_bytes
    encode: Compress = compressor.encode  # zarr calls the numcodecs codec on the chunk array itself
    return encode


class ChunkWriter:
    """Encodes whole chunks of one array as zarr would and puts them in its store.

    Build it with :meth:`of`. Thread-safe: chunks are encoded on the executor handed to
    :meth:`write`, and the numcodecs codecs used hold no state between calls.
    """

    def __init__(self, array: zarr.AsyncArray[Any], compress: Compress) -> None:
        self._target = array.store_path.store
        self._prefix = f"{array.store_path.path}/" if array.store_path.path else ""
        self._key = array.metadata.encode_chunk_key
        self._compress = compress
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.chunks: tuple[int, ...] = tuple(array.chunks)
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
    def of(cls, array: zarr.AsyncArray[Any]) -> ChunkWriter | None:
        """A writer for ``array``, or None where zarr's own path must store its chunks."""
        if not is_zarr_pipeline(array.codec_pipeline):
            return None  # a pipeline the user configured (zarrs, say) does the work
        dtype = np.dtype(array.dtype)
        if dtype.kind not in "biuf" or not dtype.isnative or array.metadata.fill_value is None:
            return None
        if array.metadata.zarr_format == 3:
            compress = _v3_compress(tuple(array.metadata.codecs), dtype)
        else:
            compress = _v2_compress(array.metadata)
        return None if compress is None else cls(array, compress)

    # ---- which regions ----------------------------------------------------------------------
    def covers(self, region: Region) -> bool:
        """True when ``region`` is made of whole chunks (those at the array's end may be short)."""
        return all(s.start % c == 0 and (s.stop % c == 0 or s.stop == n)
                   for s, c, n in zip(region, self.chunks, self.shape, strict=True))

    def _pieces(self, region: Region, data: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
        ranges = [range(s.start // c, -(-s.stop // c)) for s, c in zip(region, self.chunks, strict=True)]
        for coords in itertools.product(*ranges):
            view = data[tuple(slice(i * c - s.start, min((i + 1) * c, s.stop) - s.start)
                              for i, c, s in zip(coords, self.chunks, region, strict=True))]
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
        return self._compress(chunk)

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

    async def _put(self, key: str, view: np.ndarray, executor: Executor) -> None:
        loop = asyncio.get_running_loop()
        if self._local is not None:
            await loop.run_in_executor(executor, self._put_sync, self._local, key, view)
            return
        payload = await loop.run_in_executor(executor, self.encode, view)
        if payload is None:
            await self._target.delete(key)
        else:
            await self._target.set(key, self._buffer.from_bytes(payload))

    # ---- a region ---------------------------------------------------------------------------
    async def write(self, region: Region, data: np.ndarray, executor: Executor) -> None:
        """Store ``data`` (shaped like ``region``, which :meth:`covers`), its chunks concurrently."""
        await asyncio.gather(*(self._put(key, view, executor) for key, view in self._pieces(region, data)))
