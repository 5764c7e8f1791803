"""PostgreSQL report store (psycopg 3, async) for production and for several receivers.

Report receivers are stateless behind a load balancer and write to one database; the
``UNIQUE (report_id, organization)`` constraint keeps re-posts idempotent even when two
receivers get the same report at once. ``schema`` puts the tables in their own schema
(created if missing), which is also how the tests isolate one run from another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from smtptls.errors import StoreError
from smtptls.store import reports_sql as q
from smtptls.store.reports_base import AddResult, Intake, ReportRecord

__all__ = ["PostgresReportStore"]

_LOCK_KEY = 846_001  # advisory lock serializing schema creation between receivers


def _pg(text: str) -> str:
    # The shared SQL uses "?" placeholders; psycopg uses "%s".
    return text.replace("?", "%s")


class PostgresReportStore(q.SqlReportStore):
    """``PostgresReportStore("postgresql://postgres@127.0.0.1/test", schema="tlsrpt")``."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 4,
        timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = timeout
        self._pool: AsyncConnectionPool | None = None

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
            raise StoreError(f"cannot connect to PostgreSQL report store: {exc}") from None
        self._pool = pool
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                if self.schema:
                    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self.schema)))
                ddl = q.SCHEMA.format(pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                                      blob="BYTEA")
                for statement in ddl.split(";"):
                    if statement.strip():
                        await conn.execute(statement)
        except (PoolTimeout, psycopg.Error) as exc:
            await self.close()
            raise StoreError(f"cannot create the report store schema: {exc}") from None

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def __aenter__(self) -> PostgresReportStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise StoreError("report store is not open")
        return self._pool

    async def _read(self, text: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        pool = self._require()
        try:
            async with pool.connection() as conn:
                cur = await conn.execute(_pg(text), tuple(params))
                return list(await cur.fetchall())
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL report store: {exc}") from None

    async def add_report(self, record: ReportRecord, intake: Intake) -> AddResult:
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_pg(q.INSERT_REPORT), q.report_params(record, intake))
                row = await cur.fetchone()
                if row is None:
                    # Idempotent on (report-id, organization): a re-post is not a new report.
                    cur = await conn.execute(_pg(q.SELECT_REPORT_PK),
                                             (record.report_id, record.organization))
                    existing = await cur.fetchone()
                    return AddResult(pk=int(existing[0]), created=False)
                report_pk = int(row[0])
                async with conn.cursor() as c:
                    for i, policy in enumerate(record.policies):
                        await c.execute(_pg(q.INSERT_POLICY),
                                        q.policy_params(record, report_pk, i, policy))
                        policy_pk = (await c.fetchone())[0]
                        if policy.failures:
                            await c.executemany(_pg(q.INSERT_FAILURE), [
                                q.failure_params(record, report_pk, policy_pk, policy, j, f)
                                for j, f in enumerate(policy.failures)
                            ])
            # Leaving the transaction block committed it: now the sender may be told.
            return AddResult(pk=report_pk, created=True)
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL report store: {exc}") from None

    async def add_quarantine(self, raw: bytes, reason: str, intake: Intake) -> int:
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                cur = await conn.execute(_pg(q.INSERT_QUARANTINE),
                                         q.quarantine_params(raw, reason, intake))
                row = await cur.fetchone()
                return int(row[0])
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL report store: {exc}") from None

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
            raise StoreError(f"PostgreSQL report store: {exc}") from None
