"""Opening outputs, declaring images, writing samples, progress, resume and bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import zarr
from stores import FaultyStore
from zarr.storage import LocalStore

import ngff_writer as nw


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: proves a refused call changed nothing."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _attrs(image_path: Path, version: str) -> dict:
    g = zarr.open_group(image_path, mode="r")
    return dict(g.attrs)


def _omero(attrs: dict, version: str) -> dict:
    return attrs["ome"]["omero"] if version == "0.5" else attrs["omero"]


# ---- open modes ------------------------------------------------------------------------
def test_create_refuses_existing_data(tmp_path):
    root = tmp_path / "out.zarr"
    root.mkdir()
    (root / "precious.txt").write_text("keep me")
    with pytest.raises(nw.OutputExistsError, match="mode='a'"):
        nw.open_output(root)
    assert (root / "precious.txt").read_text() == "keep me"
    with pytest.raises(FileExistsError):  # the builtin still catches it
        nw.open_output(root, mode="w-")


def test_overwrite_replaces(tmp_path):
    root = tmp_path / "out.zarr"
    with nw.open_output(root) as out:
        out.create_image("a", (8, 8), "yx")
    with nw.open_output(root, mode="w") as out:
        assert out.images() == []


def test_append_refuses_foreign_data(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("not zarr")
    with pytest.raises(nw.StoreError, match="not an ngff-writer output"):
        nw.open_output(tmp_path / "x", mode="a")


def test_read_only_missing(tmp_path):
    with pytest.raises(nw.OutputNotFoundError):
        nw.open_output(tmp_path / "missing.zarr", mode="r")
    assert not (tmp_path / "missing.zarr").exists()


def test_read_only_refuses_writes(tmp_path, rng):
    root = tmp_path / "out.zarr"
    with nw.open_output(root) as out:
        out.create_image("a", (2, 8, 8), "syx")
    before = _files(root)
    with nw.open_output(root, mode="r") as out:
        with pytest.raises(nw.ReadOnlyError):
            out["a"].write_sample(0, rng.random((8, 8), dtype=np.float32))
        with pytest.raises(nw.ReadOnlyError):
            out.create_image("b", (8, 8), "yx")
        assert out["a"].progress().done == 0
    assert _files(root) == before


def test_any_zarr_store(rng):
    store = zarr.storage.MemoryStore()
    with nw.open_output(store) as out:
        img = out.create_image("mem", (2, 16, 16), "syx")
        data = rng.random((2, 16, 16), dtype=np.float32)
        for i in range(2):
            img.write_sample(i, data[i])
        assert img.progress().complete
    np.testing.assert_array_equal(zarr.open_array(store, path="mem/0", mode="r")[:], data)


# ---- declare ---------------------------------------------------------------------------
def test_declare_writes_metadata_but_no_chunks(tmp_path, ngff_version):
    root = tmp_path / "out.zarr"
    with nw.open_output(root, ngff_version=ngff_version) as out:
        out.create_image("pred", (4, 2, 8, 32, 32), "sczyx", chunks=(1, 1, 4, 16, 16),
                         scale={"z": 2.0, "y": 0.5, "x": 0.5}, units="micrometer")
    chunk_dir = root / "pred" / "0"
    data_files = [p for p in chunk_dir.rglob("*") if p.is_file()
                  and p.name not in ("zarr.json", ".zarray", ".zattrs")]
    assert data_files == []
    attrs = _attrs(root / "pred", ngff_version)
    assert attrs["ngff_writer"]["status"] == "in_progress"
    ms = attrs["ome"]["multiscales"][0] if ngff_version == "0.5" else attrs["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["s", "c", "z", "y", "x"]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1, 1, 2.0, 0.5, 0.5]
    arr = zarr.open_array(root / "pred" / "0", mode="r")
    assert arr.shape == (4, 2, 8, 32, 32) and arr.chunks == (1, 1, 4, 16, 16)


def test_duplicate_and_resume_declarations(tmp_path):
    root = tmp_path / "out.zarr"
    with nw.open_output(root) as out:
        out.create_image("a", (2, 8, 8), "syx")
        with pytest.raises(nw.DuplicateImageError, match="exist_ok"):
            out.create_image("a", (2, 8, 8), "syx")
    with nw.open_output(root, mode="a") as out:
        again = out.create_image("a", (2, 8, 8), "syx", exist_ok=True)
        assert again.spec.shape == (2, 8, 8)
        with pytest.raises(nw.SpecMismatchError, match="shape"):
            out.create_image("a", (3, 8, 8), "syx", exist_ok=True)


def test_unknown_image(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        with pytest.raises(nw.UnknownImageError, match="nope"):
            out["nope"]
        with pytest.raises(KeyError):
            out.write_sample("nope", 0, np.zeros((2, 2)))


def test_nested_names_and_listing(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        out.create_image("run1/b.ome.zarr", (8, 8), "yx")
        out.create_image("run1/a.ome.zarr", (8, 8), "yx")
        out.create_image("c", (8, 8), "yx")
        assert out.images() == ["c", "run1/a.ome.zarr", "run1/b.ome.zarr"]
        assert "run1/a.ome.zarr" in out and "run1" not in out
        with pytest.raises(nw.DuplicateImageError):
            out.create_image("run1", (8, 8), "yx")


def test_a_place_another_writer_is_allocating_can_be_declared_but_not_a_users_group(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("a", (4, 8, 8), "syx", chunks=(1, 8, 8), pyramid=None)
    # What a writer declaring "b" leaves mid-way: zarr's implicit group and a level array.
    zarr.create_array(zarr.storage.LocalStore(root), name="b/0", shape=(4, 8, 8), dtype="float32",
                      chunks=(1, 8, 8), zarr_format=3)
    zarr.open_group(root / "mine", mode="a", zarr_format=3).attrs["owner"] = "me"
    zarr.create_array(zarr.storage.LocalStore(root), name="other/labels", shape=(2,),
                      dtype="uint8", zarr_format=3)
    with nw.open_output(root, mode="a") as out:
        img = out.create_image("b", (4, 8, 8), "syx", chunks=(1, 8, 8), pyramid=None)
        img.write_sample(0, np.ones((8, 8), np.float32))
        assert out.images() == ["a", "b"]
        for taken in ("mine", "other"):  # a user's group keeps its attributes and content
            with pytest.raises(nw.DuplicateImageError, match="not an image"):
                out.create_image(taken, (4, 8, 8), "syx", chunks=(1, 8, 8), pyramid=None)
    assert dict(zarr.open_group(root / "mine", mode="r").attrs) == {"owner": "me"}
    assert list(zarr.open_group(root / "other", mode="r").array_keys()) == ["labels"]


# ---- write -----------------------------------------------------------------------------
def test_samples_in_any_order_round_trip(tmp_path, rng, ngff_version):
    root = tmp_path / "out.zarr"
    ref = rng.random((5, 2, 3, 20, 24), dtype=np.float32)
    with nw.open_output(root, ngff_version=ngff_version) as out:
        img = out.create_image("pred", ref.shape, "sczyx", chunks=(1, 1, 2, 8, 16))
        for i in [4, 0, 3, 1]:
            img.write_sample(i, ref[i])
            assert not img.progress().complete
        assert img.pending_samples() == [2]
        img.write_sample(2, ref[2])
        progress = img.progress()
    assert progress.complete and progress.done == progress.total == 5
    np.testing.assert_array_equal(zarr.open_array(root / "pred" / "0")[:], ref)
    attrs = _attrs(root / "pred", ngff_version)
    assert attrs["ngff_writer"]["status"] == "complete"
    for c, ch in enumerate(_omero(attrs, ngff_version)["channels"]):
        w = ch["window"]
        assert w["min"] == pytest.approx(ref[:, c].min()) and w["max"] == pytest.approx(ref[:, c].max())
        lo, hi = np.percentile(ref[:, c], [0.5, 99.5])
        assert w["start"] == pytest.approx(lo, abs=0.02) and w["end"] == pytest.approx(hi, abs=0.02)


def test_declared_order_is_transposed(tmp_path, rng):
    ref = rng.random((10, 12, 3), dtype=np.float32)  # y x s
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", ref.shape, "yxs")
        for i in range(3):
            img.write_sample(i, ref[..., i])
        np.testing.assert_array_equal(img.array[:], np.moveaxis(ref, 2, 0))


def test_retry_overwrites_before_completion(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (2, 8, 8), "syx")
        img.write_sample(0, np.ones((8, 8), np.float32))
        img.write_sample(0, np.full((8, 8), 2, np.float32))
        assert img.progress().done == 1
        np.testing.assert_array_equal(img.array[0], 2)


def test_bad_writes_change_nothing(tmp_path, rng):
    root = tmp_path / "out.zarr"
    out = nw.open_output(root)
    img = out.create_image("p", (3, 2, 16, 16), "scyx", dtype="float32")
    good = rng.random((2, 16, 16), dtype=np.float32)
    img.write_sample(1, good)
    img.flush()  # its chunks and its log record are in the store now
    before = _files(root)
    cases = [
        (nw.ShapeMismatchError, lambda: img.write_sample(0, good[0])),
        (nw.ShapeMismatchError, lambda: img.write_sample(0, np.zeros((2, 16, 17), np.float32))),
        (nw.SampleIndexError, lambda: img.write_sample(3, good)),
        (nw.SampleIndexError, lambda: img.write_sample(-1, good)),
        (nw.SampleIndexError, lambda: img.write_sample(1.0, good)),
        (nw.LossyCastError, lambda: img.write_sample(0, good.astype(np.float64))),
        (nw.LossyCastError, lambda: img.write_sample(0, good.astype(np.int64))),
        (nw.UnsupportedDtypeError, lambda: img.write_sample(0, good.astype(np.complex64))),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
    assert _files(root) == before
    assert img.progress().done == 1
    out.close()
    closed = _files(root)
    # Closing only took away the writer's heartbeat.
    assert {k for k in before if "/writers/" not in k} == set(closed)
    with pytest.raises(nw.ClosedError):
        img.write_sample(0, good)
    with pytest.raises(nw.ClosedError):
        out.create_image("q", (8, 8), "yx")
    assert _files(root) == closed


def test_safe_casts_are_silent_and_opt_in_allows_lossy(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (2, 4, 4), "syx", dtype="float32")
        img.write_sample(0, np.arange(16, dtype=np.uint8).reshape(4, 4))
        np.testing.assert_array_equal(img.array[0], np.arange(16).reshape(4, 4))
        narrow = out.create_image("q", (1, 4, 4), "syx", dtype="float32", cast="same_kind")
        narrow.write_sample(0, np.full((4, 4), 0.1, dtype=np.float64))
        np.testing.assert_array_equal(narrow.array[0], np.float32(0.1))


def test_writes_into_a_complete_image_are_retries_of_its_job(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", (8, 8), "yx")
        img.write_sample(0, np.ones((8, 8), np.float32))
        assert img.complete
        before = _files(root)
        # The rest of a resumed loop that completed the image: retries, skipped quietly.
        img.write_sample(0, np.full((8, 8), 2, np.float32))
        with pytest.raises(nw.ShapeMismatchError):  # bad input is still refused
            img.write_sample(0, np.ones((8, 9), np.float32))
        assert _files(root) == before
    # The same job again, in a new process's handle: accepted, nothing changes.
    with nw.open_output(root, mode="a") as out:
        again = out.create_image("p", (8, 8), "yx", exist_ok=True)
        again.write_sample(0, np.ones((8, 8), np.float32))
        again.flush()
        assert again.complete
    assert _files(root) == before
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0")[:], 1)


def test_nan_and_inf_are_stored_and_ignored_by_windows(tmp_path, ngff_version):
    data = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    data[0, :5] = np.nan
    data[1, :3] = np.inf
    data[2, :3] = -np.inf
    root = tmp_path / "o.zarr"
    with nw.open_output(root, ngff_version=ngff_version) as out:
        out.create_image("p", data.shape, "yx").write_sample(0, data)
    stored = zarr.open_array(root / "p" / "0")[:]
    np.testing.assert_array_equal(stored, data)  # NaN compares equal positionally here
    window = _omero(_attrs(root / "p", ngff_version), ngff_version)["channels"][0]["window"]
    finite = data[np.isfinite(data)]
    assert window["min"] == pytest.approx(finite.min())
    assert window["max"] == pytest.approx(finite.max())
    assert all(np.isfinite(v) for v in window.values())


def test_all_nan_channel_gets_placeholder_window(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("p", (4, 4), "yx").write_sample(0, np.full((4, 4), np.nan, np.float32))
    window = _attrs(root / "p", "0.5")["ome"]["omero"]["channels"][0]["window"]
    assert window == {"min": 0.0, "max": 1.0, "start": 0.0, "end": 1.0}


def test_integer_images(tmp_path, rng):
    ref = rng.integers(0, 4000, (3, 32, 32), dtype=np.uint16)
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", ref.shape, "syx", dtype="uint16")
        for i in range(3):
            img.write_sample(i, ref[i])
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0")[:], ref)
    window = _attrs(root / "p", "0.5")["ome"]["omero"]["channels"][0]["window"]
    assert window["min"] == ref.min() and window["max"] == ref.max()


# ---- track / resume --------------------------------------------------------------------
def test_close_with_incomplete_images_keeps_progress(tmp_path, rng):
    root = tmp_path / "o.zarr"
    ref = rng.random((4, 8, 8), dtype=np.float32)
    with nw.open_output(root) as out:
        img = out.create_image("p", ref.shape, "syx")
        img.write_sample(2, ref[2])
        img.write_sample(0, ref[0])
        with pytest.warns(UserWarning, match="incomplete"):
            assert out.finalize() == ["p"]
    with nw.open_output(root, mode="a") as out:
        img = out["p"]
        progress = img.progress()
        assert (progress.done, progress.total, progress.pending) == (2, 4, (1, 3))
        assert _attrs(root / "p", "0.5")["ngff_writer"]["status"] == "in_progress"
        for i in img.pending_samples():
            img.write_sample(i, ref[i])
        assert img.progress().complete
    np.testing.assert_array_equal(zarr.open_array(root / "p" / "0")[:], ref)


def test_ledger_never_lists_a_sample_whose_data_failed(tmp_path, rng):
    store = FaultyStore(LocalStore(tmp_path / "o.zarr"))
    FaultyStore.heal()
    data = rng.random((8, 8), dtype=np.float32)
    with nw.open_output(store) as out:
        img = out.create_image("p", (2, 8, 8), "syx", pyramid=None)
        FaultyStore.fail("p/0/c/", OSError(28, "No space left on device"))
        img.write_sample(0, data)  # stored in the background: the failure surfaces once, later
        with pytest.raises(nw.StoreError, match="storing region") as info:
            img.flush()
        assert isinstance(info.value, OSError) and info.value.__cause__.errno == 28
        assert img.progress().done == 0
        img.flush()  # surfaced once: nothing more to raise
        FaultyStore.heal()
        img.write_sample(0, data)  # the retry stores it
        img.flush()
        assert img.progress().done == 1
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "p" / "0")[0], data)


# ---- status command --------------------------------------------------------------------
def test_status_json_lists_every_image(tmp_path, rng):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        a = out.create_image("done", (2, 8, 8), "syx", chunks=(1, 4, 4))  # one pyramid level
        for i in range(2):
            a.write_sample(i, rng.random((8, 8), dtype=np.float32))
        out.create_image("sub/half", (3, 8, 8), "syx", ngff_version="0.4").write_sample(
            1, rng.random((8, 8), dtype=np.float32))
    import contextlib
    import io

    from ngff_writer.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["status", str(root), "--json"]) == 0
    assert json.loads(buf.getvalue()) == {"images": [
        {"path": "done", "complete": True, "done": 2, "total": 2, "blocks_done": 8, "blocks_total": 8,
         "levels": 2},
        {"path": "sub/half", "complete": False, "done": 1, "total": 3, "blocks_done": 1, "blocks_total": 3,
         "levels": 1},
    ]}


def test_status_of_missing_output_is_an_error(tmp_path, capsys):
    from ngff_writer.cli import main

    assert main(["status", os.fspath(tmp_path / "nothing")]) == 2
    assert "no such path" in capsys.readouterr().err


def test_blosc_codec_instance_keeps_shuffle_effective(tmp_path):
    from zarr.codecs import BloscCodec

    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (64, 64), "yx", compressor=BloscCodec(cname="lz4", shuffle="shuffle"))
        (codec,) = [c for c in img.array.metadata.codecs if type(c).__name__ == "BloscCodec"]
    assert codec.typesize == 4 and str(getattr(codec.cname, "value", codec.cname)) == "lz4"


def test_image_at_the_output_root(tmp_path, rng, ngff_version):
    """One image per store, as `name.ome.zarr` (the layout CAREamics users get)."""
    root = tmp_path / "x.ome.zarr"
    ref = rng.random((2, 16, 16), dtype=np.float32)
    with nw.open_output(root, ngff_version=ngff_version) as out:
        img = out.create_image("", ref.shape, "syx")
        with pytest.raises(nw.DuplicateImageError, match="root is an image"):
            out.create_image("other", ref.shape, "syx")
        img.write_sample(0, ref[0])
    with nw.open_output(root, mode="a") as out:
        assert out.images() == [""]
        out[""].write_sample(1, ref[1])
        assert out[""].progress().complete
    from ome_zarr_models import open_ome_zarr

    open_ome_zarr(zarr.open_group(root, mode="r"))
    np.testing.assert_array_equal(zarr.open_array(root / "0")[:], ref)


def test_root_image_refused_when_output_has_images(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        out.create_image("a", (8, 8), "yx")
        with pytest.raises(nw.DuplicateImageError, match="no image"):
            out.create_image("", (8, 8), "yx")


@pytest.mark.parametrize(
    ("axes", "shape", "sample_axes"),
    [("tyx", (4, 16, 16), "t"), ("styx", (2, 3, 16, 16), "st"), ("stczyx", (2, 3, 2, 2, 8, 8), "st")],
)
def test_samples_along_t_or_s_and_t(tmp_path, rng, axes, shape, sample_axes, ngff_version):
    """CAREamics numbers (s, t) pairs s * T + t; each pair is one sample here."""
    ref = rng.random(shape, dtype=np.float32)
    grid = [shape[axes.index(a)] for a in sample_axes]
    with nw.open_output(tmp_path / "o.zarr", ngff_version=ngff_version) as out:
        img = out.create_image("p", shape, axes, sample_axes=sample_axes)
        assert img.n_samples == np.prod(grid)
        for k in np.random.default_rng(1).permutation(img.n_samples):
            index = dict(zip(sample_axes, np.unravel_index(k, grid), strict=True))
            img.write_sample(int(k), ref[tuple(index.get(a, slice(None)) for a in axes)])
        assert img.progress().complete
        stored = img.array[:]
    if axes == "stczyx":  # merged: t holds S blocks of T
        expected = ref.reshape(6, *shape[2:])
    else:
        expected = np.transpose(ref, [axes.index(a) for a in "tsczyx" if a in axes])
    np.testing.assert_array_equal(stored, expected)


def test_resume_with_nan_fill_value(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("p", (2, 8, 8), "syx", fill_value=float("nan"))
    with nw.open_output(root, mode="a") as out:
        assert out.create_image("p", (2, 8, 8), "syx", fill_value=float("nan"), exist_ok=True)


def test_no_image_inside_an_image(tmp_path):
    with nw.open_output(tmp_path / "o.zarr") as out:
        out.create_image("a", (8, 8), "yx")
        with pytest.raises(nw.DuplicateImageError, match="inside another image"):
            out.create_image("a/b", (8, 8), "yx")


def test_root_image_keeps_the_output_format(tmp_path):
    with nw.open_output(tmp_path / "o.zarr", ngff_version="0.5") as out:
        with pytest.raises(nw.SpecError, match="NGFF version"):
            out.create_image("", (8, 8), "yx", ngff_version="0.4")


def test_bad_open_arguments_touch_nothing(tmp_path):
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("keep", (8, 8), "yx")
    before = _files(root)
    for kwargs in ({"mode": "x"}, {"ngff_version": "0.3"}, {"buffer_policy": "drop"},
                   {"max_buffer_bytes": -1}):
        with pytest.raises(nw.SpecError):
            nw.open_output(root, **{"mode": "w", **kwargs})
    assert _files(root) == before


def test_codec_of_the_other_zarr_format_is_refused(tmp_path):
    import numcodecs
    from zarr.codecs import ZstdCodec

    with nw.open_output(tmp_path / "o.zarr") as out:
        with pytest.raises(nw.SpecError, match="numcodecs"):
            out.create_image("a", (8, 8), "yx", compressor=numcodecs.Zstd(level=1))
        with pytest.raises(nw.SpecError, match="zarr v3"):
            out.create_image("b", (8, 8), "yx", compressor=ZstdCodec(level=1), ngff_version="0.4")
        assert out.images() == []


def test_an_image_opened_as_its_own_output_is_read_and_resumed_where_it_is(tmp_path):
    """The path napari is given (one image inside an output) opened as an output: the
    image is at "" there, its progress is right, and writing there resumes it."""
    root = tmp_path / "o.zarr"
    data = np.random.default_rng(2).random((4, 16, 16), dtype=np.float32)
    with nw.open_output(root) as out:
        img = out.create_image("run1/embryo", data.shape, "syx", chunks=(1, 8, 8))
        for i in (0, 1):
            img.write_sample(i, data[i])
    with nw.open_output(root / "run1" / "embryo", mode="r") as direct:
        assert direct.images() == [""]
        progress = direct[""].progress()
        assert (progress.done, progress.total, progress.pending) == (2, 4, (2, 3))
    with nw.open_output(root / "run1" / "embryo", mode="a") as direct:
        img = direct.create_image("", data.shape, "syx", chunks=(1, 8, 8),
                                  channel_names=["embryo"], exist_ok=True)  # the same declaration
        for i in img.pending_samples():
            img.write_sample(i, data[i])
    with nw.open_output(root, mode="r") as out:
        assert out["run1/embryo"].progress().complete
    np.testing.assert_array_equal(zarr.open_array(root / "run1" / "embryo" / "0")[:], data)
    multiscale = _attrs(root / "run1" / "embryo", "0.5")["ome"]["multiscales"][0]
    assert multiscale["name"] == "embryo"  # its declared name, wherever it was finalized from
