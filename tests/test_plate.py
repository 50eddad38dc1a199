"""HCS plates: every field an image, written by several processes, read by the ecosystem."""

from __future__ import annotations

import json
import multiprocessing as mp

import numpy as np
import ome_zarr.io
import ome_zarr.reader
import ome_zarr_models
import pytest
import zarr
from layout_workers import PLATE, field_data, write_plate_fields
from procs import run_children

import ngff_writer as nw


@pytest.fixture(params=["0.5", "0.4"])
def plate_root(request, tmp_path):
    """A plate of 3 wells x 2 fields, declared and written at once by 2 spawned processes."""
    root = tmp_path / "plate.zarr"
    with nw.open_output(root, ngff_version=request.param):
        pass
    barrier = mp.get_context("spawn").Barrier(2)
    assert run_children(*[(write_plate_fields, (str(root), r, 2, barrier)) for r in range(2)]) == [0, 0]
    return root, request.param


def test_two_writers_complete_the_plate(plate_root):
    root, _ = plate_root
    with nw.open_output(root, mode="r") as out:
        plate = out.plate("plate")
        progress = plate.progress()
        assert (progress.wells_done, progress.wells_total, progress.fields_done, progress.fields_total) == (
            3, 3, 6, 6)
        assert progress.complete
        for r, c in PLATE["wells"]:
            for f in range(PLATE["fields"]):
                np.testing.assert_array_equal(plate.field(r, c, f).array[:], field_data(r, c, f))
        with pytest.raises(nw.UnknownImageError):
            plate.field("B", "1")  # a plate position that is no well


def test_plate_and_wells_validate_with_ome_zarr_models(plate_root):
    root, version = plate_root
    models = ome_zarr_models.v05 if version == "0.5" else ome_zarr_models.v04
    hcs = ome_zarr_models.open_ome_zarr(zarr.open_group(root / "plate", mode="r"))
    assert isinstance(hcs, models.HCS)
    plate = hcs.attributes.ome.plate if version == "0.5" else hcs.attributes.plate
    assert [w.path for w in plate.wells] == ["A/1", "A/3", "B/2"]
    assert [r.name for r in plate.rows] == ["A", "B"] and [c.name for c in plate.columns] == ["1", "2", "3"]
    well = ome_zarr_models.open_ome_zarr(zarr.open_group(root / "plate/A/3", mode="r"))
    assert isinstance(well, models.Well)
    field = ome_zarr_models.open_ome_zarr(zarr.open_group(root / "plate/B/2/1", mode="r"))
    assert isinstance(field, models.Image)


def test_ome_zarr_reader_reads_the_plate(plate_root):
    root, _ = plate_root
    nodes = list(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(root / "plate")))())
    plate = nodes[0]
    assert any(isinstance(s, ome_zarr.reader.Plate) for s in plate.specs)
    # The reader stitches the plate: 2 rows x 3 columns of one field each.
    stitched = np.asarray(plate.data[0])
    assert stitched.shape == (2, 2 * 40, 3 * 48)
    np.testing.assert_array_equal(stitched[:, 40:, 48:96], field_data("B", "2", 0))


def test_napari_opens_the_plate_and_a_field(plate_root):
    root, _ = plate_root
    npe2 = pytest.importorskip("npe2")
    components = pytest.importorskip("napari.components")
    npe2.PluginManager.instance().discover()
    viewer = components.ViewerModel()
    layers = viewer.open(str(root / "plate"), plugin="napari-ome-zarr")
    assert len(layers) == 2 and tuple(layers[0].data[0].shape) == (80, 144)  # one layer per channel
    viewer = components.ViewerModel()
    layers = viewer.open(str(root / "plate/A/3/1"), plugin="napari-ome-zarr")
    np.testing.assert_array_equal(np.asarray(layers[1].data[0]), field_data("A", "3", 1)[1])


def test_status_shows_the_plate_and_its_wells(tmp_path, capsys):
    from ngff_writer.cli import main

    root = tmp_path / "p.zarr"
    with nw.open_output(root) as out:
        plate = out.create_plate("screen/plate1", ["B", "C"], [3, 4], (16, 16), "yx", "uint8", fields=2,
                                 acquisitions=[{"id": 0, "name": "day 1"}, {"id": 1, "name": "day 2"}])
        plate.field("B", "3", 0).write_sample(0, np.ones((16, 16), np.uint8))
        plate.field("B", "3", 1).write_sample(0, np.ones((16, 16), np.uint8))
        plate.field("C", "4", 1).write_sample(0, np.ones((16, 16), np.uint8))
    assert main(["status", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plates"] == [{"path": "screen/plate1", "complete": False, "wells_done": 1,
                                 "wells_total": 4, "fields_done": 3, "fields_total": 8}]
    well = dict(zarr.open_group(root / "screen/plate1/C/4", mode="r").attrs)["ome"]["well"]
    assert well["images"] == [{"path": "0", "acquisition": 0}, {"path": "1", "acquisition": 1}]
    assert main(["status", str(root)]) == 0
    assert "screen/plate1" in capsys.readouterr().out


def test_what_plates_refuse(tmp_path):
    with nw.open_output(tmp_path / "p.zarr") as out:
        with pytest.raises(nw.SpecError, match="letters and digits"):
            out.create_plate("p", ["A", "B-1"], 2, (8, 8), "yx")
        with pytest.raises(nw.SpecError, match="wells"):
            out.create_plate("p", 2, 2, (8, 8), "yx", wells=[("C", "1")])
        with pytest.raises(nw.SpecError, match="fields"):
            out.create_plate("p", 2, 2, (8, 8), "yx", fields=0)
        with pytest.raises(nw.SpecError, match="multiple of the acquisitions"):
            out.create_plate("p", 2, 2, (8, 8), "yx", fields=3, acquisitions=2)
        with pytest.raises(nw.InvalidAxesError):
            out.create_plate("p", 2, 2, (8, 8), "zyx")
        assert out.images() == []  # nothing declared by a refused plate
        out.create_plate("p", 2, 2, (8, 8), "yx")
        with pytest.raises(nw.DuplicateImageError):
            out.create_plate("p", 2, 2, (8, 8), "yx")
        assert len(out.create_plate("p", 2, 2, (8, 8), "yx", exist_ok=True).images()) == 4
        with pytest.raises(nw.SpecMismatchError):
            out.create_plate("p", 2, 3, (8, 8), "yx", exist_ok=True)
        with pytest.raises(nw.SpecMismatchError):
            out.create_plate("p", 2, 2, (8, 8), "yx", "uint8", exist_ok=True)
        with pytest.raises(nw.UnknownImageError):
            out.plate("nothing")
