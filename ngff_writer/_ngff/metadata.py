"""OME-NGFF 0.4 / 0.5 metadata as plain JSON: images, labels, plates, wells (no I/O).

The only place that knows NGFF's JSON layout, so following NGFF 0.6 later means
changing this module alone. Every document is built here as JSON and then checked by
ome-zarr-models (:func:`checked`), the community's pydantic models of the specification,
before it is written: building it through those models instead would tie our stored
bytes to their serialiser's choices of defaults and aliases, which change between their
releases, while a check only rejects what the specification rejects.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any, Literal

from .._declare.bookkeeping import FORMAT, Identity, check_format
from .._declare.spec import AXIS_TYPES, ImageSpec, Level, recheck
from .._version import __version__
from ..errors import CorruptError, MetadataError, SpecError
from .edits import Edits, apply_edits
from .stats import Window, default_window

__all__ = [
    "STATUS_COMPLETE", "STATUS_IN_PROGRESS", "checked", "image_attributes", "labels_attributes",
    "plate_attributes", "read_writer_attrs", "spec_of", "well_attributes",
]

Status = Literal["in_progress", "complete"]
STATUS_IN_PROGRESS: Status = "in_progress"
STATUS_COMPLETE: Status = "complete"
#: Key of our own attributes beside "ome" / "multiscales" in the image group.
WRITER_KEY = "ngff_writer"


def _axes(spec: ImageSpec) -> list[dict[str, str]]:
    units = dict(zip(spec.axes, spec.units))
    out = []
    for a in spec.layout.axes:
        entry = {"name": a, "type": AXIS_TYPES[a]}
        unit = units.get(a)
        if unit:
            entry["unit"] = unit
        out.append(entry)
    return out


def _transformations(level: Level) -> list[dict[str, Any]]:
    # NGFF: a scale, then (optionally) one translation, per dataset.
    out: list[dict[str, Any]] = [{"type": "scale", "scale": list(level.scale)}]
    if any(level.translation):
        out.append({"type": "translation", "translation": list(level.translation)})
    return out


def _multiscale(spec: ImageSpec) -> dict[str, Any]:
    ms: dict[str, Any] = {
        "name": spec.title or spec.name.rsplit("/", 1)[-1] or "image",
        "axes": _axes(spec),
        "datasets": [
            {"path": level.path, "coordinateTransformations": _transformations(level)}
            for level in spec.levels
        ],
    }
    # Written with one level too: NGFF's strict schema requires both keys.
    if spec.pyramid is not None:
        ms["type"] = spec.pyramid.method
        ms["metadata"] = {"method": "ngff_writer._declare.pyramid.downsample", "version": __version__,
                          "kwargs": {"factors": list(spec.pyramid.factors)}}
    else:
        ms["type"] = "none"
        ms["metadata"] = {"description": "one resolution level, no downsampling",
                          "version": __version__}
    if spec.ngff_version == "0.4":
        ms["version"] = "0.4"
    return ms


def _middle_z(spec: ImageSpec) -> int:
    axes = spec.layout.axes
    return spec.levels[0].shape[axes.index("z")] // 2 if "z" in axes else 0


def _omero(spec: ImageSpec, windows: Sequence[Window]) -> dict[str, Any]:
    omero: dict[str, Any] = {
        # defaultT/defaultZ: the plane a viewer shows first (iohub requires them).
        "rdefs": {"model": "color" if spec.n_channels > 1 else "greyscale", "defaultT": 0,
                  "defaultZ": _middle_z(spec)},
        "channels": [
            {"label": label, "color": color, "active": True, "window": w.to_json()}
            for label, color, w in zip(spec.channel_names, spec.channel_colors, windows)
        ],
    }
    if spec.ngff_version == "0.4":
        omero["version"] = "0.4"
    return omero


def _image_label(spec: ImageSpec) -> dict[str, Any]:
    label = spec.label
    assert label is not None
    out: dict[str, Any] = {}
    if label.colors:
        out["colors"] = [{"label-value": v, "rgba": list(c)} for v, c in label.colors]
    if label.properties:
        out["properties"] = [{"label-value": v, **p} for v, p in label.properties]
    if label.source is not None:
        out["source"] = {"image": label.source}
    if spec.ngff_version == "0.4":
        out["version"] = "0.4"
    return out


def _wrap(version: str, ome: dict[str, Any], kind: str, extra: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    """Place ``ome`` where the version keeps it, checked; ``extra`` beside it (our own block)."""
    attributes = {"ome": {"version": "0.5", **ome}} if version == "0.5" else dict(ome)
    checked(attributes, kind, version)
    return {**attributes, **(extra or {})}


def image_attributes(
    spec: ImageSpec, status: Status, windows: Sequence[Window] | None = None,
    finalized_at: str | None = None, identity: Identity | None = None, edits: Edits | None = None,
) -> dict[str, Any]:
    """Return the full attributes of an image group.

    Parameters
    ----------
    spec
        The image.
    status
        ``"in_progress"`` while filling, ``"complete"`` once final.
    windows
        One omero window per channel; placeholders (the dtype range) when None.
    finalized_at
        When the image became final (ISO 8601, UTC).
    identity
        The declaration's fingerprint and id, repeated here so readers of the image
        (``info``, other writers) see what produced it.
    edits
        Display metadata edited since (:mod:`ngff_writer._ngff.edits`), laid over the rest.
    """
    ome: dict[str, Any] = {"multiscales": [_multiscale(spec)]}
    if spec.label is not None:
        # Labels carry colors per value, not contrast windows (viewers color them by value).
        ome["image-label"] = _image_label(spec)
    else:
        if windows is None:
            windows = [default_window(spec.np_dtype)] * spec.n_channels
        ome["omero"] = _omero(spec, windows)
    if edits is not None:
        apply_edits(ome, edits)
    writer = {"status": status, "format": FORMAT, "spec": spec.to_json(), "version": __version__,
              **(identity.to_json() if identity is not None else {})}
    if finalized_at is not None:
        writer["finalized_at"] = finalized_at
    return _wrap(spec.ngff_version, ome, "label" if spec.label else "image", {WRITER_KEY: writer})


def labels_attributes(names: Sequence[str], version: str) -> dict[str, Any]:
    """Attributes of an image's ``labels`` group: the label images it holds."""
    return _wrap(version, {"labels": sorted(names)}, "labels")


