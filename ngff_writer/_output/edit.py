"""Editing a final image's display metadata in place (:meth:`ngff_writer.Image.set_channels`).

The edit is checked (against the image, then the whole document by ome-zarr-models)
before anything is written; then it goes into the image's checkpoint, where every later
writing of the metadata (``finalize``, ``repair``) takes it from, and then into the image's
metadata. Arrays are never touched. An image that is not final is refused: its metadata
is still the writers' to rewrite, and would lose the edit.
"""

from __future__ import annotations

from zarr.abc.store import Store

from .._declare.bookkeeping import Identity, ImageKeys
from .._declare.spec import ImageSpec
from .._ngff.edits import Edits
from .._ngff.metadata import STATUS_COMPLETE, image_attributes
from .._ngff.stats import Summary, windows
from .._storage.stores import describe, node_attributes, write_group
from .._write.finalize import read_checkpoint
from ..errors import ImageNotFinalError

__all__ = ["edit_final"]


def edit_final(store: Store, spec: ImageSpec, keys: ImageKeys, identity: Identity, edits: Edits) -> None:
    """Lay ``edits`` over the final image's metadata (checked, then written; arrays untouched)."""
    checkpoint = read_checkpoint(store, keys)
    if checkpoint is None:
        raise ImageNotFinalError(
            f"image {spec.name!r} in {describe(store)} is not final yet: its metadata can be edited "
            "once every sample is written and it is finalized (Image.finalize, `ngff-writer finalize`)")
    merged = Edits.from_json(checkpoint.get("edits")).merged(edits)
    stats = [Summary.from_json(s) for s in checkpoint["stats"]]
    final = windows(stats, spec.window_percentiles, spec.np_dtype)
    # Built and checked by ome-zarr-models first: an edit it rejects writes nothing.
    attributes = image_attributes(spec, STATUS_COMPLETE, final, checkpoint["finalized_at"], identity, merged)
    node = node_attributes(store, keys.group)
    declaration = {**(node[1] if node else {}), "final": {**checkpoint, "edits": merged.to_json()}}
    write_group(store, keys.group, spec.zarr_format, declaration)
    write_group(store, keys.image, spec.zarr_format, attributes)
