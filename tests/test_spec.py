"""Declarations: axes mapping, default chunks, validation of every field."""

from __future__ import annotations

import numpy as np
import pytest

import ngff_writer as nw
from ngff_writer import InvalidAxesError, InvalidChunksError, SpecError, UnsupportedDtypeError
from ngff_writer._declare.spec import ImageSpec, parse_image_spec


@pytest.mark.parametrize(
    ("axes", "shape", "stored_axes", "stored_shape", "n_samples", "sample_shape"),
    [
        ("yx", (40, 50), ("y", "x"), (40, 50), 1, (40, 50)),
        ("zyx", (4, 40, 50), ("z", "y", "x"), (4, 40, 50), 1, (4, 40, 50)),
        ("cyx", (2, 40, 50), ("c", "y", "x"), (2, 40, 50), 1, (2, 40, 50)),
        ("czyx", (2, 4, 40, 50), ("c", "z", "y", "x"), (2, 4, 40, 50), 1, (2, 4, 40, 50)),
        ("syx", (3, 40, 50), ("s", "y", "x"), (3, 40, 50), 3, (40, 50)),
        ("scyx", (3, 2, 40, 50), ("s", "c", "y", "x"), (3, 2, 40, 50), 3, (2, 40, 50)),
        ("sczyx", (3, 2, 4, 8, 9), ("s", "c", "z", "y", "x"), (3, 2, 4, 8, 9), 3, (2, 4, 8, 9)),
        ("tyx", (5, 8, 9), ("t", "y", "x"), (5, 8, 9), 1, (5, 8, 9)),
        ("tczyx", (5, 2, 4, 8, 9), ("t", "c", "z", "y", "x"), (5, 2, 4, 8, 9), 1, (5, 2, 4, 8, 9)),
        ("styx", (3, 5, 8, 9), ("t", "s", "y", "x"), (5, 3, 8, 9), 3, (5, 8, 9)),
        ("stczyx", (3, 5, 2, 4, 8, 9), ("t", "c", "z", "y", "x"), (15, 2, 4, 8, 9), 3, (5, 2, 4, 8, 9)),
        ("yxs", (8, 9, 3), ("s", "y", "x"), (3, 8, 9), 3, (8, 9)),
        ("zyxc", (4, 8, 9, 2), ("c", "z", "y", "x"), (2, 4, 8, 9), 1, (4, 8, 9, 2)),
    ],
)
def test_sample_axis_mapping(axes, shape, stored_axes, stored_shape, n_samples, sample_shape):
    spec = parse_image_spec("img", shape, axes)
    layout = spec.layout
    assert layout.axes == stored_axes
    assert layout.shape == stored_shape
    assert layout.n_samples == n_samples
    assert layout.sample_shape == sample_shape
    # Every stored axis order is legal OME-NGFF: time, then custom/channel, then space.
    rank = {"t": 0, "s": 1, "c": 2, "z": 3, "y": 3, "x": 3}
    assert [rank[a] for a in layout.axes] == sorted(rank[a] for a in layout.axes)
    assert 2 <= len(layout.axes) <= 5


def test_merged_sample_regions_tile_the_t_axis():
    layout = parse_image_spec("img", (3, 5, 2, 4, 8, 9), "stczyx").layout
    assert layout.merged
    starts = [layout.sample_region(i)[0] for i in range(3)]
    assert starts == [slice(0, 5), slice(5, 10), slice(10, 15)]


@pytest.mark.parametrize(
    ("axes", "shape", "sample_axes", "n_samples", "sample_shape", "region_of_4"),
    [
        ("tyx", (6, 8, 9), "t", 6, (8, 9), (slice(4, 5), slice(0, 8), slice(0, 9))),
        ("styx", (2, 3, 8, 9), "st", 6, (8, 9), (slice(1, 2), slice(1, 2), slice(0, 8), slice(0, 9))),
        # CAREamics' merged index s * T + t, stored in a merged t when six axes would be needed
        ("stczyx", (2, 3, 1, 4, 8, 9), "st", 6, (1, 4, 8, 9),
         (slice(4, 5), slice(0, 1), slice(0, 4), slice(0, 8), slice(0, 9))),
        ("syxt", (2, 8, 9, 3), "ts", 6, (8, 9), (slice(1, 2), slice(1, 2), slice(0, 8), slice(0, 9))),
    ],
)
def test_sample_axes(axes, shape, sample_axes, n_samples, sample_shape, region_of_4):
    layout = parse_image_spec("img", shape, axes, sample_axes=sample_axes).layout
    assert layout.n_samples == n_samples
    assert layout.sample_shape == sample_shape
    assert layout.sample_region(4) == region_of_4


def test_sample_axes_errors():
    with pytest.raises(InvalidAxesError, match="sample_axes"):
        parse_image_spec("img", (3, 8, 8), "tyx", sample_axes="s")
    with pytest.raises(InvalidAxesError, match="must be a sample axis"):
        parse_image_spec("img", (2, 3, 1, 4, 8, 8), "stczyx", sample_axes="t")
    with pytest.raises(InvalidChunksError, match="sample axis 't'"):
        parse_image_spec("img", (4, 8, 8), "tyx", sample_axes="t", chunks=(2, 8, 8))


