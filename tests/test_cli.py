"""The command line, run through the installed console script on real outputs."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import zarr
from ome_zarr_models import open_ome_zarr
from stores import FaultyStore
from zarr.storage import LocalStore

import ngff_writer as nw
from ngff_writer.cli import EXIT_NO_IMAGE, EXIT_PROBLEM, EXIT_STORE, EXIT_USAGE

SCRIPT = str(Path(sys.executable).with_name("ngff-writer"))


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the console script a user runs (not a function of the package)."""
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env={**os.environ, "COLUMNS": "160"})


def status_json(path: Path | str) -> dict:
    result = cli("status", str(path), "--json")
    assert result.returncode in (0, EXIT_PROBLEM), result.stderr
    return json.loads(result.stdout)


def write(root: Path, name: str, n: int, done: int, *, pyramid: object = None, version: str = "0.5",
          chunks: tuple[int, ...] = (1, 16, 16)) -> np.ndarray:
    data = np.random.default_rng(len(name) + done).random((n, 32, 32), dtype=np.float32)
    with nw.open_output(root, mode="a") as out:
        image = out.create_image(name, (n, 32, 32), "syx", chunks=chunks, pyramid=pyramid,
                                 ngff_version=version)
        for i in range(done):
            image.write_sample(i, data[i])
    return data


@pytest.fixture
def careamics_layout(tmp_path) -> Path:
    """What CAREamics users get: a plain directory of single-image stores, at any depth."""
    from test_careamics import run

    out, _ = run(tmp_path, "SYX", tiled=True)
    return out


