"""PostgreSQL report store (psycopg 3, async) for production and for several receivers.

Report receivers are stateless behind a load balancer and write to one database; the
``UNIQUE (report_id, organization)`` constraint keeps re-posts idempotent even when two
receivers get the same report at once. ``schema`` puts the tables in their own schema
(created if missing), which is also how the tests isolate one run from another.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg_pool import PoolTimeout

from smtptls.errors import StoreError
from smtptls.store import reports_sql as q
from smtptls.store.pg_pool import PgPoolStore
from smtptls.store.reports_base import AddResult, Intake, ReportRecord

__all__ = ["PostgresReportStore"]

_LOCK_KEY = 846_001  # advisory lock serializing schema creation between receivers


def _pg(text: str) -> str:
    # The shared SQL uses "?" placeholders; psycopg uses "%s".
    return text.replace("?", "%s")


class PostgresReportStore(PgPoolStore, q.SqlReportStore):
    """``PostgresReportStore("postgresql://postgres@127.0.0.1/test", schema="tlsrpt")``."""

    what = "report store"
    lock_key = _LOCK_KEY

    def _ddl(self) -> str:
        return q.SCHEMA.format(pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                               blob="BYTEA")

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
