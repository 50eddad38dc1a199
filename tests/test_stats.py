"""Streamed statistics: histograms add up exactly to the windows of the whole data."""

from __future__ import annotations

import numpy as np
import pytest

from ngff_writer._ngff.stats import Summary, Window, merge, merge_channels, summarize, windows


def _window(parts, percentiles=(1.0, 99.0), dtype=None):
    dtype = np.dtype("float32") if dtype is None else dtype
    (w,) = windows([merge(summarize(p, None)[0] for p in parts)], percentiles, dtype)
    return w


@pytest.mark.parametrize("parts", [1, 3, 17])
def test_merged_percentiles_match_numpy(parts, rng):
    data = np.concatenate([rng.normal(i, 1 + i / 4, size=(40_000,)) for i in range(parts)])
    data = data.astype(np.float32)
    w = _window(np.array_split(data, parts))
    lo, hi = np.percentile(data, [1.0, 99.0])
    spread = hi - lo
    assert w.min == data.min() and w.max == data.max()
    assert abs(w.start - lo) < 0.01 * spread and abs(w.end - hi) < 0.01 * spread


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "float16", "float32", "float64",
                                   "int32", "uint32", "int64"])
def test_every_dtype_family(dtype, rng):
    dt = np.dtype(dtype)
    if dt.kind == "f":
        data = rng.normal(3, 10, 50_000).astype(dt)
    else:
        info = np.iinfo(dt)
        data = rng.integers(max(info.min, -20_000), min(info.max, 20_000), 50_000).astype(dt)
    w = _window(np.array_split(data, 5), dtype=dt)
    lo, hi = np.percentile(data.astype(np.float64), [1.0, 99.0])
    exact = dt.itemsize <= 2  # one bin per value
    tolerance = 1.0 if exact and dt.kind != "f" else 0.01 * (hi - lo)
    assert abs(w.start - lo) <= tolerance and abs(w.end - hi) <= tolerance
    assert (w.min, w.max) == (float(data.min()), float(data.max()))


def test_sums_do_not_depend_on_batching(rng):
    """Merging per record, per batch of records or all at once gives identical summaries."""
    records = [summarize(rng.random((2, 32, 32), dtype=np.float32) * (i + 1), 0) for i in range(24)]
    flat = merge_channels(records, 2)
    batched = merge_channels([merge_channels(records[i:i + 5], 2) for i in range(0, 24, 5)], 2)
    shuffled = merge_channels([records[i] for i in rng.permutation(24)], 2)
    assert flat == batched == shuffled
    assert [Summary.from_json(s.to_json()) for s in flat] == flat  # what the log stores round-trips


def test_per_channel_and_order_independent(rng):
    block = rng.random((2, 3, 64, 64)).astype(np.float32)  # s c y x
    block[:, 1] *= 100
    summaries = [summarize(block[i : i + 1], channel_axis=1) for i in range(2)]
    a = windows(merge_channels(summaries, 3), (0.5, 99.5), block.dtype)
    b = windows(merge_channels(summaries[::-1], 3), (0.5, 99.5), block.dtype)
    assert a == b
    assert a[1].max > 50 > a[0].max


def test_constant_data_gets_a_nonempty_window():
    w = _window([np.full((8, 8), 3.0, np.float32)])
    assert w.min == w.start == 3.0 and w.end > w.start


def test_nonfinite_values_are_ignored():
    data = np.array([np.nan, np.inf, -np.inf, 1.0, 2.0, 3.0], dtype=np.float32)
    (s,) = summarize(data, None)
    assert (s.n, s.nonfinite, s.min, s.max) == (3, 3, 1.0, 3.0)


def test_no_finite_value_falls_back_to_dtype_window():
    (w,) = windows([merge(summarize(np.full(4, np.nan, np.float32), None))], (1, 99), np.dtype("uint8"))
    assert w == Window(0.0, 255.0, 0.0, 255.0)


def test_malformed_summary_is_refused():
    with pytest.raises((KeyError, ValueError)):
        Summary.from_json({"n": 3, "nonfinite": 0, "min": 0.0, "max": 1.0, "bins": [1, 2], "counts": [1]})
