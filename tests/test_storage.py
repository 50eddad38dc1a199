"""The storage seam, one conformance suite for every kind of store ngff-writer supports.

Local disk, zarr's memory store, S3 through fsspec, S3 through obstore (moto's server on
127.0.0.1), and the fault-injecting wrapper the error tests use: the same primitives must
behave the same on each.
"""

from __future__ import annotations

import threading

import pytest
from stores import FaultyStore
from zarr.storage import LocalStore, MemoryStore

from ngff_writer._storage.stores import (
    atomic_create,
    create_if_absent,
    delete_keys,
    delete_tree,
    get_bytes,
    get_json,
    get_many,
    list_prefix,
    open_store,
    put_bytes,
    put_json,
)
from ngff_writer.errors import CorruptError, StoreError

KINDS = ["local", "memory", "fsspec", "obstore", "faulty"]


@pytest.fixture(params=KINDS)
def store(request, tmp_path):
    kind = request.param
    if kind == "local":
        return open_store(tmp_path / "s.zarr", "a")
    if kind == "memory":
        return open_store(MemoryStore(), "a")
    if kind == "faulty":
        FaultyStore.heal()
        return open_store(FaultyStore(LocalStore(tmp_path / "f.zarr")), "a")
    s3 = request.getfixturevalue("s3")
    if kind == "fsspec":
        return open_store(s3.url("s.zarr"), "a", s3.fsspec_options)
    return open_store(s3.obstore("s.zarr"), "a")


def test_objects_round_trip(store):
    assert get_bytes(store, "a/b") is None
    put_bytes(store, "a/b", b"123")
    put_json(store, "a/c.json", {"x": [1, 2], "y": float("nan")})  # JSON has no NaN: null
    assert get_bytes(store, "a/b") == b"123"
    assert get_json(store, "a/c.json") == {"x": [1, 2], "y": None}
    assert get_many(store, ["a/b", "a/missing"]) == {"a/b": b"123", "a/missing": None}


def test_unreadable_json_is_a_corrupt_error_naming_the_key(store):
    put_bytes(store, "x/zarr.json", b"")
    with pytest.raises(CorruptError) as info:
        get_json(store, "x/zarr.json")
    assert info.value.key == "x/zarr.json" and isinstance(info.value, StoreError)


def test_listing_is_recursive_and_fresh(store):
    for key in ("p/log/a.json", "p/log/b.json", "p/fragments/0/1.2/w-1.npz", "q/other"):
        put_bytes(store, key, b"x")
    assert sorted(list_prefix(store, "p/")) == ["p/fragments/0/1.2/w-1.npz", "p/log/a.json",
                                                 "p/log/b.json"]
    put_bytes(store, "p/log/c.json", b"x")  # written after a listing: the next one sees it
    assert "p/log/c.json" in list_prefix(store, "p/log/")


def test_deletes_tolerate_missing_keys_and_racing_deleters(store):
    keys = [f"d/unit/w-{i}.npz" for i in range(12)]
    for key in keys:
        put_bytes(store, key, b"x")
    errors: list[BaseException] = []

    def delete() -> None:
        try:
            delete_tree(store, "d/unit")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=delete) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and list_prefix(store, "d/") == []
    delete_keys(store, keys)  # all gone already: not an error


def test_create_if_absent_keeps_the_first(store):
    assert create_if_absent(store, "decl/zarr.json", b"first") == b"first"
    assert create_if_absent(store, "decl/zarr.json", b"second") == b"first"
    assert get_bytes(store, "decl/zarr.json") == b"first"


def test_create_if_absent_is_atomic_where_the_store_says_so(store):
    if not atomic_create(store):
        pytest.skip("this store checks, then writes")
    results, barrier = [], threading.Barrier(8)

    def create(i: int) -> None:
        barrier.wait()
        results.append(create_if_absent(store, "race/zarr.json", f"writer-{i}".encode()))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1  # every writer sees the same winner


def test_backend_failures_become_store_errors_with_their_cause(tmp_path):
    FaultyStore.heal()
    store = FaultyStore(LocalStore(tmp_path / "f.zarr"))
    FaultyStore.fail("k", PermissionError(13, "Permission denied"))
    with pytest.raises(StoreError, match="writing k") as info:
        put_bytes(store, "k", b"x")
    assert isinstance(info.value.__cause__, PermissionError) and isinstance(info.value, OSError)
    FaultyStore.heal()
