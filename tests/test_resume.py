"""Resume that always works: after a crash in another order, after failed stores, after a
full disk, after damaged bookkeeping or metadata.

Writers here are in-process; a "crash" drops an output without closing it, after its
stores have landed and (or not) its log was committed, so what it held in memory is
lost exactly as a killed process loses it (tests/test_stores.py kills real processes).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layouts import large_default
from stores import FaultyStore
from tiling import tile_specs
from zarr.storage import LocalStore

import ngff_writer as nw
from ngff_writer._storage.stores import temporary_name
from ngff_writer.testing import abandon
from ngff_writer.tiling import tiles

SHAPE = (2, 1, 100, 120)  # s c y x
CHUNKS = (1, 1, 32, 32)
PATCH, OVERLAP = (48, 56), (12, 16)
BLEND = {"tile_size": PATCH, "overlap": OVERLAP, "ramp": "linear"}
SPECS = list(tile_specs(SHAPE[2:], PATCH, OVERLAP))
JOBS = [(s, k) for s in range(SHAPE[0]) for k in range(len(SPECS))]


def truth() -> np.ndarray:
    return np.random.default_rng(11).random(SHAPE, dtype=np.float32)


def tile(s: int, k: int) -> np.ndarray:
    t = SPECS[k]
    region = tuple(slice(a, a + n) for a, n in zip(t.tile_start, t.tile_size, strict=True))
    noise = np.random.default_rng(1000 * s + k).normal(0, 0.05, (1, *t.tile_size))
    return (truth()[s][(Ellipsis, *region)] + noise).astype(np.float32)


def send(img: nw.Image, jobs) -> None:
    for s, k in jobs:
        t = SPECS[k]
        img.write_tile(s, tile(s, k), crop_start=t.crop_coords, crop_size=t.crop_size,
                       stitch_start=t.stitch_coords)


def declare(root, mode: str, layout: str = "chunks", **kw) -> None:
    """``layout="shards"``: the default layout of large images (tests/layouts.py)."""
    with nw.open_output(root, mode="w", **kw) as out, large_default(layout == "shards"):
        img = out.create_image("p", SHAPE, "scyx", chunks=CHUNKS, blend=BLEND if mode == "blend" else None)
        assert (img.spec.shards is not None) == (layout == "shards")


def reference(tmp_path_factory, mode: str) -> list[np.ndarray]:
    root = tmp_path_factory.mktemp(f"ref-{mode}") / "ref.zarr"
    declare(root, mode)
    with nw.open_output(root, mode="a") as out:
        send(out["p"], JOBS)
    return [zarr.open_array(root / "p" / str(k))[:] for k in range(3)]


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    return {mode: reference(tmp_path_factory, mode) for mode in ("crop", "blend")}


def levels(root: Path) -> list[np.ndarray]:
    return [zarr.open_array(root / "p" / str(k))[:] for k in range(3)]


def assert_done(root: Path, ref: list[np.ndarray]) -> None:
    with nw.open_output(root, mode="r") as out:
        assert out["p"].progress().complete
    for got, want in zip(levels(root), ref, strict=True):
        assert got.tobytes() == want.tobytes()
    assert sorted(p.name for p in (root / "p" / "ngff_writer").iterdir()) == ["zarr.json"]


def crash(out: nw.Output, commit: bool = True) -> None:
    """Drop ``out`` like a killed process: stores landed, log committed (or not), memory lost."""
    abandon(out, commit)


# ---- crash, then resume in another order ----------------------------------------------------
@pytest.mark.parametrize("layout", ["chunks", "shards"])
@pytest.mark.parametrize("mode", ["crop", "blend"])
@pytest.mark.parametrize("seed", range(4))
def test_crash_then_resume_in_another_order_with_spilled_fragments(tmp_path, refs, mode, seed, layout):
    root = tmp_path / "o.zarr"
    declare(root, mode, layout)
    small = {"max_buffer_bytes": 16 * 1024, "commit_interval": 3600}  # partial chunks spill
    out = nw.open_output(root, mode="a", **small)
    order = np.random.default_rng(seed).permutation(len(JOBS))
    send(out["p"], [JOBS[i] for i in order[: 2 * len(order) // 3]])
    crash(out)
    assert any((root / "p" / "ngff_writer" / "fragments").rglob("*.npz"))
    with nw.open_output(root, mode="a", **small) as out:  # everything again, another order
        send(out["p"], [JOBS[i] for i in np.random.default_rng(100 + seed).permutation(len(JOBS))])
    assert_done(root, refs[mode])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_life_of_crashes_retries_and_spills_ends_in_the_stitch(tmp_path_factory, refs, data):
    """Runs that each send some tiles (some twice) in a random order, spill, and die
    (committed or not); a last run sends everything and closes: the image equals the
    single-process result, bit for bit, at every level."""
    mode = data.draw(st.sampled_from(["crop", "blend"]), label="mode")
    root = tmp_path_factory.mktemp("life") / "o.zarr"
    declare(root, mode, data.draw(st.sampled_from(["chunks", "shards"]), label="layout"))
    for run in range(data.draw(st.integers(1, 3), label="runs")):
        out = nw.open_output(root, mode="a", commit_interval=3600,
                             max_buffer_bytes=data.draw(st.sampled_from([0, 8192, 1 << 30]), label="buf"))
        picks = data.draw(st.lists(st.integers(0, len(JOBS) - 1), max_size=2 * len(JOBS)), label=f"run{run}")
        send(out["p"], [JOBS[i] for i in picks])
        if data.draw(st.booleans(), label="flush"):
            out["p"].flush()
        crash(out, commit=data.draw(st.booleans(), label="commit"))
    with nw.open_output(root, mode="a") as out:
        send(out["p"], [JOBS[i] for i in data.draw(st.permutations(range(len(JOBS))), label="last")])
    assert_done(root, refs[mode])


# ---- stores that fail ------------------------------------------------------------------------
class BotoLikeError(Exception):
    """What botocore raises when the endpoint is gone: not an OSError."""


FAILURES = [
    pytest.param("p/0/c/", OSError(errno.ENOSPC, "No space left on device"), id="chunk-ENOSPC"),
    pytest.param("p/1/c/", PermissionError(errno.EACCES, "Permission denied"), id="pyramid-EACCES"),
    pytest.param("ngff_writer/log/", BotoLikeError("Could not connect to the endpoint URL"), id="log-boto"),
    pytest.param("ngff_writer/fragments/", OSError(errno.ENOSPC, "No space left on device"),
                 id="fragment-ENOSPC"),
]


@pytest.mark.parametrize(("match", "error"), FAILURES)
def test_a_failing_store_raises_store_errors_and_a_retry_in_the_same_process_completes(
        tmp_path, refs, match, error):
    FaultyStore.heal()
    store = FaultyStore(LocalStore(tmp_path / "o.zarr"))
    declare(store, "crop")
    raised: list[BaseException] = []
    out = nw.open_output(store, mode="a", max_buffer_bytes=16 * 1024, commit_interval=3600)
    img = out["p"]
    FaultyStore.fail(match, error, times=3)
    for job in JOBS:
        try:
            send(img, [job])
        except OSError as exc:  # what a user catches
            raised.append(exc)
    try:
        img.flush()
    except OSError as exc:
        raised.append(exc)
    assert 1 <= FaultyStore.failed <= 3
    assert raised and all(isinstance(e, nw.StoreError) for e in raised)
    cause = raised[0].__cause__
    assert isinstance(cause, type(error)) or isinstance(cause.__cause__, type(error))
    assert any(word in str(raised[0]) for word in ("storing region", "writing", match))
    # Nothing claims data that is not stored: every unit the log lists holds the truth.
    with nw.open_output(LocalStore(tmp_path / "o.zarr"), mode="r") as ro:
        ro["p"].progress()
        covered = ro["p"]._ledger.coverage.grids[0]
    stored, want = levels(tmp_path / "o.zarr")[0], refs["crop"][0]
    for idx in zip(*np.nonzero(covered), strict=True):
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, CHUNKS, strict=True))
        np.testing.assert_array_equal(stored[region], want[region])
    FaultyStore.heal()
    send(img, JOBS)  # the retry: everything again, in the same process
    out.close()
    assert_done(tmp_path / "o.zarr", refs["crop"])


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, check=False).returncode == 0


def test_disk_full_then_resume_on_a_bigger_disk(tmp_path, refs):
    disk = tmp_path / "small-disk"
    if not _mount_tmpfs(disk, "160k"):
        pytest.skip("this machine does not allow mounting a tmpfs (needs root and mount permission)")
    try:
        root = disk / "o.zarr"
        declare(root, "crop")
        out = nw.open_output(root, mode="a", max_buffer_bytes=16 * 1024)
        with pytest.raises(nw.StoreError) as info:
            send(out["p"], JOBS)
            out.close()
        assert isinstance(info.value, OSError)
        cause = info.value.__cause__
        assert "No space left" in str(info.value) or getattr(cause, "errno", None) == errno.ENOSPC
        out._abandon()  # its disk is full: nothing more of it will land
        big = tmp_path / "big-disk" / "o.zarr"
        shutil.copytree(root, big)  # the bigger disk: the same files
    finally:
        # Fails while any file on it is still open: an abandoned output keeps none.
        subprocess.run(["umount", str(disk)], check=True)
    with nw.open_output(big, mode="a") as out:
        send(out["p"], JOBS)
    assert_done(big, refs["crop"])


# ---- damaged bookkeeping and metadata -------------------------------------------------------------
def _half_written(tmp_path: Path) -> Path:
    """An image with half its samples stored and recorded, as a crashed export leaves it."""
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("s", (6, 64, 64), "syx", chunks=(1, 32, 32))
        for i in range(3):
            img.write_sample(i, np.full((64, 64), i + 1, np.float32))
    return root


def _resume_samples(root: Path) -> None:
    with nw.open_output(root, mode="a") as out:
        img = out["s"]
        for i in img.pending_samples():
            img.write_sample(i, np.full((64, 64), i + 1, np.float32))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ngff_writer.cli", *args], capture_output=True, text=True,
                          check=False)


def _check_samples(root: Path) -> None:
    with nw.open_output(root, mode="r") as out:
        assert out["s"].progress().complete
    want = np.arange(1, 7, dtype=np.float32)[:, None, None] * np.ones((6, 64, 64), np.float32)
    np.testing.assert_array_equal(zarr.open_array(root / "s" / "0")[:], want)


def test_a_truncated_log_segment_is_reported_then_repaired(tmp_path):
    root = _half_written(tmp_path)
    (segment,) = (root / "s" / "ngff_writer" / "log").glob("*.json")
    segment.write_bytes(b"")  # what a power loss without fsync can leave
    with nw.open_output(root, mode="r") as out, pytest.raises(nw.CorruptError) as info:
        out["s"].progress()
    assert info.value.key.endswith(segment.name) and "repair" in str(info.value)
    status = _cli("status", str(root), "--json")
    assert status.returncode == 1
    (entry,) = json.loads(status.stdout)["images"]
    assert entry["path"] == "s" and segment.name in entry["error"]
    assert "Traceback" not in status.stderr

    repaired = _cli("repair", str(root))
    assert repaired.returncode == 0, repaired.stderr
    assert "deleted the unreadable log segment" in repaired.stdout
    assert "recorded 12 stored unit(s)" in repaired.stdout  # 3 samples x 4 chunks, from their data
    with nw.open_output(root, mode="r") as out:
        assert out["s"].progress().done == 3
    _resume_samples(root)
    _check_samples(root)


def test_a_truncated_image_document_is_reported_then_rebuilt_from_the_declaration(tmp_path):
    root = _half_written(tmp_path)
    (root / "s" / "zarr.json").write_bytes(b"")
    with nw.open_output(root, mode="r") as out:
        assert out.images() == ["s"]  # still found
        with pytest.raises(nw.CorruptError) as info:
            out["s"]
    assert info.value.key == "s/zarr.json"
    assert _cli("status", str(root)).returncode == 1
    done = nw.repair_output(root)
    assert any("rebuilt the image's attributes" in a for a in done["s"])
    _resume_samples(root)
    _check_samples(root)


def test_a_truncated_declaration_is_rebuilt_from_the_image(tmp_path):
    root = _half_written(tmp_path)
    (root / "s" / "ngff_writer" / "zarr.json").write_bytes(b"{")
    out = nw.open_output(root, mode="a")
    with pytest.raises(nw.CorruptError, match=f"repair {root}"):
        # A writer reads the declaration before its first write (is it still this image?)
        out["s"].write_sample(3, np.full((64, 64), 4, np.float32))
    out.close()  # nothing was written: nothing to save
    with nw.open_output(root, mode="a") as out:
        assert any("rebuilt the declaration" in a for a in out.repair()["s"])
    _resume_samples(root)
    _check_samples(root)


def test_a_truncated_fragment_is_dropped_and_its_tiles_sent_again(tmp_path, refs):
    root = tmp_path / "o.zarr"
    declare(root, "crop")
    out = nw.open_output(root, mode="a")
    send(out["p"], JOBS[::2])
    out["p"].flush()  # partial chunks become fragments
    crash(out)
    fragment = next((root / "p" / "ngff_writer" / "fragments").rglob("*.npz"))
    fragment.write_bytes(fragment.read_bytes()[:10])
    out = nw.open_output(root, mode="a")
    with pytest.raises(nw.CorruptError) as info:
        send(out["p"], JOBS[1::2])  # the other tiles: the saved parts are needed now
        out["p"].flush()
    assert fragment.name in info.value.key
    crash(out)
    # The "killed" writers' heartbeats name this live process: repair needs force here.
    assert any("unreadable fragment" in a for a in nw.repair_output(root, force=True)["p"])
    with nw.open_output(root, mode="a") as out:
        send(out["p"], JOBS)
    assert_done(root, refs["crop"])


def test_temporary_files_a_killed_writer_left_are_swept(tmp_path):
    root = _half_written(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = int(gone.stdout)  # a process of this machine that has ended
    unit = root / "s" / "0" / "c" / "5" / "0"
    killed = unit / temporary_name("0").replace(f"-{os.getpid()}-", f"-{dead}-")  # ours: its writer is gone
    old = unit / "0.3f2a.partial"  # zarr's (no writer named), unchanged for a minute
    live = root / "s" / "0" / "c" / "4" / "0" / temporary_name("0")  # a live writer's: kept
    stray = [killed, old, root / "s" / "ngff_writer" / "log" / "x.partial"]
    for path in [*stray, live]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a chunk")
    os.utime(old, (time.time() - 60, time.time() - 60))
    _resume_samples(root)  # the image completes, and sweeps what no writer still writes
    assert not any(p.exists() for p in stray)
    assert live.exists()  # (this process may still be storing that unit again)
    with nw.open_output(root, mode="a") as out:
        assert out["s"].finalize()
    assert live.exists()
    os.utime(live, (time.time() - 60, time.time() - 60))
    with nw.open_output(root, mode="a") as out:
        assert out["s"].finalize()  # unchanged for a minute now: nobody writes it
    assert not list(root.rglob("*.partial"))
    _check_samples(root)


def test_nothing_to_repair_says_so(tmp_path):
    root = _half_written(tmp_path)
    assert nw.repair_output(root) == {}
    assert "nothing to repair" in _cli("repair", str(root)).stdout


def test_pending_tiles_tell_a_resumed_loop_what_is_left(tmp_path, refs):
    root = tmp_path / "o.zarr"
    declare(root, "crop")
    out = nw.open_output(root, mode="a", commit_interval=3600)
    send(out["p"], JOBS[:-2])  # all but the last two tiles of the last sample
    crash(out)
    every = list(tiles(SHAPE[2:], PATCH, OVERLAP))
    with nw.open_output(root, mode="a") as out:
        img = out["p"]
        assert img.pending_tiles(0, every) == []
        for s in range(SHAPE[0]):
            pending = img.pending_tiles(s, every)
            assert len(pending) < len(every)
            for t in pending:
                k = every.index(t)
                img.write_tile(s, tile(s, k), crop_start=t.crop_start, crop_size=t.crop_size,
                               stitch_start=t.stitch_start)
        assert img.pending_tiles(0, every) == []
    assert_done(root, refs["crop"])


def test_log_objects_left_in_a_final_image_are_swept_by_repair(tmp_path):
    root = _half_written(tmp_path)
    _resume_samples(root)
    late = root / "s" / "ngff_writer" / "log" / "0123456789abcdef-000007.json"
    late.parent.mkdir(parents=True)
    late.write_text("{}")  # a writer that committed after the image was finalized, then died
    assert any("left in the final image" in a for a in nw.repair_output(root)["s"])
    assert sorted(p.name for p in (root / "s" / "ngff_writer").rglob("*") if p.is_file()) == ["zarr.json"]
    _check_samples(root)


def test_a_writer_killed_after_completing_a_chunk_from_fragments_loses_no_part(tmp_path):
    """Writer A saves its half of a chunk as a fragment; writer B sends the other half,
    completes the chunk from A's fragment at its flush, stores it, and dies before its log
    record is committed (here: the commit fails, then the process is gone). A's fragment
    must still be there: only B's task is done again (as dask does with the tasks of a dead
    worker), and the chunk completes."""
    root = tmp_path / "o.zarr"
    data = np.random.default_rng(5).random((1, 32, 32), dtype=np.float32)
    with nw.open_output(root) as out:
        out.create_image("p", (1, 32, 32), "syx", chunks=(1, 32, 32), pyramid=None)
    left, right = (0, 0, 0), (0, 0, 16)
    a = nw.open_output(root, mode="a")
    a["p"].write_block(data[:, :, :16], left)
    a["p"].flush()  # A's half is a fragment now
    crash(a)
    FaultyStore.heal()
    b = nw.open_output(FaultyStore(LocalStore(root)), mode="a", commit_interval=3600)
    b["p"].write_block(data[:, :, 16:], right)
    FaultyStore.fail("ngff_writer/log/", OSError(errno.EIO, "I/O error"))
    with pytest.raises(nw.StoreError):
        b["p"].flush()  # completes and stores the chunk with A's fragment; the commit fails
    crash(b, commit=False)  # and B is gone
    FaultyStore.heal()
    assert (root / "p" / "0" / "c" / "0" / "0" / "0").exists()  # the chunk is stored...
    with nw.open_output(root, mode="r") as ro:
        assert ro["p"].progress().blocks_done == 0  # ...but the log does not list it
    assert list((root / "p" / "ngff_writer" / "fragments").rglob("*.npz"))  # and A's part survives
    with nw.open_output(root, mode="a") as c:  # B's task again, nothing else
        c["p"].write_block(data[:, :, 16:], right)
    with nw.open_output(root, mode="r") as ro:
        assert ro["p"].progress().complete
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0")[:], data)


# ---- repair changes ngff-writer outputs only, and finishes what it can ------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_repair_refuses_what_is_not_ours_and_writes_nothing(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "zarr.json").write_bytes(b"{ broken")  # status told them to run repair
    (theirs / "notes.txt").write_text("mine")
    plain = tmp_path / "plain"
    plain.mkdir()
    for folder in (theirs, plain):
        before = _tree(folder)
        run = _cli("repair", str(folder))
        assert run.returncode == 3, run.stdout + run.stderr
        assert "nothing was written" in run.stderr and "Traceback" not in run.stderr
        assert _tree(folder) == before
    with pytest.raises(nw.NotAnOutputError):
        nw.repair_output(theirs)


def test_a_garbage_level_array_document_is_rebuilt_from_the_declaration(tmp_path):
    root = _half_written(tmp_path)
    (root / "s" / "0" / "zarr.json").write_bytes(b"\x00garbage")
    with nw.open_output(root, mode="r") as out, pytest.raises(nw.StoreError):
        out["s"].array[:]
    repaired = _cli("repair", str(root))
    assert repaired.returncode == 0, repaired.stderr
    assert "rebuilt the metadata of level 0's array" in repaired.stdout
    _resume_samples(root)  # the 3 samples stored before are kept: only 3 are pending
    _check_samples(root)


def test_repair_finalizes_an_image_whose_every_unit_it_recorded(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("s", (6, 64, 64), "syx", chunks=(1, 32, 32), pyramid=3)
    # Two writers store half each and are killed before committing a record: every unit
    # is stored, none recorded, nobody finalized.
    for half in (range(3), range(3, 6)):
        out = nw.open_output(root, mode="a", commit_interval=3600)
        for i in half:
            out["s"].write_sample(i, np.full((64, 64), i + 1, np.float32))
        abandon(out, commit=False)
    with nw.open_output(root, mode="r") as ro:
        assert not ro["s"].complete
    busy = _cli("repair", str(root))  # the killed writers' heartbeats name this live process
    assert busy.returncode == 2 and "is being written" in busy.stderr
    repaired = _cli("repair", str(root), "--force")
    assert repaired.returncode == 0, repaired.stderr
    assert "finalized it" in repaired.stdout
    _check_samples(root)
    levels = [zarr.open_array(root / "s" / str(k))[:] for k in range(3)]
    assert levels[1].shape == (6, 32, 32) and np.array_equal(levels[1][:, 0, 0], np.arange(1, 7))
    assert sorted(p.name for p in (root / "s" / "ngff_writer").iterdir()) == ["zarr.json"]
