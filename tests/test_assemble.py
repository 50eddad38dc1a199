"""Assembly bookkeeping in memory: merging ready pieces."""

from __future__ import annotations

import numpy as np

from ngff_writer.assemble import Piece, merge_pieces


def piece(box, unit=4):
    start, stop = box
    region = tuple(slice(a * unit, b * unit) for a, b in zip(start, stop, strict=True))
    data = np.full([r.stop - r.start for r in region], float(sum(start)))
    return Piece(region, data, box)


def test_neighbours_merge_into_one_box():
    parts = [piece(((0, 1), (1, 2))), piece(((1, 1), (2, 2))), piece(((0, 0), (1, 1)))]
    merged = merge_pieces(parts)
    boxes = sorted(p.box for p in merged)
    assert boxes == [((0, 0), (1, 1)), ((0, 1), (2, 2))]
    (column,) = [p for p in merged if p.box == ((0, 1), (2, 2))]
    assert column.region == (slice(0, 8), slice(4, 8))
    np.testing.assert_array_equal(column.data[:4], 1.0)
    np.testing.assert_array_equal(column.data[4:], 2.0)


def test_non_neighbours_stay_apart():
    parts = [piece(((0, 0), (1, 1))), piece(((1, 1), (2, 2))), piece(((0, 2), (1, 3)))]
    assert len(merge_pieces(parts)) == 3
