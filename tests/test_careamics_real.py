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

import contextlib
import json
import logging
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

careamics = pytest.importorskip("careamics", reason="needs the careamics extra")

from lightning.pytorch.callbacks import Callback  # noqa: E402  (CAREamics brings Lightning)

import ngff_writer as nw  # noqa: E402  (after the skip: nothing to import without careamics)
from ngff_writer.careamics import (  # noqa: E402
    OmeZarrWriteStrategy,
    attach,
    model_fingerprint,
    predict_to_ome_zarr,
)


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
    from ngff_writer._write.blend import count_tiles

    single = np.ones(want.shape, bool)
    for axis, (n, tile, overlap) in enumerate(zip(want.shape, (16, 32, 32), (4, 8, 8), strict=True)):
        alone = np.array([count_tiles(i, i + 1, n, tile, overlap) == 1 for i in range(n)])
        single &= np.expand_dims(alone, tuple(a for a in range(3) if a != axis))
    assert 0.3 < single.mean() < 1.0
    np.testing.assert_array_equal(got[single], want[single])
    assert not np.array_equal(got[~single], want[~single])  # and the overlaps were blended


class Inference(Callback):
    """What the model predicted: the ``data_idx`` of the records of every predicted batch."""

    def __init__(self) -> None:
        self.batches: list[set[int]] = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        from careamics.lightning.prediction import decollate_image_region_data

        self.batches.append({int(r.region_spec["data_idx"]) for r in decollate_image_region_data(outputs)})

    @property
    def images(self) -> set[int]:
        return set().union(*self.batches)


@contextlib.contextmanager
def inference(careamist):
    """Record the batches ``careamist``'s trainer predicts meanwhile."""
    seen = Inference()
    careamist.trainer.callbacks.append(seen)
    try:
        yield seen
    finally:
        careamist.trainer.callbacks.remove(seen)


