"""Label images: declared beside an image (or alone), written like images, read by viewers.

Every output is validated with ome-zarr-models, read with ome-zarr-py's Reader and
opened in napari (``ViewerModel`` + napari-ome-zarr) as an image with a Labels layer.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import ome_zarr.io
import ome_zarr.reader
import ome_zarr_models
import pytest
import zarr
from layout_workers import add_label
from procs import run_children

import ngff_writer as nw
from ngff_writer.tiling import tiles

SHAPE = (2, 2, 64, 80)  # s c y x


def segment(image: np.ndarray) -> np.ndarray:
    """A toy segmentation of one sample: blobs by thresholding, thin lines of another class."""
    mask = np.zeros(image.shape[-2:], np.uint32)
    mask[image[0] > 0.7] = 1
    mask[::7, :] = 2  # one-pixel lines: what a mean-free pyramid must not invent values for
    return mask


def mode_reference(x: np.ndarray) -> np.ndarray:
    """Most frequent value of each 2x2 block of a (y, x) plane, ties to the first pixel met."""
    out = np.empty(((x.shape[0] + 1) // 2, (x.shape[1] + 1) // 2), x.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = list(x[2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel())
            out[i, j] = max(block, key=lambda v, b=block: (b.count(v), -b.index(v)))
    return out


def write_image_with_labels(root: Path, version: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    raw = rng.random(SHAPE, dtype=np.float32)
    seg = np.stack([segment(raw[s]) for s in range(SHAPE[0])])
    with nw.open_output(root, mode="w", ngff_version=version) as out:
        image = out.create_image("raw", SHAPE, "scyx", chunks=(1, 1, 32, 32), pyramid=3,
                                 scale={"y": 0.5, "x": 0.5}, units="micrometer")
        labels = out.create_labels("raw", "cells", colors={1: "FF000080", 2: (0, 255, 0)},
                                   properties={1: {"class": "cell"}, 2: {"class": "membrane"}})
        for s in range(SHAPE[0]):
            image.write_sample(s, raw[s])
            # Labels in tiles (crop mode), as a tiled segmentation model sends them.
            for t in tiles(SHAPE[2:], (32, 32), (8, 8)):
                box = tuple(slice(a, a + n) for a, n in zip(t.start, t.size, strict=True))
                labels.write_tile(s, seg[(s, *box)], crop_start=t.crop_start, crop_size=t.crop_size,
                                  stitch_start=t.stitch_start)
        assert [p.complete for p in out.status()] == [True, True]
        assert out.images() == ["raw", "raw/labels/cells"]
    return raw, seg


@pytest.fixture(params=["0.5", "0.4"])
def written(request, tmp_path):
    root = tmp_path / "out.zarr"
    raw, seg = write_image_with_labels(root, request.param)
    return root, request.param, raw, seg


def test_labels_are_stored_on_the_image_grid_with_a_mode_pyramid(written):
    root, version, _, seg = written
    label = zarr.open_group(root / "raw/labels/cells", mode="r")
    levels = [label[str(k)] for k in range(3)]
    assert [a.dtype for a in levels] == [np.dtype("uint32")] * 3
    assert [a.shape for a in levels] == [(2, 64, 80), (2, 32, 40), (2, 16, 20)]
    np.testing.assert_array_equal(levels[0][:], seg)
    for s in range(2):
        np.testing.assert_array_equal(levels[1][s], mode_reference(seg[s]))
        np.testing.assert_array_equal(levels[2][s], mode_reference(mode_reference(seg[s])))
    # Only values the segmentation holds, at every level (a mean would make 1.5 -> 2, 0.5 -> 0...).
    assert set(np.unique(levels[2][:])) <= {0, 1, 2}
    attrs = dict(label.attrs)
    ome = attrs["ome"] if version == "0.5" else attrs
    assert "omero" not in ome
    assert ome["image-label"]["colors"] == [{"label-value": 1, "rgba": [255, 0, 0, 128]},
                                            {"label-value": 2, "rgba": [0, 255, 0, 255]}]
    assert ome["image-label"]["properties"][1] == {"label-value": 2, "class": "membrane"}
    assert ome["image-label"]["source"] == {"image": "../../"}
    assert ome["multiscales"][0]["type"] == "mode"
    image_scales = [d["coordinateTransformations"] for d in
                    (lambda a: (a["ome"] if version == "0.5" else a))(
                        dict(zarr.open_group(root / "raw", mode="r").attrs))["multiscales"][0]["datasets"]]
    label_scales = [d["coordinateTransformations"] for d in ome["multiscales"][0]["datasets"]]
    # Same pixels in space: the image's scale without its channel entry.
    assert [[t[0]["scale"][:1] + t[0]["scale"][2:]] for t in image_scales] == [[t[0]["scale"]]
                                                                             for t in label_scales]


def test_ome_zarr_models_validate_the_image_with_its_labels(written):
    root, version, _, _ = written
    model = ome_zarr_models.open_ome_zarr(zarr.open_group(root / "raw", mode="r"))
    cls = ome_zarr_models.v05.Image if version == "0.5" else ome_zarr_models.v04.Image
    assert isinstance(model, cls)
    # The model checks every label has as many levels as the image and an integer dtype.
    assert model.labels is not None
    listed = model.labels.attributes.ome.labels if version == "0.5" else model.labels.attributes.labels
    assert listed == ["cells"]
    label_cls = (ome_zarr_models.v05.ImageLabel if version == "0.5" else ome_zarr_models.v04.ImageLabel)
    assert isinstance(ome_zarr_models.open_ome_zarr(zarr.open_group(root / "raw/labels/cells", mode="r")),
                      label_cls)


def test_ome_zarr_reader_finds_the_labels(written):
    root, *_ = written
    nodes = list(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(root / "raw")))())
    kinds = {Path(n.zarr.path).name: {type(s).__name__ for s in n.specs} for n in nodes}
    assert "Labels" in kinds["labels"] and "Label" in kinds["cells"]
    label_node = next(n for n in nodes if Path(n.zarr.path).name == "cells")
    assert [tuple(d.shape) for d in label_node.data] == [(2, 64, 80), (2, 32, 40), (2, 16, 20)]


def test_napari_opens_the_image_with_a_labels_layer(written):
    root, _, _, seg = written
    npe2 = pytest.importorskip("npe2")
    components = pytest.importorskip("napari.components")
    npe2.PluginManager.instance().discover()
    viewer = components.ViewerModel()
    layers = viewer.open(str(root / "raw"), plugin="napari-ome-zarr")
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds.count("Image") == 2 and kinds.count("Labels") == 1
    labels = next(layer for layer in layers if type(layer).__name__ == "Labels")
    assert labels.multiscale and len(labels.data) == 3
    np.testing.assert_array_equal(np.asarray(labels.data[0]), seg)
    np.testing.assert_array_equal(np.asarray(labels.data[1][1]), mode_reference(seg[1]))
    image = next(layer for layer in layers if type(layer).__name__ == "Image")
    assert list(labels.scale) == pytest.approx(list(image.scale))


def test_cli_lists_and_validates_labels(written, capsys):
    root, *_ = written
    from ngff_writer.cli import main

    assert main(["status", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [(i["path"], i["complete"]) for i in report["images"]] == [("raw", True),
                                                                      ("raw/labels/cells", True)]
    assert main(["validate", str(root)]) == 0


def test_labels_declared_by_several_writers_at_once_are_all_listed(tmp_path):
    root = tmp_path / "out.zarr"
    with nw.open_output(root) as out:
        out.create_image("raw", (3, 32, 32), "syx", chunks=(1, 16, 16))
    names = [f"seg{k}" for k in range(4)]
    barrier = mp.get_context("spawn").Barrier(len(names))
    assert run_children(*[(add_label, (str(root), n, barrier)) for n in names]) == [0] * len(names)
    group = dict(zarr.open_group(root / "raw/labels", mode="r").attrs)
    assert group["ome"]["labels"] == names  # none lost to another writer's update
    with nw.open_output(root, mode="r") as out:
        for n in names:
            assert out[f"raw/labels/{n}"].complete
            np.testing.assert_array_equal(out[f"raw/labels/{n}"].array[:], np.full((3, 32, 32), len(n)))


def test_a_standalone_label_image(tmp_path):
    with nw.open_output(tmp_path / "out.zarr") as out:
        seg = out.create_labels(None, "masks", "uint8", shape=(1, 64, 64), axes="zyx",
                                chunks=(1, 32, 32), pyramid=2, pyramid_method="nearest")
        data = np.zeros((1, 64, 64), np.uint8)
        data[0, 5:40, 5:9] = 3
        seg.write_sample(0, data)
        assert seg.complete
    model = ome_zarr_models.open_ome_zarr(zarr.open_group(tmp_path / "out.zarr/masks", mode="r"))
    assert isinstance(model, ome_zarr_models.v05.ImageLabel)
    attrs = dict(zarr.open_group(tmp_path / "out.zarr/masks", mode="r").attrs)["ome"]
    assert "source" not in attrs["image-label"] and attrs["multiscales"][0]["type"] == "nearest"
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "out.zarr/masks/1")[:], data[:, ::2, ::2])


def test_what_labels_refuse(tmp_path):
    with nw.open_output(tmp_path / "out.zarr") as out:
        out.create_image("raw", (2, 32, 32), "syx", chunks=(1, 16, 16))
        with pytest.raises(nw.UnsupportedDtypeError, match="integers"):
            out.create_labels("raw", "seg", "float32")
        with pytest.raises(nw.UnsupportedDtypeError):
            out.create_labels("raw", "seg", "bool")
        with pytest.raises(nw.SpecError, match="blend"):
            out.create_labels(None, "seg", shape=(32, 32), axes="yx",
                              blend={"tile_size": (16, 16), "overlap": (4, 4)})
        with pytest.raises(nw.SpecError, match="pyramid method"):
            out.create_labels("raw", "seg", pyramid_method="mean")
        with pytest.raises(nw.SpecError, match="grid"):
            out.create_labels("raw", "seg", chunks=(1, 8, 8))
        with pytest.raises(nw.SpecError, match="same label values"):
            out.create_labels("raw", "seg", colors={1: "FF0000"}, properties={2: {"a": 1}})
        with pytest.raises(nw.SpecError, match="hex color"):
            out.create_labels("raw", "seg", colors={1: "red"})
        with pytest.raises(nw.UnknownImageError):
            out.create_labels("nothing", "seg")
        with pytest.raises(nw.DuplicateImageError, match="create_labels"):
            out.create_image("raw/labels/seg", (2, 32, 32), "syx")
        seg = out.create_labels("raw", "seg")
        with pytest.raises(nw.DuplicateImageError):
            out.create_labels("raw", "seg")
        assert out.create_labels("raw", "seg", exist_ok=True).name == seg.name
        with pytest.raises(nw.SpecMismatchError):
            out.create_labels("raw", "seg", "uint8", exist_ok=True)
        with pytest.raises(nw.LossyCastError):
            seg.write_sample(0, np.full((32, 32), 0.5))
        # Nothing refused was written: the one label is the one declared.
        assert out.images() == ["raw", "raw/labels/seg"]
