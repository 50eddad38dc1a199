"""Resolution levels: their geometry, and the downsampling that makes each from the one above.

Level 0 is what writers write. Level ``k + 1`` is level ``k`` reduced by integer factors
along chosen space axes: ``"mean"`` averages each block of ``f`` pixels per axis,
``"nearest"`` keeps its first pixel, ``"mode"`` its most frequent value (labels),
``"max"`` its largest (masks). Sizes round up, so a last, shorter block is reduced over
the pixels it has (no padding that would darken image edges).

Every level keeps level 0's chunk (and shard) shape, clipped to its size. Then, when a
write unit is a multiple of the factor along each reduced axis (or spans the axis),
every unit of level ``k`` reduces to a block of level ``k + 1`` that no other unit
touches. That one property serves both ways of building a pyramid:

- while streaming, a unit stored at level ``k`` is reduced at once, from memory, and
  handed to level ``k + 1`` as a region, assembled into whole units exactly like the
  valid parts of tiles (:mod:`ngff_writer._write.assemble`): no chunk is read back;
- later, any single unit of level ``k + 1`` can be rebuilt from the stored level ``k``
  (after a crash lost the parts held in memory).

Both run :func:`downsample` on the same pixels in the same order, so they store
identical bytes, whichever way and by whichever process a unit was made.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "METHODS", "aligned", "auto_levels", "downsample", "level_blocks", "level_shape", "source_region",
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
    """How many levels ``"auto"`` builds, level 0 included.

    Levels are added until every reduced axis fits in one chunk (a viewer's most
    zoomed-out view is then one chunk per plane), stopping early where the units of a
    level are not aligned to the factors (see :func:`aligned`).
    """
    levels, shape = 1, tuple(shape)
    while levels <= max_levels:
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


METHODS = ("mean", "nearest", "mode", "max")


def _take(x: np.ndarray, axis: int, start: int, stop: int, step: int) -> np.ndarray:
    return x[(slice(None),) * axis + (slice(start, stop, step),)]


def _mean_axis(x: np.ndarray, axis: int, f: int) -> np.ndarray:
    # float32 data is averaged in float32 (2-8 values: no precision to gain, half the
    # memory traffic). Sums of strided views: vectorised adds, several times faster than a
    # reshape-mean on 2-pixel groups. The shorter block at the end of an axis, if any, is
    # averaged over the pixels it has.
    n = x.shape[axis]
    full = n // f
    acc = x.dtype if x.dtype.itemsize >= 4 else np.dtype(np.float32)
    out: np.ndarray = np.add(_take(x, axis, 0, full * f, f), _take(x, axis, 1, full * f, f), dtype=acc)
    for k in range(2, f):
        out += _take(x, axis, k, full * f, f)
    out *= acc.type(1.0 / f)
    if full * f < n:
        tail = _take(x, axis, full * f, n, 1).mean(axis=axis, keepdims=True, dtype=acc)
        out = np.concatenate([out, tail.astype(acc, copy=False)], axis=axis)
    return out


def _sum_axis(x: np.ndarray, axis: int, f: int) -> np.ndarray:
    """Sums of each block of ``f`` along ``axis`` (the last block may be shorter), in x's dtype."""
    n = x.shape[axis]
    full = n // f
    out = _take(x, axis, 0, full * f, f).copy()
    for k in range(1, f):
        out += _take(x, axis, k, full * f, f)
    if full * f < n:
        tail = _take(x, axis, full * f, n, 1).sum(axis=axis, keepdims=True, dtype=x.dtype)
        out = np.concatenate([out, tail], axis=axis)
    return out


