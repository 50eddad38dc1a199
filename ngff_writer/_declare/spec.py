"""Image specs: what a user declares, checked once and frozen.

A declaration (shape, axes, dtype, chunks, ...) passes through :func:`parse_image_spec`
once, at the boundary. The result, :class:`ImageSpec`, is immutable, serialises to JSON
(it is stored in the image's attributes, so any process can reopen the image), and
derives the stored layout (:class:`Layout`) from the declared axes.

The sample axis
---------------
OME-NGFF allows 2-5 axes ordered time → channel/custom → space and has no "sample"
axis. Declared axes may come in any order; the stored order is always
``t s c z y x`` (absent axes skipped), with ``s`` stored as a custom axis of type
``"sample"`` between time and channel. Viewers show it as a slider. When that would
make six axes (``s`` with all of ``t c z``), ``s`` is merged into ``t``: the stored
``t`` axis has ``S * T`` entries and sample ``i`` fills ``t[i*T:(i+1)*T]``.

=========  ============  ===========================================
declared   stored axes   one sample is written as
=========  ============  ===========================================
yx         y x           the whole image (one sample)
czyx       c z y x       the whole image (one sample)
syx        s y x         ``y x`` at ``s = i``
sczyx      s c z y x     ``c z y x`` at ``s = i``
styx       t s y x       ``t y x`` at ``s = i``
stczyx     t c z y x     ``t c z y x`` at ``t = i*T ... (i+1)*T - 1``
=========  ============  ===========================================

Samples are passed in the declared order without ``s`` (``"yxs"`` takes ``y x``
arrays) and are transposed to the stored order on write.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ..errors import (
    FormatVersionError,
    InvalidAxesError,
    InvalidChunksError,
    SpecError,
    UnsupportedDtypeError,
)
from .bookkeeping import FORMAT, GROUP
from .pyramid import METHODS, aligned, auto_levels, level_blocks, level_shape
from .shards import auto_shards, gathered

__all__ = [
    "AXIS_TYPES",
    "Blend",
    "DEFAULT_COMPRESSOR",
    "ImageSpec",
    "Label",
    "Layout",
    "Level",
    "Pyramid",
    "parse_channel_colors",
    "parse_channel_names",
    "parse_image_spec",
    "parse_label",
    "parse_title",
]

#: Stored axis order; ``s`` sits in the custom slot between time and channel.
STORED_ORDER = "tsczyx"
AXIS_TYPES = {"t": "time", "s": "sample", "c": "channel", "z": "space", "y": "space", "x": "space"}
MAX_AXES = 5

#: Blosc zstd level 3 with byte shuffle: within 0.3% of the best compression ratio of the
#: codecs measured on float32 predictions, written 1.7x faster than zstd level 5
#: (``benchmarks/codecs.py``; figures in the README).
DEFAULT_COMPRESSOR = "blosc-zstd"
COMPRESSOR_PRESETS = ("blosc-zstd", "blosc-lz4", "zstd", "gzip")

#: Most write units (chunks, or shards) an image may have at level 0 (see parse_image_spec).
MAX_UNITS = 1 << 32

#: Default chunks stop halving below this many bytes (the "1-4 MiB" guidance of zarr and NGFF).
CHUNK_TARGET_BYTES = 4 * 2**20

DEFAULT_COLORS = ("FFFFFF", "00FF00", "FF00FF", "00FFFF", "FFFF00", "FF0000", "0000FF")
NgffVersion = Literal["0.4", "0.5"]
Casting = Literal["safe", "same_kind", "unsafe"]

_SPACE_UNITS = frozenset(
    "angstrom attometer centimeter decimeter exameter femtometer foot gigameter hectometer "
    "inch kilometer megameter meter micrometer mile millimeter nanometer parsec petameter "
    "picometer terameter yard yoctometer yottameter zeptometer zettameter".split()
)
_TIME_UNITS = frozenset(
    "attosecond centisecond day decisecond exasecond femtosecond gigasecond hectosecond hour "
    "kilosecond megasecond microsecond millisecond minute nanosecond petasecond picosecond "
    "second terasecond yoctosecond yottasecond zeptosecond zettasecond".split()
)
_UNIT_ALIASES = {"um": "micrometer", "µm": "micrometer", "μm": "micrometer", "nm": "nanometer",
                 "mm": "millimeter", "m": "meter", "s": "second", "ms": "millisecond",
                 "us": "microsecond", "min": "minute", "h": "hour"}
_NAME_SEGMENT = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How declared axes map onto the stored array (derived from a spec, never stored).

    Attributes
    ----------
    axes
        Stored axis names, in NGFF order.
    shape
        Stored array shape.
    sample_axes
        Declared axes that index samples, ``s`` before ``t`` (``""``: one sample).
    sample_grid
        Their sizes; sample ``k`` is ``np.unravel_index(k, sample_grid)``.
    sample_shape
        Shape of one sample as the user passes it (declared order, sample axes left out).
    sample_perm
        Transpose that takes a sample from declared order to stored order.
    indexed
        Stored positions the block of one sample spans with extent 1 or ``T`` (merged).
    merged
        True when ``s`` was merged into ``t``.
    """

    axes: tuple[str, ...]
    shape: tuple[int, ...]
    sample_axes: str
    sample_grid: tuple[int, ...]
    sample_shape: tuple[int, ...]
    sample_perm: tuple[int, ...]
    indexed: tuple[int, ...]
    merged: bool

    @property
    def n_samples(self) -> int:
        """Number of samples (1 when there is no sample axis)."""
        return math.prod(self.sample_grid)

    def sample_region(self, index: int) -> tuple[slice, ...]:
        """Return the stored-array region that sample ``index`` fills."""
        region = [slice(0, n) for n in self.shape]
        at = {}  # index -> position along each sample axis, the last axis fastest
        for axis, n in zip(self.sample_axes[::-1], self.sample_grid[::-1], strict=True):
            index, at[axis] = divmod(index, n)
        for axis, i in at.items():
            if self.merged and axis == "s":
                continue  # placed through t below
            region[self.axes.index(axis)] = slice(int(i), int(i) + 1)
        if self.merged:
            t = self.axes.index("t")
            n_t = self.shape[t] // self.sample_grid[0]  # T: the merged t holds S blocks of T
            start = int(at["s"]) * n_t + int(at.get("t", 0))
            region[t] = slice(start, start + (1 if "t" in at else n_t))
        return tuple(region)


