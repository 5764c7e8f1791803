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
from smtptls.store.monitor_base import DomainSummary, RunRecord
from smtptls.store.sqlite_thread import SqliteThreadStore

__all__ = ["SqliteMonitorStore"]


class SqliteMonitorStore(SqliteThreadStore):
    """``SqliteMonitorStore("var/smtptls-monitor.sqlite3")``; ``":memory:"`` for tests."""

    name = "sqlite"
    what = "monitor store"
    thread_name = "monitor-sqlite"

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(q.SCHEMA.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT") + ";")

    async def load(self) -> dict[str, DomainState]:
        rows = await self._read(q.SELECT_STATES)
        return {str(d): q.state_from_text(str(s)) for d, s in rows}

    async def load_sent(self) -> dict[str, SentRecord]:
        return dict(q.sent_from_row(r) for r in await self._read(q.SELECT_SENT))

    async def is_empty(self) -> bool:
        return int((await self._read(q.COUNT_ANY))[0][0]) == 0

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

    async def runs(self, domain: str, *, limit: int = 100) -> list[RunRecord]:
        rows = await self._read(q.SELECT_RUNS, (domain, q.check_limit(limit)))
        return [RunRecord.from_row(r) for r in rows]

    async def domains(self) -> list[DomainSummary]:
        return [q.summary_from_row(r) for r in await self._read(q.SELECT_DOMAINS)]
