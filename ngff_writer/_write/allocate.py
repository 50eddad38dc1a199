"""Spec → declaration, arrays and skeleton metadata in the store; no chunk data is written.

Declaring is atomic where the store allows it (:func:`ngff_writer._storage.stores.create_if_absent`):
the first writer to create the image's declaration — the attributes of its bookkeeping
group (:mod:`ngff_writer._declare.bookkeeping`) — decides its settings, and every writer builds the
arrays from that declaration, never from its own arguments. So writers declaring the
same image at once, with the same or different settings, cannot leave arrays whose
metadata mixes both: a writer whose settings differ gets ``SpecMismatchError`` and
writes nothing.

After the declaration come the arrays of every level, then the image group's attributes,
which name the image. An image is visible to ``status`` and to other processes only once
its group has them, and by then everything it points to exists. A writer that dies
half-way leaves a declaration that the next one completes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numcodecs
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
from zarr.errors import ContainsArrayError
from zarr.storage import MemoryStore

from .._declare.bookkeeping import FORMAT, Identity, ImageKeys
from .._declare.spec import ImageSpec, Level
from .._ngff.metadata import STATUS_IN_PROGRESS, image_attributes, read_writer_attrs, spec_of
from .._storage.stores import (
    create_if_absent,
    describe,
    get_many,
    group_document,
    join,
    list_prefix,
    loads,
    metadata_keys,
    node_attributes,
    put_json,
    refuse_oversized,
    repair_hint,
    store_errors,
    write_group,
)
from .._version import __version__
from ..errors import CorruptError, SpecMismatchError

__all__ = ["Declaration", "allocate_image", "array_documents", "declaration_of", "declare", "ensure_parents"]


@dataclasses.dataclass(frozen=True)
class Declaration:
    """An image as declared: its settings and its identity (see :mod:`ngff_writer._declare.bookkeeping`)."""

    spec: ImageSpec
    identity: Identity

    def document(self) -> dict[str, Any]:
        """The declaration document (the bookkeeping group's attributes)."""
        return {"format": FORMAT, "spec": self.spec.to_json(), "version": __version__,
                **self.identity.to_json()}


def _compressors(spec: ImageSpec) -> Any:
    c = spec.compressor
    if c is None:
        return None
    if isinstance(c, dict):
        return [c]
    v3 = spec.zarr_format == 3
    shuffle = numcodecs.Blosc.SHUFFLE
    presets: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "blosc-zstd": (lambda: BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
                       lambda: numcodecs.Blosc(cname="zstd", clevel=3, shuffle=shuffle)),
        "blosc-lz4": (lambda: BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
                      lambda: numcodecs.Blosc(cname="lz4", clevel=5, shuffle=shuffle)),
        "zstd": (lambda: ZstdCodec(level=3), lambda: numcodecs.Zstd(level=3)),
        "gzip": (lambda: GzipCodec(level=5), lambda: numcodecs.GZip(level=5)),
    }
    make_v3, make_v2 = presets[c]
    return [make_v3() if v3 else make_v2()]


def ensure_parents(store: Store, path: str, zarr_format: int) -> None:
    """Create the groups above ``path`` that do not exist yet (the root included)."""
    parts = path.split("/")[:-1] if path else []
    for depth in range(len(parts) + 1):
        parent = "/".join(parts[:depth])
        if node_attributes(store, parent) is None:
            write_group(store, parent, zarr_format, {})


def declare(store: Store, spec: ImageSpec, fingerprint: str | None = None) -> Declaration:
    """Create the image's declaration unless one exists; return the declaration that holds.

    The result is this writer's when it declared the image, and the other writer's
    otherwise (its settings, fingerprint and id): compare before writing.

    Raises
    ------
    CorruptError, FormatVersionError
        The existing declaration cannot be read by this version.
    """
    keys = ImageKeys(spec.name, spec.zarr_format)
    mine = Declaration(spec, Identity.new(fingerprint))
    _, data = group_document(spec.zarr_format, mine.document())
    stored = create_if_absent(store, keys.declaration, data)
    if spec.zarr_format == 2:
        put_json(store, join(keys.group, ".zgroup"), {"zarr_format": 2})
    if stored == data:
        return mine
    try:
        doc = loads(stored)
        attributes = doc["attributes"] if spec.zarr_format == 3 else doc
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptError(f"the declaration {keys.declaration} in {describe(store)} is unreadable "
                           f"({exc}); {repair_hint(store)}",
                           key=keys.declaration) from exc
    return declaration_of(attributes, keys.declaration, describe(store))


def declaration_of(attributes: dict[str, Any], where: str, store_name: str) -> Declaration:
    """The declaration a declaration document (or an image's ``ngff_writer`` block) holds."""
    return Declaration(spec_of(attributes, where, store_name), Identity.of(attributes))


def _array_options(spec: ImageSpec, level: Level) -> dict[str, Any]:
    """What ``zarr.create_array`` takes for a level's array (but the store and name)."""
    kwargs: dict[str, Any] = {}
    if spec.zarr_format == 3:
        kwargs["dimension_names"] = list(spec.layout.axes)
        if level.shards is not None:
            kwargs["shards"] = level.shards
    else:
        # NGFF 0.4 requires "/" between chunk indices; zarr's v2 default is ".".
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    return {"shape": level.shape, "dtype": spec.np_dtype, "chunks": level.chunks,
            "compressors": _compressors(spec), "fill_value": spec.fill_value,
            "zarr_format": spec.zarr_format, **kwargs}


def array_documents(spec: ImageSpec, level: Level) -> dict[str, bytes]:
    """The metadata documents of a level's array (``zarr.json``, or ``.zarray``...): name → bytes.

    Made by zarr itself in memory, with the options the array was created with: what
    repair writes back where a level's metadata is damaged (the declaration holds all it
    takes), without touching the chunks.
    """
    memory = MemoryStore()
    zarr.create_array(memory, name="a", **_array_options(spec, level))
    return {key.removeprefix("a/"): data for key, data in get_many(memory, list_prefix(memory, "a/")).items()
            if data is not None}


def _create_level(store: Store, path: str, spec: ImageSpec, level: Level) -> None:
    name = join(path, level.path)
    with store_errors(f"creating the array {name}", store):
        try:
            # Never overwrite: another process declaring the same image at the same time
            # may already be writing chunks, and overwriting would delete them.
            zarr.create_array(store, name=name, overwrite=False, **_array_options(spec, level))
            return
        except ContainsArrayError:
            refuse_oversized(store, metadata_keys(name))
            existing = zarr.open_array(store, path=name, mode="r")
    if (existing.shape, existing.dtype, existing.chunks) != (level.shape, spec.np_dtype, level.chunks):
        raise SpecMismatchError(
            f"{name} holds an array of shape {existing.shape}, {existing.dtype}, "
            f"chunks {existing.chunks}; expected {level.shape}, {spec.np_dtype}, "
            f"chunks {level.chunks}"
        )


def allocate_image(store: Store, declaration: Declaration) -> None:
    """Create every level's array and the in-progress metadata of a declared image (idempotent)."""
    spec = declaration.spec
    ensure_parents(store, spec.name, spec.zarr_format)
    for level in spec.levels:
        _create_level(store, spec.name, spec, level)
    node = node_attributes(store, spec.name)
    if node is not None and read_writer_attrs(node[1]) is not None:
        return  # declared meanwhile by another process: keep its status (maybe complete)
    write_group(store, spec.name, spec.zarr_format,
                image_attributes(spec, STATUS_IN_PROGRESS, identity=declaration.identity))
