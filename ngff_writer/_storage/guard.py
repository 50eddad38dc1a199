"""Bounded waits for remote stores: a timeout on every call, retries of what is transient.

An S3 endpoint that stops answering (a paused or overloaded server, a dropped network)
makes an s3fs write wait for as long as the outage lasts, whatever botocore's read and
connect timeouts say; one that is gone surfaces after seconds as an error that is no
``OSError``. :class:`GuardedStore` wraps a remote store so that every call made through it
- ngff-writer's own objects and zarr's chunk reads and writes alike - either finishes
within ``timeout`` seconds or is cancelled, and a timeout or a lost connection is retried
``retries`` times with a growing pause (0.5 s, 1 s, 2 s, ... at most 8 s) before the
failure is raised. ngff-writer turns it into a :class:`~ngff_writer.errors.StoreError`
naming what failed; nothing that was not stored is recorded, so writing again after the
outage resumes (tested against moto's server paused with SIGSTOP and killed).

Every call is idempotent for ngff-writer (each object it writes has one content, a chunk is
always written whole), so a retry after a timeout whose write did land changes nothing.
Local directories and memory stores are not wrapped: they cannot lose a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from zarr.abc.buffer import Buffer
from zarr.abc.store import ByteRequest, Store
from zarr.storage import WrapperStore

from .compat import wrapped

__all__ = ["GuardedStore", "transient"]

T = TypeVar("T")

#: Names of exception classes (anywhere in an error's class hierarchy) that mean "the
#: connection failed, try again": botocore's and aiohttp's, whose packages this module
#: does not import (they are optional).
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectionError", "ClientConnectorError", "ServerDisconnectedError", "ClientOSError",
    "ServerTimeoutError",
})
_MAX_PAUSE = 8.0


def transient(exc: BaseException) -> bool:
    """True for failures worth retrying: timeouts and lost connections."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


class GuardedStore(WrapperStore[Store]):
    """A store whose every call is bounded in time and retried when the failure is transient.

    Parameters
    ----------
    store
        The remote store (fsspec, obstore, ...).
    timeout
        Seconds one call may take (a list: between two names).
    retries
        Further attempts after a timeout or a lost connection.
    """

    def __init__(self, store: Store, timeout: float = 60.0, retries: int = 3) -> None:
        super().__init__(store)
        self.timeout = timeout
        self.retries = retries

    @property
    def inner(self) -> Store:
        """The store this one guards."""
        return wrapped(self)

    def _with_store(self, store: Store) -> GuardedStore:
        return type(self)(store, self.timeout, self.retries)

    def __eq__(self, other: object) -> bool:
        return (super().__eq__(other) and isinstance(other, GuardedStore)
                and (self.timeout, self.retries) == (other.timeout, other.retries))

    def __repr__(self) -> str:
        return f"GuardedStore({self.inner!r}, timeout={self.timeout}, retries={self.retries})"

    def __str__(self) -> str:
        return str(self.inner)

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` within the timeout, retrying transient failures."""
        pause = 0.5
        for attempt in range(self.retries + 1):
            try:
                return await asyncio.wait_for(make(), self.timeout)
            except Exception as exc:
                if not transient(exc) or attempt == self.retries:
                    if isinstance(exc, TimeoutError) and not str(exc):
                        raise TimeoutError(f"no answer within {self.timeout} s, "
                                           f"{self.retries + 1} attempts") from exc
                    raise
            await asyncio.sleep(pause)
            pause = min(2 * pause, _MAX_PAUSE)
        raise AssertionError("unreachable")

    async def _listing(self, make: Callable[[], AsyncIterator[str]]) -> AsyncIterator[str]:
        # A listing is retried whole (collected first): resuming one half-way is not possible.
        async def collect() -> list[str]:
            return [name async for name in make()]

        for name in await self.call(collect):
            yield name

    # ---- what is guarded: every call that reaches the network -------------------------
    @property
    def _supports_sync_io(self) -> bool:
        return False  # zarr's synchronous paths would bypass the guard

    async def get(self, key: str, prototype: Any, byte_range: ByteRequest | None = None) -> Any:
        return await self.call(lambda: self.inner.get(key, prototype, byte_range))

    async def get_partial_values(self, prototype: Any,
                                 key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> Any:
        key_ranges = list(key_ranges)
        return await self.call(lambda: self.inner.get_partial_values(prototype, key_ranges))

    async def get_ranges(self, key: str, byte_ranges: Any, *, prototype: Any, **kwargs: Any
                         ) -> AsyncIterator[Any]:
        options = {k: v for k, v in kwargs.items() if v is not None}

        async def collect() -> list[Any]:
            return [group async for group in self.inner.get_ranges(key, byte_ranges, prototype=prototype,
                                                                     **options)]

        for group in await self.call(collect):
            yield group

    async def exists(self, key: str) -> bool:
        return await self.call(lambda: self.inner.exists(key))

    async def set(self, key: str, value: Any) -> None:
        await self.call(lambda: self.inner.set(key, value))

    async def set_if_not_exists(self, key: str, value: Any) -> None:
        await self.call(lambda: self.inner.set_if_not_exists(key, value))

    async def _set_many(self, values: Iterable[tuple[str, Any]]) -> None:
        await asyncio.gather(*(self.set(key, value) for key, value in values))

    async def delete(self, key: str) -> None:
        await self.call(lambda: self.inner.delete(key))

    async def delete_dir(self, prefix: str) -> None:
        await self.call(lambda: self.inner.delete_dir(prefix))

    async def is_empty(self, prefix: str) -> bool:
        return await self.call(lambda: self.inner.is_empty(prefix))

    async def clear(self) -> None:
        await self.call(self.inner.clear)

    async def getsize(self, key: str) -> int:
        # The wrapped store's own (a HEAD request on object stores), not Store's default,
        # which reads the whole value.
        return await self.call(lambda: self.inner.getsize(key))

    def list(self) -> AsyncIterator[str]:
        return self._listing(self.inner.list)

    def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(lambda: self.inner.list_prefix(prefix))

    def list_dir(self, prefix: str) -> AsyncIterator[str]:
        return self._listing(lambda: self.inner.list_dir(prefix))

    async def _get_many(self, requests: Iterable[tuple[str, Any, ByteRequest | None]]
                        ) -> AsyncGenerator[tuple[str, Buffer | None]]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)
