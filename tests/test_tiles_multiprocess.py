"""Four real processes writing unaligned tiles that share chunks; a writer killed halfway.

Each child writes a shuffled quarter of the tiles and closes; chunks shared between
children are completed through fragments by whichever child saves the last part, at
every pyramid level. The result must equal a single-process write bit for bit, pyramid
levels included (a killed writer's lost pyramid parts are rebuilt when resuming).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from procs import run_children
from tiling import tile_specs

import ngff_writer as nw

SHAPE = (2, 1, 90, 110)  # s c y x
CHUNKS = (1, 1, 32, 32)
PATCH, OVERLAP = (40, 48), (10, 12)
BLEND = {"tile_size": PATCH, "overlap": OVERLAP, "ramp": "cosine"}


def image() -> np.ndarray:
    return np.random.default_rng(7).random(SHAPE, dtype=np.float32)


def jobs() -> list[tuple[int, object]]:
    """Every (sample, tile) in a shuffled order shared by all processes."""
    all_jobs = [(s, t) for s in range(SHAPE[0]) for t in tile_specs(SHAPE[2:], PATCH, OVERLAP)]
    order = np.random.default_rng(3).permutation(len(all_jobs))
    return [all_jobs[i] for i in order]


def tile_data(s: int, t) -> np.ndarray:
    region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
    # A per-tile perturbation: blended overlaps must combine different values.
    noise = np.random.default_rng(hash((s, t.tile_start)) % 2**32).normal(0, 0.05, (1, *t.tile_size))
    return (image()[s][(Ellipsis, *region)] + noise).astype(np.float32)


def declare(root: Path, mode: str) -> None:
    with nw.open_output(root, mode="w") as out:
        out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, blend=BLEND if mode == "blend" else None)


def _write(root: str, worker: int, workers: int, die_after: int | None = None) -> None:
    out = nw.open_output(root, mode="a", max_buffer_bytes=64 * 1024)  # small: spills too
    img = out["p"]
    for k, (s, t) in enumerate(jobs()[worker::workers]):
        if die_after is not None and k == die_after:
            img.progress()  # let background stores land, so some chunks are stored
            img._ledger.commit()  # and recorded, as the committer thread does every second
            os._exit(17)  # then die with parts in memory, no cleanup
        img.write_tile(s, tile_data(s, t), crop_start=t.crop_coords, crop_size=t.crop_size,
                       stitch_start=t.stitch_coords)
    out.close()


def stored(root: Path) -> list[bytes]:
    """Every level's bytes (90 x 110 in 32 x 32 chunks: two pyramid levels below level 0)."""
    return [zarr.open_array(root / "p" / str(k), mode="r")[...].tobytes() for k in range(3)]


@pytest.mark.parametrize("mode", ["crop", "blend"])
def test_four_processes_equal_one(tmp_path, mode):
    ref, root = tmp_path / "ref.zarr", tmp_path / "multi.zarr"
    declare(ref, mode)
    _write(str(ref), 0, 1)
    declare(root, mode)
    assert run_children(*[(_write, (str(root), w, 4)) for w in range(4)]) == [0, 0, 0, 0]
    with nw.open_output(root, mode="r") as out:
        assert out["p"].progress().complete and out["p"].n_levels == 3
    assert stored(root) == stored(ref)
    if mode == "crop":  # and equal to the in-memory stitch of the tiles' valid parts
        expected = np.zeros(SHAPE, np.float32)
        for s, t in jobs():
            crop = tuple(slice(c, c + n) for c, n in zip(t.crop_coords, t.crop_size, strict=True))
            dest = tuple(slice(c, c + n) for c, n in zip(t.stitch_coords, t.crop_size, strict=True))
            expected[(s, Ellipsis, *dest)] = tile_data(s, t)[(Ellipsis, *crop)]
        np.testing.assert_array_equal(zarr.open_array(ref / "p" / "0")[:], expected)
    # A final image keeps only its bookkeeping group's attributes: no log, no fragment.
    assert [p.name for p in (root / "p" / "ngff_writer").iterdir()] == ["zarr.json"]


@pytest.mark.parametrize("mode", ["crop", "blend"])
def test_killed_writer_loses_only_partial_chunks_and_resume_completes(tmp_path, mode):
    ref, root = tmp_path / "ref.zarr", tmp_path / "crash.zarr"
    declare(ref, mode)
    _write(str(ref), 0, 1)
    declare(root, mode)
    assert run_children((_write, (str(root), 0, 1, 3 * len(jobs()) // 4))) == [17]
    with nw.open_output(root, mode="r") as out:
        img = out["p"]
        progress = img.progress()
        covered = img._ledger.coverage.grids[0]
        assert progress.blocks_done < progress.blocks_total
        if mode == "crop":  # blend units wait for all their (shuffled) tiles: maybe none yet
            assert progress.blocks_done > 0
        # The ledger lists only chunks whose data is stored, equal to the reference's.
        arr, want = zarr.open_array(root / "p" / "0"), zarr.open_array(ref / "p" / "0")
        for idx in zip(*np.nonzero(covered), strict=True):
            region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, CHUNKS, strict=True))
            assert arr[region].tobytes() == want[region].tobytes()
    # Resume: write every tile again; stored chunks are kept, the rest completes.
    _write(str(root), 0, 1)
    assert stored(root) == stored(ref)
    with nw.open_output(root, mode="r") as out:
        assert out["p"].progress().complete


def test_writers_deleting_the_same_fragments_at_once_both_succeed(tmp_path):
    """Two writers that complete the same unit both delete its fragments (CI once saw the
    second one fail on a file the first had just removed)."""
    import threading

    from zarr.storage import LocalStore

    from ngff_writer._declare.bookkeeping import ImageKeys
    from ngff_writer._write.assemble import Part
    from ngff_writer._write.fragments import Fragments

    store = LocalStore(tmp_path / "s.zarr")
    writers = [Fragments(store, ImageKeys("p", 3), 0, f"w{k}") for k in range(2)]
    part = {(0,): Part((0,), (slice(0, 4),), np.ones(4, np.float32))}
    for _ in range(5):
        for k in range(400):
            writers[k % 2].save((0, 0), part)
        assert len(writers[0].load((0, 0))) == 1  # every save of the same part is one part
        barrier, errors = threading.Barrier(2), []

        def delete(fragments, barrier=barrier, errors=errors):
            barrier.wait()
            try:
                fragments.delete((0, 0))
            except Exception as exc:
                errors.append(exc)

        threads = [threading.Thread(target=delete, args=(w,)) for w in writers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert writers[0].units() == [] and writers[1].load((0, 0)) == {}
