"""Finding the images of an output: a walk of its groups, tolerant of damaged ones.

An image is a group whose attributes hold an ``ngff_writer`` block with a spec, or, when
its attributes cannot be read, a group holding ngff-writer's bookkeeping group (so a
damaged image is still found, reported and repaired rather than silently skipped).
"""

from __future__ import annotations

from zarr.abc.store import Store

from .bookkeeping import GROUP
from .errors import CorruptError
from .ngff import read_writer_attrs
from .storage import list_dir, node_attributes

__all__ = ["find_images", "is_image"]


def is_image(store: Store, path: str) -> bool | None:
    """True for an image, False for another group, None for no group (an array, a file).

    Raises
    ------
    CorruptError
        The group's attributes cannot be read and it holds no bookkeeping group either.
    """
    try:
        node = node_attributes(store, path)
    except CorruptError:
        if GROUP in list_dir(store, path):
            return True  # a damaged image: its readers report the damage
        raise
    if node is None:
        return None
    return read_writer_attrs(node[1]) is not None


def find_images(store: Store) -> list[str]:
    """Paths of every image in the store ("" when the root itself is the image), sorted."""
    if is_image(store, ""):
        return [""]  # one image per store, e.g. x.ome.zarr
    found: list[str] = []

    def walk(prefix: str) -> None:
        for child in sorted(list_dir(store, prefix)):
            path = f"{prefix}/{child}" if prefix else child
            if child == GROUP:
                continue
            kind = is_image(store, path)
            if kind:
                found.append(path)
            elif kind is False:
                walk(path)

    walk("")
    return found
