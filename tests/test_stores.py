"""The same scenarios on every kind of store: local disk, S3 through fsspec, S3 through obstore.

S3 is moto's server on 127.0.0.1 (``ngff_writer.testing.LocalS3``), a real HTTP endpoint.
Writers are real spawned processes; on S3 they share nothing but the bucket. Nothing here
relies on listings being fresh by luck: fragments and log segments are found with
recursive listings (never cached), and declarations are created atomically (S3's
conditional PUT).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from procs import TIMEOUT, run_children
from targets import KINDS, S3_KINDS, bookkeeping_keys, make_target, open_target, read_level
from tiling import tile_specs

import ngff_writer as nw

SHAPE = (2, 1, 90, 110)  # s c y x: 3 x 4 chunks of 32 x 32 per sample
CHUNKS = (1, 1, 32, 32)
PATCH, OVERLAP = (40, 48), (10, 12)
BLEND = {"tile_size": PATCH, "overlap": OVERLAP, "ramp": "cosine"}


def truth() -> np.ndarray:
    return np.random.default_rng(7).random(SHAPE, dtype=np.float32)


def jobs() -> list[tuple[int, Any]]:
    """Every (sample, tile), in a shuffled order every process agrees on."""
    all_jobs = [(s, t) for s in range(SHAPE[0]) for t in tile_specs(SHAPE[2:], PATCH, OVERLAP)]
    return [all_jobs[i] for i in np.random.default_rng(3).permutation(len(all_jobs))]


def tile_data(s: int, t: Any) -> np.ndarray:
    region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
    noise = np.random.default_rng(hash((s, t.tile_start)) % 2**32).normal(0, 0.05, (1, *t.tile_size))
    return (truth()[s][(Ellipsis, *region)] + noise).astype(np.float32)


def declare(target: tuple, mode: str) -> None:
    with open_target(target, mode="w") as out:
        out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, blend=BLEND if mode == "blend" else None)


def _write_tiles(target: tuple, worker: int, workers: int, killable: Any = None) -> None:
    """Write this worker's share of the tiles; with ``killable``, announce halfway and wait."""
    out = open_target(target, max_buffer_bytes=64 * 1024, commit_interval=0.05)  # spills too
    img = out["p"]
    mine = jobs()[worker::workers]
    for k, (s, t) in enumerate(mine):
        if killable is not None and k == len(mine) // 2:
            img.progress()  # its stores have landed
            time.sleep(0.3)  # and the committer has recorded them
            killable.set()
            time.sleep(TIMEOUT)  # killed here, with parts in memory
        img.write_tile(s, tile_data(s, t), crop_start=t.crop_coords, crop_size=t.crop_size,
                       stitch_start=t.stitch_coords)
    out.close()


def levels_of(target: tuple) -> list[bytes]:
    return [read_level(target, "p", k).tobytes() for k in range(3)]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, list[bytes]]:
    """Single-process, local writes of the same tiles: the bytes every other run must store."""
    out = {}
    for mode in ("crop", "blend"):
        target = make_target("local", tmp_path_factory.mktemp(mode), None)
        declare(target, mode)
        _write_tiles(target, 0, 1)
        out[mode] = levels_of(target)
    return out


def target_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple:
    s3 = request.getfixturevalue("s3") if kind != "local" else None
    return make_target(kind, tmp_path, s3)


# ---- one writer --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_one_writer_samples_and_tiles(tmp_path, request, kind, references):
    target = target_for(kind, tmp_path, request)
    declare(target, "crop")
    _write_tiles(target, 0, 1)
    samples = np.random.default_rng(1).random((6, 64, 64), dtype=np.float32)
    with open_target(target) as out:
        img = out.create_image("s", samples.shape, "syx", chunks=(1, 32, 32))
        for i in (3, 0, 5, 1, 4, 2):
            img.write_sample(i, samples[i])
    with open_target(target, mode="r") as out:
        assert [(p.name, p.complete, p.done) for p in out.status()] == [("p", True, 2), ("s", True, 6)]
    assert levels_of(target) == references["crop"]
    np.testing.assert_array_equal(read_level(target, "s", 0), samples)
    mean = samples.reshape(6, 32, 2, 32, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(read_level(target, "s", 1), mean, rtol=1e-6)
    # Final images keep one bookkeeping object: the group's attributes (declaration + checkpoint).
    for image in ("p", "s"):
        keys = bookkeeping_keys(target, image)
        assert [k.rsplit("/", 2)[-2:] for k in keys] == [["ngff_writer", "zarr.json"]]


# ---- many writers ------------------------------------------------------------------------------
MANY = [pytest.param(kind, "crop", rep, id=f"{kind}-crop-{rep}") for kind in KINDS for rep in range(3)]
MANY += [pytest.param(kind, "blend", 0, id=f"{kind}-blend") for kind in KINDS]


@pytest.mark.parametrize(("kind", "mode", "rep"), MANY)
def test_three_writers_share_tiled_chunks(tmp_path, request, kind, mode, rep, references):
    target = target_for(kind, tmp_path, request)
    declare(target, mode)
    assert run_children(*[(_write_tiles, (target, w, 3)) for w in range(3)]) == [0, 0, 0]
    with open_target(target, mode="r") as out:
        assert out["p"].progress().complete
    assert levels_of(target) == references[mode]
    assert bookkeeping_keys(target, "p") == ["p/ngff_writer/zarr.json"]


@pytest.mark.parametrize("kind", KINDS)
def test_three_writers_share_tiled_shards(tmp_path, request, kind, references):
    """Shards filled a chunk at a time as tiles arrive, by three writers: each one hands the
    shards it could not complete over as fragments (read back from its shard), and the data
    is the single writer's, at every level."""
    target = target_for(kind, tmp_path, request)
    with open_target(target, mode="w") as out:
        out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, shards=(1, 1, 64, 64))
    assert run_children(*[(_write_tiles, (target, w, 3)) for w in range(3)]) == [0, 0, 0]
    with open_target(target, mode="r") as out:
        img = out["p"]
        assert img.progress().complete and img.spec.shards == (1, 1, 64, 64)
    assert levels_of(target) == references["crop"]
    assert bookkeeping_keys(target, "p") == ["p/ngff_writer/zarr.json"]


