"""The copies write calls make go into memory used again once nothing refers to it."""

from __future__ import annotations

import numpy as np

import ngff_writer as nw
from ngff_writer._write.memory import SMALLEST, Recycler


def _address(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def test_a_copy_is_equal_and_c_ordered_also_from_a_strided_view():
    data = np.arange(4 * 512 * 1024, dtype=np.float32).reshape(4, 512, 1024)[:, ::2, 1::3]
    copy = Recycler(64 << 20).copy(data)
    assert copy.flags.c_contiguous and copy.dtype == data.dtype and copy.shape == data.shape
    np.testing.assert_array_equal(copy, data)


def test_a_block_is_lent_again_only_once_nothing_refers_to_it():
    recycler = Recycler(64 << 20)
    data = np.ones((2, 512, 512), dtype=np.float32)  # 2 MiB
    first = recycler.copy(data)
    second = recycler.copy(data * 2)
    assert not np.shares_memory(first, second)  # the first is alive: a block of its own
    where = _address(first)
    view = first[1]  # a unit cut from it, still being stored somewhere
    del first
    third = recycler.copy(data * 3)
    assert _address(third) != where and not np.shares_memory(third, view)
    np.testing.assert_array_equal(view, 1)  # never written over
    del view
    fourth = recycler.copy(data * 4)
    assert _address(fourth) == where  # its memory, used again
    np.testing.assert_array_equal(fourth, 4)
    np.testing.assert_array_equal(second, 2)
    np.testing.assert_array_equal(third, 3)


def test_blocks_kept_stay_within_the_limit_and_trim_gives_free_ones_back():
    recycler = Recycler(8 << 20)
    data = np.zeros((3 << 20) // 4, dtype=np.float32)  # 3 MiB
    alive = [recycler.copy(data) for _ in range(5)]  # more than the limit holds at once
    assert recycler.kept <= 8 << 20
    equal = [np.array_equal(a, data) for a in alive]
    assert equal == [True] * 5
    kept = [b for b in alive if any(np.shares_memory(b, k) for k in recycler._blocks)]
    assert len(kept) == 2  # 3 MiB blocks: two fit in 8 MiB, the rest are copies of their own
    del alive, kept
    recycler.trim()
    assert recycler.kept == 0
    again = recycler.copy(data)
    assert recycler.kept == 3 << 20 and np.array_equal(again, data)


def test_small_copies_are_not_kept():
    recycler = Recycler(64 << 20)
    recycler.copy(np.zeros(SMALLEST // 8, dtype=np.float32))
    assert recycler.kept == 0


def test_samples_written_from_one_reused_buffer_are_each_stored(tmp_path):
    # The caller reuses its buffer at once, and the writer reuses the memory of its
    # copies: every sample must still land as it was when its write call returned.
    buffer = np.empty((1, 16, 256, 256), dtype=np.float32)
    with nw.Context(inflight_bytes=12 << 20) as context:
        with nw.open_output(tmp_path / "o.zarr", context=context) as out:
            image = out.create_image("i", (24, 1, 16, 256, 256), "sczyx", pyramid=None)
            for i in range(24):
                buffer[...] = i
                image.write_sample(i, buffer)
            assert context.recycler.kept > 0  # the copies went into kept memory
            # Every copy found a free block, and no more were kept than the budget holds.
            assert context.recycler.misses == 0 and context.recycler.kept <= 12 << 20
        assert context.recycler.kept == 0  # given back when the output closed
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        stored = out["i"].array[:]
    assert [float(stored[i].min()) for i in range(24)] == [float(stored[i].max()) for i in range(24)]
    assert [int(stored[i, 0, 0, 0, 0]) for i in range(24)] == list(range(24))


def test_a_sample_handed_over_is_stored_without_a_copy(tmp_path):
    # copy=False: the writer stores from the caller's own arrays (no block is kept, no
    # copy is made), and each lands as handed over once flush returns.
    samples = [np.full((1, 16, 256, 256), i, dtype=np.float32) for i in range(6)]
    with nw.Context(inflight_bytes=12 << 20) as context:
        with nw.open_output(tmp_path / "o.zarr", context=context) as out:
            image = out.create_image("i", (6, 1, 16, 256, 256), "sczyx", pyramid=2)
            for i, sample in enumerate(samples):
                image.write_sample(i, sample, copy=False)
            image.flush()
            assert context.recycler.kept == 0 and context.recycler.misses == 0
            for sample in samples:
                sample[...] = -1  # the caller's to reuse once flush returned
        with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
            assert out["i"].is_final
            stored = out["i"].array[:]
            level1 = out["i"].level(1)[:]
    np.testing.assert_array_equal(stored[:, 0, 0, 0, 0], np.arange(6, dtype=np.float32))
    assert np.all(stored.min(axis=(1, 2, 3, 4)) == stored.max(axis=(1, 2, 3, 4)))
    np.testing.assert_array_equal(level1[:, 0, 0, 0, 0], np.arange(6, dtype=np.float32))


def test_a_handed_over_region_tile_and_block_land_as_copied_ones_do(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((2, 1, 64, 64)).astype(np.float32)
    tile = rng.random((1, 48, 64)).astype(np.float32)
    stores = {}
    for copy in (True, False):
        path = tmp_path / f"{copy}.zarr"
        with nw.open_output(path) as out:
            image = out.create_image("i", (3, 1, 64, 64), "scyx", chunks=(1, 1, 32, 32), pyramid=None)
            image.write_block(data, (0, 0, 0, 0), copy=copy)
            image.write_region(2, data[0, :, :40], (0, 0), copy=copy)
            image.write_tile(2, tile, crop_start=(8, 0), crop_size=(24, 64),
                             stitch_start=(40, 0), copy=copy)
        with nw.open_output(path, mode="r") as out:
            stores[copy] = out["i"].array[:]
    np.testing.assert_array_equal(stores[False], stores[True])
    np.testing.assert_array_equal(stores[False][:2], data)
    np.testing.assert_array_equal(stores[False][2, :, :40], data[0, :, :40])
    np.testing.assert_array_equal(stores[False][2, :, 40:], tile[:, 8:32])
