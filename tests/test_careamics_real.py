"""The drop-in against CAREamics itself (0.3.5, torch on the CPU), not a stand-in.

A tiny N2V model is trained for a few steps on synthetic data; then CAREamics predicts
with its writer callback streaming into OME-Zarr (``ngff_writer.careamics.attach`` then
``CAREamist.predict``, ``predict_to_ome_zarr``, or a user-built ``Trainer``) and level 0
must equal the prediction ``CAREamist.predict`` returns in memory:
exactly when tiles are cropped, within float32 rounding when they are blended. These tests
need the ``careamics`` extra (``pip install -e '.[test,careamics]'``, which ``.ci/run`` uses);
without it they skip.
"""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import zarr

careamics = pytest.importorskip("careamics", reason="needs the careamics extra")

import ngff_writer as nw  # noqa: E402  (after the skip: nothing to import without careamics)
from ngff_writer.careamics import OmeZarrWriteStrategy, attach, predict_to_ome_zarr  # noqa: E402


def _careamist(tmp_path: Path, axes: str, patch: tuple[int, ...], data: np.ndarray,
               n_channels: int | None = None):
    from careamics import CAREamist
    from careamics.config import create_n2v_config

    config = create_n2v_config(experiment_name="tiny", data_type="array", axes=axes, patch_size=patch,
                               batch_size=8, num_epochs=1, num_steps=2, n_val_patches=2,
                               n_channels=n_channels)
    config.training_config.trainer_params.update(accelerator="cpu", devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        careamist = CAREamist(config, work_dir=tmp_path / "work", enable_progress_bar=False)
        careamist.train(train_data=data)
    return careamist


@pytest.fixture(scope="module")
def trained_2d(tmp_path_factory):
    rng = np.random.default_rng(0)
    train = rng.random((4, 64, 64), dtype=np.float32)
    return _careamist(tmp_path_factory.mktemp("n2v2d"), "SYX", (32, 32), train)


@pytest.fixture(scope="module")
def trained_3d(tmp_path_factory):
    rng = np.random.default_rng(1)
    train = rng.random((16, 64, 64), dtype=np.float32)
    return _careamist(tmp_path_factory.mktemp("n2v3d"), "ZYX", (8, 32, 32), train)


def _in_memory(careamist, data, **predict) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictions, _ = careamist.predict(data, **predict)
    return np.asarray(predictions[0])


def _level0(path: Path) -> np.ndarray:
    with nw.open_output(path, mode="r") as out:
        assert out[""].progress().complete
    return zarr.open_array(path / "0", mode="r")[:]


@pytest.mark.parametrize("tiled", [False, True])
def test_predict_to_ome_zarr_equals_careamics_in_memory_2d(tmp_path, trained_2d, tiled):
    data = np.random.default_rng(5).random((3, 96, 80), dtype=np.float32)
    predict = {"axes": "SYX", "data_type": "array", "batch_size": 2}
    if tiled:
        predict.update(tile_size=(32, 32), tile_overlap=(8, 8))
    want = _in_memory(trained_2d, data, **predict)
    written = predict_to_ome_zarr(trained_2d, data, tmp_path / "out", predict=predict)
    assert [p.name for p in written] == ["array_0.ome.zarr"]
    got = _level0(written[0])
    assert got.shape == (3, 96, 80)
    np.testing.assert_array_equal(got, want.reshape(got.shape))
    # the CAREamist's own writer is left as it was
    assert not trained_2d.prediction_writer.is_enabled


def test_zero_padded_3d_tiles_crop_and_blend(tmp_path, trained_3d):
    """Z = 12 is smaller than the tile's 16: CAREamics zero-pads those tiles."""
    data = np.random.default_rng(6).random((12, 64, 72), dtype=np.float32)
    predict = {"axes": "ZYX", "data_type": "array", "batch_size": 2,
               "tile_size": (16, 32, 32), "tile_overlap": (4, 8, 8)}
    want = _in_memory(trained_3d, data, **predict).reshape(12, 64, 72)
    crop = predict_to_ome_zarr(trained_3d, data, tmp_path / "crop", predict=predict)
    np.testing.assert_array_equal(_level0(crop[0]), want)
    blend = predict_to_ome_zarr(trained_3d, data, tmp_path / "blend", predict=predict, tile_mode="blend")
    got = _level0(blend[0])
    # Blending averages the tiles where they overlap, where CAREamics crops; a pixel that one
    # tile alone covers holds that tile's value either way, exactly.
    from ngff_writer.blend import count_tiles

    single = np.ones(want.shape, bool)
    for axis, (n, tile, overlap) in enumerate(zip(want.shape, (16, 32, 32), (4, 8, 8), strict=True)):
        alone = np.array([count_tiles(i, i + 1, n, tile, overlap) == 1 for i in range(n)])
        single &= np.expand_dims(alone, tuple(a for a in range(3) if a != axis))
    assert 0.3 < single.mean() < 1.0
    np.testing.assert_array_equal(got[single], want[single])
    assert not np.array_equal(got[~single], want[~single])  # and the overlaps were blended


def test_attach_then_predict_twice_is_two_runs(tmp_path, trained_2d):
    first = np.random.default_rng(7).random((2, 64, 64), dtype=np.float32)
    second = first[::-1].copy()
    predict = {"axes": "SYX", "data_type": "array"}
    strategy = attach(trained_2d, tmp_path / "out")
    try:
        want = _in_memory(trained_2d, first, **predict)
        path = strategy.written[0]
        np.testing.assert_array_equal(_level0(path), want.reshape(2, 64, 64))
        with pytest.raises(nw.OutputExistsError, match="earlier run"):
            trained_2d.predict(second, **predict)
        np.testing.assert_array_equal(_level0(path), want.reshape(2, 64, 64))  # untouched
        attach(trained_2d, tmp_path / "out", OmeZarrWriteStrategy(overwrite=True))
        want2 = _in_memory(trained_2d, second, **predict)
        np.testing.assert_array_equal(_level0(path), want2.reshape(2, 64, 64))
    finally:
        trained_2d.prediction_writer.enable_writing(False)


@pytest.mark.parametrize(("axes", "shape", "tiled"), [
    ("YX", (96, 80), True),
    ("TYX", (3, 64, 72), True),
    ("YXS", (64, 72, 2), False),
])
def test_other_axes_equal_careamics_in_memory(tmp_path, trained_2d, axes, shape, tiled):
    data = np.random.default_rng(8).random(shape, dtype=np.float32)
    predict = {"axes": axes, "data_type": "array", "batch_size": 2}
    if tiled:
        predict.update(tile_size=(32, 32), tile_overlap=(8, 8))
    want = _in_memory(trained_2d, data, **predict)
    (path,) = predict_to_ome_zarr(trained_2d, data, tmp_path / "out", predict=predict)
    got = _level0(path)
    want = np.squeeze(want)
    if axes == "YXS" and want.shape == shape:  # CAREamics answers in the input's order
        want = np.moveaxis(want, -1, 0)
    np.testing.assert_array_equal(got, want.reshape(got.shape))


def test_tiff_sources_keep_their_names_and_equal_careamics(tmp_path, trained_2d):
    tifffile = pytest.importorskip("tifffile")
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    rng = np.random.default_rng(9)
    images = {raw / "a.tif": rng.random((2, 64, 64), dtype=np.float32),
              raw / "sub" / "b.tif": rng.random((2, 80, 64), dtype=np.float32)}
    for path, data in images.items():
        tifffile.imwrite(path, data)
    predict = {"axes": "SYX", "data_type": "tiff", "tile_size": (32, 32), "tile_overlap": (8, 8)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wants, sources = trained_2d.predict(sorted(images), **predict)
    written = predict_to_ome_zarr(trained_2d, sorted(images), tmp_path / "out", predict=predict)
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == ["a.ome.zarr", "sub/b.ome.zarr"]
    for want, source in zip(wants, sources, strict=True):
        stem = Path(source).relative_to(raw).with_suffix(".ome.zarr")
        got = _level0(tmp_path / "out" / stem)
        np.testing.assert_array_equal(got.reshape(-1), np.asarray(want).reshape(-1))


def test_channels_stay_channels(tmp_path_factory, tmp_path):
    rng = np.random.default_rng(10)
    careamist = _careamist(tmp_path_factory.mktemp("n2vc"), "SCYX", (32, 32),
                           rng.random((4, 2, 64, 64), dtype=np.float32), n_channels=2)
    data = rng.random((2, 2, 64, 80), dtype=np.float32)
    predict = {"axes": "SCYX", "data_type": "array", "tile_size": (32, 32), "tile_overlap": (8, 8)}
    want = _in_memory(careamist, data, **predict)
    (path,) = predict_to_ome_zarr(careamist, data, tmp_path / "out", predict=predict)
    got = _level0(path)
    assert got.shape == (2, 2, 64, 80)  # s, c, y, x
    np.testing.assert_array_equal(got, want.reshape(got.shape))
    with nw.open_output(path, mode="r") as out:
        assert out[""].spec.axes == "scyx"


def test_the_lightning_trainer_route_with_careamics_datamodule(tmp_path, trained_2d):
    """A user-built Trainer: CAREamics' datamodule and writer callback, our strategy and
    finalize callback, nothing kept in memory (return_predictions=False)."""
    from careamics.lightning.callbacks import PredictionWriterCallback
    from careamics.lightning.data import CareamicsDataModule
    from careamics.models import get_model_constraints
    from lightning.pytorch import Trainer

    from ngff_writer.lightning import FinalizePredictions

    data = np.random.default_rng(11).random((3, 96, 80), dtype=np.float32)
    tiles = {"tile_size": (32, 32), "tile_overlap": (8, 8)}
    want = _in_memory(trained_2d, data, axes="SYX", data_type="array", **tiles)
    config = trained_2d.config
    data_config = config.data_config.convert_mode(
        new_mode="predicting", new_patch_size=tiles["tile_size"], overlap_size=tiles["tile_overlap"],
        new_data_type="array", new_axes="SYX", new_batch_size=4)
    datamodule = CareamicsDataModule(data_config=data_config, pred_data=data,
                                     model_constraints=get_model_constraints(config.algorithm_config.model))
    strategy = OmeZarrWriteStrategy()
    trainer = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                      callbacks=[PredictionWriterCallback(tmp_path / "out", write_strategy=strategy),
                                 FinalizePredictions(strategy)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert trainer.predict(model=trained_2d.model, datamodule=datamodule,
                               return_predictions=False) is None
    (path,) = strategy.written
    got = _level0(path)
    np.testing.assert_array_equal(got, want.reshape(got.shape))


def test_untiled_3d_equals_careamics(tmp_path, trained_3d):
    data = np.random.default_rng(12).random((16, 64, 64), dtype=np.float32)
    predict = {"axes": "ZYX", "data_type": "array"}
    want = _in_memory(trained_3d, data, **predict)
    (path,) = predict_to_ome_zarr(trained_3d, data, tmp_path / "out", predict=predict)
    got = _level0(path)
    np.testing.assert_array_equal(got, want.reshape(got.shape))


def test_care_one_to_two_channels(tmp_path_factory, tmp_path):
    """CARE predicting 2 channels from 1: the output has the prediction's channels."""
    from careamics import CAREamist
    from careamics.config import create_care_config

    rng = np.random.default_rng(13)
    config = create_care_config(experiment_name="care", data_type="array", axes="SYX",
                                patch_size=(32, 32), batch_size=8, num_epochs=1, num_steps=2,
                                n_val_patches=2, n_channels_in=1, n_channels_out=2,
                                target_axes="SCYX")
    config.training_config.trainer_params.update(accelerator="cpu", devices=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        careamist = CAREamist(config, work_dir=tmp_path_factory.mktemp("care"), enable_progress_bar=False)
        careamist.train(train_data=rng.random((4, 64, 64), dtype=np.float32),
                        train_data_target=rng.random((4, 2, 64, 64), dtype=np.float32))
    data = rng.random((2, 64, 80), dtype=np.float32)
    predict = {"axes": "SYX", "data_type": "array", "tile_size": (32, 32), "tile_overlap": (8, 8)}
    want = _in_memory(careamist, data, checkpoint="last", **predict)
    (path,) = predict_to_ome_zarr(careamist, data, tmp_path / "out", predict=predict)
    got = _level0(path)
    assert got.shape == (2, 2, 64, 80)
    np.testing.assert_array_equal(got, want.reshape(got.shape))


def test_zarr_sources_equal_careamics(tmp_path, trained_2d):
    raw = tmp_path / "exp.zarr"
    data = np.random.default_rng(14).random((2, 64, 64), dtype=np.float32)
    zarr.create_array(raw, name="raw/0", data=data, chunks=(1, 64, 64))
    uri = (raw / "raw" / "0").as_uri()
    predict = {"axes": "SYX", "data_type": "zarr", "tile_size": (32, 32), "tile_overlap": (8, 8)}
    want = _in_memory(trained_2d, [uri], **predict)
    written = predict_to_ome_zarr(trained_2d, [uri], tmp_path / "out", predict=predict)
    assert len(written) == 1
    got = _level0(written[0])
    np.testing.assert_array_equal(got, want.reshape(got.shape))



@pytest.mark.parametrize("launch", ["ddp_spawn", "ddp"])
def test_two_ddp_ranks_equal_careamics_in_memory(tmp_path, trained_2d, monkeypatch, launch):
    """Two DDP ranks (gloo on CPU) of CAREamics' own model, datamodule and writer callback
    write one tiled image together; level 0 equals ``CAREamist.predict`` exactly.

    ``ddp_spawn`` pickles the model to its ranks, which needs torch's ``file_system``
    sharing strategy for N2V's torch.Generator (see ``careamics_ddp``; with the default
    strategy rank 0 dies unpickling it and the launcher hangs); ``ddp`` relaunches a script.
    """
    import faulthandler
    import subprocess
    import sys

    import careamics_ddp
    import torch

    # Exactly equal needs the same convolution arithmetic: one thread per rank and for the
    # reference (the thread count changes sums by an ulp), and one tile a batch (so does
    # the batch's size; the ranks batch other tiles together than one process does).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    faulthandler.dump_traceback_later(240, exit=True)  # a hang fails the run, loudly
    started = datetime.now(UTC).isoformat(timespec="microseconds")
    try:
        data = careamics_ddp.data()
        want = _in_memory(trained_2d, data, axes=careamics_ddp.AXES, data_type="array",
                          batch_size=careamics_ddp.BATCH, **careamics_ddp.TILES)
        out = tmp_path / "out"
        if launch == "ddp_spawn":
            with careamics_ddp.file_system_sharing():
                careamics_ddp.predict(trained_2d.model, trained_2d.config, data, out, tmp_path,
                                      strategy="ddp_spawn")
        else:
            np.save(tmp_path / "data.npy", data)
            (checkpoint,) = trained_2d.get_checkpoints()
            run = subprocess.run([sys.executable, careamics_ddp.__file__, str(checkpoint),
                                  str(tmp_path / "data.npy"), str(out)], timeout=200,
                                 capture_output=True, text=True, cwd=tmp_path)
            assert run.returncode == 0, run.stderr[-3000:]
    finally:
        faulthandler.cancel_dump_traceback_later()
        torch.set_num_threads(threads)
    # Both ranks predicted, unevenly (Lightning's prediction sampler does not pad): every
    # one of the 27 tiles once, each sample's tiles split across the ranks.
    ranks = [json.loads((tmp_path / f"tiles_rank{r}.json").read_text()) for r in range(2)]
    assert [len(r) for r in ranks] == [14, 13]
    assert len({tuple(t) for r in ranks for t in r}) == 27
    assert all({t[0] for t in r} == {0, 1, 2} for r in ranks)
    path = out / "array_0.ome.zarr"
    got = _level0(path)  # complete
    assert got.shape == careamics_ddp.SHAPE
    np.testing.assert_array_equal(got, want.reshape(got.shape))
    with nw.open_output(path, mode="r") as output:
        assert output[""].progress().finalized_at  # final, not just complete
    assert not list(path.rglob("*.npz"))  # no fragment left behind
    # What predict_to_ome_zarr returns is read from the store: the ranks' outputs, whichever
    # process wrote them (this one wrote nothing under ddp_spawn).
    from ngff_writer.careamics import _written_since

    assert _written_since(out, started) == {path.resolve()}
