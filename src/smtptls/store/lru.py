"""A bounded in-memory LRU, and :class:`CachedStore` putting it in front of a backend.

The hot path (one lookup per outgoing message) reads memory first; a miss reads the
backend and remembers the answer. Writes go to the backend first, then to memory, so
memory never holds what the backend refused. Size is bounded (``lru_size``); the least
recently used entry is evicted first. With a shared backend (Redis, PostgreSQL) another
instance's update is seen once this instance's entry is evicted or rewritten; that is
safe because any cached policy stays applicable until its own expiry (RFC 8461 §5.1),
and a changed TXT ``id`` makes this instance refetch (§3.3).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Generic, TypeVar

from smtptls.errors import StoreError
from smtptls.store.base import PolicyCache, cache_key

if TYPE_CHECKING:
    from smtptls.mtasts.cache_logic import CachedPolicy

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """A size-bounded least-recently-used mapping (not thread-safe; one event loop)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise StoreError("LRU size must not be negative")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        try:
            value = self._data[key]
        except KeyError:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: K, value: V) -> None:
        if self.maxsize == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list[K]:
        """Keys, least recently used first."""
        return list(self._data)


class CachedStore:
    """A :class:`~smtptls.store.base.PolicyCache` with an LRU in front of ``backend``."""

    def __init__(self, backend: PolicyCache, lru_size: int = 10000) -> None:
        self.backend = backend
        self.lru: LruCache[str, CachedPolicy] = LruCache(lru_size)

    async def get(self, domain: str) -> CachedPolicy | None:
        key = cache_key(domain)
        hit = self.lru.get(key)
        if hit is not None:
            return hit
        cached = await self.backend.get(key)
        if cached is not None:
            self.lru.put(key, cached)
        return cached

    async def put(self, domain: str, cached: CachedPolicy) -> None:
        key = cache_key(domain)
        try:
            await self.backend.put(key, cached)
        except BaseException:
            self.lru.pop(key)  # never serve from memory what the backend may not hold
            raise
        self.lru.put(key, cached)

    async def delete(self, domain: str) -> bool:
        key = cache_key(domain)
        self.lru.pop(key)
        return await self.backend.delete(key)

    async def list_domains(self) -> list[str]:
        return await self.backend.list_domains()

    async def iter_all(self) -> AsyncIterator[tuple[str, CachedPolicy]]:
        async for item in self.backend.iter_all():
            yield item

    async def close(self) -> None:
        self.lru.clear()
        await self.backend.close()


class MemoryPolicyCache:
    """A :class:`~smtptls.store.base.PolicyCache` in memory only (bounded, LRU order).

    For one-shot commands (``smtptls mta-sts --no-cache``) and tests; nothing survives
    the process.
    """

    def __init__(self, maxsize: int = 10000) -> None:
        self._lru: LruCache[str, CachedPolicy] = LruCache(maxsize)

    async def get(self, domain: str) -> CachedPolicy | None:
        return self._lru.get(cache_key(domain))

    async def put(self, domain: str, cached: CachedPolicy) -> None:
        self._lru.put(cache_key(domain), cached)

    async def delete(self, domain: str) -> bool:
        return self._lru.pop(cache_key(domain)) is not None

    async def list_domains(self) -> list[str]:
        return sorted(self._lru.keys())

    async def iter_all(self) -> AsyncIterator[tuple[str, CachedPolicy]]:
        for key in sorted(self._lru.keys()):
            value = self._lru.get(key)
            if value is not None:
                yield key, value

    async def close(self) -> None:
        self._lru.clear()
