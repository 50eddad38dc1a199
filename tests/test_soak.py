"""Soak: writers killed with SIGKILL at random moments, again and again, until the export is done.

Three images (samples; tiles cropped; tiles blended), three writer processes sharing every
image, each sending its share of the work in a shuffled order and starting over after it
is killed. After every kill a snapshot is read: an image it says complete must hold every
byte of the serial result. At the end every image is complete, bit-identical to the serial
write at every level, with no bookkeeping left but the declaration.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time

import numpy as np
import pytest
from layouts import large_default
from targets import make_target, open_target, read_level
from tiling import tile_specs

pytestmark = pytest.mark.slow

SAMPLES = (12, 64, 80)  # s y x
TILED = (2, 1, 90, 110)  # s c y x
CHUNKS = (1, 1, 32, 32)
PATCH, OVERLAP = (40, 48), (10, 12)
WRITERS = 3


def sample(i: int) -> np.ndarray:
    return np.random.default_rng(i).random(SAMPLES[1:], dtype=np.float32)


def tile(s: int, t) -> np.ndarray:
    image = np.random.default_rng(50 + s).random(TILED[1:], dtype=np.float32)
    region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
    noise = np.random.default_rng(hash((s, t.tile_start)) % 2**32).normal(0, 0.05, (1, *t.tile_size))
    return (image[(Ellipsis, *region)] + noise).astype(np.float32)


def jobs() -> list[tuple[str, int, int]]:
    """Every write of the export: (image, sample, tile number)."""
    n_tiles = len(list(tile_specs(TILED[2:], PATCH, OVERLAP)))
    out = [("samples", i, -1) for i in range(SAMPLES[0])]
    for image in ("crop", "blend"):
        out += [(image, s, k) for s in range(TILED[0]) for k in range(n_tiles)]
    return out


def declare(target: tuple, layout: str = "chunks") -> None:
    """The three images, unsharded or with the default layout of large images (tests/layouts.py)."""
    with open_target(target, mode="w") as out, large_default(layout == "shards"):
        out.create_image("samples", SAMPLES, "syx", chunks=(1, 32, 32))
        out.create_image("crop", TILED, "scyx", chunks=CHUNKS)
        out.create_image("blend", TILED, "scyx", chunks=CHUNKS,
                         blend={"tile_size": PATCH, "overlap": OVERLAP, "ramp": "cosine"})
        if layout == "shards":
            assert all(out[name].array.shards for name in ("samples", "crop", "blend"))
            assert out["samples"].spec.shard_samples  # lower levels gather samples


def write(target: tuple, worker: int, seed: int, pause: float) -> None:
    """This worker's share, in its own order; a short pause per write leaves time to be killed."""
    specs = list(tile_specs(TILED[2:], PATCH, OVERLAP))
    mine = jobs()[worker::WRITERS]
    random.Random(seed).shuffle(mine)
    # Samples first: that image completes early, so later snapshots check a complete image.
    mine.sort(key=lambda job: job[0] != "samples")
    out = open_target(target, max_buffer_bytes=32 * 1024, commit_interval=0.2)
    done = {name for name in ("samples", "crop", "blend") if out[name].progress().complete}
    for image, s, k in mine:
        if image in done:
            continue  # as a resumed loop does: an image another writer completed is skipped
        img = out[image]
        # Into an image another writer completed meanwhile, a write is a retry: dropped.
        if image == "samples":
            img.write_sample(s, sample(s))
        else:
            t = specs[k]
            img.write_tile(s, tile(s, t), crop_start=t.crop_coords, crop_size=t.crop_size,
                           stitch_start=t.stitch_coords)
        if img.is_final:
            done.add(image)
        time.sleep(pause)
    out.close()


def levels(target: tuple, image: str) -> list[bytes]:
    with open_target(target, mode="r") as out:
        n = out[image].n_levels
    return [read_level(target, image, k).tobytes() for k in range(n)]


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict[str, list[bytes]]:
    target = make_target("local", tmp_path_factory.mktemp("serial"), None)
    declare(target)
    write(target, 0, 0, 0.0)
    write(target, 1, 0, 0.0)
    write(target, 2, 0, 0.0)
    return {image: levels(target, image) for image in ("samples", "crop", "blend")}


@pytest.mark.parametrize(("kind", "layout"), [("local", "chunks"), ("fsspec", "chunks"), ("local", "shards")])
def test_twenty_kills_and_resumes_end_in_the_serial_result(tmp_path, request, kind, layout, serial):
    """``layout="shards"``: one shard per sample, tiles of three writers assembled into them."""
    target = make_target(kind, tmp_path, request.getfixturevalue("s3") if kind != "local" else None)
    declare(target, layout)
    ctx = mp.get_context("spawn")
    rng = random.Random(7)
    runs = {w: 0 for w in range(WRITERS)}

    def start(worker: int) -> mp.Process:
        runs[worker] += 1
        p = ctx.Process(target=write, args=(target, worker, 1000 * worker + runs[worker], 0.25))
        p.start()
        return p

    procs = {w: start(w) for w in range(WRITERS)}
    kills, snapshots_complete = 0, 0
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.3, 2.0))
        alive = [w for w, p in procs.items() if p.is_alive()]
        if kills >= 20 or not alive:
            break
        victim = rng.choice(alive)
        os.kill(procs[victim].pid, signal.SIGKILL)
        procs[victim].join()
        kills += 1
        # A snapshot right after the kill: complete means every byte is there.
        with open_target(target, mode="r") as out:
            complete = [name for name in ("samples", "crop", "blend") if out[name].progress().complete]
        for name in complete:
            assert levels(target, name) == serial[name], f"{name} complete but its data is not"
        snapshots_complete += len(complete)
        procs[victim] = start(victim)
    for p in procs.values():
        p.join(600)
        assert p.exitcode == 0
    # Writers that finished before others restarted left their share to them; a last
    # finalize (any process) completes what every writer together stored.
    with open_target(target) as out:
        for name in ("samples", "crop", "blend"):
            out[name].finalize()
    print(f"\n{kind}: {kills} kills, {sum(runs.values())} writer runs, "
          f"{snapshots_complete} complete images seen in snapshots (all whole)")
    assert kills >= 20
    if kind == "local":
        # The shards killed writers were writing are swept: their processes ended. (zarr's
        # own temporary files of chunks name no process: they go once a minute old.)
        assert not list(tmp_path.rglob("*.ngffw-*.partial"))
    for name in ("samples", "crop", "blend"):
        with open_target(target, mode="r") as out:
            assert out[name].progress().complete, name
        assert levels(target, name) == serial[name], name
