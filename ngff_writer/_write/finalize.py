"""Complete → final: missing pyramid units built, omero windows, status "complete", log folded.

Finalization is idempotent rather than locked. Whoever finalizes first writes a
*checkpoint* into the bookkeeping group's attributes (the summed statistics and the
time), then the image's final metadata, then deletes the log and the fragments. Anyone
finalizing later finds the checkpoint and writes the same metadata from it; two
processes finalizing at the same moment compute the same checkpoint from the same log
(statistics add up exactly, :mod:`ngff_writer._ngff.stats`), but for the time.

Pyramid levels are normally complete by then: they are built while level 0 is written
(:mod:`ngff_writer._write.engine`). Units a writer could not build that way (its process died
holding their parts) are made here from the stored level above, with the same
:func:`~ngff_writer._declare.pyramid.downsample` and so the same bytes. That is the one place
ngff-writer reads chunk data back, and only for those units.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from .._declare.bookkeeping import ImageKeys
from .._declare.pyramid import downsample, source_region
from .._declare.spec import ImageSpec
from .._ngff.edits import Edits
from .._ngff.metadata import STATUS_COMPLETE, image_attributes
from .._ngff.stats import Summary, windows
from .._storage.stores import (
    delete_tree,
    describe,
    node_attributes,
    repair_hint,
    store_errors,
    sweep_temporary,
    write_group,
)
from .._track.log import LIVE_FOR, Ledger
from ..errors import CorruptError
from .assemble import unit_region

__all__ = ["build_missing", "finalize_image", "read_checkpoint"]


def build_missing(spec: ImageSpec, level: int, source: zarr.Array[Any], target: zarr.Array[Any],
                  ledger: Ledger, executor: Executor) -> int:
    """Make every unit of pyramid ``level`` the log does not list, from the stored level above.

    Parameters
    ----------
    spec
        The image.
    level
        Pyramid level to complete (>= 1); the level above must be complete.
    source, target
        The arrays of levels ``level - 1`` and ``level``.
    ledger
        The image's log; each unit made is recorded in it.
    executor
        Runs the units, each a read, a reduction and a store (the engine's threads, which
        exist already: none may start at interpreter exit).

    Returns
    -------
    int
        Number of units made.
    """
    geometry = spec.levels[level]
    covered = ledger.coverage.grids[level]
    missing = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~covered), strict=True)]
    if not missing:
        return 0

    def make(idx: tuple[int, ...]) -> None:
        region = unit_region(idx, geometry.unit, geometry.shape)
        with store_errors(f"rebuilding unit {idx} of level {level} of image {spec.name!r}"):
            block = np.asarray(source[source_region(region, geometry.factors, source.shape)])
            target[region] = downsample(block, geometry.factors, spec.pyramid_method)
        ledger.record(level, (idx, tuple(i + 1 for i in idx)))

    # Threads rather than a dask graph: each task is one unit and its record, reading plus
    # encoding spend their time outside the GIL, and this runs only after a writer died
    # holding parts of these units.
    for _ in executor.map(make, missing):
        pass
    return len(missing)


def read_checkpoint(store: Store, keys: ImageKeys) -> dict[str, Any] | None:
    """The checkpoint a finalizer left in the image's bookkeeping group, or None."""
    node = node_attributes(store, keys.group)
    final: dict[str, Any] | None = node[1].get("final") if node else None
    if final is None:
        return None
    try:
        [Summary.from_json(s) for s in final["stats"]]
        str(final["finalized_at"])
        Edits.from_json(final.get("edits"))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise CorruptError(f"{keys.declaration} in {describe(store)} holds an unreadable checkpoint "
                           f"({exc}); {repair_hint(store)}",
                           key=keys.declaration) from exc
    return final


def finalize_image(store: Store, spec: ImageSpec, ledger: Ledger, array: Callable[[int], zarr.Array[Any]],
                   executor: Executor) -> None:
    """Make an image whose level 0 is completely stored final (see the module docstring).

    Parameters
    ----------
    store
        The output store.
    spec
        The image.
    ledger
        Its log, committed and refreshed by the caller.
    array
        Opens level ``k``'s array for writing.
    executor
        Runs the rebuilding of missing pyramid units (see :func:`build_missing`).
    """
    keys = ledger.keys
    # Never call complete an image that is not the one this handle wrote (see track).
    ledger.check_identity()
    checkpoint = read_checkpoint(store, keys)
    if checkpoint is None:
        for level in range(1, len(spec.levels)):
            build_missing(spec, level, array(level - 1), array(level), ledger, executor)
        ledger.commit()
        summaries = ledger.summaries()
        if ledger.vanished:  # a finalizer deleted the log under our feet: use its checkpoint
            checkpoint = read_checkpoint(store, keys)
        if checkpoint is None:
            # The time is the one part two processes finishing together may write differently.
            checkpoint = {"finalized_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                          "stats": [s.to_json() for s in summaries]}
            ledger.check_identity()
            declaration = node_attributes(store, keys.group)
            attributes = {**(declaration[1] if declaration else {}), "final": checkpoint}
            write_group(store, keys.group, spec.zarr_format, attributes)
    stats = [Summary.from_json(s) for s in checkpoint["stats"]]
    final = windows(stats, spec.window_percentiles, spec.np_dtype)
    write_group(store, keys.image, spec.zarr_format,
                image_attributes(spec, STATUS_COMPLETE, final, checkpoint["finalized_at"], ledger.identity,
                                 Edits.from_json(checkpoint.get("edits"))))
    ledger.coverage.fill()
    ledger.seal()  # records of this image are moot now: none may land after the log is gone
    # Everything under log/, fragments/ and writers/ is garbage now, whoever wrote it.
    delete_tree(store, keys.log)
    delete_tree(store, keys.fragments())
    delete_tree(store, keys.writers)
    # A writer killed while storing a unit left its temporary file (up to a shard) beside
    # the unit, which is stored now; one still being written belongs to a writer storing a
    # unit again, and is kept (one walk of the image's files, once).
    sweep_temporary(store, keys.image, idle=LIVE_FOR)
