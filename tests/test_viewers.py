"""Written images as users see them: on disk, in ome-zarr-models, ome-zarr's Reader, napari.

Images are declared with the default ``pyramid="auto"``: 24 x 40 pixels in 16 x 16 chunks
get two levels below full resolution, checked against 2x2 means computed here.

Every declared-axes case of the sample-axis mapping (``ngff_writer._declare.spec``) is written with
random float32 samples in shuffled order to a real directory store, for NGFF 0.4 and 0.5,
then checked against a reference built independently of the library: the declared-order
array transposed to the stored order ``t s c z y x`` (for ``s t c z y x``, ``s`` and ``t``
merged by a reshape, sample-major).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ome_zarr.io
import ome_zarr.reader
import ome_zarr_models
import ome_zarr_models.v04
import ome_zarr_models.v05
import pytest
import zarr

import ngff_writer as nw

VERSIONS = ("0.4", "0.5")
AXES_CASES = (
    "YX", "ZYX", "CYX", "CZYX", "SYX", "SCYX", "SCZYX", "TYX", "TCZYX", "STYX", "STCZYX",
    "yxs", "zyxc",
)
#: Small sizes; y and x are not multiples of their chunks, so edge chunks are partial.
SIZES = {"s": 3, "t": 2, "c": 3, "z": 4, "y": 24, "x": 40}
CHUNKS = {"s": 1, "t": 1, "c": 1, "z": 2, "y": 16, "x": 16}
SCALE = {"t": 3.0, "z": 2.0, "y": 0.5, "x": 0.25}
UNITS = {"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"}
NGFF_ORDER = "tsczyx"


# ---- an independent reference of the documented mapping ----------------------------------
def stored_reference(axes: str, full: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The stored array and its axis names, from the full array in declared order."""
    present = [a for a in NGFF_ORDER if a in axes]
    if len(present) > 5:  # s, t, c, z, y, x: s merged into t, sample-major
        order = ["s", *[a for a in present if a != "s"]]
        arr = np.transpose(full, [axes.index(a) for a in order])
        return arr.reshape((-1, *arr.shape[2:])), order[1:]
    return np.transpose(full, [axes.index(a) for a in present]), present


