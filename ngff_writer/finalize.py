"""Complete → final: missing pyramid units built, omero windows, status "complete".

Finalization is idempotent rather than locked: it derives everything from the ledgers
(records read in key order), the spec and the stored levels, so any number of
processes that see the image complete at the same moment write the same bytes and the
same metadata (but for the ``finalized_at`` time).

Pyramid levels are normally complete by then: they are built while level 0 is written
(:mod:`ngff_writer.levels`). Units a writer could not build that way (its process
died holding their parts) are made here from the stored level above, with the same
:func:`~ngff_writer.pyramid.downsample` and so the same bytes. That is the one place
ngff-writer reads chunk data back, and only for those units.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import zarr
from zarr.abc.store import Store

from .ngff import STATUS_COMPLETE, image_attributes
from .pyramid import downsample, source_region
from .spec import ImageSpec
from .stats import merge_windows
from .storage import write_group
from .track import Ledger

__all__ = ["build_missing", "finalize_image"]


def build_missing(spec: ImageSpec, level: int, source: zarr.Array, target: zarr.Array,
                  ledger: Ledger) -> int:
    """Make every unrecorded unit of pyramid ``level`` from the stored level above.

    Parameters
    ----------
    spec
        The image.
    level
        Pyramid level to complete (>= 1); the level above must be complete.
    source, target
        The arrays of levels ``level - 1`` and ``level``.
    ledger
        The ledger of ``level``; each unit made is recorded in it.

    Returns
    -------
    int
        Number of units made.
    """
    geometry = spec.levels[level]
    missing = [tuple(int(i) for i in idx) for idx in zip(*np.nonzero(~ledger.covered()), strict=True)]
    if not missing:
        return 0

    def make(idx: tuple[int, ...]) -> None:
        region = tuple(slice(i * u, min((i + 1) * u, n))
                       for i, u, n in zip(idx, geometry.unit, geometry.shape, strict=True))
        block = source[source_region(region, geometry.factors, source.shape)]
        target[region] = downsample(block, geometry.factors, spec.pyramid_method)
        ledger.record((idx, tuple(i + 1 for i in idx)), [])

    # A plain pool rather than a dask graph: each task is one unit and its ledger record,
    # and reading plus encoding spend their time outside the GIL.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ngff-writer-pyramid") as pool:
        for _ in pool.map(make, missing):
            pass
    return len(missing)


def finalize_image(store: Store, path: str, spec: ImageSpec, ledgers: list[Ledger],
                   array: Callable[[int], zarr.Array]) -> None:
    """Make an image whose level 0 is completely stored final.

    Parameters
    ----------
    store, path
        Where the image group is.
    spec
        The image.
    ledgers
        Every level's ledger, level 0 first.
    array
        Opens level ``k``'s array for writing.
    """
    for level in range(1, len(spec.levels)):
        build_missing(spec, level, array(level - 1), array(level), ledgers[level])
    windows = merge_windows(
        ledgers[0].summaries(), spec.n_channels, spec.window_percentiles, spec.np_dtype
    )
    # The time is the one part two processes finishing together may write differently.
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    write_group(store, path, spec.zarr_format, image_attributes(spec, STATUS_COMPLETE, windows, now))
