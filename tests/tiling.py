"""CAREamics tile specs for tests, from the library's own geometry (ngff_writer.tiling)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from ngff_writer.tiling import tiles


@dataclass(frozen=True)
class TileSpec:
    tile_start: tuple[int, ...]
    tile_size: tuple[int, ...]
    crop_coords: tuple[int, ...]
    crop_size: tuple[int, ...]
    stitch_coords: tuple[int, ...]


def tile_specs(shape: Sequence[int], patch: Sequence[int], overlap: Sequence[int]) -> Iterator[TileSpec]:
    """Every tile of a (Z)YX image, row-major, with CAREamics' field names."""
    for t in tiles(shape, patch, overlap):
        yield TileSpec(t.start, t.size, t.crop_start, t.crop_size, t.stitch_start)
