"""The default layout: shards for large images (issue "Exports that fit HPC filesystems").

What the default picks (``ngff_writer._declare.shards``), a real export of a large image
in one file per sample and level, every entry point getting the same default, images of
older versions continued as stored, and every reader we test reading the sharded layout
with the data equal at every level.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import zarr
from layouts import large_default

import ngff_writer as nw
from ngff_writer._declare.shards import SHARD_MAX_BYTES, SHARD_MIN_IMAGE_BYTES, auto_shards
from ngff_writer.dask import to_image

SCRIPT = str(Path(sys.executable).with_name("ngff-writer"))


# ---- what the default picks ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "axes", "want"),
    [
        # 16 samples of 64 MiB: one shard per sample (level 0 is 1 GiB).
        ((16, 1, 16, 1024, 1024), "sczyx", (1, 1, 16, 1024, 1024)),
        # A 1 GiB sample: halved along its axis of most chunks until 128 MiB.
        ((2, 1, 64, 2048, 2048), "sczyx", (1, 1, 64, 512, 1024)),
        # A sample of one chunk: nothing to gather, one file per chunk.
        ((4096, 512, 512), "syx", None),
        # Below 1 GiB: chunks only.
        ((4, 1, 32, 1024, 1024), "sczyx", None),
    ],
)
def test_the_default_shards_large_images_one_sample_at_a_time(tmp_path, shape, axes, want):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", shape, axes)  # declared only: nothing is written
        assert img.spec.shards == want
        arr = zarr.open_array(tmp_path / "o.zarr" / "p" / "0", mode="r")
        assert arr.shards == (None if want is None else img.spec.stored(want))
    if want is not None:
        assert np.prod(want) * 4 <= SHARD_MAX_BYTES
        assert all(s % c == 0 for s, c in zip(want, img.spec.chunks, strict=True))
        assert want[axes.index("s")] == 1  # a shard never holds two samples


def test_ngff_04_and_an_explicit_none_keep_chunks_and_bad_values_are_refused(tmp_path):
    big = (16, 1, 16, 1024, 1024)
    with nw.open_output(tmp_path / "v4.zarr", ngff_version="0.4") as out:
        assert out.create_image("p", big, "sczyx").spec.shards is None
    with nw.open_output(tmp_path / "v5.zarr") as out:
        assert out.create_image("p", big, "sczyx", shards=None).spec.shards is None
        with pytest.raises(nw.InvalidChunksError, match="'auto', None or a shape"):
            out.create_image("q", big, "sczyx", shards="big")
        assert out.images() == ["p"]


def test_info_says_why_an_image_is_or_is_not_sharded(tmp_path):
    big = (16, 1, 16, 1024, 1024)
    with nw.open_output(tmp_path / "o.zarr") as out:
        out.create_image("large", big, "sczyx")
        out.create_image("small", (2, 64, 64), "syx")
    with nw.open_output(tmp_path / "v4.zarr", ngff_version="0.4") as out:
        out.create_image("large", big, "sczyx")
    shown = subprocess.run([SCRIPT, "info", "--json", str(tmp_path / "o.zarr")], capture_output=True,
                           text=True, check=True, timeout=120)
    found = {i["path"]: i["layout"] for i in json.loads(shown.stdout)["images"]}
    assert found["large"].startswith("sharded: 64 MiB shards")
    assert found["small"].startswith("one file per chunk: below 1 GiB")
    shown = subprocess.run([SCRIPT, "info", str(tmp_path / "v4.zarr")], capture_output=True, text=True,
                           check=True, timeout=120)
    assert "NGFF 0.4 (zarr v2) has no shards" in " ".join(shown.stdout.split())


def test_an_image_stored_unsharded_by_an_older_default_is_continued_as_stored(tmp_path):
    big = (16, 1, 16, 1024, 1024)
    with nw.open_output(tmp_path / "o.zarr") as out:
        out.create_image("p", big, "sczyx", shards=None, fingerprint="job")  # as 0.x stored it
    with nw.open_output(tmp_path / "o.zarr", mode="a") as out:
        img = out.create_image("p", big, "sczyx", exist_ok=True, fingerprint="job")
        assert img.spec.shards is None
        # A layout the user asks for is the user's: another one is refused, as before.
        with pytest.raises(nw.SpecMismatchError, match="shards"):
            out.create_image("p", big, "sczyx", shards=(1, 1, 16, 1024, 1024), exist_ok=True)


# ---- a large image, written -------------------------------------------------------------------
def _sample(i: int) -> np.ndarray:
    """A 64 MiB sample that compresses well (the test writes 1 GiB) but is not all one value."""
    plane = (np.arange(1024 * 1024, dtype=np.float32).reshape(1024, 1024) % 251) + i
    return np.broadcast_to(plane, (1, 16, 1024, 1024))


def test_a_large_image_is_one_file_per_sample_and_fewer_below(tmp_path):
    shape = (16, 1, 16, 1024, 1024)
    assert np.prod(shape) * 4 >= SHARD_MIN_IMAGE_BYTES
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", shape, "sczyx")
        for i in range(shape[0]):
            img.write_sample(i, _sample(i))
    with nw.open_output(root, mode="r") as out:
        img = out["p"]
        assert img.is_final and img.n_levels == 3  # 1024 -> 512 -> 256 pixels: one 4 MiB chunk a plane
    # Level 0: one shard per sample. Below, a sample is 4x smaller a level: a shard of level
    # 1 gathers 4 samples, of level 2 16, so that each is as large as level 0's.
    assert img.spec.shard_samples == (4, 16)
    for k, gather in enumerate((1, 4, 16)):
        files = [p for p in (root / "p" / str(k)).rglob("*") if p.is_file() and p.name != "zarr.json"]
        assert len(files) == shape[0] // gather, (k, len(files))
        arr = zarr.open_array(root / "p" / str(k), mode="r")
        assert arr.shards is not None and arr.shards[0] == gather
        assert np.prod(arr.shards) * 4 == 64 << 20
    level0 = zarr.open_array(root / "p" / "0", mode="r")
    level2 = zarr.open_array(root / "p" / "2", mode="r")
    for i in (0, 7, 15):
        np.testing.assert_array_equal(level0[i], _sample(i))
        want = sum(_sample(i)[0, :, a::4, b::4].astype(np.float64) for a in range(4) for b in range(4)) / 16
        np.testing.assert_allclose(level2[i, 0], want, rtol=1e-6)
    # No temporary file of a shard is left behind.
    assert not [p for p in root.rglob("*") if ".partial" in p.name]


# ---- every entry point gets the same default --------------------------------------------------
def test_to_image_shards_as_the_dask_blocks(tmp_path):
    array = da.zeros((8, 32, 1024, 1024), chunks=(1, 32, 1024, 1024), dtype="float32")  # 1 GiB
    to_image(array, tmp_path / "o.zarr", "p", "szyx", compute=False)
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        spec = out["p"].spec
    assert spec.shards == (1, 32, 1024, 1024)  # each task stores its own file
    assert spec.shards == auto_shards("szyx", array.shape, "s", spec.chunks, 4, "0.5")


def test_write_image_gets_the_same_default(tmp_path):
    array = np.broadcast_to(np.float32(0), (8, 32, 1024, 1024))  # 1 GiB of fill: nothing stored
    nw.write_image(tmp_path / "o.zarr", array, "szyx", name="p", progress=False)
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        assert out["p"].spec.shards == (1, 32, 1024, 1024)
        assert out["p"].is_final


# ---- readers --------------------------------------------------------------------------------
SHAPE = (3, 2, 4, 48, 40)  # t c z y x, one sample per time point
CHUNKS = (1, 1, 2, 16, 16)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A finished image in the large images' default layout, and its levels as written."""
    root = tmp_path_factory.mktemp("readers") / "o.zarr"
    rng = np.random.default_rng(3)
    with nw.open_output(root) as out, large_default():
        img = out.create_image("img", SHAPE, "tczyx", sample_axes="t", chunks=CHUNKS)
        for t in range(SHAPE[0]):
            img.write_sample(t, rng.random(SHAPE[1:], dtype=np.float32))
    with nw.open_output(root, mode="r") as out:
        levels = [out["img"].level(k)[...] for k in range(out["img"].n_levels)]
    # The 't' axis holds the samples here: level 0 has a shard per time point, level 1's
    # gather 2 (one whole, one clipped at the end), level 2's all 3.
    assert len(levels) == 3
    assert zarr.open_array(root / "img" / "0").shards == (1, 2, 4, 48, 48)
    assert [zarr.open_array(root / "img" / str(k)).shards[0] for k in (1, 2)] == [2, 3]
    return root / "img", levels


