"""Open the configured store: the one place that knows every backend.

The base modules (:mod:`~smtptls.store.base`, :mod:`~smtptls.store.reports_base`,
:mod:`~smtptls.store.results_base`) define the interfaces and the pure helpers and
import no backend; the backends import their base. These factories sit above both, so
imports in ``store/`` point one way. PostgreSQL and Redis are optional extras
(:func:`~smtptls.store.extras.import_backend` names the extra when one is missing).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smtptls.config import CacheConfig, ReportsConfig, TlsrptConfig
from smtptls.errors import ConfigError, StoreError
from smtptls.store.extras import import_backend

if TYPE_CHECKING:  # a policy daemon opening its cache loads neither report module,
    # and a command opening a report store none of the policy cache's
    from smtptls.store.base import JsonBackend
    from smtptls.store.lru import CachedStore
    from smtptls.store.reports_base import ReportStore
    from smtptls.store.results_base import ResultStore

__all__ = ["open_policy_backend", "open_policy_cache", "open_report_store", "open_result_store"]


async def open_policy_backend(config: CacheConfig) -> JsonBackend:
    """Open the configured policy cache backend alone (no LRU)."""
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
    from smtptls.store.lru import CachedStore  # see the imports above

    config = config or CacheConfig()
    backend = await open_policy_backend(config)
    return CachedStore(backend, config.lru_size)


def open_report_store(config: ReportsConfig, **overrides: Any) -> ReportStore:
    """A (not yet opened) report store for ``config.backend``; ``await store.open()`` next."""
    from smtptls.store.reports_base import StoreLimits

    if config.backend == "sqlite":
        from smtptls.store.reports_sqlite import SqliteReportStore

        return SqliteReportStore(overrides.get("path", config.sqlite_path),
                                 limits=StoreLimits.from_config(config))
    if config.backend == "postgres":
        postgres = import_backend("smtptls.store.reports_postgres", key="reports.backend")
        return postgres.PostgresReportStore(overrides.get("dsn", config.postgres_dsn),
                                            schema=overrides.get("schema"),
                                            limits=StoreLimits.from_config(config))
    raise StoreError(f"unknown report store backend {config.backend!r}")


def open_result_store(config: TlsrptConfig, **overrides: Any) -> ResultStore:
    """A (not yet opened) result store for ``config.backend``; ``await store.open()`` next."""
    if config.backend == "sqlite":
        from smtptls.store.results_sqlite import SqliteResultStore

        return SqliteResultStore(overrides.get("path", config.sqlite_path))
    if config.backend == "postgres":
        postgres = import_backend("smtptls.store.results_postgres", key="tlsrpt.backend")
        return postgres.PostgresResultStore(
            overrides.get("dsn", config.postgres_dsn),
            schema=overrides.get("schema", config.postgres_schema))
    raise ConfigError("must be sqlite or postgres", key="tlsrpt.backend")
