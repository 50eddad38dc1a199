"""Block-grid arithmetic: the grid of write units, boxes of them, and runs of neighbours.

A *write unit* is the block zarr stores atomically (the shard when sharded, else the
chunk). Completion is tracked in boxes of write units, so a sample, a row of tiles and
a single chunk are recorded by one mechanism.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

__all__ = ["JOIN_BELOW", "Box", "box_slices", "grid_shape", "neighbour_runs"]

#: Blocks at least this large are never joined with their neighbours into one block:
#: joining copies them, and holds both copies for a moment, to save a store call or a
#: log record that costs little beside encoding them (tiles of 32x200x200 float32: peak
#: RSS over the baseline 186-221 -> 144 MB when the engine stopped joining them, and
#: later 147-149 -> 141-145 MB when the assembler stopped too; bench_tiles).
JOIN_BELOW = 1 << 20

#: A box of blocks: (start, stop) per axis, stop exclusive.
Box = tuple[tuple[int, ...], tuple[int, ...]]


def grid_shape(shape: Sequence[int], unit: Sequence[int]) -> tuple[int, ...]:
    """Number of blocks along each axis (the last block may be partial)."""
    return tuple(-(-n // u) for n, u in zip(shape, unit, strict=True))


def box_slices(box: Box) -> tuple[slice, ...]:
    """The box as an index into a grid of blocks."""
    return tuple(slice(a, b) for a, b in zip(*box, strict=True))


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
