"""Local chunk files written with O_DIRECT: exact bytes, atomic names, a fallback that loses nothing."""

from __future__ import annotations

import asyncio
import errno
import os
import pickle

import numpy as np
import pytest
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.storage import LocalStore

import ngff_writer as nw
from ngff_writer._output.validate import validate_image
from ngff_writer._storage import localstore
from ngff_writer._storage.localstore import DirectLocalStore

# Around the block size, around the direct threshold, and past one buffer (two writes).
SIZES = [0, 1, 4095, 4096, 4097, (256 << 10) - 1, 256 << 10, (256 << 10) + 1, (16 << 20) + 4097]


def _direct_works(path) -> bool:
    probe = path / "probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | getattr(os, "O_DIRECT", 0), 0o666)
    except OSError:
        return False
    os.close(fd)
    probe.unlink()
    return bool(getattr(os, "O_DIRECT", 0))


def _value(n: int, seed: int = 0):
    raw = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    return raw, default_buffer_prototype().buffer.from_bytes(raw)


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("n", SIZES)
def test_values_read_back_exactly_sync_and_async(tmp_path, n):
    store = DirectLocalStore(tmp_path / "s")
    raw, value = _value(n)
    store.set_sync(f"c/0/{n}", value)
    asyncio.run(store.set(f"d/1/{n}", value))
    for key in (f"c/0/{n}", f"d/1/{n}"):
        path = tmp_path / "s" / key
        assert path.stat().st_size == n
        assert path.read_bytes() == raw
        assert store.get_sync(key).to_bytes() == raw
    assert _files(tmp_path / "s") == sorted([f"c/0/{n}", f"d/1/{n}"])  # no temporary file left
    assert store.direct == _direct_works(tmp_path)


def test_overwrite_replaces_whole_file(tmp_path):
    store = DirectLocalStore(tmp_path)
    big, small = _value(3 << 20, 1), _value(300 << 10, 2)
    store.set_sync("k", big[1])
    store.set_sync("k", small[1])
    assert (tmp_path / "k").read_bytes() == small[0]


def test_refused_direct_io_falls_back_and_loses_nothing(tmp_path, monkeypatch):
    # A filesystem that refuses O_DIRECT answers EINVAL at open (tmpfs before Linux 6.6,
    # some FUSE mounts); this one accepts it, so the refusal is injected at that call.
    real_open = os.open

    def refusing(path, flags, *args, **kwargs):
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(localstore.os, "open", refusing)
    store = DirectLocalStore(tmp_path)
    first, second = _value(1 << 20, 3), _value(2 << 20, 4)
    store.set_sync("a/0", first[1])
    assert store.direct is False  # stops trying after the first refusal
    asyncio.run(store.set("a/1", second[1]))
    assert (tmp_path / "a/0").read_bytes() == first[0]
    assert (tmp_path / "a/1").read_bytes() == second[0]
    assert _files(tmp_path) == ["a/0", "a/1"]


def test_other_errors_are_raised_not_hidden(tmp_path):
    store = DirectLocalStore(tmp_path)
    (tmp_path / "blocked").write_bytes(b"a file where a directory is needed")
    with pytest.raises(NotADirectoryError):
        store.set_sync("blocked/c/0", _value(1 << 20)[1])
    assert store.direct == _direct_works(tmp_path)


def test_pickles_with_its_settings(tmp_path):
    store = DirectLocalStore(tmp_path, min_bytes=5)
    store.direct = False
    clone = pickle.loads(pickle.dumps(store))
    assert (clone.root, clone.min_bytes, clone.direct) == (tmp_path, 5, False)
    assert clone == store and clone.with_read_only(True).read_only
    assert clone.with_read_only(True).direct is False


def test_an_output_on_a_direct_store_reads_back_and_validates(tmp_path):
    data = np.random.default_rng(5).random((3, 1, 32, 256, 256), dtype=np.float32)
    with nw.open_output(nw.DirectLocalStore(tmp_path / "o.zarr"), mode="w") as out:
        assert isinstance(out.store, DirectLocalStore)
        img = out.create_image("x", shape=data.shape, axes="sczyx", dtype="float32",
                               chunks=(1, 1, 16, 128, 128), pyramid=None)
        for i, sample in enumerate(data):
            img.write_sample(i, sample)
    arr = zarr.open_array(LocalStore(tmp_path / "o.zarr", read_only=True), path="x/0")
    np.testing.assert_array_equal(arr[:], data)
    assert not [p for p in (tmp_path / "o.zarr").rglob("*.partial")]
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        assert validate_image(out.store, "x", out["x"]).ok


def test_paths_open_zarrs_own_local_store(tmp_path):
    with nw.open_output(tmp_path / "o.zarr", mode="w") as out:
        assert type(out.store) is LocalStore
