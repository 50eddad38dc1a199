"""Fragments: partial write units saved in the store, completed by whichever writer can.

A writer that cannot complete a unit alone (its tiles share the unit with another
process's, or its assembly buffer is full, or it is closing) saves its parts of the unit
as one fragment object under ``<image>/ngff_writer/fragments/<level>/<unit>/``
(:mod:`ngff_writer._declare.bookkeeping`), then reads every fragment of that unit. If together
they complete it, that writer combines and stores the unit, records it and deletes the
fragments. The writer whose fragment lands last always sees all the others (it lists
with a fresh, recursive listing, see :mod:`ngff_writer._storage.stores`), so every unit is
completed by someone, and no chunk is ever read back or rewritten partially. Fragment
names are unique per writer and save, so writers never overwrite each other; a part
saved twice (a retry) is deduplicated by its id. Combining is deterministic, so two
writers completing the same unit at once store identical bytes.

Fragments are saved with ``numpy.savez`` (raw arrays, no pickling): they are transient
scratch data, deleted when their unit is stored and swept when the image is final.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import numpy as np
from zarr.abc.store import Store

from .._declare.bookkeeping import ImageKeys
from .._storage.stores import delete_tree, describe, get_many, list_prefix, loads, put_bytes, repair_hint
from ..errors import CorruptError, StoreError
from .assemble import Part, PartId

__all__ = ["Fragments"]


class Fragments:
    """Fragments of one level of an image, for one writer.

    Parameters
    ----------
    store
        The output store.
    keys
        The image's bookkeeping keys.
    level
        Resolution level (pyramid levels are assembled from fragments too).
    writer
        This writer's id (fragment names start with it).
    """

    def __init__(self, store: Store, keys: ImageKeys, level: int, writer: str) -> None:
        self.store = store
        self.keys = keys
        self.level = level
        self.prefix = keys.fragments(level)
        self._writer = writer
        self._seq = 0

    def save(self, idx: tuple[int, ...], parts: dict[PartId, Part]) -> None:
        """Save ``parts`` of unit ``idx`` as one new fragment."""
        meta = [{"id": list(p.id), "local": [[s.start, s.stop] for s in p.local]} for p in parts.values()]
        # Any: numpy's stub of savez would match the arrays against its allow_pickle argument.
        arrays: dict[str, Any] = {f"d{i}": p.data for i, p in enumerate(parts.values())}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        self._seq += 1
        key = f"{self.keys.unit(self.level, idx)}/{self._writer}-{self._seq}.npz"
        try:
            put_bytes(self.store, key, buf.getvalue())
        except StoreError as exc:
            if not isinstance(exc.__cause__, FileNotFoundError):
                raise
            # Another writer completed the unit and removed its directory between our
            # store creating it and renaming the file in: write it again.
            put_bytes(self.store, key, buf.getvalue())

    def load(self, idx: tuple[int, ...]) -> dict[PartId, Part]:
        """Every part saved for unit ``idx`` by any writer (a fragment deleted meanwhile is skipped)."""
        prefix = self.keys.unit(self.level, idx) + "/"
        # A store's temporary file of a fragment still being written ends otherwise.
        keys = sorted(k for k in list_prefix(self.store, prefix) if k.endswith(".npz"))
        parts: dict[PartId, Part] = {}
        for key, raw in get_many(self.store, keys).items():
            if raw is None:
                continue  # completed and deleted by another writer
            try:
                with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
                    meta = loads(npz["meta"].tobytes())
                    for i, m in enumerate(meta):
                        pid = tuple(m["id"])
                        local = tuple(slice(a, b) for a, b in m["local"])
                        parts.setdefault(pid, Part(pid, local, npz[f"d{i}"]))
            except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
                raise CorruptError(f"fragment {key} in {describe(self.store)} is unreadable ({exc}); "
                                   f"{repair_hint(self.store)}", key=key) from exc
        return parts

    def units(self) -> list[tuple[int, ...]]:
        """Units of this level that have fragments."""
        start = len(self.prefix) + 1
        found = set()
        for key in list_prefix(self.store, self.prefix + "/"):
            name = key[start:].split("/", 1)[0]
            if name[:1].isdigit():
                found.add(tuple(int(v) for v in name.split(".")))
        return sorted(found)

    def delete(self, idx: tuple[int, ...]) -> None:
        """Delete every fragment of unit ``idx`` (after the unit is stored)."""
        delete_tree(self.store, self.keys.unit(self.level, idx))  # several writers may complete it
