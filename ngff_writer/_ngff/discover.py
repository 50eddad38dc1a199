"""Finding the images under a path: one walk of groups and plain directories.

An output is usually one store holding images at any depth (``out.zarr/embryo``,
``out.zarr/run1/embryo``), but users also point at one image (the path napari is given),
a single-image store (``x.ome.zarr``), or a plain directory holding any number of those
(CAREamics writes ``dirpath/<dir>/<stem>.ome.zarr``). One walk serves all of them: it
descends through groups and through prefixes that are no zarr node at all, and stops at
images and arrays.

An ngff-writer image is a group whose attributes hold an ``ngff_writer`` block with a
spec, or, when its attributes cannot be read, a group holding ngff-writer's bookkeeping
group (so a damaged image is still found, reported and repaired rather than skipped).
A group with OME multiscales but no such block is an image another tool wrote: read-only
commands describe it as far as they can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from zarr.abc.store import Store

from .._declare.bookkeeping import GROUP
from .._storage.stores import get_json, list_dir, node_attributes
from ..errors import CorruptError
from .metadata import read_writer_attrs

__all__ = ["Found", "find_images", "node_kind", "scan"]

Kind = Literal["image", "foreign", "group", "array", "directory", "unreadable"]


@dataclass(frozen=True)
class Found:
    """An image found under a root.

    Attributes
    ----------
    path
        Its path relative to the root (``""`` when the root is the image).
    ngff_writer
        True for an image written (or being written) by ngff-writer; False for an
        OME-Zarr image written by another tool.
    """

    path: str
    ngff_writer: bool = True


def _has_multiscales(attributes: dict[str, Any]) -> bool:
    ome = attributes.get("ome", attributes)
    return isinstance(ome, dict) and isinstance(ome.get("multiscales"), list)


def node_kind(store: Store, path: str, strict: bool = True) -> Kind:
    """What is at ``path``: an ngff-writer image, another tool's ("foreign"), a group, an
    array, a plain directory; a group that cannot be read raises CorruptError, or is
    ``"unreadable"`` when not ``strict``."""
    try:
        node = node_attributes(store, path)
    except CorruptError:
        if GROUP in list_dir(store, path):
            return "image"  # a damaged image: its readers report the damage
        if not strict:
            return "unreadable"
        raise
    if node is not None:
        attributes = node[1]
        if read_writer_attrs(attributes) is not None:
            return "image"
        return "foreign" if _has_multiscales(attributes) else "group"
    prefix = f"{path}/" if path else ""
    if get_json(store, f"{prefix}zarr.json") is not None or get_json(store, f"{prefix}.zarray"):
        return "array"
    return "directory"


def scan(store: Store, path: str = "") -> list[Found]:
    """Every image under ``path`` (default: the store's root), ours and other tools', sorted by path.

    Hidden entries (``.name``), arrays and the inside of images (but for their
    ``labels/`` group) are not visited.
    """
    found: list[Found] = []

    def descend(path: str) -> None:
        for child in sorted(list_dir(store, path)):
            if child.startswith(".") or child in (GROUP, "zarr.json"):
                continue
            walk(f"{path}/{child}" if path else child)

    def walk(path: str) -> None:
        kind = node_kind(store, path)
        if kind in ("image", "foreign"):
            found.append(Found(path, kind == "image"))
            # An image's label images are images too (status, finalize, validate see them);
            # listing a labels group that does not exist lists nothing.
            descend(f"{path}/labels" if path else "labels")
        elif kind != "array":
            descend(path)

    walk(path)
    return sorted(found, key=lambda f: f.path)


def find_images(store: Store, path: str = "") -> list[str]:
    """Paths of every ngff-writer image under ``path`` ("" when the root itself is one)."""
    return [f.path for f in scan(store, path) if f.ngff_writer]
