"""The CAREamics drop-in strategy against a faithful stand-in of CAREamics' prediction stream.

Every axes string CAREamics allows, untiled and tiled predictions, several images
interleaved in random order and random batch sizes (often smaller than S), output channel
counts that differ from the input's: each written image must equal the in-memory stitch of
its predictions, validate as OME-NGFF, and be complete after ``finalize()``.
"""

from __future__ import annotations

import os
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr
from careamics_standin import (
    ImageRegionData,
    Source,
    batches,
    blend,
    careamics_reshape,
    expected_output,
    interleave,
    model,
    predictions,
    stitch,
    stored_axes,
    zarr_uri,
)
from layouts import large_default
from procs import run_children

import ngff_writer as nw
from ngff_writer.careamics import OmeZarrWriteStrategy, model_fingerprint, output_path

# axes -> (input shape in those axes, output channels of the model)
AXES = {
    "YX": ((45, 38), 2),
    "ZYX": ((10, 30, 26), 1),
    "CYX": ((2, 40, 36), 3),
    "SYX": ((3, 40, 36), 1),
    "TYX": ((4, 40, 36), 2),
    "YXS": ((40, 36, 3), 3),
    "SCZYX": ((2, 2, 10, 30, 26), 1),
    "STCZYX": ((2, 3, 1, 9, 28, 24), 2),
}
# More orders CAREamics accepts (any order of STCZYX), tiled, NGFF 0.5 only.
EXTRA_AXES = {
    "STYX": ((2, 3, 40, 36), 2),
    "XYTS": ((36, 40, 2, 3), 2),
    "ZYXC": ((8, 30, 26, 2), 2),
    "TCZYX": ((3, 2, 8, 30, 26), 1),
}
ALL_AXES = AXES | EXTRA_AXES
PATCH = {2: (16, 20), 3: (6, 16, 16)}
OVERLAP = {2: (4, 6), 3: (2, 4, 4)}
CHUNK_SPACE = {2: (24, 20), 3: (4, 24, 20)}  # unaligned with the tiles: chunks complete across tiles
EXPECTED_NAMES = [Path("array_1.ome.zarr"), Path("exp_raw_0.ome.zarr"), Path("sub/img_001.ome.zarr")]


# ---- helpers -----------------------------------------------------------------------------------
def make_sources(base: Path, axes: str, n_images: int = 3, scale: float = 1.0) -> list[Source]:
    """A file source, an in-memory ``"array"`` and a zarr URI, of slightly different sizes."""
    shape, c_out = ALL_AXES[axes]
    rng = np.random.default_rng(sum(map(ord, axes)))
    raw = base / "raw"
    sources = [str(raw / "sub" / "img_001.tif"), "array", zarr_uri(raw / "exp.zarr", "raw/0")]
    out = []
    for k in range(n_images):
        shp = [n - 3 * k if a in "YX" else n for a, n in zip(axes, shape, strict=True)]
        arr = rng.random(shp) * 100 * scale
        arr = arr.astype(np.uint16) if k == 0 else arr.astype(np.float32)
        meta = {"chunks": tuple(shp), "shards": tuple(shp)} if sources[k].startswith("file:") else {}
        out.append(Source(arr, axes, sources[k], data_idx=k, c_out=c_out, additional_metadata=meta))
    return out


def tiling(axes: str) -> dict:
    nd = 3 if "Z" in axes else 2
    return {"patch": PATCH[nd], "overlap": OVERLAP[nd]}


def strategy_chunks(axes: str) -> tuple[int, ...]:
    """Chunks in the strategy's declared order: (s)(t)(c) of 1, then small unaligned space chunks."""
    nd = 3 if "Z" in axes else 2
    c_out = ALL_AXES[axes][1]
    leading = sum(a in axes for a in "ST") + (c_out > 1 or "C" in axes)
    return (1,) * leading + CHUNK_SPACE[nd]


def streams_for(srcs: list[Source], tiled: bool, **kw) -> list[list[ImageRegionData]]:
    extra = tiling(srcs[0].axes) if tiled else {}
    return [predictions(s, **extra, **kw) for s in srcs]


def write_stream(strategy: OmeZarrWriteStrategy, out: Path, stream: list[ImageRegionData],
                 seed: int) -> None:
    for batch in batches(stream, seed):
        strategy.write_batch(out, batch)


def finalize_quietly(strategy: OmeZarrWriteStrategy) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return strategy.finalize()


def outputs(out: Path) -> list[Path]:
    return sorted(p.relative_to(out) for p in out.rglob("*.ome.zarr"))


def stored(path: Path) -> np.ndarray:
    return zarr.open_array(path / "0", mode="r")[...]


def half(level: np.ndarray, names: str) -> np.ndarray:
    """Independent reference of the next pyramid level: 2x2 means over y and x (float64)."""
    pads = [(0, n % 2 if a in "yx" else 0) for n, a in zip(level.shape, names, strict=True)]
    padded = np.pad(level.astype(np.float64), pads, constant_values=np.nan)
    shape: list[int] = []
    for n, a in zip(padded.shape, names, strict=True):
        shape += [n // 2, 2] if a in "yx" else [n, 1]
    return np.nanmean(padded.reshape(shape), axis=tuple(range(1, 2 * level.ndim, 2)))


def check_levels(path: Path, expected: np.ndarray, names: str, n_levels: int | None = None) -> int:
    """Every pyramid level equals the 2x2 means of the one above; returns the level count."""
    datasets = zarr.open_group(path, mode="r").attrs
    datasets = (datasets.get("ome", datasets))["multiscales"][0]["datasets"]
    if n_levels is not None:
        assert len(datasets) == n_levels
    want = expected.astype(np.float64)
    for k in range(1, len(datasets)):
        want = half(want, names)
        got = zarr.open_array(path / str(k), mode="r")[...]
        assert got.dtype == expected.dtype and got.shape == want.shape
        if expected.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-5)
        else:  # integers: rounded means of rounded means
            assert np.abs(got - want).max() <= 1.0
    return len(datasets)


