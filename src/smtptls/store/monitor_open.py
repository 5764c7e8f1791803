"""Open the monitor store ``monitor.store`` names (SQLite by default, or PostgreSQL).

Beside :mod:`~smtptls.store.open` (the report and result stores), so that a process
that opens the monitor store loads no report module and the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from smtptls import paths
from smtptls.config import MonitorConfig
from smtptls.store.extras import import_backend
from smtptls.store.monitor_base import MonitorStore

__all__ = ["MONITOR_SQLITE", "monitor_store_exists", "monitor_store_location",
           "open_monitor_store"]

#: The SQLite file of the default store, in the state directory (:mod:`smtptls.paths`).
MONITOR_SQLITE = "smtptls-monitor.sqlite3"
_PG_SCHEMES = ("postgresql://", "postgres://")


def monitor_store_location(cfg: MonitorConfig) -> str:
    """The store ``cfg.store`` names; by default the SQLite file beside
    ``monitor.state_path`` (the state directory, unless that path was moved)."""
    if cfg.store:
        return cfg.store
    if cfg.state_path:
        return str(Path(cfg.state_path).with_name(MONITOR_SQLITE))
    return paths.state_file(MONITOR_SQLITE)


def monitor_store_exists(cfg: MonitorConfig) -> bool:
    """Is there a store to read? PostgreSQL always; SQLite once its file exists."""
    where = monitor_store_location(cfg)
    return where.startswith(_PG_SCHEMES) or Path(where).exists()


def open_monitor_store(cfg: MonitorConfig, **overrides: Any) -> MonitorStore:
    """A (not yet opened) monitor store; ``await store.open()`` next."""
    where = monitor_store_location(cfg)
    if where.startswith(_PG_SCHEMES):
        postgres = import_backend("smtptls.store.monitor_postgres", key="monitor.store")
        return postgres.PostgresMonitorStore(where, schema=overrides.get("schema"))
    from smtptls.store.monitor_sqlite import SqliteMonitorStore

    return SqliteMonitorStore(where)
