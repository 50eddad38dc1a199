"""Resolution levels: their geometry, and the downsampling that makes each from the one above.

Level 0 is what writers write. Level ``k + 1`` is level ``k`` reduced by integer factors
along chosen space axes: ``"mean"`` averages each block of ``f`` pixels per axis,
``"nearest"`` keeps its first pixel. Sizes round up, so a last, shorter block is
averaged over the pixels it has (no padding that would darken image edges).

Every level keeps level 0's chunk (and shard) shape, clipped to its size. Then, when a
write unit is a multiple of the factor along each reduced axis (or spans the axis),
every unit of level ``k`` reduces to a block of level ``k + 1`` that no other unit
touches. That one property serves both ways of building a pyramid:

- while streaming, a unit stored at level ``k`` is reduced at once, from memory, and
  handed to level ``k + 1`` as a region, assembled into whole units exactly like the
  valid parts of tiles (:mod:`ngff_writer.assemble`): no chunk is read back;
- later, any single unit of level ``k + 1`` can be rebuilt from the stored level ``k``
  (after a crash lost the parts held in memory).

Both run :func:`downsample` on the same pixels in the same order, so they store
identical bytes, whichever way and by whichever process a unit was made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "aligned", "auto_levels", "downsample", "level_blocks", "level_shape", "source_region",
    "target_region",
]

Region = tuple[slice, ...]


def level_shape(shape: Sequence[int], factors: Sequence[int]) -> tuple[int, ...]:
    """Shape of the next level: each axis divided by its factor, rounded up."""
    return tuple(-(-n // f) for n, f in zip(shape, factors, strict=True))


def level_blocks(blocks: Sequence[int], shape: Sequence[int], inner: Sequence[int] | None = None
                 ) -> tuple[int, ...]:
    """Chunks (or shards) of a level: level 0's, no larger than needed to hold the level.

    ``inner`` is the level's chunk shape when ``blocks`` are shards: a clipped shard is
    rounded up to whole chunks, so it stays a multiple of them.
    """
    if inner is None:
        return tuple(min(b, n) for b, n in zip(blocks, shape, strict=True))
    return tuple(min(b, -(-n // c) * c) for b, n, c in zip(blocks, shape, inner, strict=True))


def aligned(unit: Sequence[int], shape: Sequence[int], factors: Sequence[int]) -> bool:
    """True when every write unit reduces to a block of the next level no other unit touches."""
    return all(f == 1 or u >= n or u % f == 0 for u, n, f in zip(unit, shape, factors, strict=True))


def auto_levels(shape: Sequence[int], unit: Sequence[int], chunks: Sequence[int],
                factors: Sequence[int], max_levels: int = 16) -> int:
    """How many levels ``"auto"`` builds below level 0.

    Levels are added until every reduced axis fits in one chunk (a viewer's most
    zoomed-out view is then one chunk per plane), stopping early where the units of a
    level are not aligned to the factors (see :func:`aligned`).
    """
    levels, shape = 0, tuple(shape)
    while levels < max_levels:
        if all(f == 1 or n <= c for n, c, f in zip(shape, chunks, factors, strict=True)):
            break
        level_unit = level_blocks(unit, shape)
        if not aligned(level_unit, shape, factors):
            break
        shape = level_shape(shape, factors)
        levels += 1
    return levels


def target_region(region: Region, factors: Sequence[int]) -> Region:
    """Where a block of one level lands in the next (its start must be a multiple of the factor)."""
    return tuple(slice(r.start // f, -(-r.stop // f)) for r, f in zip(region, factors, strict=True))


def source_region(region: Region, factors: Sequence[int], shape: Sequence[int]) -> Region:
    """The block of the level above that reduces to ``region`` of the next level."""
    return tuple(slice(r.start * f, min(r.stop * f, n))
                 for r, f, n in zip(region, factors, shape, strict=True))


def _accumulator(dtype: np.dtype) -> np.dtype:
    # float32 data is averaged in float32 (2-8 values: no precision to gain, half the
    # memory traffic); integers and bool in float64, then rounded, so nothing overflows.
    if dtype.kind == "f" and dtype.itemsize >= 4:
        return dtype
    return np.dtype(np.float32) if dtype.kind == "f" else np.dtype(np.float64)


def _mean_axis(x: np.ndarray, axis: int, f: int, acc: np.dtype) -> np.ndarray:
    # Sums of strided views: vectorised adds, several times faster than a reshape-mean
    # on 2-pixel groups. The shorter block at the end of an axis, if any, is averaged
    # over the pixels it has.
    n = x.shape[axis]
    full = n // f

    def take(start: int, stop: int, step: int) -> np.ndarray:
        return x[(slice(None),) * axis + (slice(start, stop, step),)]

    # The first add allocates the result in the accumulator type (no separate copy pass).
    out = np.add(take(0, full * f, f), take(1, full * f, f), dtype=acc)
    for k in range(2, f):
        out += take(k, full * f, f)
    out *= acc.type(1.0 / f)
    if full * f < n:
        tail = take(full * f, n, 1).mean(axis=axis, keepdims=True, dtype=acc)
        out = np.concatenate([out, tail.astype(acc, copy=False)], axis=axis)
    return out


def downsample(block: np.ndarray, factors: Sequence[int], method: str) -> np.ndarray:
    """Reduce ``block`` by ``factors`` (one per axis, 1 = kept), as the next level stores it.

    Parameters
    ----------
    block
        Data of one level; along reduced axes it starts on a multiple of the factor.
    factors
        Reduction per axis of ``block``.
    method
        ``"mean"`` (integers are rounded to nearest) or ``"nearest"`` (first pixel of each block).

    Returns
    -------
    numpy.ndarray
        A new C-contiguous array of ``block``'s dtype, shaped ``level_shape(block.shape, factors)``.
    """
    if method == "nearest":
        picked = block[tuple(slice(None, None, f) for f in factors)]
        return np.ascontiguousarray(picked)
    acc = _accumulator(block.dtype)
    out = block
    for axis, f in enumerate(factors):
        if f > 1:
            out = _mean_axis(out, axis, f, acc)
    if out is block:
        return np.array(block, copy=True)
    if block.dtype.kind in "iub":
        np.rint(out, out=out)
        if block.dtype.kind != "b":
            info = np.iinfo(block.dtype)
            np.clip(out, info.min, info.max, out=out)
    return np.ascontiguousarray(out.astype(block.dtype, copy=False))
