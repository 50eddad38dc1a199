"""The command line: the demo export a user runs first, and status."""

from __future__ import annotations

import json
import subprocess
import sys

import zarr
from ome_zarr_models import open_ome_zarr


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ngff_writer.cli", *args],
                          capture_output=True, text=True, check=False)


def test_demo_writes_complete_valid_images(tmp_path):
    out = tmp_path / "demo"
    result = run_cli("demo", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "napari" in result.stdout
    status = json.loads(run_cli("status", str(out), "--json").stdout)
    assert {im["path"] for im in status["images"]} == {"embryo_3d", "tissue_2d", "timelapse"}
    assert all(im["complete"] and im["done"] == im["total"] for im in status["images"])
    levels = {im["path"]: im["levels"] for im in status["images"]}
    assert levels == {"embryo_3d": 2, "tissue_2d": 2, "timelapse": 1}
    table = run_cli("status", str(out)).stdout
    assert "levels" in table and "complete" in table
    for im in status["images"]:
        open_ome_zarr(zarr.open_group(out / im["path"], mode="r"))  # raises if invalid

    again = run_cli("demo", str(out), "--quiet")
    assert again.returncode == 1 and "already holds data" in again.stderr
    assert run_cli("demo", str(out), "--quiet", "--overwrite").returncode == 0
