"""ChunkWriter stores exactly the bytes zarr stores, chunks and shards alike, or declines the array."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec, BytesCodec, GzipCodec, ShardingCodec, ZstdCodec
from zarr.core.codec_pipeline import BatchedCodecPipeline
from zarr.registry import register_pipeline
from zarr.storage import LocalStore, MemoryStore

import ngff_writer as nw
from ngff_writer._storage.stores import run
from ngff_writer._write.encode import ChunkWriter

SHAPE, CHUNKS = (5, 37, 70), (2, 16, 32)  # short chunks at the end of every axis

V3 = {
    "none": None,
    "blosc-zstd": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "blosc-lz4-bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
    "zstd-checksum": ZstdCodec(level=3, checksum=True),
    "gzip": GzipCodec(level=5),
}
V2 = {
    "none": None,
    "blosc": numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE),
    "zstd": numcodecs.Zstd(level=3),
    "gzip": numcodecs.GZip(level=5),
}


def _create(store: Any, fmt: int, codec: Any, dtype: str, fill: Any, **kw: Any) -> zarr.Array:
    extra = {} if fmt == 3 else {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    return zarr.create_array(store, name="img/0", shape=SHAPE, chunks=CHUNKS, dtype=dtype,
                             compressors=codec, fill_value=fill, zarr_format=fmt, **extra, **kw)


def _data(dtype: str, fill: Any) -> np.ndarray:
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "b":
        data = rng.random(SHAPE) > 0.5
    elif np.dtype(dtype).kind == "f":
        data = rng.normal(size=SHAPE).astype(dtype)
    else:
        data = rng.integers(0, 100, SHAPE).astype(dtype)
    data[0:2, 0:16, 0:32] = fill  # a whole chunk of fill value: deleted, not written
    data[2:4, 16:32, 32:64] = data.dtype.type(fill)
    data[2, 20, 40] = 1  # ... but one value in it: written
    if data.dtype.kind == "f" and fill == 0:
        data[4:5, 32:37, 64:70] = -0.0  # zarr compares a 0.0 fill bit for bit: -0.0 is data
    return data


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): _timeless(p.read_bytes()) for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs", ".zgroup")}


#: A gzip member's header (numcodecs' GZip: no flags, Unix), whose bytes 4-7 are the time it
#: was made: two encodes of the same chunk a second apart differ there only.
_GZIP_HEADER = re.compile(rb"\x1f\x8b\x08\x00(....)\x00\xff", re.DOTALL)


def _timeless(data: bytes) -> bytes:
    # Every member's, not only the first: a shard holds one per inner chunk (a match in
    # compressed bytes by chance is zeroed alike on both sides compared).
    return _GZIP_HEADER.sub(lambda m: m[0][:4] + bytes(4) + m[0][8:], data)


def _write(array: zarr.Array, region: tuple[slice, ...], data: np.ndarray) -> None:
    writer = ChunkWriter.of(array.async_array)
    assert writer is not None and writer.covers(region)
    with ThreadPoolExecutor(2) as pool:
        run(writer.write(region, data, pool))


CASES = [(3, name, dtype) for name in V3 for dtype in ("float32", "uint16")] + \
        [(3, "blosc-zstd", dtype) for dtype in ("bool", "int8", "float64", "int64")] + \
        [(2, name, dtype) for name in V2 for dtype in ("float32", "uint16")]


@pytest.mark.parametrize(("fmt", "codec", "dtype"), CASES)
def test_same_bytes_as_zarr_on_disk(tmp_path: Path, fmt: int, codec: str, dtype: str) -> None:
    compressor = (V3 if fmt == 3 else V2)[codec]
    fill = False if dtype == "bool" else 0
    data = _data(dtype, fill)
    ours = _create(LocalStore(tmp_path / "ours"), fmt, compressor, dtype, fill)
    theirs = _create(LocalStore(tmp_path / "theirs"), fmt, compressor, dtype, fill)
    full = tuple(slice(0, n) for n in SHAPE)
    # First everything, then an aligned part again with all-fill data where chunks exist:
    # zarr deletes those chunks, and so must we.
    part = (slice(0, 2), slice(0, 32), slice(32, 70))
    theirs[full] = data
    _write(ours, full, data)
    assert _files(tmp_path / "ours") == _files(tmp_path / "theirs")
    zeros = np.zeros((2, 32, 38), dtype)
    theirs[part] = zeros
    _write(ours, part, zeros)
    files = _files(tmp_path / "ours")
    assert files == _files(tmp_path / "theirs")
    assert len(files) < np.prod([-(-n // c) for n, c in zip(SHAPE, CHUNKS, strict=True)])
    want = data.copy()
    want[part] = 0
    np.testing.assert_array_equal(zarr.open_array(LocalStore(tmp_path / "ours"), path="img/0")[...], want)


@pytest.mark.parametrize("fmt", [2, 3])
def test_same_bytes_through_an_async_store(fmt: int) -> None:
    # A store without synchronous writes (here zarr's MemoryStore) is awaited on the loop.
    compressor = V3["blosc-zstd"] if fmt == 3 else V2["blosc"]
    ours, theirs = MemoryStore(), MemoryStore()
    a, b = (_create(s, fmt, compressor, "float32", 0) for s in (ours, theirs))
    data = _data("float32", 0)
    full = tuple(slice(0, n) for n in SHAPE)
    b[full] = data
    _write(a, full, data)
    metadata = ("zarr.json", ".zarray", ".zattrs", ".zgroup")

    def chunk_keys(store: MemoryStore) -> set[str]:
        return {k for k in store._store_dict if not k.endswith(metadata)}

    assert chunk_keys(ours) == chunk_keys(theirs)
    assert len(chunk_keys(ours)) > 10
    for key in chunk_keys(ours):
        assert ours._store_dict[key].to_bytes() == theirs._store_dict[key].to_bytes(), key


def test_a_nan_fill_value_and_a_nonzero_one(tmp_path: Path) -> None:
    for name, dtype, fill in (("nan", "float32", float("nan")), ("seven", "uint16", 7)):
        ours = _create(LocalStore(tmp_path / name / "ours"), 3, V3["zstd-checksum"], dtype, fill)
        theirs = _create(LocalStore(tmp_path / name / "theirs"), 3, V3["zstd-checksum"], dtype, fill)
        data = _data(dtype, fill)
        full = tuple(slice(0, n) for n in SHAPE)
        theirs[full] = data
        _write(ours, full, data)
        files = _files(tmp_path / name / "ours")
        assert files == _files(tmp_path / name / "theirs")
        assert "img/0/c/0/0/0" not in files  # the chunk of fill value only


def test_regions_that_are_not_whole_chunks_are_left_to_zarr(tmp_path: Path) -> None:
    writer = ChunkWriter.of(_create(LocalStore(tmp_path), 3, V3["blosc-zstd"], "float32", 0).async_array)
    assert writer is not None
    assert writer.covers((slice(2, 5), slice(16, 37), slice(0, 64)))
    assert not writer.covers((slice(1, 3), slice(0, 16), slice(0, 32)))  # starts inside a chunk
    assert not writer.covers((slice(0, 2), slice(0, 20), slice(0, 32)))  # ends inside one


SHARDS = (2, 32, 64)  # 2 x 2 x 2 chunks; shards at the end hold chunks past the array


def _sharded(store: Any, codec: Any, *, at: str = "end", order: str = "morton",
             empty: bool = False) -> zarr.Array:
    sharding = ShardingCodec(chunk_shape=CHUNKS, codecs=[BytesCodec(), *([codec] if codec else [])],
                             index_location=at, subchunk_write_order=order)
    return zarr.create_array(store, name="img/0", shape=SHAPE, chunks=SHARDS, dtype="float32",
                             serializer=sharding, compressors=None, fill_value=0,
                             config={"write_empty_chunks": empty})


@pytest.mark.parametrize(("codec", "at", "order", "empty"), [
    ("blosc-zstd", "end", "morton", False), ("none", "end", "morton", False),
    ("zstd-checksum", "start", "morton", False), ("gzip", "end", "lexicographic", False),
    ("blosc-zstd", "start", "lexicographic", True),
])
def test_same_shards_as_zarr_on_disk(tmp_path: Path, codec: str, at: str, order: str, empty: bool) -> None:
    data = _data("float32", 0)
    data[0:2, 0:32, 0:64] = 0  # a whole shard of fill value: no shard at all
    ours, theirs = (_sharded(LocalStore(tmp_path / who), V3[codec], at=at, order=order, empty=empty)
                    for who in ("ours", "theirs"))
    writer = ChunkWriter.of(ours.async_array)
    assert writer is not None and writer.block == SHARDS
    full = tuple(slice(0, n) for n in SHAPE)
    theirs[full] = data
    _write(ours, full, data)
    files = _files(tmp_path / "ours")
    assert files == _files(tmp_path / "theirs")
    assert ("img/0/c/0/0/0" in files) is empty
    # Shards written again: one whole of fill value now, the others with new data.
    part = (slice(2, 5), slice(0, 37), slice(0, 70))
    again = np.zeros((3, 37, 70), np.float32)
    again[2] = 5
    theirs[part] = again
    _write(ours, part, again)
    assert _files(tmp_path / "ours") == _files(tmp_path / "theirs")
    assert not list((tmp_path / "ours").rglob("*.partial"))
    want = data.copy()
    want[part] = again
    np.testing.assert_array_equal(zarr.open_array(LocalStore(tmp_path / "ours"), path="img/0")[...], want)


def test_same_shards_through_an_async_store_and_direct_io(tmp_path: Path) -> None:
    data = _data("float32", 0)
    full = tuple(slice(0, n) for n in SHAPE)
    theirs = _sharded(MemoryStore(), V3["blosc-zstd"])
    theirs[full] = data
    want = {k: v.to_bytes() for k, v in theirs.store_path.store._store_dict.items()
            if "/c/" in k}
    memory = MemoryStore()
    _write(_sharded(memory, V3["blosc-zstd"]), full, data)
    assert {k: v.to_bytes() for k, v in memory._store_dict.items() if "/c/" in k} == want
    direct = nw.DirectLocalStore(tmp_path / "direct")
    _write(_sharded(direct, V3["blosc-zstd"]), full, data)
    assert {k: v for k, v in _files(tmp_path / "direct").items()} == want


def test_a_failed_shard_leaves_the_old_one_and_no_partial_file(tmp_path: Path) -> None:
    array = _sharded(LocalStore(tmp_path), V3["blosc-zstd"])
    data = _data("float32", 0)
    full = tuple(slice(0, n) for n in SHAPE)
    _write(array, full, data)
    before = _files(tmp_path)
    writer = ChunkWriter.of(array.async_array)
    assert writer is not None

    def broken(view: np.ndarray) -> Any:
        raise OSError("disk full")

    writer.encode = broken  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool, pytest.raises(OSError, match="disk full"):
        run(writer.write(full, data * 2, pool))
    assert _files(tmp_path) == before
    assert not list(tmp_path.rglob("*.partial"))


@pytest.mark.parametrize("case", ["shard-index-without-crc", "shard-colexicographic", "big-endian",
                                  "v2-filters", "v2-order-F", "complex"])
def test_arrays_it_cannot_reproduce_are_declined(tmp_path: Path, case: str) -> None:
    store = LocalStore(tmp_path)
    if case.startswith("shard"):
        sharding = ShardingCodec(chunk_shape=CHUNKS, index_codecs=[BytesCodec()]) \
            if case == "shard-index-without-crc" else \
            ShardingCodec(chunk_shape=CHUNKS, subchunk_write_order="colexicographic")
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=SHARDS, dtype="float32",
                                  serializer=sharding, compressors=None, fill_value=0)
    elif case == "big-endian":
        array = zarr.create_array(store, name="a", shape=SHAPE, chunks=CHUNKS, dtype="float32",
                                  serializer=BytesCodec(endian="big"), fill_value=0)
    elif case == "v2-filters":
        array = _create(store, 2, V2["zstd"], "float32", 0, filters=[numcodecs.Delta(dtype="f4")])
    elif case == "v2-order-F":
        array = _create(store, 2, V2["zstd"], "float32", 0, order="F")
    else:
        array = _create(store, 3, V3["blosc-zstd"], "complex64", 0)
    assert ChunkWriter.of(array.async_array) is None


def test_an_export_stores_its_levels_through_it(tmp_path: Path) -> None:
    # The engine takes this path for a default image at every level, and what it stores
    # reads back as written (every other test of the suite writes through it too).
    out = nw.open_output(tmp_path / "out.zarr", mode="w")
    img = out.create_image("pred", shape=(3, 1, 8, 64, 64), axes="sczyx", dtype="float32",
                           chunks=(1, 1, 8, 32, 32), pyramid={"levels": 3})
    data = np.random.default_rng(2).random((3, 1, 8, 64, 64), dtype=np.float32)
    for i in range(3):
        img.write_sample(i, data[i])
    writer = img._writer
    assert all(level.direct is not None for level in writer.levels)
    out.close()
    back = zarr.open_group(tmp_path / "out.zarr", mode="r")
    np.testing.assert_array_equal(back["pred/0"][...], data)
    assert back["pred/1"].shape == (3, 1, 8, 32, 32)
    np.testing.assert_allclose(back["pred/1"][...],
                               data.reshape(3, 1, 8, 32, 2, 32, 2).mean(axis=(4, 6)), rtol=1e-6)


class _ChosenPipeline(BatchedCodecPipeline):
    """Stands for a pipeline a user configures (zarrs-python's, say)."""


def test_a_pipeline_the_user_chose_encodes_every_chunk(tmp_path: Path) -> None:
    register_pipeline(_ChosenPipeline)
    name = f"{_ChosenPipeline.__module__}.{_ChosenPipeline.__qualname__}"
    with zarr.config.set({"codec_pipeline.path": name}):
        out = nw.open_output(tmp_path / "out.zarr", mode="w")
        img = out.create_image("pred", shape=(2, 64, 64), axes="syx", dtype="float32", chunks=(1, 32, 32))
        img.write_sample(0, np.ones((64, 64), np.float32))
        level = img._writer.levels[0]
        assert type(level.array().async_array.codec_pipeline) is _ChosenPipeline
        assert level.direct is None
        img.write_sample(1, np.full((64, 64), 2, np.float32))
        out.close()
    back = zarr.open_array(tmp_path / "out.zarr" / "pred" / "0", mode="r")[...]
    np.testing.assert_array_equal(back, np.stack([np.ones((64, 64)), np.full((64, 64), 2)]))


def test_the_encoding_threads_follow_zarrs_setting_unless_the_context_says(tmp_path: Path) -> None:
    with zarr.config.set({"codec_pipeline.max_workers": 3}):
        for given, want in ((None, 3), (5, 5)):
            with nw.Context(encode_threads=given) as ctx, \
                    nw.open_output(tmp_path / f"{given}.zarr", mode="w", context=ctx) as out:
                img = out.create_image("pred", shape=(2, 64, 64), axes="syx", dtype="float32",
                                       chunks=(1, 32, 32))
                img.write_sample(0, np.ones((64, 64), np.float32))
                assert ctx.encoders.size == want
