"""One call for an array in hand: ``ngff_writer.write_image``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dask.array as da
import numpy as np
import ome_zarr.io
import ome_zarr.reader
import pytest
import zarr

import ngff_writer as nw
from ngff_writer._output import whole


def test_a_numpy_array_becomes_a_whole_image_with_its_pyramid(tmp_path):
    data = np.random.default_rng(0).random((3, 40, 96, 80)).astype(np.float32)
    progress = nw.write_image(tmp_path / "o.zarr", data, "czyx", chunks=(1, 8, 32, 32),
                              scale={"z": 2.0, "y": 0.5, "x": 0.5}, channel_names=["a", "b", "c"])
    assert progress.complete
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "0", mode="r")[:], data)
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        image = out.image("")
        assert image.n_levels == 3 and image.is_final
        level1 = image.level(1)[:]
    np.testing.assert_allclose(level1, data.reshape(3, 40, 48, 2, 40, 2).mean(axis=(3, 5)), rtol=1e-6)
    # Readers nobody here wrote see one image with its levels.
    node = next(iter(ome_zarr.reader.Reader(ome_zarr.io.parse_url(str(tmp_path / "o.zarr")))()))
    assert [tuple(level.shape) for level in node.data] == [(3, 40, 96, 80), (3, 40, 48, 40), (3, 40, 24, 20)]


def test_blocks_are_whole_units_about_the_block_size_covering_the_image(tmp_path, monkeypatch):
    monkeypatch.setattr(whole, "BLOCK_BYTES", 64 << 10)
    with nw.open_output(tmp_path / "o.zarr") as out:
        image = out.create_image("i", (5, 70, 100), "zyx", "uint16", chunks=(2, 16, 32), pyramid=None)
        blocks = whole._blocks(image.spec)
    covered = np.zeros((5, 70, 100), int)
    for start, shape in blocks:
        covered[tuple(slice(s, s + n) for s, n in zip(start, shape, strict=True))] += 1
        assert all(s % c == 0 for s, c in zip(start, (2, 16, 32), strict=True))
        assert np.prod(shape) * 2 <= 64 << 10
    assert (covered == 1).all()
    assert {shape[2] for _, shape in blocks} == {100}  # rows run the whole last axis


def test_a_second_call_resumes_and_other_data_is_refused(tmp_path, monkeypatch):
    data = np.arange(4 * 64 * 64, dtype=np.float32).reshape(4, 64, 64)
    # A first call dies after two blocks (a crash): the second writes only the rest.
    monkeypatch.setattr(whole, "BLOCK_BYTES", 8 << 10)  # blocks of one chunk: 8 of them
    written = []
    real = nw.Image.write_block

    def dying(self, block, start, **kw):
        if len(written) == 2:
            raise KeyboardInterrupt
        written.append(tuple(start))
        return real(self, block, start, **kw)

    monkeypatch.setattr(nw.Image, "write_block", dying)
    with pytest.raises(KeyboardInterrupt):
        nw.write_image(tmp_path / "o.zarr", data, "syx", chunks=(1, 32, 64), pyramid=None)
    monkeypatch.setattr(nw.Image, "write_block", lambda self, block, start, **kw: (
        written.append(tuple(start)), real(self, block, start, **kw))[1])
    before = len(written)
    assert nw.write_image(tmp_path / "o.zarr", data, "syx", chunks=(1, 32, 64), pyramid=None).complete
    assert len(written) - before == 6 and not set(written[:before]) & set(written[before:])
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "0", mode="r")[:], data)
    # Complete: the same array again writes nothing; other data is refused, not mixed in.
    assert nw.write_image(tmp_path / "o.zarr", data, "syx", chunks=(1, 32, 64), pyramid=None).complete
    assert len(written) - before == 6
    with pytest.raises(nw.OutputExistsError):
        nw.write_image(tmp_path / "o.zarr", data + 1, "syx", chunks=(1, 32, 64), pyramid=None)
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "o.zarr" / "0", mode="r")[:], data)


def test_a_dask_array_goes_through_its_scheduler(tmp_path):
    data = da.from_array(np.random.default_rng(1).random((2, 64, 64)).astype(np.float32), chunks=(1, 32, 64))
    progress = nw.write_image(tmp_path / "o.zarr", data * 2, "syx", name="pred", pyramid=2)
    assert progress.complete
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        np.testing.assert_allclose(out["pred"].array[:], (data * 2).compute())


def test_wrong_axes_write_nothing(tmp_path):
    with pytest.raises(nw.InvalidAxesError):
        nw.write_image(tmp_path / "o.zarr", np.zeros((4, 8, 8)), "yx")
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        assert out.images() == []


def test_a_progress_bar_shows_on_request_and_not_in_a_pipe(tmp_path):
    script = (
        "import numpy as np, ngff_writer as nw, sys\n"
        "show = {'on': True, 'auto': None}[sys.argv[2]]\n"
        "nw.write_image(sys.argv[1], np.ones((8, 256, 256), np.float32), 'zyx', progress=show)\n"
    )
    run = [sys.executable, "-c", script]
    shown = subprocess.run([*run, str(tmp_path / "a.zarr"), "on"], capture_output=True, text=True,
                           check=True, env={**os.environ, "COLUMNS": "100"})
    quiet = subprocess.run([*run, str(tmp_path / "b.zarr"), "auto"], capture_output=True, text=True,
                           check=True)
    assert "a.zarr" in shown.stderr  # the bar, labelled with the output
    assert quiet.stderr == "" and quiet.stdout == ""  # stderr is a pipe: no bar
    attributes = json.loads((tmp_path / "b.zarr" / "zarr.json").read_text())["attributes"]
    assert attributes["ngff_writer"]["status"] == "complete"
