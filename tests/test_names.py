"""One name rule: a name is accepted only where every reader, and our own discovery, sees it.

An accepted name is an image that ``images()``, ``status`` and ``finalize`` list; a refused
one raises a typed error and leaves the store byte for byte as it was.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ngff_writer as nw

#: Segments readers skip or zarr reserves, beside ordinary ones and ones near them.
SEGMENTS = [
    "a", "b", "img_01", "x.ome.zarr", "0", "labels", "A", "1",
    ".zattrs", ".zgroup", ".zarray", ".zmetadata", ".hidden", "zarr.json", "ngff_writer",
    "a.partial", ".", "..", "__x", "a b", "é", "", "a\\b", "a\x00",
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", [".zattrs", "b/.zattrs", ".hidden", "a/zarr.json", "zarr.json",
                                  "a/.zgroup", "x.partial", "a/ngff_writer"])
@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_names_discovery_would_skip_are_refused_and_write_nothing(tmp_path, name, version):
    root = tmp_path / "o.zarr"
    with nw.open_output(root, ngff_version=version) as out:
        before = snapshot(root)
        with pytest.raises(nw.SpecError, match="image name"):
            out.create_image(name, (1, 4, 4), "syx")
        assert snapshot(root) == before
        assert out.images() == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join),
                      min_size=1, max_size=6))
def test_accepted_names_are_listed_and_refused_ones_change_nothing(tmp_path_factory, names):
    root = tmp_path_factory.mktemp("names") / "o.zarr"
    accepted: list[str] = []
    with nw.open_output(root) as out:
        for name in names:
            before = snapshot(root)
            try:
                img = out.create_image(name, (1, 4, 4), "syx", pyramid=None)
            except nw.NgffWriterError:
                assert snapshot(root) == before, name  # refused: not a byte changed
                continue
            img.write_sample(0, np.ones((4, 4), np.float32))
            img.flush()  # stored, recorded and finalized now: the next snapshot is still
            accepted.append(img.name)
        assert sorted(out.images()) == sorted(accepted)
        assert [p.name for p in out.status()] == sorted(accepted)
    with nw.open_output(root, mode="a") as out:
        assert out.finalize() == []  # every accepted image was written whole: none left out
        assert all(out[n].is_final for n in accepted)


def test_a_group_holding_an_image_where_a_level_would_go_is_not_declared_an_image(tmp_path):
    """Found by the property test: "a/0" an image, then "a" declared: its level 0 would be
    the image "a/0"; refused before its declaration is written."""
    root = tmp_path / "o.zarr"
    with nw.open_output(root) as out:
        out.create_image("a/0", (1, 4, 4), "syx", pyramid=None)
        before = snapshot(root)
        with pytest.raises(nw.DuplicateImageError, match="holds groups"):
            out.create_image("a", (1, 4, 4), "syx", pyramid=None)
        assert snapshot(root) == before
        assert out.images() == ["a/0"]
