"""Repair: make an image whose bookkeeping or metadata was damaged resumable again.

A power loss without fsync can leave a document truncated to nothing; a disk that filled
up can leave half-written temporary files. ngff-writer detects such damage where it
reads (a :class:`~ngff_writer.errors.CorruptError` naming the key); :func:`repair_image`
then puts the image back into a state a resumed run completes:

- the image's attributes and its declaration (the bookkeeping group's attributes) hold
  the same spec, so an unreadable one is rebuilt from the other;
- an unreadable log segment is deleted. What it recorded is not lost if the data is:
  every write unit whose stored object exists is recorded again from the data (read back
  for its statistics; a unit is only ever stored whole, so an object that exists is a
  complete unit). Units whose data is missing become pending: write them again;
- an unreadable fragment is deleted: the parts it held become pending;
- temporary files a killed writer left (zarr's local store writes ``*.partial`` files
  and renames them) are deleted.

Repair reads chunk data back, unlike every other ngff-writer path; it writes nothing
but bookkeeping, metadata and deletions.
"""

from __future__ import annotations

import json
from typing import Any

import zarr
from zarr.abc.store import Store

from ._version import __version__
from .allocate import Declaration
from .assemble import unit_region
from .bookkeeping import GROUP, Identity, ImageKeys
from .discover import find_images
from .errors import CorruptError, NgffWriterError
from .finalize import read_checkpoint
from .fragments import Fragments
from .ngff import STATUS_COMPLETE, STATUS_IN_PROGRESS, WRITER_KEY, image_attributes, read_writer_attrs
from .spec import ImageSpec
from .stats import Summary, summarize, windows
from .storage import (
    StoreLike,
    delete_keys,
    describe,
    get_bytes,
    list_prefix,
    node_attributes,
    open_store,
    store_errors,
    sweep_temporary,
    write_group,
)
from .track import Ledger

__all__ = ["repair_image", "repair_output"]


