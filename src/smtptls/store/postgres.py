"""PostgreSQL policy cache: one table shared by many policyd instances.

psycopg 3 (async) with an :class:`psycopg_pool.AsyncConnectionPool`. The table is
created if missing; writes are UPSERTs, so concurrent instances converge on the last
write. The table name is configurable (tests use a unique one per run).
"""

from __future__ import annotations

import re

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from smtptls.errors import StoreError
from smtptls.store.base import JsonBackend

DEFAULT_TABLE = "smtptls_mtasts_policy"
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresPolicyCache(JsonBackend):
    name = "postgres"

    def __init__(self, pool: AsyncConnectionPool, table: str) -> None:
        self._pool = pool
        self._table = sql.Identifier(table)
        self.table = table

    @classmethod
    async def open(
        cls, dsn: str, *, table: str = DEFAULT_TABLE, min_size: int = 1, max_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> PostgresPolicyCache:
        if not _IDENT.fullmatch(table):
            raise StoreError(f"invalid table name {table!r}")
        pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False,
                                   timeout=connect_timeout, kwargs={"autocommit": True})
        store = cls(pool, table)
        try:
            await store._guard(pool.open(wait=True, timeout=connect_timeout), "connect")
            await store._guard(store._create(), "create table")
        except BaseException:
            await pool.close()
            raise
        return store

    async def _create(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " domain TEXT PRIMARY KEY,"
                " value JSONB NOT NULL,"
                " expires_at DOUBLE PRECISION,"
                " updated_at TIMESTAMPTZ NOT NULL DEFAULT now())").format(self._table))

    async def _get_raw(self, key: str) -> str | None:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT value::text FROM {} WHERE domain = %s").format(self._table),
                (key,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def _put_raw(self, key: str, value: str, expires_at: float | None) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {} (domain, value, expires_at) VALUES (%s, %s::jsonb, %s) "
                    "ON CONFLICT (domain) DO UPDATE SET value = EXCLUDED.value, "
                    "expires_at = EXCLUDED.expires_at, updated_at = now()"
                ).format(self._table),
                (key, value, expires_at))

    async def _delete_raw(self, key: str) -> bool:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE domain = %s").format(self._table), (key,))
            return cur.rowcount > 0

    async def _keys_after(self, after: str, limit: int) -> list[str]:
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                sql.SQL("SELECT domain FROM {} WHERE domain > %s ORDER BY domain COLLATE \"C\""
                        " LIMIT %s").format(self._table), (after, limit))
            rows = await cur.fetchall()
        return [str(r[0]) for r in rows]

    async def drop(self) -> None:
        """Drop the table (tests and ``uninstall`` only)."""
        async def q() -> None:
            async with self._pool.connection() as conn:
                await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))
        await self._guard(q(), "drop")

    async def _close(self) -> None:
        await self._pool.close()
