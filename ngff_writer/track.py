"""The completion ledger: which blocks of an image are stored, kept in the store itself.

Each write that stores whole blocks adds one *record*: a small zarr group at
``<image>/ngff_writer/done/<box key>`` whose name says which box of write units was
stored and whose attributes hold that data's statistics. Each pyramid level has a
ledger of its own (``<image>/ngff_writer/level<k>/done/``, records without statistics).
A record is written only after its data, so the ledger never lists a block that is not
stored.

Why one object per record rather than a shared progress document: zarr rewrites
attribute documents whole from a cached copy, so two processes updating one document
lose each other's updates. Distinct keys never collide, need no lock, survive a crash
of any writer, and a retry rewrites the same key. Progress is a listing of names; the
record bodies are read only when the image is finalized.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from zarr.abc.store import Store

from .errors import StoreError
from .grid import Box, box_key, box_of_region, coverage, grid_shape, parse_box_key
from .spec import LEDGER_GROUP, ImageSpec
from .storage import get_json, join, list_dir, list_prefix, write_group

__all__ = ["Ledger", "level_group"]


def level_group(image_path: str, level: int) -> str:
    """The group holding a level's ledger and fragments.

    Level 0's sit directly in ``<image>/ngff_writer/``; pyramid level ``k``'s in
    ``<image>/ngff_writer/level<k>/``.
    """
    base = join(image_path, LEDGER_GROUP)
    return base if level == 0 else join(base, f"level{level}")


class Ledger:
    """Records of stored blocks for one image.

    Parameters
    ----------
    store
        The output store.
    image_path
        Path of the image group inside the store.
    spec
        The image spec (gives the write-unit grid and zarr format).
    level
        Resolution level (0: full resolution).
    """

    def __init__(self, store: Store, image_path: str, spec: ImageSpec, level: int = 0) -> None:
        self.store = store
        self.spec = spec
        self.level = level
        self.prefix = join(level_group(image_path, level), "done")
        geometry = spec.levels[level]
        self.grid = grid_shape(geometry.shape, geometry.unit)

    def create(self) -> None:
        """Write the (empty) ledger groups; idempotent."""
        fmt = self.spec.zarr_format
        group = self.prefix.rsplit("/", 1)[0]
        if self.level:
            write_group(self.store, group.rsplit("/", 1)[0], fmt, {})
        write_group(self.store, group, fmt, {})
        write_group(self.store, self.prefix, fmt, {})

    def complete(self) -> bool:
        """True when every write unit of the level is recorded."""
        return self.maybe_complete() and bool(self.covered().all())

    def record(self, box: Box, summary: list[dict[str, Any]]) -> None:
        """Mark ``box`` as stored, with the statistics of its data. Call after the data write."""
        write_group(
            self.store,
            f"{self.prefix}/{box_key(box)}",
            self.spec.zarr_format,
            {"box": [list(box[0]), list(box[1])], "stats": summary},
        )

    @property
    def _last_document(self) -> str:
        # The document a record's writer stores last: a record counts only once it exists.
        # Listing directories instead would count a record whose writer died mid-write
        # (LocalStore creates the directory before it renames the document into place).
        return "zarr.json" if self.spec.zarr_format == 3 else ".zgroup"

    def record_names(self) -> list[str]:
        """Names of complete records, sorted (one listing; no record is read)."""
        start = len(self.prefix) + 1
        names = []
        for key in list_prefix(self.store, self.prefix + "/"):
            name, _, doc = key[start:].partition("/")
            if doc == self._last_document and "-" in name:
                names.append(name)
        return sorted(names)

    def boxes(self) -> list[Box]:
        """Every recorded box."""
        return [parse_box_key(n) for n in self.record_names()]

    def maybe_complete(self) -> bool:
        """Cheap test that can only say "not complete": one directory listing, no recursion.

        Names listed there are a superset of complete records, so coverage by names that
        is incomplete means the image is incomplete; otherwise ask :meth:`covered`.
        """
        names = [n for n in list_dir(self.store, self.prefix) if "-" in n]
        return bool(coverage(map(parse_box_key, names), self.grid).all())

    def covered(self) -> np.ndarray:
        """Boolean grid of write units, True where stored."""
        return coverage(self.boxes(), self.grid)

    def summaries(self) -> list[list[dict[str, Any]]]:
        """The statistics of every record, in key order (deterministic across processes)."""
        meta = "zarr.json" if self.spec.zarr_format == 3 else ".zattrs"
        out = []
        for name in self.record_names():
            doc = get_json(self.store, f"{self.prefix}/{name}/{meta}")
            if doc is None:
                raise StoreError(f"ledger record {self.prefix}/{name} lost its {meta}")
            attrs = doc.get("attributes", {}) if self.spec.zarr_format == 3 else doc
            out.append(attrs["stats"])
        return out

    def samples_done(self, covered: np.ndarray) -> np.ndarray:
        """Boolean per sample: every block of the sample is stored."""
        layout = self.spec.layout
        unit = self.spec.write_unit
        done = np.empty(layout.n_samples, bool)
        for k in range(layout.n_samples):
            start, stop = box_of_region(layout.sample_region(k), layout.shape, unit)
            done[k] = covered[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))].all()
        return done
