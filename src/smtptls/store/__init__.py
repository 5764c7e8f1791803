"""Storage: small async interfaces with SQLite (default), PostgreSQL and Redis backends.

:func:`open_policy_cache` (from :mod:`smtptls.store.open`, where every store is
opened) builds the MTA-STS policy cache a :class:`CacheConfig` asks
for, with the in-memory LRU in front::

    cache = await open_policy_cache(config.cache)
    cached = await cache.get("example.com")
    ...
    await cache.close()
"""

from __future__ import annotations

from smtptls.store.base import JsonBackend, PolicyCache, cache_key
from smtptls.store.lru import CachedStore, LruCache, MemoryPolicyCache
from smtptls.store.open import open_policy_backend, open_policy_cache

__all__ = [
    "CachedStore",
    "JsonBackend",
    "LruCache",
    "MemoryPolicyCache",
    "PolicyCache",
    "cache_key",
    "open_policy_backend",
    "open_policy_cache",
]

