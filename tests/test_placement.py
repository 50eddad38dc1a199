"""Placement: ``translation=`` puts an image in a larger space, on every pyramid level.

A level reduced by a mean (or max, or mode) stands for blocks of the level above, so its
first pixel's centre is the centre of the first block: half a block less half a pixel of
the level above further on. Readers nobody here wrote must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import ngff_writer as nw
from ngff_writer.careamics import OmeZarrWriteStrategy
from ngff_writer.reading import describe_image, validate_image

SCALE = {"z": 2.0, "y": 0.5, "x": 0.25}
PLACE = {"z": 10.0, "y": 100.0, "x": -50.0}


def datasets(path: Path) -> list[dict]:
    attributes = json.loads((path / "zarr.json").read_text())["attributes"]
    return attributes["ome"]["multiscales"][0]["datasets"]


def transforms(dataset: dict) -> dict[str, list[float]]:
    return {t["type"]: t[t["type"]] for t in dataset["coordinateTransformations"]}


def centre_of_first_pixel(level: int, axis: str, factor: int = 2) -> float:
    """From level 0's pixel centres: the mean of the first factor**level of them."""
    if axis == "z":
        return PLACE["z"]
    n = factor**level
    return PLACE[axis] + SCALE[axis] * (n - 1) / 2


@pytest.fixture
def placed(tmp_path):
    path = tmp_path / "o.zarr"
    data = np.random.default_rng(0).random((2, 4, 32, 32)).astype(np.float32)
    with nw.open_output(path) as out:
        image = out.create_image("roi", data.shape, "szyx", chunks=(1, 4, 8, 8), scale=SCALE,
                                 translation=PLACE, pyramid=3, units="micrometer")
        for i, sample in enumerate(data):
            image.write_sample(i, sample)
        labels = out.create_labels(image, "cells", dtype="uint8")
        labels.write_block(np.ones((2, 4, 32, 32), np.uint8), (0,) * 4)
    return path, data


def test_every_level_is_placed_where_its_pixels_are(placed):
    path, data = placed
    found = [transforms(d) for d in datasets(path / "roi")]
    assert len(found) == 3
    for k, t in enumerate(found):
        assert t["scale"] == pytest.approx([1.0, SCALE["z"], SCALE["y"] * 2**k, SCALE["x"] * 2**k])
        want = [0.0] + [centre_of_first_pixel(k, a) for a in "zyx"]
        assert t["translation"] == pytest.approx(want)
    # Only the metadata moved: the data is the data.
    np.testing.assert_array_equal(zarr.open_array(path / "roi" / "0", mode="r")[:], data)
    # Labels take their image's grid, translation included.
    labels = [transforms(d) for d in datasets(path / "roi" / "labels" / "cells")]
    assert [t["translation"] for t in labels] == [t["translation"] for t in found]


def test_validators_and_readers_agree(placed):
    path, _ = placed
    import ome_zarr.io
    import ome_zarr.reader
    import ome_zarr_models

    yaozarrs = pytest.importorskip("yaozarrs")
    model = ome_zarr_models.open_ome_zarr(zarr.open_group(path / "roi", mode="r"))
    got = [d.coordinateTransformations[1].translation
           for d in model.ome_attributes.multiscales[0].datasets]
    assert got[0] == pytest.approx([0.0, *PLACE.values()])
    yaozarrs.validate_ome_json((path / "roi" / "zarr.json").read_text())
    node = next(iter(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(path / "roi")))()))
    read = [{t["type"]: t[t["type"]] for t in level}
            for level in node.metadata["coordinateTransformations"]]
    assert read[2]["translation"] == pytest.approx([0.0] + [centre_of_first_pixel(2, a) for a in "zyx"])
    # ngff-writer's own report, and `info`.
    with nw.open_output(path, mode="r") as out:
        info = describe_image(out.store, "roi")
        assert info.levels[1].translation == pytest.approx(
            [0.0] + [centre_of_first_pixel(1, a) for a in "zyx"])
        assert validate_image(out.store, "roi", out["roi"]).ok


