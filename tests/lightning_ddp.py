"""A real two-rank DDP prediction (Lightning, gloo on CPU) writing through the strategy.

Module level, so that Lightning's spawned ranks can import everything they run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter

from ngff_writer.careamics import ImageRegionData, OmeZarrWriteStrategy
from ngff_writer.lightning import FinalizePredictions
from ngff_writer.tiling import tiles

SHAPE = (3, 1, 70, 90)  # S C Y X input
TILE, OVERLAP = (32, 32), (8, 8)


def image() -> np.ndarray:
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


def records() -> list[ImageRegionData]:
    """Every tile of every sample, as CAREamics describes them (data filled by the model)."""
    out = []
    for s in range(SHAPE[0]):
        for t in tiles(SHAPE[2:], TILE, OVERLAP):
            spec = {"data_idx": 0, "sample_idx": s, "coords": t.start, "patch_size": t.size,
                    "crop_coords": t.crop_start, "crop_size": t.crop_size,
                    "stitch_coords": t.stitch_start, "total_tiles": 0}
            out.append(ImageRegionData(None, "array", SHAPE, "float32", "SYX", "SYX",
                                       (SHAPE[0], *SHAPE[2:]), spec, {}))
    return out


class Tiles(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.records = records()
        self.image = image()

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        r = self.records[i].region_spec
        box = tuple(slice(a, a + n) for a, n in zip(r["coords"], r["patch_size"], strict=True))
        return torch.from_numpy(np.ascontiguousarray(self.image[(r["sample_idx"], slice(None), *box)])), i


class Doubler(LightningModule):
    """Two output channels: the input and twice the input."""

    def __init__(self) -> None:
        super().__init__()
        self.records = records()

    def predict_step(self, batch, batch_idx):
        x, idx = batch
        y = torch.cat([x, 2 * x], dim=1).numpy()
        return [self.records[int(i)]._replace(data=y[b]) for b, i in enumerate(idx)]


class CareamicsLikeWriter(BasePredictionWriter):
    """What CAREamics' PredictionWriterCallback does: hand each batch to the strategy."""

    def __init__(self, dirpath: Path, strategy: OmeZarrWriteStrategy) -> None:
        super().__init__(write_interval="batch")
        self.dirpath, self.strategy = dirpath, strategy

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0):
        self.strategy.write_batch(self.dirpath, prediction)


def predict(out: Path) -> None:
    """Run prediction on two CPU ranks; each writes its own tiles into the shared image."""
    strategy = OmeZarrWriteStrategy(chunks=(1, 1, 16, 16))
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False,
                      callbacks=[CareamicsLikeWriter(out, strategy), FinalizePredictions(strategy)])
    trainer.predict(Doubler(), dataloaders=torch.utils.data.DataLoader(Tiles(), batch_size=4),
                    return_predictions=False)
