"""The bookkeeping format version: what this version reads, and what it refuses, and how."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ngff_writer as nw
from ngff_writer._declare.bookkeeping import FORMAT


def _image(tmp_path: Path, complete: bool) -> Path:
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        img = out.create_image("p", (2, 8, 8), "syx", pyramid=None)
        img.write_sample(0, np.ones((8, 8), np.float32))
        if complete:
            img.write_sample(1, np.ones((8, 8), np.float32))
    return root


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc["attributes"])
    path.write_text(json.dumps(doc))


def test_written_format_is_recorded(tmp_path):
    root = _image(tmp_path, complete=False)
    image = json.loads((root / "p" / "zarr.json").read_text())["attributes"]["ngff_writer"]
    declaration = json.loads((root / "p" / "ngff_writer" / "zarr.json").read_text())["attributes"]
    assert image["format"] == declaration["format"] == FORMAT == 3


@pytest.mark.parametrize("complete", [False, True])
def test_a_newer_format_is_refused_with_what_to_do(tmp_path, complete):
    root = _image(tmp_path, complete)
    _edit(root / "p" / "zarr.json", lambda a: a["ngff_writer"].update(format=FORMAT + 1, version="9.0"))
    for mode in ("r", "a"):
        with nw.open_output(root, mode=mode) as out:
            with pytest.raises(nw.FormatVersionError, match="upgrade ngff-writer") as info:
                out["p"]
            assert isinstance(info.value, nw.StoreError)  # and so an OSError
    with nw.open_output(root, mode="a") as out, pytest.raises(nw.FormatVersionError):
        out.create_image("p", (2, 8, 8), "syx", pyramid=None, exist_ok=True)


def test_unknown_fields_in_the_stored_spec_are_refused(tmp_path):
    root = _image(tmp_path, complete=False)
    _edit(root / "p" / "zarr.json", lambda a: a["ngff_writer"]["spec"].update(compression_level=9))
    with nw.open_output(root, mode="r") as out:
        with pytest.raises(nw.FormatVersionError, match="compression_level"):
            out["p"]


def _as_format_1(root: Path) -> None:
    """What ngff-writer 0.1 left: no format field, one zarr group per record under done/."""
    _edit(root / "p" / "zarr.json", lambda a: a["ngff_writer"].pop("format"))
    bookkeeping = root / "p" / "ngff_writer"
    for child in bookkeeping.iterdir():
        if child.is_dir():
            for f in sorted(child.rglob("*"), reverse=True):
                f.unlink() if f.is_file() else f.rmdir()
            child.rmdir()
    (bookkeeping / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                       "attributes": {}}))
    record = bookkeeping / "done" / "0.0.0-1.1.1"
    record.mkdir(parents=True)
    (record / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group",
                                                  "attributes": {"box": [[0, 0, 0], [1, 1, 1]]}}))


def test_a_format_1_image_in_progress_is_refused_with_what_to_do(tmp_path):
    root = _image(tmp_path, complete=False)
    _as_format_1(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with nw.open_output(root, mode="a") as out:
        img = out["p"]  # found, and described
        assert img.spec.shape == (2, 8, 8)
        for call in (img.progress, lambda: img.write_sample(1, np.ones((8, 8), np.float32)),
                     img.finalize):
            with pytest.raises(nw.FormatVersionError, match=r"ngff-writer 0\.1"):
                call()
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing was touched


def test_a_complete_format_1_image_is_read(tmp_path):
    root = _image(tmp_path, complete=True)
    _edit(root / "p" / "zarr.json", lambda a: a["ngff_writer"].pop("format"))
    with nw.open_output(root, mode="r") as out:
        (progress,) = out.status()
    assert progress.complete and progress.done == progress.total == 2


def _as_format_2(root: Path, name: str) -> None:
    """What ngff-writer 0.2 left: format 2, whose spec counted the pyramid's levels below 0."""
    def older(block: dict) -> None:
        block.update(format=2, version="0.2.0")
        block["spec"]["pyramid"]["levels"] -= 1
    _edit(root / name / "zarr.json", lambda a: older(a["ngff_writer"]))
    _edit(root / name / "ngff_writer" / "zarr.json", older)


def test_an_image_0_2_left_unfinished_is_read_with_its_levels_and_continued(tmp_path):
    root = tmp_path / "o.zarr"
    data = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
    with nw.open_output(root) as out:
        img = out.create_image("p", data.shape, "syx", chunks=(1, 8, 8), pyramid=3)
        img.write_sample(0, data[0])
    _as_format_2(root, "p")  # 0.2's call was pyramid=2: level 0 and two below
    with nw.open_output(root, mode="a") as out:
        assert out["p"].n_levels == 3 and out["p"].spec.pyramid.levels == 3
        # The same script, run again by this version, asks for one level fewer: told how to go on.
        with pytest.raises(nw.SpecMismatchError, match=r"it has 3 levels .* pass pyramid=3"):
            out.create_image("p", data.shape, "syx", chunks=(1, 8, 8), pyramid=2, exist_ok=True)
        img = out.create_image("p", data.shape, "syx", chunks=(1, 8, 8), pyramid=3, exist_ok=True)
        for s in (1, 2):
            img.write_sample(s, data[s])
    with nw.open_output(root, mode="r") as out:
        (progress,) = out.status()
        assert progress.complete and progress.levels == 3
        assert np.array_equal(out["p"].level(0)[:], data)
        assert out["p"].level(2).shape == (3, 8, 8)
    # Its documents are now this version's: finalizing rewrote the image's own block.
    block = json.loads((root / "p" / "zarr.json").read_text())["attributes"]["ngff_writer"]
    assert block["format"] == FORMAT and block["spec"]["pyramid"]["levels"] == 3