# ---- other readers: ngff-zarr, iohub, bioio ----------------------------------------------------
@pytest.fixture
def placed_tczyx(tmp_path):
    """The same placement on a t c z y x image (one sample per time point), the axes iohub reads."""
    path = tmp_path / "t.zarr"
    data = np.random.default_rng(1).random((2, 1, 4, 32, 32)).astype(np.float32)
    with nw.open_output(path) as out:
        image = out.create_image("roi", data.shape, "tczyx", sample_axes="t", chunks=(1, 1, 4, 8, 8),
                                 scale=SCALE, translation=PLACE, pyramid=3, units="micrometer")
        for t, sample in enumerate(data):
            image.write_sample(t, sample)
    return path / "roi", data


def _placement(level: int) -> tuple[list[float], list[float]]:
    """Scale and translation of ``level`` of ``placed_tczyx``'s image, t c z y x."""
    scale = [1.0, 1.0, SCALE["z"], SCALE["y"] * 2**level, SCALE["x"] * 2**level]
    return scale, [0.0, 0.0, *(centre_of_first_pixel(level, a) for a in "zyx")]


def test_ngff_zarr_reads_the_placement(placed):
    ngff_zarr = pytest.importorskip("ngff_zarr")
    path, data = placed
    multiscales = ngff_zarr.from_ngff_zarr(str(path / "roi"))
    assert len(multiscales.images) == 3
    for k, image in enumerate(multiscales.images):
        assert image.translation == pytest.approx({"z": PLACE["z"], **{a: centre_of_first_pixel(k, a)
                                                                        for a in "yx"}, "s": 0.0})
        assert {a: image.scale[a] for a in "zyx"} == pytest.approx(
            {"z": SCALE["z"], "y": SCALE["y"] * 2**k, "x": SCALE["x"] * 2**k})
    np.testing.assert_array_equal(np.asarray(multiscales.images[0].data), data)


IOHUB = """
import json, sys
from iohub.ngff import open_ome_zarr
with open_ome_zarr(sys.argv[1], layout="fov", mode="r") as pos:
    print(json.dumps([[pos.get_effective_scale(str(k)), pos.get_effective_translation(str(k))]
                      for k in range(3)]))
"""


def test_iohub_reads_the_placement(placed_tczyx):
    pytest.importorskip("iohub")
    path, _ = placed_tczyx
    # In a process of its own: iohub may set zarr's codec pipeline for the whole process.
    done = subprocess.run([sys.executable, "-c", IOHUB, str(path)], capture_output=True, text=True,
                          check=True, timeout=300)
    for k, (scale, translation) in enumerate(json.loads(done.stdout)):
        want_scale, want_translation = _placement(k)
        assert scale == pytest.approx(want_scale)
        assert translation == pytest.approx(want_translation)


def test_bioio_reads_the_placement(placed_tczyx):
    """bioio has no coordinates for a translation: its per-level scale, and the translation in
    the metadata it hands over."""
    bioio = pytest.importorskip("bioio")
    reader = pytest.importorskip("bioio_ome_zarr")
    path, data = placed_tczyx
    image = bioio.BioImage(str(path), reader=reader.Reader)
    assert len(image.resolution_levels) == 3
    multiscales = image.metadata.attributes["ome"]["multiscales"][0]
    for k in range(3):
        image.set_resolution_level(k)
        want_scale, want_translation = _placement(k)
        assert (image.scale.Z, image.scale.Y, image.scale.X) == pytest.approx(tuple(want_scale[2:]))
        found = {t["type"]: t[t["type"]] for t in multiscales["datasets"][k]["coordinateTransformations"]}
        assert found["translation"] == pytest.approx(want_translation)
    image.set_resolution_level(0)
    np.testing.assert_array_equal(image.get_image_data("TCZYX"), data)


