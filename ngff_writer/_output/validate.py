"""Is an image valid and whole? Its metadata, its arrays against it, its bookkeeping.

Three layers, each reported as sentences a user can act on:

1. the OME metadata against the NGFF version it declares, by ome-zarr-models (the
   community's models of the specification; we do not restate the rules here);
2. the arrays against that metadata: every level exists, has one dimension per axis and
   the image's dtype, levels shrink, and, for ngff-writer's images, shapes, chunks, shards
   and scales are the declared ones;
3. ngff-writer's bookkeeping: an image is final exactly when every block is recorded, and
   a final image keeps no log segments, fragments or temporary files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import zarr
from zarr.abc.store import Store

from .._declare.bookkeeping import GROUP
from .._ngff.describe import ImageInfo, describe_image
from .._storage.stores import list_prefix, metadata_keys, refuse_oversized
from ..errors import NgffWriterError
from .image import Image, Progress

__all__ = ["Validation", "validate_image"]


@dataclass
class Validation:
    """What :func:`validate_image` found.

    Attributes
    ----------
    path
        The image's path relative to the root that was checked.
    problems
        What makes the image invalid, or not whole (empty when it is both).
    notes
        What a user may want to know that is not a problem (written by another tool...).
    progress
        ngff-writer's progress of the image (None for other tools' images).
    """

    path: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    progress: Progress | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``ngff-writer validate --json``)."""
        return {"path": self.path, "ok": self.ok, "problems": self.problems, "notes": self.notes,
                "complete": None if self.progress is None else self.progress.complete}


def _check_models(store: Store, path: str, version: str) -> list[str]:
    import ome_zarr_models.v04
    import ome_zarr_models.v05
    from pydantic import ValidationError

    models: dict[str, type[ome_zarr_models.v04.Image] | type[ome_zarr_models.v05.Image]] = {
        "0.4": ome_zarr_models.v04.Image, "0.5": ome_zarr_models.v05.Image}
    model = models.get(version)
    if model is None:
        return [f"declares NGFF {version}, which this validator does not know (0.4 and 0.5)"]
    try:
        refuse_oversized(store, metadata_keys(path))
        model.from_zarr(zarr.open_group(store=store, path=path, mode="r"))
    except ValidationError as exc:
        errors = exc.errors()
        shown = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}"
                          for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return [f"metadata is not valid NGFF {version}: {shown}{more}"]
    except Exception as exc:
        # The models' own checks can fail with any error on malformed metadata (an
        # IndexError for a scale shorter than the axes, seen with ome-zarr-models 1.8):
        # whatever they raise, the metadata did not validate.
        return [f"metadata is not valid NGFF {version}: {type(exc).__name__}: {exc}"]
    return []


def _check_arrays(info: ImageInfo, image: Image | None) -> list[str]:
    problems = []
    if not info.levels:
        return ["the multiscales list no dataset (no level)"]
    for level in info.levels:
        if len(level.shape) != len(info.axes):
            problems.append(f"level {level.path}: {len(level.shape)} dimensions for "
                            f"{len(info.axes)} axes")
        if level.dtype != info.levels[0].dtype:
            problems.append(f"level {level.path}: dtype {level.dtype}, level "
                            f"{info.levels[0].path} has {info.levels[0].dtype}")
    for upper, lower in zip(info.levels, info.levels[1:]):
        if any(b > a for a, b in zip(upper.shape, lower.shape)):
            problems.append(f"level {lower.path} {lower.shape} is larger than level "
                            f"{upper.path} {upper.shape} on some axis")
    if image is None:
        return problems
    spec = image.spec
    declared = spec.levels
    if len(declared) != len(info.levels):
        problems.append(f"{len(info.levels)} levels in the metadata, {len(declared)} declared")
    for want, got in zip(declared, info.levels):
        for what, a, b in (("path", want.path, got.path), ("shape", want.shape, got.shape),
                           ("chunks", want.chunks, got.chunks), ("shards", want.shards, got.shards),
                           ("scale", tuple(map(float, want.scale)), got.scale)):
            if a != b:
                problems.append(f"level {got.path}: {what} {b}, declared {a}")
        # Only where one was declared: images written before translations were (their
        # lower levels carry none) stay valid.
        if spec.translation and not all(math.isclose(a, b, abs_tol=1e-9)
                                        for a, b in zip(want.translation, got.translation, strict=True)):
            problems.append(f"level {got.path}: translation {got.translation}, declared {want.translation}")
        if got.dtype != str(spec.np_dtype):
            problems.append(f"level {got.path}: dtype {got.dtype}, declared {spec.np_dtype}")
    return problems


def _check_bookkeeping(store: Store, image: Image, progress: Progress,
                       allow_incomplete: bool) -> list[str]:
    all_stored = progress.blocks_done == progress.blocks_total
    if progress.complete and not all_stored:
        return [f"marked complete, but only {progress.blocks_done} of {progress.blocks_total} "
                "blocks are recorded"]
    if not progress.complete:
        if all_stored:
            return ["every block is stored but the image is not finalized (no pyramid "
                    "check, no contrast windows): run `ngff-writer finalize`"]
        if allow_incomplete:
            return []
        return [f"incomplete: {progress.done}/{progress.total} samples, "
                f"{progress.blocks_done}/{progress.blocks_total} blocks stored"]
    group = f"{image.name}/{GROUP}" if image.name else GROUP
    leftovers = [k for k in list_prefix(store, f"{group}/")
                 if k.rsplit("/", 1)[-1] not in ("zarr.json", ".zattrs", ".zgroup")]
    if leftovers:
        return [f"complete, but {len(leftovers)} bookkeeping object(s) remain (e.g. "
                f"{leftovers[0]}): run `ngff-writer repair`"]
    return []


def validate_image(store: Store, path: str, image: Image | None = None, *,
                   allow_incomplete: bool = False) -> Validation:
    """Check the image at ``path`` of ``store``.

    Parameters
    ----------
    store
        The store to read (nothing is written).
    path
        The image's path in it ("" for the root).
    image
        The image opened through ngff-writer (:meth:`Output.image`), for its declaration
        and bookkeeping; None for an image another tool wrote.
    allow_incomplete
        Accept an image still being written (its bookkeeping is checked, not its end);
        by default an incomplete image is a problem.
    """
    result = Validation(path)
    try:
        info = describe_image(store, path)
    except NgffWriterError as exc:
        result.problems.append(str(exc))
        return result
    result.problems += _check_models(store, path, info.ngff_version)
    if image is None:
        result.notes.append("written by another tool: metadata and arrays checked, no bookkeeping")
    result.problems += _check_arrays(info, image)
    if image is not None:
        try:
            result.progress = image.progress()
        except NgffWriterError as exc:
            result.problems.append(f"bookkeeping cannot be read: {exc}")
            return result
        result.problems += _check_bookkeeping(store, image, result.progress, allow_incomplete)
        if allow_incomplete and not result.progress.complete and not result.problems:
            p = result.progress
            result.notes.append(f"in progress: {p.done}/{p.total} samples stored")
    return result
