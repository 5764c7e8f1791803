"""SQLite result store: the zero-configuration default for one MTA.

WAL journal with ``synchronous=FULL``: a batch is on disk when :meth:`add_batch`
returns, so an acknowledged result survives a crash or power loss. All SQLite calls run
on one dedicated thread (the connection is never shared between threads and the event
loop never blocks on the database).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import TypeVar

from smtptls.errors import StoreError
from smtptls.store import results_base as q
from smtptls.store.results_base import (
    Batch,
    DeliveryRecord,
    SqlResultReads,
)
from smtptls.store.sqlite_thread import SqliteThreadStore
from smtptls.tlsrptsend.aggregate import DayTally

T = TypeVar("T")

__all__ = ["SqliteResultStore"]


class SqliteResultStore(SqlResultReads, SqliteThreadStore):
    """``SqliteResultStore("var/smtptls-tlsrpt.sqlite3")``; ``":memory:"`` for tests."""

    name = "sqlite"

    what = "result store"
    thread_name = "tlsrpt-sqlite"

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0,
                 synchronous: str = "FULL") -> None:
        super().__init__(path, busy_timeout=busy_timeout)
        self.synchronous = synchronous
        self._policy_ids: dict[str, int] = {}

    def _validate(self) -> None:
        if self.synchronous not in ("FULL", "NORMAL", "OFF"):
            raise StoreError(f"bad synchronous mode {self.synchronous!r}")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        # Durable on commit: a result is acknowledged only once it is on disk.
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.executescript(q.SCHEMA.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT") + ";")

    # --- writes -------------------------------------------------------------------------------

    def _policy_id(self, conn: sqlite3.Connection, digest: str, batch: Batch) -> int:
        pid = self._policy_ids.get(digest)
        if pid is None:
            conn.execute(q.INSERT_POLICY, q.policy_params(digest, batch.policies[digest]))
            pid = int(conn.execute(q.SELECT_POLICY_ID, (digest,)).fetchone()[0])
            self._policy_ids[digest] = pid
        return pid

    async def add_batch(self, batch: Batch) -> int:
        if batch.empty:
            return 0

        def write(conn: sqlite3.Connection) -> tuple[int, list[q.BatchOutcome]]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                work = batch.unkeyed()
                outcomes = []
                for batch_id, part in batch.keyed:
                    digest = part.digest()
                    cur = conn.execute(q.INSERT_BATCH_KEY,
                                       q.batch_key_params(batch_id, part, digest))
                    stored = None if cur.rowcount == 1 else str(
                        conn.execute(q.SELECT_BATCH_KEY, (batch_id,)).fetchone()[0])
                    outcomes.append(q.keyed_outcome(stored, digest))
                    if stored is None:
                        work.merge(part)
                ids = {d: self._policy_id(conn, d, work) for d in work.policies}
                conn.executemany(q.UPSERT_SESSIONS, [
                    (day, ids[digest], work.policies[digest].policy_domain, ok, bad)
                    for (day, digest), (ok, bad) in work.sessions.items()])
                conn.executemany(q.UPSERT_DETAIL, [
                    (day, ids[digest], detail, rtype, count)
                    for (day, digest, detail), (rtype, count) in work.details.items()])
                # the read positions of the lines these counters came from: committed
                # with them, or not at all
                conn.executemany(q.UPSERT_POSITION, [
                    q.position_params(name, p) for name, p in batch.positions.items()])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                self._policy_ids.clear()  # ids inserted in this transaction are gone
                raise
            return work.results, outcomes

        counted, batch.outcomes = await self._call(write)
        return counted

    async def put_delivery(self, record: DeliveryRecord) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(q.UPSERT_DELIVERY, q.delivery_params(record))

        await self._call(write)

    async def prune(self, before: date) -> int:
        def write(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = sum(conn.execute(s, (before.isoformat(),)).rowcount for s in q.PRUNE)
                conn.execute(q.PRUNE_BATCH_KEYS, (before.isoformat(),))
                conn.execute(q.PRUNE_POLICIES)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._policy_ids.clear()
            return n

        return await self._call(write)

    # --- reads ----------------------------------------------------------------------------------

    async def tally(self, day: date, domains: Iterable[str] | None = None) -> DayTally:
        def read(conn: sqlite3.Connection) -> DayTally:
            key = (day.isoformat(),)
            policies = {int(r[0]): str(r[1])
                        for r in conn.execute(q.SELECT_DAY_POLICIES, key).fetchall()}
            sessions = conn.execute(q.SELECT_DAY_SESSIONS, key).fetchall()
            details = conn.execute(q.SELECT_DAY_DETAILS, key).fetchall()
            return q.tally_from_rows(day, policies, sessions, details)

        return q.filter_tally(await self._call(read), q.domain_filter(domains))

