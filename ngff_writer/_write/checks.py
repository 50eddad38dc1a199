"""Checks and shapes a sample so it can be stored straight into its slot.

Every check runs before anything is stored: a refused write changes nothing.

Dtype rule: data is converted to the image dtype when numpy's ``np.can_cast`` allows it
under the image's ``cast`` setting. The default, ``"safe"``, accepts only conversions
that keep every value (``uint8 → float32``, ``float32 → float64``) and raises
:class:`~ngff_writer.errors.LossyCastError` for the rest (``float64 → float32``,
``float → int``). ``cast="same_kind"`` also allows narrowing within a kind
(``float64 → float32``); ``cast="unsafe"`` allows anything, as ``ndarray.astype`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._declare.spec import ImageSpec
from ..errors import LossyCastError, SampleIndexError, ShapeMismatchError, UnsupportedDtypeError
from ..tiling import tile_starts

__all__ = [
    "block_regions", "check_blend_tile", "check_index", "crop_tile", "prepare_block", "prepare_region",
    "slot", "stored_space", "tile_start_of", "unpad_tile",
]


def check_index(spec: ImageSpec, index: Any) -> int:
    """Return ``index`` as an int in ``[0, n_samples)`` or raise :class:`SampleIndexError`."""
    n = spec.layout.n_samples
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise SampleIndexError(f"image {spec.name!r}: sample index must be an int, got {index!r}")
    if not 0 <= index < n:
        raise SampleIndexError(
            f"image {spec.name!r}: sample index {index} is out of range [0, {n})"
        )
    return int(index)


def cast_to(spec: ImageSpec, data: np.ndarray) -> np.ndarray:
    """Convert ``data`` to the image dtype under the image's casting rule."""
    target = spec.np_dtype
    if data.dtype == target:
        return data
    if data.dtype.kind not in "buif":
        raise UnsupportedDtypeError(f"image {spec.name!r}: cannot store {data.dtype} data")
    if not np.can_cast(data.dtype, target, casting=spec.cast):
        raise LossyCastError(
            f"image {spec.name!r}: converting {data.dtype} to {target} may lose values "
            f"(cast={spec.cast!r}); convert it yourself or declare the image with "
            "cast='same_kind' or cast='unsafe'"
        )
    return data.astype(target, casting=spec.cast)


def _spatial(spec: ImageSpec) -> list[int]:
    """Positions of the space axes in a sample (declared order, no ``s``)."""
    return [i for i, a in enumerate(_sample_letters(spec)) if a in "zyx"]


def _sample_letters(spec: ImageSpec) -> str:
    """Axes of one sample, declared order (the sample axes left out)."""
    return "".join(a for a in spec.axes if a not in spec.sample_axes)


def _ints(spec: ImageSpec, what: str, values: Any, n: int) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ShapeMismatchError(f"image {spec.name!r}: {what} must be {n} ints, got {values!r}") from exc
    if len(out) != n:
        space = "".join(a for a in spec.axes if a in "zyx")
        raise ShapeMismatchError(
            f"image {spec.name!r}: {what} needs one value per space axis ({space!r}), got {out}"
        )
    return out


def crop_tile(spec: ImageSpec, tile: Any, crop_start: Any, crop_size: Any) -> np.ndarray:
    """Return the valid part of ``tile``: ``crop_size`` pixels from ``crop_start`` per space axis."""
    array = np.asarray(tile)
    spatial = _spatial(spec)
    start = _ints(spec, "crop_start", crop_start, len(spatial))
    size = _ints(spec, "crop_size", crop_size, len(spatial))
    if array.ndim != len(spec.layout.sample_shape):
        raise ShapeMismatchError(
            f"image {spec.name!r}: a tile needs {len(spec.layout.sample_shape)} dimensions "
            f"(axes {_sample_letters(spec)!r}), got shape {array.shape}"
        )
    index: list[slice] = [slice(None)] * array.ndim
    for axis, a, n in zip(spatial, start, size, strict=True):
        if a < 0 or n < 1 or a + n > array.shape[axis]:
            raise ShapeMismatchError(
                f"image {spec.name!r}: crop {start}+{size} does not fit in a tile of shape {array.shape}"
            )
        index[axis] = slice(a, a + n)
    return array[tuple(index)]


