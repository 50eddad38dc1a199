"""What an image holds, read from its metadata and arrays: levels, codecs, sizes, channels.

Works on any OME-Zarr image (NGFF 0.4 or 0.5), ngff-writer's or another tool's: it reads
only the OME metadata and the arrays' own metadata, plus the sizes of stored objects.
``ngff-writer info`` prints it; :func:`describe_image` is the Python face.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr
from zarr.abc.store import Store

from .._declare.shards import layout_reason
from .._storage.stores import field_of, metadata_keys, node_attributes, refuse_oversized, run, store_errors
from ..errors import CorruptError

__all__ = ["ChannelInfo", "ImageInfo", "LevelInfo", "describe_image", "ome_block"]


@dataclass(frozen=True)
class LevelInfo:
    """One resolution level: an array of the image.

    Attributes
    ----------
    path
        Array path inside the image group.
    shape, chunks, shards
        Array, chunk and shard shapes (``shards`` None when the array is not sharded).
    dtype
        Data type (numpy name).
    codecs
        Names of the codecs applied to each chunk, in order (``"blosc(zstd, 3)"``...).
    scale
        Pixel size from the OME metadata.
    translation
        Position of the centre of the first pixel from the OME metadata (zeros when it
        has none).
    stored_bytes
        Bytes of the objects stored under the array (metadata included).
    nbytes
        Bytes of the array uncompressed.
    """

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    dtype: str
    codecs: tuple[str, ...]
    scale: tuple[float, ...]
    stored_bytes: int
    nbytes: int
    translation: tuple[float, ...] = ()

    @property
    def ratio(self) -> float | None:
        """Compression ratio: uncompressed over stored bytes (None when nothing is stored)."""
        return self.nbytes / self.stored_bytes if self.stored_bytes else None


@dataclass(frozen=True)
class ChannelInfo:
    """One channel's display settings (``omero``): label, colour and contrast window."""

    label: str
    color: str | None
    window: dict[str, float] | None


@dataclass(frozen=True)
class ImageInfo:
    """An OME-Zarr image: where it is, who wrote it, its axes, levels and channels.

    ``status`` is ngff-writer's (``"in_progress"``, ``"complete"``), None for other tools';
    ``fingerprint`` what produced the data, when the writer said; ``layout`` one line on
    whether level 0 is sharded, and why (:func:`ngff_writer._declare.shards.layout_reason`).
    """

    path: str
    ngff_version: str
    written_by: str
    axes: tuple[str, ...]
    units: tuple[str | None, ...]
    levels: tuple[LevelInfo, ...]
    channels: tuple[ChannelInfo, ...]
    status: str | None = None
    fingerprint: str | None = None
    layout: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``ngff-writer info --json``)."""
        out = asdict(self)
        for level, info in zip(out["levels"], self.levels):
            level["ratio"] = info.ratio
        return out


def ome_block(attributes: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The NGFF version and the block holding ``multiscales`` of an image's attributes."""
    if isinstance(attributes.get("ome"), dict):
        ome = attributes["ome"]
        return str(ome.get("version", "0.5")), ome
    multiscales = attributes.get("multiscales")
    version = "0.4"
    if isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict):
        version = str(multiscales[0].get("version", "0.4"))
    return version, attributes


def _codec_name(codec: Any) -> str:
    config = codec.to_dict() if hasattr(codec, "to_dict") else codec.get_config()
    name = str(config.get("name") or config.get("id"))
    inner = config.get("configuration", config)
    if name == "blosc":
        return f"blosc:{inner.get('cname')}-{inner.get('clevel')}:{inner.get('shuffle')}"
    if "level" in inner:
        return f"{name}-{inner['level']}"
    return name


def _codecs(array: zarr.Array[Any]) -> tuple[str, ...]:
    # The serializer (bytes, endianness) says nothing a reader of this report needs.
    return tuple(_codec_name(c) for c in (*array.filters, *array.compressors))