def plate_attributes(name: str, rows: Sequence[str], columns: Sequence[str],
                     wells: Sequence[tuple[str, str]], fields: int,
                     acquisitions: Sequence[dict[str, Any]], version: str) -> dict[str, Any]:
    """Attributes of a plate group; ``wells`` are ``(row, column)`` names."""
    plate: dict[str, Any] = {
        "name": name,
        "rows": [{"name": r} for r in rows],
        "columns": [{"name": c} for c in columns],
        "wells": [{"path": f"{r}/{c}", "rowIndex": rows.index(r), "columnIndex": columns.index(c)}
                  for r, c in wells],
        "field_count": fields,
    }
    if acquisitions:
        plate["acquisitions"] = list(acquisitions)
    if version == "0.4":
        plate["version"] = "0.4"
    return _wrap(version, {"plate": plate}, "plate")


def well_attributes(fields: Sequence[str], acquisition: Sequence[int | None], version: str
                    ) -> dict[str, Any]:
    """Attributes of a well group: its field images, with their acquisition when known."""
    images = [{"path": f, **({"acquisition": a} if a is not None else {})}
              for f, a in zip(fields, acquisition, strict=True)]
    well: dict[str, Any] = {"images": images}
    if version == "0.4":
        well["version"] = "0.4"
    return _wrap(version, {"well": well}, "well")


def checked(attributes: dict[str, Any], kind: str, version: str) -> dict[str, Any]:
    """Check a group's attributes with ome-zarr-models; return them unchanged.

    Parameters
    ----------
    attributes
        The group's attributes (with the ``"ome"`` key for 0.5).
    kind
        ``"image"``, ``"label"``, ``"labels"``, ``"plate"``, ``"well"`` or ``"collection"``
        (a bioformats2raw root).
    version
        ``"0.4"`` or ``"0.5"``.

    Raises
    ------
    MetadataError
        ome-zarr-models rejects them: a bug of ours, reported before anything is written.
    """
    import pydantic  # with ome-zarr-models: imported on first use, half a second

    model = _models(version)[kind]
    document = attributes["ome"] if version == "0.5" else attributes
    try:
        with warnings.catch_warnings():
            # ome-zarr-models warns that a 0.5 plate has no "version" of its own: NGFF 0.5
            # keeps the version in "ome" only, which is where we write it.
            warnings.filterwarnings("ignore", message=".*'version' field not specified")
            model.model_validate(document)
    except pydantic.ValidationError as exc:
        raise MetadataError(f"the {kind} metadata ngff-writer built is not valid NGFF {version}: "
                            f"{exc}") from exc
    return attributes


@functools.cache
def _models(version: str) -> dict[str, Any]:
    if version == "0.5":
        from ome_zarr_models.v05 import bioformats2raw, hcs, image, image_label, labels, well
    else:
        from ome_zarr_models.v04 import (  # type: ignore[no-redef]  # the same names, from v04
            bioformats2raw,
            hcs,
            image,
            image_label,
            labels,
            well,
        )
    return {"image": image.ImageAttrs, "label": image_label.ImageLabelAttrs,
            "labels": labels.LabelsAttrs, "plate": hcs.HCSAttrs, "well": well.WellAttrs,
            "collection": bioformats2raw.BioFormats2RawAttrs}


def read_writer_attrs(attributes: dict[str, Any]) -> dict[str, Any] | None:
    """Return our own block of an image group's attributes, or None for other groups."""
    block = attributes.get(WRITER_KEY)
    return block if isinstance(block, dict) and "spec" in block else None


def spec_of(attributes: dict[str, Any], where: str, store_name: str) -> ImageSpec:
    """The spec a declaration (or an image's ``ngff_writer`` block) holds, checked for its format."""
    fmt = check_format(attributes, where)
    try:
        return recheck(ImageSpec.from_json(attributes["spec"], fmt))
    except (KeyError, TypeError, ValueError, SpecError) as exc:
        named = where if store_name and store_name in where else f"{where} in {store_name}"
        raise CorruptError(f"{named} holds no readable spec ({exc}); run "
                           f"`ngff-writer repair {store_name}`, then write again what it reports "
                           "missing", key=where) from exc
