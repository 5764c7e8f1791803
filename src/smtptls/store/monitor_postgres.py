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
from smtptls.store.monitor_base import RunRecord, SqlMonitorReads
from smtptls.store.pg_pool import PgPoolStore

__all__ = ["PostgresMonitorStore"]


class PostgresMonitorStore(SqlMonitorReads, PgPoolStore):
    name = "postgres"
    what = "monitor store"
    pk = "BIGSERIAL PRIMARY KEY"
    lock_key = 846_004

    def _ddl(self) -> str:
        return self.tables_sql()

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
