"""SQLite report store: the zero-configuration default.

One connection in WAL mode with ``synchronous=FULL``, so a report is on disk when
:meth:`add_report` returns and the sender may be acknowledged (RFC 8460 §5.4 reads a
2xx as "delivered"). SQLite calls run on one dedicated worker thread, so the event loop
never blocks on the database and the connection is never shared between threads.

A version-1 database (one report per (report-id, organization)) is migrated when it is
opened: its ``reports`` table is rebuilt without that constraint (SQLite cannot drop
one in place), the new columns are added and filled from what each row already says.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from smtptls.store import reports_sql as q
from smtptls.store.reports_base import (
    AddResult,
    Intake,
    ReportRecord,
    StoreLimits,
    report_digest,
)
from smtptls.store.sqlite_thread import SqliteThreadStore

T = TypeVar("T")

__all__ = ["SqliteReportStore"]

_PK = "INTEGER PRIMARY KEY AUTOINCREMENT"


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}  # fixed names


def migrate_v1(conn: sqlite3.Connection) -> bool:
    """Bring a version-1 database to version 2 in one transaction; False if not needed.

    Runs with foreign keys off (dropping the old ``reports`` table must not cascade to
    its policies), as SQLite's own procedure for changing a table's constraints says.
    """
    cols = _columns(conn, "reports")
    if not cols or "body_sha256" in cols:
        return False
    conn.create_function("report_digest", 1, lambda t: report_digest(t or ""),
                         deterministic=True)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(q.REPORTS_TABLE.format(name="reports_v2", pk=_PK))
        conn.execute(
            f"INSERT INTO reports_v2 ({q.V1_REPORT_COLUMNS}, body_sha256, provenance, "  # noqa: S608 - constant SQL
            f"conflict, counted) SELECT {q.V1_REPORT_COLUMNS}, report_digest(raw_json), "
            f"{q.V1_PROVENANCE}, 0, 1 FROM reports")
        conn.execute("DROP TABLE reports")
        conn.execute("ALTER TABLE reports_v2 RENAME TO reports")
        for table, column in q.V2_ADDED_COLUMNS:
            if column.split()[0] not in _columns(conn, table):
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return True


def run_plan(conn: sqlite3.Connection, plan: q.Plan[T]) -> T:
    """Drive a write plan of :mod:`reports_sql` on this connection (the caller commits)."""
    try:
        query = next(plan)
        while True:
            if query.many:
                conn.executemany(query.sql, query.params)
                rows: list[tuple[Any, ...]] = []
            else:
                rows = conn.execute(query.sql, tuple(query.params)).fetchall()
            query = plan.send(rows)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class SqliteReportStore(SqliteThreadStore, q.SqlReportStore):
    """``SqliteReportStore("var/smtptls-reports.sqlite3")``; ``":memory:"`` for tests."""

    what = "report store"
    thread_name = "reports-sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0,
                 limits: StoreLimits | None = None) -> None:
        super().__init__(path, busy_timeout=busy_timeout)
        self.limits = limits or StoreLimits()

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        # Durable on commit: the sender is told "stored" only after fsync.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=OFF")
        migrate_v1(conn)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(q.TABLES.format(pk=_PK, blob="BLOB") + ";" + q.INDEXES + ";")
        conn.execute(f"PRAGMA user_version={q.SCHEMA_VERSION}")

    # --- writes ---------------------------------------------------------------------------

    async def add_report(self, record: ReportRecord, intake: Intake) -> AddResult:
        return (await self.add_reports([(record, intake)]))[0]

    async def add_reports(self, items: Sequence[tuple[ReportRecord | q.PreparedReport, Intake]]
                          ) -> list[AddResult]:
        # One transaction, one commit, one fsync for the whole batch.
        if not items:
            return []
        batch = list(items)
        return await self._write(lambda conn: run_plan(
            conn, q.add_reports_plan(batch, self.limits)))

    async def add_quarantine(self, raw: bytes, reason: str, intake: Intake) -> int:
        return (await self.add_quarantines([(raw, reason, intake)]))[0]

    async def add_quarantines(self, items: Sequence[tuple[bytes, str, Intake]]) -> list[int]:
        if not items:
            return []
        batch = list(items)
        return await self._write(lambda conn: run_plan(
            conn, q.add_quarantines_plan(batch, self.limits)))

    async def _write(self, fn: Any) -> Any:
        def write(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")  # one writer: a key's reports are decided in turn
            try:
                result = fn(conn)
                conn.execute("COMMIT")
                return result
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._call(write)
