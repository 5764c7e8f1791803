"""PostgreSQL report store (psycopg 3, async) for production and for several receivers.

Report receivers are stateless behind a load balancer and write to one database. The
reports of one (report-id, organization) are decided in turn: each write takes a
transaction-scoped advisory lock on the key, so two receivers getting two bodies under
one key at once still mark the conflict and count one of them; the unique index on
(report-id, organization, sha256 of the JSON) keeps re-posts idempotent. ``schema``
puts the tables in their own schema (created if missing), which is also how the tests
isolate one run from another.

A version-1 schema is migrated when the store opens (under the schema lock): its
unique constraint is dropped, the new columns are added and filled in place, and the
digests of the reports it holds are computed right after, in batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import PoolTimeout

from smtptls.errors import StoreError
from smtptls.store import reports_sql as q
from smtptls.store.pg_pool import PgPoolStore
from smtptls.store.reports_base import (
    AddResult,
    Intake,
    ReportRecord,
    StoreLimits,
    report_digest,
)

__all__ = ["PostgresReportStore"]

T = TypeVar("T")

_LOCK_KEY = 846_001  # advisory lock serializing schema creation between receivers
_KEY_LOCK_CLASS = 846_002  # advisory lock class of one report key's writes
_DIGEST_BATCH = 500  # reports of a migrated schema given their digest per transaction

# Version 1 -> 2, each statement a no-op on a version-2 schema.
_MIGRATION = f"""
ALTER TABLE reports ADD COLUMN IF NOT EXISTS body_sha256 TEXT NOT NULL DEFAULT '';
ALTER TABLE reports ADD COLUMN IF NOT EXISTS provenance TEXT NOT NULL DEFAULT '';
ALTER TABLE reports ADD COLUMN IF NOT EXISTS conflict INTEGER NOT NULL DEFAULT 0;
ALTER TABLE reports ADD COLUMN IF NOT EXISTS counted INTEGER NOT NULL DEFAULT 1;
{";".join(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c}" for t, c in q.V2_ADDED_COLUMNS)};
ALTER TABLE reports DROP CONSTRAINT IF EXISTS reports_report_id_organization_key;
UPDATE reports SET provenance = {q.V1_PROVENANCE} WHERE provenance = ''
"""  # noqa: S608 - constant SQL


def _pg(text: str) -> str:
    # The shared SQL uses "?" placeholders; psycopg uses "%s".
    return text.replace("?", "%s")


class PostgresReportStore(PgPoolStore, q.SqlReportStore):
    """``PostgresReportStore("postgresql://postgres@127.0.0.1/test", schema="tlsrpt")``."""

    what = "report store"
    lock_key = _LOCK_KEY

    def __init__(self, dsn: str, *, schema: str | None = None,
                 limits: StoreLimits | None = None, **kwargs: Any) -> None:
        super().__init__(dsn, schema=schema, **kwargs)
        self.limits = limits or StoreLimits()

    def _ddl(self) -> str:
        tables = q.TABLES.format(pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                                 blob="BYTEA")
        return ";".join((tables, _MIGRATION, q.INDEXES))

    async def open(self) -> None:
        await super().open()
        await self._fill_digests()

    async def _fill_digests(self) -> None:
        """Give the reports of a migrated version-1 schema their digest (in Python, the
        one place it is defined). Reports of one key were unique then, so no two clash."""
        pool = self._require()
        try:
            while True:
                async with pool.connection() as conn, conn.transaction():
                    cur = await conn.execute(_pg(q.MISSING_DIGESTS), (_DIGEST_BATCH,))
                    rows = await cur.fetchall()
                    if not rows:
                        return
                    async with conn.cursor() as c:
                        await c.executemany(_pg(q.SET_DIGEST), [
                            (report_digest(raw), pk) for pk, raw in rows])
        except (PoolTimeout, psycopg.Error) as exc:
            await self.close()
            raise StoreError(f"cannot migrate the {self.what}: {exc}") from exc

    async def _run(self, plan: q.Plan[T], locks: Sequence[str] = ()) -> T:
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                async with conn.cursor() as cur:
                    if len(set(locks)) == 1:
                        await cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                                          (_KEY_LOCK_CLASS, locks[0]))
                    elif locks:
                        # Each key's lock, taken in one order (of the lock ids) by every
                        # writer, so two batches sharing keys never deadlock.
                        await cur.execute(
                            "SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) AS k "
                            "ORDER BY h", (sorted(set(locks)),))
                        ids = [int(r[0]) for r in await cur.fetchall()]
                        for lock_id in ids:
                            await cur.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                                              (_KEY_LOCK_CLASS, lock_id))
                    try:
                        query = next(plan)
                        while True:
                            if query.many:
                                await cur.executemany(_pg(query.sql), query.params)
                                rows: list[tuple[Any, ...]] = []
                            else:
                                await cur.execute(_pg(query.sql), tuple(query.params))
                                rows = list(await cur.fetchall()) if cur.description else []
                            query = plan.send(rows)
                    except StopIteration as done:
                        result: T = done.value
            # Leaving the transaction block committed it: now the sender may be told.
            return result
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL report store: {exc}") from exc

    async def add_report(self, record: ReportRecord, intake: Intake) -> AddResult:
        return (await self.add_reports([(record, intake)]))[0]

    async def add_reports(self, items: Sequence[tuple[ReportRecord | q.PreparedReport, Intake]]
                          ) -> list[AddResult]:
        # One transaction (one commit) for the batch, holding the lock of every key in it.
        if not items:
            return []
        batch = list(items)
        return await self._run(q.add_reports_plan(batch, self.limits),
                               locks=[q.report_lock_key(r) for r, _ in batch])

    async def add_quarantine(self, raw: bytes, reason: str, intake: Intake) -> int:
        return (await self.add_quarantines([(raw, reason, intake)]))[0]

    async def add_quarantines(self, items: Sequence[tuple[bytes, str, Intake]]) -> list[int]:
        if not items:
            return []
        return await self._run(q.add_quarantines_plan(list(items), self.limits))