def repair_output(root: StoreLike, *, storage_options: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Repair an output's root and every image in it (see the module docstring).

    Works where :func:`~ngff_writer.open_output` cannot (the root's own metadata
    damaged). Run it when no writer is running.

    Parameters
    ----------
    root
        The output: a path, a URL or a store, as for ``open_output``.
    storage_options
        Options for fsspec URLs.

    Returns
    -------
    dict
        What was done, per image path ("" for the root); empty when nothing needed repair.
    """
    store = open_store(root, "a", storage_options)
    done: dict[str, list[str]] = {}
    root, error = _attributes(store, "")
    if root is None and error is not None:
        declared, _ = _attributes(store, ImageKeys("", 3).group)
        if _spec(declared) is None:  # not an image: an output's root group
            write_group(store, "", 3 if get_bytes(store, "zarr.json") is not None else 2,
                        {WRITER_KEY: {"output": 1, "version": __version__}})
            done[""] = ["rebuilt the output's root attributes"]
    for name in find_images(store):
        actions = repair_image(store, name)
        if actions:
            done.setdefault(name, []).extend(actions)
    return done


def _attributes(store: Store, path: str) -> tuple[dict[str, Any] | None, str | None]:
    """A group's attributes, or the reason they cannot be read."""
    try:
        node = node_attributes(store, path)
    except CorruptError as exc:
        return None, str(exc)
    return (node[1] if node else None), None


def _spec(block: dict[str, Any] | None) -> ImageSpec | None:
    if not isinstance(block, dict) or not isinstance(block.get("spec"), dict):
        return None
    try:
        return ImageSpec.from_json(block["spec"])
    except (NgffWriterError, KeyError, TypeError, ValueError):
        return None


def repair_image(store: Store, name: str) -> list[str]:
    """Repair the image at ``name`` (see the module docstring); return what was done.

    Raises
    ------
    CorruptError
        Neither the image's attributes nor its declaration can be read: nothing tells
        what the image is.
    """
    actions: list[str] = []
    image_attrs, image_error = _attributes(store, name)
    block = read_writer_attrs(image_attrs) if image_attrs else None
    declared, declared_error = _attributes(store, ImageKeys(name, 3).group)
    spec = _spec(block) or _spec(declared)
    if spec is None:
        raise CorruptError(f"image {name!r} in {describe(store)}: neither its attributes ({image_error}) "
                           f"nor its declaration ({declared_error}) can be read; nothing tells what it is",
                           key=name)
    keys = ImageKeys(name, spec.zarr_format)  # where it is in this store, whatever it was declared as
    # The declaration's identity wins: writers check the id it holds.
    identity = Identity.of(declared) if _spec(declared) is not None else Identity.of(block or {})
    declaration = Declaration(spec, identity).document()
    if _spec(declared) is None:
        write_group(store, keys.group, spec.zarr_format, declaration)
        actions.append(f"rebuilt the declaration {keys.declaration} from the image's attributes")
    try:
        checkpoint = read_checkpoint(store, keys)
    except CorruptError:
        write_group(store, keys.group, spec.zarr_format, declaration)
        checkpoint = None
        actions.append(f"dropped the unreadable checkpoint in {keys.declaration}")

    if _spec(block) is None:
        if checkpoint is not None:
            final = windows([Summary.from_json(s) for s in checkpoint["stats"]], spec.window_percentiles,
                            spec.np_dtype)
            attributes = image_attributes(spec, STATUS_COMPLETE, final, checkpoint["finalized_at"],
                                          identity)
        else:
            attributes = image_attributes(spec, STATUS_IN_PROGRESS, identity=identity)
        write_group(store, keys.image, spec.zarr_format, attributes)
        actions.append(f"rebuilt the image's attributes from its declaration ({attributes[GROUP]['status']})")
        block = attributes[GROUP]
    if block.get("status") == STATUS_COMPLETE:
        return actions + _leftovers(store, keys) + _sweep(store, keys)

    actions += _drop_unreadable_segments(store, keys, spec)
    actions += _drop_unreadable_fragments(store, keys, spec)
    actions += _sweep(store, keys)
    actions += _record_stored_units(store, spec, keys, identity)
    return actions


def _drop_unreadable_segments(store: Store, keys: ImageKeys, spec: ImageSpec) -> list[str]:
    from .track import Segment

    bad = []
    ndim = len(spec.layout.shape)
    for key in list_prefix(store, keys.log + "/"):
        if not key.endswith(".json"):
            continue
        raw = get_bytes(store, key)
        if raw is None:
            continue
        try:
            Segment.from_json(key.rsplit("/", 1)[-1][:-5], json.loads(raw), ndim)
        except ValueError:
            bad.append(key)
    delete_keys(store, bad)
    return [f"deleted the unreadable log segment {key}" for key in bad]


def _drop_unreadable_fragments(store: Store, keys: ImageKeys, spec: ImageSpec) -> list[str]:
    bad = []
    for level in range(len(spec.levels)):
        fragments = Fragments(store, keys, level, "repair")
        for idx in fragments.units():
            try:
                fragments.load(idx)
            except CorruptError as exc:
                bad.append(exc.key)
    delete_keys(store, bad)
    return [f"deleted the unreadable fragment {key} (its parts are pending again)" for key in bad]


def _leftovers(store: Store, keys: ImageKeys) -> list[str]:
    """Log objects or fragments in a final image: a writer that died after it was finalized."""
    left = list_prefix(store, keys.log + "/") + list_prefix(store, keys.fragments() + "/")
    delete_keys(store, left)
    return [f"deleted {len(left)} log object(s) or fragment(s) left in the final image"] if left else []


def _sweep(store: Store, keys: ImageKeys) -> list[str]:
    gone = sweep_temporary(store, keys.image)
    return [f"deleted {gone} temporary file(s) a killed writer left"] if gone else []


def _record_stored_units(store: Store, spec: ImageSpec, keys: ImageKeys, identity: Identity) -> list[str]:
    """Record every level-0 unit whose object exists but no record lists (reads it back)."""
    ledger = Ledger(store, spec, keys.image, identity=identity)
    ledger.refresh()
    path = f"{keys.image}/0" if keys.image else "0"
    with store_errors(f"opening the level-0 array of {keys.image!r}", store):
        array = zarr.open_array(store, path=path, mode="r")
    prefix = path + "/"
    present = set(list_prefix(store, prefix))
    channel_axis = spec.layout.axes.index("c") if "c" in spec.layout.axes else None
    covered = ledger.coverage.grids[0]
    unit = spec.levels[0].unit
    rebuilt = 0
    for idx in zip(*(~covered).nonzero(), strict=True):
        idx = tuple(int(i) for i in idx)
        if prefix + array.metadata.encode_chunk_key(idx) not in present:
            continue  # not stored (or all fill value): pending, written again on resume
        region = unit_region(idx, unit, array.shape)
        with store_errors(f"reading unit {idx} of {spec.name!r}", store):
            data = array[region]
        ledger.record(0, (idx, tuple(i + 1 for i in idx)), summarize(data, channel_axis))
        rebuilt += 1
    ledger.commit()
    return [f"recorded {rebuilt} stored unit(s) no record listed, from their data"] if rebuilt else []
