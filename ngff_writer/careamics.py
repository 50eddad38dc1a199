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
- Existing outputs are never overwritten silently, and never silently kept: an
  in-progress image with the same settings is resumed (a crashed run); a complete one,
  one with other settings, or one this strategy wrote in an earlier run (``predict()``
  called again with the same strategy) raises :class:`~ngff_writer.OutputExistsError`
  before anything is written, unless ``overwrite=True``, which replaces it.
- Runs: CAREamics calls ``set_source_base`` when each prediction starts, which begins a
  new run (so does :meth:`OmeZarrWriteStrategy.start_run`); :meth:`finalize` ends one.

Call :meth:`OmeZarrWriteStrategy.finalize` when prediction ends (CAREamics' callback has
no such hook; :mod:`ngff_writer.lightning` adds one, DDP-safe).

Under DDP (tested with CAREamics 0.3.5, two CPU ranks, gloo): ``strategy="ddp"`` works
as is. ``strategy="ddp_spawn"`` pickles the model to its ranks, and CAREamics' N2V module
holds a ``torch.Generator`` that torch cannot send with its default ``file_descriptor``
sharing strategy (pytorch/pytorch#146828): the rank dies unpickling it and the launcher
hangs. Call ``torch.multiprocessing.set_sharing_strategy("file_system")`` first. Under
DDP, :attr:`OmeZarrWriteStrategy.written` lists what this process wrote (nothing in a
``ddp_spawn`` launcher); :func:`predict_to_ome_zarr` reads the outputs from the store.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np

from .errors import ImageFinalizedError, NgffWriterError, OutputExistsError, SpecError, SpecMismatchError
from .output import Image, Output, open_output

__all__ = ["ImageRegionData", "OmeZarrWriteStrategy", "attach", "output_path", "predict_to_ome_zarr"]

_IMAGE = ""  # each output store is one image, at its root


class ImageRegionData(NamedTuple):
    """CAREamics' prediction record (same fields, same order), for loops without CAREamics.

    The strategy reads these fields from any object; this type is for callers that make
    predictions themselves. See ``shared/reference/careamics.md`` for their meaning:
    ``data`` is one prediction ``C (Z) Y X``; ``data_shape`` the input ``S C (Z) Y X`` with S
    and T merged; ``region_spec`` a PatchSpecs or TileSpecs dict.
    """

    data: Any
    source: str
    data_shape: tuple[int, ...]
    dtype: str
    axes: str
    target_axes: str
    original_data_shape: tuple[int, ...]
    region_spec: dict[str, Any]
    additional_metadata: dict[str, Any]


def _ints(value: Any) -> tuple[int, ...]:
    """Coordinates from lists, numpy arrays or tensors."""
    return tuple(int(v) for v in np.asarray(value).reshape(-1).tolist())


def output_path(dirpath: Path, source: str, data_idx: int, source_base: Path | None) -> Path:
    """Where the OME-Zarr image of a prediction goes (see the module docstring)."""
    source = str(source)
    if source == "array":
        return dirpath / f"array_{data_idx}.ome.zarr"
    parsed = urlparse(source)
    path_text = parsed.path if parsed.scheme == "file" else source
    if ".zarr" in path_text and not path_text.rstrip("/").endswith((".tif", ".tiff")):
        # A zarr URI: the store plus the array path inside it.
        head, _, inner = path_text.partition(".zarr")
        store = Path(head + ".zarr")
        inner_parts = [p for p in inner.split("/") if p]
        stem = "_".join([store.name.removesuffix(".zarr").removesuffix(".ome"), *inner_parts])
        folder = store.parent
    else:
        file = Path(path_text)
        stem = file.stem.removesuffix(".ome")  # CAREamics' stem; x.ome.tif -> x
        folder = file.parent
    if source_base is not None:
        try:
            folder = folder.resolve().relative_to(Path(source_base).resolve())
        except ValueError:
            folder = Path()
    else:
        folder = Path()
    return dirpath / folder / f"{stem}.ome.zarr"


@dataclass
class _Target:
    output: Output
    image: Image
    channels_in_data: bool  # the output has a c axis
    record: tuple[str, tuple[int, ...], tuple[int, ...]]  # axes, data_shape, original shape


_REQUIRED = ("data", "source", "data_shape", "axes", "original_data_shape", "region_spec")


def _check_record(pred: Any) -> None:
    """Refuse a record CAREamics could not have meant, before anything is written."""
    missing = [f for f in _REQUIRED if not hasattr(pred, f)]
    if missing:
        raise SpecError(f"a prediction record lacks {', '.join(missing)}: expected CAREamics' "
                        "ImageRegionData fields")
    spec = pred.region_spec
    if not isinstance(spec, Mapping):
        raise SpecError(f"{pred.source}: region_spec must be a mapping, got {type(spec).__name__}")
    lacking = [k for k in ("data_idx", "sample_idx") if k not in spec]
    if "crop_coords" in spec:
        lacking += [k for k in ("crop_size", "stitch_coords") if k not in spec]
    if lacking:
        raise SpecError(f"{pred.source}: region_spec lacks {', '.join(lacking)} (has "
                        f"{', '.join(sorted(map(str, spec)))})")
    axes = str(pred.axes).upper()
    if not axes or set(axes) - set("STCZYX") or len(set(axes)) != len(axes):
        raise SpecError(f"{pred.source}: axes {pred.axes!r} must be distinct letters of STCZYX")


class OmeZarrWriteStrategy:
    """Write CAREamics predictions into OME-Zarr as they arrive.

    Parameters
    ----------
    ngff_version
        ``"0.5"`` (default) or ``"0.4"``.
    chunks
        Chunk shape per output axis in ``(s)(t)(c)(z)yx`` order, or None for the default.
    compressor
        As in :meth:`ngff_writer.Output.create_image`.
    tile_mode
        ``"crop"`` (default): each tile's valid part is stored; ``"blend"``: overlapping
        tiles are averaged with weights ramping across the overlap.
    tile_overlap
        Overlap per space axis ((Z)YX) used for prediction; required for ``"blend"``.
    blend_ramp
        ``"cosine"`` or ``"linear"``.
    dtype
        Stored dtype; default: the prediction's. Narrowing (float64 → float32) is allowed.
    scale, units
        Physical pixel sizes and unit, as in ``create_image``.
    overwrite
        Replace outputs that exist (single process only: under DDP, clear ``dirpath``
        before launching instead).
    max_buffer_bytes
        Cap on memory for partial chunks of tiles, per image.
    pyramid
        Lower-resolution levels, built while predictions stream in: ``"auto"`` (default:
        halve Y and X until a plane fits in one chunk), a number of levels, a mapping
        ``{"levels", "factors", "method"}``, or None. As in ``create_image``.
    collection
        Write every image of a run into one store, ``dirpath/<collection>`` (e.g.
        ``"predictions.ome.zarr"``), as series numbered by ``data_idx`` and titled by their
        source (:meth:`ngff_writer.Output.create_series`: the bioformats2raw layout napari
        opens as a whole), instead of one store per source.
    """

    def __init__(
        self,
        *,
        ngff_version: str = "0.5",
        chunks: Sequence[int] | None = None,
        compressor: Any = "default",
        tile_mode: str = "crop",
        tile_overlap: Sequence[int] | None = None,
        blend_ramp: str = "cosine",
        dtype: Any = None,
        scale: Mapping[str, float] | None = None,
        units: str | Mapping[str, str] | None = None,
        overwrite: bool = False,
        max_buffer_bytes: int = 1 << 30,
        pyramid: Any = "auto",
        collection: str | None = None,
    ) -> None:
        if tile_mode not in ("crop", "blend"):
            raise SpecError(f"tile_mode must be 'crop' or 'blend', got {tile_mode!r}")
        if tile_mode == "blend" and tile_overlap is None:
            raise SpecError("tile_mode='blend' needs tile_overlap, the overlap used for prediction")
        self.ngff_version = ngff_version
        self.chunks = None if chunks is None else tuple(chunks)
        self.compressor = compressor
        self.tile_mode = tile_mode
        self.tile_overlap = None if tile_overlap is None else tuple(int(v) for v in tile_overlap)
        self.blend_ramp = blend_ramp
        self.dtype = dtype
        self.scale = scale
        self.units = units
        self.overwrite = overwrite
        self.max_buffer_bytes = max_buffer_bytes
        self.pyramid = pyramid
        if collection is not None and (not isinstance(collection, str) or not collection
                                       or "/" in collection.strip("/")):
            raise SpecError(f"collection must be a directory name such as 'predictions.ome.zarr', "
                            f"got {collection!r}")
        self.collection = collection
        self._source_base: Path | None = None
        # Images finalized after this moment were completed in this run (by another rank):
        # predictions for them are duplicates, e.g. a distributed sampler's padding.
        self._started = datetime.now(UTC).isoformat(timespec="microseconds")
        self._targets: dict[Path, _Target] = {}
        #: The open output of each store of this run (a collection's images share one).
        self._opened: dict[Path, Output] = {}
        self._owners: dict[Path, tuple[str, int]] = {}
        self._cleared: set[Path] = set()
        #: Outputs this object wrote in its earlier runs: results, not crashed work to resume.
        self._earlier: set[Path] = set()
        self._last_run: set[Path] = set()

    # ---- CAREamics' strategy protocol ---------------------------------------------------
    @property
    def written(self) -> list[Path]:
        """Outputs of the current run, or of the last one once it ended, sorted."""
        return sorted(self._targets or self._last_run)

    def set_source_base(self, source_base: Path | str | None) -> None:
        """Keep output folders relative to this common base of the sources.

        CAREamics calls it when each prediction starts, so it also starts a new run
        (:meth:`start_run`).
        """
        self.start_run()
        self._source_base = None if source_base is None else Path(source_base)

    def start_run(self) -> None:
        """Begin a new prediction run with this strategy.

        Outputs it wrote in earlier runs are results now: writing to them again raises
        :class:`~ngff_writer.OutputExistsError` before anything is written, unless
        ``overwrite=True`` (then they are replaced). Outputs left open by a run that was
        not finalized are flushed and closed first (their progress is kept).
        """
        for output in self._outputs():
            output.close()  # idempotent
        self._end_run()

    def _outputs(self) -> list[Output]:
        """The outputs of this run, each once (a collection's images share one)."""
        return list(self._opened.values())

    def _end_run(self) -> None:
        self._last_run = set(self._targets)
        self._earlier |= self._last_run  # the run is over: its outputs are results
        self._targets.clear()
        self._opened.clear()
        self._owners.clear()
        self._cleared.clear()

    def write_batch(self, dirpath: Path | str, predictions: Sequence[Any]) -> None:
        """Store every prediction of a decollated batch into its image."""
        for prediction in predictions:
            self._write(Path(dirpath), prediction)

    # ---- end of prediction ---------------------------------------------------------------
    def flush(self) -> None:
        """Save partial chunks of tiles to the store so other writers can complete them."""
        for target in self._targets.values():
            if not target.output.closed:
                target.image.flush()

    def finalize(self) -> list[str]:
        """Finalize every complete image, close outputs, and warn about incomplete ones.

        Returns
        -------
        list of str
            Paths of images that are still incomplete (in progress, resumable).
        """
        incomplete = []
        for path, target in self._targets.items():
            if target.output.closed:
                continue
            target.image.flush()
            if not target.image.finalize():
                incomplete.append(str(path))
        for output in self._outputs():  # after every image: a collection's share one
            output.close()
        self._end_run()
        if incomplete:
            warnings.warn(
                f"{len(incomplete)} prediction image(s) are incomplete (in progress, resumable): "
                + ", ".join(incomplete),
                stacklevel=2,
            )
        return incomplete

    # ---- one prediction ----------------------------------------------------------------
    def _write(self, dirpath: Path, pred: Any) -> None:
        _check_record(pred)
        spec = pred.region_spec
        data_idx = int(np.asarray(spec["data_idx"]))
        data = np.asarray(pred.data)
        target = self._target(dirpath, pred, data, data_idx)
        sample = int(np.asarray(spec["sample_idx"]))
        if not target.channels_in_data:
            data = data[0]
        image = target.image
        if image.is_final:
            return  # completed in this run, by this or another rank: a duplicate prediction
        try:
            self._store(image, spec, sample, data)
        except ImageFinalizedError:
            pass  # another rank finished it meanwhile: this prediction is a duplicate

    @staticmethod
    def _store(image: Image, spec: Mapping[str, Any], sample: int, data: np.ndarray) -> None:
        if "crop_coords" in spec:
            image.write_tile(sample, data, crop_start=_ints(spec["crop_coords"]),
                             crop_size=_ints(spec["crop_size"]),
                             stitch_start=_ints(spec["stitch_coords"]))
        else:
            n_space = sum(a in "zyx" for a in image.spec.axes)
            coords = _ints(spec.get("coords", (0,) * n_space))
            if any(coords) or data.shape != image.spec.layout.sample_shape:
                image.write_region(sample, data, start=coords)
            else:
                image.write_sample(sample, data)

    def _target(self, dirpath: Path, pred: Any, data: np.ndarray, data_idx: int) -> _Target:
        path = output_path(dirpath, pred.source, data_idx, self._source_base)
        title = None
        if self.collection is not None:  # one store; the image is its series data_idx
            title = path.name.removesuffix(".ome.zarr")
            path = dirpath / self.collection / str(data_idx)
        owner = (str(pred.source), data_idx)
        target = self._targets.get(path)
        record = (str(pred.axes).upper(), tuple(int(v) for v in pred.data_shape),
                  tuple(int(v) for v in pred.original_data_shape))
        if target is not None:
            if self._owners[path] != owner:
                raise OutputExistsError(
                    f"{owner[0]} (data_idx {data_idx}) and {self._owners[path][0]} (data_idx "
                    f"{self._owners[path][1]}) both map to {path}; call set_source_base() with "
                    "their common folder so their relative folders keep them apart"
                )
            if target.record != record:
                raise SpecMismatchError(
                    f"{path}: a prediction with axes {record[0]!r}, data_shape {record[1]} and "
                    f"original shape {record[2]} for an image allocated with axes "
                    f"{target.record[0]!r}, data_shape {target.record[1]} and original shape "
                    f"{target.record[2]}"
                )
            return target
        axes = str(pred.axes).upper()
        target_axes = str(getattr(pred, "target_axes", None) or axes).upper()
        data_shape = tuple(int(v) for v in pred.data_shape)  # S C (Z) Y X of the input
        original = tuple(int(v) for v in pred.original_data_shape)
        n_s = original[axes.index("S")] if "S" in axes else 1
        n_t = original[axes.index("T")] if "T" in axes else 1
        if n_s * n_t != data_shape[0]:
            raise SpecError(
                f"{pred.source}: data_shape[0] = {data_shape[0]} samples, but axes {axes!r} with "
                f"original shape {original} give S x T = {n_s} x {n_t}"
            )
        spatial = data_shape[2:]
        n_c = data.shape[0]
        keep_c = n_c > 1 or "C" in target_axes
        letters = [a for a in "st" if a.upper() in axes] + (["c"] if keep_c else [])
        letters += ["z", "y", "x"][-len(spatial):]
        sizes = {"s": n_s, "t": n_t, "c": n_c}
        sizes.update(zip("zyx"[-len(spatial):], spatial, strict=True))
        declared = "".join(letters)
        blend = None
        if self.tile_mode == "blend" and "crop_coords" in pred.region_spec:
            tile = data.shape[1:]
            # Keep overlap < tile: where one tile spans the whole axis (tile = axis length)
            # there is nothing to blend, and the grid has that single tile whatever the overlap.
            overlap = tuple(min(o, t - 1) for o, t in zip(self.tile_overlap, tile, strict=True))
            blend = {"tile_size": tile, "overlap": overlap, "ramp": self.blend_ramp}
        dtype = np.dtype(self.dtype) if self.dtype is not None else data.dtype

        # The store to clear or open: the image's own, or the collection holding it.
        store_path = path.parent if self.collection is not None else path
        if store_path not in self._cleared and store_path.exists():
            if self.overwrite:
                shutil.rmtree(store_path)
            elif path in self._earlier:
                raise OutputExistsError(
                    f"{path} holds this strategy's prediction from an earlier run; pass "
                    "overwrite=True to replace it, or another dirpath"
                )
        self._cleared.add(store_path)
        output = self._opened.get(store_path)
        shared = output is not None and not output.closed
        if not shared:
            output = open_output(store_path, mode="a", ngff_version=self.ngff_version,
                                 max_buffer_bytes=self.max_buffer_bytes)
        options = {"sample_axes": "".join(a for a in "st" if a in declared) or None,
                   "chunks": self.chunks, "compressor": self.compressor, "scale": self.scale,
                   "units": self.units, "cast": "same_kind", "blend": blend, "pyramid": self.pyramid,
                   "exist_ok": True}
        shape = tuple(sizes[a] for a in declared)
        try:
            if self.collection is not None:
                image = output.create_series(data_idx, shape, declared, dtype, title=title, **options)
            else:
                image = output.create_image(_IMAGE, shape, declared, dtype, **options)
        except Exception:
            if not shared:
                output.close()
            raise
        progress = image.progress()
        if progress.complete and (progress.finalized_at or "") < self._started:
            if not shared:
                output.close()
            raise OutputExistsError(
                f"{path} is a complete prediction from an earlier run; pass overwrite=True or "
                "another dirpath"
            )
        target = _Target(output, image, keep_c, record)
        self._opened[store_path] = output
        self._targets[path] = target
        self._owners[path] = owner
        return target


# ---- CAREamist -----------------------------------------------------------------------------------
def attach(careamist: Any, dirpath: Path | str, strategy: OmeZarrWriteStrategy | None = None,
           **options: Any) -> OmeZarrWriteStrategy:
    """Make ``careamist.predict(...)`` stream its predictions into OME-Zarr under ``dirpath``.

    A ``CAREamist`` builds its own writer callback with writing off and accepts no strategy
    object; this sets that callback's public ``write_strategy`` and ``dirpath``, enables
    writing, and adds :class:`~ngff_writer.lightning.FinalizePredictions` to its trainer's
    callbacks (once). Every later ``predict()`` is a new run (see the module docstring).

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
        A checkpoint path to load first; by default the model as it is in memory (after
        ``train()``: its last weights).
    **options
        Passed to :class:`OmeZarrWriteStrategy`. For ``tile_mode="blend"`` the
        ``tile_overlap`` defaults to ``predict["tile_overlap"]``.

    Returns
    -------
    list of Path
        The images written, sorted: those finalized during this call and those left in
        progress, read from ``dirpath`` (so complete under DDP, whichever rank wrote them).
        The CAREamist's writer is left as it was.
    """
    from careamics.lightning.data import CareamicsDataModule
    from careamics.models import get_model_constraints

    predict = dict(predict or {})
    if options.get("tile_mode") == "blend" and "tile_overlap" not in options:
        options["tile_overlap"] = predict.get("tile_overlap", (48, 48))
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
    writer = careamist.prediction_writer
    saved = (writer.write_strategy, getattr(writer, "dirpath", None), writer.is_enabled,
             list(careamist.trainer.callbacks))
    strategy = attach(careamist, dirpath, **options)
    started = datetime.now(UTC).isoformat(timespec="microseconds")
    try:
        careamist.trainer.predict(model=careamist.model, datamodule=datamodule,
                                  ckpt_path=checkpoint, return_predictions=False)
    finally:
        writer.write_strategy, writer.dirpath, _, careamist.trainer.callbacks[:] = saved
        writer.enable_writing(saved[2])
    return sorted(set(strategy.written) | _written_since(Path(dirpath), started))


def _written_since(dirpath: Path, started: str) -> set[Path]:
    """Outputs under ``dirpath`` finalized since ``started`` or still in progress, read from the store.

    Under DDP the ranks write and the launching process (``ddp_spawn``) or rank 0
    (``ddp``) saw only part of it, or nothing: the store knows all of it.
    """
    if not dirpath.exists():
        return set()
    try:
        output = open_output(dirpath, mode="r")
    except NgffWriterError:
        return set()
    with output:
        return {(dirpath / p.name).resolve() for p in output.status()
                if not p.complete or (p.finalized_at or "") >= started}
