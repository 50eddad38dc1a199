"""The CAREamics write strategy: ``ImageRegionData`` records into OME-Zarr images, and the
fingerprint of a prediction job. :mod:`ngff_writer.careamics` documents it (users import it
from there); it lives here, below both the CAREamist helpers and the Lightning callbacks.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlparse

import numpy as np

from .._output.handle import Image, Output, open_output
from .._write.context import Context
from ..errors import OutputExistsError, SpecError, SpecMismatchError

__all__ = ["ImageRegionData", "OmeZarrWriteStrategy", "Place", "image_stacks", "model_fingerprint",
           "output_path"]

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


class Place(NamedTuple):
    """Where one source's image goes."""

    path: Path  # what ``written`` and predict_to_ome_zarr name: the image's directory
    store: Path  # the output it is in: the image itself, or the collection holding it
    name: str  # the image's name in that output
    title: str | None  # a collection's series title


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
    fingerprint
        What produces the predictions (e.g. :func:`model_fingerprint`): each image stores
        it with its source, and a later run continues an image only with the same one
        (see the module docstring). None (default): the same job whatever wrote the
        image, so a retrained model's run continues an old model's images; the Lightning
        callbacks (:class:`~ngff_writer.lightning.FinalizePredictions`) set it at each
        prediction start from the model's weights (:meth:`derive_fingerprint`).
    ngff_version
        ``"0.5"`` (default) or ``"0.4"``.
    chunks
        Chunk shape per output axis in ``(s)(t)(c)(z)yx`` order, or None for the default.
    shards
        Shard shape in the same order, None for one file per chunk, or ``"auto"``
        (default): one shard per sample for images of 1 GiB or more, as in
        :meth:`ngff_writer.Output.create_image`.
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
    translation
        Where every image lies in a larger space (``{"y": 1024.0, "x": 0.0}``: a crop of a
        larger volume), as in ``create_image``.
    overwrite
        Replace an image that holds another job's predictions (another fingerprint, or
        other settings) instead of refusing it; one of this very job is continued. As
        ``create_image(overwrite=True)``: only what ngff-writer wrote is deleted
        (:class:`~ngff_writer.NotOursError` otherwise) and never while another writer
        is writing it (:class:`~ngff_writer.OutputInUseError`). Without a fingerprint
        every image of a run is replaced when this process first writes to it: under
        DDP give one (the Lightning callbacks do), or the ranks replace each other's.
    max_buffer_bytes
        Cap on memory for partial chunks of tiles, per image.
    pyramid
        Lower-resolution levels, built while predictions stream in: ``"auto"`` (default:
        halve Y and X until a plane fits in one chunk), a number of levels counting level
        0, a mapping ``{"levels", "factors", "method"}``, or None. As in ``create_image``.
    collection
        Write every image of a run into one store, ``dirpath/<collection>`` (e.g.
        ``"predictions.ome.zarr"``), as series numbered by ``data_idx`` and titled by their
        source (:meth:`ngff_writer.Output.create_series`: the bioformats2raw layout napari
        opens as a whole), instead of one store per source.
    context
        The :class:`~ngff_writer.Context` (threads, budget of data in flight) every output
        of the strategy writes with; default: :func:`~ngff_writer.default_context`. All
        the strategy's outputs share it, so an output kept open per source costs no threads.
    copy_predictions
        False (default): each prediction is stored from the array CAREamics hands over,
        without a copy (``copy=False`` in :meth:`~ngff_writer.Image.write_sample`), so
        the predict loop does not wait for one. CAREamics never writes into a prediction
        once its callback has it (its own write strategies keep them, uncopied, until an
        image is complete). True: copy each, for a loop of your own that reuses its output
        buffer between batches.

    Attributes
    ----------
    fingerprint
        The job's fingerprint, as above; may be set between runs.
    """

    def __init__(
        self,
        *,
        fingerprint: str | None = None,
        ngff_version: str = "0.5",
        chunks: Sequence[int] | None = None,
        shards: Sequence[int] | str | None = "auto",
        compressor: Any = "default",
        tile_mode: str = "crop",
        tile_overlap: Sequence[int] | None = None,
        blend_ramp: str = "cosine",
        dtype: Any = None,
        scale: Mapping[str, float] | None = None,
        translation: Mapping[str, float] | None = None,
        units: str | Mapping[str, str] | None = None,
        overwrite: bool = False,
        max_buffer_bytes: int = 1 << 30,
        pyramid: Any = "auto",
        collection: str | None = None,
        context: Context | None = None,
        copy_predictions: bool = False,
    ) -> None:
        if tile_mode not in ("crop", "blend"):
            raise SpecError(f"tile_mode must be 'crop' or 'blend', got {tile_mode!r}")
        if tile_mode == "blend" and tile_overlap is None:
            raise SpecError("tile_mode='blend' needs tile_overlap, the overlap used for prediction")
        self.fingerprint = fingerprint
        self.ngff_version = ngff_version
        self.chunks = None if chunks is None else tuple(chunks)
        self.shards = shards if shards is None or isinstance(shards, str) else tuple(shards)
        self.compressor = compressor
        self.tile_mode = tile_mode
        self.tile_overlap = None if tile_overlap is None else tuple(int(v) for v in tile_overlap)
        self.blend_ramp = blend_ramp
        self.dtype = dtype
        self.scale = scale
        self.translation = translation
        self.units = units
        self.overwrite = overwrite
        self.max_buffer_bytes = max_buffer_bytes
        self.pyramid = pyramid
        self.copy_predictions = bool(copy_predictions)
        if collection is not None and (not isinstance(collection, str) or not collection
                                       or "/" in collection.strip("/")):
            raise SpecError(f"collection must be a directory name such as 'predictions.ome.zarr', "
                            f"got {collection!r}")
        self.collection = collection
        self.context = context
        self._source_base: Path | None = None
        # The fingerprint derive_fingerprint set last: replaced at the next derivation,
        # where one a caller set is kept.
        self._derived: str | None = None
        self._targets: dict[Path, _Target] = {}
        #: The open output of each store of this run (a collection's images share one).
        self._opened: dict[Path, Output] = {}
        self._owners: dict[Path, tuple[str, int]] = {}
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

        Outputs left open by a run that was not finalized are flushed and closed first
        (their progress is kept); the next prediction for an image declares it again,
        which checks the fingerprint (see the module docstring).
        """
        for output in self._outputs():
            output.close()  # idempotent
        self._end_run()

    def _outputs(self) -> list[Output]:
        """The outputs of this run, each once (a collection's images share one)."""
        return list(self._opened.values())

    def _end_run(self) -> None:
        self._last_run = set(self._targets)
        self._targets.clear()
        self._opened.clear()
        self._owners.clear()

    def write_batch(self, dirpath: Path | str, predictions: Sequence[Any]) -> None:
        """Store every prediction of a decollated batch into its image."""
        for prediction in predictions:
            self._write(Path(dirpath), prediction)

    # ---- the job's fingerprint -----------------------------------------------------------
    def derive_fingerprint(self, model: Any, datamodule: Any = None) -> str | None:
        """Set :attr:`fingerprint` from ``model`` unless a caller set one; return it.

        :func:`model_fingerprint` of ``model``, ``datamodule`` and this strategy. A
        fingerprint derived here is derived again at the next call (the model may have
        been retrained meanwhile); one a caller set (the constructor's, an assignment)
        is kept. The Lightning callbacks call it when each prediction starts.
        """
        if self.fingerprint is None or self.fingerprint == self._derived:
            self.fingerprint = self._derived = model_fingerprint(model, datamodule, self)
        return self.fingerprint

    def _settings(self) -> dict[str, Any]:
        """What this strategy changes in the stored images (for the fingerprint)."""
        blend = [self.tile_overlap, self.blend_ramp] if self.tile_mode == "blend" else None
        return {"ngff_version": self.ngff_version, "chunks": self.chunks, "compressor": self.compressor,
                "tile_mode": self.tile_mode, "blend": blend,
                "dtype": None if self.dtype is None else np.dtype(self.dtype).str,
                "scale": self.scale, "units": self.units, "pyramid": self.pyramid,
                # Named only when given: the fingerprints of jobs from before it stay the same.
                **({"translation": self.translation} if self.translation else {}),
                **({"shards": self.shards} if self.shards != "auto" else {})}

    def _image_fingerprint(self, source: str, data_idx: int) -> str | None:
        """The fingerprint stored with one source's image: the job's, naming the source."""
        if self.fingerprint is None:
            return None  # no fingerprint: whatever is there is taken as this job's
        # Another source landing on the same output is then another job too.
        name = f"array {data_idx}" if source == "array" else source
        return f"{self.fingerprint}; source {name}"

    def _place(self, dirpath: Path, source: str, data_idx: int) -> Place:
        path = output_path(dirpath, source, data_idx, self._source_base)
        if self.collection is None:
            return Place(path, path, _IMAGE, None)
        # One store for the run; the image is its series data_idx, titled by the source.
        store = dirpath / self.collection
        return Place(store / str(data_idx), store, str(data_idx), path.name.removesuffix(".ome.zarr"))

    # ---- end of prediction ---------------------------------------------------------------
    def flush(self) -> None:
        """Wait until every prediction given is stored; save partial chunks of tiles for other writers."""
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
        # Into an image that is complete already (this job's: a re-run, another rank's or
        # process's work, a sampler's padding) a write is a retry that changes nothing.
        self._store(target.image, spec, sample, data, self.copy_predictions)

    @staticmethod
    def _store(image: Image, spec: Mapping[str, Any], sample: int, data: np.ndarray, copy: bool) -> None:
        if "crop_coords" in spec:
            image.write_tile(sample, data, crop_start=_ints(spec["crop_coords"]),
                             crop_size=_ints(spec["crop_size"]),
                             stitch_start=_ints(spec["stitch_coords"]), copy=copy)
        else:
            n_space = sum(a in "zyx" for a in image.spec.axes)
            coords = _ints(spec.get("coords", (0,) * n_space))
            if any(coords) or data.shape != image.spec.layout.sample_shape:
                image.write_region(sample, data, start=coords, copy=copy)
            else:
                image.write_sample(sample, data, copy=copy)

    def _target(self, dirpath: Path, pred: Any, data: np.ndarray, data_idx: int) -> _Target:
        place = self._place(dirpath, str(pred.source), data_idx)
        path = place.path
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
        if self.tile_mode == "blend" and self.tile_overlap is not None and "crop_coords" in pred.region_spec:
            tile = data.shape[1:]
            # Keep overlap < tile: where one tile spans the whole axis (tile = axis length)
            # there is nothing to blend, and the grid has that single tile whatever the overlap.
            overlap = tuple(min(o, t - 1) for o, t in zip(self.tile_overlap, tile, strict=True))
            blend = {"tile_size": tile, "overlap": overlap, "ramp": self.blend_ramp}
        dtype = np.dtype(self.dtype) if self.dtype is not None else data.dtype

        output = self._opened.get(place.store)
        shared = output is not None and not output.closed
        if output is None or output.closed:  # not shared
            output = open_output(place.store, mode="a", ngff_version=self.ngff_version,
                                 max_buffer_bytes=self.max_buffer_bytes, context=self.context)
        # The core decides from the fingerprint: continue this job's image (in progress or
        # complete), refuse another job's, or replace it with overwrite=True (only what
        # ngff-writer wrote, and no live writer's).
        options = {"sample_axes": "".join(a for a in "st" if a in declared) or None,
                   "chunks": self.chunks, "shards": self.shards, "compressor": self.compressor,
                   "scale": self.scale,
                   "translation": self.translation, "units": self.units, "cast": "same_kind",
                   "blend": blend, "pyramid": self.pyramid,
                   "exist_ok": True, "fingerprint": self._image_fingerprint(str(pred.source), data_idx),
                   "overwrite": self.overwrite}
        shape = tuple(sizes[a] for a in declared)
        try:
            if self.collection is not None:
                image = output.create_series(data_idx, shape, declared, dtype, title=place.title, **options)
            else:
                image = output.create_image(_IMAGE, shape, declared, dtype, **options)
        except OutputExistsError as exc:
            if not shared:
                output.close()
            if type(exc) is not OutputExistsError:
                raise  # NotOursError: its message names the path
            raise OutputExistsError(f"{path}: {exc}") from exc
        except Exception:
            if not shared:
                output.close()
            raise
        target = _Target(output, image, keep_c, record)
        self._opened[place.store] = output
        self._targets[path] = target
        self._owners[path] = owner
        return target


