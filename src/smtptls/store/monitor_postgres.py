"""PostgreSQL monitor store (the ``[postgres]`` extra): ``monitor.store =
"postgresql://..."``, for a monitor whose state lives with the other stores.

The SQL is :mod:`.monitor_base`'s; a run's writes are one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import psycopg
from psycopg_pool import PoolTimeout

from smtptls.errors import StoreError
from smtptls.monitor.rules import DomainState
from smtptls.services.alerts import SentRecord
from smtptls.store import monitor_base as q
from smtptls.store.monitor_base import DomainSummary, RunRecord
from smtptls.store.pg_pool import PgPoolStore

__all__ = ["PostgresMonitorStore"]


class PostgresMonitorStore(PgPoolStore):
    name = "postgres"
    what = "monitor store"
    lock_key = 846_004

    def _ddl(self) -> str:
        return q.SCHEMA.format(pk="BIGSERIAL PRIMARY KEY")

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
        pool = self._require()
        try:
            async with pool.connection() as conn, conn.transaction():
                for text, params in statements:
                    await conn.execute(self._sql(text), params)
        except (PoolTimeout, psycopg.Error) as exc:
            raise StoreError(f"PostgreSQL {self.what}: {exc}") from exc

    async def runs(self, domain: str, *, limit: int = 100) -> list[RunRecord]:
        rows = await self._read(q.SELECT_RUNS, (domain, q.check_limit(limit)))
        return [RunRecord.from_row(r) for r in rows]

    async def domains(self) -> list[DomainSummary]:
        return [q.summary_from_row(r) for r in await self._read(q.SELECT_DOMAINS)]