def test_zarr_and_ome_zarr_read_the_sharded_default(sharded):
    import ome_zarr.io
    import ome_zarr.reader

    path, levels = sharded
    for k, want in enumerate(levels):
        np.testing.assert_array_equal(zarr.open_array(path / str(k), mode="r")[...], want)
    node = next(iter(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(path)))()))
    assert len(node.data) == len(levels)
    for got, want in zip(node.data, levels, strict=True):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_napari_reads_the_sharded_default(sharded):
    pytest.importorskip("napari_ome_zarr")
    npe2 = pytest.importorskip("npe2")
    from napari.components import ViewerModel

    npe2.PluginManager.instance().discover()
    path, levels = sharded
    layers = ViewerModel().open(str(path), plugin="napari-ome-zarr")
    assert len(layers) == SHAPE[1]  # one layer per channel
    for c, layer in enumerate(layers):
        assert layer.multiscale and len(layer.data) == len(levels)
        for got, want in zip(layer.data, levels, strict=True):
            np.testing.assert_array_equal(np.asarray(got), want[:, c])


def test_bioio_reads_the_sharded_default(sharded):
    bioio = pytest.importorskip("bioio")
    reader = pytest.importorskip("bioio_ome_zarr")
    path, levels = sharded
    image = bioio.BioImage(str(path), reader=reader.Reader)
    assert len(image.resolution_levels) == len(levels)
    for k, want in enumerate(levels):
        image.set_resolution_level(k)
        np.testing.assert_array_equal(image.get_image_data("TCZYX"), want)


IOHUB = """
import sys, numpy as np
from iohub.ngff import open_ome_zarr
with open_ome_zarr(sys.argv[1], layout="fov", mode="r") as pos:
    for k in range(int(sys.argv[2])):
        np.save(f"{sys.argv[3]}/{k}.npy", pos[str(k)][:])
"""


def test_iohub_reads_the_sharded_default(sharded, tmp_path):
    pytest.importorskip("iohub")
    path, levels = sharded
    # In a process of its own: iohub may set zarr's codec pipeline for the whole process.
    subprocess.run([sys.executable, "-c", IOHUB, str(path), str(len(levels)), str(tmp_path)], check=True,
                   timeout=300)
    for k, want in enumerate(levels):
        np.testing.assert_array_equal(np.load(tmp_path / f"{k}.npy"), want)


def test_ngff_zarr_reads_the_sharded_default(sharded):
    ngff_zarr = pytest.importorskip("ngff_zarr")
    path, levels = sharded
    multiscales = ngff_zarr.from_ngff_zarr(str(path))
    assert len(multiscales.images) == len(levels)
    for image, want in zip(multiscales.images, levels, strict=True):
        np.testing.assert_array_equal(np.asarray(image.data), want)
