"""Pyramid levels: the reduction, the declaration, and levels built while tiles stream in."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from stores import CountingStore
from test_tiles import write_tiles
from tiling import tile_specs
from zarr.storage import LocalStore

import ngff_writer as nw
from ngff_writer import InvalidChunksError, SpecError, SpecMismatchError
from ngff_writer._declare.pyramid import downsample
from ngff_writer._declare.spec import parse_image_spec
from ngff_writer._track.log import Ledger
from ngff_writer.testing import abandon


def block_mean(x: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Independent reference: pad with NaN to whole blocks, nanmean over each block."""
    pads = [(0, (-n) % f) for n, f in zip(x.shape, factors, strict=True)]
    padded = np.pad(x.astype(np.float64), pads, constant_values=np.nan)
    shape: list[int] = []
    for n, f in zip(padded.shape, factors, strict=True):
        shape += [n // f, f]
    return np.nanmean(padded.reshape(shape), axis=tuple(range(1, 2 * x.ndim, 2)))


def chain(level0: np.ndarray, factors: tuple[int, ...], n: int, method: str = "mean") -> list[np.ndarray]:
    levels = [level0]
    for _ in range(n):
        levels.append(downsample(levels[-1], factors, method))
    return levels


def stored_levels(path) -> list[np.ndarray]:
    group = zarr.open_group(path, mode="r")
    n = len(group.attrs["ome"]["multiscales"][0]["datasets"])
    return [zarr.open_array(path / str(k), mode="r")[...] for k in range(n)]


@pytest.mark.parametrize("sharded", [False, True])
def test_counting_store_counts_chunk_reads_through_every_pipeline(tmp_path, sharded):
    # The zero-read checks below rely on it: a read by any codec pipeline is counted.
    ref = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, "cyx", chunks=(1, 16, 16), pyramid=2,
                               shards=(1, 32, 32) if sharded else None)
        img.write_sample(0, ref)
    for pipeline in ("BatchedCodecPipeline", "FusedCodecPipeline"):
        CountingStore.reset()
        with zarr.config.set({"codec_pipeline.path": f"zarr.core.codec_pipeline.{pipeline}"}):
            for level in ("0", "1"):
                arr = zarr.open_array(CountingStore(LocalStore(tmp_path / "o.zarr")), path=f"p/{level}")
                assert arr[...].shape
        assert CountingStore.reads >= 2, pipeline


# ---- the reduction ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(data=st.data(), ndim=st.integers(1, 4),
       dtype=st.sampled_from(["float32", "float64", "uint8", "int16", "uint16"]))
