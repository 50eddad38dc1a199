"""Lightning callbacks: finalize OME-Zarr predictions at the end of ``Trainer.predict``.

CAREamics' ``PredictionWriterCallback`` calls a strategy's ``write_batch`` after every
batch but has no end-of-prediction hook, so images completed by the last batches of a
rank, or completed only by the parts of several ranks, would never be finalized. Add
:class:`FinalizePredictions` next to it::

    strategy = OmeZarrWriteStrategy()
    trainer = Trainer(callbacks=[PredictionWriterCallback(dirpath, write_strategy=strategy),
                                 FinalizePredictions(strategy)])

Under DDP every rank writes its own predictions into the shared stores; at the end each
rank saves its partial chunks as fragments, all ranks meet at a barrier, and then each
rank finalizes the images it wrote (idempotent: shared images get identical metadata)
and warns about those still incomplete.

:class:`OmeZarrPredictionWriter` is a writer callback for plain Lightning modules whose
``predict_step`` returns a list of ``ImageRegionData``-like objects.

Needs the optional dependency ``lightning`` (``pip install ngff-writer[lightning]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from lightning.pytorch.callbacks import BasePredictionWriter, Callback
except ImportError as exc:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "ngff_writer.lightning needs Lightning: pip install 'ngff-writer[lightning]'"
    ) from exc

from .careamics import OmeZarrWriteStrategy

__all__ = ["FinalizePredictions", "OmeZarrPredictionWriter"]


def _finish(strategy: OmeZarrWriteStrategy, trainer: Any) -> None:
    strategy.flush()  # every rank: partial chunks become fragments other ranks can see
    trainer.strategy.barrier("ngff-writer-flushed")
    # Each rank finalizes the images it wrote; finalizing is idempotent, so images that
    # several ranks share end with the same final metadata whoever writes it last.
    strategy.finalize()
    trainer.strategy.barrier("ngff-writer-finalized")


class FinalizePredictions(Callback):
    """Finalize a strategy's images when prediction ends (DDP-safe)."""

    def __init__(self, strategy: OmeZarrWriteStrategy) -> None:
        self.strategy = strategy

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
        self.strategy.start_run()  # a second Trainer.predict is a new run, not a resume

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any,
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.strategy.write_batch(self.dirpath, list(prediction))

    def on_predict_end(self, trainer: Any, pl_module: Any) -> None:
        _finish(self.strategy, trainer)
