"""The engine's lifecycle: threads it owns and ends, fork, and reads that never write."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import ngff_writer as nw
from ngff_writer._track import log as track
from ngff_writer.testing import abandon


def _threads(prefix: str) -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith(prefix))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _listing(root: Path) -> dict[str, tuple[int, bytes] | None]:
    """Every path under ``root``: a file's modification time (ns) and bytes, None for a folder."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes()) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


def test_no_thread_outlives_its_context(tmp_path):
    """Threads belong to a context: two outputs share them, and closing the context ends them."""
    with nw.Context(store_threads=3) as ctx:
        outs = [nw.open_output(tmp_path / f"{k}.zarr", context=ctx) for k in range(2)]
        for out in outs:
            img = out.create_image("p", (40, 32, 32), "syx", chunks=(1, 16, 16))
            for i in range(40):
                img.write_sample(i, np.full((32, 32), i, np.float32))
        running = _threads(ctx.name)
        assert f"{ctx.name}-commit" in running and f"{ctx.name}-beside_0" in running
        assert f"{ctx.name}-encode_0" in running and f"{ctx.name}-pipeline_0" in running
        assert sum(n.startswith(f"{ctx.name}-store") for n in running) == 3
        outs[0].close()
        assert _threads(ctx.name) == running  # the other output still writes with them
        with pytest.warns(nw.UnclosedOutputWarning, match="1.zarr"):
            ctx.close()
    # Closing the context closed the output left open on it, keeping what it was given.
    assert outs[1].closed and _threads(ctx.name) == []
    for k in range(2):
        with nw.open_output(tmp_path / f"{k}.zarr", mode="r") as ro:
            assert ro["p"].progress().complete


def test_workers_gives_an_output_threads_that_end_with_it(tmp_path):
    with nw.open_output(tmp_path / "o.zarr", workers=3) as out:
        name = out.context.name
        assert name != nw.default_context().name
        out.create_image("p", (2, 8, 8), "syx").write_sample(0, np.ones((8, 8), np.float32))
        assert sum(n.startswith(f"{name}-store") for n in _threads(name)) == 3
    assert _threads(name) == []


@pytest.mark.drops_outputs
@pytest.mark.filterwarnings("ignore::ngff_writer.UnclosedOutputWarning")  # told, as it should be
def test_an_output_dropped_without_close_lets_its_threads_go(tmp_path):
    out = nw.open_output(tmp_path / "o.zarr", workers=1, commit_interval=0.05)
    out.create_image("p", (2, 8, 8), "syx").write_sample(0, np.ones((8, 8), np.float32))
    name = out.context.name
    committer = next(t for t in threading.enumerate() if t.name == f"{name}-commit")
    del out
    for _ in range(50):  # stores in flight finish, then the output and its images are collected
        gc.collect()
        committer.join(timeout=0.2)
    assert not committer.is_alive() and _threads(name) == []


def test_a_closed_context_refuses_new_outputs(tmp_path):
    ctx = nw.Context()
    ctx.close()
    with pytest.raises(nw.ClosedError):
        nw.open_output(tmp_path / "o.zarr", context=ctx)
    assert not (tmp_path / "o.zarr").exists()


def test_an_output_with_a_long_commit_interval_delays_no_other(tmp_path):
    # The committer waits a quarter of the shortest interval it knows; an output opened
    # later with a shorter one must not wait for the first one's (here 15 minutes).
    with nw.Context() as ctx:
        slow = nw.open_output(tmp_path / "slow.zarr", context=ctx, commit_interval=3600)
        slow.create_image("i", (4, 8, 8), "syx", pyramid=None).write_sample(0, np.ones((8, 8), np.float32))
        time.sleep(0.5)  # the committer is in its long wait now
        with nw.open_output(tmp_path / "fast.zarr", context=ctx) as fast:
            image = fast.create_image("i", (4, 8, 8), "syx", pyramid=None)
            image.write_sample(0, np.ones((8, 8), np.float32))
            log = tmp_path / "fast.zarr" / "i" / "ngff_writer" / "log"
            deadline = time.monotonic() + 10
            while not (log.exists() and any(log.iterdir())) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert log.exists() and any(log.iterdir()), "the record waited for the other output's interval"
        slow.close()


@pytest.mark.parametrize(("setting", "value"), [("store_threads", 0), ("inflight_bytes", -1),
                                                ("commit_interval", 0), ("timeout", "1"), ("retries", 1.5),
                                                ("nice", -1), ("nice", 20), ("nice", True)])
def test_a_context_refuses_bad_settings(setting, value):
    with pytest.raises(nw.SpecError, match=setting):
        nw.Context(**{setting: value})


def _niceness(thread_name: str) -> int:
    thread = next(t for t in threading.enumerate() if t.name == thread_name)
    return os.getpriority(os.PRIO_PROCESS, thread.native_id)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
