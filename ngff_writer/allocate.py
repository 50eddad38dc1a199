"""Spec → arrays and skeleton metadata in the store; no chunk data is written.

Allocation order makes a half-done declaration harmless: the arrays of every level
first, then their ledgers, then the image group whose attributes name the image. An image is visible to
``status`` and to other processes only once its group exists, and by then everything
it points to exists too.
"""

from __future__ import annotations

from typing import Any

import numcodecs
import zarr
from zarr.abc.store import Store
from zarr.codecs import BloscCodec, GzipCodec, ZstdCodec
from zarr.errors import ContainsArrayError

from .errors import SpecMismatchError
from .ngff import STATUS_IN_PROGRESS, image_attributes, read_writer_attrs
from .spec import ImageSpec, Level
from .storage import join, node_attributes, write_group
from .track import Ledger

__all__ = ["allocate_image", "ensure_parents"]


def _compressors(spec: ImageSpec) -> Any:
    c = spec.compressor
    if c is None:
        return None
    if isinstance(c, dict):
        return [c]
    v3 = spec.zarr_format == 3
    shuffle = numcodecs.Blosc.SHUFFLE
    presets = {
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


def _create_level(store: Store, path: str, spec: ImageSpec, level: Level) -> None:
    kwargs: dict[str, Any] = {}
    if spec.zarr_format == 3:
        kwargs["dimension_names"] = list(spec.layout.axes)
        if level.shards is not None:
            kwargs["shards"] = level.shards
    else:
        # NGFF 0.4 requires "/" between chunk indices; zarr's v2 default is ".".
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    name = join(path, level.path)
    try:
        zarr.create_array(
            store,
            name=name,
            shape=level.shape,
            dtype=spec.np_dtype,
            chunks=level.chunks,
            compressors=_compressors(spec),
            fill_value=spec.fill_value,
            zarr_format=spec.zarr_format,
            # Never overwrite: another process declaring the same image at the same time
            # may already be writing chunks, and overwriting would delete them.
            overwrite=False,
            **kwargs,
        )
    except ContainsArrayError:
        existing = zarr.open_array(store, path=name, mode="r")
        if (existing.shape, existing.dtype, existing.chunks) != (level.shape, spec.np_dtype, level.chunks):
            raise SpecMismatchError(
                f"{name} holds an array of shape {existing.shape}, {existing.dtype}, "
                f"chunks {existing.chunks}; expected {level.shape}, {spec.np_dtype}, "
                f"chunks {level.chunks}"
            ) from None


def allocate_image(store: Store, path: str, spec: ImageSpec) -> None:
    """Create every level's array, the ledgers and the in-progress metadata of an image."""
    ensure_parents(store, path, spec.zarr_format)
    for level in spec.levels:
        _create_level(store, path, spec, level)
    for k in range(len(spec.levels)):
        Ledger(store, path, spec, k).create()
    node = node_attributes(store, path)
    if node is not None and read_writer_attrs(node[1]) is not None:
        return  # declared meanwhile by another process: keep its status (maybe complete)
    write_group(store, path, spec.zarr_format, image_attributes(spec, STATUS_IN_PROGRESS))
