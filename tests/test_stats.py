"""Streamed statistics: summaries merge to the windows of the whole data."""

from __future__ import annotations

import numpy as np
import pytest

from ngff_writer.stats import Window, merge_windows, summarize


@pytest.mark.parametrize("parts", [1, 3, 17])
def test_merged_percentiles_match_numpy(parts, rng):
    data = np.concatenate([rng.normal(i, 1 + i / 4, size=(40_000,)) for i in range(parts)])
    data = data.astype(np.float32)
    chunks = np.array_split(data, parts)
    windows = merge_windows([summarize(c, None) for c in chunks], 1, (1.0, 99.0), data.dtype)
    (w,) = windows
    lo, hi = np.percentile(data, [1.0, 99.0])
    spread = hi - lo
    assert w.min == data.min() and w.max == data.max()
    assert abs(w.start - lo) < 0.01 * spread and abs(w.end - hi) < 0.01 * spread


def test_per_channel_and_order_independent(rng):
    block = rng.random((2, 3, 64, 64)).astype(np.float32)  # s c y x
    block[:, 1] *= 100
    summaries = [summarize(block[i : i + 1], channel_axis=1) for i in range(2)]
    a = merge_windows(summaries, 3, (0.5, 99.5), block.dtype)
    b = merge_windows(summaries[::-1], 3, (0.5, 99.5), block.dtype)
    assert a == b
    assert a[1].max > 50 > a[0].max


def test_constant_data_gets_a_nonempty_window():
    (w,) = merge_windows([summarize(np.full((8, 8), 3.0, np.float32), None)], 1, (1, 99),
                         np.dtype("float32"))
    assert w.min == w.start == 3.0 and w.end > w.start


def test_nonfinite_values_are_ignored():
    data = np.array([np.nan, np.inf, -np.inf, 1.0, 2.0, 3.0], dtype=np.float32)
    (s,) = summarize(data, None)
    assert (s["n"], s["nonfinite"], s["min"], s["max"]) == (3, 3, 1.0, 3.0)


def test_no_finite_value_falls_back_to_dtype_window():
    (w,) = merge_windows([summarize(np.full(4, np.nan, np.float32), None)], 1, (1, 99),
                         np.dtype("uint8"))
    assert w == Window(0.0, 255.0, 0.0, 255.0)