def _level(store: Store, image: str, dataset: dict[str, Any]) -> LevelInfo:
    path = f"{image}/{dataset['path']}" if image else str(dataset["path"])
    refuse_oversized(store, metadata_keys(path))
    with store_errors(f"reading array {path}", store):
        array = zarr.open_array(store=store, path=path, mode="r")
        stored = run(store.getsize_prefix(path))
    scale: tuple[float, ...] = ()
    translation: tuple[float, ...] = (0.0,) * array.ndim
    for t in dataset.get("coordinateTransformations", []):
        if isinstance(t, dict) and t.get("type") in ("scale", "translation"):
            values = tuple(float(v) for v in t.get(t["type"], ()))
            if t["type"] == "scale":
                scale = values
            else:
                translation = values
    return LevelInfo(path=str(dataset["path"]), shape=tuple(array.shape), chunks=tuple(array.chunks),
                     shards=tuple(array.shards) if array.shards else None,
                     dtype=str(np.dtype(array.dtype)), codecs=_codecs(array), scale=scale,
                     stored_bytes=int(stored), nbytes=int(math.prod(array.shape)) * array.dtype.itemsize,
                     translation=translation)


def describe_image(store: Store, path: str) -> ImageInfo:
    """Describe the OME-Zarr image at ``path`` in ``store`` ("" for the root).

    Raises
    ------
    CorruptError
        Its metadata cannot be read, or holds no multiscales.
    StoreError
        The store cannot be read.
    """
    node = node_attributes(store, path)
    if node is None:
        raise CorruptError(f"no group at {path or '/'}", key=f"{path}/zarr.json")
    key = f"{path}/zarr.json" if path else "zarr.json"
    version, ome = ome_block(node[1])
    multiscales = ome.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], dict):
        raise CorruptError(f"{key} has no OME multiscales", key=key)
    ms = multiscales[0]
    # Every field is another tool's (or a bad disk's): read each one defensively.
    with field_of(key, "multiscales[0].axes"):
        axes = tuple(str(a["name"]) if isinstance(a, dict) else str(a) for a in _list(ms, "axes"))
        units = tuple(a.get("unit") if isinstance(a, dict) else None for a in _list(ms, "axes"))
    with field_of(key, "multiscales[0].datasets"):
        levels = tuple(_level(store, path, d) for d in _list(ms, "datasets"))
    with field_of(key, "omero.channels"):
        omero = ome.get("omero") or {}
        channels = tuple(ChannelInfo(label=str(c.get("label", "")), color=_color(c.get("color")),
                                     window=_window(c.get("window")))
                         for c in _list(omero, "channels"))
    writer = node[1].get("ngff_writer")
    status = writer.get("status") if isinstance(writer, dict) else None
    fingerprint = writer.get("fingerprint") if isinstance(writer, dict) else None
    return ImageInfo(path=path, ngff_version=version,
                     written_by="ngff-writer" if isinstance(writer, dict) else "another tool",
                     axes=axes, units=units, levels=levels, channels=channels, status=status,
                     fingerprint=fingerprint if isinstance(fingerprint, str) else None,
                     layout=_layout(levels, version))


def _list(block: dict[str, Any], field: str) -> list[Any]:
    """``block[field]``, a list (empty when absent): TypeError when it is something else."""
    if not isinstance(block, dict):
        raise TypeError(f"expected an object, got {type(block).__name__}")
    value = block.get(field, [])
    if not isinstance(value, list):
        raise TypeError(f"{field} is a {type(value).__name__}, not a list")
    return value


def _color(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"a color is a hex string, not {type(value).__name__}")
    return value


def _window(value: Any) -> dict[str, float] | None:
    """A channel's window with its numbers as floats (the keys present), or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise TypeError(f"a window is an object, not {type(value).__name__}")
    return {k: float(value[k]) for k in ("start", "end", "min", "max") if value.get(k) is not None}


def _layout(levels: tuple[LevelInfo, ...], version: str) -> str:
    if not levels:
        return ""
    first = levels[0]
    return layout_reason(first.shards, first.shape, np.dtype(first.dtype).itemsize, version)