# ---- fingerprints --------------------------------------------------------------------------------
#: Fields of CAREamics' prediction DataConfig that change the predicted values (not the
#: batch size, workers or in_memory).
_DATA_SETTINGS = ("data_type", "axes", "target_axes", "channels", "patching", "normalization")


def model_fingerprint(model: Any, datamodule: Any = None,
                      strategy: OmeZarrWriteStrategy | None = None) -> str:
    """The fingerprint of a prediction job: what makes its images' values.

    ``"weights <hash>, settings <hash>"`` (and ``", arrays <hash>"`` for in-memory inputs),
    each hash the first 16 hex digits of a SHA-256 over:

    - weights: every entry of the model's ``state_dict()`` in order, its name, dtype,
      shape and bytes (the exact bits, whatever the device);
    - settings: the prediction settings of a CAREamics ``datamodule`` (data type, axes,
      output axes, channels, tiling with tile size and overlap, normalization with its
      statistics; not the batch size nor the workers) and the strategy's output settings
      (dtype, tile mode, blend overlap and ramp, pyramid, chunks, compressor, NGFF
      version, scale, units);
    - arrays: the contents of the datamodule's in-memory inputs (``"array"`` sources),
      whose names say nothing of them. Files and zarr arrays are named by their path in
      each image's fingerprint (:class:`OmeZarrWriteStrategy`), not hashed: one changed
      in place at the same path is not noticed.

    Processes and DDP ranks with the same weights and settings compute the same string.

    Parameters
    ----------
    model
        A torch module (a CAREamics ``LightningModule``) or a ``state_dict`` mapping (of
        tensors or numpy arrays).
    datamodule
        CAREamics' prediction datamodule, set up (``setup("predict")``); other objects
        add nothing.
    strategy
        The strategy writing the predictions.

    Returns
    -------
    str
        The fingerprint.
    """
    state = model if isinstance(model, Mapping) else model.state_dict()
    weights = hashlib.sha256()
    for name, value in state.items():
        weights.update(f"{name}\0".encode())
        if hasattr(value, "detach"):  # a tensor: its exact bytes, whatever the device and dtype
            import torch

            flat = value.detach().to("cpu").contiguous().reshape(-1)
            weights.update(f"{value.dtype} {tuple(value.shape)}\0".encode())
            weights.update(flat.view(torch.uint8).numpy())
        elif isinstance(value, np.ndarray | np.number):
            array = np.ascontiguousarray(value)
            weights.update(f"{array.dtype.str} {array.shape}\0".encode())
            weights.update(array.reshape(-1).view(np.uint8))
        else:  # extra state a module keeps
            weights.update(repr(value).encode())
    config: Any = getattr(datamodule, "config", None)
    data = config.model_dump(mode="json") if hasattr(config, "model_dump") else {}
    settings = {"data": {k: data.get(k) for k in _DATA_SETTINGS} if data else None,
                "output": strategy._settings() if strategy is not None else None}
    text = json.dumps(settings, sort_keys=True, default=repr)
    fingerprint = (f"weights {weights.hexdigest()[:16]}, "
                   f"settings {hashlib.sha256(text.encode()).hexdigest()[:16]}")
    arrays = _arrays_digest(image_stacks(datamodule))
    return fingerprint if arrays is None else f"{fingerprint}, arrays {arrays}"


def image_stacks(datamodule: Any) -> list[Any]:
    """The inputs of a set-up CAREamics prediction datamodule, in ``data_idx`` order.

    The path CAREamics' own ``predict_source_paths`` reads; empty for anything else.
    """
    dataset = getattr(datamodule, "predict_dataset", None)
    extractor = getattr(getattr(dataset, "patch_constructor", None), "input_extractor", None)
    return list(getattr(extractor, "image_stacks", None) or [])


def _arrays_digest(stacks: Sequence[Any]) -> str | None:
    """A hash of the in-memory inputs (``"array"`` sources), or None without any."""
    digest, found = hashlib.sha256(), False
    for data_idx, stack in enumerate(stacks):
        if str(stack.source) != "array":
            continue
        found = True
        shape = tuple(int(n) for n in stack.data_shape)  # S C (Z) Y X
        digest.update(f"{data_idx} {shape}\0".encode())
        for sample in range(shape[0]):  # one whole sample at a time, through the stack's API
            digest.update(np.ascontiguousarray(stack.extract_patch(sample, None, (0,) * len(shape[2:]),
                                                                   shape[2:])))
    return digest.hexdigest()[:16] if found else None