@pytest.mark.parametrize("nice", [10, 0])
def test_the_writer_threads_yield_to_the_callers(tmp_path, nice):
    # The threads that store, encode and reduce are `nice` steps less favoured than the
    # caller's (a model, a data loader): writing takes the cores they leave.
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with nw.Context(nice=nice) as ctx, nw.open_output(tmp_path / "o.zarr", context=ctx) as out:
        out.create_image("p", (2, 8, 8), "syx").write_sample(0, np.ones((8, 8), np.float32))
        for pool in ("store", "encode", "beside", "pipeline"):
            assert _niceness(f"{ctx.name}-{pool}_0") == min(19, caller + nice)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
        assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == caller  # the process is untouched
    with nw.open_output(tmp_path / "o.zarr", mode="r") as ro:
        np.testing.assert_array_equal(ro["p"].array[0], np.ones((8, 8), np.float32))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_fork_after_use_works(tmp_path):
    out = nw.open_output(tmp_path / "parent.zarr")
    img = out.create_image("p", (4, 16, 16), "syx")
    img.write_sample(0, np.ones((16, 16), np.float32))  # threads are running now
    pid = os.fork()
    if pid == 0:  # the child: its own output, written and closed, then exit without cleanup
        code = 1
        try:
            with nw.open_output(tmp_path / "child.zarr") as child:
                c = child.create_image("c", (2, 16, 16), "syx")
                for i in range(2):
                    c.write_sample(i, np.full((16, 16), i + 1, np.float32))
                code = 0 if c.progress().complete else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    for i in range(1, 4):  # the parent goes on
        img.write_sample(i, np.ones((16, 16), np.float32))
    out.close()
    for root, name in ((tmp_path / "parent.zarr", "p"), (tmp_path / "child.zarr", "c")):
        with nw.open_output(root, mode="r") as ro:
            assert ro[name].progress().complete


def test_reads_never_write(tmp_path, monkeypatch):
    """An image every sample of which is stored and recorded, by writers that died before
    finalizing it: reading its progress, in every way, changes no byte. Nor does reading
    the levels of an image through a handle that has written it, once it flushed."""
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("p", (4, 16, 16), "syx")
    # Two writers, each knowing only its own half, both die before anyone finalizes.
    writers = [nw.open_output(root, mode="a", commit_interval=3600) for _ in range(2)]
    for out, half in zip(writers, ((0, 1), (2, 3)), strict=True):
        for i in half:
            out["p"].write_sample(i, np.full((16, 16), i + 1, np.float32))
    for out in writers:
        abandon(out)  # dies here
    del writers, out
    before = _files(root)
    with nw.open_output(root, mode="r") as ro:
        img = ro["p"]
        progress = img.progress()
        assert (progress.done, progress.total, progress.complete) == (4, 4, False)
        assert not img.complete and not img.is_final and img.pending_samples() == []
        assert [p.done for p in ro.status()] == [4]
    with nw.open_output(root, mode="a") as out:  # a writable handle's reads do not write either
        img = out["p"]
        assert img.progress().done == 4 and not img.complete
        assert _files(root) == before
    cli = subprocess.run([sys.executable, "-m", "ngff_writer.cli", "status", str(root)], check=False,
                         capture_output=True, text=True)
    assert cli.returncode == 0 and "in progress" in cli.stdout
    for command in ("validate", "info"):  # nor do the other reading commands
        subprocess.run([sys.executable, "-m", "ngff_writer.cli", command, str(root)], check=False,
                       capture_output=True)
    assert _files(root) == before
    with nw.open_output(root, mode="a") as out:
        assert out["p"].finalize()  # finalizing is a verb
    assert _files(root) != before

    # Reading levels through a handle that has written stores nothing either, once what it
    # wrote is flushed: no chunk, no fragment, no log record, no heartbeat.
    monkeypatch.setattr(track, "HEARTBEAT", 3600.0)  # no heartbeat falls due while reading
    with nw.open_output(root, mode="a", commit_interval=3600) as out:
        img = out.create_image("w", (4, 32, 32), "syx", chunks=(1, 16, 16), pyramid=2)
        for i in range(3):  # sample 3 is never written: the image stays open
            img.write_sample(i, np.full((32, 32), i + 1, np.float32))
        img.write_region(3, np.full((8, 32), 4, np.float32), (0, 0))  # half a row of chunks
        img.flush()  # the parts of the chunks partly covered are stored as fragments
        flushed = _listing(root)
        reduced, full = img.level(1)[...], img.array[...]
        assert _listing(root) == flushed
        np.testing.assert_array_equal(full[:3], np.arange(1, 4, dtype=np.float32)[:, None, None]
                                      * np.ones((3, 32, 32), np.float32))
        np.testing.assert_array_equal(reduced[:3], np.arange(1, 4, dtype=np.float32)[:, None, None]
                                      * np.ones((3, 16, 16), np.float32))
        assert not img.complete
