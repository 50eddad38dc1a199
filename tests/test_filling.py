"""Shards filled as their parts arrive (issue "Exports that fit HPC filesystems").

Tiles of a sharded image, and the levels below 0 that gather several samples per shard,
are laid into their shard a chunk at a time (``ShardBuffer`` and ``ShardSink``): a writer
holds the chunks a part covers only in part, as it does without shards, never a whole
shard. What is stored is what zarr reads back, at every level; a writer that stops with
a shard half filled hands its parts over as fragments; a failed store is taken again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr_models import open_ome_zarr
from stores import CountingStore
from tiling import tile_specs
from zarr.storage import LocalStore

import ngff_writer as nw
from ngff_writer import StoreError
from ngff_writer._write.encode import ChunkWriter

SHAPE = (2, 1, 256, 200)  # s c y x
CHUNKS = (1, 1, 32, 32)
SHARDS = (1, 1, 128, 128)


def _tiles(image: np.ndarray, order_seed: int | None, patch=(64, 64), overlap=(16, 16)) -> list:
    """Tiles of ``image`` in row-major order (``order_seed`` None) or shuffled."""
    specs = list(tile_specs(image.shape[-2:], patch, overlap))
    if order_seed is not None:
        np.random.default_rng(order_seed).shuffle(specs)
    return specs


def _write(img: nw.Image, sample: int, image: np.ndarray, specs: list) -> int:
    """Write the tiles of ``specs``; return the most bytes the writer held between two."""
    most = 0
    for t in specs:
        region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
        img.write_tile(sample, image[(Ellipsis, *region)], crop_start=t.crop_coords, crop_size=t.crop_size,
                       stitch_start=t.stitch_coords)
        most = max(most, img.buffered_bytes)
    return most


def _levels(root: Path) -> list[np.ndarray]:
    group = zarr.open_group(root / "p", mode="r")
    return [group[str(k)][:] for k in range(len(list(group.array_keys())))]


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".partial" in p.name]


@pytest.mark.parametrize("store", ["directory", "wrapped"])
@pytest.mark.parametrize("seed", [None, 1, 2])
def test_tiles_fill_shards_holding_what_one_file_per_chunk_holds(tmp_path, store, seed):
    ref = np.random.default_rng(seed).random(SHAPE, dtype=np.float32)
    most = {}
    for layout, shards in (("chunks", None), ("shards", SHARDS)):
        root = tmp_path / f"{layout}.zarr"
        CountingStore.reset()
        target = CountingStore(LocalStore(root)) if store == "wrapped" else root
        with nw.open_output(target) as out:
            img = out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, shards=shards, pyramid=3)
            most[layout] = max(_write(img, s, ref[s], _tiles(ref[s], None if seed is None else seed + s))
                               for s in range(2))
            assert img.buffered_units == 0
        assert CountingStore.reads == 0  # nothing read back: no shard was handed over
        assert not _partials(root)
    # The chunks covered in part, as without shards (tiles in rows: less than the one shard
    # that held all of them, 64 KiB, before shards were filled as parts arrive).
    assert most["shards"] <= most["chunks"]
    if seed is None:
        assert most["shards"] < np.prod(SHARDS) * 4
    sharded, chunked = _levels(tmp_path / "shards.zarr"), _levels(tmp_path / "chunks.zarr")
    np.testing.assert_array_equal(sharded[0], ref)
    assert len(sharded) == 3
    for a, b in zip(sharded, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    assert zarr.open_array(tmp_path / "shards.zarr" / "p" / "1", mode="r").shards == (1, 1, 128, 128)
    open_ome_zarr(zarr.open_group(tmp_path / "shards.zarr" / "p", mode="r"))


@pytest.mark.parametrize("store", ["directory", "wrapped"])
def test_a_shard_half_filled_at_close_is_handed_over_and_completed_by_the_next_writer(tmp_path, store):
    ref = np.random.default_rng(5).random(SHAPE, dtype=np.float32)
    root = tmp_path / "o.zarr"
    specs = _tiles(ref[0], 5)
    # Wrapped, the store is not a plain directory: a shard being filled is kept encoded in memory.
    with nw.open_output(CountingStore(LocalStore(root)) if store == "wrapped" else root) as out:
        img = out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, shards=SHARDS)
        img.write_sample(1, ref[1])
        _write(img, 0, ref[0], specs[: len(specs) // 2])
        assert img.buffered_units > 0
    # Closing read the chunks laid into the unfinished shards back, as fragments.
    assert list((root / "p" / "ngff_writer" / "fragments").rglob("*.npz"))
    assert not _partials(root)
    with nw.open_output(root, mode="a") as out:
        img = out["p"]
        _write(img, 0, ref[0], specs[len(specs) // 2:])
    with nw.open_output(root, mode="r") as out:
        assert out["p"].is_final
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0", mode="r")[:], ref)
    assert not list((root / "p" / "ngff_writer").rglob("*.npz"))  # no fragment left
    assert not _partials(root)


def test_a_small_buffer_cap_spills_shards_being_filled(tmp_path):
    ref = np.random.default_rng(6).random(SHAPE, dtype=np.float32)
    root = tmp_path / "o.zarr"
    with nw.open_output(root, max_buffer_bytes=8_000) as out:  # two chunks
        img = out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, shards=SHARDS, pyramid=2)
        for s in range(2):
            _write(img, s, ref[s], _tiles(ref[s], 6 + s))
        assert img.buffered_bytes == 0
        assert img.progress().complete
    levels = _levels(root)
    np.testing.assert_array_equal(levels[0], ref)
    assert not _partials(root)


def test_a_failed_store_into_a_shard_is_taken_again(tmp_path, monkeypatch):
    ref = np.random.default_rng(7).random(SHAPE, dtype=np.float32)
    root = tmp_path / "o.zarr"
    encode = ChunkWriter.encode
    calls = {"n": 0}

    def failing_once(self, view):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full")
        return encode(self, view)

    specs = _tiles(ref[0], 7)
    with nw.open_output(root) as out:
        img = out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, shards=SHARDS)
        monkeypatch.setattr(ChunkWriter, "encode", failing_once)
        with pytest.raises(StoreError, match="disk full"):
            _write(img, 0, ref[0], specs)
            img.flush()
        monkeypatch.setattr(ChunkWriter, "encode", encode)
        assert not img.progress().complete
        _write(img, 0, ref[0], specs)  # the failed shard's parts are taken again; the rest are retries
        img.write_sample(1, ref[1])
    with nw.open_output(root, mode="r") as out:
        assert out["p"].is_final
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0", mode="r")[:], ref)
    assert not _partials(root)
