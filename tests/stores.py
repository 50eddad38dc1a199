"""A real LocalStore that counts reads of chunk data, whichever way zarr asks for them."""

from __future__ import annotations

from typing import ClassVar

from zarr.storage import WrapperStore

_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup")


class CountingStore(WrapperStore):
    """Counts chunk data read back from any level (``<image>/<level>/...``), not metadata or ledger.

    zarr reads through several store methods (the fused codec pipeline uses ``get_sync``,
    sharded reads ``get_ranges`` or ``get_partial_values``), so every one is counted.
    ``reads`` counts the reads that returned data; ``asks`` also counts lookups of keys
    that do not exist (zarr asks for an edge shard that reaches more than one chunk past
    the array before writing it, and on a first write finds nothing). Counts are kept on
    the class because zarr may re-wrap the store.
    """

    reads: int = 0
    asks: int = 0

    @classmethod
    def reset(cls) -> None:
        cls.reads = cls.asks = 0

    @staticmethod
    def is_chunk(key: str) -> bool:
        parts = key.split("/")
        return ("ngff_writer" not in parts and not key.endswith(_METADATA)
                and any(p.isdigit() for p in parts[:2]))

    def _count(self, key: str, found: bool) -> None:
        if self.is_chunk(key):
            type(self).asks += 1
            type(self).reads += found

    async def get(self, key, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        self._count(key, buf is not None)
        return buf

    def get_sync(self, key, *, prototype=None, byte_range=None):
        buf = super().get_sync(key, prototype=prototype, byte_range=byte_range)
        self._count(key, buf is not None)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        bufs = await self._store.get_partial_values(prototype, key_ranges)
        for (key, _), buf in zip(key_ranges, bufs, strict=True):
            self._count(key, buf is not None)
        return bufs

    async def get_ranges(self, key, byte_ranges, **kwargs):
        found = False
        async for group in super().get_ranges(key, byte_ranges, **kwargs):
            found = found or any(buf is not None for _, buf in group)
            yield group
        self._count(key, found)

    async def _get_many(self, requests):
        async for key, buf in super()._get_many(requests):
            self._count(key, buf is not None)
            yield key, buf


class FaultyStore(WrapperStore):
    """A real store whose writes fail on demand, whichever way zarr or ngff-writer writes.

    ``FaultyStore.fail(match, error, times)`` makes the next ``times`` writes (every one
    when None) of keys containing ``match`` raise ``error``; ``heal()`` stops it. Rules are
    kept on the class because zarr may re-wrap the store. ``failed`` counts the refusals.
    """

    rules: ClassVar[list[list]] = []  # [match, error, times left or None]
    failed: int = 0

    @classmethod
    def fail(cls, match: str, error: BaseException, times: int | None = None) -> None:
        cls.rules.append([match, error, times])

    @classmethod
    def heal(cls) -> None:
        cls.rules = []
        cls.failed = 0

    def _check(self, key: str) -> None:
        for rule in type(self).rules:
            match, error, times = rule
            if match in key and (times is None or times > 0):
                if times is not None:
                    rule[2] = times - 1
                type(self).failed += 1
                raise error

    async def set(self, key, value):
        self._check(key)
        return await self._store.set(key, value)

    async def set_if_not_exists(self, key, value):
        self._check(key)
        return await self._store.set_if_not_exists(key, value)

    def set_sync(self, key, value):
        self._check(key)
        return super().set_sync(key, value)

    async def _set_many(self, values):
        values = list(values)
        for key, _ in values:
            self._check(key)
        return await super()._set_many(values)