def test_default_chunks_are_one_sample_and_at_most_4_mib():
    spec = parse_image_spec("img", (64, 1, 32, 512, 512), "sczyx", "float32")
    chunks = dict(zip(spec.axes, spec.chunks, strict=True))
    assert chunks["s"] == 1 and chunks["c"] == 1
    nbytes = np.prod(spec.chunks) * 4
    assert 1 * 2**20 <= nbytes <= 4 * 2**20


def test_default_chunks_small_image_is_one_chunk():
    spec = parse_image_spec("img", (3, 64, 64), "syx", "uint8")
    assert spec.chunks == (1, 64, 64)


def test_spec_json_round_trip():
    spec = parse_image_spec(
        "a/b.ome.zarr", (2, 3, 8, 9), "sczyx"[:1] + "cyx", "float32", fill_value=float("nan"),
        scale={"y": 0.5, "x": 0.5}, units="um", channel_names=["a", "b", "c"],
        channel_colors=["#ff00ff", "00ff00", "0000FF"],
    )
    again = ImageSpec.from_json(spec.to_json())
    assert again.to_json() == spec.to_json()
    assert np.isnan(again.fill_value)
    assert again.units == (None, None, "micrometer", "micrometer")
    assert again.channel_colors == ("FF00FF", "00FF00", "0000FF")


@pytest.mark.parametrize(
    ("axes", "shape", "message"),
    [
        ("yq", (4, 4), "unknown axis"),
        ("yyx", (4, 4, 4), "only once"),
        ("zx", (4, 4), "'y' and 'x'"),
        ("zyx", (4, 4), "dimensions"),
    ],
)
def test_invalid_axes(axes, shape, message):
    with pytest.raises(InvalidAxesError, match=message):
        parse_image_spec("img", shape, axes)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"chunks": (2, 8, 8)}, InvalidChunksError, "must be 1 along the sample axis 's'"),
        ({"chunks": (1, 8)}, InvalidChunksError, "expected 3 values"),
        ({"chunks": (1, 0, 8)}, InvalidChunksError, ">= 1"),
        ({"shards": (1, 16, 16), "chunks": (1, 8, 8), "ngff_version": "0.4"}, InvalidChunksError,
         "zarr format 3"),
        ({"shards": (1, 12, 16), "chunks": (1, 8, 8)}, InvalidChunksError, "multiples"),
        ({"dtype": "complex64"}, UnsupportedDtypeError, "not supported"),
        ({"dtype": "U4"}, UnsupportedDtypeError, "not supported"),
        ({"fill_value": 300, "dtype": "uint8"}, SpecError, "does not fit"),
        ({"scale": {"q": 1.0}}, SpecError, "not in the image axes"),
        ({"scale": (1.0, -1.0, 1.0)}, SpecError, "> 0"),
        ({"units": "parsecs"}, SpecError, "not a valid space unit"),
        ({"units": {"s": "second"}}, SpecError, "take no unit"),
        ({"channel_names": ["a", "b"]}, SpecError, "expected 1 names"),
        ({"channel_colors": ["red"]}, SpecError, "hex"),
        ({"ngff_version": "0.3"}, SpecError, "ngff_version"),
        ({"cast": "lossy"}, SpecError, "cast"),
        ({"window_percentiles": (99, 1)}, SpecError, "window_percentiles"),
    ],
)
def test_invalid_declarations(kwargs, error, message):
    args = {"dtype": kwargs.pop("dtype", "float32")}
    with pytest.raises(error, match=message):
        parse_image_spec("img", (3, 32, 32), "syx", args["dtype"], **kwargs)


def test_merged_axis_chunks_must_divide_t():
    with pytest.raises(InvalidChunksError, match="divide"):
        parse_image_spec("img", (2, 5, 1, 4, 8, 8), "stczyx", chunks=(1, 2, 1, 4, 8, 8))
    spec = parse_image_spec("img", (2, 6, 1, 4, 8, 8), "stczyx", chunks=(1, 3, 1, 4, 8, 8))
    assert spec.stored_chunks == (3, 1, 4, 8, 8)


@pytest.mark.parametrize("name", ["/", "a/../b", "a//b/..", "bad name", "__x", "x/ngff_writer"])
def test_invalid_names(name):
    with pytest.raises(SpecError):
        parse_image_spec(name, (8, 8), "yx")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_percentiles": (1, 2, 3)},
        {"blend": {"tile": (8, 8)}},
        {"blend": 5},
        {"sample_axes": 1},
        {"scale": {1: 2.0}},
        {"units": {"y": ["um"]}},
    ],
)
def test_wrong_types_give_spec_errors(kwargs):
    with pytest.raises(SpecError):
        parse_image_spec("img", (3, 32, 32), "syx", **kwargs)


def test_a_shape_error_names_the_declared_order_and_the_stored_one(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        image = out.create_image("i", (2, 8, 6, 4), "sxyz", pyramid=None)
        with pytest.raises(nw.ShapeMismatchError, match=r"axes 'xyz', the declared order; stored as 'zyx'"):
            image.write_sample(0, np.zeros((4, 6, 8), np.float32))  # given in stored order
        image.write_sample(0, np.zeros((8, 6, 4), np.float32))
        assert image.array.shape == (2, 4, 6, 8)
