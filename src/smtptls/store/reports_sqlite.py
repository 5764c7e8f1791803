"""SQLite report store: the zero-configuration default.

One connection in WAL mode with ``synchronous=FULL``, so a report is on disk when
:meth:`add_report` returns and the sender may be acknowledged (RFC 8460 §5.4 reads a
2xx as "delivered"). SQLite calls run on one dedicated worker thread, so the event loop
never blocks on the database and the connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from smtptls.errors import StoreError
from smtptls.store import reports_sql as q
from smtptls.store.reports_base import AddResult, Intake, ReportRecord

T = TypeVar("T")

__all__ = ["SqliteReportStore"]


class SqliteReportStore(q.SqlReportStore):
    """``SqliteReportStore("var/smtptls-reports.sqlite3")``; ``":memory:"`` for tests."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    # --- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None or self._executor is None:
            raise StoreError("report store is not open")
        conn = self._conn

        def run() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                try:
                    conn.rollback()
                except sqlite3.Error:
                    pass
                raise StoreError(f"sqlite report store {self.path}: {exc}") from None

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, run)

    async def open(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create directory for {self.path}: {exc}") from None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports-sqlite")

        def connect() -> sqlite3.Connection:
            try:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout,
                                       check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                # Durable on commit: the sender is told "stored" only after fsync.
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.executescript(q.SCHEMA.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT",
                                                   blob="BLOB"))
                return conn
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open sqlite report store {self.path}: {exc}") from None

        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        conn, executor = self._conn, self._executor
        self._conn, self._executor = None, None
        if conn is not None and executor is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(executor, conn.close)
        if executor is not None:
            executor.shutdown(wait=True)

    async def __aenter__(self) -> SqliteReportStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._call(lambda conn: conn.execute(sql, tuple(params)).fetchall())

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
