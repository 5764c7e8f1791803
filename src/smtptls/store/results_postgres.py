"""PostgreSQL result store: one database for a fleet of sending MTAs.

Every collector writes its batches into the same counters (UPSERTs that add, so
concurrent collectors never lose an increment), and one sender reads them. ``schema``
puts the tables in their own schema (created if missing), which is also how the tests
isolate one run from another. A batch is acknowledged only after its transaction has
committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import psycopg
from psycopg_pool import PoolTimeout

from smtptls.errors import StoreError
from smtptls.store import results_base as q
from smtptls.store.pg_pool import PgPoolStore
from smtptls.store.results_base import (
    Batch,
    DeliveryRecord,
    SqlResultReads,
)
from smtptls.tlsrptsend.aggregate import DayTally

__all__ = ["PostgresResultStore"]

_LOCK_KEY = 846_002  # advisory lock serializing schema creation between collectors


def _pg(text: str) -> str:
    # The shared SQL uses "?" placeholders; psycopg uses "%s". A bare "? IS NULL" has no
    # type PostgreSQL can infer, so those are cast to text.
    return text.replace("(? IS NULL", "(?::text IS NULL").replace("?", "%s")


class PostgresResultStore(SqlResultReads, PgPoolStore):
    """``PostgresResultStore("postgresql://postgres@127.0.0.1/test", schema="tlsrpt")``."""

    name = "postgres"

    what = "result store"
    lock_key = _LOCK_KEY
    _sql = staticmethod(_pg)

    def __init__(self, dsn: str, *, schema: str | None = None, min_size: int = 1,
                 max_size: int = 4, timeout: float = 10.0) -> None:
        super().__init__(dsn, schema=schema, min_size=min_size, max_size=max_size,
                         timeout=timeout)
        self._policy_ids: dict[str, int] = {}

    def _ddl(self) -> str:
        return q.SCHEMA.format(pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")

    # --- writes -------------------------------------------------------------------------------

    async def add_batch(self, batch: Batch) -> int:
        if batch.empty:
            return 0
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                work = batch.unkeyed()
                outcomes = []
                for batch_id, part in batch.keyed:
                    # a concurrent insert of the same id waits for the other transaction
                    # and then finds the row: counted by one collector only
                    digest = part.digest()
                    await cur.execute(_pg(q.INSERT_BATCH_KEY),
                                      q.batch_key_params(batch_id, part, digest))
                    stored = None
                    if cur.rowcount != 1:
                        await cur.execute(_pg(q.SELECT_BATCH_KEY), (batch_id,))
                        stored = str((await cur.fetchone())[0])
                    outcomes.append(q.keyed_outcome(stored, digest))
                    if stored is None:
                        work.merge(part)
                ids: dict[str, int] = {}
                for digest, policy in work.policies.items():
                    pid = self._policy_ids.get(digest)
                    if pid is None:
                        await cur.execute(_pg(q.INSERT_POLICY), q.policy_params(digest, policy))
                        await cur.execute(_pg(q.SELECT_POLICY_ID), (digest,))
                        row = await cur.fetchone()
                        pid = int(row[0])
                    ids[digest] = pid
                # Sorted, so that concurrent collectors take row locks in one order.
                if work.sessions:
                    await cur.executemany(_pg(q.UPSERT_SESSIONS), sorted(
                        (day, ids[digest], work.policies[digest].policy_domain, ok, bad)
                        for (day, digest), (ok, bad) in work.sessions.items()))
                if work.details:
                    await cur.executemany(_pg(q.UPSERT_DETAIL), sorted(
                        (day, ids[digest], detail, rtype, count)
                        for (day, digest, detail), (rtype, count) in work.details.items()))
                # the read positions of the lines these counters came from: committed
                # with them, or not at all
                if batch.positions:
                    await cur.executemany(_pg(q.UPSERT_POSITION), sorted(
                        q.position_params(name, p) for name, p in batch.positions.items()))
            # Leaving the transaction block committed it: the results may be acknowledged.
            self._policy_ids.update(ids)
            batch.outcomes = outcomes
            return work.results
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL result store: {exc}") from exc

    async def put_delivery(self, record: DeliveryRecord) -> None:
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                await conn.execute(_pg(q.UPSERT_DELIVERY), q.delivery_params(record))
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL result store: {exc}") from exc

    async def prune(self, before: date) -> int:
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                n = 0
                for statement in q.PRUNE:
                    cur = await conn.execute(_pg(statement), (before.isoformat(),))
                    n += cur.rowcount
                await conn.execute(_pg(q.PRUNE_BATCH_KEYS), (before.isoformat(),))
                await conn.execute(q.PRUNE_POLICIES)
            self._policy_ids.clear()
            return n
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL result store: {exc}") from exc


    # --- reads ----------------------------------------------------------------------------------

    async def tally(self, day: date, domains: Iterable[str] | None = None) -> DayTally:
        key = (day.isoformat(),)
        policies = {int(r[0]): str(r[1]) for r in await self._read(q.SELECT_DAY_POLICIES, key)}
        sessions = await self._read(q.SELECT_DAY_SESSIONS, key)
        details = await self._read(q.SELECT_DAY_DETAILS, key)
        return q.filter_tally(q.tally_from_rows(day, policies, sessions, details),
                              q.domain_filter(domains))

