"""The report store suite, run against SQLite and a real PostgreSQL (127.0.0.1:5432)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import UTC, date, datetime

import pytest

from smtptls.errors import StoreError
from smtptls.store.reports_base import Channel, DkimStatus, Intake, ReportRecord, ReportStore
from smtptls.store.reports_postgres import PostgresReportStore
from smtptls.store.reports_sqlite import SqliteReportStore

PG_DSN = os.environ.get("SMTPTLS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2024, 5, 2, 8, 0, tzinfo=UTC)


def report(report_id: str, org: str = "Google", day: str = "2024-05-01", domain: str = "example.com",
           ok: int = 10, failed: int = 2, details=(("certificate-expired", "mx1.example.com", "192.0.2.1", 2),)):
    return ReportRecord.from_dict({
        "organization-name": org, "report-id": report_id, "contact-info": "x@y",
        "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain, "policy-string": ["mode: enforce"],
                       "mx-host": ["mx1.example.com"]},
            "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
            "failure-details": [{"result-type": rt, "receiving-mx-hostname": mx, "sending-mta-ip": ip,
                                 "failed-session-count": n} for rt, mx, ip, n in details],
        }],
    })


def intake(channel=Channel.HTTPS, **kw) -> Intake:
    return Intake(channel, T0, **kw)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request, tmp_path):
    if request.param == "sqlite":
        s: ReportStore = SqliteReportStore(tmp_path / "reports.sqlite3")
    else:
        s = PostgresReportStore(PG_DSN, schema=f"test_reports_{uuid.uuid4().hex[:12]}")
    try:
        await s.open()
    except StoreError as exc:
        pytest.fail(f"{request.param} report store unavailable: {exc}")
    yield s
    if isinstance(s, PostgresReportStore):
        await s.drop_schema()
    await s.close()


async def test_add_and_read_back(store):
    added = await store.add_report(report("r1"), intake(remote="192.0.2.7", dkim=DkimStatus.PASS,
                                                        dkim_domain="google.com"))
    assert added.created
    got = await store.get_report("r1")
    assert got is not None and got.pk == added.pk
    assert (got.organization, got.successful, got.failed) == ("Google", 10, 2)
    assert (got.dkim, got.dkim_domain, got.remote, got.channel) == ("pass", "google.com", "192.0.2.7", "https")
    assert got.policies[0].failures[0].receiving_mx_hostname == "mx1.example.com"
    assert json.loads(got.raw_json)["report-id"] == "r1"
    assert (await store.get_report(added.pk)).report_id == "r1"
    assert await store.get_report("nope") is None


@pytest.mark.rfc("8460 4.4")
async def test_rfc8460_4_4_idempotent_on_report_id_and_organization(store):
    first = await store.add_report(report("same"), intake())
    again = await store.add_report(report("same"), intake(Channel.SMTP))
    other_org = await store.add_report(report("same", org="Microsoft"), intake())
    assert (first.created, again.created, other_org.created) == (True, False, True)
    assert again.pk == first.pk
    assert (await store.counts())["reports"] == 2


async def test_concurrent_reposts_store_once(store):
    results = await asyncio.gather(*(store.add_report(report("race"), intake()) for _ in range(8)))
    assert sum(r.created for r in results) == 1
    assert len({r.pk for r in results}) == 1
    assert (await store.counts())["policies"] == 1


async def test_summary_per_day_domain_and_since(store):
    await store.add_report(report("a", day="2024-05-01", ok=10, failed=2), intake())
    await store.add_report(report("b", org="Microsoft", day="2024-05-01", ok=5, failed=1,
                                  details=(("starttls-not-supported", "mx2.example.com", "192.0.2.2", 1),)),
                           intake())
    await store.add_report(report("c", day="2024-05-03", ok=7, failed=0, details=()), intake())
    await store.add_report(report("d", domain="other.example", ok=100, failed=0, details=()), intake())
    s = await store.summary(domain="Example.COM.")
    assert (s.reports, s.successful, s.failed) == (3, 22, 3)
    assert [(d.day, d.successful, d.failed) for d in s.days] == [(date(2024, 5, 1), 15, 3),
                                                                  (date(2024, 5, 3), 7, 0)]
    assert s.days[0].by_result_type == {"certificate-expired": 2, "starttls-not-supported": 1}
    assert s.days[0].by_organization["Microsoft"]["failed"] == 1
    assert ("starttls-not-supported", "mx2.example.com", "Microsoft", "192.0.2.2", 1) in s.failures
    later = await store.summary(domain="example.com", since=date(2024, 5, 2))
    assert (later.reports, later.successful) == (1, 7)
    everything = await store.summary()
    assert everything.successful == 122


async def test_domains_and_lists(store):
    await store.add_report(report("a", day="2024-05-01"), intake())
    await store.add_report(report("b", day="2024-05-03", domain="other.example"), intake())
    domains = {d.policy_domain: d for d in await store.domains()}
    assert set(domains) == {"example.com", "other.example"}
    assert domains["example.com"].first_day == date(2024, 5, 1)
    assert [r.report_id for r in await store.list_reports()] == ["b", "a"]  # newest day first
    assert [r.report_id for r in await store.list_reports(domain="other.example")] == ["b"]
    assert [r.report_id for r in await store.list_reports(limit=1, offset=1)] == ["a"]


async def test_quarantine_keeps_raw_bytes(store):
    raw = bytes(range(256)) * 10
    pk = await store.add_quarantine(raw, "not valid gzip", intake(Channel.SMTP, remote="198.51.100.1"))
    (entry,) = await store.list_quarantine()
    assert (entry.pk, entry.reason, entry.size, entry.channel) == (pk, "not valid gzip", 2560, "smtp")
    full = await store.get_quarantine(pk)
    assert full.raw == raw
    assert await store.get_quarantine(pk + 1000) is None


async def test_attacker_text_is_stored_verbatim(store):
    evil = "Robert'); DROP TABLE reports;-- <script>"
    await store.add_report(report(evil, org=evil, domain="x.example"), intake())
    got = await store.get_report(evil)
    assert got.organization == evil
    assert (await store.counts())["reports"] == 1


async def test_closed_store_raises_store_error(tmp_path):
    s = SqliteReportStore(tmp_path / "x.sqlite3")
    with pytest.raises(StoreError):
        await s.list_reports()


async def test_postgres_unreachable_is_a_store_error():
    s = PostgresReportStore("postgresql://postgres@127.0.0.1:1/test", timeout=1)
    with pytest.raises(StoreError):
        await s.open()
