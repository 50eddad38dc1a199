"""Complete → final metadata: omero windows from the ledger's statistics, status "complete".

Finalization is idempotent rather than locked: it derives everything from the ledger
(records read in key order) and the spec, so any number of processes that see the image
complete at the same moment write the same metadata (but for the ``finalized_at`` time).
No data is re-read.
"""

from __future__ import annotations

from datetime import UTC, datetime

from zarr.abc.store import Store

from .ngff import STATUS_COMPLETE, image_attributes
from .spec import ImageSpec
from .stats import merge_windows
from .storage import write_group
from .track import Ledger

__all__ = ["finalize_image"]


def finalize_image(store: Store, path: str, spec: ImageSpec, ledger: Ledger) -> bool:
    """Write the final metadata of a complete image.

    Returns
    -------
    bool
        True if the image is complete (and now final), False if a block is still missing;
        an incomplete image is left untouched.
    """
    if not (ledger.maybe_complete() and ledger.covered().all()):
        return False
    windows = merge_windows(
        ledger.summaries(), spec.n_channels, spec.window_percentiles, spec.np_dtype
    )
    # The time is the one part two processes finishing together may write differently.
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    write_group(store, path, spec.zarr_format, image_attributes(spec, STATUS_COMPLETE, windows, now))
    return True