def chunk_files(out: Path) -> dict[Path, int]:
    """Every stored chunk of every level under ``out``, with its modification time."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and "/c/" in p.as_posix()}


def _fingerprint(path: Path) -> str:
    with nw.open_output(path, mode="r") as out:
        return out[""].fingerprint


def test_attach_fingerprints_each_predict_from_the_weights(tmp_path):
    """predict, predict again, predict other arrays, retrain, predict: continued, continued,
    refused, refused, and replaced with overwrite=True."""
    careamist = _careamist(tmp_path / "train", "SYX", (32, 32),
                           np.random.default_rng(20).random((4, 64, 64), dtype=np.float32))
    first = np.random.default_rng(7).random((2, 64, 64), dtype=np.float32)
    second = first[::-1].copy()
    predict = {"axes": "SYX", "data_type": "array", "tile_size": (32, 32), "tile_overlap": (8, 8)}
    (trained,) = careamist.get_checkpoints()
    strategy = attach(careamist, tmp_path / "out")
    try:
        want = _in_memory(careamist, first, checkpoint=trained, **predict)
        (path,) = strategy.written
        np.testing.assert_array_equal(_level0(path), want.reshape(2, 64, 64))
        fingerprint = strategy.fingerprint
        assert _fingerprint(path) == f"{fingerprint}; source array 0"
        files = chunk_files(path)
        # The same model on the same data: the same job, continued, nothing rewritten.
        _in_memory(careamist, first, checkpoint=trained, **predict)
        assert strategy.fingerprint == fingerprint and chunk_files(path) == files
        # Other arrays into the same output: their contents are in the fingerprint.
        with pytest.raises(nw.OutputExistsError, match=r"arrays .*arrays .*overwrite=True"):
            _in_memory(careamist, second, checkpoint=trained, **predict)
        strategy.start_run()  # the error ended the run: close what it opened
        # Retrained (one more epoch, on other data): the weights that predict changed.
        careamist.trainer.fit_loop.max_epochs += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            careamist.train(train_data=np.random.default_rng(21).random((4, 64, 64), dtype=np.float32))
        retrained = tmp_path / "retrained.ckpt"
        careamist.trainer.save_checkpoint(retrained)
        with pytest.raises(nw.OutputExistsError, match="overwrite=True") as refused:
            _in_memory(careamist, first, checkpoint=retrained, **predict)
        strategy.start_run()
        old, new = re.findall(r"'(weights \w+), settings", str(refused.value))
        assert old == fingerprint.split(",")[0] and new != old
        assert chunk_files(path) == files
        np.testing.assert_array_equal(_level0(path), want.reshape(2, 64, 64))  # untouched
        strategy.overwrite = True
        want2 = _in_memory(careamist, first, checkpoint=retrained, **predict)
        np.testing.assert_array_equal(_level0(path), want2.reshape(2, 64, 64))
        assert _fingerprint(path).startswith(new) and not np.array_equal(want2, want)
    finally:
        careamist.prediction_writer.enable_writing(False)


def test_predict_to_ome_zarr_skips_complete_sources_before_inference(tmp_path, trained_2d, caplog):
    images = [np.random.default_rng(22 + k).random((2, 64, 72), dtype=np.float32) for k in range(3)]
    predict = {"axes": "SYX", "data_type": "array", "batch_size": 2, "tile_size": (32, 32),
               "tile_overlap": (8, 8)}
    out = tmp_path / "out"
    with inference(trained_2d) as first:
        written = predict_to_ome_zarr(trained_2d, images, out, predict=predict)
    assert [p.name for p in written] == [f"array_{k}.ome.zarr" for k in range(3)]
    assert first.images == {0, 1, 2}
    files = chunk_files(out)
    caplog.set_level(logging.WARNING, logger="ngff_writer.careamics")
    # The whole job again (the batch size changes no value): no inference at all, said so.
    with inference(trained_2d) as again:
        assert predict_to_ome_zarr(trained_2d, images, out, predict={**predict, "batch_size": 4}) == written
    assert again.batches == []
    assert "skips 3 of 3 sources" in caplog.text and all(str(p) in caplog.text for p in written)
    assert chunk_files(out) == files
    # One output lost: only its patches are predicted, and it lands where it was, array_1
    # (its data_idx kept), equal to CAREamics' own prediction of it.
    shutil.rmtree(out / "array_1.ome.zarr")
    caplog.clear()
    with inference(trained_2d) as third:
        assert predict_to_ome_zarr(trained_2d, images, out, predict=predict) == written
    assert third.images == {1} and len(third.batches) == 9  # 2 samples x 9 tiles, 2 a batch
    assert "skips 2 of 3 sources" in caplog.text and "array_1" not in caplog.text
    want = _in_memory(trained_2d, images[1], **predict)
    np.testing.assert_array_equal(_level0(out / "array_1.ome.zarr"), want.reshape(2, 64, 72))
    assert {p: t for p, t in chunk_files(out).items() if "array_1" not in str(p)} == {
        p: t for p, t in files.items() if "array_1" not in str(p)}


def test_predict_to_ome_zarr_refuses_a_retrained_model_before_inference(tmp_path, trained_2d):
    other = _careamist(tmp_path / "train", "SYX", (32, 32),
                       np.random.default_rng(23).random((4, 64, 64), dtype=np.float32))
    data = np.random.default_rng(24).random((2, 64, 64), dtype=np.float32)
    predict = {"axes": "SYX", "data_type": "array", "tile_size": (32, 32), "tile_overlap": (8, 8)}
    (path,) = predict_to_ome_zarr(trained_2d, data, tmp_path / "out", predict=predict)
    old, files, kept = _fingerprint(path), chunk_files(path), _level0(path)
    with inference(other) as seen, pytest.raises(nw.OutputExistsError, match="overwrite=True") as refused:
        predict_to_ome_zarr(other, data, tmp_path / "out", predict=predict)
    assert seen.batches == []  # refused before any inference
    weights = model_fingerprint(other.model).split(",")[0]  # "weights <hash>" of the other model
    assert old in str(refused.value) and old != re.findall(r"this job's '([^']*)'", str(refused.value))[0]
    assert weights in str(refused.value) and weights not in old
    assert chunk_files(path) == files
    np.testing.assert_array_equal(_level0(path), kept)
    (path,) = predict_to_ome_zarr(other, data, tmp_path / "out", predict=predict, overwrite=True)
    want = _in_memory(other, data, **predict)
    np.testing.assert_array_equal(_level0(path), want.reshape(2, 64, 64))
    assert _fingerprint(path).split(",")[0] == weights


def test_a_restarted_process_continues_images_another_process_completed(tmp_path, trained_2d, monkeypatch,
                                                                           caplog):
    """The issue's crashed job, with CAREamics itself: a writer process (a CAREamist from
    the checkpoint, attach, predict on two TIFFs) is killed in the middle of b.tif;
    another process predicts a.tif, completing it; the first is restarted (a new process,
    a new strategy) and completes b.tif, its predictions of a.tif being retries. Then
    predict_to_ome_zarr in this process (the in-memory model, or the checkpoint) finds the
    whole job done: the fingerprints agree across processes and routes."""
    import careamics_ddp
    import tifffile
    import torch

    raw = tmp_path / "raw"
    raw.mkdir()
    sources = [raw / "a.tif", raw / "b.tif"]
    rng = np.random.default_rng(25)
    for source in sources:
        tifffile.imwrite(source, rng.random(careamics_ddp.SHAPE, dtype=np.float32), photometric="minisblack")
    (checkpoint,) = trained_2d.get_checkpoints()
    out = tmp_path / "out"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same sums in every process (see the DDP test)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def job(files: list[Path], kill_after: int = 0) -> int:
        done = subprocess.run([sys.executable, careamics_ddp.__file__, "job", str(checkpoint), str(out),
                               str(kill_after), *map(str, files)], timeout=200, capture_output=True,
                              text=True, cwd=tmp_path)
        assert done.returncode in (0, -9), done.stderr[-3000:]
        return done.returncode

    try:
        # 27 tiles an image, one a batch: killed after all of a.tif and 10 tiles of b.tif.
        assert job(sources, kill_after=37) == -9
        with nw.open_output(out / "b.ome.zarr", mode="r") as o:
            assert not o[""].complete
        assert job(sources[:1]) == 0  # another process: a.tif alone
        with nw.open_output(out / "a.ome.zarr", mode="r") as o:
            assert o[""].complete
        assert job(sources) == 0  # restarted: continues (it died with OutputExistsError before)
        predict = {"axes": careamics_ddp.AXES, "data_type": "tiff", "batch_size": careamics_ddp.BATCH,
                   **careamics_ddp.TILES}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wants, names = trained_2d.predict([str(s) for s in sources], **predict)
    finally:
        torch.set_num_threads(threads)
    for want, name in zip(wants, names, strict=True):
        got = _level0(out / f"{Path(name).stem}.ome.zarr")
        np.testing.assert_array_equal(got, np.asarray(want).reshape(got.shape))
    files = chunk_files(out)
    caplog.set_level(logging.WARNING, logger="ngff_writer.careamics")
    for weights in (None, str(checkpoint)):
        with inference(trained_2d) as seen:
            written = predict_to_ome_zarr(trained_2d, [str(s) for s in sources], out, predict=predict,
                                          checkpoint=weights)
        assert seen.batches == [] and [p.name for p in written] == ["a.ome.zarr", "b.ome.zarr"]
        assert "skips 2 of 2 sources" in caplog.text
    assert chunk_files(out) == files


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

    import careamics_ddp
    import torch

    # Exactly equal needs the same convolution arithmetic: one thread per rank and for the
    # reference (the thread count changes sums by an ulp), and one tile a batch (so does
    # the batch's size; the ranks batch other tiles together than one process does).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    faulthandler.dump_traceback_later(240, exit=True)  # a hang fails the run, loudly
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
    # Each rank fingerprinted the model it holds (FinalizePredictions): both the one this
    # process computes from the same weights, or the second rank's declaration would have
    # been refused.
    datamodule = careamics_ddp.datamodule(trained_2d.config, data)
    datamodule.setup("predict")
    job = model_fingerprint(trained_2d.model, datamodule, OmeZarrWriteStrategy())
    assert _fingerprint(path) == f"{job}; source array 0"
