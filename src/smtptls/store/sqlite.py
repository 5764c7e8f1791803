"""SQLite policy cache: the embedded, zero-configuration default.

One file (``CacheConfig.sqlite_path``, parent directories created), WAL journal so
readers never block the writer, and all SQLite calls on one dedicated thread so the
event loop never blocks and the connection is only ever used from that thread.
Survives restarts: a policy fetched before a restart is used after it (RFC 8461 §5.1).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from smtptls.errors import StoreError
from smtptls.store.base import JsonBackend

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mtasts_policy (
    domain     TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at REAL
)
"""


class SqlitePolicyCache(JsonBackend):
    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smtptls-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(cls, path: str | Path) -> SqlitePolicyCache:
        store = cls(path)
        try:
            await store._run(store._connect)
        except BaseException:
            store._executor.shutdown(wait=False)
            raise
        return store

    def _connect(self) -> None:
        try:
            if str(self.path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open SQLite cache {self.path}: {exc}") from exc
        self._conn = conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError("SQLite cache is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._connect()
        assert self._conn is not None
        return self._conn

    async def _get_raw(self, key: str) -> str | None:
        def q() -> str | None:
            row = self._db().execute(
                "SELECT value FROM mtasts_policy WHERE domain = ?", (key,)).fetchone()
            return None if row is None else str(row[0])
        return await self._run(q)

    async def _put_raw(self, key: str, value: str, expires_at: float | None) -> None:
        def q() -> None:
            self._db().execute(
                "INSERT INTO mtasts_policy (domain, value, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT(domain) DO UPDATE SET value = excluded.value, "
                "expires_at = excluded.expires_at",
                (key, value, expires_at),
            )
        await self._run(q)

    async def _delete_raw(self, key: str) -> bool:
        def q() -> bool:
            cur = self._db().execute("DELETE FROM mtasts_policy WHERE domain = ?", (key,))
            return cur.rowcount > 0
        return await self._run(q)

    async def _keys_after(self, after: str, limit: int) -> list[str]:
        def q() -> list[str]:
            rows = self._db().execute(
                "SELECT domain FROM mtasts_policy WHERE domain > ? ORDER BY domain LIMIT ?",
                (after, limit)).fetchall()
            return [str(r[0]) for r in rows]
        return await self._run(q)

    async def _close(self) -> None:
        if self._closed:
            return

        def q() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        try:
            await self._run(q)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)
