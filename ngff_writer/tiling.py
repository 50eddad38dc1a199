"""Tile geometry as CAREamics lays it out, for callers that predict in tiles.

Along each space axis, tiles of size ``tile`` start every ``tile - overlap`` pixels and the
last one sits flush with the image end (one tile when the image is not larger). The
valid part of a tile starts ``left = overlap // 2`` pixels in (0 for the first tile) and
ends ``right = overlap - left`` pixels before its end (at the end for the last tile, whose
valid part starts where the previous one ended). For even overlaps this is CAREamics'
``crop_coords`` / ``crop_size`` / ``stitch_coords``; for odd ones the valid parts still meet
exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["Tile", "tile_starts", "tiles"]


@lru_cache(maxsize=256)
def tile_starts(n: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Start of every tile along an axis of length ``n``."""
    if n <= tile:
        return (0,)
    return (*range(0, n - tile, tile - overlap), n - tile)


@dataclass(frozen=True)
class Tile:
    """One tile: where it is, and where its valid part is (per space axis)."""

    start: tuple[int, ...]
    size: tuple[int, ...]
    crop_start: tuple[int, ...]
    crop_size: tuple[int, ...]

    @property
    def stitch_start(self) -> tuple[int, ...]:
        """Where the valid part lands in the image."""
        return tuple(a + c for a, c in zip(self.start, self.crop_start, strict=True))

    @property
    def region(self) -> tuple[slice, ...]:
        """The tile's region of the image (space axes)."""
        return tuple(slice(a, a + n) for a, n in zip(self.start, self.size, strict=True))


def _axis(n: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    starts = tile_starts(n, tile, overlap)
    if len(starts) == 1:
        return [(0, min(n, tile), 0, min(n, tile))]
    left, right = overlap // 2, overlap - overlap // 2
    out, previous_end = [], 0
    for k, t0 in enumerate(starts):
        last = k == len(starts) - 1
        lo = 0 if k == 0 else (previous_end - t0 if last else left)
        hi = tile if last else tile - right
        out.append((t0, tile, lo, hi - lo))
        previous_end = t0 + hi
    return out


def tiles(shape: Sequence[int], tile: Sequence[int], overlap: Sequence[int]) -> Iterator[Tile]:
    """Every tile of an image with space ``shape``, in row-major order."""
    per_axis = [_axis(n, t, o) for n, t, o in zip(shape, tile, overlap, strict=True)]
    for combo in itertools.product(*per_axis):
        yield Tile(*(tuple(v[i] for v in combo) for i in range(4)))