def check_image(path: Path, expected: np.ndarray, axes: str, c_out: int, version: str | None) -> None:
    with nw.open_output(path, mode="r") as o:
        assert [(p.name, p.complete) for p in o.status()] == [("", True)]
    data = stored(path)
    assert data.dtype == expected.dtype
    np.testing.assert_array_equal(data, expected)
    # "auto" pyramid: y and x are halved until a plane fits in one level-0 chunk.
    names = "".join(stored_axes(axes, c_out))
    chunks = dict(zip(names, zarr.open_array(path / "0", mode="r").chunks, strict=True))
    size = {a: n for a, n in zip(names, data.shape, strict=True) if a in "yx"}
    n_levels = 1
    while any(size[a] > chunks[a] for a in size):
        size = {a: -(-n // 2) for a, n in size.items()}
        n_levels += 1
    check_levels(path, expected, names, n_levels)
    from ome_zarr_models import open_ome_zarr

    model_ = open_ome_zarr(zarr.open_group(path, mode="r"))
    if version is not None:
        assert type(model_).__module__.startswith(f"ome_zarr_models.v0{version[-1]}")
    names = [a.name for a in model_.ome_attributes.multiscales[0].axes]
    assert names == list(stored_axes(axes, c_out))


def run(tmp_path: Path, axes: str, tiled: bool, seed: int = 0, **strategy_kw) -> tuple[Path, list]:
    srcs = make_sources(tmp_path, axes)
    streams = streams_for(srcs, tiled)
    strategy = OmeZarrWriteStrategy(**strategy_kw)
    strategy.set_source_base(tmp_path / "raw")
    out = tmp_path / "out"
    write_stream(strategy, out, interleave(streams, seed), seed)
    assert finalize_quietly(strategy) == []
    return out, list(zip(srcs, streams, strict=True))


# ---- the stand-in itself -----------------------------------------------------------------------
def test_standin_reshape_matches_careamics():
    a = np.arange(2 * 3 * 4 * 5).reshape(4, 5, 2, 3)  # Y X S T, in a scrambled order
    r = careamics_reshape(a, "YXST")
    assert r.shape == (6, 1, 4, 5)
    for s in range(2):
        for t in range(3):
            np.testing.assert_array_equal(r[s * 3 + t, 0], a[:, :, s, t])
    assert careamics_reshape(np.zeros((7, 9, 3)), "YXS").shape == (3, 1, 7, 9)
    assert careamics_reshape(np.zeros((4, 7, 9)), "TYX").shape == (4, 1, 7, 9)


@pytest.mark.parametrize("axes", list(ALL_AXES))
def test_standin_tiles_stitch_to_the_whole_prediction(tmp_path, axes):
    src = make_sources(tmp_path, axes, n_images=1)[0]
    whole = np.stack([model(x, src.c_out) for x in src.data])
    np.testing.assert_array_equal(stitch(predictions(src)), whole)
    tiles = predictions(src, **tiling(axes))
    assert len(tiles) > src.n_samples  # several tiles per sample
    assert {p.region_spec["total_tiles"] for p in tiles} == {len(tiles)}
    np.testing.assert_array_equal(stitch(tiles), whole)


# ---- every axes string, untiled and tiled ------------------------------------------------------
CASES = [pytest.param(a, t, v, id=f"{a}-{'tiled' if t else 'untiled'}-{v}")
         for a in AXES for t in (False, True) for v in ("0.4", "0.5")]
CASES += [pytest.param(a, True, "0.5", id=f"{a}-tiled-0.5") for a in EXTRA_AXES]
# The default layout of large images (tests/layouts.py): tiles assembled into a shard per
# sample, lower levels gathering samples.
CASES += [pytest.param(a, True, "0.5-sharded", id=f"{a}-tiled-0.5-sharded") for a in AXES]


@pytest.mark.parametrize(("axes", "tiled", "version"), CASES)
def test_stream_equals_in_memory_stitch(tmp_path, axes, tiled, version):
    version, _, layout = version.partition("-")
    chunks = strategy_chunks(axes) if tiled else None
    with large_default(layout == "sharded"):
        out, images = run(tmp_path, axes, tiled, seed=len(axes), ngff_version=version, chunks=chunks)
    assert outputs(out) == EXPECTED_NAMES
    for src, stream in images:
        path = output_path(out, src.source, src.data_idx, tmp_path / "raw")
        expected = expected_output(stitch(stream), axes, src.array.shape)
        check_image(path, expected, axes, src.c_out, version)
        if layout == "sharded":
            assert zarr.open_array(path / "0", mode="r").shards is not None


def test_sample_count_is_data_shape0_for_tyx_and_yxs(tmp_path):
    # CAREamics' defect: it expects 1 sample for "TYX" and Y samples for "YXS".
    for axes, n in (("TYX", 4), ("YXS", 3)):
        srcs = make_sources(tmp_path / axes, axes, n_images=1)
        stream = predictions(srcs[0])
        strategy = OmeZarrWriteStrategy()
        out = tmp_path / axes / "out"
        strategy.write_batch(out, stream[:1])
        strategy.flush()  # what it stored is recorded in the store, for any reader
        with nw.open_output(out / "img_001.ome.zarr", mode="r") as o:
            progress = o[""].progress()
        assert (progress.total, progress.done, progress.complete) == (n, 1, False)
        strategy.write_batch(out, stream[1:])
        assert finalize_quietly(strategy) == []


# ---- naming ------------------------------------------------------------------------------------
def test_output_naming(tmp_path):
    d, base = tmp_path / "out", tmp_path / "raw"
    assert output_path(d, str(base / "a" / "b" / "img.tif"), 0, base) == d / "a/b/img.ome.zarr"
    assert output_path(d, str(base / "img.ome.tiff"), 0, base) == d / "img.ome.zarr"
    assert output_path(d, str(base / "a" / "img.tif"), 0, None) == d / "img.ome.zarr"
    assert output_path(d, "/elsewhere/img.tif", 0, base) == d / "img.ome.zarr"
    assert output_path(d, "array", 7, base) == d / "array_7.ome.zarr"
    assert output_path(d, zarr_uri(base / "exp.zarr", "raw/0"), 2, base) == d / "exp_raw_0.ome.zarr"
    assert output_path(d, zarr_uri(base / "s" / "p.ome.zarr", "A/1/0"), 0, base) == d / "s/p_A_1_0.ome.zarr"


def test_two_sources_with_one_output_name_are_refused(tmp_path):
    srcs = make_sources(tmp_path, "SYX", n_images=1)
    other = Source(srcs[0].array + 1, "SYX", str(tmp_path / "raw" / "other" / "img_001.tif"),
                   data_idx=1, c_out=1)
    strategy = OmeZarrWriteStrategy()  # no source_base: both map to out/img_001.ome.zarr
    out = tmp_path / "out"
    strategy.write_batch(out, predictions(srcs[0])[:1])  # image A in progress
    with pytest.raises(nw.OutputExistsError, match="set_source_base"):
        strategy.write_batch(out, predictions(other))
    with pytest.warns(UserWarning, match="incomplete"):
        strategy.finalize()


# ---- finalize, resume, overwrite ---------------------------------------------------------------
def test_finalize_lists_incomplete_images_and_a_rerun_completes_them(tmp_path):
    srcs = make_sources(tmp_path, "SCZYX")
    streams = streams_for(srcs, tiled=True)
    withheld = streams[1][-3:] + streams[2][:1]
    kept = [p for p in interleave(streams, 1) if not any(p is w for w in withheld)]
    out = tmp_path / "out"
    strategy = OmeZarrWriteStrategy(chunks=strategy_chunks("SCZYX"))
    strategy.set_source_base(tmp_path / "raw")
    write_stream(strategy, out, kept, 1)
    with pytest.warns(UserWarning, match="2 prediction image"):
        incomplete = strategy.finalize()
    paths = [output_path(out, s.source, s.data_idx, tmp_path / "raw") for s in srcs]
    assert sorted(incomplete) == sorted(str(p) for p in paths[1:])
    check_image(paths[0], expected_output(stitch(streams[0]), "SCZYX", srcs[0].array.shape),
                "SCZYX", 1, None)
    with nw.open_output(paths[1], mode="r") as o:
        p = o[""].progress()
    assert not p.complete and p.pending == (srcs[1].n_samples - 1,)

    resumed = OmeZarrWriteStrategy(chunks=strategy_chunks("SCZYX"))  # a new run, same settings
    resumed.set_source_base(tmp_path / "raw")
    resumed.write_batch(out, withheld)
    assert finalize_quietly(resumed) == []
    for src, stream, path in zip(srcs, streams, paths, strict=True):
        check_image(path, expected_output(stitch(stream), "SCZYX", src.array.shape), "SCZYX", 1, None)


def chunk_files(out: Path) -> dict[Path, int]:
    """Every stored chunk of every level under ``out``, with its modification time."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "/c/" in p.as_posix()}


def test_the_fingerprint_decides_what_a_second_run_does(tmp_path):
    """The same job again continues and changes nothing; another fingerprint is refused
    naming both before anything is written; overwrite=True replaces."""
    out, images = run(tmp_path, "SYX", tiled=True, fingerprint="model A")
    before = {p: stored(out / p) for p in EXPECTED_NAMES}
    files = chunk_files(out)
    with nw.open_output(out / "sub/img_001.ome.zarr", mode="r") as o:
        assert o[""].fingerprint == f"model A; source {images[0][0].source}"  # the job's, naming the source
    with nw.open_output(out / "array_1.ome.zarr", mode="r") as o:
        assert o[""].fingerprint == "model A; source array 1"

    # The whole job again (a new strategy, or none given): every write is a retry.
    for fingerprint in ("model A", None):
        again = OmeZarrWriteStrategy(fingerprint=fingerprint)
        again.set_source_base(tmp_path / "raw")
        write_stream(again, out, interleave([s for _, s in images], 4), 4)
        assert finalize_quietly(again) == []
        assert chunk_files(out) == files  # not a chunk written again
        for p, data in before.items():
            np.testing.assert_array_equal(stored(out / p), data)

    # A retrained model: refused, naming both fingerprints, before anything is written.
    srcs = make_sources(tmp_path, "SYX", scale=0.5)
    streams = streams_for(srcs, tiled=True)
    other = OmeZarrWriteStrategy(fingerprint="model B")
    other.set_source_base(tmp_path / "raw")
    with pytest.raises(nw.OutputExistsError, match=r"img_001.ome.zarr.*'model A; .*'model B; .*overwrite"):
        other.write_batch(out, [streams[0][0]])
    assert isinstance(nw.OutputExistsError("x"), FileExistsError)
    assert chunk_files(out) == files
    other.finalize()

    # overwrite=True replaces them with the new model's predictions.
    replacing = OmeZarrWriteStrategy(fingerprint="model B", overwrite=True)
    replacing.set_source_base(tmp_path / "raw")
    write_stream(replacing, out, interleave(streams, 3), 3)
    assert finalize_quietly(replacing) == []
    for src, stream in zip(srcs, streams, strict=True):
        path = output_path(out, src.source, src.data_idx, tmp_path / "raw")
        check_image(path, expected_output(stitch(stream), "SYX", src.array.shape), "SYX", 1, None)
        with nw.open_output(path, mode="r") as o:
            name = "array 1" if src.source == "array" else src.source
            assert o[""].fingerprint == f"model B; source {name}"
    assert not np.array_equal(stored(out / EXPECTED_NAMES[0]), before[EXPECTED_NAMES[0]])
    # ... and overwrite=True with the same fingerprint continues: nothing to redo.
    files = chunk_files(out)
    same = OmeZarrWriteStrategy(fingerprint="model B", overwrite=True)
    same.set_source_base(tmp_path / "raw")
    write_stream(same, out, interleave(streams, 5), 5)
    assert finalize_quietly(same) == []
    assert chunk_files(out) == files


def test_another_source_on_the_same_output_is_another_job(tmp_path):
    srcs = make_sources(tmp_path, "SYX", n_images=1)
    first = OmeZarrWriteStrategy(fingerprint="model A")  # no source_base: out/img_001.ome.zarr
    write_stream(first, tmp_path / "out", predictions(srcs[0]), 0)
    assert finalize_quietly(first) == []
    moved = Source(srcs[0].array, "SYX", str(tmp_path / "raw" / "other" / "img_001.tif"), data_idx=0, c_out=1)
    second = OmeZarrWriteStrategy(fingerprint="model A")
    with pytest.raises(nw.OutputExistsError, match=r"sub/img_001.tif'.*other/img_001.tif'"):
        second.write_batch(tmp_path / "out", predictions(moved)[:1])
    second.finalize()


def test_overwrite_never_deletes_what_ngff_writer_did_not_write(tmp_path):
    out, images = run(tmp_path, "SYX", tiled=False, fingerprint="model A")
    path = out / EXPECTED_NAMES[2]
    (path / "notes.txt").write_text("mine")  # a user's file inside an output
    kept = stored(path)
    replacing = OmeZarrWriteStrategy(fingerprint="model B", overwrite=True)
    replacing.set_source_base(tmp_path / "raw")
    sub = next(s for s, _ in images if s.source.endswith("img_001.tif"))
    with pytest.raises(nw.NotOursError, match=r"notes\.txt"):
        replacing.write_batch(out, predictions(sub)[:1])
    replacing.finalize()
    assert (path / "notes.txt").read_text() == "mine"
    np.testing.assert_array_equal(stored(path), kept)
    with nw.open_output(path, mode="r") as o:
        assert o[""].complete and o[""].fingerprint.startswith("model A")


@pytest.mark.parametrize("finalized", [True, False])
def test_a_reused_strategy_fingerprints_each_prediction(tmp_path, finalized):
    """One strategy kept on CAREamics' writer callback, predict() three times, as
    FinalizePredictions drives it: derive_fingerprint from the weights at each start."""
    first = streams_for(make_sources(tmp_path, "SYX", n_images=1), tiled=True)[0]
    second_srcs = make_sources(tmp_path, "SYX", n_images=1, scale=0.5)
    second = streams_for(second_srcs, tiled=True)[0]
    out = tmp_path / "out"
    path = output_path(out, second_srcs[0].source, 0, tmp_path / "raw")
    weights = {"conv.weight": np.array([[2.0, 1.0]], np.float32), "conv.bias": np.float32(0.5)}
    retrained = {**weights, "conv.bias": np.float32(0.25)}

    strategy = OmeZarrWriteStrategy()
    strategy.set_source_base(tmp_path / "raw")
    trained = strategy.derive_fingerprint(weights)
    assert trained == model_fingerprint(weights, strategy=strategy)
    write_stream(strategy, out, first, 0)
    if finalized:  # the Lightning callbacks finalize; CAREamics' own callback does not
        assert finalize_quietly(strategy) == []
    strategy.flush()  # what the first run wrote is stored (writes return before their stores)
    kept = stored(path)
    # The same model again: the same job, continued.
    strategy.set_source_base(tmp_path / "raw")
    assert strategy.derive_fingerprint(weights) == trained
    write_stream(strategy, out, first, 1)
    assert finalize_quietly(strategy) == []
    np.testing.assert_array_equal(stored(path), kept)
    # Retrained: another fingerprint (the weights' part differs), refused before writing.
    strategy.set_source_base(tmp_path / "raw")
    new = strategy.derive_fingerprint(retrained)
    assert new.split(",")[0] != trained.split(",")[0] and new.split(",")[1:] == trained.split(",")[1:]
    with pytest.raises(nw.OutputExistsError, match="overwrite=True") as refused:
        strategy.write_batch(out, second[:1])
    assert trained in str(refused.value) and new in str(refused.value)
    np.testing.assert_array_equal(stored(path), kept)
    strategy.overwrite = True  # the new run wins
    write_stream(strategy, out, second, 1)
    assert finalize_quietly(strategy) == []
    want = expected_output(stitch(second), "SYX", second_srcs[0].array.shape)
    check_image(path, want, "SYX", 1, None)
    # A fingerprint the caller set is kept.
    mine = OmeZarrWriteStrategy(fingerprint="mine")
    assert mine.derive_fingerprint(retrained) == "mine"


def test_model_fingerprint_names_weights_and_output_settings():
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    base = model_fingerprint(weights, strategy=OmeZarrWriteStrategy())
    assert base == model_fingerprint({"w": np.arange(6, dtype=np.float32).reshape(2, 3)},
                                     strategy=OmeZarrWriteStrategy())
    assert base.startswith("weights ") and ", settings " in base
    changed = {"w": weights["w"].copy()}
    changed["w"][1, 2] = np.nextafter(changed["w"][1, 2], np.float32(9))  # one ulp
    assert model_fingerprint(changed, strategy=OmeZarrWriteStrategy()) != base
    assert model_fingerprint({"w": weights["w"].reshape(3, 2)}, strategy=OmeZarrWriteStrategy()) != base
    assert model_fingerprint({"w": weights["w"].astype(np.float64)}, strategy=OmeZarrWriteStrategy()) != base
    # What changes the stored values changes it; how much memory the writer uses does not.
    for options in ({"dtype": "float16"}, {"tile_mode": "blend", "tile_overlap": (8, 8)}, {"pyramid": None}):
        assert model_fingerprint(weights, strategy=OmeZarrWriteStrategy(**options)) != base
    assert model_fingerprint(weights, strategy=OmeZarrWriteStrategy(max_buffer_bytes=1 << 20)) == base
    assert model_fingerprint(weights, strategy=OmeZarrWriteStrategy(tile_overlap=(8, 8))) == base  # crop


def test_records_careamics_could_not_mean_are_refused_before_writing(tmp_path):
    srcs = make_sources(tmp_path, "SYX", n_images=1)
    stream = predictions(srcs[0], mixed_types=False)
    strategy = OmeZarrWriteStrategy()
    no_idx = stream[0]._replace(region_spec={k: v for k, v in stream[0].region_spec.items()
                                             if k != "data_idx"})
    with pytest.raises(nw.SpecError, match="region_spec lacks data_idx"):
        strategy.write_batch(tmp_path / "out", [no_idx])
    with pytest.raises(nw.SpecError, match="axes 'SQX'"):
        strategy.write_batch(tmp_path / "out", [stream[0]._replace(axes="SQX")])
    assert not (tmp_path / "out").exists()  # nothing written
    strategy.write_batch(tmp_path / "out", stream[:1])
    with pytest.raises(nw.SpecMismatchError, match="allocated with axes 'SYX'"):
        strategy.write_batch(tmp_path / "out", [stream[1]._replace(axes="SXY")])
    with pytest.raises(nw.SpecError, match="lacks"):
        strategy.write_batch(tmp_path / "out", [object()])
    with pytest.warns(UserWarning, match="incomplete"):
        strategy.finalize()


def test_in_progress_output_with_other_settings_is_refused(tmp_path):
    srcs = make_sources(tmp_path, "SYX", n_images=1)
    stream = predictions(srcs[0])
    out = tmp_path / "out"
    first = OmeZarrWriteStrategy()
    first.write_batch(out, stream[:1])
    with pytest.warns(UserWarning, match="incomplete"):
        first.finalize()
    other = OmeZarrWriteStrategy(dtype="float64")
    with pytest.raises(nw.SpecMismatchError):
        other.write_batch(out, stream[1:])
    same = OmeZarrWriteStrategy()  # the same settings resume
    same.write_batch(out, stream[1:])
    assert finalize_quietly(same) == []


def test_foreign_data_at_the_output_path_is_left_alone(tmp_path):
    out = tmp_path / "out"
    foreign = zarr.open_group(out / "img_001.ome.zarr", mode="w")
    foreign.create_array("keep", shape=(4,), dtype="int32")[:] = 7
    srcs = make_sources(tmp_path, "SYX", n_images=1)
    strategy = OmeZarrWriteStrategy()
    with pytest.raises(nw.StoreError):
        strategy.write_batch(out, predictions(srcs[0])[:1])
    np.testing.assert_array_equal(zarr.open_array(out / "img_001.ome.zarr" / "keep")[:], 7)


@pytest.mark.parametrize("tiled", [False, True])
@pytest.mark.parametrize(("axes", "pyramid", "levels"), [
    ("SYX", None, 1),
    ("SYX", 2, 2),
    ("SCZYX", {"levels": 2, "factors": {"z": 2, "y": 2, "x": 2}}, 2),
])
def test_pyramid_option(tmp_path, axes, pyramid, levels, tiled):
    out, written = run(tmp_path, axes, tiled, chunks=strategy_chunks(axes), pyramid=pyramid)
    for src, stream in written:
        path = output_path(out, src.source, src.data_idx, tmp_path / "raw")
        expected = expected_output(stitch(stream), axes, src.array.shape)
        names = "".join(stored_axes(axes, src.c_out))
        if "z" in str(pyramid):  # z halved too: compare with means over z, y and x
            got = zarr.open_array(path / "1", mode="r")[...]
            ref = expected.astype(np.float64)
            zyx = ref.shape[-3:]
            pads = [(0, 0)] * (ref.ndim - 3) + [(0, n % 2) for n in zyx]
            padded = np.pad(ref, pads, constant_values=np.nan)
            blocks = padded.reshape(*ref.shape[:-3], *[v for n in padded.shape[-3:] for v in (n // 2, 2)])
            want = np.nanmean(blocks, axis=(-5, -3, -1))
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=0.5 if expected.dtype.kind == "u" else 0)
        else:
            check_levels(path, expected, names, n_levels=levels)


def test_float64_predictions_stored_as_float32(tmp_path):
    srcs = make_sources(tmp_path, "STCZYX")
    streams = streams_for(srcs, tiled=True, dtype=np.float64)
    out = tmp_path / "out"
    strategy = OmeZarrWriteStrategy(dtype="float32", chunks=strategy_chunks("STCZYX"))
    strategy.set_source_base(tmp_path / "raw")
    write_stream(strategy, out, interleave(streams, 5), 5)
    assert finalize_quietly(strategy) == []
    for src, stream in zip(srcs, streams, strict=True):
        expected = expected_output(stitch(stream), "STCZYX", src.array.shape).astype(np.float32)
        check_image(output_path(out, src.source, src.data_idx, tmp_path / "raw"), expected,
                    "STCZYX", 2, "0.5")


# ---- blend -------------------------------------------------------------------------------------
@pytest.mark.parametrize("ramp", ["cosine", "linear"])
@pytest.mark.parametrize("axes", ["YX", "SCZYX", "STCZYX"])
def test_blend_equals_in_memory_weighted_blend(tmp_path, axes, ramp):
    srcs = make_sources(tmp_path, axes)
    streams = streams_for(srcs, tiled=True, noise=0.05)  # overlaps disagree
    overlap = tiling(axes)["overlap"]
    out = tmp_path / "out"
    strategy = OmeZarrWriteStrategy(tile_mode="blend", tile_overlap=overlap, blend_ramp=ramp,
                                    chunks=strategy_chunks(axes))
    strategy.set_source_base(tmp_path / "raw")
    write_stream(strategy, out, interleave(streams, 2), 2)
    assert finalize_quietly(strategy) == []
    for src, stream in zip(srcs, streams, strict=True):
        path = output_path(out, src.source, src.data_idx, tmp_path / "raw")
        expected = expected_output(blend(stream, overlap, ramp), axes, src.array.shape)
        with nw.open_output(path, mode="r") as o:
            assert o[""].progress().complete
        data = stored(path)
        assert data.dtype == np.float32
        np.testing.assert_allclose(data, expected, rtol=1e-6, atol=1e-6)
        # and blending did something: the crop stitch differs in the overlaps
        assert not np.allclose(data, expected_output(stitch(stream), axes, src.array.shape), atol=1e-3)


def test_blend_resumes_across_runs_with_spilled_fragments(tmp_path):
    axes = "SCZYX"
    srcs = make_sources(tmp_path, axes)
    streams = streams_for(srcs, tiled=True, noise=0.05)
    overlap = tiling(axes)["overlap"]
    stream = interleave(streams, 3)
    out = tmp_path / "out"
    for k, part in enumerate((stream[:len(stream) // 2], stream[len(stream) // 2:])):
        strategy = OmeZarrWriteStrategy(tile_mode="blend", tile_overlap=overlap, chunks=strategy_chunks(axes),
                                        max_buffer_bytes=32 * 1024)  # small: partial chunks spill
        strategy.set_source_base(tmp_path / "raw")
        write_stream(strategy, out, part, k)
        if k == 0:
            with pytest.warns(UserWarning, match="incomplete"):
                assert len(strategy.finalize()) == 3
        else:
            assert finalize_quietly(strategy) == []
    for src, s in zip(srcs, streams, strict=True):
        path = output_path(out, src.source, src.data_idx, tmp_path / "raw")
        expected = expected_output(blend(s, overlap), axes, src.array.shape)
        np.testing.assert_allclose(stored(path), expected, rtol=1e-6, atol=1e-6)


def test_blend_with_an_axis_that_fits_in_one_tile(tmp_path):
    rng = np.random.default_rng(0)
    src = Source(rng.random((4, 30, 26)).astype(np.float32), "ZYX", "array", data_idx=0, c_out=1)
    stream = predictions(src, patch=(8, 16, 16), overlap=(4, 4, 4), noise=0.05)
    assert {np.asarray(p.data).shape[1] for p in stream} == {4}
    strategy = OmeZarrWriteStrategy(tile_mode="blend", tile_overlap=(4, 4, 4))
    write_stream(strategy, tmp_path, interleave([stream], 0), 0)
    assert finalize_quietly(strategy) == []
    expected = expected_output(blend(stream, (4, 4, 4)), "ZYX", src.array.shape)
    np.testing.assert_allclose(stored(tmp_path / "array_0.ome.zarr"), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["crop", "blend"])
@pytest.mark.parametrize("pad", ["end", "both"])
@pytest.mark.parametrize(("shape", "patch", "overlap"), [
    ((12, 40, 36), (16, 16, 16), (4, 4, 4)),   # z smaller than the patch (CAREamics' Z = 12 case)
    ((20, 10, 36), (8, 16, 16), (2, 4, 4)),    # y
    ((20, 30, 12), (8, 16, 16), (2, 4, 4)),    # x
    ((10, 12), (16, 16), (4, 4)),              # 2-D, both axes
])
def test_tiles_padded_beyond_a_small_image(tmp_path, mode, pad, shape, patch, overlap):
    """CAREamics zero-pads the tiles of an image smaller than the patch (data 16 x 32 x 32
    for a Z = 12 image, crop_size 12 along z): both modes store the image, not the padding."""
    rng = np.random.default_rng(1)
    axes = "ZYX" if len(shape) == 3 else "YX"
    src = Source(rng.random(shape).astype(np.float32), axes, "array", data_idx=0, c_out=1)
    padded = predictions(src, patch=patch, overlap=overlap, noise=0.05, pad=pad, mixed_types=False)
    plain = predictions(src, patch=patch, overlap=overlap, noise=0.05, mixed_types=False)
    assert {np.asarray(p.data).shape[1:] for p in padded} == {tuple(patch)}  # padded for real
    strategy = OmeZarrWriteStrategy(tile_mode=mode, tile_overlap=overlap if mode == "blend" else None)
    write_stream(strategy, tmp_path, interleave([padded], 0), 0)
    assert finalize_quietly(strategy) == []
    reference = blend(plain, overlap) if mode == "blend" else stitch(plain)
    expected = expected_output(reference, axes, src.array.shape)
    np.testing.assert_allclose(stored(tmp_path / "array_0.ome.zarr"), expected, rtol=1e-6, atol=1e-6)


def test_blend_needs_the_overlap():
    with pytest.raises(nw.SpecError, match="tile_overlap"):
        OmeZarrWriteStrategy(tile_mode="blend")


# ---- two processes, as DDP ranks ---------------------------------------------------------------
DDP_AXES = "SCZYX"


def ddp_stream(base: Path) -> list[list[ImageRegionData]]:
    streams = streams_for(make_sources(base, DDP_AXES, n_images=2), tiled=True, noise=0.05)
    return list(batches(interleave(streams, 9), 9))


def ddp_strategy(mode: str) -> OmeZarrWriteStrategy:
    blend_kw = {"tile_mode": "blend", "tile_overlap": tiling(DDP_AXES)["overlap"]} if mode == "blend" else {}
    return OmeZarrWriteStrategy(chunks=strategy_chunks(DDP_AXES), max_buffer_bytes=64 * 1024, **blend_kw)


def _rank(base: str, out: str, rank: int, world: int, mode: str) -> None:
    strategy = ddp_strategy(mode)
    strategy.set_source_base(Path(base) / "raw")
    for batch in ddp_stream(Path(base))[rank::world]:
        strategy.write_batch(Path(out), batch)
    strategy.flush()  # partial chunks become fragments the other rank (or a later run) completes
    strategy.start_run()  # closes the outputs, as the rank's exit would


@pytest.mark.parametrize("mode", ["crop", "blend"])
def test_two_processes_equal_one(tmp_path, mode):
    ref, multi = tmp_path / "ref", tmp_path / "multi"
    _rank(str(tmp_path), str(ref), 0, 1, mode)
    assert run_children(*[(_rank, (str(tmp_path), str(multi), r, 2, mode)) for r in range(2)]) == [0, 0]
    assert outputs(multi) == outputs(ref) == [Path("array_1.ome.zarr"), Path("sub/img_001.ome.zarr")]
    for name in outputs(ref):
        for root in (ref, multi):  # a strategy-less finalize after the ranks exited
            with nw.open_output(root / name, mode="a") as o:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    assert o.finalize() == []
                assert o[""].progress().complete
        a, b = stored(ref / name), stored(multi / name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    if mode == "crop":
        srcs = make_sources(tmp_path, DDP_AXES, n_images=2)
        streams = streams_for(srcs, tiled=True, noise=0.05)
        for src, stream in zip(srcs, streams, strict=True):
            path = output_path(multi, src.source, src.data_idx, tmp_path / "raw")
            check_image(path, expected_output(stitch(stream), DDP_AXES, src.array.shape), DDP_AXES, 1, "0.5")


# ---- a real Lightning Trainer.predict ----------------------------------------------------------
@pytest.mark.parametrize("writer", ["careamics-like", "ngff-writer"])
def test_lightning_trainer_predict(tmp_path, writer):
    pytest.importorskip("lightning")
    torch = pytest.importorskip("torch")
    from lightning.pytorch import LightningModule, Trainer
    from lightning.pytorch.callbacks import BasePredictionWriter

    from ngff_writer.lightning import FinalizePredictions, OmeZarrPredictionWriter

    axes, c_in, c_out = "SYX", 1, 2
    srcs = make_sources(tmp_path, axes, n_images=2)
    templates = [p for s in srcs for p in predictions(s, **tiling(axes), mixed_types=False)]
    inputs = []
    for p in templates:
        src = srcs[p.region_spec["data_idx"]]
        box = tuple(slice(a, a + n) for a, n in
                    zip(p.region_spec["coords"], p.region_spec["patch_size"], strict=True))
        inputs.append(src.data[(p.region_spec["sample_idx"], slice(None), *box)].astype(np.float32))

    class Tiles(torch.utils.data.Dataset):
        def __len__(self):
            return len(inputs)

        def __getitem__(self, i):
            return torch.from_numpy(inputs[i]), i

    class Tiny(LightningModule):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(c_in, c_out, 1)
            self.seen: list[ImageRegionData] = []

        def predict_step(self, batch, batch_idx):
            x, idx = batch
            y = self.conv(x).detach().cpu()
            preds = [templates[int(i)]._replace(data=y[b]) for b, i in enumerate(idx)]
            self.seen += [p._replace(data=p.data.numpy().copy()) for p in preds]
            return preds

    class CareamicsLikeWriter(BasePredictionWriter):  # what PredictionWriterCallback does
        def __init__(self, dirpath, strategy):
            super().__init__(write_interval="batch")
            self.dirpath, self.strategy = dirpath, strategy

        def setup(self, trainer, pl_module, stage=None):
            self.strategy.set_source_base(tmp_path / "raw")

        def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                               dataloader_idx=0):
            self.strategy.write_batch(self.dirpath, prediction)

    out = tmp_path / "out"
    strategy = OmeZarrWriteStrategy()
    if writer == "careamics-like":
        callbacks = [CareamicsLikeWriter(out, strategy), FinalizePredictions(strategy)]
    else:
        strategy.set_source_base(tmp_path / "raw")
        callbacks = [OmeZarrPredictionWriter(out, strategy)]
    module = Tiny()
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.predict(module, dataloaders=torch.utils.data.DataLoader(Tiles(), batch_size=3),
                    return_predictions=False)
    assert outputs(out) == [Path("array_1.ome.zarr"), Path("sub/img_001.ome.zarr")]
    for src in srcs:
        seen = [p for p in module.seen if p.region_spec["data_idx"] == src.data_idx]
        path = output_path(out, src.source, src.data_idx, tmp_path / "raw")
        check_image(path, expected_output(stitch(seen), axes, src.array.shape), axes, c_out, "0.5")
        with nw.open_output(path, mode="r") as o:  # the callbacks fingerprinted the module
            assert o[""].fingerprint.startswith(model_fingerprint(module, strategy=strategy))

    # Predicting again with the same weights is the same job: nothing changes.
    files = chunk_files(out)
    trainer.predict(module, dataloaders=torch.utils.data.DataLoader(Tiles(), batch_size=3),
                    return_predictions=False)
    assert chunk_files(out) == files
    # Retrained: refused before anything is written, naming both fingerprints.
    before = model_fingerprint(module, strategy=strategy)
    with torch.no_grad():
        module.conv.bias += 1
    with pytest.raises(nw.OutputExistsError, match="overwrite=True") as refused:
        trainer.predict(module, dataloaders=torch.utils.data.DataLoader(Tiles(), batch_size=3),
                        return_predictions=False)
    assert before in str(refused.value) and model_fingerprint(module, strategy=strategy) in str(refused.value)
    strategy.start_run()  # Lightning ended the run with the error: close what it opened
    assert chunk_files(out) == files


def test_writes_into_an_image_complete_already_are_retries(tmp_path):
    """A distributed sampler pads the last batch with repeats, another rank or process
    completed the image, the job runs again: none of it fails, nothing changes."""
    srcs = make_sources(tmp_path, "SYX", n_images=1)
    stream = predictions(srcs[0])
    out = tmp_path / "out"
    first = OmeZarrWriteStrategy(fingerprint="model A")
    first.write_batch(out, stream)  # completes the image
    first.flush()  # stored (write calls return before)
    files = chunk_files(out)
    second = OmeZarrWriteStrategy(fingerprint="model A")  # another rank of the same run
    second.write_batch(out, stream[:1])  # a padded duplicate: a retry, no error
    assert finalize_quietly(first) == [] and finalize_quietly(second) == []
    later = OmeZarrWriteStrategy(fingerprint="model A")  # the job run again, after the end
    write_stream(later, out, stream, 0)
    assert finalize_quietly(later) == []
    assert chunk_files(out) == files
    np.testing.assert_array_equal(stored(out / "img_001.ome.zarr"),
                                  expected_output(stitch(stream), "SYX", srcs[0].array.shape))


# ---- a job of several writer processes, one killed and restarted ------------------------------
def _writer(base: str, out: str, rank: int, world: int, crash: bool) -> None:
    """Writer ``rank`` of ``world`` processes sharing one job's predictions (``ddp_stream``).

    ``crash``: it stores its part of image 0, then is killed (SIGKILL: no clean-up, as a
    lost node) in the middle of its part of image 1.
    """
    strategy = ddp_strategy("crop")
    strategy.fingerprint = "model A"  # the same model and settings in every process
    strategy.set_source_base(Path(base) / "raw")
    share = [p for batch in ddp_stream(Path(base))[rank::world] for p in batch]
    if crash:
        image1 = [p for p in share if p.region_spec["data_idx"] == 1]
        strategy.write_batch(Path(out), [p for p in share if p.region_spec["data_idx"] == 0])
        strategy.flush()
        strategy.write_batch(Path(out), image1[:len(image1) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    strategy.write_batch(Path(out), share)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # images other writers still have parts of
        strategy.finalize()  # as FinalizePredictions does when the process's prediction ends


def test_a_restarted_writer_process_continues_images_others_completed(tmp_path):
    """Three writer processes stream one job into one directory; one is killed, another
    process completes an image, the killed one is restarted (a new process, a new
    strategy): it continues, its writes into the complete image are retries. Then the
    whole job again: nothing changes."""
    base, out = str(tmp_path), tmp_path / "out"
    ref = tmp_path / "ref"
    _rank(base, str(ref), 0, 1, "crop")  # the whole job in one process, for reference
    assert run_children((_writer, (base, str(out), 2, 3, True))) == [-signal.SIGKILL]
    assert run_children(*[(_writer, (base, str(out), r, 3, False)) for r in (0, 1)]) == [0, 0]
    image0, image1 = out / "sub/img_001.ome.zarr", out / "array_1.ome.zarr"
    with nw.open_output(image0, mode="a") as o:  # another process completes image 0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert o.finalize() == []
    with nw.open_output(image1, mode="r") as o:
        assert not o[""].complete  # writer 2's part is missing
    # Writer 2 restarted: its whole part again, image 0's included.
    assert run_children((_writer, (base, str(out), 2, 3, False))) == [0]
    for name in ("sub/img_001.ome.zarr", "array_1.ome.zarr"):
        with nw.open_output(out / name, mode="r") as o:
            assert o[""].complete and o[""].fingerprint.startswith("model A; source ")
        with nw.open_output(ref / name, mode="a") as o:
            o.finalize()
        assert stored(out / name).tobytes() == stored(ref / name).tobytes()
    # The whole job again, all three processes: every write a retry, not a chunk rewritten.
    files = chunk_files(out)
    assert run_children(*[(_writer, (base, str(out), r, 3, False)) for r in range(3)]) == [0, 0, 0]
    assert chunk_files(out) == files


def test_library_record_type_matches_careamics_fields():
    from ngff_writer.careamics import ImageRegionData as Library

    assert Library._fields == ImageRegionData._fields


def test_lightning_ddp_two_ranks(tmp_path):
    """Real DDP (two spawned ranks, gloo on CPU): one image, tiles split across ranks."""
    pytest.importorskip("lightning")
    pytest.importorskip("torch")
    import lightning_ddp

    lightning_ddp.predict(tmp_path / "out")
    path = tmp_path / "out" / "array_0.ome.zarr"
    with nw.open_output(path, mode="r") as out:
        assert out[""].progress().complete
    raw = lightning_ddp.image()
    expected = np.concatenate([raw, 2 * raw], axis=1)  # s c y x, the model's two channels
    np.testing.assert_array_equal(zarr.open_array(path / "0")[:], expected)
    # 70 x 90 in 16 x 16 chunks: three pyramid levels, whose chunks the ranks shared too.
    check_levels(path, expected, "scyx", n_levels=4)
    assert not list((path / "ngff_writer").rglob("*.npz"))  # no fragment left behind


# ---- one store for the whole run ---------------------------------------------------------------
@pytest.mark.parametrize("tiled", [False, True])
def test_a_run_into_one_collection_equals_one_store_per_source(tmp_path, tiled):
    each, images = run(tmp_path / "each", "SCZYX", tiled, seed=3)
    one, _ = run(tmp_path / "one", "SCZYX", tiled, seed=3, collection="run.ome.zarr", fingerprint="model A")
    root = one / "run.ome.zarr"
    series = zarr.open_group(root / "OME", mode="r").attrs["ome"]["series"]
    assert series == [str(src.data_idx) for src, _ in images]
    with nw.open_output(root, mode="r") as out:
        for src, _ in images:
            image = out[str(src.data_idx)]
            assert image.complete
            per_source = output_path(each, src.source, src.data_idx, tmp_path / "each" / "raw")
            assert image.progress().title == per_source.name.removesuffix(".ome.zarr")
            np.testing.assert_array_equal(image.array[:], stored(per_source))
    # The job again continues; another fingerprint is refused, naming the series; overwrite
    # replaces that series only.
    srcs = make_sources(tmp_path / "one", "SCZYX")
    files = chunk_files(root)
    again = OmeZarrWriteStrategy(collection="run.ome.zarr", fingerprint="model A")
    again.set_source_base(tmp_path / "one" / "raw")
    again.write_batch(one, predictions(srcs[0])[:1])
    assert finalize_quietly(again) == [] and chunk_files(root) == files
    other = OmeZarrWriteStrategy(collection="run.ome.zarr", fingerprint="model B")
    other.set_source_base(tmp_path / "one" / "raw")
    with pytest.raises(nw.OutputExistsError, match=r"run.ome.zarr/0: .*'model A; .*'model B; "):
        other.write_batch(one, predictions(srcs[0])[:1])
    other.finalize()
    other.overwrite = True
    stream = predictions(srcs[0], noise=0.05)
    write_stream(other, one, stream, 0)
    assert finalize_quietly(other) == []
    with nw.open_output(root, mode="r") as out:
        assert out["0"].fingerprint.startswith("model B") and out["1"].fingerprint.startswith("model A")
        np.testing.assert_array_equal(out["0"].array[:], expected_output(stitch(stream), "SCZYX",
                                                                         srcs[0].array.shape))


def test_collection_names_one_directory():
    with pytest.raises(nw.SpecError, match="collection"):
        OmeZarrWriteStrategy(collection="a/b.ome.zarr")


@pytest.mark.parametrize("copy_predictions", [False, True])
def test_predictions_are_stored_from_the_arrays_handed_over(tmp_path, copy_predictions):
    # CAREamics never writes into a prediction once its callback has it, so by default
    # the strategy stores from it without a copy (no memory kept, no copy made); with
    # copy_predictions=True each is copied (into the context's kept memory).
    arr = np.random.default_rng(1).random((4, 512, 512)).astype(np.float32)
    src = Source(arr, "SYX", "array", data_idx=0, c_out=1, additional_metadata={})
    stream = predictions(src)
    with nw.Context(inflight_bytes=8 << 20) as context:
        strategy = OmeZarrWriteStrategy(context=context, copy_predictions=copy_predictions)
        strategy.write_batch(tmp_path, stream[:2])
        copied = context.recycler.kept > 0 or context.recycler.misses > 0
        strategy.write_batch(tmp_path, stream[2:])
        assert finalize_quietly(strategy) == []
    assert copied == copy_predictions
    [path] = outputs(tmp_path)
    expected = np.stack([np.asarray(p.data) for p in stream])
    np.testing.assert_array_equal(stored(tmp_path / path), expected.reshape(stored(tmp_path / path).shape))
