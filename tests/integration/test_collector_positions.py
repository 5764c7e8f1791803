"""Log read positions and client batch ids: stored with the results, in one transaction.

Against SQLite and a real PostgreSQL (127.0.0.1:5432, db test, a schema per run); the
log follower on real files (truncated, replaced, rotated while the collector is down);
the HTTP intake with ``Idempotency-Key`` and the Python client through a proxy that
loses the collector's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from smtptls.config import Config, TlsrptConfig
from smtptls.errors import ResultError, StoreError
from smtptls.net.results_client import post_results
from smtptls.services.collector import (
    Collector,
    CollectorService,
    LogFollower,
    LogIngest,
    SendingAddress,
    StaticPolicyLookup,
)
from smtptls.store.results_base import Batch, BatchOutcome, LogPosition, fold
from smtptls.store.results_postgres import PostgresResultStore
from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.postfix_results import PolicyContext
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
NOW = datetime.now(UTC).replace(microsecond=0)
STS_LINES = ("version: STSv1", "mode: enforce", "mx: *.mail.example.com", "max_age: 86400")
STS = AppliedPolicy(PolicyType.STS, "example.com", STS_LINES, ("*.mail.example.com",))
CONTEXT = PolicyContext("example.com", "sts", "enforce", STS_LINES, ("*.mail.example.com",))
CIPHER = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
MX = "mx1.mail.example.com[192.0.2.10]:25"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteResultStore(tmp_path / "results.sqlite3")
        await s.open()
        yield s
        await s.close()
        return
    s = PostgresResultStore(PG_DSN, schema=f"t_positions_{uuid.uuid4().hex[:12]}", timeout=5)
    try:
        await s.open()
    except StoreError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield s
    await s.drop_schema()
    await s.close()


async def total(store) -> tuple[int, int]:
    ok = bad = 0
    for day in await store.days():
        a, b = (await store.tally(datetime.fromisoformat(day).date())).total()
        ok, bad = ok + a, bad + b
    return ok, bad


def successes(n: int) -> list[SessionResult]:
    return [SessionResult.success(NOW, STS) for _ in range(n)]


# --- the store ---------------------------------------------------------------------------------


async def test_position_committed_with_the_counters(store):
    assert await store.log_position("mta:/var/log/mail.log") is None
    batch = fold(successes(3))
    batch.positions["mta:/var/log/mail.log"] = LogPosition(2049, 2**40 + 7, 1234, "ab" * 32)
    assert await store.add_batch(batch) == 3
    assert await store.log_position("mta:/var/log/mail.log") == LogPosition(
        2049, 2**40 + 7, 1234, "ab" * 32)
    # a position alone (lines that gave no result) is written too
    await store.add_batch(Batch(positions={"mta:/var/log/mail.log": LogPosition(1, 2, 99)}))
    assert await store.log_position("mta:/var/log/mail.log") == LogPosition(1, 2, 99)
    assert await total(store) == (3, 0)


async def test_a_batch_id_is_counted_once(store):
    first = Batch(keyed=[("batch-1", fold(successes(4)))])
    assert await store.add_batch(first) == 4
    assert first.outcomes == [BatchOutcome.STORED]
    again = Batch(keyed=[("batch-1", fold(successes(4)))])
    assert await store.add_batch(again) == 0
    assert again.outcomes == [BatchOutcome.DUPLICATE]
    other = Batch(keyed=[("batch-1", fold(successes(5)))])
    assert await store.add_batch(other) == 0
    assert other.outcomes == [BatchOutcome.CONFLICT]
    # one transaction holding a batch and its retry: counted once
    both = fold(successes(1))
    both.keyed = [("batch-2", fold(successes(2))), ("batch-2", fold(successes(2)))]
    assert await store.add_batch(both) == 3
    assert both.outcomes == [BatchOutcome.STORED, BatchOutcome.DUPLICATE]
    assert await total(store) == (4 + 1 + 2, 0)


async def test_a_failed_transaction_writes_no_position(tmp_path):
    store = SqliteResultStore(tmp_path / "r.sqlite3")
    await store.open()
    try:
        await store.add_batch(Batch(positions={"log": LogPosition(1, 2, 10)}))
        broken = fold(successes(1))
        broken.positions["log"] = LogPosition(1, 2, 500)
        broken.details[("bad", "digest-of-no-policy", "[]")] = ["x", 1]  # no such policy
        with pytest.raises((StoreError, KeyError)):
            await store.add_batch(broken)
        assert await store.log_position("log") == LogPosition(1, 2, 10)
        assert await total(store) == (0, 0)
    finally:
        await store.close()


# --- the follower on real files --------------------------------------------------------------------


def pf(pid: int, text: str) -> str:
    t = datetime.now().astimezone()
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S} mta postfix/smtp[{pid}]: {text}\n"


def sessions(first: int, n: int) -> str:
    return "".join(pf(first + i, f"Verified TLS connection established to {MX}: {CIPHER}")
                   + pf(first + i, f"Q{first + i:09d}: to=<bob@example.com>, relay={MX}, "
                                   "delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent "
                                   "(250 Ok)")
                   for i in range(n))


class Run:
    """One collector run over a store: a follower of ``log``, stopped cleanly."""

    def __init__(self, store, log: Path, *, from_start: bool = False) -> None:
        self.store = store
        self.collector = Collector(store, flush_interval=0.01)
        self.ingest = LogIngest(self.collector, StaticPolicyLookup([CONTEXT]),
                                sending=SendingAddress("198.51.100.1"))
        self.follower = LogFollower(self.ingest, log, poll=0.01, from_start=from_start,
                                    name="mta:" + str(log), rotate_quiet=0.2)

    async def __aenter__(self) -> Run:
        self.collector.start()
        self.found = await self.follower.resume(self.store)
        self.follower.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.follower.stop()
        await self.collector.stop()

    async def until(self, n: int) -> None:
        for _ in range(500):
            await self.collector.flush()
            if sum(await total(self.store)) >= n:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{n} sessions not reached: {await total(self.store)}")


async def settle(run: Run) -> None:
    """A few polls of the follower, everything handed over written."""
    for _ in range(5):
        await asyncio.sleep(0.02)
        await run.collector.flush()


async def test_from_start_over_a_stored_position_counts_nothing_twice(store, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(sessions(1, 10))
    async with Run(store, log, from_start=True) as run:
        assert run.found == "new"
        await run.until(10)
    log.open("a").write(sessions(100, 5))
    async with Run(store, log, from_start=True) as run:
        assert run.found == "resumed"  # the stored position wins over --from-start
        await run.until(15)
        await settle(run)
    assert await total(store) == (15, 0)


async def test_truncated_while_down_is_read_from_its_start(store, tmp_path):
    log = tmp_path / "mail.log"
    log.touch()
    async with Run(store, log) as run:
        log.open("a").write(sessions(1, 10))
        await run.until(10)
    # truncated and written again past the old position: the bytes before it differ
    log.write_text(sessions(200, 12))
    async with Run(store, log) as run:
        assert run.found == "truncated"
        await run.until(22)
        await settle(run)
    assert await total(store) == (22, 0)


async def test_replaced_while_down_the_new_file_is_read_from_its_start(store, tmp_path):
    log = tmp_path / "mail.log"
    log.touch()
    async with Run(store, log) as run:
        log.open("a").write(sessions(1, 4))
        await run.until(4)
    new = tmp_path / "mail.log.new"
    new.write_text(sessions(300, 6))
    os.replace(new, log)  # another inode at the path, the old file gone
    async with Run(store, log) as run:
        assert run.found == "replaced"
        await run.until(10)
        await settle(run)
    assert await total(store) == (10, 0)


async def test_rotated_while_down_the_rest_of_the_old_file_first(store, tmp_path):
    log = tmp_path / "mail.log"
    log.touch()
    async with Run(store, log) as run:
        log.open("a").write(sessions(1, 4))
        await run.until(4)
    log.open("a").write(sessions(50, 3))  # written before the rotation, not read yet
    os.rename(log, tmp_path / "mail.log.1")
    log.write_text(sessions(400, 5))
    async with Run(store, log) as run:
        assert run.found == "rotated"
        await run.until(12)
        await settle(run)
        assert run.follower.path == log and run.follower._leaving is None
    assert await total(store) == (12, 0)


async def test_rewritten_in_place_while_running_is_read_again(store, tmp_path):
    """copytruncate, then written past our position before we looked: the bytes before
    our position changed, so the file is read from its start."""
    log = tmp_path / "mail.log"
    log.touch()
    async with Run(store, log) as run:
        log.open("a").write(sessions(1, 3))
        await run.until(3)
        with log.open("r+") as f:
            f.truncate(0)
            f.write(sessions(500, 8))  # longer than before
        await run.until(11)
        await settle(run)
        assert run.follower.truncations == 1
    assert await total(store) == (11, 0)


# --- HTTP: Idempotency-Key ---------------------------------------------------------------------


def service_config(tmp_path) -> Config:
    return Config(tlsrpt=TlsrptConfig(http_listen="127.0.0.1:0", flush_interval=0.05,
                                      sqlite_path=str(tmp_path / "r.sqlite3"),
                                      policy_source="none"))


async def test_http_idempotency_key(store, tmp_path):
    service = CollectorService(service_config(tmp_path), store=store)
    await service.start()
    url = f"http://127.0.0.1:{service.http_port}/v1/results"
    body = {"results": [r.to_dict() for r in successes(3)]}
    try:
        async with aiohttp.ClientSession() as http:
            key = {"Idempotency-Key": "mta1-000042"}
            async with http.post(url, json=body, headers=key) as resp:
                assert resp.status == 200
                assert await resp.json() == {"status": "stored", "stored": 3,
                                             "dropped_own": 0}
            async with http.post(url, json=body, headers=key) as resp:  # a retry
                assert resp.status == 200
                assert (await resp.json())["status"] == "duplicate"
            other = {"results": body["results"][:1]}
            async with http.post(url, json=other, headers=key) as resp:  # a reused id
                assert resp.status == 409
                assert (await resp.json())["status"] == "conflict"
            async with http.post(url, json=body, headers={"Idempotency-Key": "a b"}) as resp:
                assert resp.status == 400
            async with http.post(url, json=body) as resp:  # no key: counted again
                assert (await resp.json())["stored"] == 3
    finally:
        await service.stop()
    assert await total(store) == (6, 0)


async def test_python_api_batch_id(store):
    collector = Collector(store)
    collector.start()
    try:
        assert await collector.record_many(successes(2), batch_id="b-1") == 2
        assert await collector.record_batch(successes(2), batch_id="b-1") == (
            0, BatchOutcome.DUPLICATE)
        with pytest.raises(ResultError, match="batch id"):
            await collector.record_many(successes(1), batch_id="x" * 500)
    finally:
        await collector.stop()
    assert await total(store) == (2, 0)


class LosingProxy:
    """Forwards HTTP to the collector; the answer to the first request is lost (the
    connection closes after the collector answered, before the client hears it)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lost = 0
        self.server: asyncio.Server | None = None

    async def _pipe(self, reader, writer) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _client(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        if self.lost == 0:
            self.lost += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            up_writer.write(head + await reader.readexactly(length))
            await up_writer.drain()
            await up_reader.readuntil(b"\r\n\r\n")  # the collector answered: committed
            up_writer.close()
            writer.close()  # ... and the answer never reaches the client
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_client_retry_after_a_lost_answer_is_counted_once(store, tmp_path):
    service = CollectorService(service_config(tmp_path), store=store)
    await service.start()
    try:
        proxy = LosingProxy(service.http_port)
        async with proxy as port:
            outcome = await post_results(f"http://127.0.0.1:{port}", successes(5),
                                         attempts=3)
        assert proxy.lost == 1
        assert (outcome.status, outcome.stored, outcome.attempts) == ("duplicate", 0, 2)
        assert await total(store) == (5, 0)
        with pytest.raises(ResultError, match="409"):
            await post_results(f"http://127.0.0.1:{service.http_port}", successes(1),
                               batch_id=outcome.batch_id)
    finally:
        await service.stop()


async def test_client_gives_up_with_a_typed_error(unused_tcp_port):
    with pytest.raises(StoreError, match="not stored after 2 tries"):
        await post_results(f"http://127.0.0.1:{unused_tcp_port}", successes(1), attempts=2)


class FailsOnce:
    """A store whose first transaction fails (the database went away for a moment)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.failed = False

    async def add_batch(self, batch: Batch) -> int:
        if not self.failed:
            self.failed = True
            raise StoreError("database is down")
        return await self.inner.add_batch(batch)


async def test_stopping_with_the_store_down_commits_no_position_past_lost_lines(tmp_path):
    store = SqliteResultStore(tmp_path / "r.sqlite3")
    await store.open()
    try:
        collector = Collector(FailsOnce(store), flush_interval=10, batch_size=1)  # type: ignore[arg-type]
        collector.start()
        r = successes(1)[0]
        collector.submit_log([(r, 1)], ("log", LogPosition(1, 2, 100)))
        collector.submit_log([(r, 1)], ("log", LogPosition(1, 2, 200)))
        await collector.stop()  # the first batch fails: both are read again next time
        assert await store.log_position("log") is None
        assert await total(store) == (0, 0)
    finally:
        await store.close()
