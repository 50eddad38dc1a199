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

- a level array whose metadata cannot be read (or says another shape, dtype or chunks)
  gets it back from the declaration, which holds everything it takes; its chunks stay;
- an image whose every unit of level 0 is then recorded is finalized (pyramid units
  missing are built from level 0, as a writer would have).

Repair reads chunk data back, unlike every other ngff-writer path; it writes nothing
but bookkeeping, metadata, deletions and those pyramid units. It changes ngff-writer
outputs only: on anything else (another tool's zarr, a plain folder) it raises
:class:`~ngff_writer.errors.NotAnOutputError` and writes nothing.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from .._declare.bookkeeping import GROUP, Identity, ImageKeys, check_format
from .._declare.spec import ImageSpec, recheck
from .._ngff.discover import find_images
from .._ngff.edits import Edits
from .._ngff.metadata import (
    STATUS_COMPLETE,
    STATUS_IN_PROGRESS,
    WRITER_KEY,
    image_attributes,
    read_writer_attrs,
)
from .._ngff.stats import Summary, summarize, windows
from .._storage.stores import (
    StoreLike,
    delete_keys,
    describe,
    get_bytes,
    join,
    key_exists,
    list_dir,
    list_prefix,
    loads,
    metadata_keys,
    node_attributes,
    open_array,
    open_store,
    oversized,
    put_bytes,
    refuse_links,
    refuse_oversized,
    store_errors,
    sweep_temporary,
    write_group,
)
from .._track.log import Ledger, live_writers
from .._track.ownership import survey
from .._version import __version__
from .._write.allocate import Declaration, array_documents
from .._write.assemble import unit_region
from .._write.finalize import finalize_image, read_checkpoint
from .._write.fragments import Fragments
from ..errors import CorruptError, NgffWriterError, NotAnOutputError, OutputInUseError

__all__ = ["repair_image", "repair_output"]


def repair_output(root: StoreLike, *, storage_options: dict[str, Any] | None = None,
                  force: bool = False) -> dict[str, list[str]]:
    """Repair an output's root and every ngff-writer image in it (see the module docstring).

    Works where :func:`~ngff_writer.open_output` cannot (the root's own metadata
    damaged). Run it when no writer is running. Only ngff-writer's own objects are
    changed: a root whose document cannot be read is rebuilt only when everything in it
    is ngff-writer's.

    Parameters
    ----------
    root
        The output: a path, a URL or a store, as for ``open_output``.
    storage_options
        Options for fsspec URLs.
    force
        Repair even while an image has a live writer (a heartbeat younger than 45 s):
        repairing under a writer can drop the parts it is saving.

    Returns
    -------
    dict
        What was done, per image path ("" for the root); empty when nothing needed repair.

    Raises
    ------
    NotAnOutputError
        No ngff-writer image is in it (another tool's data, a plain folder): nothing was
        written.
    OutputInUseError
        An image has a live writer and ``force`` is False: nothing was written.
    """
    store = open_store(root, "a", storage_options)
    where = describe(store)
    done: dict[str, list[str]] = {}
    root_attributes, error = _attributes(store, "")
    broken_root = root_attributes is None and error is not None
    if broken_root and _spec(_attributes(store, ImageKeys("", 3).group)[0]) is not None:
        images = [""]  # the root is an image: its attributes are rebuilt from its declaration
    elif broken_root:
        children = [c for c in list_dir(store, "") if c not in ("zarr.json", ".zgroup", ".zattrs")]
        images = [i for c in sorted(children) for i in find_images(store, c)]
        foreign = [f for c in children for f in survey(store, c).foreign]
        if not images:
            raise NotAnOutputError(f"{where}: its zarr.json cannot be read ({error}) and it holds no "
                                   "ngff-writer image: repair changes ngff-writer outputs only; nothing "
                                   "was written")
        if foreign:
            done[""] = [f"left the root's unreadable document as it is: the root also holds what "
                        f"ngff-writer did not write ({', '.join(foreign[:3])})"]
        else:
            write_group(store, "", 3 if key_exists(store, "zarr.json") else 2,
                        {WRITER_KEY: {"output": 1, "version": __version__}})
            done[""] = ["rebuilt the output's root attributes"]
    else:
        images = find_images(store)
    if not images:
        raise NotAnOutputError(f"{where} holds no ngff-writer image: repair changes ngff-writer outputs "
                               "only; nothing was written")
    if not force:
        for name in images:
            _refuse_live_writers(store, name)
    for name in images:
        actions = repair_image(store, name)
        if actions:
            done.setdefault(name, []).extend(actions)
    return done


def _refuse_live_writers(store: Store, name: str) -> None:
    for fmt in (3, 2):
        live = live_writers(store, ImageKeys(name, fmt))
        if live:
            beat = live[-1]
            raise OutputInUseError(
                f"image {name or '.'!r} in {describe(store)} is being written (writer {beat['writer']}, "
                f"process {beat['pid']} on {beat['host']}, alive {beat['age']:.0f} s ago); repair it once "
                "no writer runs, or pass force=True (--force); nothing was written")
        if fmt == 3 and key_exists(store, join(name, "zarr.json")):
            return


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
        return recheck(ImageSpec.from_json(block["spec"], check_format(block, "a document")))
    except (NgffWriterError, KeyError, TypeError, ValueError):
        return None  # damaged: the other document (declaration or attributes) is used


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
    # Repair reads, rewrites and deletes bookkeeping: never through a link out of the output.
    refuse_links(store, keys.group, f"repairing image {name or '/'!r}")
    # The declaration's identity wins: writers check the id it holds.
    identity = Identity.of(declared) if declared is not None and _spec(declared) is not None \
        else Identity.of(block or {})
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

    if block is None or _spec(block) is None:
        if checkpoint is not None:
            final = windows([Summary.from_json(s) for s in checkpoint["stats"]], spec.window_percentiles,
                            spec.np_dtype)
            attributes = image_attributes(spec, STATUS_COMPLETE, final, checkpoint["finalized_at"],
                                          identity, Edits.from_json(checkpoint.get("edits")))
        else:
            attributes = image_attributes(spec, STATUS_IN_PROGRESS, identity=identity)
        write_group(store, keys.image, spec.zarr_format, attributes)
        actions.append(f"rebuilt the image's attributes from its declaration ({attributes[GROUP]['status']})")
        block = attributes[GROUP]
    actions += _rebuild_arrays(store, spec, keys)
    if block.get("status") == STATUS_COMPLETE:
        return actions + _leftovers(store, keys) + _sweep(store, keys)

    actions += _drop_unreadable_segments(store, keys, spec)
    actions += _drop_unreadable_fragments(store, keys, spec)
    actions += _sweep(store, keys)
    ledger = Ledger(store, spec, keys.image, identity=identity)
    actions += _record_stored_units(store, spec, keys, ledger)
    actions += _finalize_if_complete(store, spec, ledger)
    return actions


def _rebuild_arrays(store: Store, spec: ImageSpec, keys: ImageKeys) -> list[str]:
    """Write back the metadata of every level array that cannot be read or is not as declared.

    Only the metadata documents are written (made by zarr from the declaration): the
    chunks stay, so no stored unit is lost.
    """
    actions = []
    for k, level in enumerate(spec.levels):
        path = join(keys.image, level.path)
        try:
            refuse_oversized(store, metadata_keys(path))
            with store_errors(f"opening the array {path}", store):
                array = zarr.open_array(store, path=path, mode="r")
            intact = (array.shape, array.dtype, array.chunks) == (level.shape, spec.np_dtype, level.chunks)
        except (NgffWriterError, ValueError, KeyError, TypeError):
            intact = False
        if not intact:
            for name, data in array_documents(spec, level).items():
                put_bytes(store, join(path, name), data)
            actions.append(f"rebuilt the metadata of level {k}'s array ({path}) from the declaration")
    return actions


def _finalize_if_complete(store: Store, spec: ImageSpec, ledger: Ledger) -> list[str]:
    """Finalize an image whose every unit of level 0 is recorded (pyramid units are rebuilt)."""
    ledger.refresh()
    if not ledger.complete(0):
        return []
    arrays = {k: open_array(store, join(ledger.keys.image, level.path), "r+")
              for k, level in enumerate(spec.levels)}
    with ThreadPoolExecutor(2, thread_name_prefix="ngff-writer-repair") as pool:
        finalize_image(store, spec, ledger, arrays.__getitem__, pool)
    return ["finalized it: every unit of level 0 is stored (pyramid units missing were rebuilt from it)"]


def _drop_unreadable_segments(store: Store, keys: ImageKeys, spec: ImageSpec) -> list[str]:
    from .._track.log import Segment

    bad = []
    ndim = len(spec.layout.shape)
    for key in list_prefix(store, keys.log + "/"):
        if not key.endswith(".json"):
            continue
        if oversized(store, key):  # never read: refused as loads() would refuse it
            bad.append(key)
            continue
        raw = get_bytes(store, key)
        if raw is None:
            continue
        try:
            Segment.from_json(key.rsplit("/", 1)[-1][:-5], loads(raw), ndim)
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


def _record_stored_units(store: Store, spec: ImageSpec, keys: ImageKeys, ledger: Ledger) -> list[str]:
    """Record every level-0 unit whose object exists but no record lists (reads it back)."""
    ledger.refresh()
    path = f"{keys.image}/0" if keys.image else "0"
    refuse_oversized(store, metadata_keys(path))
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
            data = np.asarray(array[region])
        ledger.record(0, (idx, tuple(i + 1 for i in idx)), summarize(data, channel_axis))
        rebuilt += 1
    ledger.commit()
    return [f"recorded {rebuilt} stored unit(s) no record listed, from their data"] if rebuilt else []
