"""What the PostgreSQL stores share: a connection pool, schema creation, guarded reads.

A subclass names itself (``what``, used in error messages), picks an advisory
``lock_key`` that serializes schema creation between processes, gives its DDL
(``_ddl``) and, when its shared SQL needs more than ``?`` → ``%s``, its own ``_sql``.
``schema`` puts the tables in their own schema (created if missing), which is also how
the tests isolate one run from another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from smtptls.errors import StoreError

__all__ = ["PgPoolStore"]


class PgPoolStore:
    what = "store"
    lock_key = 846_000

    def __init__(self, dsn: str, *, schema: str | None = None, min_size: int = 1,
                 max_size: int = 4, timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool: AsyncConnectionPool | None = None

    def _ddl(self) -> str:
        raise NotImplementedError

    @staticmethod
    def _sql(text: str) -> str:
        # The shared SQL uses "?" placeholders; psycopg uses "%s".
        return text.replace("?", "%s")

    async def _configure(self, conn: psycopg.AsyncConnection) -> None:
        if self.schema:
            await conn.execute(sql.SQL("SET search_path TO {}").format(
                sql.Identifier(self.schema)))
        await conn.commit()

    async def open(self) -> None:
        if self._pool is not None:
            return
        pool = AsyncConnectionPool(
            self.dsn, min_size=self.min_size, max_size=self.max_size, timeout=self.timeout,
            configure=self._configure, open=False,
            kwargs={"connect_timeout": max(1, int(self.timeout))},
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            raise StoreError(f"cannot connect to PostgreSQL {self.what}: {exc}") from exc
        self._pool = pool
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self.lock_key,))
                if self.schema:
                    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self.schema)))
                    await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(
                        sql.Identifier(self.schema)))
                for statement in self._ddl().split(";"):
                    if statement.strip():
                        await conn.execute(statement)
        except (PoolTimeout, psycopg.Error) as exc:
            await self.close()
            raise StoreError(f"cannot create the {self.what} schema: {exc}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StoreError(f"{self.what} is not open")
        return self._pool

    async def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests and benchmarks)."""
        if not self.schema:
            raise StoreError("refusing to drop the tables of the default schema")
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                    sql.Identifier(self.schema)))
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL {self.what}: {exc}") from exc

    async def _read(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        pool = self._require()
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(self._sql(text), tuple(params))
                return list(await cur.fetchall())
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL {self.what}: {exc}") from exc
