"""Nothing outside the output: a symbolic link where ngff-writer keeps an image is never followed.

A user's folder (the canary) is linked in place of each bookkeeping folder, or a file in
place of a bookkeeping file; resuming, repairing, finalizing and ``mode="w"`` report the
link with a typed error, and the canary keeps every byte.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ngff_writer as nw
from ngff_writer.testing import abandon

SHAPE = (2, 64, 64)


def tiles_of(s: int) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """Quarter tiles of sample ``s`` that cut its 48x48 chunks: parts are held, and spilled."""
    data = np.full((64, 64), s + 1.0, np.float32)
    return [(data[y:y + 32, x:x + 32], (y, x)) for y in (0, 32) for x in (0, 32)]


INTERRUPTED = """
import os, sys
sys.path.insert(0, sys.argv[2])
from test_links import interrupted_here
interrupted_here(sys.argv[1])
os._exit(0)  # killed: nothing closed, its heartbeat left for a process that is gone
"""


def interrupted_here(root: str) -> None:
    out = nw.open_output(root, mode="w", max_buffer_bytes=0)
    img = out.create_image("p", SHAPE, "syx", chunks=(1, 48, 48), pyramid=None)
    img.write_sample(1, np.full((64, 64), 2.0, np.float32))  # stored and recorded: a log segment
    for tile, (y, x) in tiles_of(0)[:3]:
        img.write_block(tile[None], (0, y, x))  # parts of chunks: spilled as fragments
    img.flush()
    abandon(out, commit=True)


def interrupted(root: Path) -> None:
    """An export whose process died halfway: fragments, a log segment and a heartbeat left."""
    subprocess.run([sys.executable, "-c", INTERRUPTED, str(root), str(Path(__file__).parent)],
                   check=True, timeout=120)
    bookkeeping = root / "p" / "ngff_writer"
    assert all(any((bookkeeping / d).iterdir()) for d in ("fragments", "log", "writers"))


def canary(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    folder = tmp_path / "users-folder"
    folder.mkdir()
    for name in ("notes.json", "data.npz", "w-1.json"):
        (folder / name).write_bytes(b"the user's " + name.encode())
    return folder, {p.name: p.read_bytes() for p in folder.iterdir()}


def link_in(root: Path, where: str, target: Path) -> None:
    place = root / "p" / "ngff_writer" / where
    if place.is_dir():
        shutil.rmtree(place)
    elif place.exists():
        place.unlink()
    place.parent.mkdir(parents=True, exist_ok=True)
    place.symlink_to(target, target_is_directory=target.is_dir())


def resume(root: Path) -> None:
    with nw.open_output(root, mode="a") as out:
        for s in range(SHAPE[0]):
            for tile, (y, x) in tiles_of(s):
                out["p"].write_block(tile[None], (s, y, x))


def repair(root: Path) -> None:
    with nw.open_output(root, mode="a") as out:
        out.repair()


def finalize(root: Path) -> None:
    with nw.open_output(root, mode="a") as out:
        out.finalize()


def overwrite(root: Path) -> None:
    nw.open_output(root, mode="w").close()


@pytest.mark.parametrize("action", [resume, repair, finalize, overwrite])
@pytest.mark.parametrize("where", ["fragments", "log", "writers", "fragments/0"])
def test_a_linked_bookkeeping_folder_is_reported_and_never_followed(tmp_path, where, action):
    root = tmp_path / "o.zarr"
    interrupted(root)
    folder, before = canary(tmp_path)
    link_in(root, where, folder)
    with pytest.raises(nw.NgffWriterError, match="symbolic link"):
        action(root)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    # Once the link is gone, the same call goes through.
    (root / "p" / "ngff_writer" / where).unlink()
    resume(root)
    with nw.open_output(root, mode="r") as out:
        assert out["p"].is_final
        np.testing.assert_array_equal(out["p"].array[1], np.full((64, 64), 2.0, np.float32))


@pytest.mark.parametrize("action", [resume, repair, overwrite])
def test_a_linked_bookkeeping_file_is_reported_and_its_target_kept(tmp_path, action):
    root = tmp_path / "o.zarr"
    interrupted(root)
    folder, before = canary(tmp_path)
    segment = next((root / "p" / "ngff_writer" / "log").iterdir())
    segment.unlink()
    segment.symlink_to(folder / "w-1.json")
    with pytest.raises(nw.NgffWriterError, match="symbolic link"):
        action(root)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_the_cli_reports_a_link_with_its_exit_code_and_keeps_the_target(tmp_path):
    root = tmp_path / "o.zarr"
    interrupted(root)
    folder, before = canary(tmp_path)
    link_in(root, "log", folder)
    script = str(Path(sys.executable).with_name("ngff-writer"))
    for command in (["repair"], ["finalize"]):
        done = subprocess.run([script, *command, str(root)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 4, (command, done.stderr)  # the store cannot be read as it is
        assert "symbolic link" in done.stderr and "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
