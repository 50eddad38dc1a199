"""The edges of a user's job: exiting without close(), replacing an output, re-running.

Each test runs what a user runs (a script in a real process where exiting is the point)
and checks the store with a fresh reader afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

import ngff_writer as nw

SHAPE = (8, 4, 256, 256)  # s z y x: 1 MiB per sample, stored in the background


def _sample(i: int) -> np.ndarray:
    return np.full(SHAPE[1:], i + 1, np.float32)


def _script(root: Path, ending: str, n: int = 3) -> subprocess.CompletedProcess:
    code = textwrap.dedent(f"""
        import gc, sys, time
        import numpy as np
        import ngff_writer as nw

        def export():
            out = nw.open_output({str(root)!r}, mode="a")
            img = out.create_image("im", {SHAPE}, "szyx", "float32", exist_ok=True)
            for i in range({n}):
                img.write_sample(i, np.full({SHAPE[1:]}, i + 1, np.float32))
            return out

        out = export()
    """) + textwrap.dedent(ending)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def _stored(root: Path) -> tuple[int, list[int]]:
    with nw.open_output(root, mode="r") as out:
        progress = out["im"].progress()
    data = zarr.open_array(root / "im" / "0", mode="r")
    written = [i for i in range(SHAPE[0]) if np.array_equal(data[i], _sample(i))]
    return progress.done, written


ENDINGS = {
    "end of script": "",
    "sys.exit(1)": "sys.exit(1)",
    "uncaught exception": "raise RuntimeError('the model crashed')",
    "KeyboardInterrupt": "raise KeyboardInterrupt",
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_exit_without_close_keeps_every_write(tmp_path, ending):
    root = tmp_path / "o.zarr"
    run = _script(root, ENDINGS[ending])
    assert run.returncode != 0 or ending == "end of script", run.stderr
    assert "UnclosedOutputWarning" in run.stderr and "was not closed" in run.stderr
    assert "<string>" in run.stderr  # the warning points at the user's open_output line
    assert _stored(root) == (3, [0, 1, 2])


def test_an_output_dropped_without_close_is_closed_while_the_process_runs(tmp_path):
    root = tmp_path / "o.zarr"
    # The output and its image are dropped inside the script; it then checks, itself,
    # that the writes are in the store before it exits.
    run = _script(root, f"""
        del out
        gc.collect()
        for _ in range(200):
            with nw.open_output({str(root)!r}, mode="r") as check:
                if check["im"].progress().done == 3:
                    break
            time.sleep(0.05)
        else:
            sys.exit("the dropped output was not closed")
        print("stored before exit")
    """)
    assert run.returncode == 0, run.stderr
    assert "stored before exit" in run.stdout and "was not closed" in run.stderr
    assert _stored(root) == (3, [0, 1, 2])


def test_a_closed_output_gives_no_warning_and_a_completed_one_is_final(tmp_path):
    root = tmp_path / "o.zarr"
    run = _script(root, "out.close()", n=SHAPE[0])
    assert run.returncode == 0 and "Warning" not in run.stderr, run.stderr
    with nw.open_output(root, mode="r") as out:
        assert out["im"].complete
    # Left open after the last sample: it is final already (the last write finalized it).
    again = tmp_path / "again.zarr"
    run = _script(again, "", n=SHAPE[0])
    assert run.returncode == 0, run.stderr
    with nw.open_output(again, mode="r") as out:
        assert out["im"].complete


def test_a_killed_writer_loses_at_most_what_was_in_flight_and_resumes(tmp_path):
    root = tmp_path / "o.zarr"
    code = textwrap.dedent(f"""
        import sys, numpy as np, ngff_writer as nw
        out = nw.open_output({str(root)!r}, mode="a")
        img = out.create_image("im", {SHAPE}, "szyx", "float32", exist_ok=True)
        for i in range(5):
            img.write_sample(i, np.full({SHAPE[1:]}, i + 1, np.float32))
        img.flush()  # 0-4 stored and recorded
        img.write_sample(5, np.full({SHAPE[1:]}, 6, np.float32))  # in flight
        print("ready", flush=True)
        sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done, written = _stored(root)
    assert done >= 5 and written[:5] == [0, 1, 2, 3, 4]
    with nw.open_output(root, mode="a") as out:
        img = out["im"]
        for i in img.pending_samples():
            img.write_sample(i, _sample(i))
        assert img.complete
    assert _stored(root) == (8, list(range(8)))


