"""Write calls hand their data over and return: the store, the levels below and finalizing
happen off the caller's thread, within the context's budget of data in flight."""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

import numpy as np
import pytest
from stores import CountingStore, FaultyStore
from zarr.storage import LocalStore, WrapperStore

import ngff_writer as nw
from ngff_writer._write import pipeline

SAMPLE = (64, 64)
NBYTES = 64 * 64 * 4


class GateStore(WrapperStore):
    """A real store whose chunk writes wait until the gate opens (a slow disk, on demand)."""

    gate: ClassVar[threading.Event] = threading.Event()
    stored: ClassVar[int] = 0

    @classmethod
    def shut(cls) -> None:
        cls.gate = threading.Event()
        cls.stored = 0

    async def set(self, key, value):
        if CountingStore.is_chunk(key):
            while not type(self).gate.is_set():
                await asyncio.sleep(0.005)
            type(self).stored += 1
        return await self._store.set(key, value)

    def set_sync(self, key, value):
        if CountingStore.is_chunk(key):
            type(self).gate.wait()
            type(self).stored += 1
        return super().set_sync(key, value)


@pytest.fixture
def gated(tmp_path):
    GateStore.shut()
    yield GateStore(LocalStore(tmp_path / "o.zarr"))
    GateStore.gate.set()


def _sample(i: int) -> np.ndarray:
    return np.full(SAMPLE, i + 1, np.float32)


def test_a_write_returns_before_its_data_is_stored(gated, tmp_path):
    with nw.Context(inflight_bytes=8 * NBYTES) as ctx, nw.open_output(gated, context=ctx) as out:
        img = out.create_image("p", (4, *SAMPLE), "syx", chunks=(1, *SAMPLE), pyramid=None)
        given = _sample(0)
        img.write_sample(0, given)  # returns while no chunk can be stored
        img.write_sample(1, _sample(1))
        assert GateStore.stored == 0 and ctx.budget.used == 2 * NBYTES
        given[:] = -1  # the caller may reuse its buffer at once: what it gave was copied
        GateStore.gate.set()
        img.write_sample(2, _sample(2))
        img.write_sample(3, _sample(3))
    with nw.open_output(tmp_path / "o.zarr", mode="r") as ro:
        assert ro["p"].progress().complete
        np.testing.assert_array_equal(ro["p"].array[:], np.stack([_sample(i) for i in range(4)]))
    assert ctx.budget.used == 0


def test_a_write_waits_only_while_the_budget_is_spent(gated, tmp_path):
    with nw.Context(inflight_bytes=NBYTES) as ctx, nw.open_output(gated, context=ctx) as out:
        img = out.create_image("p", (2, *SAMPLE), "syx", chunks=(1, *SAMPLE), pyramid=None)
        img.write_sample(0, _sample(0))  # the budget: one sample
        second = threading.Thread(target=img.write_sample, args=(1, _sample(1)))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and ctx.budget.used == NBYTES  # waits for the first store
        GateStore.gate.set()
        second.join(timeout=60)
        assert not second.is_alive()
    with nw.open_output(tmp_path / "o.zarr", mode="r") as ro:
        assert ro["p"].progress().complete


def test_levels_below_are_assembled_reduced_and_finalized_off_the_callers_thread(tmp_path, monkeypatch):
    seen: dict[str, set[str]] = {"reduce": set(), "assemble": set(), "finalize": set()}

    def watch(name, fn):
        def watched(*args, **kwargs):
            seen[name].add(threading.current_thread().name)
            return fn(*args, **kwargs)
        return watched

    monkeypatch.setattr(pipeline, "downsample", watch("reduce", pipeline.downsample))
    monkeypatch.setattr(pipeline.Pipeline, "_do", watch("assemble", pipeline.Pipeline._do))
    monkeypatch.setattr(pipeline, "finalize_image", watch("finalize", pipeline.finalize_image))
    with nw.open_output(tmp_path / "o.zarr") as out:
        img = out.create_image("p", (6, 1, 128, 128), "scyx", chunks=(1, 1, 32, 32))
        assert img.n_levels == 3
        for i in range(6):
            img.write_sample(i, np.full((1, 128, 128), i, np.float32))
        assert img.progress().complete  # a read waits for the pipeline: final now
    main = threading.main_thread().name
    for name, threads in seen.items():
        assert threads and main not in threads, (name, threads)
    assert any("-pipeline" in t for t in seen["finalize"])


def test_reads_wait_and_never_raise_a_failed_store(tmp_path):
    FaultyStore.heal()
    FaultyStore.fail("p/0/c", OSError(28, "No space left on device"), times=1)
    store = FaultyStore(LocalStore(tmp_path / "o.zarr"))
    try:
        with nw.open_output(store) as out:
            img = out.create_image("p", (2, *SAMPLE), "syx", chunks=(1, *SAMPLE), pyramid=None)
            img.write_sample(0, _sample(0))
            assert img.progress().done == 0  # waited for: failed, told later
            img.array[:]  # a read neither raises nor stores
            with pytest.raises(nw.StoreError, match="No space left"):
                img.write_sample(1, _sample(1))  # the next write tells, once (and takes its sample)
            img.write_sample(0, _sample(0))  # a retry stores it
            assert img.progress().complete
    finally:
        FaultyStore.heal()
