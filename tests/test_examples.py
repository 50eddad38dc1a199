"""The examples run as documented."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import zarr

import ngff_writer as nw

EXAMPLES = Path(__file__).parents[1] / "examples"


def run_example(name: str, *args: str) -> int:
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        module = runpy.run_path(str(EXAMPLES / name))
        return module["main"](list(args))
    finally:
        sys.argv = argv


def test_predict_and_resume(tmp_path):
    out = tmp_path / "out.zarr"
    assert run_example("predict_and_resume.py", str(out), "--crash-after", "5") == 1
    with nw.open_output(out, mode="r") as o:
        assert [(p.name, p.done, p.complete) for p in o.status()] == [
            ("fish_01", 5, False), ("fish_02", 0, False)]
    assert run_example("predict_and_resume.py", str(out)) == 0
    with nw.open_output(out, mode="r") as o:
        assert all(p.complete for p in o.status())
    stored = zarr.open_array(out / "fish_01" / "0", mode="r")
    raw = np.random.default_rng(3).normal(size=(16, 128, 128)).astype(np.float32)
    np.testing.assert_array_equal(stored[3, 0], raw)