# ---- mode="w" never deletes what is not ours ------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _user_folder(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "raw").mkdir(parents=True)
    (project / "raw" / "important.tif").write_bytes(b"II*\x00 not a real tiff, but precious")
    (project / "notes.txt").write_text("what I did on Tuesday")
    return project


def test_mode_w_refuses_a_folder_of_user_files_and_touches_nothing(tmp_path):
    project = _user_folder(tmp_path)
    before = _tree(project)
    with pytest.raises(nw.NotOursError) as info:
        nw.open_output(project, mode="w")
    assert isinstance(info.value, nw.OutputExistsError)  # caught as the older error too
    assert "notes.txt" in str(info.value) and "raw/important.tif" in str(info.value)
    assert set(info.value.entries) == {"notes.txt", "raw/important.tif"}
    assert _tree(project) == before


def test_mode_w_refuses_another_tools_zarr_and_an_ome_zarr_py_image(tmp_path):
    theirs = tmp_path / "theirs.zarr"
    group = zarr.open_group(theirs, mode="w")
    group.create_array("data", shape=(4, 4), dtype="u1")[:] = 7
    before = _tree(theirs)
    with pytest.raises(nw.NotOursError, match="data"):
        nw.open_output(theirs, mode="w")
    assert _tree(theirs) == before

    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    image = tmp_path / "ome.zarr"
    write_image(np.zeros((16, 16), np.uint8), zarr.open_group(parse_url(image, mode="w").store), axes="yx")
    before = _tree(image)
    with pytest.raises(nw.NotOursError):
        nw.open_output(image, mode="w")
    assert _tree(image) == before