def mean_pool(level: np.ndarray, stored_axes: list[str]) -> np.ndarray:
    """The next pyramid level as documented: 2x2 means over y and x, a short last block
    averaged over the pixels it has (NaN padding + nanmean, in float64)."""
    pads = [(0, level.shape[i] % 2 if a in "yx" else 0) for i, a in enumerate(stored_axes)]
    padded = np.pad(level.astype(np.float64), pads, constant_values=np.nan)
    shape: list[int] = []
    for n, a in zip(padded.shape, stored_axes, strict=True):
        shape += [n // 2, 2] if a in "yx" else [n, 1]
    return np.nanmean(padded.reshape(shape), axis=tuple(range(1, 2 * level.ndim, 2)))


def reference_levels(ref: np.ndarray, stored_axes: list[str]) -> list[np.ndarray]:
    """Level 0 and the levels "auto" builds: halve y and x until both fit in one chunk."""
    levels = [ref.astype(np.float64)]
    while any(levels[-1].shape[stored_axes.index(a)] > CHUNKS[a] for a in "yx"):
        levels.append(mean_pool(levels[-1], stored_axes))
    return levels


def make_full(axes: str, rng: np.random.Generator) -> np.ndarray:
    """Random float32 data in declared order; channel k is offset by 10*k so channels differ."""
    shape = tuple(SIZES[a] for a in axes)
    full = rng.random(shape, dtype=np.float32)
    if "c" in axes:
        offset = np.arange(SIZES["c"], dtype=np.float32) * 10
        full += offset.reshape([-1 if a == "c" else 1 for a in axes])
    return full


def samples_of(axes: str, full: np.ndarray) -> list[np.ndarray]:
    """The samples a user passes to write_sample: declared order without ``s``."""
    if "s" not in axes:
        return [full]
    s = axes.index("s")
    return [np.take(full, i, axis=s) for i in range(full.shape[s])]


def ome_attrs(attrs: dict[str, Any], version: str) -> dict[str, Any]:
    return attrs["ome"] if version == "0.5" else attrs


def windows_of(attrs: dict[str, Any], version: str) -> list[dict[str, float]]:
    return [ch["window"] for ch in ome_attrs(attrs, version)["omero"]["channels"]]


def expected_scale(stored_axes: list[str]) -> list[float]:
    return [SCALE.get(a, 1.0) for a in stored_axes]


def write_image(
    outputs: contextlib.ExitStack, root: Path, version: str, declared: str, *, only: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write ``declared`` (all samples, or the first ``only`` of a shuffled order).

    The output stays open for the test to read through it; ``outputs`` closes it after.
    """
    axes = declared.lower()
    rng = np.random.default_rng(seed)
    full = make_full(axes, rng)
    samples = samples_of(axes, full)
    out = outputs.enter_context(nw.open_output(root, mode="w", ngff_version=version))
    img = out.create_image(
        "pred",
        full.shape,
        declared,
        dtype="float32",
        chunks=[CHUNKS[a] for a in axes],
        scale={a: v for a, v in SCALE.items() if a in axes},
        units={a: u for a, u in UNITS.items() if a in axes},
    )
    order = rng.permutation(len(samples))
    written = order if only is None else order[:only]
    for i in written:
        img.write_sample(int(i), samples[i])
    img.flush()  # stored (and final when complete): napari reads the disk, not this handle
    ref, stored_axes = stored_reference(axes, full)
    return {
        "levels": reference_levels(ref, stored_axes),
        "out": out,
        "img": img,
        "path": root / "pred",
        "full": full,
        "ref": ref,
        "axes": stored_axes,
        "written": sorted(int(i) for i in written),
        "n": len(samples),
    }


@pytest.fixture
def outputs() -> Iterator[contextlib.ExitStack]:
    """Closes, after the test, the outputs write_image opened for it."""
    with contextlib.ExitStack() as stack:
        yield stack


def group_attrs(path: Path) -> dict[str, Any]:
    return dict(zarr.open_group(path, mode="r").attrs)


@pytest.fixture(scope="module")
def napari_viewer_model():
    """ViewerModel factory, with npe2 plugins discovered once for the module."""
    pytest.importorskip("napari_ome_zarr")
    npe2 = pytest.importorskip("npe2")
    components = pytest.importorskip("napari.components")
    npe2.PluginManager.instance().discover()
    return components.ViewerModel


def open_in_napari(viewer_model: Any, path: Path) -> tuple[Any, list[Any]]:
    vm = viewer_model()
    layers = vm.open(str(path), plugin="napari-ome-zarr")
    return vm, layers


def check_napari(vm: Any, layers: list[Any], w: dict[str, Any], version: str) -> None:
    stored_axes = w["axes"]
    ref = w["ref"]
    windows = windows_of(group_attrs(w["path"]), version)
    no_c = [a for a in stored_axes if a != "c"]
    n_layers = SIZES["c"] if "c" in stored_axes else 1
    assert len(layers) == n_layers
    assert len(vm.layers) == n_layers
    expected_shape = tuple(n for a, n in zip(stored_axes, ref.shape) if a != "c")
    for k, layer in enumerate(layers):
        assert list(layer.scale) == pytest.approx(expected_scale(no_c))
        assert layer.multiscale and len(layer.data) == len(w["levels"])
        for level, want in zip(layer.data, w["levels"], strict=True):
            assert tuple(level.shape) == tuple(n for a, n in zip(stored_axes, want.shape) if a != "c")
        assert tuple(layer.data.shape) == expected_shape
        assert list(layer.contrast_limits) == pytest.approx(
            [windows[k]["start"], windows[k]["end"]]
        )
    labels = tuple(vm.dims.axis_labels)
    for a in no_c:
        assert a in labels, (a, labels)


def check_reader(w: dict[str, Any]) -> None:
    nodes = list(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(w["path"])))())
    assert nodes, "ome-zarr Reader found no node"
    image = nodes[0]
    assert any(isinstance(s, ome_zarr.reader.Multiscales) for s in image.specs)
    assert [tuple(level.shape) for level in image.data] == [want.shape for want in w["levels"]]


def check_models(w: dict[str, Any], version: str) -> None:
    model = ome_zarr_models.open_ome_zarr(zarr.open_group(w["path"], mode="r"))
    cls = ome_zarr_models.v05.Image if version == "0.5" else ome_zarr_models.v04.Image
    assert isinstance(model, cls)
    axes = model.ome_attributes.multiscales[0].axes
    assert [a.name for a in axes] == w["axes"]
    assert len(model.ome_attributes.multiscales[0].datasets) == len(w["levels"])


# ---- complete images --------------------------------------------------------------------
CASES = [pytest.param(v, a, id=f"{v}-{a}") for v in VERSIONS for a in AXES_CASES]


@pytest.mark.parametrize(("version", "declared"), CASES)
def test_data_and_metadata_roundtrip(
    tmp_path: Path, outputs: contextlib.ExitStack, version: str, declared: str
) -> None:
    w = write_image(outputs, tmp_path / "out.zarr", version, declared)
    img, ref = w["img"], w["ref"]
    progress = img.progress()
    assert progress.complete and progress.done == progress.total == w["n"]
    assert progress.pending == ()

    assert img.array.shape == ref.shape
    np.testing.assert_array_equal(img.array[...], ref)
    on_disk = zarr.open_array(w["path"] / "0", mode="r")
    assert on_disk.dtype == np.float32
    np.testing.assert_array_equal(on_disk[...], ref)
    # More than one chunk per sample, so block bookkeeping is exercised.
    assert progress.blocks_total > w["n"]

    attrs = group_attrs(w["path"])
    assert attrs["ngff_writer"]["status"] == "complete"
    ome = ome_attrs(attrs, version)
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == w["axes"]
    assert len(w["levels"]) == 3 == img.n_levels  # 24 x 40 in 16 x 16 chunks: two levels below
    for k, (dataset, want) in enumerate(zip(ms["datasets"], w["levels"], strict=True)):
        scale = dataset["coordinateTransformations"][0]["scale"]
        level_factor = [2**k if a in "yx" else 1 for a in w["axes"]]
        assert dataset["path"] == str(k)
        assert scale == pytest.approx(np.multiply(expected_scale(w["axes"]), level_factor).tolist())
        level = zarr.open_array(w["path"] / str(k), mode="r")
        assert level.dtype == np.float32 and level.chunks == tuple(
            min(CHUNKS[a], n) for a, n in zip(w["axes"], want.shape, strict=True))
        np.testing.assert_allclose(level[...], want, rtol=1e-6)
    assert ms["type"] == "mean"
    if version == "0.5":
        assert ome["version"] == "0.5"
        assert list(on_disk.metadata.dimension_names) == w["axes"]
    else:
        assert ms["version"] == "0.4"
        assert on_disk.metadata.dimension_separator == "/"

    windows = windows_of(attrs, version)
    stored_axes = w["axes"]
    channels = (
        [np.take(ref, k, axis=stored_axes.index("c")) for k in range(SIZES["c"])]
        if "c" in stored_axes
        else [ref]
    )
    assert len(windows) == len(channels)
    for win, data in zip(windows, channels):
        values = [win["min"], win["max"], win["start"], win["end"]]
        assert all(math.isfinite(v) for v in values), win
        assert win["min"] <= win["start"] < win["end"] <= win["max"], win
        # min/max are exact; start/end are approximate percentiles (0.5, 99.5).
        assert win["min"] == pytest.approx(float(data.min()))
        assert win["max"] == pytest.approx(float(data.max()))
        assert win["start"] <= np.percentile(data, 5)
        assert win["end"] >= np.percentile(data, 95)


@pytest.mark.parametrize(("version", "declared"), CASES)
def test_validates_with_ome_zarr_models(
    tmp_path: Path, outputs: contextlib.ExitStack, version: str, declared: str
) -> None:
    check_models(write_image(outputs, tmp_path / "out.zarr", version, declared), version)


@pytest.mark.parametrize(("version", "declared"), CASES)
def test_ome_zarr_reader_lists_image(
    tmp_path: Path, outputs: contextlib.ExitStack, version: str, declared: str
) -> None:
    check_reader(write_image(outputs, tmp_path / "out.zarr", version, declared))


@pytest.mark.parametrize(("version", "declared"), CASES)
def test_napari_opens_image(
    tmp_path: Path, outputs: contextlib.ExitStack, napari_viewer_model: Any, version: str, declared: str
) -> None:
    w = write_image(outputs, tmp_path / "out.zarr", version, declared)
    vm, layers = open_in_napari(napari_viewer_model, w["path"])
    check_napari(vm, layers, w, version)


# ---- images still being written ---------------------------------------------------------
PARTIAL = [
    pytest.param(v, a, k, id=f"{v}-{a}-{k}of3")
    for v in VERSIONS
    for a, k in (("SCZYX", 1), ("STCZYX", 2), ("SYX", 0))
]


@pytest.mark.parametrize(("version", "declared", "written"), PARTIAL)
def test_in_progress_image_is_readable(
    tmp_path: Path, outputs: contextlib.ExitStack, napari_viewer_model: Any, version: str, declared: str,
    written: int,
) -> None:
    w = write_image(outputs, tmp_path / "out.zarr", version, declared, only=written)
    img, ref, stored_axes = w["img"], w["ref"], w["axes"]
    progress = img.progress()
    assert not progress.complete
    assert progress.done == written and progress.total == SIZES["s"]
    assert sorted(set(range(SIZES["s"])) - set(progress.pending)) == w["written"]

    attrs = group_attrs(w["path"])
    assert attrs["ngff_writer"]["status"] == "in_progress"
    for win in windows_of(attrs, version):  # float placeholder
        assert (win["start"], win["end"]) == (0.0, 1.0)

    # Written samples are in place; the rest still read as the fill value.
    data = img.array[...]
    merged = "s" not in stored_axes  # s folded into t: sample i is t[i*T:(i+1)*T]
    s_axis = stored_axes.index("t" if merged else "s")
    extent = SIZES["t"] if merged else 1
    for i in range(SIZES["s"]):
        sl = [slice(None)] * len(stored_axes)
        sl[s_axis] = slice(i * extent, (i + 1) * extent)
        want = ref[tuple(sl)] if i in w["written"] else np.zeros_like(ref[tuple(sl)])
        np.testing.assert_array_equal(data[tuple(sl)], want)
        # Pyramid levels fill with their samples, not at the end.
        for k, level_ref in enumerate(w["levels"][1:], start=1):
            level = img.level(k)[tuple(sl)]
            want = level_ref[tuple(sl)] if i in w["written"] else np.zeros(level.shape)
            np.testing.assert_allclose(level, want, rtol=1e-6)

    check_models(w, version)
    check_reader(w)
    vm, layers = open_in_napari(napari_viewer_model, w["path"])
    check_napari(vm, layers, w, version)
    for layer in layers:
        assert list(layer.contrast_limits) == [0.0, 1.0]