def test_downsample_equals_block_means(data, ndim, dtype):
    shape = tuple(data.draw(st.integers(1, 13), label=f"n{i}") for i in range(ndim))
    factors = tuple(data.draw(st.integers(1, 3), label=f"f{i}") for i in range(ndim))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
    if dtype.startswith("float"):
        x = rng.normal(0, 100, shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    got = downsample(x, factors, "mean")
    want = block_mean(x, factors)
    assert got.dtype == x.dtype and got.flags.c_contiguous
    if x.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    else:  # exactly the block mean rounded half to even, as Python's round() of a Fraction
        np.testing.assert_array_equal(got, exact_int_means(x, factors))


def exact_int_means(x: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    from fractions import Fraction

    out_shape = tuple(-(-n // f) for n, f in zip(x.shape, factors, strict=True))
    out = np.empty(out_shape, dtype=x.dtype)
    for idx in np.ndindex(*out_shape):
        block = x[tuple(slice(i * f, (i + 1) * f) for i, f in zip(idx, factors, strict=True))]
        out[idx] = round(Fraction(sum(int(v) for v in block.ravel()), block.size))
    return out


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_64_bit_means_keep_every_digit(dtype):
    # Above 2**53 a float64 mean loses the last digits; the exact integer mean does not.
    info = np.iinfo(dtype)
    rng = np.random.default_rng(3)
    x = rng.integers(info.max - 2**20, info.max, (6, 7), endpoint=True, dtype=dtype)
    x[0, 0] = info.max
    np.testing.assert_array_equal(downsample(x, (2, 2), "mean"), exact_int_means(x, (2, 2)))
    small = rng.integers(-(2**40) if dtype == "int64" else 0, 2**40, (5, 9), dtype=dtype)
    np.testing.assert_array_equal(downsample(small, (2, 3), "mean"), exact_int_means(small, (2, 3)))


def test_mask_pyramids_keep_thin_structures():
    mask = np.zeros((16, 16), bool)
    mask[5, :] = True   # a horizontal line one pixel wide
    mask[:, 10] = True  # and a vertical one
    half = downsample(mask, (2, 2), "mean")  # ties (half the block) count as True
    assert half[2, :].all() and half[:, 5].all()
    quarter = downsample(mask, (4, 4), "max")
    assert quarter[1, :].all() and quarter[:, 2].all()
    assert not downsample(mask, (4, 4), "mean")[0, 0]  # a quarter of a block is not half


@settings(max_examples=40, deadline=None)
@given(data=st.data(), ndim=st.integers(1, 3))
def test_mode_is_the_most_frequent_value_of_each_block(data, ndim):
    shape = tuple(data.draw(st.integers(1, 9), label=f"n{i}") for i in range(ndim))
    factors = tuple(data.draw(st.integers(1, 3), label=f"f{i}") for i in range(ndim))
    x = np.random.default_rng(data.draw(st.integers(0, 99), label="seed")).integers(0, 4, shape)
    got = downsample(x.astype(np.uint16), factors, "mode")
    for idx in np.ndindex(*got.shape):
        block = list(x[tuple(slice(i * f, (i + 1) * f) for i, f in zip(idx, factors, strict=True))].ravel())
        best = max(block.count(v) for v in block)
        # The most frequent value; of several, the one met first in the block.
        assert got[idx] == next(v for v in block if block.count(v) == best)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), ndim=st.integers(1, 3), method=st.sampled_from(["mean", "nearest", "mode", "max"]))
def test_downsample_of_aligned_pieces_equals_downsample_of_the_whole(data, ndim, method):
    # What lets a unit reduced while streaming and one rebuilt later hold the same bytes.
    factors = tuple(data.draw(st.integers(1, 3), label=f"f{i}") for i in range(ndim))
    unit = tuple(f * data.draw(st.integers(1, 4), label=f"u{i}") for i, f in enumerate(factors))
    shape = tuple(data.draw(st.integers(1, 30), label=f"n{i}") for i in range(ndim))
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    if method == "mode":
        x = (x * 4).astype(np.uint8)
    whole = downsample(x, factors, method)
    pieced = np.empty_like(whole)
    for idx in np.ndindex(*[-(-n // u) for n, u in zip(shape, unit, strict=True)]):
        src = tuple(slice(i * u, min((i + 1) * u, n)) for i, u, n in zip(idx, unit, shape, strict=True))
        dst = tuple(slice(s.start // f, -(-s.stop // f)) for s, f in zip(src, factors, strict=True))
        pieced[dst] = downsample(x[src], factors, method)
    assert pieced.tobytes() == whole.tobytes()


def test_nearest_keeps_the_first_pixel_of_each_block():
    x = np.arange(7 * 5, dtype=np.uint16).reshape(7, 5)
    np.testing.assert_array_equal(downsample(x, (2, 2), "nearest"), x[::2, ::2])


# ---- the declaration ------------------------------------------------------------------------
@pytest.mark.parametrize(("shape", "axes", "kw", "levels"), [
    ((64, 1, 32, 512, 512), "sczyx", {}, [(256, 256), (128, 128)]),   # default chunks 32x128x256
    ((4096, 4096), "yx", {}, [(2048, 2048), (1024, 1024)]),           # default chunks 1024x1024
    ((24, 40), "yx", {"chunks": (16, 16)}, [(12, 20), (6, 10)]),
    ((1000, 1000), "yx", {}, []),                                     # one chunk already
    ((30, 30), "yx", {"chunks": (15, 15)}, []),                       # odd chunks: auto stops
    ((90, 90), "yx", {"chunks": (30, 30)}, [(45, 45), (23, 23)]),     # odd sizes are fine
    ((8, 512, 512), "syx", {"pyramid": 4}, [(256, 256), (128, 128), (64, 64)]),
    ((8, 512, 512), "syx", {"pyramid": None}, []),
    ((8, 512, 512), "syx", {"pyramid": {"levels": 3, "factors": {"y": 1, "x": 4}}}, [(512, 128), (512, 32)]),
])
def test_levels_of_a_declaration(tmp_path, shape, axes, kw, levels):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", shape, axes, **kw)
        assert [lv.shape[-2:] for lv in img.spec.levels[1:]] == levels
        assert img.n_levels == 1 + len(levels)
        for lv in img.spec.levels[1:]:
            assert all(c <= n for c, n in zip(lv.chunks, lv.shape, strict=True))
            assert img.level(int(lv.path)).shape == lv.shape


def test_default_chunks_are_multiples_of_the_pyramid_factors():
    # Halving 500 gives 250, then 125: rounded up to 126 so levels are built from whole chunks.
    s = parse_image_spec("p", (3, 100, 500, 500), "czyx")
    assert s.chunks[2] % 2 == 0 and s.chunks[3] % 2 == 0
    assert s.pyramid is not None and s.pyramid.levels == 4


def test_z_is_reduced_when_asked(tmp_path):
    ref = np.random.default_rng(0).random((2, 12, 40, 40), dtype=np.float32)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, "czyx", chunks=(1, 4, 16, 16),
                               pyramid={"levels": 3, "factors": {"z": 2, "y": 2, "x": 2}})
        img.write_sample(0, ref)
        assert img.progress().complete
    levels = stored_levels(tmp_path / "o.zarr" / "p")
    assert [lv.shape for lv in levels] == [(2, 12, 40, 40), (2, 6, 20, 20), (2, 3, 10, 10)]
    np.testing.assert_allclose(levels[1], block_mean(ref, (1, 2, 2, 2)), rtol=1e-6)
    ms = zarr.open_group(tmp_path / "o.zarr" / "p").attrs["ome"]["multiscales"][0]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [1.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize(("kw", "error", "match"), [
    ({"chunks": (1, 15, 15), "pyramid": 2}, InvalidChunksError, "multiples of the factors"),
    ({"chunks": (1, 32, 32), "pyramid": {"levels": 2, "factors": {"c": 2}}}, SpecError, "space axes"),
    ({"pyramid": {"levels": 2, "factors": (1, 1)}}, SpecError, "at least one axis"),
    ({"pyramid": {"levels": 2, "factors": (2,)}}, SpecError, "one int per space axis"),
    ({"pyramid": {"levels": 2, "method": "median"}}, SpecError, "method"),
    ({"pyramid": {"levels": 2, "step": 2}}, SpecError, "unknown keys"),
    ({"pyramid": -1}, SpecError, "levels"),
    ({"pyramid": 0}, SpecError, "level 0 included"),
    ({"pyramid": 1.5}, SpecError, "pyramid must be"),
    ({"chunks": (1, 8, 8), "pyramid": 9}, SpecError, "at most 8 levels"),
])
def test_bad_pyramids_are_refused_before_anything_is_written(tmp_path, kw, error, match):
    with nw.open_output(tmp_path / "o.zarr") as out:
        with pytest.raises(error, match=match):
            out.create_image("p", (2, 100, 100), "cyx", **kw)
        assert out.images() == []


def test_pyramid_settings_are_part_of_the_declaration(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        out.create_image("p", (2, 64, 64), "syx", chunks=(1, 16, 16), pyramid=3)
    with nw.open_output(tmp_path / "o.zarr", mode="a") as out:
        with pytest.raises(SpecMismatchError, match="pyramid"):
            out.create_image("p", (2, 64, 64), "syx", chunks=(1, 16, 16), pyramid=None, exist_ok=True)
        assert out.create_image("p", (2, 64, 64), "syx", chunks=(1, 16, 16), pyramid=3,
                                exist_ok=True).n_levels == 3


def test_level_index_is_checked(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (64, 64), "yx", chunks=(16, 16), pyramid=2)
        with pytest.raises(IndexError, match="levels 0 to 1"):
            img.level(2)


# ---- levels while writing -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["crop", "blend", "sharded"])
def test_tiles_build_every_level_with_zero_reads(tmp_path, mode):
    CountingStore.reset()
    root = tmp_path / "o.zarr"
    ref = np.random.default_rng(5).random((2, 1, 300, 260), dtype=np.float32)  # s c y x
    patch, overlap = (96, 80), (16, 10)
    kw = {"chunks": (1, 1, 32, 32), "pyramid": 4}
    if mode == "blend":
        kw["blend"] = {"tile_size": patch, "overlap": overlap}
    if mode == "sharded":
        kw["shards"] = (1, 1, 64, 128)
    with nw.open_output(CountingStore(LocalStore(root))) as out:
        img = out.create_image("p", ref.shape, "scyx", **kw)
        for s in range(2):
            write_tiles(img, s, ref[s], patch=patch, overlap=overlap, order_seed=s)
        assert img.buffered_units == 0
        assert img.progress().complete
    assert CountingStore.reads == 0
    levels = stored_levels(root / "p")
    if mode != "blend":
        np.testing.assert_array_equal(levels[0], ref)
    for got, want in zip(levels, chain(levels[0], (1, 1, 2, 2), 3), strict=True):
        assert got.tobytes() == want.tobytes()
    assert not (root / "p" / "ngff_writer" / "level1" / "fragments").exists()


@pytest.mark.parametrize(("dtype", "method"),
                         [("uint16", "mean"), ("uint8", "nearest"), ("float32", "nearest")])
def test_integer_and_nearest_pyramids(tmp_path, dtype, method):
    rng = np.random.default_rng(2)
    ref = rng.integers(0, 200, (3, 50, 70)).astype(dtype)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, "syx", dtype, chunks=(1, 16, 16),
                               pyramid={"levels": 3, "method": method})
        for i in (1, 2, 0):
            img.write_sample(i, ref[i])
        assert img.progress().complete
    levels = stored_levels(tmp_path / "o.zarr" / "p")
    assert all(lv.dtype == np.dtype(dtype) for lv in levels)
    if method == "nearest":
        np.testing.assert_array_equal(levels[2], ref[:, ::4, ::4])
    else:
        assert np.abs(levels[1].astype(np.float64) - block_mean(ref, (1, 2, 2))).max() <= 0.5


def test_windows_do_not_depend_on_the_pyramid(tmp_path):
    ref = np.random.default_rng(3).normal(5, 2, (2, 3, 64, 64)).astype(np.float32)
    windows = []
    for pyramid in (None, 2):
        root = tmp_path / f"{pyramid}.zarr"
        with nw.open_output(root) as out:
            img = out.create_image("p", ref.shape, "scyx", chunks=(1, 1, 16, 16), pyramid=pyramid)
            for i in range(2):
                img.write_sample(i, ref[i])
        channels = zarr.open_group(root / "p").attrs["ome"]["omero"]["channels"]
        windows.append([c["window"] for c in channels])
    assert windows[0] == windows[1]


def test_units_a_lost_writer_left_unbuilt_are_made_from_the_level_above(tmp_path):
    # A writer that disappears without closing (as a killed process would) loses the
    # pyramid parts it held in memory; whoever completes the image builds those units
    # from the stored level above, and only those.
    # Valid parts (about 40 px) smaller than chunks (64 px): written again, a tile
    # restores no chunk the lost writer stored, so nothing feeds their pyramid parts again.
    root = tmp_path / "o.zarr"
    ref = np.random.default_rng(9).random((1, 1, 200, 200), dtype=np.float32)
    patch, overlap = (48, 48), (8, 8)
    tiles = list(tile_specs(ref.shape[2:], patch, overlap))
    with nw.open_output(root) as out:
        out.create_image("p", ref.shape, "scyx", chunks=(1, 1, 64, 64), pyramid=3)

    def write(img, specs):
        for t in specs:
            region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
            img.write_tile(0, ref[0][(Ellipsis, *region)], crop_start=t.crop_coords,
                           crop_size=t.crop_size, stitch_start=t.stitch_coords)

    lost = nw.open_output(root, mode="a")
    write(lost["p"], tiles[: len(tiles) // 2])
    spec = lost["p"].spec
    # Its background stores land and its records are committed (as its committer thread
    # would have, before the process died); then it is dropped, never closed.
    abandon(lost)
    log = Ledger(LocalStore(root), spec)
    log.refresh()
    blocks_before, built_before = log.coverage.counts[:2]

    CountingStore.reset()
    with nw.open_output(CountingStore(LocalStore(root)), mode="a") as out:
        img = out["p"]
        write(img, tiles)  # every tile again: stored chunks are kept, the rest completes
        assert img.progress().complete
    # The rebuilt units read the level above: fewer chunks than the two levels hold.
    assert 0 < CountingStore.reads < 4 * 4 + 2 * 2
    levels = stored_levels(root / "p")
    np.testing.assert_array_equal(levels[0], ref)
    for got, want in zip(levels, chain(ref, (1, 1, 2, 2), 2), strict=True):
        assert got.tobytes() == want.tobytes()
    assert blocks_before > 0 and built_before < 2 * 2  # some level-1 units were left unbuilt


def test_close_hands_pyramid_parts_to_the_next_writer(tmp_path):
    # Two writers, one after the other, each with half of the tiles: the first closes
    # holding parts of level-0 and level-1 chunks (saved as fragments), the second
    # completes them with zero chunk reads.
    root = tmp_path / "o.zarr"
    ref = np.random.default_rng(4).random((1, 1, 128, 128), dtype=np.float32)
    with nw.open_output(root) as out:
        out.create_image("p", ref.shape, "scyx", chunks=(1, 1, 32, 32), pyramid=3)
    # Split at row 48, inside a chunk (32 rows): the writers share level-0 chunk row 1
    # and level-1 chunk row 0.
    halves = (slice(0, 48), slice(48, 128))
    CountingStore.reset()
    for half in halves:
        with nw.open_output(CountingStore(LocalStore(root)), mode="a") as out:
            for y0 in range(half.start, half.stop, 16):
                out["p"].write_region(0, ref[0, :, y0:y0 + 16], start=(y0, 0))
            if half.start == 0:
                assert not out["p"].progress().complete
    assert CountingStore.reads == 0
    with nw.open_output(root, mode="r") as out:
        assert out["p"].progress().complete
    levels = stored_levels(root / "p")
    for got, want in zip(levels, chain(ref, (1, 1, 2, 2), 2), strict=True):
        assert got.tobytes() == want.tobytes()