def test_mode_w_refuses_a_home_directory_and_the_filesystem_root(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for path in (home, "~", "~/", "/"):
        with pytest.raises(nw.NotOursError, match=r"home directory|filesystem root"):
            nw.open_output(path, mode="w")
    assert home.exists()


def test_mode_w_replaces_our_output_an_empty_folder_and_keeps_the_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with nw.open_output(empty, mode="w") as out:
        out.create_image("a", (4, 4), "yx").write_sample(0, np.ones((4, 4), np.float32))
    inode = empty.stat().st_ino
    with nw.open_output(empty, mode="w") as out:  # ours: replaced
        assert out.images() == []
        out.create_image("b", (4, 4), "yx")
    assert empty.stat().st_ino == inode  # the folder itself stays
    with nw.open_output(empty, mode="r") as out:
        assert out.images() == ["b"]


def test_mode_w_refuses_our_output_with_a_users_file_or_a_link_inside(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("a", (4, 4), "yx").write_sample(0, np.ones((4, 4), np.float32))
    (root / "a" / "README.md").write_text("my notes about this prediction")
    with pytest.raises(nw.NotOursError, match=r"a/README\.md"):
        nw.open_output(root, mode="w")
    assert (root / "a" / "README.md").exists() and (root / "a" / "0").exists()
    (root / "a" / "README.md").unlink()

    precious = tmp_path / "elsewhere"
    precious.mkdir()
    (precious / "keep.txt").write_text("outside the output")
    (root / "link").symlink_to(precious, target_is_directory=True)
    with pytest.raises(nw.NotOursError, match="link"):
        nw.open_output(root, mode="w")
    assert (precious / "keep.txt").read_text() == "outside the output"


def test_the_demo_command_refuses_a_user_folder(tmp_path):
    project = _user_folder(tmp_path)
    before = _tree(project)
    run = subprocess.run([sys.executable, "-m", "ngff_writer.cli", "demo", str(project), "--overwrite"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "notes.txt" in run.stderr and "Traceback" not in run.stderr
    assert _tree(project) == before


# ---- fingerprints ------------------------------------------------------------------------------------
def _job(root: Path, fingerprint: str | None, value: float, **kw) -> nw.Image:
    with nw.open_output(root, mode="a") as out:
        img = out.create_image("p", (3, 8, 8), "syx", exist_ok=True, fingerprint=fingerprint, **kw)
        for i in range(3):
            img.write_sample(i, np.full((8, 8), value, np.float32))
        assert img.complete
        return img


def test_the_same_job_twice_is_a_retry_even_when_complete(tmp_path):
    root = tmp_path / "o.zarr"
    _job(root, "model-a", 1.0)
    before = _tree(root)
    img = _job(root, "model-a", 1.0)  # the whole job again: accepted, nothing changes
    assert img.fingerprint == "model-a"
    assert _tree(root) == before
    _job(root, None, 1.0)  # no fingerprint given: the same job too
    assert _tree(root) == before


def test_another_fingerprint_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "o.zarr"
    _job(root, "model-a", 1.0)
    info = subprocess.run([sys.executable, "-m", "ngff_writer.cli", "info", str(root)], capture_output=True,
                          text=True, timeout=120)
    assert "fingerprint model-a" in info.stdout
    before = _tree(root)
    with pytest.raises(nw.OutputExistsError) as info:
        _job(root, "model-b", 5.0)
    assert "model-a" in str(info.value) and "model-b" in str(info.value)
    assert _tree(root) == before


def test_overwrite_replaces_another_jobs_image_and_continues_this_one(tmp_path):
    root = tmp_path / "o.zarr"
    _job(root, "model-a", 1.0)
    _job(root, "model-b", 5.0, overwrite=True)
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0")[:], 5.0)
    with nw.open_output(root, mode="r") as out:
        assert out["p"].fingerprint == "model-b" and out["p"].complete
    # The same job with overwrite=True continues (nothing to redo) rather than replacing.
    with nw.open_output(root, mode="a") as out:
        out.create_image("p", (3, 8, 8), "syx", fingerprint="model-b", exist_ok=True)
        half = out.create_image("h", (4, 8, 8), "syx", fingerprint="model-b")
        half.write_sample(0, np.ones((8, 8), np.float32))
    with nw.open_output(root, mode="a") as out:
        again = out.create_image("h", (4, 8, 8), "syx", fingerprint="model-b", overwrite=True)
        assert again.pending_samples() == [1, 2, 3]


def test_fingerprints_on_labels_series_and_plate_fields(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("img", (8, 8), "yx", fingerprint="raw")
        out.create_labels("img", "nuclei", fingerprint="seg-1")
        out.create_series(0, (8, 8), "yx", fingerprint="m1")
        out.create_plate("plate", 1, 1, (8, 8), "yx", fingerprint="m1")
    with nw.open_output(root, mode="a") as out:
        with pytest.raises(nw.OutputExistsError, match="seg-2"):
            out.create_labels("img", "nuclei", fingerprint="seg-2", exist_ok=True)
        with pytest.raises(nw.OutputExistsError, match="m2"):
            out.create_series(0, (8, 8), "yx", fingerprint="m2", exist_ok=True)
        with pytest.raises(nw.OutputExistsError, match="m2"):
            out.create_plate("plate", 1, 1, (8, 8), "yx", fingerprint="m2", exist_ok=True)
        assert out.create_labels("img", "nuclei", fingerprint="seg-2", overwrite=True).fingerprint == "seg-2"
        assert out.create_plate("plate", 1, 1, (8, 8), "yx", fingerprint="m2",
                                overwrite=True).field("A", 1).fingerprint == "m2"
    with pytest.raises(nw.SpecError, match="fingerprint"):
        with nw.open_output(tmp_path / "x.zarr") as out:
            out.create_image("p", (8, 8), "yx", fingerprint=42)


# ---- arrays handed out are read-only ---------------------------------------------------------------
def test_arrays_handed_to_users_refuse_writes(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (2, 8, 8), "syx")
        for write in (lambda: img.array.__setitem__(0, 1.0), lambda: img.level(0).oindex.__setitem__(0, 1.0),
                      lambda: img.array.attrs.__setitem__("k", 1), lambda: img.array.resize((4, 8, 8))):
            with pytest.raises(nw.ReadOnlyError, match="write_sample"):
                write()
        assert img.progress().done == 0
        img.write_sample(0, np.ones((8, 8), np.float32))
        assert img.array[0].sum() == 64
    assert not (tmp_path / "o.zarr" / "p" / "0" / "c" / "1").exists()  # sample 1: never written


# ---- a writer never claims complete for data that is gone -------------------------------------------
def test_mode_w_refuses_a_live_writer_and_force_makes_it_fail_typed(tmp_path):
    root = tmp_path / "o.zarr"
    writer = nw.open_output(root)
    img = writer.create_image("im", (4, 8, 8), "syx")
    img.write_sample(0, np.ones((8, 8), np.float32))
    with pytest.raises(nw.OutputInUseError, match=f"process {os.getpid()}"):
        nw.open_output(root, mode="w")
    assert img.progress().done == 1  # nothing was deleted
    with nw.open_output(root, mode="w", force=True) as other:
        other.create_image("im", (4, 8, 8), "syx").write_sample(0, np.full((8, 8), 9, np.float32))
    with pytest.raises(nw.ImageReplacedError):
        for i in range(1, 4):
            img.write_sample(i, np.ones((8, 8), np.float32))
        img.flush()
    with pytest.raises(nw.ImageReplacedError):
        assert not img.complete
    with pytest.raises(nw.ImageReplacedError):
        writer.close()
    with nw.open_output(root, mode="r") as out:
        assert out["im"].progress().done == 1
    np.testing.assert_array_equal(zarr.open_array(root / "im" / "0")[0], 9)


def test_a_writer_racing_mode_w_in_another_process_never_reports_complete(tmp_path):
    root = tmp_path / "o.zarr"
    code = textwrap.dedent(f"""
        import sys, time, numpy as np, ngff_writer as nw
        out = nw.open_output({str(root)!r}, commit_interval=0.05)
        img = out.create_image("im", (240, 16, 16), "syx", chunks=(1, 16, 16))
        print("started", flush=True)
        try:
            for i in range(240):
                img.write_sample(i, np.full((16, 16), i, np.float32))
                time.sleep(0.01)
            out.close()
            with nw.open_output({str(root)!r}, mode="r") as check:
                print("complete" if check["im"].complete else "incomplete")
        except nw.ImageReplacedError as exc:
            print("replaced:", exc)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.5)
    with pytest.raises(nw.OutputInUseError):
        nw.open_output(root, mode="w")
    with nw.open_output(root, mode="w", force=True):
        pass
    out, err = proc.communicate(timeout=120)
    assert out.startswith("replaced:"), (out, err)


@pytest.mark.parametrize("kind", ["fsspec", "obstore"])
def test_mode_w_on_s3_replaces_ours_and_refuses_other_objects(tmp_path, s3, kind):
    from targets import make_target, open_target, store_of

    target = make_target(kind, tmp_path, s3)
    with open_target(target, mode="w") as out:
        out.create_image("a", (2, 8, 8), "syx").write_sample(0, np.ones((8, 8), np.float32))
    with open_target(target, mode="w") as out:  # ours: replaced
        assert out.images() == []
        out.create_image("b", (8, 8), "yx")
    url, options = store_of(target)
    store = zarr.storage.FsspecStore.from_url(f"{url}/b/notes.txt", storage_options=options)
    zarr.core.sync.sync(store.set("", zarr.core.buffer.default_buffer_prototype().buffer.from_bytes(b"mine")))
    with pytest.raises(nw.NotOursError, match=r"b/notes\.txt"):
        open_target(target, mode="w")
    with open_target(target, mode="r") as out:
        assert out.images() == ["b"]


def test_a_reading_handle_follows_an_image_replaced_under_it(tmp_path):
    root = tmp_path / "o.zarr"
    _job(root, "model-a", 1.0)
    with nw.open_output(root, mode="r") as reader:  # e.g. `ngff-writer status --watch`
        image = reader["p"]
        assert image.progress().complete and image.fingerprint == "model-a"
        with nw.open_output(root, mode="a") as out:
            out.create_image("p", (3, 8, 8), "syx", fingerprint="model-b", overwrite=True)
        progress = image.progress()
        assert (progress.complete, progress.done, image.fingerprint) == (False, 0, "model-b")