@dataclasses.dataclass(frozen=True)
class Blend:
    """Blend-mode tiling: overlapping tiles are averaged with weights that ramp to their edges.

    Attributes
    ----------
    tile_size, overlap
        Per space axis, in declared order. Tiles start where CAREamics puts them:
        every ``tile_size - overlap`` pixels, the last one flush with the image end.
    ramp
        ``"linear"`` or ``"cosine"`` weight ramp across each overlap.
    """

    tile_size: tuple[int, ...]
    overlap: tuple[int, ...]
    ramp: Literal["linear", "cosine"] = "cosine"


@dataclasses.dataclass(frozen=True)
class Pyramid:
    """Resolution levels, built while the image is written.

    Attributes
    ----------
    levels
        Number of levels, level 0 (full resolution) included: 2 or more, since a single
        level is no pyramid (``pyramid=None``). "Levels" counts the pyramid's arrays
        everywhere: here, in ``Image.n_levels``, in ``ngff-writer status`` and in the
        stored spec.
    factors
        Reduction between consecutive levels, per space axis in declared order
        (default 2 along ``y`` and ``x``, 1 along ``z``).
    method
        ``"mean"`` (default for images), ``"nearest"``, ``"mode"`` (default for labels) or
        ``"max"`` (masks); see :func:`ngff_writer._declare.pyramid.downsample`.

    See :mod:`ngff_writer._declare.pyramid` for how levels are made.
    """

    levels: int
    factors: tuple[int, ...]
    method: Literal["mean", "nearest", "mode", "max"] = "mean"


#: Label images hold integers of these types (NGFF's image-label rule).
LABEL_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64")


@dataclasses.dataclass(frozen=True)
class Label:
    """What makes an image a label image (a segmentation): NGFF's ``image-label`` block.

    Attributes
    ----------
    colors
        ``(label value, (r, g, b, a))`` pairs, 0-255 each; values without one are colored
        by the viewer.
    properties
        ``(label value, {name: value})`` pairs: anything to show beside a label (a class
        name, an area).
    source
        Path from the label image to the image it segments (``"../../"`` for a label
        under ``image/labels/``), or None for a standalone label image.
    """

    colors: tuple[tuple[int, tuple[int, int, int, int]], ...] = ()
    properties: tuple[tuple[int, dict[str, Any]], ...] = ()
    source: str | None = "../../"


