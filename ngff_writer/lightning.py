"""Lightning callbacks: finalize OME-Zarr predictions at the end of ``Trainer.predict``.

CAREamics' ``PredictionWriterCallback`` calls a strategy's ``write_batch`` after every
batch but has no end-of-prediction hook, so images completed by the last batches of a
rank, or completed only by the parts of several ranks, would never be finalized. Add
:class:`FinalizePredictions` next to it::

    strategy = OmeZarrWriteStrategy()
    trainer = Trainer(callbacks=[PredictionWriterCallback(dirpath, write_strategy=strategy),
                                 FinalizePredictions(strategy)])

When prediction starts, it fingerprints the job unless the strategy has a fingerprint
of yours (:meth:`~ngff_writer.careamics.OmeZarrWriteStrategy.derive_fingerprint`): the
module's weights as they are then (after Lightning loaded a checkpoint), the prediction
settings and in-memory inputs of a CAREamics datamodule, the strategy's settings. So a
re-run of the same job continues, and a retrained model's run is refused unless
``overwrite=True``, also on the plain Lightning route.

Under DDP every rank writes its own predictions into the shared stores (every rank
computes the same fingerprint from the same weights); at the end each rank saves its
partial chunks as fragments, all ranks meet at a barrier, and then each rank finalizes
the images it wrote (idempotent: shared images get identical metadata) and warns about
those still incomplete.

:class:`OmeZarrPredictionWriter` is a writer callback for plain Lightning modules whose
``predict_step`` returns a list of ``ImageRegionData``-like objects.

Needs the optional dependency ``lightning`` (``pip install ngff-writer[lightning]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from lightning.pytorch import LightningDataModule
    from lightning.pytorch.callbacks import BasePredictionWriter, Callback
except ImportError as exc:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "ngff_writer.lightning needs Lightning: pip install 'ngff-writer[lightning]'"
    ) from exc

from ._careamics.strategy import OmeZarrWriteStrategy

__all__ = ["FinalizePredictions", "OmeZarrPredictionWriter"]


def _finish(strategy: OmeZarrWriteStrategy, trainer: Any) -> None:
    strategy.flush()  # every rank: partial chunks become fragments other ranks can see
    trainer.strategy.barrier("ngff-writer-flushed")
    # Each rank finalizes the images it wrote; finalizing is idempotent, so images that
    # several ranks share end with the same final metadata whoever writes it last.
    strategy.finalize()
    trainer.strategy.barrier("ngff-writer-finalized")


class FinalizePredictions(Callback):
    """Fingerprint the job when prediction starts; finalize its images when it ends (DDP-safe)."""

    def __init__(self, strategy: OmeZarrWriteStrategy) -> None:
        self.strategy = strategy

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.strategy.derive_fingerprint(pl_module, trainer.datamodule)

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        _finish(self.strategy, trainer)


class OmeZarrPredictionWriter(BasePredictionWriter):
    """Write predictions (lists of ``ImageRegionData``-like objects) and finalize at the end.

    Parameters
    ----------
    dirpath
        Where outputs go.
    strategy
        The strategy to use; a default :class:`OmeZarrWriteStrategy` when None.
    """

    def __init__(self, dirpath: str | Path, strategy: OmeZarrWriteStrategy | None = None) -> None:
        super().__init__(write_interval="batch")
        self.dirpath = Path(dirpath)
        self.strategy = strategy or OmeZarrWriteStrategy()

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.strategy.start_run()  # a second Trainer.predict is a new run
        self.strategy.derive_fingerprint(pl_module, trainer.datamodule)

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.strategy.write_batch(self.dirpath, list(prediction))

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        _finish(self.strategy, trainer)


class _PredictSubset(LightningDataModule):
    """CAREamics' prediction datamodule, set up already, loading only some of its patches.

    :func:`~ngff_writer.careamics.predict_to_ome_zarr` skips the sources whose outputs
    are complete: their patches are left out of the loader, the dataset stays whole, so
    the remaining ones keep their ``data_idx``, their common source base and the
    normalization computed over all of them. What CAREamics reads from
    ``trainer.datamodule`` (the dataset, for its normalization; the source paths, for the
    writer's base) is the wrapped datamodule's. Module level, so ``ddp_spawn`` can pickle it.

    Parameters
    ----------
    datamodule
        A ``CareamicsDataModule`` after ``setup("predict")``: Lightning's ``setup`` call
        does nothing here, so the inputs are not read twice.
    patches
        Dataset indices to predict, in order; None for all.
    """

    def __init__(self, datamodule: Any, patches: list[int] | None) -> None:
        super().__init__()
        self.datamodule = datamodule
        self.patches = patches

    @property
    def predict_dataset(self) -> Any:
        return self.datamodule.predict_dataset

    @property
    def predict_source_paths(self) -> list[Path]:
        paths: list[Path] = self.datamodule.predict_source_paths
        return paths

    @property
    def config(self) -> Any:
        return self.datamodule.config

    def predict_dataloader(self) -> Any:
        loader = self.datamodule.predict_dataloader()
        if self.patches is None:
            return loader
        from torch.utils.data import DataLoader

        # CAREamics' loader (its batch size, collate function and loader options) over
        # the chosen patches; a sampler keeps their order, and Lightning splits it
        # across DDP ranks as it splits the whole dataset.
        params = {k: v for k, v in self.datamodule.config.pred_dataloader_params.items() if k != "shuffle"}
        return DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn,
                          sampler=self.patches, **params)
