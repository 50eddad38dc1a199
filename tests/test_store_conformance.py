"""ngff-writer's stores against zarr-python's own store conformance suite (``StoreTests``).

Each class below runs every case of :class:`zarr.testing.store.StoreTests` on a store
ngff-writer builds or ships, or one its tests write through: the guard wrapping a local
directory and a memory store, the direct-I/O local store, and the test wrappers of
``tests/stores.py`` (the one that injects faults, with none injected, and the one that
counts reads). Every case applies to each of them; none is skipped. The suite's async
cases run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from stores import CountingStore, FaultyStore
from zarr.abc.buffer import Buffer
from zarr.buffer import cpu
from zarr.storage import LocalStore, MemoryStore
from zarr.testing.store import StoreTests

from ngff_writer._storage import localstore
from ngff_writer._storage.compat import wrapped
from ngff_writer._storage.guard import GuardedStore
from ngff_writer._storage.localstore import DirectLocalStore

# anyio runs the async cases; the sync ones need its backend too, for the async `store` fixture.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("anyio_backend")]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # zarr's stores (and the guard's timeouts) are asyncio code


def _read_file(root: Path, key: str) -> Buffer:
    return cpu.Buffer.from_bytes((root / key).read_bytes())


def _write_file(root: Path, key: str, value: Buffer) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(value.to_bytes())


class _LocalWrapperTests(StoreTests[Any, cpu.Buffer]):
    """A wrapper over a ``LocalStore`` in pytest's tmp_path: values are read and written as files."""

    buffer_cls = cpu.Buffer

    async def get(self, store: Any, key: str) -> Buffer:
        return _read_file(wrapped(store).root, key)

    async def set(self, store: Any, key: str, value: Buffer) -> None:
        _write_file(wrapped(store).root, key, value)

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"store": LocalStore(tmp_path)}

    @pytest.fixture
    def open_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"store_cls": LocalStore, "root": tmp_path}

    def test_store_supports_writes(self, store: Any) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: Any) -> None:
        assert store.supports_listing


class TestGuardedLocalStore(_LocalWrapperTests):
    store_cls = GuardedStore

    def test_store_repr(self, store: GuardedStore) -> None:
        inner = wrapped(store)
        assert repr(store) == f"GuardedStore({inner!r}, timeout=60.0, retries=3)"
        assert str(store) == str(inner)


    def test_eq_counts_the_bounds(self, tmp_path: Path) -> None:
        assert GuardedStore(LocalStore(tmp_path), 1.0, 2) == GuardedStore(LocalStore(tmp_path), 1.0, 2)
        assert GuardedStore(LocalStore(tmp_path), 1.0, 2) != GuardedStore(LocalStore(tmp_path), 5.0, 2)
        assert GuardedStore(LocalStore(tmp_path), 1.0, 2) != GuardedStore(LocalStore(tmp_path), 1.0, 0)

    @pytest.mark.parametrize("call", ["clear", "getsize"])
    async def test_every_call_is_bounded(self, tmp_path: Path, call: str) -> None:
        class Hanging(LocalStore):
            async def clear(self) -> None:
                await asyncio.sleep(60)

            async def getsize(self, key: str) -> int:
                await asyncio.sleep(60)
                return 0

        guard = GuardedStore(Hanging(tmp_path), timeout=0.05, retries=1)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no answer within 0\.05 s, 2 attempts"):
            await (guard.clear() if call == "clear" else guard.getsize("k"))
        assert time.monotonic() - started < 10


class TestGuardedMemoryStore(StoreTests[GuardedStore, cpu.Buffer]):
    store_cls = GuardedStore
    buffer_cls = cpu.Buffer

    async def get(self, store: GuardedStore, key: str) -> Buffer:
        return wrapped(store)._store_dict[key]

    async def set(self, store: GuardedStore, key: str, value: Buffer) -> None:
        wrapped(store)._store_dict[key] = value

    @pytest.fixture
    def store_kwargs(self) -> dict[str, Any]:
        return {"store": MemoryStore()}

    @pytest.fixture
    def open_kwargs(self) -> dict[str, Any]:
        return {"store_cls": MemoryStore, "store_dict": {}}

    def test_store_repr(self, store: GuardedStore) -> None:
        assert str(store) == str(wrapped(store))

    def test_store_supports_writes(self, store: GuardedStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: GuardedStore) -> None:
        assert store.supports_listing


class TestFaultyStore(_LocalWrapperTests):
    store_cls = FaultyStore

    @pytest.fixture(autouse=True)
    def _no_faults(self) -> None:
        FaultyStore.heal()

    def test_store_repr(self, store: FaultyStore) -> None:
        assert "LocalStore" in repr(store)


class TestCountingStore(_LocalWrapperTests):
    store_cls = CountingStore

    def test_store_repr(self, store: CountingStore) -> None:
        assert "LocalStore" in repr(store)


class TestDirectLocalStore(StoreTests[DirectLocalStore, cpu.Buffer]):
    """Every value, however small, goes through the direct path (``min_bytes=0``)."""

    store_cls = DirectLocalStore
    buffer_cls = cpu.Buffer

    async def get(self, store: DirectLocalStore, key: str) -> Buffer:
        return _read_file(store.root, key)

    async def set(self, store: DirectLocalStore, key: str, value: Buffer) -> None:
        _write_file(store.root, key, value)

    @pytest.fixture
    def store_kwargs(self, tmp_path: Path) -> dict[str, Any]:
        return {"root": tmp_path, "min_bytes": 0}

    def test_store_repr(self, store: DirectLocalStore) -> None:
        assert repr(store) == f"DirectLocalStore('file://{store.root.as_posix()}')"

    def test_store_supports_writes(self, store: DirectLocalStore) -> None:
        assert store.supports_writes

    def test_store_supports_listing(self, store: DirectLocalStore) -> None:
        assert store.supports_listing

    async def test_values_take_the_direct_path(self, store: DirectLocalStore, monkeypatch) -> None:
        written = []

        def spy(path: Path, data: memoryview) -> None:
            written.append(path)
            real(path, data)

        real = localstore._write_direct
        monkeypatch.setattr(localstore, "_write_direct", spy)
        value = self.buffer_cls.from_bytes(b"\x01\x02")
        await store.set("c/0", value)
        store.set_sync("c/1", value)
        assert (await store.get("c/0", prototype=None)).to_bytes() == b"\x01\x02"
        if not localstore.direct_io_supported():
            pytest.skip("no O_DIRECT on this platform")
        assert written == [store.root / "c/0", store.root / "c/1"] or not store.direct

    async def test_open_keeps_min_bytes(self, tmp_path: Path) -> None:
        for read_only in (False, True):
            store = await DirectLocalStore.open(tmp_path, read_only=read_only, min_bytes=5)
            assert (store.min_bytes, store.read_only) == (5, read_only)
            assert store.with_read_only(not read_only).min_bytes == 5

    async def test_a_value_that_is_no_buffer_is_refused_as_localstore_does(self, store) -> None:
        with pytest.raises(TypeError, match="must be a Buffer instance"):
            await store.set("c/0", b"\x01")
        with pytest.raises(TypeError, match="must be a Buffer instance"):
            store.set_sync("c/0", b"\x01")