@pytest.mark.parametrize("kind", KINDS)
def test_killed_writer_then_resume(tmp_path, request, kind, references):
    target = target_for(kind, tmp_path, request)
    declare(target, "crop")
    ctx = mp.get_context("spawn")
    halfway = ctx.Event()
    child = ctx.Process(target=_write_tiles, args=(target, 0, 1, halfway))
    child.start()
    assert halfway.wait(TIMEOUT)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL
    with open_target(target, mode="r") as out:
        progress = out["p"].progress()
        covered = out["p"]._ledger.coverage.grids[0]  # what the log lists
    assert not progress.complete and 0 < progress.blocks_done < progress.blocks_total
    # Every unit the log lists holds its final bytes.
    stored = read_level(target, "p", 0)
    want = np.frombuffer(references["crop"][0], np.float32).reshape(SHAPE)
    for idx in zip(*np.nonzero(covered), strict=True):
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, CHUNKS, strict=True))
        np.testing.assert_array_equal(stored[region], want[region])
    _write_tiles(target, 0, 1)  # resume: every tile again
    assert levels_of(target) == references["crop"]
    assert len(bookkeeping_keys(target, "p")) == 1


# ---- declaring at once ---------------------------------------------------------------------------
def _declare(target: tuple, chunk: int, barrier: Any, results: Any) -> None:
    out = open_target(target)
    barrier.wait(timeout=TIMEOUT)
    try:
        out.create_image("p", (4, 64, 64), "syx", chunks=(1, chunk, chunk), exist_ok=True)
        results.put((chunk, "ok"))
    except nw.SpecMismatchError:
        results.put((chunk, "mismatch"))
    out.close()


@pytest.mark.parametrize("kind", KINDS)
def test_declarations_with_other_settings_at_once_leave_one_image(tmp_path, request, kind):
    target = target_for(kind, tmp_path, request)
    with open_target(target, mode="w"):
        pass
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(3), ctx.Queue()
    assert run_children(*[(_declare, (target, c, barrier, results)) for c in (8, 16, 32)]) == [0, 0, 0]
    outcomes = dict(results.get(timeout=10) for _ in range(3))
    winners = [c for c, how in outcomes.items() if how == "ok"]
    assert len(winners) == 1 and sorted(outcomes.values()) == ["mismatch", "mismatch", "ok"]
    with open_target(target, mode="r") as out:
        img = out["p"]
        assert img.spec.chunks == (1, winners[0], winners[0])
        for k in range(img.n_levels):  # every array was made from the winning declaration
            assert img.level(k).chunks == img.spec.levels[k].chunks


# ---- requests on S3 ---------------------------------------------------------------------------
def _requests_for(s3: Any, kind: str, n: int) -> dict[str, dict[str, int]]:
    target = make_target(kind, Path("."), s3)
    samples = np.random.default_rng(n).random((n, 32, 32), dtype=np.float32)
    counts = {}
    with open_target(target, mode="w") as out:
        out.create_image("i", samples.shape, "syx", pyramid=None)
    halves = (range(0, n, 2), range(1, n, 2))
    with s3.requests() as writes:
        for half in halves:  # two writers, one after the other: the second one finalizes
            with open_target(target) as out:
                img = out["i"]
                for i in half:
                    img.write_sample(i, samples[i])
    counts["writes"] = dict(writes)
    with s3.requests() as status, open_target(target, mode="r") as out:
        assert out["i"].progress().complete
    counts["status"] = dict(status)
    return counts


@pytest.mark.parametrize("kind", S3_KINDS)
def test_requests_per_write_do_not_grow_with_the_image(s3, kind):
    small, large = _requests_for(s3, kind, 16), _requests_for(s3, kind, 64)
    print(f"\n{kind} requests, 16 samples: {small}\n{kind} requests, 64 samples: {large}")
    # One PUT per chunk, plus a constant: the bookkeeping adds no request per write.
    assert large["writes"]["PUT"] - small["writes"]["PUT"] == 64 - 16
    for other in ("LIST", "GET", "HEAD", "DELETE"):
        assert large["writes"].get(other, 0) == small["writes"].get(other, 0), other
    assert large["status"] == small["status"]


def test_local_s3_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    """moto's server records requests into ``moto_recording`` in its working directory:
    LocalS3 gives it a temporary one, removed when it stops."""
    from ngff_writer.testing import LocalS3

    monkeypatch.chdir(tmp_path)
    with LocalS3() as s3:
        workdir = Path(s3.workdir)
        with s3.requests() as counts:
            s3.bucket()
        assert counts["PUT"] == 1
        assert (workdir / "moto_recording").exists()  # the recording is there, not in the cwd
        assert not (tmp_path / "moto_recording").exists()
    assert s3.workdir is None and not workdir.exists()
    assert list(tmp_path.iterdir()) == []
