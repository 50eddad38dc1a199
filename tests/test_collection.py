"""Collections: many images in one store (bioformats2raw layout), from several writers."""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import zarr
from layout_workers import series_data, write_series
from procs import run_children

import ngff_writer as nw

OME = "{http://www.openmicroscopy.org/Schemas/OME/2016-06}"


def listed_series(root) -> list[str]:
    """The OME group's series list, where the NGFF version keeps it."""
    attrs = zarr.open_group(root / "OME", mode="r").attrs.asdict()
    return attrs["ome"]["series"] if "ome" in attrs else attrs["series"]


@pytest.fixture(params=["0.5", "0.4"])
def collection(request, tmp_path):
    """Six series declared in interleaved order by two spawned writers at once."""
    root = tmp_path / "run.ome.zarr"
    with nw.open_output(root, ngff_version=request.param):
        pass
    barrier = mp.get_context("spawn").Barrier(2)
    jobs = [(write_series, (str(root), [5, 0, 2], barrier)), (write_series, (str(root), [1, 4, 3], barrier))]
    assert run_children(*jobs) == [0, 0]
    return root, request.param


def test_every_series_is_listed_with_its_title_and_size(collection):
    root, _ = collection
    assert listed_series(root) == [str(i) for i in range(6)]
    xml = ET.fromstring((root / "OME/METADATA.ome.xml").read_bytes())
    images = xml.findall(f"{OME}Image")
    assert [(i.get("ID"), i.get("Name")) for i in images] == [(f"Image:{k}", f"source_{k}.tif")
                                                            for k in range(6)]
    pixels = images[3].find(f"{OME}Pixels")
    assert (pixels.get("SizeX"), pixels.get("SizeY"), pixels.get("SizeT"), pixels.get("Type")) == (
        "40", "48", "2", "float")
    with nw.open_output(root, mode="r") as out:
        assert out.images() == [str(i) for i in range(6)]
        for i in range(6):
            np.testing.assert_array_equal(out[str(i)].array[:], series_data(i))
            assert out[str(i)].progress().title == f"source_{i}.tif"


def test_ome_zarr_models_validate_the_collection(collection):
    root, version = collection
    module = importlib.import_module(f"ome_zarr_models.v0{version[-1]}.bioformats2raw")
    model = module.BioFormats2Raw.from_zarr(zarr.open_group(root, mode="r"))
    assert sorted(model.images) == [str(i) for i in range(6)]


def test_the_ome_group_passes_the_ngff_schema(collection):
    # NGFF 0.5 keeps the series list under "ome" with the version (its ome.schema); 0.4 at
    # the top of the OME group's .zattrs.
    root, version = collection
    yaozarrs = pytest.importorskip("yaozarrs")
    if version == "0.5":
        document = json.loads((root / "OME" / "zarr.json").read_text())
        assert "series" not in document["attributes"]
        assert document["attributes"]["ome"] == {"version": "0.5", "series": [str(i) for i in range(6)]}
        yaozarrs.validate_ome_json((root / "OME" / "zarr.json").read_text())
        yaozarrs.validate_ome_json((root / "zarr.json").read_text())
    else:
        assert json.loads((root / "OME" / ".zattrs").read_text())["series"] == [str(i) for i in range(6)]


def test_a_05_collection_with_its_list_at_the_top_is_read_and_mended(tmp_path):
    # Written by an earlier ngff-writer: the list beside "ome", not in it. Its series are
    # still listed, and the next declaration moves the list where NGFF 0.5 keeps it.
    root = tmp_path / "old.ome.zarr"
    with nw.open_output(root) as out:
        for i in range(2):
            out.create_series(i, (4, 4), "yx", pyramid=None).write_sample(0, np.ones((4, 4), np.float32))
    path = root / "OME" / "zarr.json"
    document = json.loads(path.read_text())
    ome = document["attributes"]["ome"]
    document["attributes"]["series"] = ome.pop("series")
    path.write_text(json.dumps(document))
    with nw.open_output(root, mode="a") as out:
        out.create_series(2, (4, 4), "yx", pyramid=None).write_sample(0, np.ones((4, 4), np.float32))
    attributes = json.loads(path.read_text())["attributes"]
    assert "series" not in attributes and attributes["ome"]["series"] == ["0", "1", "2"]
    with nw.open_output(root, mode="r") as out:
        assert out.images() == ["0", "1", "2"]


def test_napari_opens_every_series(collection):
    root, _ = collection
    npe2 = pytest.importorskip("npe2")
    components = pytest.importorskip("napari.components")
    npe2.PluginManager.instance().discover()
    layers = components.ViewerModel().open(str(root), plugin="napari-ome-zarr")
    assert [layer.name for layer in layers] == [f"source_{i}.tif: {i}" for i in range(6)]  # title: series
    np.testing.assert_array_equal(np.asarray(layers[4].data[0]), series_data(4))


def test_status_lists_series_with_their_titles(collection, capsys):
    from ngff_writer.cli import main

    root, _ = collection
    assert main(["status", str(root), "--json"]) == 0
    images = json.loads(capsys.readouterr().out)["images"]
    assert [(i["path"], i["title"], i["complete"]) for i in images] == [
        (str(k), f"source_{k}.tif", True) for k in range(6)]


def test_what_collections_refuse(tmp_path):
    with nw.open_output(tmp_path / "c.zarr") as out:
        with pytest.raises(nw.SpecError, match="index"):
            out.create_series(-1, (8, 8), "yx")
        with pytest.raises(nw.SpecError, match="NGFF version"):
            out.create_series(0, (8, 8), "yx", ngff_version="0.4")
        with pytest.raises(nw.SpecError, match="title"):
            out.create_series(0, (8, 8), "yx", title="")
        out.create_series(0, (8, 8), "yx")
        with pytest.raises(nw.DuplicateImageError):
            out.create_series(0, (8, 8), "yx")
        assert out.create_series(0, (8, 8), "yx", exist_ok=True).name == "0"
    with nw.open_output(tmp_path / "one.ome.zarr") as out:
        out.create_image("", (8, 8), "yx")
        with pytest.raises(nw.DuplicateImageError, match="root is an image"):
            out.create_series(0, (8, 8), "yx")


def test_declaring_many_series_rewrites_the_list_a_logarithmic_number_of_times(tmp_path, monkeypatch):
    # The list and OME-XML grow with the collection: rewriting them at every declaration
    # would make declaring N series cost O(N^2). They are rewritten when this handle's new
    # series reach the list's length (and at close), so a handful of times for 300.
    import ngff_writer._ngff.collection

    calls = []
    real = ngff_writer._ngff.collection.register_series
    monkeypatch.setattr(ngff_writer._ngff.collection, "register_series",
                        lambda store, version: calls.append(1) or real(store, version))
    root = tmp_path / "many.ome.zarr"
    with nw.open_output(root) as out:
        for i in range(300):
            out.create_series(i, (4, 4), "yx", pyramid=None)
            listed = listed_series(root)
            assert len(listed) >= (i + 1) // 2  # never more than half behind
        assert len(calls) <= 10
    assert listed_series(root) == [str(i) for i in range(300)]
    names = [i.get("ID") for i in ET.fromstring((root / "OME/METADATA.ome.xml").read_bytes())]
    assert names == [f"Image:{i}" for i in range(300)]
