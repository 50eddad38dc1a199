"""An export hands back the page cache its files took, once they are on disk; nothing else.

What the kernel holds is read with ``mincore`` on a mapping of each file (Linux): a page
reads resident while the page cache keeps it. The files are real exports, read back
afterwards; ``keep_cached=True`` shows the check can fail.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

import ngff_writer as nw
from ngff_writer._storage.pagecache import SMALLEST, WrittenFiles

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="mincore and posix_fadvise: Linux")

_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mmap.restype = ctypes.c_void_p
_LIBC.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
_LIBC.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_PAGE = mmap.PAGESIZE


def resident(path: Path) -> tuple[int, int]:
    """Pages of ``path`` in the page cache, and its pages (mapping it reads nothing)."""
    size = path.stat().st_size
    pages = -(-size // _PAGE)
    if not size:
        return 0, 0
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _LIBC.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = (ctypes.c_ubyte * pages)()
            assert _LIBC.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(v & 1 for v in vec), pages
        finally:
            _LIBC.munmap(addr, size)
    finally:
        os.close(fd)


def cached_share(files: list[Path]) -> float:
    counts = [resident(f) for f in files]
    return sum(c for c, _ in counts) / sum(n for _, n in counts)


def data_files(root: Path) -> list[Path]:
    """The chunk and shard files of every level (not metadata, not the log)."""
    found = [p for p in root.rglob("c/**/*") if p.is_file()]
    assert found
    return found


SHAPE = (6, 32, 256, 256)  # 8 MiB float32 samples, 48 MiB of level 0


def export(path: Path, ctx: nw.Context, how: str) -> np.ndarray:
    data = np.random.default_rng(3).random(SHAPE, dtype=np.float32)
    shards = None if how == "chunks" else (1, 32, 256, 256)
    with nw.open_output(path, mode="w", context=ctx) as out:
        img = out.create_image("p", SHAPE, "szyx", chunks=(1, 16, 128, 128), shards=shards)
        for s in range(SHAPE[0]):
            if how == "tiles":  # shards filled a chunk at a time as tiles arrive
                for y in (0, 128):
                    for x in (0, 128):
                        img.write_tile(s, data[s, :, y:y + 128, x:x + 128], crop_start=(0, 0, 0),
                                       crop_size=(32, 128, 128), stitch_start=(0, y, x))
            else:
                img.write_sample(s, data[s])
        assert img.complete
    return data


@pytest.mark.parametrize("how", ["samples", "tiles", "chunks"])
def test_an_export_leaves_its_files_out_of_the_page_cache(tmp_path, how):
    with nw.Context() as ctx:
        data = export(tmp_path / "o.zarr", ctx, how)
    files = data_files(tmp_path / "o.zarr" / "p")
    assert cached_share(files) < 0.05
    got = zarr.open_array(tmp_path / "o.zarr" / "p" / "0", mode="r")[:]
    np.testing.assert_array_equal(got, data)  # read back from the disk, every byte
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        assert out["p"].is_final


def test_closing_an_output_hands_back_its_last_files(tmp_path):
    # The default context lives on (closed at exit): the output's close is what hands them back.
    export(tmp_path / "o.zarr", nw.default_context(), "samples")
    assert cached_share(data_files(tmp_path / "o.zarr" / "p")) < 0.05


def test_keep_cached_leaves_them_cached(tmp_path):
    with nw.Context(keep_cached=True) as ctx:
        export(tmp_path / "o.zarr", ctx, "samples")
    assert cached_share(data_files(tmp_path / "o.zarr" / "p")) > 0.9


def _written(path: Path, nbytes: int) -> int:
    """A file of ``nbytes`` written and synced (its pages clean, still cached); its descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, os.urandom(nbytes))
    os.fsync(fd)
    return fd


def test_files_are_handed_back_a_lag_behind_the_newest(tmp_path):
    written = WrittenFiles(lag=2 << 20, files=64)
    paths = [tmp_path / f"f{k}" for k in range(6)]
    for p in paths:
        written.hand_over(_written(p, 1 << 20), 1 << 20)
    shares = [cached_share([p]) for p in paths]
    assert shares[:4] == [0.0] * 4  # more than 2 MiB behind the newest
    assert min(shares[4:]) == 1.0  # the last two still cached
    written.release_all()
    assert cached_share(paths[4:]) == 0.0
    for p in paths:
        assert p.stat().st_size == 1 << 20  # handed back from memory, not from the disk


def test_a_count_of_files_bounds_the_descriptors_kept(tmp_path):
    written = WrittenFiles(lag=1 << 30, files=3)
    paths = [tmp_path / f"f{k}" for k in range(5)]
    for p in paths:
        written.hand_over(_written(p, SMALLEST), SMALLEST)
    assert [cached_share([p]) for p in paths] == [0.0, 0.0, 1.0, 1.0, 1.0]
    written.release_all()


def test_a_link_is_not_followed_out_of_the_output(tmp_path):
    outside = tmp_path / "users-file"
    os.close(_written(outside, 1 << 20))
    (tmp_path / "out").mkdir()
    link = tmp_path / "out" / "c0"
    link.symlink_to(outside)
    written = WrittenFiles()
    written.finished(link, 1 << 20)
    written.release_all()
    assert cached_share([outside]) == 1.0  # what the link points at is not touched


def test_small_files_are_left_cached(tmp_path):
    written = WrittenFiles(lag=0, files=1)
    small, large = tmp_path / "small", tmp_path / "large"
    written.hand_over(_written(small, SMALLEST // 2), SMALLEST // 2)
    written.hand_over(_written(large, SMALLEST), SMALLEST)
    written.release_all()
    assert (cached_share([small]), cached_share([large])) == (1.0, 0.0)


def test_keep_cached_takes_a_bool():
    with pytest.raises(nw.SpecError, match="keep_cached"):
        nw.Context(keep_cached="no")
