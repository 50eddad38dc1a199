"""Fragments: partial write units saved in the store, completed by whichever writer can.

A writer that cannot complete a unit alone (its tiles share the unit with another
process's, or its assembly buffer is full, or it is closing) saves its parts of the unit
as one fragment object under ``<image>/ngff_writer/fragments/<unit>/`` (pyramid
level ``k``: ``<image>/ngff_writer/level<k>/fragments/<unit>/``), then reads every
fragment of that unit. If together they complete it, that writer combines and stores
the unit, records it in the ledger and deletes the fragments. The writer whose fragment
lands last always sees all the others, so every unit is completed by someone, and no
chunk is ever read back or rewritten partially. Fragment names are unique per writer
and save, so writers never overwrite each other; a part saved twice (a retry) is
deduplicated by its id. Combining is deterministic, so two writers completing the same
unit at once store identical bytes.

Fragments are saved with ``numpy.savez`` (raw arrays, no pickling): they are transient
scratch data, deleted when their unit is stored and swept when the image is finalized.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterable

import numpy as np
from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype

from .assemble import Part, PartId
from .storage import delete_tree, join, list_dir, run
from .track import level_group

__all__ = ["Fragments"]


def _unit_key(idx: Iterable[int]) -> str:
    return ".".join(map(str, idx))


class Fragments:
    """Fragments of one image, for one writer.

    Parameters
    ----------
    store
        The output store.
    image_path
        Path of the image group.
    level
        Resolution level (pyramid levels are assembled from fragments too).
    """

    def __init__(self, store: Store, image_path: str, level: int = 0) -> None:
        self.store = store
        self.prefix = join(level_group(image_path, level), "fragments")
        self._writer = uuid.uuid4().hex[:12]
        self._seq = 0

    def save(self, idx: tuple[int, ...], parts: dict[PartId, Part]) -> None:
        """Save ``parts`` of unit ``idx`` as one new fragment."""
        meta = [{"id": list(p.id), "local": [[s.start, s.stop] for s in p.local]} for p in parts.values()]
        arrays = {f"d{i}": p.data for i, p in enumerate(parts.values())}
        buf = io.BytesIO()
        np.savez(buf, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)
        self._seq += 1
        key = f"{self.prefix}/{_unit_key(idx)}/{self._writer}-{self._seq}.npz"
        value = default_buffer_prototype().buffer.from_bytes(buf.getvalue())
        try:
            run(self.store.set(key, value))
        except FileNotFoundError:
            # Another writer completed the unit and removed its directory between our
            # store creating it and renaming the file in: write it again.
            run(self.store.set(key, value))

    def load(self, idx: tuple[int, ...]) -> dict[PartId, Part]:
        """Every part saved for unit ``idx`` by any writer (a fragment deleted meanwhile is skipped)."""
        prefix = f"{self.prefix}/{_unit_key(idx)}"
        parts: dict[PartId, Part] = {}
        for name in sorted(list_dir(self.store, prefix)):
            if not name.endswith(".npz"):
                continue  # e.g. a store's temporary file of a fragment still being written
            raw = run(self.store.get(f"{prefix}/{name}", prototype=default_buffer_prototype()))
            if raw is None:
                continue  # completed and deleted by another writer
            with np.load(io.BytesIO(raw.to_bytes()), allow_pickle=False) as npz:
                meta = json.loads(npz["meta"].tobytes())
                for i, m in enumerate(meta):
                    pid = tuple(m["id"])
                    local = tuple(slice(a, b) for a, b in m["local"])
                    parts.setdefault(pid, Part(pid, local, npz[f"d{i}"]))
        return parts

    def units(self) -> list[tuple[int, ...]]:
        """Units that have fragments."""
        return [tuple(int(v) for v in name.split(".")) for name in list_dir(self.store, self.prefix)
                if name[:1].isdigit()]

    def delete(self, idx: tuple[int, ...]) -> None:
        """Delete every fragment of unit ``idx`` (after the unit is stored)."""
        delete_tree(self.store, f"{self.prefix}/{_unit_key(idx)}")  # several writers may complete it

    def clear(self) -> None:
        """Delete every fragment of the image (at finalize: leftovers of races are garbage)."""
        delete_tree(self.store, self.prefix)
