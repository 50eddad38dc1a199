"""What NGFF's strict schemas and stricter readers (iohub, vizarr) expect beyond the rules.

The NGFF JSON schemas are not on this machine (no network), so the fields they require on
top of ome-zarr-models' checks are asserted here directly, for every kind of image we write.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import ngff_writer as nw


def ome_attributes(root, name: str, version: str) -> dict:
    if version == "0.5":
        return json.loads((root / name / "zarr.json").read_text())["attributes"]["ome"]
    return json.loads((root / name / ".zattrs").read_text())


@pytest.mark.parametrize("version", ["0.4", "0.5"])
@pytest.mark.parametrize(("axes", "shape", "pyramid"), [
    ("syx", (2, 64, 64), None),            # one level
    ("sczyx", (2, 2, 9, 64, 64), "auto"),  # levels below, a z axis
    ("tyx", (3, 32, 32), 1),
])
def test_strict_fields_in_progress_and_final(tmp_path, version, axes, shape, pyramid):
    root = tmp_path / "o.zarr"
    with nw.open_output(root, ngff_version=version) as out:
        img = out.create_image("p", shape, axes, chunks=(1,) * (len(shape) - 2) + (16, 16),
                               pyramid=pyramid, units="micrometer")
        sample_shape = shape[1:] if "s" in axes else shape  # without s, one sample: the image
        for stage in ("in_progress", "final"):
            ome = ome_attributes(root, "p", version)
            (ms,) = ome["multiscales"]
            assert ms["name"] == "p"
            assert isinstance(ms["type"], str) and ms["type"]
            assert isinstance(ms["metadata"], dict) and ms["metadata"]
            assert all("type" in a for a in ms["axes"])
            assert all(a.get("unit") == "micrometer" for a in ms["axes"] if a["type"] == "space")
            rdefs = ome["omero"]["rdefs"]
            z = shape[axes.index("z")] if "z" in axes else 1
            assert rdefs["defaultT"] == 0 and 0 <= rdefs["defaultZ"] < z
            assert rdefs["defaultZ"] == z // 2
            for channel in ome["omero"]["channels"]:
                assert {"label", "color", "active", "window"} <= set(channel)
                assert set(channel["window"]) == {"min", "max", "start", "end"}
            if stage == "in_progress":
                for i in range(img.n_samples):
                    img.write_sample(i, np.random.default_rng(i).random(sample_shape, dtype=np.float32))
                assert img.finalize()
    doc = json.loads((root / "p" / ("zarr.json" if version == "0.5" else ".zattrs")).read_text())
    assert doc.get("attributes", doc)["ngff_writer"]["status"] == "complete"


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_metadata_is_checked_by_ome_zarr_models_before_it_is_written(version):
    from ngff_writer._ngff.metadata import checked

    good = {"labels": ["cells"]}
    assert checked({"ome": {"version": "0.5", **good}} if version == "0.5" else good, "labels", version)
    bad = {"multiscales": [{"axes": [{"name": "y"}], "datasets": []}]}
    with pytest.raises(nw.MetadataError, match="not valid NGFF"):
        checked({"ome": {"version": "0.5", **bad}} if version == "0.5" else bad, "image", version)
