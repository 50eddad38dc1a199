"""Editing a final image's display metadata: names, colors, windows, title; never its arrays."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import ome_zarr_models
import pytest
import zarr

import ngff_writer as nw

DATA = np.random.default_rng(0).random((2, 2, 32, 32)).astype(np.float32)  # s c y x


def files(root: Path, under: str = "") -> dict[str, bytes]:
    base = root / under
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def arrays(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(root).items() if not k.endswith((".json", ".zattrs", ".zgroup", ".zarray"))
            and "/ngff_writer/" not in f"/{k}"}


def ome(root: Path, version: str = "0.5") -> dict:
    if version == "0.5":
        return json.loads((root / "i" / "zarr.json").read_text())["attributes"]["ome"]
    return json.loads((root / "i" / ".zattrs").read_text())


@pytest.fixture(params=["0.5", "0.4"])
def final(request, tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root, ngff_version=request.param) as out:
        image = out.create_image("i", DATA.shape, "scyx", channel_names=["a", "b"], pyramid=2)
        for k, sample in enumerate(DATA):
            image.write_sample(k, sample)
    return root, request.param


def test_channels_and_title_are_edited_in_place_and_the_arrays_are_not_touched(final):
    root, version = final
    before = arrays(root)
    with nw.open_output(root, mode="a") as out:
        out["i"].set_channels(names=["nuclei", "membranes"], colors=["00FFFF", "#ff00ff"],
                              windows=[(0.1, 0.9), None])
        out["i"].set_title("Embryo 1")
        out["i"].set_channels(windows=[None, (0.0, 2.0)])  # the first window stays
    meta = ome(root, version)
    channels = meta["omero"]["channels"]
    assert [c["label"] for c in channels] == ["nuclei", "membranes"]
    assert [c["color"] for c in channels] == ["00FFFF", "FF00FF"]
    assert (channels[0]["window"]["start"], channels[0]["window"]["end"]) == (0.1, 0.9)
    assert (channels[1]["window"]["start"], channels[1]["window"]["end"]) == (0.0, 2.0)
    assert channels[1]["window"]["max"] >= 2.0  # the data range holds the display range
    assert meta["multiscales"][0]["name"] == "Embryo 1"
    assert arrays(root) == before
    ome_zarr_models.open_ome_zarr(zarr.open_group(root / "i", mode="r"))  # still valid
    with nw.open_output(root, mode="r") as out:
        np.testing.assert_array_equal(out["i"].array[:], DATA)


def test_edits_survive_finalize_repair_and_a_rerun_of_the_job(final):
    root, version = final
    with nw.open_output(root, mode="a") as out:
        out["i"].set_channels(names=["x", "y"])
    edited = ome(root, version)
    with nw.open_output(root, mode="a") as out:
        assert out["i"].finalize()
    # The metadata lost (a truncated document): repair writes it again from the
    # declaration and the checkpoint, edits included.
    document = root / "i" / ("zarr.json" if version == "0.5" else ".zattrs")
    document.write_text("{")
    assert nw.repair_output(root)
    # The job that made it, run again: it matches the declaration, which the edit left alone.
    with nw.open_output(root, mode="a") as out:
        image = out.create_image("i", DATA.shape, "scyx", channel_names=["a", "b"], pyramid=2, exist_ok=True)
        image.write_sample(0, DATA[0])
    assert ome(root, version) == edited


def test_an_image_being_written_is_refused_and_nothing_changes(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        image = out.create_image("i", DATA.shape, "scyx", pyramid=None)
        image.write_sample(0, DATA[0])
        image.flush()
        before = files(root)
        with pytest.raises(nw.ImageNotFinalError, match="not final"):
            image.set_channels(names=["p", "q"])
        with pytest.raises(nw.ImageNotFinalError):
            image.set_title("t")
        assert files(root) == before


@pytest.mark.parametrize(("edit", "match"), [
    ({"names": ["only one"]}, "expected 2 names"),
    ({"colors": ["red", "blue"]}, "hex"),
    ({"windows": [(1.0, 0.0), None]}, "start < end"),
    ({"windows": [(0.0, float("inf")), None]}, "finite"),
    ({"windows": [(0.0, 1.0)]}, "expected 2"),
])
def test_a_bad_edit_is_refused_before_anything_is_written(final, edit, match):
    root, _ = final
    before = files(root)
    with nw.open_output(root, mode="a") as out, pytest.raises(nw.SpecError, match=match):
        out["i"].set_channels(**edit)
    assert files(root) == before


def test_a_label_image_takes_a_title_but_no_channels(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        image = out.create_image("i", (1, 16, 16), "syx", pyramid=None)
        image.write_sample(0, np.ones((16, 16), np.float32))
        labels = out.create_labels(image, "cells")
        labels.write_block(np.ones((1, 16, 16), np.uint32), (0, 0, 0))
        with pytest.raises(nw.SpecError, match="label image"):
            labels.set_channels(names=["x"])
        labels.set_title("segmentation v2")
    document = json.loads((root / "i" / "labels" / "cells" / "zarr.json").read_text())
    assert document["attributes"]["ome"]["multiscales"][0]["name"] == "segmentation v2"


def test_the_set_command(final):
    root, version = final
    before = arrays(root)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ngff_writer.cli", *args], capture_output=True,
                              text=True, timeout=120)

    done = cli("set", str(root), "--names", "nuclei,membranes", "--colors", "00FFFF,FF00FF",
               "--window", "0.2,0.8", "--window", "-", "--title", "Embryo 1")
    assert done.returncode == 0, done.stderr
    assert "i: metadata set" in done.stdout
    meta = ome(root, version)
    assert [c["label"] for c in meta["omero"]["channels"]] == ["nuclei", "membranes"]
    assert meta["omero"]["channels"][0]["window"]["start"] == 0.2
    assert meta["multiscales"][0]["name"] == "Embryo 1"
    assert arrays(root) == before
    assert cli("set", str(root), "--colors", "nope,FF00FF").returncode == 2  # a usage error
    assert cli("set", str(root)).returncode == 2  # nothing to set
    assert cli("set", str(root), "--image", "other", "--title", "t").returncode == 2
    assert cli("set", str(root), "--window", "1,x", "--window", "-").returncode == 2
    assert ome(root, version) == meta
