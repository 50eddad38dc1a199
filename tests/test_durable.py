"""Power loss: a record never reaches the disk before the data it claims.

A power cut cannot be staged here; what makes it safe can be watched: on a local
directory every commit of records is preceded by a sync of the filesystem (``syncfs``)
that covers every chunk stored before the records were taken, and ``durable=False``
skips it. The real ``syncfs`` runs; the test only logs the order of calls.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import ngff_writer as nw
import ngff_writer._storage.stores as stores
import ngff_writer._track.log as log


@pytest.fixture
def calls(monkeypatch):
    """The order of syncs and log-segment writes, the real ones still made."""
    seen: list[str] = []
    real_sync, real_put = stores.sync_to_disk, log.put_json

    def sync(store):
        seen.append("sync")
        real_sync(store)

    def put(store, key, value):
        if "/log/" in key:
            seen.append("record")
        return real_put(store, key, value)

    monkeypatch.setattr(log, "sync_to_disk", sync)
    monkeypatch.setattr(log, "put_json", put)
    return seen


@pytest.mark.parametrize("durable", [True, False])
def test_every_commit_syncs_the_data_it_claims_first(tmp_path, calls, durable):
    with nw.Context(durable=durable, commit_interval=0.05) as ctx:
        with nw.open_output(tmp_path / "o.zarr", context=ctx) as out:
            img = out.create_image("p", (6, 64, 64), "syx", chunks=(1, 32, 32))
            for i in range(6):
                img.write_sample(i, np.full((64, 64), i, np.float32))
                img.flush()  # stored, then committed: one segment per sample
    records = [k for k, c in enumerate(calls) if c == "record"]
    assert len(records) >= 6
    if durable:
        assert all(calls[k - 1] == "sync" for k in records)  # each record right after a sync
    else:
        assert "sync" not in calls
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        assert out["p"].is_final


def test_durable_must_be_a_bool():
    with pytest.raises(nw.SpecError, match="durable"):
        nw.Context(durable="yes")


def test_the_sync_runs_on_a_real_directory_and_is_nothing_on_an_object_store(tmp_path):
    import zarr.storage

    stores.sync_to_disk(zarr.storage.LocalStore(tmp_path))  # the real syscall: no error
    stores.sync_to_disk(zarr.storage.MemoryStore())  # nothing to do
    assert stores._SYNCFS is not None  # Linux: one syncfs per commit, not os.sync()


def test_each_shard_starts_its_writeback_before_it_is_put_in_place(tmp_path, monkeypatch):
    """The final commit's sync finds little left: every shard file ngff-writer finishes has
    its write-back to disk started (not waited for) while it is still the temporary file."""
    import ngff_writer._storage.pagecache as pagecache

    started: list[str] = []
    real = stores.start_writeback

    def watch(fd):
        started.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(pagecache, "start_writeback", watch)
    data = np.arange(4 * 64 * 64, dtype=np.float32).reshape(4, 64, 64)
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", data.shape, "syx", chunks=(1, 32, 32), shards=(1, 64, 64),
                               pyramid=None)
        for i in range(4):
            img.write_sample(i, data[i])
    shards = sorted((tmp_path / "o.zarr" / "p" / "0" / "c").rglob("*"))
    shards = [p for p in shards if p.is_file()]
    assert len(shards) == 4 and len(started) == 4
    assert all(stores.is_temporary(Path(name).name) for name in started)
    assert {Path(name).parent for name in started} == {p.parent for p in shards}
    with nw.open_output(tmp_path / "o.zarr", mode="r") as out:
        np.testing.assert_array_equal(out["p"].array[:], data)
    real(-1)  # a hint only: a failing call raises nothing (the commit's sync reports errors)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_writeback_hint_exists_on_linux():
    assert stores._SYNC_FILE_RANGE is not None
