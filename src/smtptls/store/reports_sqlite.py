"""SQLite report store: the zero-configuration default.

One connection in WAL mode with ``synchronous=FULL``, so a report is on disk when
:meth:`add_report` returns and the sender may be acknowledged (RFC 8460 §5.4 reads a
2xx as "delivered"). SQLite calls run on one dedicated worker thread, so the event loop
never blocks on the database and the connection is never shared between threads.
"""

from __future__ import annotations

import sqlite3
from typing import TypeVar

from smtptls.store import reports_sql as q
from smtptls.store.reports_base import AddResult, Intake, ReportRecord
from smtptls.store.sqlite_thread import SqliteThreadStore

T = TypeVar("T")

__all__ = ["SqliteReportStore"]


class SqliteReportStore(SqliteThreadStore, q.SqlReportStore):
    """``SqliteReportStore("var/smtptls-reports.sqlite3")``; ``":memory:"`` for tests."""

    what = "report store"
    thread_name = "reports-sqlite"

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        # Durable on commit: the sender is told "stored" only after fsync.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(q.SCHEMA.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT",
                                           blob="BLOB"))

    # --- writes ---------------------------------------------------------------------------

    async def add_report(self, record: ReportRecord, intake: Intake) -> AddResult:
        def write(conn: sqlite3.Connection) -> AddResult:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(q.INSERT_REPORT, q.report_params(record, intake)).fetchone()
                if row is None:
                    # Idempotent on (report-id, organization): a re-post is not a new report.
                    existing = conn.execute(
                        q.SELECT_REPORT_PK, (record.report_id, record.organization)).fetchone()
                    conn.execute("COMMIT")
                    return AddResult(pk=int(existing[0]), created=False)
                report_pk = int(row[0])
                for i, policy in enumerate(record.policies):
                    policy_pk = conn.execute(
                        q.INSERT_POLICY, q.policy_params(record, report_pk, i, policy)
                    ).fetchone()[0]
                    conn.executemany(q.INSERT_FAILURE, [
                        q.failure_params(record, report_pk, policy_pk, policy, j, f)
                        for j, f in enumerate(policy.failures)
                    ])
                conn.execute("COMMIT")
                return AddResult(pk=report_pk, created=True)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._call(write)

    async def add_quarantine(self, raw: bytes, reason: str, intake: Intake) -> int:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(q.INSERT_QUARANTINE,
                                   q.quarantine_params(raw, reason, intake)).fetchone()
                conn.execute("COMMIT")
                return int(row[0])
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._call(write)
