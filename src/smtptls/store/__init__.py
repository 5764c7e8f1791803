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

from smtptls.lazy import lazy_exports

# Loaded on first use: opening the report store (``smtptls.store.open``) needs none of
# the policy cache's modules.
_LAZY = {
    "JsonBackend": "base",
    "PolicyCache": "base",
    "cache_key": "base",
    "CachedStore": "lru",
    "LruCache": "lru",
    "MemoryPolicyCache": "lru",
    "open_policy_backend": "open",
    "open_policy_cache": "open",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
