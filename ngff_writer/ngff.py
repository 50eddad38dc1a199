"""OME-NGFF 0.4 / 0.5 image metadata as plain JSON, built from a spec (pure, no I/O).

The only place that knows NGFF's JSON layout, so following NGFF 0.6 later means
changing this module alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from ._version import __version__
from .bookkeeping import FORMAT
from .spec import AXIS_TYPES, ImageSpec
from .stats import Window, default_window

__all__ = ["STATUS_COMPLETE", "STATUS_IN_PROGRESS", "image_attributes", "read_writer_attrs"]

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
        if units.get(a):
            entry["unit"] = units[a]
        out.append(entry)
    return out


def _multiscale(spec: ImageSpec) -> dict[str, Any]:
    ms: dict[str, Any] = {
        "name": spec.name.rsplit("/", 1)[-1] or "image",
        "axes": _axes(spec),
        "datasets": [
            {"path": level.path,
             "coordinateTransformations": [{"type": "scale", "scale": list(level.scale)}]}
            for level in spec.levels
        ],
    }
    # Written with one level too: NGFF's strict schema requires both keys.
    if spec.pyramid is not None:
        ms["type"] = spec.pyramid.method
        ms["metadata"] = {"method": "ngff_writer.pyramid.downsample", "version": __version__,
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


def image_attributes(
    spec: ImageSpec, status: Status, windows: Sequence[Window] | None = None,
    finalized_at: str | None = None,
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
    """
    if windows is None:
        windows = [default_window(spec.np_dtype)] * spec.n_channels
    ome = {"multiscales": [_multiscale(spec)], "omero": _omero(spec, windows)}
    writer = {"status": status, "format": FORMAT, "spec": spec.to_json(), "version": __version__}
    if finalized_at is not None:
        writer["finalized_at"] = finalized_at
    if spec.ngff_version == "0.5":
        return {"ome": {"version": "0.5", **ome}, WRITER_KEY: writer}
    return {**ome, WRITER_KEY: writer}


def read_writer_attrs(attributes: dict[str, Any]) -> dict[str, Any] | None:
    """Return our own block of an image group's attributes, or None for other groups."""
    block = attributes.get(WRITER_KEY)
    return block if isinstance(block, dict) and "spec" in block else None
