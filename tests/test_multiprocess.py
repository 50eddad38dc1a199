"""Several real processes writing one image, reopening it, and dying halfway.

Children are started with the "spawn" context (a fresh interpreter, as a cluster job or a
DataLoader worker would be); everything they share with the parent goes through the
store. Sample ``i`` is a deterministic function of ``i``, so any process can make it and a
single-process write of the same samples serves as the reference.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from layouts import large_default
from procs import TIMEOUT, run_children  # noqa: F401

import ngff_writer as nw
from ngff_writer.testing import abandon

AXES = "sczyx"
SHAPE = (8, 2, 4, 24, 20)
CHUNKS = (1, 1, 2, 16, 16)
#: NGFF version, and "-sharded" for the large images' default layout (tests/layouts.py).
VERSIONS = ("0.4", "0.5", "0.5-sharded")
N = SHAPE[0]
CRASH_EXIT = 17
CRASH_POINT_MISSED = 3


def sample(i: int) -> np.ndarray:
    """Sample ``i`` (c z y x), the same in every process."""
    data = np.random.default_rng(1000 + i).random(SHAPE[1:], dtype=np.float32)
    data[1] += 5.0  # channels differ, so per-channel windows are told apart
    return data


def create(out: nw.Output, version: str) -> nw.Image:
    with large_default(version.endswith("sharded")):
        return out.create_image(
            "pred", SHAPE, AXES, dtype="float32", chunks=CHUNKS,
            scale={"z": 2.0, "y": 0.5, "x": 0.5}, units="micrometer",
        )


@pytest.fixture
def launcher() -> Iterator[contextlib.ExitStack]:
    """Closes, after the test, the outputs ``declare`` left open."""
    with contextlib.ExitStack() as stack:
        yield stack


def declare(root: Path, version: str, launcher: contextlib.ExitStack) -> nw.Image:
    """Declare the image in a fresh output (left open, as a launcher would, until the test ends)."""
    return create(launcher.enter_context(nw.open_output(root, mode="w", ngff_version=version[:3])),
                  version)


def reference(root: Path, version: str) -> None:
    """A single-process write of every sample, in order."""
    with nw.open_output(root, mode="w", ngff_version=version[:3]) as out:
        img = create(out, version)
        for i in range(N):
            img.write_sample(i, sample(i))
        assert img.progress().complete
    if version.endswith("sharded"):  # one shard per sample; level 1 gathers all 8
        assert zarr.open_array(root / "pred" / "0", mode="r").shards == (1, 2, 4, 32, 32)
        assert zarr.open_array(root / "pred" / "1", mode="r").shards == (8, 2, 4, 12, 10)
    else:
        assert zarr.open_array(root / "pred" / "0", mode="r").shards is None


def attrs_of(root: Path) -> dict[str, Any]:
    return dict(zarr.open_group(root / "pred", mode="r").attrs)


def omero_of(root: Path, version: str) -> dict[str, Any]:
    attrs = attrs_of(root)
    return (attrs["ome"] if version.startswith("0.5") else attrs)["omero"]


def status_of(root: Path) -> str:
    return attrs_of(root)["ngff_writer"]["status"]


def assert_same_image(root: Path, ref_root: Path, version: str) -> None:
    """Same stored bytes, chunk files, omero windows and status as the reference."""
    got = zarr.open_array(root / "pred" / "0", mode="r")[...]
    want = zarr.open_array(ref_root / "pred" / "0", mode="r")[...]
    assert got.tobytes() == want.tobytes()
    chunk_files = sorted(
        p.relative_to(root / "pred" / "0").as_posix()
        for p in (root / "pred" / "0").rglob("*") if p.is_file()
    )
    ref_files = sorted(
        p.relative_to(ref_root / "pred" / "0").as_posix()
        for p in (ref_root / "pred" / "0").rglob("*") if p.is_file()
    )
    assert chunk_files == ref_files
    assert omero_of(root, version) == omero_of(ref_root, version)
    assert status_of(root) == status_of(ref_root) == "complete"


# ---- child process bodies (module level so "spawn" can import them) ----------------------
def _write_samples(root: str, indices: list[int], barrier: Any = None) -> None:
    out = nw.open_output(root, mode="a")
    img = out.image("pred")
    if barrier is not None:
        barrier.wait(timeout=60)  # start writing together
    for i in indices:
        img.write_sample(i, sample(i))
    out.close()


def _write_then_die(root: str, indices: list[int], crash: str | None, nxt: int) -> None:
    """Write and flush ``indices``, then die without any cleanup (``os._exit``, like SIGKILL).

    ``crash`` picks where: None, right after ``indices`` are flushed (stored and
    recorded); "before-commit", once sample ``nxt`` is stored and before its log record is
    committed; "before-record", while storing sample ``nxt``, once its data is stored and
    before its record is even taken; "record-rename", inside the store's write of the log
    segment holding ``nxt``'s record (temp file written, final rename not done).
    """
    out = nw.open_output(root, mode="a", commit_interval=3600)
    img = out.image("pred")
    for i in indices:
        img.write_sample(i, sample(i))
    img.flush()
    if crash is None:
        os._exit(CRASH_EXIT)

    def die(*args: Any, **kwargs: Any) -> None:
        os._exit(CRASH_EXIT)

    if crash == "before-commit":
        img.write_sample(nxt, sample(nxt))
        img.progress()  # waits until this writer's data is stored
        die()
    if crash == "before-record":
        import ngff_writer._track.log

        ngff_writer._track.log.Ledger.record = die  # type: ignore[method-assign]
    elif crash == "record-rename":
        import pathlib

        # zarr's LocalStore writes every key to a temp file, then Path.replace()s it.
        replace = pathlib.Path.replace

        def replace_or_die(self: pathlib.Path, target: Any) -> Any:
            if "ngff_writer/log/" in Path(target).as_posix():
                die()
            return replace(self, target)

        pathlib.Path.replace = replace_or_die  # type: ignore[method-assign]
    img.write_sample(nxt, sample(nxt))
    img.flush()
    os._exit(CRASH_POINT_MISSED)


# ---- (a) two writers ---------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_two_processes_write_alternate_samples_concurrently(
    tmp_path: Path, launcher: contextlib.ExitStack, version: str
) -> None:
    ref_root = tmp_path / "ref.zarr"
    reference(ref_root, version)
    root = tmp_path / "out.zarr"
    declare(root, version, launcher)
    barrier = mp.get_context("spawn").Barrier(2)
    evens, odds = list(range(0, N, 2)), list(range(1, N, 2))
    codes = run_children((_write_samples, (str(root), evens, barrier)),
                         (_write_samples, (str(root), odds, barrier)))
    assert codes == [0, 0]

    with nw.open_output(root, mode="r") as ro:
        progress = ro.image("pred").progress()
    assert progress.complete and progress.done == N and progress.pending == ()
    assert_same_image(root, ref_root, version)


@pytest.mark.parametrize("version", VERSIONS)
def test_image_completes_exactly_when_last_sample_lands(
    tmp_path: Path, launcher: contextlib.ExitStack, version: str
) -> None:
    ref_root = tmp_path / "ref.zarr"
    reference(ref_root, version)
    root = tmp_path / "out.zarr"
    declare(root, version, launcher)
    evens, odds = list(range(0, N, 2)), list(range(1, N, 2))

    assert run_children((_write_samples, (str(root), evens))) == [0]
    with nw.open_output(root, mode="r") as ro:
        progress = ro.image("pred").progress()
    assert not progress.complete
    assert progress.done == len(evens) and progress.pending == tuple(odds)
    assert status_of(root) == "in_progress"

    # All but the last odd sample: still in progress.
    assert run_children((_write_samples, (str(root), odds[:-1]))) == [0]
    with nw.open_output(root, mode="r") as ro:
        progress = ro.image("pred").progress()
    assert not progress.complete and progress.pending == (odds[-1],)
    assert status_of(root) == "in_progress"

    assert run_children((_write_samples, (str(root), odds[-1:]))) == [0]
    with nw.open_output(root, mode="r") as ro:
        progress = ro.image("pred").progress()
    assert progress.complete and progress.done == N
    assert_same_image(root, ref_root, version)


# ---- (b) the ledger survives reopening -------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_progress_survives_reopening(tmp_path: Path, version: str) -> None:
    ref_root = tmp_path / "ref.zarr"
    reference(ref_root, version)
    root = tmp_path / "out.zarr"
    launcher = nw.open_output(root, mode="w", ngff_version=version[:3])
    img = create(launcher, version)
    first = [5, 0, 3]
    for i in first:
        img.write_sample(i, sample(i))
    before = img.progress()  # this writer's own view: what it stored
    img.flush()  # its log records are committed: every other handle sees them
    abandon(launcher, commit=False)  # the launcher goes away; only the store remains
    pending = tuple(sorted(set(range(N)) - set(first)))
    assert before.done == len(first) and before.pending == pending

    with nw.open_output(root, mode="r") as ro:
        assert ro.images() == ["pred"]
        assert ro.image("pred").progress() == before
        assert [p.done for p in ro.status()] == [len(first)]
        with pytest.raises(nw.ReadOnlyError):
            ro.image("pred").write_sample(pending[0], sample(pending[0]))

    out = nw.open_output(root, mode="a")
    img = out.image("pred")
    assert img.progress() == before
    assert img.pending_samples() == list(pending)
    assert status_of(root) == "in_progress"
    for i in img.pending_samples():
        img.write_sample(i, sample(i))
    assert img.progress().complete
    out.close()

    with nw.open_output(root, mode="r") as ro:
        p = ro.image("pred").progress()
        assert p.complete and p.done == N and p.pending == ()
    assert_same_image(root, ref_root, version)


# ---- (c) a writer killed halfway loses nothing ---------------------------------------------
CRASHES = [
    pytest.param(None, id="between-writes"),
    pytest.param("before-commit", id="before-commit"),
    pytest.param("before-record", id="before-record"),
    # Killed while the log segment is being renamed into place (its temp file exists).
    pytest.param("record-rename", id="record-rename"),
]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("crash", CRASHES)
def test_killed_writer_keeps_everything_it_recorded(
    tmp_path: Path, launcher: contextlib.ExitStack, version: str, crash: str | None
) -> None:
    ref_root = tmp_path / "ref.zarr"
    reference(ref_root, version)
    root = tmp_path / "out.zarr"
    declare(root, version, launcher)
    done_before = [6, 1, 4]
    codes = run_children((_write_then_die, (str(root), done_before, crash, 2)))
    assert codes == [CRASH_EXIT]

    with nw.open_output(root, mode="r") as ro:
        progress = ro.image("pred").progress()
    assert not progress.complete
    assert progress.done == len(done_before)
    assert set(range(N)) - set(progress.pending) == set(done_before)
    assert status_of(root) == "in_progress"
    # The samples recorded as done are really stored.
    stored = zarr.open_array(root / "pred" / "0", mode="r")
    for i in done_before:
        np.testing.assert_array_equal(stored[i], sample(i))

    out = nw.open_output(root, mode="a")
    img = out.image("pred")
    for i in img.pending_samples():
        img.write_sample(i, sample(i))
    assert img.progress().complete
    out.close()
    assert_same_image(root, ref_root, version)


# ---- (e) declaring the same image at the same time -------------------------------------------
def _declare_and_write(root: str, name: str, version: str, rank: int, world: int,
                       barrier: Any) -> None:
    out = nw.open_output(root, mode="a", ngff_version=version)
    barrier.wait(timeout=60)  # every rank declares at once, as DDP ranks do
    img = out.create_image(name, SHAPE, AXES, dtype="float32", chunks=CHUNKS, exist_ok=True)
    for i in range(rank, N, world):
        img.write_sample(i, sample(i))
    out.close()


@pytest.mark.parametrize("name", ["", "pred"])
def test_ranks_declaring_the_same_image_at_once_all_write_into_it(tmp_path: Path, name: str) -> None:
    """Each rank declares (exist_ok=True) and writes its share, with no launcher declaring
    first; a declaration that lands while another is allocating must not fail."""
    ctx = mp.get_context("spawn")
    for attempt in range(3):  # the race window is short: go through it several times
        root = tmp_path / f"out{attempt}.zarr"
        nw.open_output(root, mode="w").close()
        barrier = ctx.Barrier(3)
        codes = run_children(*[(_declare_and_write, (str(root), name, "0.5", r, 3, barrier))
                               for r in range(3)])
        assert codes == [0, 0, 0]
        with nw.open_output(root, mode="r") as out:
            assert out.images() == [name]
            img = out[name]
            assert img.progress().complete
            for i in range(N):
                np.testing.assert_array_equal(img.level(0)[i], sample(i))