def _counts(shape: Sequence[int], factors: Sequence[int]) -> np.ndarray:
    """Pixels in each block, broadcastable to the reduced shape (short blocks at the ends)."""
    count = np.ones((1,) * len(shape), dtype=np.int64)
    for axis, (n, f) in enumerate(zip(shape, factors, strict=True)):
        per = np.full(-(-n // f), f, dtype=np.int64)
        per[-1] = n - (len(per) - 1) * f
        count = count * per.reshape((-1,) + (1,) * (len(shape) - axis - 1))
    return count


def _integer_mean(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    # Exact: block sums in integers, then one division rounded half to even, so no float
    # rounding can tip a mean and 64-bit values above 2**53 keep every digit. Sums are
    # int64 where they cannot overflow, Python integers (object arrays, slow) only where
    # they could: 64-bit data with values near the type's limits.
    n = int(np.prod(factors))
    small = block.dtype.itemsize < 8 or (
        block.size == 0
        or (int(block.max()) * n < 2**62 and int(block.min()) * n > -(2**62)))
    acc: np.ndarray = block.astype(np.int64 if small else object)
    for axis, f in enumerate(factors):
        if f > 1:
            acc = _sum_axis(acc, axis, f)
    count = _counts(block.shape, factors)
    q, r = acc // count, acc % count  # (np.divmod takes no object arrays)
    up = (2 * r > count) | ((2 * r == count) & (q % 2 == 1))
    mean: np.ndarray = (q + up).astype(block.dtype)
    return mean


def _blocks(block: np.ndarray, factors: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every pixel of each block as a stack (first pixel first), and which entries exist."""
    out_shape = level_shape(block.shape, factors)
    offsets = list(np.ndindex(*factors))
    values = np.zeros((len(offsets), *out_shape), dtype=block.dtype)
    present = np.zeros((len(offsets), *out_shape), dtype=bool)
    for k, offset in enumerate(offsets):
        v = block[tuple(slice(o, None, f) for o, f in zip(offset, factors, strict=True))]
        where: tuple[int | slice, ...] = (k, *(slice(0, m) for m in v.shape))
        values[where] = v
        present[where] = True
    return values, present


def _mode(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    # The most frequent value of each block, ties going to the one met first (so a block of
    # all-different values keeps its first pixel, as "nearest" does). Pairwise comparison of
    # the block's pixels: n**2 compares for n pixels a block, a few for 2x2 or 2x2x2 blocks,
    # with no sort and no dependence on how many distinct labels there are.
    values, present = _blocks(block, factors)
    votes = np.zeros(values.shape, dtype=np.int32)
    for j in range(len(values)):
        votes += (values == values[j]) & present[j]
    votes[~present] = -1
    best = np.argmax(votes, axis=0)
    return np.ascontiguousarray(np.take_along_axis(values, best[None], axis=0)[0])


def _max(block: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    out = block
    for axis, f in enumerate(factors):
        if f > 1:
            n = out.shape[axis]
            full = n // f
            parts = [_take(out, axis, k, full * f, f) for k in range(f)]
            reduced = np.maximum.reduce(parts) if full else np.empty(
                (*out.shape[:axis], 0, *out.shape[axis + 1:]), out.dtype)
            if full * f < n:
                tail = _take(out, axis, full * f, n, 1).max(axis=axis, keepdims=True)
                reduced = np.concatenate([reduced, tail], axis=axis)
            out = reduced
    return np.array(out, copy=True) if out is block else np.ascontiguousarray(out)


def downsample(block: np.ndarray, factors: Sequence[int], method: str) -> np.ndarray:
    """Reduce ``block`` by ``factors`` (one per axis, 1 = kept), as the next level stores it.

    Parameters
    ----------
    block
        Data of one level; along reduced axes it starts on a multiple of the factor.
    factors
        Reduction per axis of ``block``.
    method
        ``"mean"``: the average of each block; integers exactly, rounded half to even
        (64-bit values too), booleans True where at least half the block is (so a line one
        pixel wide survives a 2x reduction). ``"nearest"``: the block's first pixel.
        ``"mode"``: its most frequent value, ties to the first met (labels).
        ``"max"``: its largest value (masks: any True pixel keeps the block True).

    Returns
    -------
    numpy.ndarray
        A new C-contiguous array of ``block``'s dtype, shaped ``level_shape(block.shape, factors)``.
    """
    if method == "nearest":
        picked = block[tuple(slice(None, None, f) for f in factors)]
        return np.ascontiguousarray(picked)
    if method == "mode":
        return _mode(block, factors)
    if method == "max":
        return _max(block, factors)
    if method != "mean":
        raise ValueError(f"unknown downsampling method {method!r}; use one of {METHODS}")
    if all(f == 1 for f in factors):
        return np.array(block, copy=True)
    if block.dtype.kind == "b":
        sums = block.astype(np.int64)
        for axis, f in enumerate(factors):
            if f > 1:
                sums = _sum_axis(sums, axis, f)
        return np.ascontiguousarray(2 * sums >= _counts(block.shape, factors))
    if block.dtype.kind in "iu":
        return np.ascontiguousarray(_integer_mean(block, factors))
    out = block
    for axis, f in enumerate(factors):
        if f > 1:
            out = _mean_axis(out, axis, f)
    return np.ascontiguousarray(out.astype(block.dtype, copy=False))