def prepare_region(
    spec: ImageSpec, index: Any, data: Any, start: Any = None
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Validate a sample (``start`` None) or a region of one; return ``(region, block)``.

    ``start`` gives, per space axis in declared order, where ``data`` lands in the image.
    The block is in stored order with the sample axis kept, shaped like ``region`` of the
    stored array.
    """
    layout = spec.layout
    index = check_index(spec, index)
    array = np.asarray(data)
    spatial = _spatial(spec)
    if start is None:
        expected = layout.sample_shape
        start_t = (0,) * len(spatial)
    else:
        start_t = _ints(spec, "start", start, len(spatial))
        region_shape = list(layout.sample_shape)
        if array.ndim == len(region_shape):
            for axis in spatial:
                region_shape[axis] = array.shape[axis]
        expected = tuple(region_shape)
    if array.shape != expected:
        declared = _sample_letters(spec)
        stored = "".join(a for a in layout.axes if a not in layout.sample_axes)
        order = "" if declared == stored else f"; stored as {stored!r}, NGFF's order"
        raise ShapeMismatchError(
            f"image {spec.name!r}: {'a sample' if start is None else 'a region'} must have shape "
            f"{expected} (axes {declared!r}, the declared order{order}), got {array.shape}"
        )
    for axis, a in zip(spatial, start_t, strict=True):
        if array.shape[axis] < 1 or a < 0 or a + array.shape[axis] > layout.sample_shape[axis]:
            raise ShapeMismatchError(
                f"image {spec.name!r}: a region of shape {array.shape} at {start_t} does not fit in "
                f"a sample of shape {layout.sample_shape}"
            )
    array = cast_to(spec, array)
    block = array.transpose(layout.sample_perm)
    for pos, name in enumerate(layout.axes):  # the sample's own position along its sample axes
        if name in layout.sample_axes:
            block = np.expand_dims(block, pos)
    sizes = tuple(array.shape[axis] for axis in spatial)
    return slot(spec, index, start_t, sizes), block


def slot(spec: ImageSpec, index: int, start: Sequence[int], size: Sequence[int]) -> tuple[slice, ...]:
    """The stored-array region of ``size`` at ``start`` (space axes, declared order) in sample ``index``."""
    region = list(spec.layout.sample_region(index))
    space = [a for a in _sample_letters(spec) if a in "zyx"]
    extents = {a: (a0, a0 + n) for a, a0, n in zip(space, start, size, strict=True)}
    for pos, axis_name in enumerate(spec.layout.axes):
        if axis_name in extents:
            region[pos] = slice(*extents[axis_name])
    return tuple(region)


def block_regions(spec: ImageSpec, start: Sequence[int], shape: Sequence[int]) -> list[tuple[slice, ...]]:
    """The stored-array regions a block of the image covers (declared axes, ``s`` included).

    One region, except when ``s`` is merged into ``t`` and the block does not span whole
    samples along ``t``: then one region per sample (each a contiguous run of the merged ``t``).
    """
    layout = spec.layout
    extents = dict(zip(spec.axes, zip(start, shape, strict=True), strict=True))

    def region(t_slice: slice | None) -> tuple[slice, ...]:
        out = []
        for axis in layout.axes:
            if axis == "t" and t_slice is not None:
                out.append(t_slice)
            else:
                a, n = extents[axis]
                out.append(slice(a, a + n))
        return tuple(out)

    if not layout.merged:
        return [region(None)]
    n_t = spec.shape[spec.axes.index("t")]
    (s0, ns), (t0, nt) = extents["s"], extents["t"]
    if t0 == 0 and nt == n_t:  # whole samples: one run of the merged t
        return [region(slice(s0 * n_t, (s0 + ns) * n_t))]
    return [region(slice(s * n_t + t0, s * n_t + t0 + nt)) for s in range(s0, s0 + ns)]


def prepare_block(spec: ImageSpec, data: Any, start: Any) -> list[tuple[tuple[slice, ...], np.ndarray]]:
    """Validate a block of the image at ``start`` (every declared axis); return ``(region, block)``
    pairs in stored order, ready to store (see :func:`block_regions`)."""
    array = np.asarray(data)
    if array.ndim != len(spec.axes):
        raise ShapeMismatchError(
            f"image {spec.name!r}: a block needs {len(spec.axes)} dimensions (axes {spec.axes!r}), "
            f"got shape {array.shape}"
        )
    try:
        start_t = tuple(int(v) for v in start)
    except (TypeError, ValueError) as exc:
        raise ShapeMismatchError(f"image {spec.name!r}: start must be {len(spec.axes)} ints, "
                                 f"got {start!r}") from exc
    fits = len(start_t) == len(spec.axes) and all(
        a >= 0 and n >= 1 and a + n <= size
        for a, n, size in zip(start_t, array.shape, spec.shape, strict=True))
    if not fits:
        raise ShapeMismatchError(
            f"image {spec.name!r}: a block of shape {array.shape} at {start_t} does not fit in the "
            f"image of shape {spec.shape} (axes {spec.axes!r})"
        )
    array = cast_to(spec, array)
    layout = spec.layout
    if layout.merged:  # t c z y x with t = s * T + t: s and t next to each other, s first
        order = [spec.axes.index("s"), *(spec.axes.index(a) for a in layout.axes)]
    else:
        order = [spec.axes.index(a) for a in layout.axes]
    stored = array.transpose(order)
    regions = block_regions(spec, start_t, array.shape)
    if not layout.merged:
        return [(regions[0], stored)]
    if len(regions) == 1:  # whole samples: fold s into t
        return [(regions[0], stored.reshape(-1, *stored.shape[2:]))]
    return [(r, stored[k]) for k, r in enumerate(regions)]


def stored_space(spec: ImageSpec, values: Any) -> tuple[int, ...]:
    """Reorder per-space-axis values from declared to stored order."""
    declared = [a for a in spec.axes if a in "zyx"]
    by_axis = dict(zip(declared, values, strict=True))
    return tuple(by_axis[a] for a in spec.layout.axes if a in "zyx")


def tile_start_of(spec: ImageSpec, tile_start: Any, crop_start: Any, stitch_start: Any) -> tuple[int, ...]:
    """A blend tile's start (declared order): given, or ``stitch_start - crop_start``."""
    n = sum(a in "zyx" for a in spec.axes)
    if tile_start is not None:
        return _ints(spec, "tile_start", tile_start, n)
    if crop_start is None or stitch_start is None:
        raise ShapeMismatchError(f"image {spec.name!r}: pass tile_start, or crop_start and stitch_start")
    crop = _ints(spec, "crop_start", crop_start, n)
    stitch = _ints(spec, "stitch_start", stitch_start, n)
    return tuple(s - c for s, c in zip(stitch, crop, strict=True))


def unpad_tile(spec: ImageSpec, tile: Any, start: Sequence[int]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Cut off the padding of a tile wider than the image along a space axis.

    CAREamics zero-pads the tiles of an image smaller than the tile (data 16 x 32 x 32 for
    a Z = 12 image): along an axis where the tile covers the whole image, only the image's
    extent is kept, so the tile is the blend grid's single tile there. Other axes are left
    for the usual checks.
    """
    array = np.asarray(tile)
    sizes = dict(zip(spec.axes, spec.shape, strict=True))
    letters = _sample_letters(spec)
    if array.ndim != len(letters):
        return array, tuple(start)  # the shape check that follows names the problem
    index: list[slice] = [slice(None)] * array.ndim
    new_start = list(start)
    for k, (axis, a) in enumerate(zip(_spatial(spec), start, strict=True)):
        n = sizes[letters[axis]]
        if a <= 0 and a + array.shape[axis] >= n and array.shape[axis] > n:
            index[axis] = slice(-a, -a + n)
            new_start[k] = 0
    return array[tuple(index)], tuple(new_start)


def check_blend_tile(spec: ImageSpec, region: tuple[slice, ...]) -> None:
    """Refuse a tile that is not one of the blend grid's tiles (its weight would be wrong)."""
    assert spec.blend is not None
    sizes = stored_space(spec, spec.blend.tile_size)
    overlaps = stored_space(spec, spec.blend.overlap)
    space = [i for i, a in enumerate(spec.layout.axes) if a in "zyx"]
    for ax, size, overlap in zip(space, sizes, overlaps, strict=True):
        n = spec.layout.shape[ax]
        r = region[ax]
        if r.start not in tile_starts(n, size, overlap) or r.stop - r.start != min(size, n):
            raise ShapeMismatchError(
                f"image {spec.name!r}: a tile at {r.start} of size {r.stop - r.start} along "
                f"{spec.layout.axes[ax]!r} is not a tile of the blend grid (size {size}, "
                f"overlap {overlap}, starts {tile_starts(n, size, overlap)})"
            )
