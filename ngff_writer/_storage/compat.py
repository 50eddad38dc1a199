"""Every private name ngff-writer takes from zarr-python, s3fs or fsspec: the one place to look.

zarr-python 3 keeps a few things a writer needs out of its public API (its event loop, a
wrapper's wrapped store, its codec pipelines and how an array gets one), and s3fs offers S3's
conditional PUT only through fsspec's private coroutine. Each name below says why it is
needed and what it would take to do without it. When zarr, s3fs or fsspec change, this is
the module to fix; ``tests/test_compat.py`` fails when a private name appears in another
module.

Not here, on purpose: the protected hooks of :class:`zarr.abc.store.Store` that a store
*implements* (``_set_many``, ``_get_many``, ``_with_store``, ``_supports_sync_io``, and
``self._ensure_open()`` / ``self._check_writable()`` called from inside a store's own
methods). They are zarr's extension interface for store authors, and
``tests/test_store_conformance.py`` runs zarr's own store suite over every store
ngff-writer ships, which fails when they change.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from zarr import AsyncArray
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.core.array import _get_chunk_spec
from zarr.core.codec_pipeline import BatchedCodecPipeline, FusedCodecPipeline
from zarr.core.sync import sync as _sync
from zarr.storage import LocalStore, WrapperStore

__all__ = [
    "DEFAULT_PIPELINE", "FUSED_PIPELINE", "ZARR_PIPELINES", "ensure_open_sync", "is_zarr_pipeline",
    "s3_create", "use_fused_pipeline", "wrapped", "zarr_sync",
]


def zarr_sync[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on zarr's own event loop (in zarr's thread) and return its result.

    zarr has no public way to do this, and it must be that loop, not a new one: an
    fsspec store's async client (s3fs's aiohttp session) is bound to the loop zarr first
    used it on, and zarr's arrays make every store call on that loop.
    """
    return _sync(coro)


# ---- stores ---------------------------------------------------------------------------------
def wrapped(store: WrapperStore[Store]) -> Store:
    """The store a :class:`~zarr.storage.WrapperStore` wraps.

    zarr documents it as the ``._store`` attribute and has no public accessor; ngff-writer
    needs it to find what is under a wrapper (the guard, a user's own wrapper) and for the
    guard to call the store it guards.
    """
    return store._store


def ensure_open_sync(store: LocalStore) -> None:
    """Open ``store`` if it is not yet, as :class:`~zarr.storage.LocalStore`'s own sync methods do.

    ``LocalStore`` opens itself lazily (checking or creating its root directory) through
    this private method on its first synchronous call. A subclass that replaces
    ``set_sync`` (:class:`~ngff_writer._storage.localstore.DirectLocalStore`) must do the same; the
    public alternative, ``await store._open()``, needs an event loop and raises on a store
    that is already open.
    """
    store._ensure_open_sync()


def s3_create(fs: Any, path: str, data: bytes) -> Coroutine[Any, Any, Any]:
    """A coroutine writing ``data`` at ``path`` only if no object is there (S3's ``If-None-Match: *``).

    s3fs sends the conditional PUT for ``mode="create"``, and raises ``FileExistsError``
    when an object is there. fsspec names its async methods with a leading underscore
    (``_pipe_file`` is the coroutine behind ``pipe_file``); the coroutine is needed because
    the call runs on zarr's loop, under the guard's timeout. zarr's own
    ``FsspecStore.set_if_not_exists`` checks, then writes, which is not atomic.
    """
    coroutine: Coroutine[Any, Any, Any] = fs._pipe_file(path, data, mode="create")
    return coroutine


# ---- codec pipelines ----------------------------------------------------------------------------
# zarr's two codec pipelines live in a private module, and zarr selects one by the dotted
# path of its class (the ``codec_pipeline.path`` setting), read once per array object.
# ngff-writer leaves chunk encoding to a pipeline it does not know (encode.ChunkWriter,
# a user's zarrs, say), and swaps zarr's default for the fused one on the arrays it
# writes (2-3x less Python per chunk on these machines, ``benchmarks/``), which zarr
# offers no per-array way to choose.
DEFAULT_PIPELINE = "zarr.core.codec_pipeline.BatchedCodecPipeline"
FUSED_PIPELINE = "zarr.core.codec_pipeline.FusedCodecPipeline"
ZARR_PIPELINES = (DEFAULT_PIPELINE, FUSED_PIPELINE)


def is_zarr_pipeline(pipeline: object) -> bool:
    """True when ``pipeline`` (an array's ``codec_pipeline``) is one of zarr's own."""
    return type(pipeline) in (BatchedCodecPipeline, FusedCodecPipeline)


def use_fused_pipeline(array: AsyncArray[Any]) -> bool:
    """Give ``array`` zarr's fused codec pipeline in place of zarr's default one.

    Returns False, changing nothing, when the array has another pipeline (one the user
    configured) or no chunk at all. The fused pipeline is built from the array's codecs
    and the spec of its first chunk, as zarr builds a pipeline when it makes the array
    object (``_get_chunk_spec`` over the private ``_chunk_grid``), and set on the frozen
    array object as zarr itself sets its fields.
    """
    if type(array.codec_pipeline) is not BatchedCodecPipeline or array.size == 0:
        return False
    spec = _get_chunk_spec(array.metadata, array._chunk_grid, (0,) * array.ndim, array.config,
                           default_buffer_prototype())
    fused = FusedCodecPipeline.from_codecs(tuple(array.codec_pipeline)).evolve_from_array_spec(spec)
    object.__setattr__(array, "codec_pipeline", fused)
    return True
