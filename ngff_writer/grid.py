"""Block-grid arithmetic: regions of an array ↔ boxes of its write units.

A *write unit* is the block zarr stores atomically (the shard when sharded, else the
chunk). Completion is tracked in boxes of write units, so a sample, a row of tiles and
a single chunk are recorded by one mechanism.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

__all__ = ["Box", "box_key", "box_of_region", "coverage", "grid_shape", "neighbour_runs", "parse_box_key"]

#: A box of blocks: (start, stop) per axis, stop exclusive.
Box = tuple[tuple[int, ...], tuple[int, ...]]


def grid_shape(shape: Sequence[int], unit: Sequence[int]) -> tuple[int, ...]:
    """Number of blocks along each axis (the last block may be partial)."""
    return tuple(-(-n // u) for n, u in zip(shape, unit, strict=True))


def box_of_region(region: Sequence[slice], shape: Sequence[int], unit: Sequence[int]) -> Box:
    """Return the box of blocks a block-aligned region covers.

    Raises ValueError when the region does not start and end on block edges (the end of
    the array counts as an edge).
    """
    start, stop = [], []
    for sl, n, u in zip(region, shape, unit, strict=True):
        if sl.start % u or (sl.stop % u and sl.stop != n):
            raise ValueError(f"region {region} is not aligned to blocks of {tuple(unit)}")
        start.append(sl.start // u)
        stop.append(-(-sl.stop // u))
    return tuple(start), tuple(stop)


def box_key(box: Box) -> str:
    """Encode a box as a store-safe name, e.g. ``"3.0.0.0-4.1.2.2"``."""
    start, stop = box
    return ".".join(map(str, start)) + "-" + ".".join(map(str, stop))


def parse_box_key(key: str) -> Box:
    """Inverse of :func:`box_key`."""
    a, b = key.split("-")
    return tuple(int(v) for v in a.split(".")), tuple(int(v) for v in b.split("."))


def coverage(boxes: Iterable[Box], grid: Sequence[int]) -> np.ndarray:
    """Boolean grid, True where some box covers the block."""
    covered = np.zeros(tuple(grid), dtype=bool)
    for start, stop in boxes:
        covered[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    return covered


def neighbour_runs[T](items: Iterable[T], box_of: Callable[[T], Box]) -> list[tuple[list[T], int | None]]:
    """Group items into runs of boxes that follow each other along one axis.

    Boxes are sorted by their start; each run holds boxes equal on every axis but one,
    along which each starts where the previous one stops. Returns ``(run, axis)`` pairs,
    ``axis`` None for a box on its own. Linear after the sort.
    """
    ordered = sorted(items, key=lambda item: box_of(item)[0])
    runs: list[tuple[list[T], int | None]] = []
    for item in ordered:
        if runs:
            run, axis = runs[-1]
            (a0, a1), (b0, b1) = box_of(run[-1]), box_of(item)
            differ = [k for k in range(len(a0)) if (a0[k], a1[k]) != (b0[k], b1[k])]
            if len(differ) == 1 and a1[differ[0]] == b0[differ[0]] and axis in (None, differ[0]):
                run.append(item)
                runs[-1] = (run, differ[0])
                continue
        runs.append(([item], None))
    return runs