@dataclasses.dataclass(frozen=True)
class Level:
    """One resolution level of an image, in stored axis order (derived from a spec).

    Attributes
    ----------
    path
        Array path inside the image group (``"0"``, ``"1"``, ...).
    shape, chunks
        Array shape and chunk shape.
    shards
        Shard shape, or None.
    scale
        Physical pixel size (level 0's times the accumulated factors).
    factors
        Reduction from the level above (all 1 for level 0).
    translation
        Where the centre of the level's first pixel lies, in physical units: level 0's
        is the image's; each reduction that stands for a block (mean, max, mode) moves it
        to the block's centre, half a block less half a pixel of the level above.
    """

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    scale: tuple[float, ...]
    factors: tuple[int, ...]
    translation: tuple[float, ...]

    @property
    def unit(self) -> tuple[int, ...]:
        """The block stored atomically at this level: the shard, else the chunk."""
        return self.shards or self.chunks


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """A validated, immutable image declaration.

    Sequences are in declared axis order. Build one with :func:`parse_image_spec`.
    """

    name: str
    shape: tuple[int, ...]
    axes: str
    sample_axes: str
    dtype: str
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    compressor: str | dict[str, Any] | None
    fill_value: float | int | bool
    scale: tuple[float, ...]
    units: tuple[str | None, ...]
    channel_names: tuple[str, ...]
    channel_colors: tuple[str, ...]
    ngff_version: NgffVersion
    cast: Casting
    window_percentiles: tuple[float, float]
    blend: Blend | None = None
    pyramid: Pyramid | None = None
    label: Label | None = None
    title: str | None = None
    translation: tuple[float, ...] | None = None
    #: Samples per shard of each level below 0 (level 1 first), None for one: the default
    #: layout gathers the small lower levels of several samples into one shard
    #: (:func:`ngff_writer._declare.shards.gathered`).
    shard_samples: tuple[int, ...] | None = None

    # ---- derived --------------------------------------------------------------------
    @cached_property
    def layout(self) -> Layout:
        """The stored layout of this image (see the module docstring)."""
        return _layout(self.axes, self.shape, self.sample_axes)

    @property
    def np_dtype(self) -> np.dtype:
        """The image dtype as a numpy dtype."""
        return np.dtype(self.dtype)

    @property
    def zarr_format(self) -> int:
        """Zarr format the NGFF version requires (2 for 0.4, 3 for 0.5)."""
        return 3 if self.ngff_version == "0.5" else 2

    def stored(self, values: Sequence[Any]) -> tuple[Any, ...]:
        """Reorder a per-declared-axis sequence into stored order (merged ``s`` dropped)."""
        by_axis = dict(zip(self.axes, values, strict=True))
        return tuple(by_axis[a] for a in self.layout.axes)

    @property
    def stored_chunks(self) -> tuple[int, ...]:
        """Chunk shape in stored order."""
        return self.stored(self.chunks)

    @property
    def stored_shards(self) -> tuple[int, ...] | None:
        """Shard shape in stored order, or None."""
        return None if self.shards is None else self.stored(self.shards)

    @property
    def write_unit(self) -> tuple[int, ...]:
        """Shape of the smallest block that is stored atomically: the shard, else the chunk."""
        return self.stored_shards or self.stored_chunks

    @cached_property
    def levels(self) -> tuple[Level, ...]:
        """Level 0 and every pyramid level below it."""
        return _levels(self)

    @property
    def pyramid_method(self) -> str:
        """How each level reduces the one above (``"mean"`` when there is no pyramid)."""
        return self.pyramid.method if self.pyramid is not None else "mean"

    @property
    def n_channels(self) -> int:
        """Size of the channel axis (1 when there is none)."""
        return self.shape[self.axes.index("c")] if "c" in self.axes else 1

    # ---- persistence -----------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Return the spec as JSON-compatible values (stored in the image attributes)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        fill = out["fill_value"]
        if isinstance(fill, float) and not math.isfinite(fill):
            out["fill_value"] = repr(fill)  # JSON has no NaN/inf
        # Fields added after 0.2.0 are left out when unset: a spec that does not use them is
        # stored as 0.2.0 stored it.
        for key in _OPTIONAL_SINCE_0_2:
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any], fmt: int = FORMAT) -> ImageSpec:
        """Rebuild a spec written by :meth:`to_json` in bookkeeping format ``fmt``."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            # Dropping them could silently change what the image means (a newer writer's option).
            raise FormatVersionError(
                f"the stored spec of image {data.get('name')!r} has fields this ngff-writer does not "
                f"know: {unknown}; it was written by a newer version: upgrade ngff-writer"
            )
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        kw.setdefault("sample_axes", parse_sample_axes(None, kw["axes"]))
        if kw.get("blend") is not None:
            b = kw["blend"]
            kw["blend"] = Blend(tuple(b["tile_size"]), tuple(b["overlap"]), b["ramp"])
        if kw.get("pyramid") is not None:
            p = kw["pyramid"]
            # Up to format 2 (ngff-writer 0.2) the stored levels did not count level 0.
            levels = int(p["levels"]) + (1 if fmt < 3 else 0)
            kw["pyramid"] = Pyramid(levels, tuple(p["factors"]), p["method"])
        if kw.get("shards") is not None:
            kw["shards"] = tuple(kw["shards"])
        if kw.get("label") is not None:
            lab = kw["label"]
            kw["label"] = Label(
                tuple((int(v), tuple(c)) for v, c in lab["colors"]),
                tuple((int(v), dict(p)) for v, p in lab["properties"]),
                lab["source"],
            )
        if isinstance(kw["fill_value"], str):
            kw["fill_value"] = float(kw["fill_value"])
        return cls(**kw)


_OPTIONAL_SINCE_0_2 = ("label", "title", "translation", "shard_samples")


# ---- parsing ---------------------------------------------------------------------------
def parse_axes(axes: str | Sequence[str]) -> str:
    """Normalise and check an axes string such as ``"SCZYX"`` or ``["y", "x"]``."""
    text = "".join(axes).lower() if not isinstance(axes, str) else axes.lower()
    unknown = sorted(set(text) - set(STORED_ORDER))
    if unknown:
        raise InvalidAxesError(
            f"axes {text!r}: unknown axis letters {unknown}; use letters of 'tsczyx'"
        )
    if len(set(text)) != len(text):
        raise InvalidAxesError(f"axes {text!r}: each axis may appear only once")
    if "y" not in text or "x" not in text:
        raise InvalidAxesError(
            f"axes {text!r}: OME-NGFF images need at least the space axes 'y' and 'x'"
        )
    return text


def parse_sample_axes(sample_axes: str | None, axes: str) -> str:
    """Default ``"s"`` when declared; letters of ``"st"`` present in ``axes``, ``s`` first."""
    if sample_axes is None:
        return "s" if "s" in axes else ""
    if not isinstance(sample_axes, str):
        raise InvalidAxesError(f"sample_axes must be a string such as 'st', got {sample_axes!r}")
    text = sample_axes.lower()
    if set(text) - set("st") or any(a not in axes for a in text) or len(set(text)) != len(text):
        raise InvalidAxesError(
            f"sample_axes {sample_axes!r}: use 's', 't' or 'st', each among the image axes {axes!r}"
        )
    return "".join(a for a in "st" if a in text)


def _layout(axes: str, shape: tuple[int, ...], sample_axes: str) -> Layout:
    size = dict(zip(axes, shape, strict=True))
    stored = [a for a in STORED_ORDER if a in axes]
    merged = len(stored) > MAX_AXES
    if merged:  # only s + t + c + z + y + x reaches 6: fold s into t
        if "s" not in sample_axes:
            raise InvalidAxesError(
                f"axes {axes!r}: six axes are stored with 's' merged into 't', so 's' must be a "
                "sample axis"
            )
        stored.remove("s")
    stored_shape = [size[a] * size["s"] if (merged and a == "t") else size[a] for a in stored]
    # Axes a sample spans only in part: its own sample axes (t when merged holds them).
    indexed_names = [a for a in stored if a in sample_axes or (merged and a == "t")]
    in_sample = [a for a in axes if a not in sample_axes]
    perm = tuple(in_sample.index(a) for a in stored if a not in sample_axes)
    return Layout(
        axes=tuple(stored),
        shape=tuple(stored_shape),
        sample_axes=sample_axes,
        sample_grid=tuple(size[a] for a in sample_axes),
        sample_shape=tuple(size[a] for a in in_sample),
        sample_perm=perm,
        indexed=tuple(stored.index(a) for a in indexed_names),
        merged=merged,
    )


def _per_axis(name: str, value: Any, axes: str, default: Any) -> tuple[Any, ...]:
    if value is None:
        return tuple(default(a) for a in axes)
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value):
            raise SpecError(f"{name}: keys must be axis letters, got {list(value)}")
        extra = sorted(set(map(str.lower, value)) - set(axes))
        if extra:
            raise SpecError(f"{name}: axes {extra} are not in the image axes {axes!r}")
        lower = {k.lower(): v for k, v in value.items()}
        return tuple(lower.get(a, default(a)) for a in axes)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise SpecError(f"{name}: expected a mapping axis -> value or a sequence, got {value!r}")
    if len(value) != len(axes):
        raise SpecError(f"{name}: expected {len(axes)} values for axes {axes!r}, got {len(value)}")
    return tuple(value)


def parse_dtype(dtype: Any) -> np.dtype:
    """Return a native-endian numpy dtype, refusing kinds viewers cannot show."""
    try:
        dt: np.dtype = np.dtype(dtype)
    except TypeError as exc:
        raise UnsupportedDtypeError(f"dtype {dtype!r} is not a numpy dtype") from exc
    if dt.kind not in "buif":
        raise UnsupportedDtypeError(
            f"dtype {dt} is not supported: OME-Zarr images hold bool, integer or float data"
        )
    return dt.newbyteorder("=")


def default_chunks(layout: Layout, itemsize: int, factors: Mapping[str, int] | None = None
                   ) -> tuple[int, ...]:
    """One entry per stored axis: 1 along t/s/c, spatial axes halved until <= 4 MiB.

    A halved chunk is rounded up to a multiple of the pyramid factor of its axis
    (``factors``, by axis name), so that pyramid levels can be built from whole chunks.
    """
    factors = factors or {}
    chunks = {a: (n if AXIS_TYPES[a] == "space" else 1) for a, n in zip(layout.axes, layout.shape)}
    spatial = [a for a in layout.axes if AXIS_TYPES[a] == "space"]
    while math.prod(chunks.values()) * itemsize > CHUNK_TARGET_BYTES:
        largest = max(spatial, key=lambda a: chunks[a])
        if chunks[largest] == 1:
            break
        half = -(-chunks[largest] // 2)
        f = factors.get(largest, 1)
        chunks[largest] = min(half + (-half) % f, chunks[largest] - 1) if half > 1 else 1
    return tuple(chunks[a] for a in layout.axes)


def _parse_blocks(
    what: str, value: Sequence[int], axes: str, shape: tuple[int, ...], layout: Layout
) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidChunksError(f"{what}: expected a sequence of ints, got {value!r}")
    if len(value) != len(axes):
        raise InvalidChunksError(
            f"{what}: expected {len(axes)} values for axes {axes!r}, got {len(value)}"
        )
    try:
        blocks = tuple(int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InvalidChunksError(f"{what}: expected ints, got {value!r}") from exc
    if any(b < 1 for b in blocks):
        raise InvalidChunksError(f"{what}: every entry must be >= 1, got {blocks}")
    size = dict(zip(axes, blocks))
    # The block is the unit of atomic write: if one held two samples, two writers of
    # different samples would each rewrite it and one would lose its sample.
    for a in layout.sample_axes:
        if size[a] != 1:
            raise InvalidChunksError(
                f"{what}: must be 1 along the sample axis {a!r} (got {size[a]}) so that every "
                "sample is stored in whole blocks of its own"
            )
    if layout.merged and layout.shape[layout.axes.index("t")] // layout.sample_grid[0] % size["t"]:
        raise InvalidChunksError(
            f"{what}: 's' is merged into 't', so the 't' entry ({size['t']}) must divide "
            f"T = {layout.shape[layout.axes.index('t')] // layout.sample_grid[0]}"
        )
    return blocks


def parse_image_spec(
    name: str,
    shape: Sequence[int],
    axes: str | Sequence[str],
    dtype: Any = "float32",
    *,
    sample_axes: str | None = None,
    chunks: Sequence[int] | None = None,
    shards: Sequence[int] | str | None = "auto",
    compressor: Any = "default",
    fill_value: float | int | bool = 0,
    scale: Mapping[str, float] | Sequence[float] | None = None,
    translation: Mapping[str, float] | Sequence[float] | None = None,
    units: str | Mapping[str, str] | None = None,
    channel_names: Sequence[str] | None = None,
    channel_colors: Sequence[str] | None = None,
    ngff_version: str = "0.5",
    cast: str = "safe",
    window_percentiles: tuple[float, float] = (0.5, 99.5),
    blend: Blend | Mapping[str, Any] | None = None,
    pyramid: Pyramid | Mapping[str, Any] | int | str | None = "auto",
    label: Label | None = None,
    title: str | None = None,
) -> ImageSpec:
    """Check a declaration and return its frozen :class:`ImageSpec`.

    Parameters are those of :meth:`ngff_writer.Output.create_image`; see there. ``label``
    makes it a label image (:meth:`ngff_writer.Output.create_labels`).

    Raises
    ------
    InvalidAxesError, InvalidChunksError, UnsupportedDtypeError, SpecError
        When the declaration cannot be stored as valid OME-Zarr.
    """
    name = parse_name(name)
    axes = parse_axes(axes)
    try:
        shape_t = tuple(int(n) for n in shape)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"shape must be a sequence of ints, got {shape!r}") from exc
    if len(shape_t) != len(axes):
        raise InvalidAxesError(
            f"shape {shape_t} has {len(shape_t)} dimensions but axes {axes!r} name {len(axes)}"
        )
    if any(n < 1 for n in shape_t):
        raise SpecError(f"shape {shape_t}: every dimension must be >= 1")
    dt = parse_dtype(dtype)
    sample_axes_t = parse_sample_axes(sample_axes, axes)
    layout = _layout(axes, shape_t, sample_axes_t)

    version = str(ngff_version)
    if version not in ("0.4", "0.5"):
        raise SpecError(f"ngff_version must be '0.4' or '0.5', got {ngff_version!r}")

    if label is not None:
        _check_label(label, dt, blend)
    levels_wanted, factors, method = _pyramid_request(pyramid, axes, label is not None)
    if chunks is None:
        by_axis = dict(zip((a for a in axes if a in "zyx"), factors, strict=True))
        stored = dict(zip(layout.axes, default_chunks(layout, dt.itemsize, by_axis)))
        chunks_t = tuple(stored.get(a, 1) for a in axes)  # a merged 's' keeps chunk 1
    else:
        chunks_t = _parse_blocks("chunks", chunks, axes, shape_t, layout)
    shards_t = None
    if isinstance(shards, str):
        if shards != "auto":
            raise InvalidChunksError(f"shards must be 'auto', None or a shape, got {shards!r}")
        shards_t = auto_shards(axes, shape_t, sample_axes_t, chunks_t, dt.itemsize, version)
        if shards_t is not None:
            try:  # the rules of explicit shards hold for the default (a merged 's' has its own)
                _parse_blocks("shards", shards_t, axes, shape_t, layout)
            except InvalidChunksError:
                shards_t = None
    elif shards is not None:
        if version != "0.5":
            raise InvalidChunksError("shards need zarr format 3: use ngff_version='0.5'")
        shards_t = _parse_blocks("shards", shards, axes, shape_t, layout)
        bad = [a for a, s, c in zip(axes, shards_t, chunks_t) if s % c]
        if bad:
            raise InvalidChunksError(
                f"shards {shards_t} must be whole multiples of chunks {chunks_t} (axes {bad})"
            )

    if cast not in ("safe", "same_kind", "unsafe"):
        raise SpecError(f"cast must be 'safe', 'same_kind' or 'unsafe', got {cast!r}")
    try:
        lo, hi = (float(p) for p in window_percentiles)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"window_percentiles must be two numbers, got {window_percentiles!r}") from exc
    if not 0 <= lo < hi <= 100:
        raise SpecError(f"window_percentiles must satisfy 0 <= low < high <= 100, got {(lo, hi)}")

    spec = ImageSpec(
        name=name,
        shape=shape_t,
        axes=axes,
        sample_axes=sample_axes_t,
        dtype=dt.str if dt.itemsize > 1 else dt.name,
        chunks=chunks_t,
        shards=shards_t,
        compressor=_parse_compressor(compressor, version),
        fill_value=_parse_fill(fill_value, dt),
        scale=_parse_scale(scale, axes),
        units=_parse_units(units, axes),
        channel_names=parse_channel_names(channel_names, axes, shape_t, name),
        channel_colors=parse_channel_colors(channel_colors, axes, shape_t),
        ngff_version=version,  # type: ignore[arg-type]  # a str checked to be one of the Literal's above
        cast=cast,  # type: ignore[arg-type]  # a str checked to be one of the Literal's above
        window_percentiles=(lo, hi),
        blend=_parse_blend(blend, axes, shape_t),
        label=label,
        title=parse_title(title),
        translation=_parse_translation(translation, axes),
    )
    # Every writer keeps one flag per write unit of every level (which are stored): past
    # 2^32 units (4 GiB of flags) the job could not be tracked; a shape from a damaged
    # document (1e18) is refused here rather than by numpy's allocator.
    n_units = math.prod(-(-n // u) for n, u in zip(spec.layout.shape, spec.write_unit, strict=True))
    if n_units > MAX_UNITS:
        raise SpecError(f"shape {shape_t} in blocks of {spec.write_unit} makes {n_units} write units, more "
                        f"than the {MAX_UNITS} ngff-writer tracks: use larger chunks or shards")
    resolved = _resolve_pyramid(spec, levels_wanted, factors, method)
    if resolved is not None:
        spec = dataclasses.replace(spec, pyramid=resolved)
    if isinstance(shards, str) and spec.shards is not None and spec.sample_axes and not spec.layout.merged:
        spec = dataclasses.replace(spec, shard_samples=gathered(
            [level.shards or level.chunks for level in spec.levels], spec.np_dtype.itemsize))
    return spec


def recheck(spec: ImageSpec) -> ImageSpec:
    """``spec``, read from a document, checked as a declaration is: SpecError if not one.

    The same parser as what a user passes: a stored spec an attacker or a bad disk changed
    (a shape of 1e18, chunks of 0, a dtype that is none) is refused the same way, before use.
    The name is left out (an image found under a name an older version accepted stays
    readable); gathered lower levels are checked here.
    """
    try:
        parse_image_spec(
            "p", spec.shape, spec.axes, spec.dtype, sample_axes=spec.sample_axes, chunks=spec.chunks,
            shards=spec.shards, compressor=spec.compressor, fill_value=spec.fill_value,
            scale=spec.scale, translation=spec.translation,
            units={a: u for a, u in zip(spec.axes, spec.units, strict=True) if u},
            channel_names=spec.channel_names, channel_colors=spec.channel_colors,
            ngff_version=spec.ngff_version, cast=spec.cast, window_percentiles=spec.window_percentiles,
            blend=spec.blend, pyramid=spec.pyramid, label=spec.label, title=spec.title)
    except (TypeError, ValueError, OverflowError) as exc:  # fields of the wrong type
        raise SpecError(f"a field of the wrong type ({exc})") from exc
    gather = spec.shard_samples
    if gather is not None and (spec.pyramid is None or len(gather) != spec.pyramid.levels - 1
                               or any(isinstance(g, bool) or not isinstance(g, int) or g < 1
                                      for g in gather)):
        raise SpecError(f"shard_samples {gather!r}: one int >= 1 per level below 0")
    return spec


def parse_title(title: Any) -> str | None:
    if title is None:
        return None
    if not isinstance(title, str) or not title.strip():
        raise SpecError(f"title must be a non-empty string, got {title!r}")
    return title


def _check_label(label: Label, dt: np.dtype, blend: Any) -> None:
    if dt.name not in LABEL_DTYPES:
        raise UnsupportedDtypeError(f"label images hold integers ({', '.join(LABEL_DTYPES)}), not {dt}")
    if blend is not None:
        # Averaging two tiles' label ids makes a third id that neither tile predicted.
        raise SpecError("label images cannot blend tiles (a weighted mean of label values is no "
                        "label): write their tiles in crop mode")


def _pyramid_request(pyramid: Any, axes: str, labels: bool = False
                     ) -> tuple[int | str | None, tuple[int, ...], str]:
    """``(levels, factors, method)`` asked for; levels is an int, ``"auto"`` or None."""
    space = [a for a in axes if AXIS_TYPES[a] == "space"]
    default_factors = tuple(2 if a in "yx" else 1 for a in space)
    default_method = "mode" if labels else "mean"
    if pyramid is None or pyramid is False:
        return None, default_factors, default_method
    if isinstance(pyramid, Pyramid):
        pyramid = dataclasses.asdict(pyramid)
    if isinstance(pyramid, (str, int)) and not isinstance(pyramid, bool):
        pyramid = {"levels": pyramid}
    if not isinstance(pyramid, Mapping):
        raise SpecError(
            f"pyramid must be 'auto', a number of levels, a mapping or a Pyramid, got {pyramid!r}"
        )
    extra = sorted(set(pyramid) - {"levels", "factors", "method"})
    if extra:
        raise SpecError(f"pyramid takes levels, factors and method; got unknown keys {extra}")
    levels = pyramid.get("levels", "auto")
    if levels != "auto":
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
            raise SpecError(f"pyramid levels must be 'auto' or an int >= 1 (the number of levels, "
                            f"level 0 included), got {levels!r}")
        levels = int(levels)
    factors_in = pyramid.get("factors")
    if isinstance(factors_in, Mapping):
        extra_axes = sorted(set(map(str.lower, factors_in)) - set(space))
        if extra_axes:
            raise SpecError(f"pyramid factors: {extra_axes} are not space axes of {axes!r}; "
                            "only space axes are downsampled")
        defaults = dict(zip(space, default_factors, strict=True))
        lower = {k.lower(): v for k, v in factors_in.items()}
        factors_in = [lower.get(a, defaults[a]) for a in space]
    elif factors_in is None:
        factors_in = default_factors
    if isinstance(factors_in, (str, bytes)) or not isinstance(factors_in, Sequence) \
            or len(factors_in) != len(space):
        raise SpecError(f"pyramid factors: expected one int per space axis {space}, got {factors_in!r}")
    if any(isinstance(f, bool) or not isinstance(f, (int, np.integer)) or f < 1 for f in factors_in):
        raise SpecError(f"pyramid factors must be ints >= 1, got {factors_in!r}")
    factors = tuple(int(f) for f in factors_in)
    if all(f == 1 for f in factors):
        raise SpecError(f"pyramid factors {factors}: at least one axis must be reduced (factor > 1)")
    method = pyramid.get("method", default_method)
    allowed = ("mode", "nearest") if labels else METHODS
    if method not in allowed:
        raise SpecError(f"pyramid method must be one of {allowed}{' for labels' if labels else ''}, "
                        f"got {method!r}")
    return levels, factors, method


def _resolve_pyramid(spec: ImageSpec, levels: int | str | None, factors: tuple[int, ...],
                     method: str) -> Pyramid | None:
    """Turn a request into the levels to build (level 0 counted), checked against the chunks."""
    if levels is None:
        return None
    # method: a str _pyramid_request checked to be one of Pyramid.method's Literal values.
    trial = dataclasses.replace(spec, pyramid=Pyramid(1, factors, method))  # type: ignore[arg-type]
    stored_factors = _stored_factors(trial)
    shape, unit = spec.layout.shape, spec.write_unit
    if levels == "auto":
        levels = auto_levels(shape, unit, spec.stored_chunks, stored_factors)
    elif not isinstance(levels, int):
        raise AssertionError(levels)  # _pyramid_request gives an int, "auto" or None
    else:
        for k in range(1, levels):
            if all(f == 1 or n == 1 for n, f in zip(shape, stored_factors, strict=True)):
                raise SpecError(
                    f"pyramid levels={levels}: level {k - 1} is already 1 pixel along every reduced "
                    f"axis; ask for at most {k} levels"
                )
            level_unit = level_blocks(unit, shape)
            if not aligned(level_unit, shape, stored_factors):
                bad = [a for a, u, n, f in zip(spec.layout.axes, level_unit, shape, stored_factors,
                                               strict=True) if f > 1 and u < n and u % f]
                what = "shards" if spec.shards else "chunks"
                raise InvalidChunksError(
                    f"pyramid: {what} {level_unit} of level {k - 1} are not multiples of the factors "
                    f"along {bad}; each level is built from whole {what}, so use {what} that are "
                    f"multiples of the factors, pyramid='auto' (stops where they are not) or "
                    f"pyramid=None"
                )
            shape = level_shape(shape, stored_factors)
    # A single level is no pyramid.
    return Pyramid(levels, factors, method) if levels > 1 else None  # type: ignore[arg-type]  # as above


def _stored_factors(spec: ImageSpec) -> tuple[int, ...]:
    """Reduction per stored axis (1 for non-space axes and without a pyramid)."""
    if spec.pyramid is None:
        return (1,) * len(spec.layout.axes)
    by_axis = dict(zip((a for a in spec.axes if AXIS_TYPES[a] == "space"), spec.pyramid.factors,
                       strict=True))
    return tuple(by_axis.get(a, 1) for a in spec.layout.axes)


def _levels(spec: ImageSpec) -> tuple[Level, ...]:
    shape, chunks, shards = spec.layout.shape, spec.stored_chunks, spec.stored_shards
    scale = spec.stored(spec.scale)
    translation = spec.stored(spec.translation) if spec.translation else (0.0,) * len(shape)
    ones = (1,) * len(shape)
    levels = [Level("0", shape, chunks, shards, scale, ones, translation)]
    if spec.pyramid is None:
        return tuple(levels)
    factors = _stored_factors(spec)
    # "nearest" keeps each block's first pixel where it was; the other methods stand for
    # the whole block, whose centre is (f - 1) / 2 pixels of the level above further on.
    shift = 0.0 if spec.pyramid.method == "nearest" else 0.5
    for k in range(1, spec.pyramid.levels):
        shape = level_shape(shape, factors)
        level_chunks = level_blocks(chunks, shape)
        level_shards = None if shards is None else level_blocks(shards, shape, level_chunks)
        if level_shards is not None and spec.shard_samples:
            s = spec.layout.axes.index(spec.sample_axes[-1])  # consecutive samples along it
            level_shards = tuple(min(spec.shard_samples[k - 1], shape[s]) if i == s else n
                                 for i, n in enumerate(level_shards))
        translation = tuple(t + shift * (f - 1) * s
                            for t, f, s in zip(translation, factors, scale, strict=True))
        scale = tuple(s * f for s, f in zip(scale, factors, strict=True))
        levels.append(Level(str(k), shape, level_chunks, level_shards, scale, factors, translation))
    return tuple(levels)


def _parse_blend(blend: Any, axes: str, shape: tuple[int, ...]) -> Blend | None:
    if blend is None:
        return None
    if isinstance(blend, Mapping):
        try:
            fields: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in blend.items()}
            blend = Blend(**fields)
        except TypeError as exc:
            raise SpecError(f"blend takes tile_size, overlap and ramp, got {dict(blend)}") from exc
    if not isinstance(blend, Blend):
        raise SpecError(f"blend must be a mapping or a Blend, got {blend!r}")
    space = [a for a in axes if AXIS_TYPES[a] == "space"]
    try:
        size = tuple(int(v) for v in blend.tile_size)
        overlap = tuple(int(v) for v in blend.overlap)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"blend: tile_size and overlap must be ints, got {blend}") from exc
    if len(size) != len(space) or len(overlap) != len(space):
        raise SpecError(f"blend: tile_size and overlap need one value per space axis {space}")
    if any(p < 1 or not 0 <= o < p for p, o in zip(size, overlap)):
        raise SpecError(f"blend: need tile_size >= 1 and 0 <= overlap < tile_size, got {size}, {overlap}")
    if blend.ramp not in ("linear", "cosine"):
        raise SpecError(f"blend: ramp must be 'linear' or 'cosine', got {blend.ramp!r}")
    return Blend(size, overlap, blend.ramp)


def parse_name(name: str) -> str:
    """Check an image name: a relative path of ``/``-separated segments, or "" for the root."""
    if not isinstance(name, str):
        raise SpecError(f"image name must be a string, got {name!r}")
    if name == "":
        return ""  # the output root is the image (one image per store, e.g. x.ome.zarr)
    if not name.strip("/"):
        raise SpecError(f"image name {name!r}: use '' for an image at the output root")
    segments = name.strip("/").split("/")
    for seg in segments:
        if seg in (".", "..") or not _NAME_SEGMENT.match(seg) or seg.startswith("__"):
            raise SpecError(
                f"image name {name!r}: segment {seg!r} must use letters, digits, '_', '-', '.'"
            )
        # One rule for every name (images, labels, series, plates, wells, fields): what a
        # reader, or our own discovery, skips or takes for something else is refused
        # before anything is written: hidden names (zarr v2's .zattrs, .zgroup...), zarr v3's
        # document, and the suffix of the temporary files a repair sweeps.
        if seg.startswith(".") or seg == "zarr.json" or seg.endswith(".partial"):
            raise SpecError(
                f"image name {name!r}: segment {seg!r} is hidden from readers or reserved by zarr "
                "(a leading '.', 'zarr.json', a '.partial' suffix)"
            )
    if GROUP in segments:
        raise SpecError(f"image name {name!r}: {GROUP!r} is reserved for ngff-writer's bookkeeping")
    return "/".join(segments)


def _parse_compressor(compressor: Any, version: str) -> str | dict[str, Any] | None:
    config = _compressor_config(compressor)
    if isinstance(config, dict):
        v3 = "name" in config and "id" not in config
        if v3 != (version == "0.5"):
            raise SpecError(
                f"compressor {config}: a {'zarr v3' if v3 else 'numcodecs (zarr v2)'} codec cannot "
                f"compress an NGFF {version} image (zarr v{'3' if version == '0.5' else '2'})"
            )
    return config


def _compressor_config(compressor: Any) -> str | dict[str, Any] | None:
    if compressor is None or compressor == "none":
        return None
    if compressor == "default":
        return DEFAULT_COMPRESSOR
    if isinstance(compressor, str):
        if compressor not in COMPRESSOR_PRESETS:
            raise SpecError(
                f"compressor {compressor!r}: use one of {COMPRESSOR_PRESETS}, None, "
                "or a zarr/numcodecs codec"
            )
        return compressor
    if isinstance(compressor, Mapping):
        return dict(compressor)
    if hasattr(compressor, "to_dict"):  # a zarr v3 codec
        config = dict(compressor.to_dict())
        if config.get("name") == "blosc":
            # A BloscCodec made without typesize serialises typesize=1, which turns
            # shuffle into a no-op; dropped, zarr sets it from the dtype.
            config["configuration"] = {k: v for k, v in config.get("configuration", {}).items()
                                       if k != "typesize"}
        return config
    if hasattr(compressor, "get_config"):  # a numcodecs codec (zarr format 2)
        return dict(compressor.get_config())
    raise SpecError(f"compressor {compressor!r} is not a preset name, codec, or codec JSON")


def _parse_fill(fill_value: Any, dt: np.dtype) -> float | int | bool:
    try:
        cast = np.array(fill_value).astype(dt, casting="unsafe")
        ok = np.array_equal(cast, np.array(fill_value), equal_nan=dt.kind == "f")
    except (TypeError, ValueError) as exc:
        raise SpecError(f"fill_value {fill_value!r} is not a {dt} value") from exc
    if not ok:
        raise SpecError(f"fill_value {fill_value!r} does not fit dtype {dt}")
    value: float | int | bool = cast.item()
    return value


def _parse_scale(scale: Any, axes: str) -> tuple[float, ...]:
    values = _per_axis("scale", scale, axes, lambda a: 1.0)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"scale must hold numbers, got {values!r}") from exc
    if not all(math.isfinite(v) and v > 0 for v in out):
        raise SpecError(f"scale entries must be finite and > 0, got {out}")
    return out


def _parse_translation(translation: Any, axes: str) -> tuple[float, ...] | None:
    if translation is None:
        return None
    values = _per_axis("translation", translation, axes, lambda a: 0.0)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"translation must hold numbers, got {values!r}") from exc
    if not all(math.isfinite(v) for v in out):
        raise SpecError(f"translation entries must be finite, got {out}")
    if any(v and a in "sc" for a, v in zip(axes, out, strict=True)):
        raise SpecError(f"translation places the time and space axes (t, z, y, x), not s or c; "
                        f"got {dict(zip(axes, out, strict=True))}")
    return out if any(out) else None


def _parse_units(units: Any, axes: str) -> tuple[str | None, ...]:
    if isinstance(units, str):  # one unit for every space axis
        units = {a: units for a in axes if AXIS_TYPES[a] == "space"}
    values = _per_axis("units", units, axes, lambda a: None)
    out: list[str | None] = []
    for a, unit in zip(axes, values):
        if unit is None:
            out.append(None)
            continue
        if not isinstance(unit, str):
            raise SpecError(f"units: expected a unit name for axis {a!r}, got {unit!r}")
        unit = _UNIT_ALIASES.get(unit, unit)
        allowed = {"space": _SPACE_UNITS, "time": _TIME_UNITS}.get(AXIS_TYPES[a], frozenset())
        if unit not in allowed:
            kind = AXIS_TYPES[a]
            raise SpecError(
                f"units: {unit!r} is not a valid {kind} unit for axis {a!r}"
                + ("" if allowed else f" ({kind} axes take no unit)")
            )
        out.append(unit)
    return tuple(out)


def parse_channel_names(
    names: Any, axes: str, shape: tuple[int, ...], image: str
) -> tuple[str, ...]:
    n = shape[axes.index("c")] if "c" in axes else 1
    if names is None:
        base = image.rsplit("/", 1)[-1] or "image"
        return (base,) if n == 1 else tuple(f"{base}_c{i}" for i in range(n))
    parsed = tuple(str(v) for v in names)
    if len(parsed) != n:
        raise SpecError(f"channel_names: expected {n} names, got {len(parsed)}")
    return parsed


def parse_channel_colors(colors: Any, axes: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    n = shape[axes.index("c")] if "c" in axes else 1
    if colors is None:
        return DEFAULT_COLORS[:1] if n == 1 else tuple(
            DEFAULT_COLORS[1 + i % (len(DEFAULT_COLORS) - 1)] for i in range(n)
        )
    out = tuple(str(c).lstrip("#").upper() for c in colors)
    if len(out) != n:
        raise SpecError(f"channel_colors: expected {n} colors, got {len(out)}")
    bad = [c for c in out if not re.fullmatch(r"[0-9A-F]{6}", c)]
    if bad:
        raise SpecError(f"channel_colors: {bad} are not 6-digit hex colors like 'FF00FF'")
    return out


def parse_label(colors: Mapping[int, Any] | None = None,
                properties: Mapping[int, Mapping[str, Any]] | None = None,
                source: str | None = "../../") -> Label:
    """Check what a label image says about its values; return its :class:`Label`.

    Parameters
    ----------
    colors
        Label value -> color: ``"FF0000"``, ``"FF000080"`` (with alpha) or 3-4 ints 0-255.
    properties
        Label value -> a JSON mapping of what to show for it (``{"class": "nucleus"}``).
    source
        Relative path from the label image to the image it segments, or None.
    """
    def value(v: Any, what: str) -> int:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise SpecError(f"label {what}: keys are integer label values, got {v!r}")
        return int(v)

    def rgba(c: Any, v: int) -> tuple[int, int, int, int]:
        if isinstance(c, str):
            text = c.lstrip("#")
            if not re.fullmatch(r"[0-9A-Fa-f]{6}([0-9A-Fa-f]{2})?", text):
                raise SpecError(f"label colors: {c!r} (label {v}) is not a hex color like 'FF0000'")
            text += "FF" if len(text) == 6 else ""
            r, g, b, a = (int(text[i:i + 2], 16) for i in range(0, 8, 2))
            return r, g, b, a
        try:
            parts = [int(x) for x in c]
        except (TypeError, ValueError) as exc:
            raise SpecError(f"label colors: {c!r} (label {v}) is not a color") from exc
        if len(parts) not in (3, 4) or not all(0 <= x <= 255 for x in parts):
            raise SpecError(f"label colors: {c!r} (label {v}) needs 3 or 4 values in 0-255")
        r, g, b, *alpha = parts
        return r, g, b, alpha[0] if alpha else 255

    if colors is not None and not isinstance(colors, Mapping):
        raise SpecError(f"label colors: expected a mapping label value -> color, got {colors!r}")
    if properties is not None and not isinstance(properties, Mapping):
        raise SpecError(f"label properties: expected a mapping label value -> dict, got {properties!r}")
    color_t = tuple(sorted((value(v, "colors"), rgba(c, int(v))) for v, c in (colors or {}).items()))
    props = []
    for v, p in (properties or {}).items():
        if not isinstance(p, Mapping) or "label-value" in p:
            raise SpecError(f"label properties: label {v} needs a mapping of names to values "
                            "(without 'label-value')")
        try:
            json.dumps(dict(p))
        except (TypeError, ValueError) as exc:
            raise SpecError(f"label properties: label {v} holds values JSON cannot store") from exc
        props.append((value(v, "properties"), dict(p)))
    if color_t and props and {v for v, _ in color_t} != {v for v, _ in props}:
        # NGFF asks colors and properties to name the same label values.
        raise SpecError("label colors and properties must name the same label values")
    if source is not None and not isinstance(source, str):
        raise SpecError(f"label source must be a relative path or None, got {source!r}")
    return Label(color_t, tuple(sorted(props, key=lambda vp: vp[0])), source)
