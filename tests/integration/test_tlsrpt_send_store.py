"""The sender's result store against SQLite and a real PostgreSQL (127.0.0.1:5432, db test).

Each PostgreSQL run uses its own schema and drops it. The crash test kills a writer with
SIGKILL right after it was told "stored" and checks that nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from smtptls.config import TlsrptConfig
from smtptls.errors import ConfigError, StoreError
from smtptls.store.open import open_result_store
from smtptls.store.results_base import (
    DeliveryRecord,
    DeliveryStatus,
    fold,
)
from smtptls.store.results_postgres import PostgresResultStore
from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate, build_reports
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
RUN = uuid.uuid4().hex[:10]
DAY = date(2024, 5, 1)
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
IDENTITY = ReportIdentity.with_defaults("mta.sender.example")
STS = AppliedPolicy(PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce"),
                    ("*.mail.example.com",))
NONE = AppliedPolicy.none_found("example.org")


def sample(n: int = 10, day_offset: int = 0) -> list[SessionResult]:
    t = T0 + timedelta(days=day_offset)
    out = []
    for i in range(n):
        if i % 5 == 4:
            out.append(SessionResult.failure(t, STS, "certificate-expired",
                                             mx_host="mx1.mail.example.com",
                                             receiving_ip="192.0.2.10",
                                             sending_mta_ip="198.51.100.1"))
        elif i % 7 == 6:
            out.append(SessionResult.failure(t, NONE, "starttls-not-supported",
                                             mx_host="mx.example.org",
                                             receiving_ip="203.0.113.1",
                                             sending_mta_ip="198.51.100.1"))
        else:
            out.append(SessionResult.success(t, STS if i % 2 else NONE))
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteResultStore(tmp_path / "sub" / "results.sqlite3")
        await s.open()
        yield s
        await s.close()
        return
    s = PostgresResultStore(PG_DSN, schema=f"t_results_{RUN}_{uuid.uuid4().hex[:6]}",
                            timeout=5)
    try:
        await s.open()
    except StoreError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield s
    await s.drop_schema()
    await s.close()


@pytest.mark.rfc("8460 4.4")
async def test_rfc8460_4_4_counters_give_the_same_report_as_the_results(store):
    rs = sample(50)
    assert await store.add_results(rs[:20]) == 20
    assert await store.add_results(rs[20:]) == 30
    tally = await store.tally(DAY)
    assert build_reports(tally, IDENTITY) == aggregate(rs, DAY, IDENTITY)
    assert await store.days() == ["2024-05-01"]
    assert await store.domains(DAY) == ["example.com", "example.org"]


async def test_days_kept_apart_and_domain_filter(store):
    await store.add_results(sample(10) + sample(4, day_offset=1))
    assert await store.days() == ["2024-05-01", "2024-05-02"]
    tally = await store.tally(DAY + timedelta(days=1), domains=["EXAMPLE.org."])
    assert tally.policy_domains == ["example.org"]
    assert sum(ok + bad for ok, bad in tally.sessions.values()) == 2


async def test_summaries(store):
    await store.add_results(sample(35))
    rows = {(s.policy_domain, s.policy_type): s for s in await store.summaries(day=DAY)}
    com = rows[("example.com", "sts")]
    assert (com.successful, com.failed) == (12, 7)
    assert com.failures == {"certificate-expired": 7}
    assert rows[("example.org", "no-policy-found")].failures == {"starttls-not-supported": 4}
    assert [s.to_dict()["day"] for s in await store.summaries(domain="example.org")] == \
        ["2024-05-01"]


async def test_deliveries(store):
    rec = DeliveryRecord("rid-1@mta.sender.example", "https://r.example/", "2024-05-01",
                         "example.com", created_at=T0, next_attempt=T0 + timedelta(hours=1))
    assert await store.get_delivery(rec.report_id, rec.uri) is None
    await store.put_delivery(rec)
    assert await store.get_delivery(rec.report_id, rec.uri) == rec
    later = rec.attempted(T0 + timedelta(hours=1), status=DeliveryStatus.FAILED,
                          error="HTTP 404 " + "x" * 1000)
    await store.put_delivery(later)
    got = await store.get_delivery(rec.report_id, rec.uri)
    assert got.status is DeliveryStatus.FAILED and got.attempts == 1
    assert len(got.last_error) == 500
    assert [d.uri for d in await store.deliveries(status=DeliveryStatus.FAILED)] == [rec.uri]
    assert await store.deliveries(day="2024-05-02") == []
    assert got.to_dict()["last_attempt"] == "2024-05-01T11:00:00Z"


async def test_prune(store):
    await store.add_results(sample(10) + sample(10, day_offset=3))
    await store.put_delivery(DeliveryRecord("r", "mailto:a@b.example", "2024-05-01",
                                            "example.com"))
    assert await store.prune(DAY + timedelta(days=1)) > 0
    assert await store.days() == ["2024-05-04"]
    assert await store.deliveries() == []
    await store.add_results(sample(3))  # policies re-created after the prune
    assert await store.days() == ["2024-05-01", "2024-05-04"]


async def test_empty_batch_is_a_no_op(store):
    assert await store.add_results([]) == 0
    assert await store.days() == []


@pytest.mark.postgres
async def test_postgres_concurrent_collectors_add_up(tmp_path):
    schema = f"t_results_{RUN}_conc"
    stores = [PostgresResultStore(PG_DSN, schema=schema, timeout=5) for _ in range(3)]
    try:
        for s in stores:
            await s.open()
    except StoreError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        rs = sample(20)
        await asyncio.gather(*(s.add_results(rs) for s in stores for _ in range(4)))
        tally = await stores[0].tally(DAY)
        expected = fold(rs * 12)
        assert sum(ok + bad for ok, bad in tally.sessions.values()) == expected.results == 240
        assert build_reports(tally, IDENTITY) == aggregate(rs * 12, DAY, IDENTITY)
    finally:
        await stores[0].drop_schema()
        for s in stores:
            await s.close()


def test_open_result_store_choices(tmp_path):
    assert isinstance(open_result_store(TlsrptConfig(sqlite_path=str(tmp_path / "x"))),
                      SqliteResultStore)
    pg = open_result_store(TlsrptConfig(backend="postgres", postgres_schema="s1"))
    assert isinstance(pg, PostgresResultStore) and pg.schema == "s1"
    with pytest.raises(ConfigError):
        open_result_store(TlsrptConfig(backend="redis"))


async def test_closed_store_raises_store_error(tmp_path):
    s = SqliteResultStore(tmp_path / "r.sqlite3")
    with pytest.raises(StoreError, match="not open"):
        await s.days()


async def test_unwritable_path_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        await SqliteResultStore(tmp_path / "file" / "sub" / "r.sqlite3").open()


CRASH_WRITER = textwrap.dedent("""
    import asyncio, sys, time
    from datetime import UTC, datetime
    from smtptls.store.results_sqlite import SqliteResultStore
    from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

    async def main():
        store = SqliteResultStore(sys.argv[1])
        await store.open()
        policy = AppliedPolicy.none_found("example.org")
        t = datetime(2024, 5, 1, 10, tzinfo=UTC)
        for i in range(int(sys.argv[2])):
            await store.add_results([SessionResult.success(t, policy)] * 100)
            print(f"ACK {i}", flush=True)
        time.sleep(60)   # killed here, connection open, no clean shutdown

    asyncio.run(main())
""")


def test_crash_loses_no_acknowledged_result(tmp_path):
    db = tmp_path / "crash.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", CRASH_WRITER, str(db), "25"],
                            stdout=subprocess.PIPE, text=True,
                            env=os.environ | {"PYTHONPATH": str(Path.cwd() / "src")})
    acked = 0
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ACK"):
                acked += 1
            if acked == 25:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert acked == 25

    async def read():
        async with SqliteResultStore(db) as store:
            return await store.tally(DAY)

    assert asyncio.run(read()).total() == (2500, 0)
