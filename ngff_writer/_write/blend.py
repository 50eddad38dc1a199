"""Blend-mode geometry: where tiles start, how many touch a block, and their weights.

Tile starts follow CAREamics along each space axis (:mod:`ngff_writer.tiling`).
A tile's weight is a product of 1-D ramps, one per space axis, rising across the overlap
on each side that has a neighbour and flat (1) on sides at the image border; weights
are never zero, so every pixel's weighted mean is defined.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..tiling import tile_starts

__all__ = ["count_tiles", "tile_weights"]


def count_tiles(lo: int, hi: int, n: int, tile: int, overlap: int) -> int:
    """Number of tiles along one axis that touch ``[lo, hi)``."""
    return sum(1 for t in tile_starts(n, tile, overlap) if t < hi and t + min(tile, n) > lo)


def _ramp(length: int, overlap: int, left: bool, right: bool, kind: str) -> np.ndarray:
    i = np.arange(length, dtype=np.float64)
    w = np.ones(length)
    if overlap > 0:
        if left:
            w = np.minimum(w, (i + 0.5) / overlap)
        if right:
            w = np.minimum(w, (length - i - 0.5) / overlap)
    w = np.clip(w, 0.0, 1.0)
    if kind == "cosine":
        w = np.sin(w * np.pi / 2) ** 2
    return np.maximum(w, 1e-6)


def tile_weights(start: Sequence[int], size: Sequence[int], shape: Sequence[int],
                 overlap: Sequence[int], kind: str) -> np.ndarray:
    """Weights of a tile at ``start`` of extent ``size`` in an image of ``shape`` (space axes)."""
    weights = np.ones((), dtype=np.float64)
    for a, length, n, o in zip(start, size, shape, overlap, strict=True):
        ramp = _ramp(length, o, left=a > 0, right=a + length < n, kind=kind)
        weights = np.multiply.outer(weights, ramp)
    return weights
