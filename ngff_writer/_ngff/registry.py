"""Lists of what a group holds (an image's labels, a collection's series), kept without lost updates.

Writers adding entries at once (DDP ranks, cluster workers) would drop each other's with
a plain read-modify-write of a list, and zarr stores offer no lock (object stores not even
a compare-and-swap). So :func:`register` writes the union of what the list holds and what
the store holds, then reads again, until the list names everything it saw. The last
write of the list is made by a writer that looked at the store after every entry added
before it, so no entry is dropped, whatever the interleaving; entries are never removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zarr.abc.store import Store

from .._storage.stores import describe, node_attributes, write_group
from ..errors import StoreError

__all__ = ["register"]


def register(store: Store, group: str, zarr_format: int, present: Callable[[], set[str]],
             listed: Callable[[dict[str, Any]], set[str]],
             document: Callable[[set[str], dict[str, Any]], dict[str, Any]],
             before_write: Callable[[set[str]], None] | None = None, attempts: int = 64) -> set[str]:
    """Make the list in ``group``'s attributes name every entry ``present()`` finds.

    Parameters
    ----------
    store, group, zarr_format
        Where the list lives.
    present
        The entries in the store now.
    listed
        The entries a version of the group's attributes lists.
    document
        The group's new attributes for a set of entries, given the current ones (keys
        that are not the list are kept).
    before_write
        Called with the entries before each write of the list (to write what derives
        from it first, e.g. an OME-XML listing).

    Returns
    -------
    set of str
        The entries listed at the end.
    """
    for _ in range(attempts):
        node = node_attributes(store, group)
        attributes = node[1] if node else {}
        have = listed(attributes)
        found = present()
        if found <= have:
            return have
        entries = have | found
        if before_write is not None:
            before_write(entries)
        write_group(store, group, zarr_format, document(entries, attributes))
    raise StoreError(f"the list in {group!r} of {describe(store)} kept changing under {attempts} "
                     "attempts to update it")
