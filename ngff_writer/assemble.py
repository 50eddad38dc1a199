"""Assembly of tile pieces into whole write units, so no chunk is ever read back.

A region written by a tile splits into an *inner* part made of whole write units (stored
at once, one zarr call) and *edge* pieces that cover units only partly. Edge pieces are
copied into a buffer per unit; when every element of a unit is covered, the unit is
stored once, whole. zarr then never reads a chunk to merge into it, which is both the
4x speed-up over read-modify-write and what keeps two writers from erasing each other.

This module is pure memory bookkeeping: it says what to store, the caller stores it.

Memory bound: the buffer holds only partly covered units. For tiles arriving in row-major
order that is about one row of units across the image (times the tiles' depth in 3D);
``max_bytes`` caps it. A piece that would exceed the cap raises :class:`BufferFullError`
before anything changes, so the caller can flush or reorder; nothing is lost silently.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import numpy as np

from .errors import WriteError
from .grid import Box

__all__ = ["Assembler", "BufferFullError", "OverlapError", "Piece"]

Region = tuple[slice, ...]
_EARLIER = -3


class OverlapError(WriteError):
    """Two different tiles' valid parts overlap (crop mode stores each pixel once)."""


class BufferFullError(WriteError, MemoryError):
    """Buffering a tile piece would exceed the assembly buffer's ``max_bytes``."""


@dataclasses.dataclass(frozen=True)
class Piece:
    """A block ready to store: whole write units, never a part of one."""

    region: Region
    data: np.ndarray
    box: Box


@dataclasses.dataclass
class _Partial:
    data: np.ndarray
    covered: np.ndarray  # bool, same shape
    remaining: int


def _unit_region(index: Sequence[int], unit: Sequence[int], shape: Sequence[int]) -> Region:
    return tuple(slice(i * u, min((i + 1) * u, n)) for i, u, n in zip(index, unit, shape, strict=True))