def _napari_layers(path: Path) -> list:
    pytest.importorskip("napari_ome_zarr")
    npe2 = pytest.importorskip("npe2")
    components = pytest.importorskip("napari.components")
    npe2.PluginManager.instance().discover()
    layers = components.ViewerModel().open(str(path), plugin="napari-ome-zarr")
    assert len(layers) == 2  # the image and its labels
    return layers


def test_napari_scales_the_layers(placed):
    path, _ = placed
    for layer in _napari_layers(path / "roi"):
        assert list(layer.scale)[-3:] == pytest.approx(list(SCALE.values()))


@pytest.mark.xfail(strict=True, reason="napari-ome-zarr 0.11's reader gives a multiscale image layer its "
                   "scale only (its reader before 0.11 passed the translation on as translate); "
                   "strict, so that this says when it places layers again")
def test_napari_places_the_layers(placed):
    path, _ = placed
    for layer in _napari_layers(path / "roi"):
        assert list(layer.translate)[-3:] == pytest.approx(list(PLACE.values()))


def test_nearest_keeps_the_first_pixel_in_place_and_no_translation_writes_none_on_level_0(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        out.create_image("near", (16, 16), "yx", chunks=(8, 8), translation={"y": 3.0}, pyramid={
            "levels": 2, "method": "nearest"})
        out.create_image("plain", (16, 16), "yx", chunks=(8, 8), pyramid=2)
    near = [transforms(d) for d in datasets(tmp_path / "o.zarr" / "near")]
    assert [t["translation"] for t in near] == [[3.0, 0.0], [3.0, 0.0]]
    plain = [transforms(d) for d in datasets(tmp_path / "o.zarr" / "plain")]
    assert "translation" not in plain[0]
    assert plain[1]["translation"] == [0.5, 0.5]  # the mean of pixels 0 and 1


def test_plate_fields_are_placed_alike_or_each_apart(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        plate = out.create_plate("p", 1, 1, (8, 8), "yx", fields=2, pyramid=None,
                                 translation={1: {"x": 80.0}})
        same = out.create_plate("q", 1, 1, (8, 8), "yx", fields=2, pyramid=None, translation={"y": 5.0})
        with pytest.raises(nw.SpecError, match="fields are 0-1"):
            out.create_plate("r", 1, 1, (8, 8), "yx", fields=2, translation={2: {"x": 1.0}})
        paths = [p.field("A", 1, f).name for p in (plate, same) for f in range(2)]
    found = [transforms(datasets(tmp_path / "o.zarr" / p)[0]).get("translation") for p in paths]
    assert found == [None, [0.0, 80.0], [5.0, 0.0], [5.0, 0.0]]
    assert not (tmp_path / "o.zarr" / "r").exists()


@pytest.mark.parametrize(("translation", "match"), [
    ({"c": 1.0}, "not s or c"),
    ({"y": float("nan")}, "finite"),
    ((1.0, 2.0), "expected 3 values"),
    ({"q": 1.0}, "not in the image axes"),
    ({"y": "up"}, "numbers"),
])
def test_a_bad_translation_is_refused_and_nothing_is_written(tmp_path, translation, match):
    with nw.open_output(tmp_path / "o.zarr") as out:
        with pytest.raises(nw.SpecError, match=match):
            out.create_image("i", (2, 8, 8), "cyx", translation=translation)
        assert out.images() == []


def test_the_careamics_strategy_places_its_images(tmp_path):
    from careamics_standin import Source, predictions

    arr = np.random.default_rng(2).random((2, 24, 20)).astype(np.float32)
    strategy = OmeZarrWriteStrategy(translation={"y": 12.0, "x": 6.0}, pyramid=None)
    for batch in [predictions(Source(arr, "SYX", "array", data_idx=0, c_out=1, additional_metadata={}))]:
        strategy.write_batch(tmp_path, batch)
    assert strategy.finalize() == []
    [path] = list(tmp_path.rglob("*.ome.zarr"))
    assert transforms(datasets(path)[0])["translation"] == [0.0, 12.0, 6.0]
    # A strategy without one fingerprints as before (a job re-run after upgrading continues).
    assert "translation" not in OmeZarrWriteStrategy()._settings()
