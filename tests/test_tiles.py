"""Tiles: valid parts assembled into whole chunks, never a chunk read back."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stores import CountingStore
from tiling import tile_specs
from zarr.storage import LocalStore

import ngff_writer as nw
from ngff_writer import BufferFullError, OverlapError


def write_tiles(img, sample_index, image, patch, overlap, order_seed=None):
    specs = list(tile_specs(image.shape[-len(patch):], patch, overlap))
    if order_seed is not None:
        np.random.default_rng(order_seed).shuffle(specs)
    for t in specs:
        region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
        tile = image[(Ellipsis, *region)]
        img.write_tile(sample_index, tile, crop_start=t.crop_coords, crop_size=t.crop_size,
                       stitch_start=t.stitch_coords)
    return len(specs)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_unaligned_tiles_store_whole_chunks_with_zero_reads(tmp_path, rng, version):
    CountingStore.reset()
    store = CountingStore(LocalStore(tmp_path / "o.zarr"))
    ref = rng.random((2, 1, 300, 260), dtype=np.float32)  # s c y x
    with nw.open_output(store, ngff_version=version) as out:
        img = out.create_image("p", ref.shape, "scyx", chunks=(1, 1, 64, 64))
        for s in range(2):
            write_tiles(img, s, ref[s], patch=(96, 80), overlap=(16, 10), order_seed=s)
        assert img.buffered_units == 0
        assert img.progress().complete
    assert CountingStore.reads == 0
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "p" / "0")[:], ref)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    ndim=st.sampled_from([2, 3]),
)
def test_tiles_in_any_order_equal_in_memory_stitch(tmp_path_factory, data, ndim):
    shape = tuple(data.draw(st.integers(1, 70 if ndim == 2 else 20), label=f"n{i}") for i in range(ndim))
    patch = tuple(data.draw(st.integers(2, 40 if ndim == 2 else 12), label=f"p{i}") for i in range(ndim))
    overlap = tuple(data.draw(st.integers(0, p - 1), label=f"o{i}") for i, p in enumerate(patch))
    chunks = tuple(data.draw(st.integers(1, 48 if ndim == 2 else 16), label=f"c{i}") for i in range(ndim))
    seed = data.draw(st.integers(0, 2**16), label="order")
    ref = np.random.default_rng(seed).random((1, *shape), dtype=np.float32)  # c + space
    axes = "c" + "zyx"[-ndim:]
    root = tmp_path_factory.mktemp("tiles") / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", ref.shape, axes, chunks=(1, *chunks))
        write_tiles(img, 0, ref, patch, overlap, order_seed=seed)
        assert img.buffered_units == 0
        assert img.progress().complete
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0")[:], ref)


def test_region_form_and_overlap_errors(tmp_path, rng):
    ref = rng.random((40, 40), dtype=np.float32)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, "yx", chunks=(16, 16))
        img.write_region(0, ref[:20, :30], start=(0, 0))
        img.write_region(0, ref[:20, :30], start=(0, 0))  # a retry is accepted
        with pytest.raises(OverlapError):
            img.write_region(0, ref[19:25, :30], start=(19, 0))
        with pytest.raises(nw.ShapeMismatchError, match="does not fit"):
            img.write_region(0, ref[:20, :30], start=(30, 0))
        with pytest.raises(nw.ShapeMismatchError, match="one value per space axis"):
            img.write_region(0, ref[:20, :30], start=(0,))
        img.write_region(0, ref[20:, :30], start=(20, 0))
        assert not img.progress().complete
        img.write_region(0, ref[:, 30:], start=(0, 30))
        assert img.progress().complete
        np.testing.assert_array_equal(img.array[:], ref)


def test_buffer_bound_error_policy_raises_before_changing_anything(tmp_path, rng):
    ref = rng.random((64, 64), dtype=np.float32)
    with nw.open_output(tmp_path / "o.zarr", max_buffer_bytes=5000, buffer_policy="error") as out:
        # Level 0 alone: a pyramid level would hold part of its one chunk as level 0 fills.
        img = out.create_image("p", ref.shape, "yx", chunks=(32, 32), pyramid=None)
        img.write_region(0, ref[:10, :10], start=(0, 0))  # buffers chunk (0, 0): 4096 bytes
        with pytest.raises(BufferFullError, match="max_buffer_bytes"):
            img.write_region(0, ref[:30, 34:64], start=(0, 34))  # chunk (0, 1): 4096 more
        assert img.buffered_units == 1 and img.buffered_bytes == 4096
        img.write_region(0, ref[10:32, :10], start=(10, 0))  # same chunk: no more bytes
        img.write_region(0, ref[:32, 10:32], start=(0, 10))  # completes chunk (0, 0): no bytes held
        assert img.buffered_units == 0
        img.write_region(0, ref[:, 32:], start=(0, 32))
        img.write_region(0, ref[32:, :32], start=(32, 0))
        assert img.progress().complete
        np.testing.assert_array_equal(img.array[:], ref)


def test_buffer_bound_spill_policy_completes_through_fragments_with_zero_reads(tmp_path, rng):
    CountingStore.reset()
    store = CountingStore(LocalStore(tmp_path / "o.zarr"))
    ref = rng.random((1, 150, 130), dtype=np.float32)
    with nw.open_output(store, max_buffer_bytes=8_000) as out:  # far less than a row of chunks
        img = out.create_image("p", ref.shape, "cyx", chunks=(1, 32, 32))
        write_tiles(img, 0, ref, patch=(40, 40), overlap=(8, 8), order_seed=3)
        assert img.buffered_bytes == 0
        assert img.progress().complete
    assert CountingStore.reads == 0
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "p" / "0")[:], ref)
    assert not (tmp_path / "o.zarr" / "p" / "ngff_writer" / "fragments").exists()


def test_closing_saves_partial_chunks_and_resume_completes_them(tmp_path, rng):
    ref = rng.random((64, 64), dtype=np.float32)
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", ref.shape, "yx", chunks=(32, 32))
        img.write_region(0, ref[:40, :40], start=(0, 0))  # chunk (0,0) whole, three partial
        assert img.buffered_units == 3 + 1  # and level 1's one chunk: the part chunk (0,0) gave
    # Closing saved the three partial chunks as fragments; only whole chunks are stored.
    with nw.open_output(root, mode="a") as out:
        img = out["p"]
        p = img.progress()
        assert (p.blocks_done, p.blocks_total) == (1, 4)
        img.write_region(0, ref[40:, :], start=(40, 0))
        img.write_region(0, ref[:40, 40:], start=(0, 40))
        assert img.buffered_units == 3  # completed only with the fragments, at close (level 1: none yet)
    with nw.open_output(root, mode="r") as out:
        assert out["p"].progress().complete
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0")[:], ref)


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "chunks"),
    [
        ((20, 30), (64, 64), (16, 16), (8, 8)),  # image smaller than a tile
        ((100, 90), (48, 48), (8, 8), (100, 90)),  # tile smaller than a chunk
        ((100, 90), (48, 48), (8, 8), (10, 7)),  # tile larger than a chunk, last chunks partial
        ((64, 64), (17, 17), (1, 1), (16, 16)),  # 1-pixel overlaps
        ((9, 64, 64), (4, 24, 24), (2, 4, 4), (3, 16, 16)),  # 3D
    ],
)
def test_edge_cases(tmp_path, rng, shape, patch, overlap, chunks):
    ref = rng.random((2, *shape), dtype=np.float32)
    axes = "s" + "zyx"[-len(shape):]
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, axes, chunks=(1, *chunks))
        for s in (1, 0):
            write_tiles(img, s, ref[s], patch, overlap, order_seed=s)
        assert img.progress().complete and img.buffered_units == 0
        np.testing.assert_array_equal(img.array[:], ref)


# ---- blend mode ------------------------------------------------------------------------
def reference_blend(image: np.ndarray, patch, overlap, ramp) -> np.ndarray:
    """In-memory weighted blend of every tile (space axes last), summed in tile order."""
    from ngff_writer._write.blend import tile_weights

    space = image.shape[-len(patch):]
    total = np.zeros(image.shape, np.float64)
    weight = np.zeros(space, np.float64)
    for t in tile_specs(space, patch, overlap):
        region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
        w = tile_weights(t.tile_start, t.tile_size, space, overlap, ramp)
        total[(Ellipsis, *region)] += w * image[(Ellipsis, *region)]
        weight[region] += w
    return total / weight


def noisy_tiles(image, patch, overlap, seed):
    """Tiles whose overlaps disagree (as predictions do), so blending matters."""
    rng = np.random.default_rng(seed)
    for t in tile_specs(image.shape[-len(patch):], patch, overlap):
        region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
        yield t, image[(Ellipsis, *region)] + rng.normal(0, 0.1, image[(Ellipsis, *region)].shape)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), ndim=st.sampled_from([2, 3]), ramp=st.sampled_from(["linear", "cosine"]))
def test_blend_equals_in_memory_reference(tmp_path_factory, data, ndim, ramp):
    shape = tuple(data.draw(st.integers(1, 60 if ndim == 2 else 16), label=f"n{i}") for i in range(ndim))
    patch = tuple(data.draw(st.integers(2, 32 if ndim == 2 else 10), label=f"p{i}") for i in range(ndim))
    overlap = tuple(data.draw(st.integers(0, p - 1), label=f"o{i}") for i, p in enumerate(patch))
    chunks = tuple(data.draw(st.integers(1, 40 if ndim == 2 else 12), label=f"c{i}") for i in range(ndim))
    seed = data.draw(st.integers(0, 2**16), label="seed")
    image = np.random.default_rng(seed).random((2, *shape))  # c + space, float64 predictions
    tiles = list(noisy_tiles(image, patch, overlap, seed))
    from ngff_writer._write.blend import tile_weights

    expected, weight = np.zeros(image.shape), np.zeros(shape)
    for t, tile in tiles:
        region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
        w = tile_weights(t.tile_start, t.tile_size, shape, overlap, ramp)
        expected[(Ellipsis, *region)] += w * tile
        weight[region] += w
    expected /= weight
    np.random.default_rng(seed).shuffle(tiles)
    root = tmp_path_factory.mktemp("blend") / "o.zarr"
    with nw.open_output(root) as out:
        blend = {"tile_size": patch, "overlap": overlap, "ramp": ramp}
        img = out.create_image("p", image.shape, "c" + "zyx"[-ndim:], dtype="float64",
                               chunks=(1, *chunks), blend=blend)
        for t, tile in tiles:
            img.write_tile(0, tile, crop_start=t.crop_coords, crop_size=t.crop_size,
                           stitch_start=t.stitch_coords)
        assert img.buffered_units == 0
        assert img.progress().complete
    np.testing.assert_allclose(zarr.open_array(root / "p" / "0")[:], expected, rtol=1e-12, atol=1e-12)


def test_blend_rejects_tiles_off_the_grid(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (50, 50), "yx", blend={"tile_size": (20, 20), "overlap": (4, 4)})
        with pytest.raises(nw.ShapeMismatchError, match="not a tile of the blend grid"):
            img.write_tile(0, np.zeros((20, 20), np.float32), tile_start=(3, 0))
        with pytest.raises(nw.ShapeMismatchError, match="not a tile of the blend grid"):
            img.write_tile(0, np.zeros((10, 20), np.float32), tile_start=(0, 0))


def test_blend_reference_helper_agrees_with_writer_on_clean_tiles(tmp_path, rng):
    image = rng.random((1, 70, 90), dtype=np.float32)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", image.shape, "cyx", chunks=(1, 32, 32),
                               blend={"tile_size": (32, 40), "overlap": (8, 12), "ramp": "linear"})
        for t in tile_specs((70, 90), (32, 40), (8, 12)):
            region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
            img.write_tile(0, image[(Ellipsis, *region)], tile_start=t.tile_start)
        stored = img.array[:]
    # Identical tiles blend back to the image itself (up to float32 rounding).
    np.testing.assert_allclose(stored, image, rtol=1e-6)
    np.testing.assert_allclose(stored, reference_blend(image, (32, 40), (8, 12), "linear"), rtol=1e-6)


def test_sharded_images_assemble_whole_shards(tmp_path, rng):
    """With shards the write unit is the shard: tiles are assembled into whole shards."""
    CountingStore.reset()
    store = CountingStore(LocalStore(tmp_path / "o.zarr"))
    ref = rng.random((2, 1, 100, 120), dtype=np.float32)
    with nw.open_output(store) as out:
        img = out.create_image("p", ref.shape, "scyx", chunks=(1, 1, 16, 16), shards=(1, 1, 64, 64))
        img.write_sample(0, ref[0])
        write_tiles(img, 1, ref[1], patch=(40, 40), overlap=(8, 8), order_seed=5)
        progress = img.progress()
        assert progress.complete and progress.blocks_total == 2 * 2 * 2
    assert CountingStore.reads == 0
    arr = zarr.open_array(tmp_path / "o.zarr" / "p" / "0")
    assert arr.shards == (1, 1, 64, 64)
    np.testing.assert_array_equal(arr[:], ref)
    from ome_zarr_models import open_ome_zarr

    open_ome_zarr(zarr.open_group(tmp_path / "o.zarr" / "p", mode="r"))


def test_overlap_is_detected_in_either_order(tmp_path, rng):
    ref = rng.random((64, 64), dtype=np.float32)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, "yx", chunks=(32, 32))
        img.write_region(0, ref[:10, :10], start=(0, 0))  # a part of chunk (0, 0)
        with pytest.raises(OverlapError):
            img.write_region(0, ref[:32, :32], start=(0, 0))  # chunk (0, 0) whole, over it


def test_caller_may_reuse_its_array_after_write_region(tmp_path, rng):
    ref = rng.random((64, 64), dtype=np.float32)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, "yx", chunks=(32, 32))
        buffer = np.empty((32, 64), np.float32)
        for y in (0, 32):
            buffer[:] = ref[y:y + 32]
            img.write_region(0, buffer, start=(y, 0))  # stored in the background
        buffer[:] = -1  # reused before the stores finished
        assert img.progress().complete
        np.testing.assert_array_equal(img.array[:], ref)


def test_blend_images_take_tiles_only(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (40, 40), "yx", blend={"tile_size": (20, 20), "overlap": (4, 4)})
        with pytest.raises(nw.WriteError, match="write_tile"):
            img.write_sample(0, np.zeros((40, 40), np.float32))
        with pytest.raises(nw.WriteError, match="write_tile"):
            img.write_region(0, np.zeros((20, 20), np.float32), start=(0, 0))
        assert img.progress().blocks_done == 0


def test_zero_size_regions_are_refused(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (40, 40), "yx")
        with pytest.raises(nw.ShapeMismatchError):
            img.write_region(0, np.zeros((0, 5), np.float32), start=(0, 0))
        assert img.buffered_units == 0
