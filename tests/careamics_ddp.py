"""Real CAREamics prediction on two DDP ranks (gloo on CPU) streaming into OME-Zarr.

CAREamics' own model, prediction datamodule and ``PredictionWriterCallback``, with
:class:`~ngff_writer.careamics.OmeZarrWriteStrategy` and
:class:`~ngff_writer.lightning.FinalizePredictions`. Module level, so that Lightning's
ranks can import what they run: spawned ranks (``ddp_spawn``) unpickle ``RecordTiles``
from here; with ``strategy="ddp"`` Lightning relaunches this file as a script for rank 1.

Why ``ddp_spawn`` needs ``torch.multiprocessing.set_sharing_strategy("file_system")``
(see :func:`file_system_sharing`): ``ddp_spawn`` pickles the model to each rank with
torch's ``ForkingPickler``; CAREamics' N2V module holds a ``torch.Generator``
(``careamics/lightning/modules/n2v_utils/n2v_manipulate.py``, ``self.rng``), and torch
cannot send a Generator to a spawned process under the default ``file_descriptor``
sharing strategy (pytorch/pytorch#146828: the state tensor of ``Generator.__reduce__`` is
freed before the child maps it; the child dies with "unable to resize file <filename not
specified> to the right size: Invalid argument (22)"). The parent then hangs forever
instead of failing: CPython's ``popen_spawn_posix.Popen._launch`` writes the pickled
payload (larger than a pipe buffer here) while still holding the child's read end open.
``strategy="ddp"`` pickles nothing and needs no workaround.

usage (the ``ddp`` route): ``python careamics_ddp.py CHECKPOINT DATA.npy OUT``

It also runs one writer process of a job on TIFF files, through a ``CAREamist`` loaded
from a checkpoint and :func:`ngff_writer.careamics.attach`, optionally killed (SIGKILL)
after some batches: ``python careamics_ddp.py job CHECKPOINT OUT KILL_AFTER TIFF...``
(``KILL_AFTER`` 0: never).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback

from ngff_writer.careamics import OmeZarrWriteStrategy, attach
from ngff_writer.lightning import FinalizePredictions

AXES = "SYX"
TILES = {"tile_size": (32, 32), "tile_overlap": (8, 8)}
# One tile a batch: a convolution's result depends (by an ulp) on how many tiles share its
# batch, and the ranks batch other tiles together than one process does.
BATCH = 1
# 72 x 80 in 32 x 32 tiles overlapping by 8: 3 x 3 tiles a sample, 27 for 3 samples, an odd
# count: Lightning's prediction sampler (UnrepeatedDistributedSamplerWrapper, no padding)
# gives rank 0 14 tiles and rank 1 13, so the ranks end after different batches.
SHAPE = (3, 72, 80)


def data() -> np.ndarray:
    return np.random.default_rng(15).random(SHAPE, dtype=np.float32)


class RecordTiles(Callback):
    """Each rank saves which tiles it predicted (``tiles_rank<r>.json`` in ``dirpath``)."""

    def __init__(self, dirpath: Path) -> None:
        self.dirpath, self.tiles = Path(dirpath), []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        from careamics.lightning.prediction import decollate_image_region_data

        for record in decollate_image_region_data(outputs):
            spec = record.region_spec
            self.tiles.append([int(spec["sample_idx"]), *(int(v) for v in np.asarray(spec["coords"]))])

    def on_predict_end(self, trainer, pl_module):
        (self.dirpath / f"tiles_rank{trainer.global_rank}.json").write_text(json.dumps(self.tiles))


@contextlib.contextmanager
def file_system_sharing() -> Iterator[None]:
    """Let ``ddp_spawn`` send CAREamics' N2V module (its torch.Generator) to the ranks."""
    import torch.multiprocessing

    before = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        yield
    finally:
        torch.multiprocessing.set_sharing_strategy(before)


def datamodule(config: Any, images: np.ndarray) -> Any:
    """CAREamics' prediction datamodule for ``images``, tiled (not set up)."""
    from careamics.lightning.data import CareamicsDataModule
    from careamics.models import get_model_constraints

    data_config = config.data_config.convert_mode(
        new_mode="predicting", new_patch_size=TILES["tile_size"], overlap_size=TILES["tile_overlap"],
        new_data_type="array", new_axes=AXES, new_batch_size=BATCH)
    return CareamicsDataModule(data_config=data_config, pred_data=images,
                               model_constraints=get_model_constraints(config.algorithm_config.model))


def predict(model: Any, config: Any, images: np.ndarray, out: Path, record: Path, *,
            strategy: str) -> None:
    """Predict ``images`` on two CPU ranks with CAREamics' datamodule and writer callback."""
    from careamics.lightning.callbacks import PredictionWriterCallback

    writer = OmeZarrWriteStrategy()  # FinalizePredictions fingerprints the model on each rank
    trainer = Trainer(accelerator="cpu", devices=2, strategy=strategy, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[PredictionWriterCallback(out, write_strategy=writer),
                                 FinalizePredictions(writer), RecordTiles(record)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.predict(model=model, datamodule=datamodule(config, images), return_predictions=False)


class KillAfter(Callback):
    """Kill this process (SIGKILL: no clean-up, as a crash or a lost node) after ``n`` batches."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx + 1 >= self.n:
            os.kill(os.getpid(), signal.SIGKILL)


def job(checkpoint: Path, out: Path, sources: list[str], kill_after: int = 0) -> None:
    """One writer process: ``careamist.predict`` of TIFF ``sources`` streaming into ``out``.

    A new process with a new strategy each time, as a job scheduler restarts one;
    ``attach`` fingerprints the checkpoint's weights when prediction starts.
    """
    from careamics import CAREamist

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        careamist = CAREamist(checkpoint_path=checkpoint, work_dir=out.parent / "work_job",
                              enable_progress_bar=False)
        attach(careamist, out)
        if kill_after:
            careamist.trainer.callbacks.append(KillAfter(kill_after))
        careamist.predict(sources, data_type="tiff", axes=AXES, batch_size=BATCH, checkpoint=checkpoint,
                          **TILES)


def main(argv: list[str]) -> None:
    """The ``ddp`` route: rank 0 runs this script, Lightning relaunches it for rank 1."""
    from careamics import CAREamist

    if argv[0] == "job":
        job(Path(argv[1]), Path(argv[2]), argv[4:], int(argv[3]))
        return
    checkpoint, images, out = Path(argv[0]), np.load(argv[1]), Path(argv[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        careamist = CAREamist(checkpoint_path=checkpoint, work_dir=out.parent / "work_ddp",
                              enable_progress_bar=False)
    predict(careamist.model, careamist.config, images, out, out.parent, strategy="ddp")


if __name__ == "__main__":
    main(sys.argv[1:])
