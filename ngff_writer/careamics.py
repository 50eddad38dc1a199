"""A drop-in write strategy for CAREamics: stream ``ImageRegionData`` into OME-Zarr.

Hand :class:`OmeZarrWriteStrategy` to CAREamics' ``PredictionWriterCallback`` in place
of its TIFF/zarr strategies. It imports neither careamics nor torch: any object with the
fields of ``ImageRegionData`` works, and ``data`` may be anything ``np.asarray`` takes.

What it does with each prediction
---------------------------------
- Output: ``dirpath/<source dir relative to source_base>/<source stem>.ome.zarr``, one
  OME-Zarr image per source (``array_<data_idx>.ome.zarr`` for in-memory ``"array"``
  sources; a zarr URI ``file:///d/exp.zarr/raw/0`` becomes ``exp_raw_0.ome.zarr``).
- Samples: their count is ``data_shape[0]`` (CAREamics merges S and T, ``s * T + t``).
  The image keeps ``s`` and ``t`` where the original axes had them, with one sample per
  (s, t) pair; channels are the prediction's, not the input's.
- Untiled predictions (``PatchSpecs``) are stored at ``coords``; tiled ones
  (``TileSpecs``) by their crop/stitch triple, cropped (default) or blended
  (``tile_mode="blend"``, which needs ``tile_overlap``). Tiles of several images may be
  interleaved in any order and any batch size.
- Nothing is cached per image: memory holds at most the partial chunks of tiles.
- Pyramid levels (``pyramid="auto"`` by default) are built as predictions arrive, so
  napari can zoom out of an image while it is still being predicted.
- Existing outputs are never overwritten silently, and never silently kept. Each image
  stores the fingerprint of the job that makes it (:attr:`OmeZarrWriteStrategy.fingerprint`
  and the source; :func:`predict_to_ome_zarr`, :func:`attach` and
  :class:`~ngff_writer.lightning.FinalizePredictions` compute it from the model's weights
  and the prediction settings, see :func:`model_fingerprint`). The same job continues: a
  crashed run, a restarted process, the whole job re-run (an image complete already, also
  one another process completed, takes every prediction as a retry that changes nothing).
  Another fingerprint (a retrained model, other settings or inputs) raises
  :class:`~ngff_writer.OutputExistsError` naming both, before anything is written, unless
  ``overwrite=True``, which replaces the image (only what ngff-writer wrote, never while
  another writer is writing it). Without a fingerprint the strategy cannot tell a
  retrained model from the same one: every re-run continues.
- Runs: CAREamics calls ``set_source_base`` when each prediction starts, which begins a
  new run (so does :meth:`OmeZarrWriteStrategy.start_run`); :meth:`finalize` ends one.

Call :meth:`OmeZarrWriteStrategy.finalize` when prediction ends (CAREamics' callback has
no such hook; :mod:`ngff_writer.lightning` adds one, DDP-safe).

Under DDP (tested with CAREamics 0.3.5, two CPU ranks, gloo): ``strategy="ddp"`` works
as is. ``strategy="ddp_spawn"`` pickles the model to its ranks, and CAREamics' N2V module
holds a ``torch.Generator`` that torch cannot send with its default ``file_descriptor``
sharing strategy (pytorch/pytorch#146828): the rank dies unpickling it and the launcher
hangs. Call ``torch.multiprocessing.set_sharing_strategy("file_system")`` first. Under
DDP, every rank computes the same fingerprint (the same weights and settings), and
:attr:`OmeZarrWriteStrategy.written` lists what this process wrote (nothing in a
``ddp_spawn`` launcher); :func:`predict_to_ome_zarr` returns the output of every source.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._careamics.strategy import (
    ImageRegionData,
    OmeZarrWriteStrategy,
    Place,
    image_stacks,
    model_fingerprint,
    output_path,
)
from ._output.handle import open_output
from .errors import NgffWriterError, OutputExistsError, SpecError

__all__ = ["ImageRegionData", "OmeZarrWriteStrategy", "attach", "model_fingerprint", "output_path",
           "predict_to_ome_zarr"]

logger = logging.getLogger(__name__)


# ---- CAREamist -----------------------------------------------------------------------------------
def attach(careamist: Any, dirpath: Path | str, strategy: OmeZarrWriteStrategy | None = None,
           **options: Any) -> OmeZarrWriteStrategy:
    """Make ``careamist.predict(...)`` stream its predictions into OME-Zarr under ``dirpath``.

    A ``CAREamist`` builds its own writer callback with writing off and accepts no strategy
    object; this sets that callback's public ``write_strategy`` and ``dirpath``, enables
    writing, and adds :class:`~ngff_writer.lightning.FinalizePredictions` to its trainer's
    callbacks (once). Every later ``predict()`` is a new run, fingerprinted from the
    CAREamist's weights at that moment, its prediction settings and in-memory inputs
    (:meth:`OmeZarrWriteStrategy.derive_fingerprint`, unless the strategy has a
    fingerprint of yours): predicting again with the same model continues, and changes
    nothing where the images are complete; after ``train()`` again, or on other arrays,
    it raises :class:`~ngff_writer.OutputExistsError` unless ``overwrite=True``.

    Parameters
    ----------
    careamist
        A ``careamics.CAREamist``.
    dirpath
        Where the ``.ome.zarr`` outputs go.
    strategy
        The strategy to use; by default one made from ``options``.
    **options
        Passed to :class:`OmeZarrWriteStrategy` (``tile_mode``, ``overwrite``, ``pyramid``...).

    Returns
    -------
    OmeZarrWriteStrategy
        The strategy; its ``written`` lists the outputs of the last run.
    """
    from .lightning import FinalizePredictions  # needs lightning, which CAREamics brings

    if strategy is None:
        strategy = OmeZarrWriteStrategy(**options)
    elif options:
        raise SpecError("pass either a strategy or its options, not both")
    writer = careamist.prediction_writer
    writer.write_strategy = strategy
    writer.dirpath = Path(dirpath).resolve()
    writer.enable_writing(True)
    callbacks = careamist.trainer.callbacks
    callbacks[:] = [c for c in callbacks if not isinstance(c, FinalizePredictions)]
    callbacks.append(FinalizePredictions(strategy))
    return strategy


def predict_to_ome_zarr(careamist: Any, source: Any, dirpath: Path | str, *,
                        predict: Mapping[str, Any] | None = None, checkpoint: str | None = None,
                        **options: Any) -> list[Path]:
    """Predict ``source`` with a trained ``CAREamist`` into OME-Zarr; return the outputs.

    Runs the CAREamist's own trainer and model on CAREamics' own prediction datamodule,
    with its writer callback streaming into OME-Zarr and nothing kept in memory: unlike
    ``careamist.predict``, which returns (so holds) every prediction.

    Before predicting, it fingerprints the job (:func:`model_fingerprint`: the weights
    that will predict, the prediction settings, in-memory inputs) and looks at each
    source's output:

    - complete with this fingerprint: the source is skipped, before any inference is
      spent on it, and a warning on the logger ``ngff_writer.careamics`` names it (so a
      re-run of the whole job predicts only what is missing, and nothing when nothing is);
    - in progress with this fingerprint (a crashed run): predicted, and continued;
    - another fingerprint (a retrained model, other settings or inputs): raises
      :class:`~ngff_writer.OutputExistsError` naming both before anything is predicted,
      unless ``overwrite=True`` (then replaced, see :class:`OmeZarrWriteStrategy`).

    Skipping keeps every remaining source's ``data_idx`` and folder: CAREamics' dataset
    is built once for all sources, and only the remaining sources' patches are loaded,
    so outputs land where a run without skipping puts them (``array_<data_idx>``, a
    collection's series ``data_idx``, folders relative to the sources' common base).
    That holds for every data type, a directory of TIFFs, zarr groups and CZI files too:
    skipping happens after CAREamics has listed them.

    Parameters
    ----------
    careamist
        A trained ``careamics.CAREamist``.
    source
        What ``careamist.predict`` takes: an array, a path, or a list of them.
    dirpath
        Where the ``.ome.zarr`` outputs go (``<source stem>.ome.zarr``, see the module
        docstring).
    predict
        What ``careamist.predict`` would take besides the data: ``tile_size``,
        ``tile_overlap``, ``axes``, ``data_type``, ``batch_size``, ``output_axes``,
        ``channels``, ``in_memory``, ``num_workers``.
    checkpoint
        A checkpoint path, ``"last"`` or ``"best"`` to load first (its weights are
        fingerprinted); by default the model as it is in memory (after ``train()``: its
        last weights).
    **options
        Passed to :class:`OmeZarrWriteStrategy`. For ``tile_mode="blend"`` the
        ``tile_overlap`` defaults to ``predict["tile_overlap"]``. A ``fingerprint`` given
        here is used instead of the computed one.

    Returns
    -------
    list of Path
        The output image of every source, sorted: skipped ones too (under DDP, whichever
        rank wrote them). The CAREamist's writer is left as it was.
    """
    from careamics.lightning.callbacks.prediction.file_path_utils import common_source_base
    from careamics.lightning.data import CareamicsDataModule
    from careamics.models import get_model_constraints

    from .lightning import _PredictSubset  # needs lightning, which CAREamics brings

    predict = dict(predict or {})
    if options.get("tile_mode") == "blend" and "tile_overlap" not in options:
        options["tile_overlap"] = predict.get("tile_overlap", (48, 48))
    strategy = OmeZarrWriteStrategy(**options)
    config = careamist.config
    loader = {"num_workers": predict.pop("num_workers")} if "num_workers" in predict else None
    data_type = predict.pop("data_type", None)
    in_memory = predict.pop("in_memory", None)
    if in_memory is None and (data_type or config.data_config.data_type) in ("zarr", "czi"):
        in_memory = False  # as CAREamist.predict: these are never loaded whole
    # The same conversion CAREamist.predict makes, through CAREamics' public config API.
    data_config = config.data_config.convert_mode(
        new_mode="predicting", new_patch_size=predict.pop("tile_size", None),
        overlap_size=predict.pop("tile_overlap", (48, 48)), new_batch_size=predict.pop("batch_size", None),
        new_data_type=data_type, new_dataloader_params=loader,
        new_axes=predict.pop("axes", None), new_target_axes=predict.pop("output_axes", None),
        new_channels=predict.pop("channels", None), new_in_memory=in_memory)
    if predict:
        raise SpecError(f"predict options not understood: {', '.join(sorted(predict))}")
    datamodule = CareamicsDataModule(
        data_config=data_config, pred_data=source,
        model_constraints=get_model_constraints(config.algorithm_config.model))
    # Built once, here: its image stacks are the sources the writer will be handed, in
    # data_idx order, and their common base is the one CAREamics' callback will set.
    datamodule.setup("predict")
    dirpath = Path(dirpath).resolve()
    stacks = image_stacks(datamodule)
    strategy.set_source_base(common_source_base(datamodule.predict_source_paths))
    if strategy.fingerprint is None:  # set as the caller's: kept when the callbacks start
        strategy.fingerprint = model_fingerprint(_weights(careamist, checkpoint), datamodule, strategy)
    places = [strategy._place(dirpath, str(stack.source), i) for i, stack in enumerate(stacks)]
    done = [_done(place, strategy._image_fingerprint(str(stack.source), i), strategy.overwrite)
            for i, (stack, place) in enumerate(zip(stacks, places, strict=True))]
    todo = [i for i, finished in enumerate(done) if not finished]
    skipped = sorted(str(place.path) for place, finished in zip(places, done, strict=True) if finished)
    if skipped:
        logger.warning("predict_to_ome_zarr skips %d of %d sources, their outputs are complete with this "
                       "fingerprint (%s): %s", len(skipped), len(stacks), strategy.fingerprint,
                       ", ".join(skipped))
    if todo:
        dataset = datamodule.predict_dataset
        assert dataset is not None  # made by datamodule.setup("predict") above
        constructor = dataset.patch_constructor
        patches = None if len(todo) == len(stacks) else sorted(
            index for i in todo for index in constructor.get_patch_indices(i))
        writer = careamist.prediction_writer
        saved = (writer.write_strategy, getattr(writer, "dirpath", None), writer.is_enabled,
                 list(careamist.trainer.callbacks))
        attach(careamist, dirpath, strategy)
        try:
            careamist.trainer.predict(model=careamist.model, datamodule=_PredictSubset(datamodule, patches),
                                      ckpt_path=checkpoint, return_predictions=False)
        finally:
            writer.write_strategy, writer.dirpath, _, careamist.trainer.callbacks[:] = saved
            writer.enable_writing(saved[2])
    return sorted({place.path for place in places})


def _weights(careamist: Any, checkpoint: str | Path | None) -> Any:
    """The weights that will predict: the model's, or the checkpoint's ``state_dict``."""
    if checkpoint is None:
        return careamist.model
    import torch

    path = checkpoint
    if checkpoint in ("last", "best"):  # as Lightning resolves them
        callback = careamist.trainer.checkpoint_callback
        path = getattr(callback, f"{checkpoint}_model_path", "") if callback is not None else ""
        if not path:
            raise SpecError(f"checkpoint={checkpoint!r}: the CAREamist's trainer has no {checkpoint} "
                            "checkpoint; pass a checkpoint path")
    # Lightning stores the module's state_dict() as it is: the same entries, in order.
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _done(place: Place, fingerprint: str | None, overwrite: bool) -> bool:
    """Is this source's image complete with this fingerprint (skip it)?

    Raises
    ------
    OutputExistsError
        The image holds another fingerprint and ``overwrite`` is False: refused before
        any inference, as the strategy would refuse its first prediction.
    """
    if not place.store.exists():
        return False
    try:
        with open_output(place.store, mode="r") as output:
            image = output[place.name]
            found, complete = image.fingerprint, image.progress().complete
    except (NgffWriterError, KeyError):
        return False  # not an image (yet): the strategy decides when it declares it
    if fingerprint is not None and found != fingerprint:
        if overwrite:
            return False
        raise OutputExistsError(
            f"{place.path} holds another job's prediction: its fingerprint is {found!r}, this job's "
            f"{fingerprint!r}. Pass overwrite=True to replace it, or another dirpath; nothing was predicted"
        )
    return complete