# ---- demo ------------------------------------------------------------------------------------------
def test_demo_writes_complete_valid_images(tmp_path):
    out = tmp_path / "demo"
    result = cli("demo", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "napari" in result.stdout
    status = status_json(out)
    assert {im["path"] for im in status["images"]} == {"embryo_3d", "tissue_2d", "timelapse"}
    assert all(im["complete"] and im["done"] == im["total"] for im in status["images"])
    levels = {im["path"]: im["levels"] for im in status["images"]}
    assert levels == {"embryo_3d": 2, "tissue_2d": 2, "timelapse": 1}
    table = cli("status", str(out)).stdout
    assert "levels" in table and "complete" in table
    for im in status["images"]:
        open_ome_zarr(zarr.open_group(out / im["path"], mode="r"))  # raises if invalid
    assert cli("validate", str(out)).returncode == 0

    again = cli("demo", str(out), "--quiet")
    assert again.returncode == EXIT_USAGE and "already holds data" in again.stderr
    assert "Traceback" not in again.stderr
    assert cli("demo", str(out), "--quiet", "--overwrite").returncode == 0


# ---- status anywhere ---------------------------------------------------------------------------
def test_status_of_an_output_an_image_a_nested_image_and_a_single_image_store(tmp_path):
    root = tmp_path / "o.zarr"
    write(root, "done", 2, 2)
    write(root, "run1/half", 4, 2)
    single = tmp_path / "x.ome.zarr"
    write(single, "", 3, 3)

    assert status_json(root)["images"] == [
        {"path": "done", "complete": True, "done": 2, "total": 2,
         "blocks_done": 8, "blocks_total": 8, "levels": 1},
        {"path": "run1/half", "complete": False, "done": 2, "total": 4,
         "blocks_done": 8, "blocks_total": 16, "levels": 1},
    ]
    # One image, the path napari is given: the same answer, relative to it.
    assert status_json(root / "run1" / "half")["images"] == [
        {"path": ".", "complete": False, "done": 2, "total": 4,
         "blocks_done": 8, "blocks_total": 16, "levels": 1}]
    assert status_json(root / "run1")["images"] == [
        {"path": "half", "complete": False, "done": 2, "total": 4,
         "blocks_done": 8, "blocks_total": 16, "levels": 1}]
    assert status_json(single)["images"] == [
        {"path": ".", "complete": True, "done": 3, "total": 3,
         "blocks_done": 12, "blocks_total": 12, "levels": 1}]
    # A directory holding all of them, at any depth.
    assert [(im["path"], im["complete"]) for im in status_json(tmp_path)["images"]] == [
        ("o.zarr/done", True), ("o.zarr/run1/half", False), ("x.ome.zarr", True)]


def test_status_of_the_careamics_layout_from_the_command_line_and_from_python(careamics_layout):
    expected = ["array_1.ome.zarr", "exp_raw_0.ome.zarr", "sub/img_001.ome.zarr"]
    images = status_json(careamics_layout)["images"]
    assert [im["path"] for im in images] == expected
    assert all(im["complete"] and im["done"] == im["total"] > 0 for im in images)
    assert "sub/img_001.ome.zarr" in cli("status", str(careamics_layout)).stdout
    # The same discovery from Python: any directory opens read-only.
    with nw.open_output(careamics_layout, mode="r") as out:
        assert out.images() == expected
        assert [p.complete for p in out.status()] == [True] * 3
    assert cli("validate", str(careamics_layout)).returncode == 0


def test_watch_follows_a_writer_in_another_process_and_exits_when_complete(tmp_path):
    root = tmp_path / "o.zarr"
    write(root, "p", 12, 0)
    writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time, numpy as np, ngff_writer as nw
        with nw.open_output({str(root)!r}, mode="a", commit_interval=0.05) as out:
            for i in range(12):
                out["p"].write_sample(i, np.full((32, 32), i, np.float32))
                out["p"].flush()
                time.sleep(0.15)
        """)])
    try:
        watch = cli("status", str(root), "--watch", "--interval", "0.1", timeout=60)
    finally:
        assert writer.wait(60) == 0
    assert watch.returncode == 0, watch.stderr
    assert "1 image(s) complete" in watch.stdout
    assert status_json(root)["images"][0]["complete"]
    # Not a terminal: a plain line per change, in order, the last one complete.
    lines = [line for line in watch.stdout.splitlines() if line.startswith("p: ")]
    assert len(lines) >= 3 and lines[-1] == "p: 48/48 blocks, complete"
    counts = [int(line.split()[1].split("/")[0]) for line in lines]
    assert counts == sorted(counts) and len(set(lines)) == len(lines)  # each a change


def test_watch_warns_once_when_nothing_moves_and_can_watch_on(tmp_path):
    root = tmp_path / "o.zarr"
    write(root, "p", 4, 1)  # abandoned: nobody writes the rest
    try:
        cli("status", str(root), "--watch", "--interval", "0.05", "--stall", "0.01", timeout=4)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    else:
        raise AssertionError("--watch returned on an image that cannot complete")
    assert err.count("no block stored for") == 1 and "finalize" in err
    assert out.splitlines() == ["p: 4/16 blocks, in progress"]
    # --forever keeps watching a complete output (until Ctrl-C); the default exits.
    write(root, "q", 1, 1)
    with pytest.raises(subprocess.TimeoutExpired):
        cli("status", str(root / "q"), "--watch", "--forever", "--interval", "0.05", timeout=3)
    assert cli("status", str(root / "q"), "--watch", "--interval", "0.05", timeout=30).returncode == 0


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["validate"], ["info"], ["finalize"],
                                     ["repair"], ["set", "--title", "t"], ["view", "--no-browser"]])
def test_every_command_gives_the_documented_exit_codes(tmp_path, command):
    # 2: no such path; 3: no OME-Zarr image there (an empty or plain folder, a file). The
    # table in the guide says so.
    (tmp_path / "empty").mkdir()
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("not an image")
    (tmp_path / "file.txt").write_text("not an image")
    name, *options = command
    got = {p: cli(name, str(tmp_path / p), *options, timeout=60).returncode
           for p in ("missing", "empty", "plain", "file.txt")}
    assert got == {"missing": EXIT_USAGE, "empty": EXIT_NO_IMAGE, "plain": EXIT_NO_IMAGE,
                   "file.txt": EXIT_NO_IMAGE}
    assert (tmp_path / "plain" / "notes.txt").read_text() == "not an image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "file.txt", "plain"]
    guide = (Path(__file__).parents[1] / "docs" / "guide" / "cli.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", guide, re.M))  # the one table
    assert "does not exist" in rows[str(EXIT_USAGE)] and "a file" in rows[str(EXIT_NO_IMAGE)]
    assert "cannot be reached" in rows[str(EXIT_STORE)] and "invalid" in rows[str(EXIT_PROBLEM)]


# ---- validate ----------------------------------------------------------------------------------
def test_validate_passes_whole_outputs_and_names_what_is_wrong(tmp_path):
    root = tmp_path / "o.zarr"
    write(root, "a", 2, 2, pyramid=2)
    write(root, "v04", 2, 2, version="0.4")
    ok = cli("validate", str(root))
    assert ok.returncode == 0, ok.stdout
    assert "2 image(s): 2 valid" in ok.stdout

    write(root, "half", 4, 1)
    bad = cli("validate", str(root), "--json")
    assert bad.returncode == EXIT_PROBLEM
    report = {im["path"]: im for im in json.loads(bad.stdout)["images"]}
    assert report["half"]["problems"] == ["incomplete: 1/4 samples, 4/16 blocks stored"]
    assert report["a"]["ok"] and report["v04"]["ok"]
    assert cli("validate", str(root), "--partial").returncode == 0  # a running export

    # Metadata that breaks the NGFF model: a scale of the wrong length.
    doc = root / "a" / "zarr.json"
    meta = json.loads(doc.read_text())
    meta["attributes"]["ome"]["multiscales"][0]["datasets"][1]["coordinateTransformations"][0][
        "scale"] = [1.0, 2.0]
    doc.write_text(json.dumps(meta))
    broken = cli("validate", str(root / "a"))
    assert broken.returncode == EXIT_PROBLEM
    assert "not valid NGFF 0.5" in broken.stdout and "scale" in broken.stdout

    # An array that no longer matches its declaration.
    shutil.rmtree(root / "v04" / "0")
    zarr.create_array(LocalStore(root / "v04"), name="0", shape=(2, 32, 30), chunks=(1, 16, 16),
                      dtype="float32", zarr_format=2)
    arrays = cli("validate", str(root / "v04"))
    assert arrays.returncode == EXIT_PROBLEM
    assert "level 0: shape (2, 32, 30), declared (2, 32, 32)" in arrays.stdout

    # Bookkeeping a complete image must not keep.
    stray = root / "half" / "ngff_writer" / "fragments" / "0" / "0.0.0.npz"
    for i in range(1, 4):
        with nw.open_output(root, mode="a") as out:
            out["half"].write_sample(i, np.zeros((32, 32), np.float32))
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by a writer that died")
    left = cli("validate", str(root / "half"))
    assert left.returncode == EXIT_PROBLEM and "ngff-writer repair" in left.stdout
    assert cli("repair", str(root)).returncode == 0
    assert cli("validate", str(root / "half")).returncode == 0


# ---- info --------------------------------------------------------------------------------------
def test_info_describes_levels_codecs_sizes_and_channels(tmp_path):
    root = tmp_path / "o.zarr"
    write(root, "p", 4, 4, pyramid=2)
    with nw.open_output(root, mode="a") as out:
        out.create_image("big", (2, 64, 64), "syx", chunks=(1, 16, 16), shards=(1, 32, 32),
                         pyramid=None).write_sample(0, np.ones((64, 64), np.float32))
    result = cli("info", str(root), "--json")
    assert result.returncode == 0, result.stderr
    images = {im["path"]: im for im in json.loads(result.stdout)["images"]}
    p = images["p"]
    assert p["status"] == "complete" and p["written_by"] == "ngff-writer" and p["axes"] == ["s", "y", "x"]
    assert [(lv["path"], lv["shape"], lv["chunks"]) for lv in p["levels"]] == [
        ("0", [4, 32, 32], [1, 16, 16]), ("1", [4, 16, 16], [1, 16, 16])]
    assert p["levels"][0]["codecs"] == ["blosc:zstd-3:shuffle"]
    on_disk = sum(f.stat().st_size for f in (root / "p" / "0").rglob("*") if f.is_file())
    assert p["levels"][0]["stored_bytes"] == on_disk
    assert p["levels"][0]["ratio"] == pytest.approx(4 * 32 * 32 * 4 / on_disk)
    assert p["channels"][0]["window"]["end"] > p["channels"][0]["window"]["start"]
    big = images["big"]
    assert big["status"] == "in_progress" and big["levels"][0]["shards"] == [1, 32, 32]
    assert big["levels"][0]["chunks"] == [1, 16, 16]
    table = cli("info", str(root)).stdout
    assert "blosc:zstd-3:shuffle" in table and "1x32x32" in table and "in progress" in table


def test_info_shows_pixel_sizes_units_and_placement(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("roi", (2, 32, 32), "syx", scale={"y": 0.65, "x": 0.5}, units="micrometer",
                         translation={"y": 100.0}, pyramid=2)
        out.create_image("plain", (2, 32, 32), "syx", pyramid=None)
    table = cli("info", str(root)).stdout
    assert "pixel size: s 1, y 0.65 micrometer, x 0.5 micrometer; first pixel at y 100" in table
    assert "pixel size: s 1, y 1, x 1\n" in table.replace("\r", "")  # no unit, not placed
    report = json.loads(cli("info", str(root), "--json").stdout)
    levels = {im["path"]: im["levels"] for im in report["images"]}
    assert levels["roi"][1]["translation"] == [0.0, 100.325, 0.25]


# ---- finalize ----------------------------------------------------------------------------------
def test_finalize_finishes_what_a_failed_writer_left_and_lists_the_incomplete(tmp_path):
    root = tmp_path / "o.zarr"
    data = write(root, "p", 4, 0, pyramid=2)
    write(root, "half", 4, 2)
    # The writer stores level 0 whole, then its level-1 stores fail and it gives up:
    # level 0 is recorded, level 1 and the final metadata are missing.
    FaultyStore.fail("p/1/", OSError(errno.EIO, "I/O error"))
    try:
        out = nw.open_output(FaultyStore(LocalStore(root)), mode="a")
        for i in range(4):  # each write takes its sample, then tells of failures since the last
            with contextlib.suppress(nw.StoreError):
                out["p"].write_sample(i, data[i])
        with pytest.raises(nw.StoreError):  # the failures not told yet, or finalizing's
            out.close()
        with contextlib.suppress(nw.StoreError):  # closed either way; the failure was raised
            out.close()
    finally:
        FaultyStore.heal()
    assert cli("validate", str(root / "p")).returncode == EXIT_PROBLEM

    result = cli("finalize", str(root))
    assert result.returncode == EXIT_PROBLEM  # "half" misses samples 2 and 3
    assert "p: finalized" in result.stdout
    assert "half: incomplete, 2/4 samples, 8/16 blocks; samples missing: 2, 3" in result.stdout
    level1 = zarr.open_array(root / "p" / "1")[:]
    want = data.reshape(4, 16, 2, 16, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(level1, want, rtol=1e-6)
    assert cli("validate", str(root / "p")).returncode == 0

    again = cli("finalize", str(root / "p"))  # idempotent
    assert again.returncode == 0 and ".: already final" in again.stdout


# ---- errors ------------------------------------------------------------------------------------
def test_errors_are_one_line_with_a_documented_exit_code(tmp_path, s3):
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "notes.txt").write_text("not zarr")
    zarr.create_array(LocalStore(tmp_path / "arr.zarr"), shape=(4,), dtype="uint8")
    zarr.open_group(LocalStore(tmp_path / "grp.zarr"), mode="w").create_group("x")
    cases = [
        (("status", str(tmp_path / "missing")), EXIT_USAGE, "no such path"),
        (("validate", str(plain)), EXIT_NO_IMAGE, "holds no OME-Zarr image"),
        (("info", str(tmp_path / "arr.zarr")), EXIT_NO_IMAGE, "holds no OME-Zarr image"),
        (("finalize", str(tmp_path / "grp.zarr")), EXIT_NO_IMAGE, "holds no OME-Zarr image"),
        (("status", "s3://no-such-bucket/out.zarr", "-o", json.dumps(
            {**s3.storage_options, "config_kwargs": {"retries": {"max_attempts": 1}}})),
         EXIT_NO_IMAGE, "holds no OME-Zarr image"),
        (("status", "s3://b/out.zarr", "-o", json.dumps(
            {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}, "key": "k", "secret": "s",
             "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}})),
         EXIT_STORE, ""),
        (("status", str(plain), "-o", "{not json"), EXIT_USAGE, "not JSON"),
        (("status",), EXIT_USAGE, "Missing argument"),
        (("frobnicate", str(plain)), EXIT_USAGE, "No such command"),
    ]
    for args, code, message in cases:
        result = cli(*args)
        assert result.returncode == code, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr, args
    assert len(cli("status", str(tmp_path / "missing")).stderr.strip().splitlines()) == 1


def test_an_ome_zarr_written_by_another_tool_is_described_and_checked(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.writer import write_image

    path = tmp_path / "other.ome.zarr"
    group = zarr.open_group(parse_url(path, mode="w").store, mode="w")
    write_image(np.random.default_rng(0).random((64, 64)).astype(np.float32), group, axes="yx")
    status = status_json(path)
    assert status["images"] == [{"path": ".", "note": "written by another tool"}]
    info = json.loads(cli("info", str(path), "--json").stdout)["images"][0]
    assert info["written_by"] == "another tool" and info["levels"][0]["shape"] == [64, 64]
    assert len(info["levels"]) > 1
    valid = cli("validate", str(path))
    assert valid.returncode == 0, valid.stdout
    assert "written by another tool" in valid.stdout
    untouched = cli("finalize", str(path))  # nothing of ours to finish
    assert untouched.returncode == 0 and "written by another tool left as they are" in untouched.stdout


def test_help_shows_examples_for_every_command():
    for command in ("demo", "status", "validate", "info", "finalize", "repair"):
        result = cli(command, "--help")
        assert result.returncode == 0
        assert "Example" in result.stdout, command
    top = cli("--help")
    assert "Exit codes" in top.stdout and "finalize" in top.stdout
    completion = subprocess.run([SCRIPT], capture_output=True, text=True, check=False,
                                env={**os.environ, "_NGFF_WRITER_COMPLETE": "bash_source"})
    assert "complete" in completion.stdout and "ngff-writer" in completion.stdout
