"""Tile specs with CAREamics' geometry (shared/reference/careamics.md), for tests.

Per space axis, with ``step = patch - overlap``: the first tile starts at 0 and keeps
``[0, patch - right)``; middle tiles keep ``[left, patch - right)``; the last tile starts
at ``max(0, n - patch)`` and keeps from where the previous valid part ended. CAREamics
uses ``left = right = overlap // 2``, which tiles the axis exactly for even overlaps; for
odd overlaps we take ``right = overlap - left`` so valid parts still meet exactly.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class AxisTile:
    start: int  # where the tile starts in the image
    size: int  # tile extent
    crop_start: int  # valid part, relative to the tile
    crop_size: int

    @property
    def stitch_start(self) -> int:
        return self.start + self.crop_start


def axis_tiles(n: int, patch: int, overlap: int) -> list[AxisTile]:
    if n <= patch:
        return [AxisTile(0, n, 0, n)]
    left, right = overlap // 2, overlap - overlap // 2
    step = patch - overlap
    starts = [*range(0, n - patch, step), n - patch]
    tiles, previous_end = [], 0
    for k, t0 in enumerate(starts):
        lo = 0 if k == 0 else (previous_end - t0 if k == len(starts) - 1 else left)
        hi = patch if k == len(starts) - 1 else patch - right
        tiles.append(AxisTile(t0, patch, lo, hi - lo))
        previous_end = t0 + hi
    return tiles


@dataclass(frozen=True)
class TileSpec:
    tile_start: tuple[int, ...]
    tile_size: tuple[int, ...]
    crop_coords: tuple[int, ...]
    crop_size: tuple[int, ...]
    stitch_coords: tuple[int, ...]


def tile_specs(shape: Sequence[int], patch: Sequence[int], overlap: Sequence[int]) -> Iterator[TileSpec]:
    """Every tile of a (Z)YX image, row-major."""
    per_axis = [axis_tiles(n, p, o) for n, p, o in zip(shape, patch, overlap, strict=True)]
    for combo in itertools.product(*per_axis):
        yield TileSpec(
            tuple(t.start for t in combo), tuple(t.size for t in combo),
            tuple(t.crop_start for t in combo), tuple(t.crop_size for t in combo),
            tuple(t.stitch_start for t in combo),
        )
