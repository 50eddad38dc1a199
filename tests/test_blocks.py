"""Blocks of the whole image (every declared axis), as the chunks of a dask array come."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ngff_writer as nw

LAYOUTS = [
    ("sczyx", (5, 2, 6, 40, 30), (1, 1, 2, 16, 16)),
    ("stczyx", (3, 4, 2, 5, 20, 20), (1, 2, 1, 2, 8, 8)),  # s merged into t
    ("yxs", (30, 40, 4), (16, 16, 1)),
    ("styx", (3, 4, 20, 20), (1, 1, 8, 8)),
    ("czyx", (2, 5, 24, 24), (1, 5, 8, 8)),
]


def _blocks(shape, block):
    for start in itertools.product(*(range(0, n, b) for n, b in zip(shape, block, strict=True))):
        yield start, tuple(slice(a, min(a + b, n)) for a, b, n in zip(start, block, shape, strict=True))


def _by_samples(root, axes, shape, chunks, ref):
    """The same image written one sample at a time (the reference path)."""
    with nw.open_output(root, mode="w") as out:
        img = out.create_image("a", shape, axes, chunks=chunks)
        for k in range(img.n_samples):
            sel = [slice(None)] * len(axes)
            for a, i in zip(img.spec.sample_axes, np.unravel_index(k, img.spec.layout.sample_grid),
                            strict=True):
                sel[axes.index(a)] = i
            img.write_sample(k, ref[tuple(sel)])
    return [zarr.open_array(root / "a" / str(k))[:] for k in range(img.n_levels)]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_blocks_of_any_shape_in_any_order_equal_samples(tmp_path_factory, data):
    axes, shape, chunks = data.draw(st.sampled_from(LAYOUTS), label="layout")
    block = tuple(data.draw(st.integers(max(1, n // 3), n), label=f"b{i}") for i, n in enumerate(shape))
    ref = np.random.default_rng(data.draw(st.integers(0, 99), label="seed")).random(shape, dtype=np.float32)
    root = tmp_path_factory.mktemp("blocks")
    jobs = list(_blocks(shape, block))
    order = data.draw(st.permutations(range(len(jobs))), label="order")
    with nw.open_output(root / "b.zarr", max_buffer_bytes=4096) as out:
        img = out.create_image("a", shape, axes, chunks=chunks)
        for k in order:
            start, sl = jobs[k]
            img.write_block(ref[sl], start)
        assert img.pending_blocks([(s, ref[sl].shape) for s, sl in jobs]) == []
    want = _by_samples(root / "s.zarr", axes, shape, chunks, ref)
    got = [zarr.open_array(root / "b.zarr" / "a" / str(k))[:] for k in range(len(want))]
    for g, w in zip(got, want, strict=True):
        assert g.tobytes() == w.tobytes()


def test_pending_blocks_and_bad_blocks(tmp_path):
    shape = (4, 16, 16)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("a", shape, "syx", chunks=(1, 8, 8), pyramid=None)
        blocks = [((s, 0, 0), (1, 16, 16)) for s in range(4)]
        img.write_block(np.ones((2, 16, 16), np.float32), (0, 0, 0))
        assert img.pending_blocks(blocks) == blocks[2:]
        for bad in [(np.ones((2, 16), np.float32), (0, 0)),               # too few axes
                    (np.ones((1, 16, 17), np.float32), (0, 0, 0)),        # too wide
                    (np.ones((1, 8, 8), np.float32), (3, 9, 0)),          # out of the image
                    (np.ones((1, 8, 8), np.float32), (0, -1, 0))]:
            with pytest.raises(nw.ShapeMismatchError):
                img.write_block(*bad)
        with pytest.raises(nw.LossyCastError):
            img.write_block(np.ones((1, 8, 8), np.float64), (0, 0, 0))
        blended = out.create_image("b", (1, 16, 16), "syx", blend={"tile_size": (8, 8), "overlap": (2, 2)})
        with pytest.raises(nw.WriteError, match="write_tile"):
            blended.write_block(np.ones((1, 8, 8), np.float32), (0, 0, 0))
