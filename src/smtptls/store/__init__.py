"""Storage: small async interfaces with SQLite (default), PostgreSQL and Redis backends.

:func:`open_policy_cache` builds the MTA-STS policy cache a :class:`CacheConfig` asks
for, with the in-memory LRU in front::

    cache = await open_policy_cache(config.cache)
    cached = await cache.get("example.com")
    ...
    await cache.close()
"""

from __future__ import annotations

from smtptls.config import CacheConfig
from smtptls.errors import ConfigError
from smtptls.store.base import JsonBackend, PolicyCache, cache_key
from smtptls.store.extras import import_backend
from smtptls.store.lru import CachedStore, LruCache, MemoryPolicyCache

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


async def open_policy_backend(config: CacheConfig) -> JsonBackend:
    """Open the configured backend alone (no LRU)."""
    if config.backend == "sqlite":
        from smtptls.store.sqlite import SqlitePolicyCache

        return await SqlitePolicyCache.open(config.sqlite_path)
    if config.backend == "postgres":
        postgres = import_backend("smtptls.store.postgres", key="cache.backend")
        return await postgres.PostgresPolicyCache.open(config.postgres_dsn)
    if config.backend == "redis":
        redis = import_backend("smtptls.store.redis", key="cache.backend")
        return await redis.RedisPolicyCache.open(config.redis_url)
    raise ConfigError("must be one of sqlite, postgres, redis", key="cache.backend")


async def open_policy_cache(config: CacheConfig | None = None) -> CachedStore:
    """Open the configured policy cache with an LRU of ``config.lru_size`` in front."""
    config = config or CacheConfig()
    backend = await open_policy_backend(config)
    return CachedStore(backend, config.lru_size)
