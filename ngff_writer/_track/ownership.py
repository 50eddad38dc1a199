"""What ngff-writer may delete: its own objects, told apart from a user's before anything goes.

``mode="w"`` and ``overwrite=True`` replace what is at a path. zarr's own ``mode="w"``
clears whatever is there; ngff-writer first walks the path (:func:`survey`) and deletes
only when everything in it is its own:

- an ngff-writer image (a group with an ``ngff_writer`` block, or a damaged one holding
  the bookkeeping group): its level arrays, its bookkeeping group, and a ``labels``
  group of ngff-writer label images;
- a group or plain directory that is not an image, when everything in it is ours (an
  empty one is): output roots, plates, wells and collections are the structure
  ngff-writer writes around its images; their attributes name nothing else;
- a collection's ``OME/METADATA.ome.xml``, and the temporary files a killed writer left.

Anything else is a user's: a file, an array outside our images, an OME-Zarr image another
tool wrote, a group that cannot be read, a symbolic link (never followed). Finding one
refuses the replacement with :class:`~ngff_writer.errors.NotOursError` naming a few, before
anything is touched. The walk lists groups and directories only, never the chunks of an
array, so it costs O(groups), not O(data).

A replacement is also refused (:class:`~ngff_writer.errors.OutputInUseError`, unless
forced) while an image in the path has a live writer (its heartbeat,
:func:`ngff_writer._track.log.live_writers`): deleting under it would leave a store that
looks complete to nobody and half-written to everyone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from zarr.abc.store import Store

from .._declare.bookkeeping import GROUP, ImageKeys
from .._ngff.collection import OME_GROUP
from .._ngff.discover import node_kind
from .._ngff.metadata import STATUS_COMPLETE, read_writer_attrs
from .._storage.stores import (
    delete_keys,
    delete_tree,
    describe,
    is_link,
    is_temporary,
    join,
    key_exists,
    list_dir,
    node_attributes,
    refuse_links,
)
from ..errors import CorruptError, NotOursError, OutputInUseError
from .log import live_writers

__all__ = ["Survey", "check_replaceable", "delete_contents", "survey"]

#: Documents zarr keeps beside a node (v3, v2, v2 consolidated).
_METADATA = frozenset({"zarr.json", ".zgroup", ".zattrs", ".zarray", ".zmetadata"})
_LABELS = "labels"


@dataclasses.dataclass
class Survey:
    """What a path holds, as far as replacing it goes.

    Attributes
    ----------
    foreign
        Paths (relative to the store root) that are not ngff-writer's; the walk stops
        after a few.
    images
        ngff-writer images found, with whether each is complete.
    """

    foreign: list[str] = dataclasses.field(default_factory=list)
    images: list[tuple[str, int, bool]] = dataclasses.field(default_factory=list)


def _is_object(store: Store, path: str) -> bool:
    """True for an object (a file), False for a prefix (a folder), whatever the store.

    Object stores have no folders and fsspec says a prefix "exists": a prefix is what
    lists children, an object what exists and lists none.
    """
    return bool(path) and not list_dir(store, path) and key_exists(store, path)


def survey(store: Store, path: str = "", limit: int = 5) -> Survey:
    """Walk ``path`` (see the module docstring): what is not ours, and the images that are."""
    found = Survey()

    def foreign(where: str) -> None:
        if len(found.foreign) < limit:
            found.foreign.append(where or "/")

    def entries(where: str) -> Iterator[tuple[str, str]]:
        """The children of ``where`` to judge; links are foreign at once, never followed."""
        for child in sorted(list_dir(store, where)):
            if len(found.foreign) >= limit:
                return
            sub = join(where, child)
            if is_link(store, sub):
                foreign(sub)
            else:
                yield child, sub

    def image(where: str) -> None:
        try:
            node = node_attributes(store, where)
        except CorruptError:  # a damaged image (found by its bookkeeping group): still ours
            node = None
        block = read_writer_attrs(node[1]) if node else None
        fmt = 3 if key_exists(store, join(where, "zarr.json")) else 2
        found.images.append((where, fmt, bool(block and block.get("status") == STATUS_COMPLETE)))
        for child, sub in entries(where):
            if child in _METADATA or child == GROUP or is_temporary(child):
                continue
            if child == _LABELS and not _is_object(store, sub):
                container(sub, labels=True)
            elif not (child.isdigit() and node_kind(store, sub, strict=False) == "array"):
                foreign(sub)  # levels are ours, chunks and all; anything else is not

    def container(where: str, labels: bool = False) -> None:
        for child, sub in entries(where):
            if _is_object(store, sub):
                ours = child in _METADATA or is_temporary(child) or (
                    child == "METADATA.ome.xml" and where == OME_GROUP)
                if not ours:
                    foreign(sub)
            else:
                walk(sub, label=labels)

    def walk(where: str, label: bool = False) -> None:
        kind = node_kind(store, where, strict=False)
        if kind == "image":
            image(where)
        elif kind in ("group", "directory") and not label:
            container(where)
        else:  # an array, another tool's image, a group that cannot be read, a non-image label
            foreign(where)

    if is_link(store, path) or _is_object(store, path):
        foreign(path)
    else:
        walk(path)
    return found


def check_replaceable(store: Store, path: str = "", *, force: bool = False, exclude: Iterable[str] = (),
                      what: str = "mode='w'") -> Survey:
    """Survey ``path`` and refuse to replace it unless everything is ours and no writer is live.

    Parameters
    ----------
    store, path
        What would be replaced.
    force
        Replace even while an image in it has a live writer.
    exclude
        Writer ids of this process's own handles (they are not "another writer").
    what
        The operation, for messages.

    Raises
    ------
    NotOursError
        Something in it was not written by ngff-writer (nothing is ever forced over that).
    OutputInUseError
        An image in it has a live writer and ``force`` is False.
    """
    where = describe(store) + (f"/{path}" if path else "")
    found = survey(store, path)
    if found.foreign:
        shown = ", ".join(found.foreign)
        raise NotOursError(
            f"{what} would delete what ngff-writer did not write in {where}: {shown}"
            f"{' ...' if len(found.foreign) >= 5 else ''}; nothing was deleted. Choose another path, "
            "or move those away first", entries=tuple(found.foreign))
    if not force:
        skip = set(exclude)
        for name, fmt, complete in found.images:
            if complete:
                continue
            live = live_writers(store, ImageKeys(name, fmt), exclude=skip)
            if live:
                beat = live[-1]
                raise OutputInUseError(
                    f"{what}: image {name or '.'!r} in {describe(store)} is being written: writer "
                    f"{beat['writer']} (process {beat['pid']} on {beat['host']}) was alive "
                    f"{beat['age']:.0f} s ago; nothing was deleted. Stop it first, or pass force=True "
                    "to replace it anyway (that writer then fails with ImageReplacedError)")
    return found


def delete_contents(store: Store, found: Survey, path: str = "") -> None:
    """Delete everything under ``path``, which :func:`check_replaceable` surveyed as ``found``.

    A folder at ``path`` itself stays. The images' declarations go first, so a writer
    still writing to one sees at once that its image was replaced.
    """
    # Before anything goes: a link anywhere (in an image's bookkeeping, say, which the
    # survey does not walk) stops the whole delete, rather than half of it.
    refuse_links(store, path, f"deleting the contents of {path or '/'}")
    delete_keys(store, [ImageKeys(name, fmt).declaration for name, fmt, _ in found.images])
    for child in list_dir(store, path):
        sub = join(path, child)
        if _is_object(store, sub):
            delete_keys(store, [sub])
        else:
            delete_tree(store, sub)
