"""SQLite monitor store: the default, a file in the state directory.

WAL journal, ``synchronous=FULL``: a run's state, history and sent-set are on disk
(one transaction) before its alerts count as remembered. All calls run on one
dedicated thread (:class:`~smtptls.store.sqlite_thread.SqliteThreadStore`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from smtptls.monitor.rules import DomainState
from smtptls.services.alerts import SentRecord
from smtptls.store import monitor_base as q
from smtptls.store.monitor_base import RunRecord, SqlMonitorReads
from smtptls.store.sqlite_thread import SqliteThreadStore

__all__ = ["SqliteMonitorStore"]


class SqliteMonitorStore(SqlMonitorReads, SqliteThreadStore):
    """``SqliteMonitorStore("var/smtptls-monitor.sqlite3")``; ``":memory:"`` for tests."""

    name = "sqlite"
    what = "monitor store"
    pk = "INTEGER PRIMARY KEY AUTOINCREMENT"
    thread_name = "monitor-sqlite"

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(self.tables_sql() + ";")

    async def save_run(self, states: Mapping[str, DomainState], records: Sequence[RunRecord],
                       sent: Mapping[str, SentRecord], *, keep_runs: int) -> None:
        statements = q.write_statements(states, records, sent, keep_runs=keep_runs,
                                        now=datetime.now(UTC))

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for text, params in statements:
                    conn.execute(text, params)
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

        await self._call(write)