class Assembler:
    """Buffers of partly covered write units for one image.

    Parameters
    ----------
    shape
        Stored array shape.
    unit
        Write-unit shape (shard when sharded, else chunk).
    dtype, fill_value
        Of the array (a buffer starts as fill).
    max_bytes
        Cap on buffered bytes.
    """

    def __init__(self, shape: Sequence[int], unit: Sequence[int], dtype: np.dtype,
                 fill_value: float | int | bool, max_bytes: int) -> None:
        self.shape = tuple(shape)
        self.unit = tuple(unit)
        self.dtype = dtype
        self.fill_value = fill_value
        self.max_bytes = max_bytes
        self._partials: dict[tuple[int, ...], _Partial] = {}
        # Per unit, who stored it: the id of the region whose inner part it was, -2 when
        # assembled from pieces, -3 when found stored already (ledger: an earlier run or
        # another process), -1 not yet. Detects overlaps in memory, without I/O.
        self._stored = np.full([-(-n // u) for n, u in zip(shape, unit, strict=True)], -1, np.int64)
        self._regions: dict[tuple[tuple[int, int], ...], int] = {}

    @property
    def buffered_bytes(self) -> int:
        """Bytes held in partly covered units."""
        return sum(p.data.nbytes + p.covered.nbytes for p in self._partials.values())

    @property
    def pending_units(self) -> list[tuple[int, ...]]:
        """Grid indices of units that are partly covered (their data is only in memory)."""
        return sorted(self._partials)

    def mark_stored(self, covered: np.ndarray) -> None:
        """Take units already stored (from the ledger, e.g. after a restart) as final."""
        self._stored[covered & (self._stored == -1)] = _EARLIER

    def add(self, region: Region, block: np.ndarray) -> list[Piece]:
        """Take a block for ``region`` (stored order); return what is ready to store.

        Raises
        ------
        OverlapError
            The region overlaps a different region already taken.
        BufferFullError
            Buffering its edge pieces would exceed ``max_bytes``.
        """
        key = tuple((s.start, s.stop) for s in region)
        retry = key in self._regions
        region_id = self._regions.get(key, len(self._regions))

        # Whole units inside the region; the array's end counts as a unit edge.
        inner_box = (
            tuple(-(-r.start // u) for r, u in zip(region, self.unit, strict=True)),
            tuple(-(-n // u) if r.stop == n else r.stop // u
                  for r, u, n in zip(region, self.unit, self.shape, strict=True)),
        )
        has_inner = all(a < b for a, b in zip(*inner_box, strict=True))

        outer = [range(s.start // u, -(-s.stop // u)) for s, u in zip(region, self.unit, strict=True)]
        edges = [
            idx for idx in itertools.product(*outer)
            if not (has_inner and all(a <= i < b for i, a, b in zip(idx, *inner_box, strict=True)))
        ]

        # ---- check everything before changing anything --------------------------------
        if has_inner:
            view = self._stored[tuple(slice(a, b) for a, b in zip(*inner_box, strict=True))]
            # Units stored by an earlier run are rewritten whole (a resumed region): no clash.
            clash = (view != -1) & (view != region_id) & (view != _EARLIER)
            if clash.any() and not retry:
                raise OverlapError(f"region {key} overlaps units stored by another tile")
        new_bytes = 0
        plans = []
        for idx in edges:
            if self._stored[idx] != -1:
                if retry or self._stored[idx] == _EARLIER:
                    continue  # a retry, or a unit stored by an earlier run: already final
                raise OverlapError(f"region {key} overlaps unit {idx}, stored already")
            unit_region = _unit_region(idx, self.unit, self.shape)
            local = tuple(slice(max(s.start, u.start) - u.start, min(s.stop, u.stop) - u.start)
                          for s, u in zip(region, unit_region, strict=True))
            source = tuple(slice(u.start + loc.start - s.start, u.start + loc.stop - s.start)
                           for s, u, loc in zip(region, unit_region, local, strict=True))
            partial = self._partials.get(idx)
            if partial is None:
                shape = tuple(u.stop - u.start for u in unit_region)
                new_bytes += math.prod(shape) * (self.dtype.itemsize + 1)
            elif partial.covered[local].any() and not retry:
                raise OverlapError(f"region {key} overlaps another tile inside unit {idx}")
            plans.append((idx, unit_region, local, source))
        if new_bytes and self.buffered_bytes + new_bytes > self.max_bytes:
            raise BufferFullError(
                f"buffering region {key} needs {new_bytes} more bytes; the assembly buffer holds "
                f"{self.buffered_bytes} of max {self.max_bytes} (raise max_buffer_bytes, or send "
                "tiles in row-major order so units complete sooner)"
            )

        # ---- apply -------------------------------------------------------------------
        self._regions[key] = region_id
        ready: list[Piece] = []
        if has_inner:
            inner_region = tuple(
                slice(a * u, min(b * u, n))
                for a, b, u, n in zip(*inner_box, self.unit, self.shape, strict=True))
            local = tuple(slice(r.start - s.start, r.stop - s.start)
                          for r, s in zip(inner_region, region, strict=True))
            self._stored[tuple(slice(a, b) for a, b in zip(*inner_box, strict=True))] = region_id
            ready.append(Piece(inner_region, block[local], inner_box))
        for idx, unit_region, local, source in plans:
            partial = self._partials.get(idx)
            if partial is None:
                shape = tuple(u.stop - u.start for u in unit_region)
                partial = _Partial(np.full(shape, self.fill_value, self.dtype),
                                   np.zeros(shape, bool), math.prod(shape))
                self._partials[idx] = partial
            newly = ~partial.covered[local]
            partial.data[local] = block[source]
            partial.remaining -= int(newly.sum())
            partial.covered[local] = True
            if partial.remaining == 0:
                del self._partials[idx]
                self._stored[idx] = -2
                box = (idx, tuple(i + 1 for i in idx))
                ready.append(Piece(unit_region, partial.data, box))
        return ready
