"""PostgreSQL results of ``smtptls check --bulk``: one row per domain and run.

Machines scanning shards of one list (``--shard K/N``) write into the same table; a
run is named by ``run_id`` and a row holds the shard that wrote it, the domain, when it
was checked, whether the check failed on our side (``retryable``) and the JSON report
(schema ``smtptls.check/1``) as ``jsonb``, so auditors query findings with SQL.

Resuming: :meth:`PostgresCheckResults.done` yields the reports already stored for this
run and shard whose check did not fail on our side; those domains are skipped. A
retryable row is checked again and its new report replaces it (``ON CONFLICT`` on
``(run_id, domain)``): one row per domain and run, whatever the number of attempts.

A report counts as written once the transaction holding its batch has committed
(batches of :data:`BATCH_ROWS`, and at the end); an interrupted run loses at most the
domains of one batch, which a resumed run checks again.

Synchronous on purpose: the bulk runner's result sink is called from plain code (the
parent of the worker processes), and one commit per batch costs a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Self

from smtptls.errors import StoreError

if TYPE_CHECKING:  # psycopg is imported when a store is opened, not by the CLI's import
    import psycopg

__all__ = ["BATCH_ROWS", "PostgresCheckResults", "is_postgres_url"]

BATCH_ROWS = 200  # reports per transaction: bounds the loss on a crash, amortises commits
MAX_RUN_ID = 200  # characters of a run id
_LOCK_KEY = 846_018  # advisory lock serializing schema creation between machines

SCHEMA = """
CREATE TABLE IF NOT EXISTS check_results (
    run_id      TEXT NOT NULL,
    shard       TEXT NOT NULL,
    domain      TEXT NOT NULL,
    checked_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    retryable   BOOLEAN NOT NULL,
    report      JSONB NOT NULL,
    PRIMARY KEY (run_id, domain)
);
CREATE INDEX IF NOT EXISTS check_results_shard ON check_results (run_id, shard)
"""

UPSERT = """
INSERT INTO check_results (run_id, shard, domain, retryable, report)
VALUES (%s, %s, %s, %s, %s::jsonb)
ON CONFLICT (run_id, domain) DO UPDATE
   SET shard = EXCLUDED.shard, checked_at = now(), retryable = EXCLUDED.retryable,
       report = EXCLUDED.report
"""

SELECT_DONE = """
SELECT domain, report::text FROM check_results
 WHERE run_id = %s AND shard = %s AND NOT retryable
"""


def is_postgres_url(text: str) -> bool:
    """``--out`` names a PostgreSQL database rather than a file."""
    return text.startswith(("postgresql://", "postgres://"))


class PostgresCheckResults:
    """``PostgresCheckResults("postgresql://…/db", run_id="2026-12", shard="3/8")``.

    Use as a context manager; :meth:`add` buffers, :meth:`flush` commits.
    """

    def __init__(self, dsn: str, *, run_id: str, shard: str = "1/1",
                 schema: str | None = None, timeout: float = 10.0,
                 batch: int = BATCH_ROWS) -> None:
        if not run_id or len(run_id) > MAX_RUN_ID or not run_id.isprintable():
            raise StoreError(f"run id must be 1 to {MAX_RUN_ID} printable characters")
        self.dsn = dsn
        self.run_id = run_id
        self.shard = shard
        self.schema = schema
        self.timeout = timeout
        self.batch = max(1, batch)
        self.written = 0
        self._conn: psycopg.Connection | None = None
        self._rows: list[tuple[str, str, str, bool, str]] = []

    # --- life cycle ---------------------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        import psycopg
        from psycopg import sql

        try:
            conn = psycopg.connect(self.dsn, connect_timeout=max(1, int(self.timeout)))
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL check results: {exc}") from None
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                if self.schema:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(self.schema)))
                    conn.execute(sql.SQL("SET search_path TO {}").format(
                        sql.Identifier(self.schema)))
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)  # type: ignore[call-overload]
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot create the check results schema: {exc}") from None
        self._conn = conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            self._commit(conn)
        finally:
            conn.close()

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require(self) -> psycopg.Connection:
        if self._conn is None:
            raise StoreError("check results store is not open")
        return self._conn

    # --- reads --------------------------------------------------------------------------

    def done(self) -> Iterator[tuple[str, str]]:
        """``(domain, report JSON)`` of this run and shard, retryable rows left out.

        Streamed through a server-side cursor: memory stays bounded for any shard size.
        """
        import psycopg

        conn = self._require()
        try:
            with conn.transaction(), conn.cursor(name="check_results_done") as cur:
                cur.itersize = 1000
                cur.execute(SELECT_DONE, (self.run_id, self.shard))
                for domain, report in cur:
                    yield str(domain), str(report)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL check results: {exc}") from None

    # --- writes -------------------------------------------------------------------------

    def add(self, domain: str, line: str, retryable: bool) -> None:
        """Buffer one report (its results line); committed with its batch.

        ``jsonb`` cannot hold U+0000 (a TXT record may carry one): it is stored as
        U+FFFD, the replacement character the reports already use for bad bytes.
        """
        if "\\u0000" in line:
            line = line.replace("\\u0000", "\\ufffd")
        self._rows.append((self.run_id, self.shard, domain, retryable, line))
        if len(self._rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        self._commit(self._require())

    def _commit(self, conn: psycopg.Connection) -> None:
        import psycopg

        if not self._rows:
            return
        rows, self._rows = self._rows, []
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(UPSERT, rows)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL check results: {exc}") from None
        self.written += len(rows)
