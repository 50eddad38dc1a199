"""The one place that opens stores and moves ngff-writer's own objects in and out of them.

Everything else talks to a :class:`zarr.abc.store.Store`: a local directory, a URL (on
obstore's client or fsspec's, :mod:`ngff_writer._storage.s3`), or a store object the caller built.
Bulk array data goes through zarr arrays; this module handles the small objects
ngff-writer owns (group metadata, log segments, fragments) and turns whatever a backend raises into a
:class:`~ngff_writer.errors.StoreError` that names the operation and the key.

What each store guarantees to the bookkeeping
---------------------------------------------
Every object ngff-writer writes has a name no other writer uses, except one: an image's
declaration, which must be created exactly once. :func:`create_if_absent` does that
with the store's atomic primitive where it has one: ``os.link`` on
:class:`~zarr.storage.LocalStore`, a conditional PUT (``If-None-Match: *``) on S3
through s3fs or obstore, a dict's ``setdefault`` in
:class:`~zarr.storage.MemoryStore`. On other stores it checks, then writes; two writers
declaring the same image with different settings at the same instant may then both
believe they won (:func:`atomic_create` tells which case applies). Listings are never
trusted to be fresh: a writer that needs another's objects lists with a recursive
listing, which fsspec does not serve from its cache, and URLs are opened with
fsspec's listings cache off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import re
import socket
import time
import uuid
import zlib
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import zarr
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore, MemoryStore, WrapperStore

from ..errors import CorruptError, NgffWriterError, ReadOnlyError, StoreError
from .compat import s3_create, use_fused_pipeline, wrapped, zarr_sync
from .guard import GuardedStore
from .s3 import obstore_for

__all__ = [
    "Mode", "StoreLike", "atomic_create", "base_store", "create_if_absent", "delete_keys",
    "delete_tree", "describe", "field_of", "get_bytes", "get_json", "get_many", "is_link",
    "is_temporary", "join", "key_exists", "links_under", "list_dir", "list_prefix", "loads",
    "metadata_keys", "open_store", "oversized", "process_exists", "put_bytes", "put_json",
    "read_only_array", "refuse_links", "refuse_oversized", "repair_hint", "store_errors",
    "start_writeback", "sweep_temporary", "sync_to_disk", "temporary_name", "without_new_threads",
]

Mode = Literal["w-", "w", "a", "r"]
StoreLike = str | Path | Store


def open_store(root: StoreLike, mode: Mode, storage_options: dict[str, Any] | None = None, *,
               timeout: float = 60.0, retries: int = 3) -> Store:
    """Return a zarr store for ``root`` (a path, a URL such as ``s3://b/x.zarr``, or a store).

    Parameters
    ----------
    root
        Where the output lives.
    mode
        ``"r"`` opens read-only; every other mode opens for writing.
    storage_options
        fsspec's options for URLs (credentials, ``endpoint_url``...). The listings cache
        is off unless these options turn it on (see the module docstring). An ``s3://``
        URL whose options obstore understands opens on obstore's faster client
        (:mod:`ngff_writer._storage.s3`).
    timeout, retries
        For remote stores: seconds one store call may take, and further attempts after a
        timeout or a lost connection (:mod:`ngff_writer._storage.guard`).
    """
    read_only = mode == "r"
    if isinstance(root, Store):
        if not read_only and root.read_only:
            raise StoreError(f"store {root} is read-only but mode={mode!r} needs writes")
        store = root
    elif isinstance(root, str) and "://" in root and not root.startswith("file://"):
        options = {"use_listings_cache": False, **(storage_options or {})}
        try:
            store = obstore_for(root, storage_options, read_only) or \
                FsspecStore.from_url(root, storage_options=options, read_only=read_only)
        except (ImportError, ValueError, OSError) as exc:
            raise StoreError(f"cannot open {root!r}: {exc}") from exc
    else:
        path = Path(str(root).removeprefix("file://")).expanduser()
        if path.exists() and not path.is_dir():
            raise StoreError(f"{path} exists and is not a directory")
        return LocalStore(path, read_only=read_only)
    if isinstance(base_store(store), (LocalStore, MemoryStore)) or _guard_of(store) is not None:
        return store
    return GuardedStore(store, timeout, retries)


def _guard_of(store: Store) -> GuardedStore | None:
    while isinstance(store, WrapperStore):
        if isinstance(store, GuardedStore):
            return store
        store = wrapped(store)
    return None


def join(*parts: str) -> str:
    """Join store path parts with "/", skipping empty ones (the root is "")."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def describe(store: Store) -> str:
    """A short human name for a store (its path or URL)."""
    if isinstance(store, LocalStore):
        return str(store.root)
    return str(getattr(store, "path", store))


@contextlib.contextmanager
def store_errors(what: str, store: Store | None = None) -> Iterator[None]:
    """Backend failures inside become :class:`StoreError` naming ``what`` (and the store).

    Our own errors pass through; anything else a store raises (``OSError`` with errno 28,
    ``PermissionError``, botocore's ``EndpointConnectionError``...) is re-raised as a
    ``StoreError`` whose ``__cause__`` is the original. A backend is free to raise any
    type, so everything but our own errors is mapped here, at the storage seam only.
    """
    try:
        yield
    except NgffWriterError:
        raise
    except Exception as exc:
        where = f" in {describe(store)}" if store is not None else ""
        raise StoreError(f"{what}{where} failed: {type(exc).__name__}: {exc}") from exc


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run a store coroutine on zarr's own event loop (the loop its sync API uses).

    zarr has no public way to do this, and it must be that loop: an fsspec store's async
    client (s3fs's aiohttp session) is bound to the loop zarr first used it on (see
    :mod:`ngff_writer._storage.compat`).
    """
    return zarr_sync(coro)


class _InlineExecutor(ThreadPoolExecutor):
    """Runs each call in the caller's thread: an executor that never starts a thread."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def without_new_threads() -> None:
    """From now on, run zarr's store and codec work without starting a thread (at interpreter exit).

    Python 3.12.0-3.12.2 refuse to start threads once the interpreter begins to exit, which
    is when an output left open is closed. zarr's local store and codecs run their work
    through ``asyncio.to_thread`` on its loop's default executor, and its codec pipeline
    through a pool, both of which start threads when they need more: this makes the first
    run each call on zarr's loop thread and the second run inline. Slower (one call at a
    time), and only for the moments before the process ends.
    """
    zarr.config.set({"codec_pipeline.max_workers": 1})  # the one write of zarr.config: at exit

    async def swap() -> None:
        asyncio.get_running_loop().set_default_executor(_InlineExecutor(max_workers=1))

    run(swap())


def _buffer(data: bytes) -> Any:
    return default_buffer_prototype().buffer.from_bytes(data)


def _encode(obj: Any) -> bytes:
    return json.dumps(_clean(obj), separators=(",", ":")).encode()


def _clean(obj: Any) -> Any:
    # JSON has no NaN or infinity; statistics never need them, so they become null.
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def repair_hint(store: Store) -> str:
    """What to run after a :class:`CorruptError` in ``store``: the end of its message."""
    return (f"run `ngff-writer repair {describe(store)}` (in Python: "
            f"ngff_writer.repair_output(...)) with no writer running, then write again what it "
            "reports missing")


def _max_document_bytes() -> int:
    try:
        return int(os.environ.get("NGFF_WRITER_MAX_DOCUMENT_BYTES", 16 << 20))
    except ValueError:
        return 16 << 20


#: Largest JSON document ngff-writer reads, in bytes (``NGFF_WRITER_MAX_DOCUMENT_BYTES``).
#: Its own are far smaller (a log segment of 10^5 units is about 3 MB); a larger one is
#: damage or an attack, refused before it takes seconds and gigabytes to parse.
MAX_DOCUMENT_BYTES = _max_document_bytes()


def loads(raw: bytes | str) -> Any:
    """``json.loads`` for a document read from a store: ValueError (as json's own errors)
    for one larger than :data:`MAX_DOCUMENT_BYTES` or nested too deep to parse."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{len(raw)} bytes, more than the {MAX_DOCUMENT_BYTES} a document may hold "
                         "(NGFF_WRITER_MAX_DOCUMENT_BYTES)")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply to read") from None


@contextlib.contextmanager
def field_of(key: str, field: str) -> Iterator[None]:
    """Read ``field`` of the document at ``key`` inside: a value of the wrong type or shape
    (the TypeError, KeyError... that using it raises) is CorruptError naming both."""
    try:
        yield
    except NgffWriterError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise CorruptError(f"{key}: its field {field} is malformed ({type(exc).__name__}: {exc})",
                           key=key) from exc


def _decode(store: Store, key: str, raw: bytes) -> Any:
    try:
        return loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptError(
            f"{key} in {describe(store)} is not readable JSON ({len(raw)} bytes: {exc}); "
            f"{repair_hint(store)}", key=key,
        ) from exc


# ---- single objects ------------------------------------------------------------------------
def get_bytes(store: Store, key: str) -> bytes | None:
    """The bytes at ``key``, or None when there is none."""
    with store_errors(f"reading {key}", store):
        buf = run(store.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def put_bytes(store: Store, key: str, data: bytes) -> None:
    """Write ``data`` at ``key`` (a whole-object write, atomic on LocalStore and object stores)."""
    with store_errors(f"writing {key}", store):
        run(store.set(key, _buffer(data)))


def get_json(store: Store, key: str) -> Any | None:
    """The JSON at ``key``, or None when there is none; :class:`CorruptError` if unreadable.

    A document larger than :data:`MAX_DOCUMENT_BYTES` is refused; in a local directory
    before it is read. (Object stores answer a ranged read of an empty object with an
    error, so there it is read, then refused.)
    """
    refuse_oversized(store, [key])
    raw = get_bytes(store, key)
    return None if raw is None else _decode(store, key, raw)


def refuse_oversized(store: Store, keys: Iterable[str]) -> None:
    """CorruptError for a document at one of ``keys`` larger than :data:`MAX_DOCUMENT_BYTES`.

    Known before reading only in a local directory (its size); elsewhere a document is
    read, then refused by :func:`loads`. Called before zarr reads metadata too (zarr's
    parser would take seconds and gigabytes over a document of hundreds of MB).
    """
    for key in keys:
        size = oversized(store, key)
        if size:
            raise CorruptError(f"{key} in {describe(store)} is not readable JSON ({size} bytes, more than "
                               f"the {MAX_DOCUMENT_BYTES} a document may hold: "
                               f"NGFF_WRITER_MAX_DOCUMENT_BYTES); {repair_hint(store)}", key=key)


def oversized(store: Store, key: str) -> int:
    """The size of the document at ``key`` where it is known to be over the limit, else 0."""
    base = base_store(store)
    if not isinstance(base, LocalStore):
        return 0
    try:
        size = (Path(base.root) / key).stat().st_size
    except OSError:
        return 0
    return size if size > MAX_DOCUMENT_BYTES else 0


def metadata_keys(path: str) -> list[str]:
    """The documents zarr reads to open the node at ``path`` (either zarr format)."""
    return [join(path, name) for name in ("zarr.json", ".zarray", ".zgroup", ".zattrs")]


def put_json(store: Store, key: str, obj: Any) -> None:
    """Write ``obj`` as JSON at ``key``."""
    put_bytes(store, key, _encode(obj))


def get_many(store: Store, keys: Iterable[str], documents: bool = False) -> dict[str, bytes | None]:
    """Read several objects at once (concurrently); a missing key maps to None.

    ``documents``: they are JSON documents, refused (:func:`refuse_oversized`) when too large.
    """
    keys = list(keys)
    if documents:
        refuse_oversized(store, keys)

    async def fetch() -> list[Any]:
        proto = default_buffer_prototype()
        return await asyncio.gather(*(store.get(k, prototype=proto) for k in keys))

    with store_errors(f"reading {len(keys)} objects under {keys[0] if keys else ''}", store):
        bufs = run(fetch()) if keys else []
    return {k: (None if b is None else b.to_bytes()) for k, b in zip(keys, bufs, strict=True)}


def base_store(store: Store) -> Store:
    """The store under any wrappers (the guard, a user's ``WrapperStore``)."""
    while isinstance(store, WrapperStore):
        store = wrapped(store)
    return store



def key_exists(store: Store, key: str) -> bool:
    """True when an object (not a prefix) is stored at ``key``."""
    with store_errors(f"looking for {key}", store):
        return run(store.exists(key))


def atomic_create(store: Store) -> bool:
    """True when :func:`create_if_absent` is atomic on ``store`` (see the module docstring)."""
    base = base_store(store)
    if isinstance(base, (LocalStore, MemoryStore)):
        return True
    if isinstance(base, FsspecStore):
        return "s3" in _protocols(base)
    return type(base).__name__ == "ObjectStore"


def _protocols(store: FsspecStore) -> tuple[str, ...]:
    protocol = store.fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def create_if_absent(store: Store, key: str, data: bytes) -> bytes:
    """Write ``data`` at ``key`` unless an object is there; return what is there afterwards.

    The returned bytes equal ``data`` when this call created the object (or another
    writer created the same bytes) and are the other object otherwise.
    """
    base = base_store(store)
    with store_errors(f"creating {key}", store):
        if isinstance(base, FsspecStore) and "s3" in _protocols(base):
            # zarr's FsspecStore checks, then writes; s3fs offers S3's conditional PUT.
            def put() -> Coroutine[Any, Any, Any]:
                return s3_create(base.fs, f"{base.path.rstrip('/')}/{key}", data)

            guard = _guard_of(store)
            try:
                run(guard.call(put) if guard is not None else put())
            except FileExistsError:
                pass
        else:
            run(store.set_if_not_exists(key, _buffer(data)))
    stored = get_bytes(store, key)
    if stored is None:
        raise StoreError(f"{key} was created in {describe(store)} but cannot be read back")
    return stored


# ---- listings and deletes -----------------------------------------------------------------
def is_temporary(key: str) -> bool:
    """True for a store's temporary file: zarr's LocalStore writes ``<name>.<uuid>.partial``
    and renames it into place, so a writer killed in between leaves one behind."""
    return key.endswith(".partial")


#: This machine, in the names of our temporary files (a hostname may hold dots).
_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
_OURS = re.compile(r"\.ngffw-(\d+)-([0-9a-f]{8})-[0-9a-f]{32}\.partial$")


def temporary_name(name: str) -> str:
    """The name of a temporary file for ``name`` that says which process writes it.

    ``<name>.ngffw-<pid>-<host>-<uuid>.partial``: a temporary file like zarr's (readers
    skip it), whose writer a sweep can tell is gone (see :func:`sweep_temporary`).
    """
    return f"{name}.ngffw-{os.getpid()}-{_HOST}-{uuid.uuid4().hex}.partial"


def process_exists(pid: int) -> bool:
    """True when a process ``pid`` runs on this machine (under any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, under another user
    return True


def _abandoned(path: Path, idle: float, now: float) -> bool:
    """True for a temporary file no writer is writing: its process (of this machine) is
    gone, or it has not changed for ``idle`` seconds (zarr's own, or another machine's)."""
    ours = _OURS.search(path.name)
    if ours and ours[2] == _HOST and not process_exists(int(ours[1])):
        return True
    try:
        return now - path.stat().st_mtime > idle
    except OSError:
        return False  # gone meanwhile


def _libc(name: str, *argtypes: Any) -> Callable[..., int] | None:
    """A call of the C library Python has no binding for (Linux's), or None where it has none."""
    try:
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    if argtypes:
        call.argtypes = list(argtypes)
    found: Callable[..., int] = call
    return found


_SYNCFS = _libc("syncfs")
_SYNC_FILE_RANGE = _libc("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
#: ``SYNC_FILE_RANGE_WRITE``: start writing the dirty pages back, wait for none of them.
_START_WRITE = 2


def start_writeback(fd: int) -> None:
    """Start writing a finished file's data back to disk, without waiting for it.

    The sync before each commit (:func:`sync_to_disk`) waits for everything written
    since the last one; a job's last commit, in its ``close``, waited 40-100 ms for the
    last second of shards (a 1 GiB GPU loop, ``bench_overlap.py``). Started as each
    shard is finished, the writeback runs beside the next ones, and that sync finds
    little left. Only a hint: where it fails or does not exist the commit's sync does
    all the work, and reports any error there.
    """
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _START_WRITE)


def sync_to_disk(store: Store) -> None:
    """Write back to disk everything stored so far in a local store's filesystem.

    A record that says a chunk is stored must never reach the disk before the chunk: after
    a power cut the image would read complete with chunks missing or stale. Syncing the
    filesystem once before each commit (``syncfs``: one call, whatever was written since)
    keeps that order, where an ``fsync`` per file would cost a call per chunk. Object
    stores hold an object once its PUT returns: nothing to do there.
    """
    base = base_store(store)
    if not isinstance(base, LocalStore):
        return
    with store_errors("syncing written data to disk", store):
        if _SYNCFS is None:
            os.sync()
            return
        fd = os.open(base.root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)


def is_link(store: Store, key: str) -> bool:
    """True when ``key`` of a local store is a symbolic link (never for other stores)."""
    base = base_store(store)
    return isinstance(base, LocalStore) and bool(key) and (Path(base.root) / key).is_symlink()


def links_under(store: Store, prefix: str) -> list[str]:
    """Symbolic links at or under ``prefix`` of a local store (keys), on the way from the
    root included; none for other stores.

    ngff-writer never goes through one: a linked folder where it keeps bookkeeping could
    take its deletes, its listings and its writes to a user's files outside the output. A
    link is damage, reported (:func:`refuse_links`), never followed.
    """
    base = base_store(store)
    if not isinstance(base, LocalStore):
        return []
    root = Path(base.root)
    at = root
    for part in [p for p in prefix.split("/") if p]:
        at = at / part
        if at.is_symlink():
            return [at.relative_to(root).as_posix()]
    found = []
    for folder, dirs, files in os.walk(at, followlinks=False):
        found += [Path(folder, name).relative_to(root).as_posix()
                  for name in (*dirs, *files) if Path(folder, name).is_symlink()]
    return sorted(found)


def refuse_links(store: Store, prefix: str, what: str) -> None:
    """CorruptError naming the first symbolic link at or under ``prefix`` (see :func:`links_under`)."""
    links = links_under(store, prefix)
    if links:
        raise CorruptError(
            f"{what}: {links[0]!r} in {describe(store)} is a symbolic link; ngff-writer never follows "
            "links in an output (they may lead out of it). Replace it by what it links to, or remove "
            "it, and run again", key=links[0])


def sweep_temporary(store: Store, prefix: str, idle: float | None = None) -> int:
    """Delete the temporary files (see :func:`is_temporary`) under ``prefix``; return how many.

    Only local directories have them (object stores write whole objects), so this walks
    the directory itself: zarr's own listing of a large image takes seconds.

    ``idle``: delete only those no writer may still be writing (its process is gone, or
    the file has not changed for ``idle`` seconds): a writer that stores again a unit of
    a complete image keeps its file. None: every one (no writer runs, as repair checks).
    """
    base = base_store(store)
    if not isinstance(base, LocalStore):
        return 0
    gone, now = 0, time.time()
    refuse_links(store, prefix, f"sweeping temporary files under {prefix or '/'}")
    with store_errors(f"sweeping temporary files under {prefix or '/'}", store):
        for folder, _, files in os.walk(Path(base.root) / prefix):
            for name in files:
                path = Path(folder, name)
                if is_temporary(name) and (idle is None or _abandoned(path, idle, now)):
                    path.unlink(missing_ok=True)
                    gone += 1
    return gone



def list_dir(store: Store, prefix: str) -> list[str]:
    """Names directly under ``prefix`` (files and sub-prefixes)."""

    async def collect() -> list[str]:
        return [name async for name in store.list_dir(prefix)]

    with store_errors(f"listing {prefix or '/'}", store):
        return run(collect())


def list_prefix(store: Store, prefix: str) -> list[str]:
    """Every key under ``prefix`` (recursively; a fresh listing, see the module docstring)."""

    async def collect() -> list[str]:
        return [key async for key in store.list_prefix(prefix)]

    with store_errors(f"listing {prefix or '/'}", store):
        return run(collect())


def is_empty(store: Store) -> bool:
    """True when the store holds no key at all."""

    async def first() -> bool:
        async for _ in store.list_dir(""):
            return False
        return True

    with store_errors("listing the store", store):
        return run(first())


def delete_keys(store: Store, keys: Iterable[str]) -> None:
    """Delete ``keys`` (concurrently); a key already gone is not an error."""
    keys = list(keys)

    async def each() -> None:
        await asyncio.gather(*(store.delete(key) for key in keys))

    if keys:
        with store_errors(f"deleting {len(keys)} objects under {keys[0]}", store):
            run(each())


def delete_tree(store: Store, prefix: str, attempts: int = 8) -> None:
    """Delete every key under ``prefix``, while other writers may delete the same keys.

    A store's recursive delete (``shutil.rmtree`` on LocalStore) fails when another
    process removes a file under it first. Deleting key by key does not (a missing key is
    a no-op), so the recursive delete that follows only removes emptied directories; a
    race there is retried, over what is left.
    """
    refuse_links(store, prefix, f"deleting {prefix or '/'}")
    for attempt in range(attempts):
        try:
            delete_keys(store, list_prefix(store, f"{prefix}/"))
            with store_errors(f"deleting {prefix}", store):
                run(store.delete_dir(prefix))
            return
        except StoreError:
            if attempt + 1 == attempts:
                raise



# ---- groups ---------------------------------------------------------------------------------
def node_attributes(store: Store, path: str) -> tuple[int, dict[str, Any]] | None:
    """Return ``(zarr_format, attributes)`` of the group at ``path``, or None if there is none."""
    prefix = f"{path}/" if path else ""
    meta = get_json(store, f"{prefix}zarr.json")
    if meta is not None:
        if not isinstance(meta, dict) or meta.get("node_type") != "group":
            return None
        attributes = meta.get("attributes", {})
        if not isinstance(attributes, dict):
            raise CorruptError(f"{prefix}zarr.json in {describe(store)} has attributes that are not "
                               "an object", key=f"{prefix}zarr.json")
        return 3, attributes
    if get_json(store, f"{prefix}.zgroup") is not None:
        attributes = get_json(store, f"{prefix}.zattrs") or {}
        if not isinstance(attributes, dict):
            raise CorruptError(f"{prefix}.zattrs in {describe(store)} is not an object",
                               key=f"{prefix}.zattrs")
        return 2, attributes
    return None


def group_document(zarr_format: int, attributes: dict[str, Any]) -> tuple[str, bytes]:
    """The attributes document of a group: its name and bytes (``zarr.json`` or ``.zattrs``)."""
    if zarr_format == 3:
        return "zarr.json", _encode({"zarr_format": 3, "node_type": "group", "attributes": attributes})
    return ".zattrs", _encode(attributes)


def write_group(store: Store, path: str, zarr_format: int, attributes: dict[str, Any]) -> None:
    """Write group metadata with ``attributes`` at ``path``, replacing what was there.

    Hand-written rather than ``zarr.open_group(...).attrs.put``: that would read the
    existing node first. For format 2 the attributes go first, so a group that exists
    always has them.
    """
    prefix = f"{path}/" if path else ""
    name, data = group_document(zarr_format, attributes)
    put_bytes(store, f"{prefix}{name}", data)
    if zarr_format == 2:
        put_json(store, f"{prefix}.zgroup", {"zarr_format": 2})


def open_array(store: Store, path: str, mode: Literal["r", "r+"]) -> zarr.Array[Any]:
    """Open an array for ngff-writer's writes, with zarr's fused codec pipeline where zarr's default is set.

    The fused pipeline encodes whole chunks 1.3-2.5x faster than zarr's default on these
    machines (``benchmarks/``), and writes whole shards in one pass. It is chosen for
    this array only: ``zarr.config`` is never written, and a pipeline the user chose there
    (zarrs, say) is kept.
    """
    refuse_oversized(store, metadata_keys(path))
    with store_errors(f"opening the array {path}", store):
        array = zarr.open_array(store, path=path, mode=mode)
    use_fused_pipeline(array.async_array)
    return array


class ReadOnlyArray(zarr.Array):  # type: ignore[type-arg]
    """A zarr array whose every write raises :class:`ReadOnlyError`: an image's data, handed to users.

    A write straight into the array would store data the image's log never hears of:
    the image would never complete, and pyramid levels and contrast windows would miss
    it. zarr has no read-only view of an array on a writable store, so the writing
    methods are refused here, pointing at the tracked ones.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ReadOnlyError(
            f"the array {self.path!r} is read-only: writes go through the image, which tracks them "
            "(image.write_sample(index, data), write_block(data, start), write_region or write_tile)"
        )

    __setitem__ = _refuse
    set_basic_selection = _refuse
    set_orthogonal_selection = _refuse
    set_mask_selection = _refuse
    set_coordinate_selection = _refuse
    set_block_selection = _refuse
    resize = _refuse
    append = _refuse
    update_attributes = _refuse


def read_only_array(store: Store, path: str) -> ReadOnlyArray:
    """Open the array at ``path`` for reading only (see :class:`ReadOnlyArray`)."""
    refuse_oversized(store, metadata_keys(path))
    with store_errors(f"opening the array {path}", store):
        array = zarr.open_array(store, path=path, mode="r")
    return ReadOnlyArray(array.async_array)
