"""The examples run as documented."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import ngff_writer as nw

EXAMPLES = Path(__file__).parents[1] / "examples"


def run_example(name: str, *args: str) -> int:
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        module = runpy.run_path(str(EXAMPLES / name))
        return module["main"](list(args))
    finally:
        sys.argv = argv


def test_predict_and_resume(tmp_path):
    out = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError, match="simulated crash after 5"):
        run_example("predict_and_resume.py", str(out), "--crash-after", "5")
    with nw.open_output(out, mode="r") as o:
        assert [(p.name, p.done, p.complete) for p in o.status()] == [
            ("fish_01", 5, False), ("fish_02", 0, False)]
    assert run_example("predict_and_resume.py", str(out)) == 0
    with nw.open_output(out, mode="r") as o:
        assert all(p.complete for p in o.status())
    files = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert run_example("predict_and_resume.py", str(out)) == 0  # the same job again: nothing to do
    assert run_example("predict_and_resume.py", str(out), "--model", "v2") == 2  # refused
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == files
    stored = zarr.open_array(out / "fish_01" / "0", mode="r")
    raw = np.random.default_rng(3).normal(size=(16, 128, 128)).astype(np.float32)
    np.testing.assert_array_equal(stored[3, 0], raw)
    # The pyramid survived the crash: level 1 holds 2x2 means of every sample.
    level = zarr.open_array(out / "fish_01" / "1", mode="r")[:]
    full = zarr.open_array(out / "fish_01" / "0", mode="r")[:].astype(np.float64)
    want = full.reshape(*full.shape[:3], 64, 2, 64, 2).mean(axis=(4, 6))
    np.testing.assert_allclose(level, want, rtol=1e-5, atol=1e-6)
    # The retrained model, asked to replace: every image anew, with its predictions.
    assert run_example("predict_and_resume.py", str(out), "--model", "v2", "--overwrite") == 0
    np.testing.assert_array_equal(zarr.open_array(out / "fish_01" / "0", mode="r")[3, 0], raw * 3)


def test_tiled_prediction(tmp_path):
    for extra in ([], ["--blend"]):
        out = tmp_path / f"tiles{len(extra)}.zarr"
        assert run_example("tiled_prediction.py", str(out), *extra) == 0
        with nw.open_output(out, mode="r") as o:
            assert o["prediction"].progress().complete
        stored = zarr.open_array(out / "prediction" / "0", mode="r")[:]
        expected = np.tanh(np.random.default_rng(0).normal(size=(2, 1, 700, 900)).astype(np.float32))
        if extra:  # blending identical overlaps gives the same values up to rounding
            np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(stored, expected)
        levels = [zarr.open_array(out / "prediction" / str(k), mode="r").shape[-2:] for k in range(3)]
        assert levels == [(700, 900), (350, 450), (175, 225)]


def test_tiled_prediction_crashes_and_resumes(tmp_path):
    import subprocess

    out = tmp_path / "tiles.zarr"
    crashed = subprocess.run([sys.executable, str(EXAMPLES / "tiled_prediction.py"), str(out),
                              "--crash-after", "20"], capture_output=True, text=True, check=False)
    assert crashed.returncode == 3, crashed.stderr
    with nw.open_output(out, mode="r") as o:
        assert not o["prediction"].progress().complete
    assert run_example("tiled_prediction.py", str(out), "--resume") == 0
    with nw.open_output(out, mode="r") as o:
        assert o["prediction"].progress().complete
    stored = zarr.open_array(out / "prediction" / "0", mode="r")[:]
    np.testing.assert_array_equal(
        stored, np.tanh(np.random.default_rng(0).normal(size=(2, 1, 700, 900)).astype(np.float32)))


def test_dask_cluster_fails_then_resumes_computing_only_what_is_missing(tmp_path):
    import subprocess

    pytest.importorskip("distributed")
    out, calls = tmp_path / "out.zarr", tmp_path / "calls.txt"
    command = [sys.executable, str(EXAMPLES / "dask_cluster.py"), str(out), "--calls", str(calls)]
    failed = subprocess.run([*command, "--fail-from", "5"], capture_output=True, text=True, check=False)
    assert failed.returncode == 1 and "run it again" in failed.stderr
    with nw.open_output(out, mode="r") as o:
        pending = set(o["embryo"].progress().pending)
    assert {5, 6, 7} <= pending
    calls.unlink(missing_ok=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "8/8 samples, complete" in done.stdout
    assert set(map(int, calls.read_text().split())) == pending  # nothing stored was computed again
    stored = zarr.open_array(out / "embryo" / "0", mode="r")[:]
    np.testing.assert_array_equal(
        stored, np.tanh(np.random.default_rng(0).normal(size=(8, 2, 16, 256, 256)).astype(np.float32)))


def test_careamics_swap(tmp_path):
    from careamics_standin import blend, stitch

    module = runpy.run_path(str(EXAMPLES / "careamics_swap.py"))
    stream = module["prediction_stream"](tmp_path / "inputs")
    for extra in ([], ["--blend"]):
        out = tmp_path / f"predictions{len(extra)}"
        assert run_example("careamics_swap.py", str(out), *extra) == 0
        assert sorted(p.relative_to(out) for p in out.rglob("*.ome.zarr")) == [
            Path("day1/embryo.ome.zarr"), Path("day2/embryo.ome.zarr")]
        for idx, day in enumerate(("day1", "day2")):
            path = out / day / "embryo.ome.zarr"
            with nw.open_output(path, mode="r") as o:
                assert o[""].progress().complete
            stored = zarr.open_array(path / "0", mode="r")[:]  # t c y x: 3 time points, 2 channels
            preds = [p for p in stream if p.region_spec["data_idx"] == idx]
            if extra:
                np.testing.assert_allclose(stored, blend(preds, (32, 32)), rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(stored, stitch(preds))


def test_careamist_to_ome_zarr(tmp_path):
    pytest.importorskip("careamics", reason="needs the careamics extra")
    out = tmp_path / "out"
    assert run_example("careamist_to_ome_zarr.py", str(out)) == 0
    with nw.open_output(out, mode="r") as o:
        status = o.status()
    assert [(p.name, p.done, p.complete) for p in status] == [
        ("array_0.ome.zarr", 3, True), ("array_1.ome.zarr", 3, True)]
    assert zarr.open_array(out / "array_1.ome.zarr" / "0", mode="r").shape == (3, 96, 128)


def test_segment_to_labels(tmp_path):
    out = tmp_path / "seg.zarr"
    assert run_example("segment_to_labels.py", str(out)) == 0
    with nw.open_output(out, mode="r") as o:
        assert [(p.name, p.complete) for p in o.status()] == [("cells", True), ("cells/labels/nuclei", True)]
    labels = zarr.open_array(out / "cells/labels/nuclei/0", mode="r")[:]
    image = zarr.open_array(out / "cells/0", mode="r")[:]
    assert labels.dtype == np.uint16 and set(np.unique(labels)) <= set(range(26)) and labels.max() > 20
    # Nuclei are where the image is bright, background where it is dark.
    assert image[labels > 0].mean() > 3 * image[labels == 0].mean()
    for level in ("1", "2"):  # the mode pyramid invents no label value
        reduced = zarr.open_array(out / "cells/labels/nuclei" / level)[:]
        assert set(np.unique(reduced)) <= set(np.unique(labels))


def test_plate_screen_from_two_processes(tmp_path):
    import subprocess

    out = tmp_path / "plate.zarr"
    done = subprocess.run([sys.executable, str(EXAMPLES / "plate_screen.py"), str(out), "--workers", "2"],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "6/6 wells, 12/12 fields complete" in done.stdout
    with nw.open_output(out, mode="r") as o:
        field = o.plate("screen").field("B", "2", 1)
        assert field.complete and field.array.shape == (2, 256, 256)


def test_crop_of_a_volume(tmp_path):
    out = tmp_path / "out.zarr"
    assert run_example("crop_of_a_volume.py", str(out)) == 0
    module = runpy.run_path(str(EXAMPLES / "crop_of_a_volume.py"))
    raw = module["volume"]()
    roi = zarr.open_array(out / "roi" / "0", mode="r")[:]
    np.testing.assert_array_equal(roi, module["denoise"](raw[module["ROI"]]))
    with nw.open_output(out, mode="r") as o:
        assert o["roi"].is_final and o["volume"].is_final
        np.testing.assert_array_equal(o["volume"].array[:], module["denoised_lazily"](raw).compute())
    datasets = zarr.open_group(out / "roi", mode="r").attrs["ome"]["multiscales"][0]["datasets"]
    assert datasets[0]["coordinateTransformations"][1]["translation"] == [32.0, 64.0, 96.0]
    files = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert run_example("crop_of_a_volume.py", str(out)) == 0  # again: nothing changes
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == files


def test_large_export_is_sharded(tmp_path, capsys):
    out = tmp_path / "large.zarr"
    assert run_example("large_export.py", str(out), "--samples", "8") == 0  # 1 GiB: sharded
    printed = capsys.readouterr().out
    assert "files per level: [8, 2, 1, 1]" in printed  # a shard per sample, then 4, 16, 64 samples
    with nw.open_output(out, mode="r") as o:
        assert o["pred"].complete and o["pred"].spec.shard_samples == (4, 16, 64)
        np.testing.assert_array_equal(o["pred"].level(0)[5], runpy.run_path(
            str(EXAMPLES / "large_export.py"))["predict"](5))
    assert run_example("large_export.py", str(out), "--samples", "8") == 0  # re-run: nothing to do
