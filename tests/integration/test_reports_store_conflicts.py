"""Report store, schema version 2, on SQLite and a real PostgreSQL: conflicting reports
kept side by side with one counted, migration of version-1 databases, quarantine limits."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import uuid
from datetime import timedelta

import psycopg
import pytest

from smtptls.store.reports_base import (
    AddStatus,
    Channel,
    DkimStatus,
    ReportRecord,
    ReportStore,
    StoreLimits,
    report_digest,
)
from smtptls.store.reports_postgres import PostgresReportStore
from tests.integration.reports_store_support import (
    KINDS,
    PG_DSN,
    T0,
    close_store,
    open_store,
    opened,
    record,
    via,
)

# The version-1 layout (before conflicts were kept): one report per key.
V1_SCHEMA = """
CREATE TABLE reports (id {pk}, report_id TEXT NOT NULL, organization TEXT NOT NULL,
    contact_info TEXT NOT NULL, start_ts TEXT NOT NULL, end_ts TEXT NOT NULL, day TEXT NOT NULL,
    received_at TEXT NOT NULL, channel TEXT NOT NULL, remote TEXT NOT NULL, submitter TEXT NOT NULL,
    dkim TEXT NOT NULL, dkim_domain TEXT NOT NULL, policy_domains TEXT NOT NULL,
    successful BIGINT NOT NULL, failed BIGINT NOT NULL, warnings TEXT NOT NULL, raw_json TEXT NOT NULL,
    UNIQUE (report_id, organization));
CREATE TABLE policies (id {pk}, report_pk BIGINT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL, day TEXT NOT NULL, organization TEXT NOT NULL, policy_type TEXT NOT NULL,
    policy_domain TEXT NOT NULL, policy_strings TEXT NOT NULL, mx_hosts TEXT NOT NULL,
    successful BIGINT NOT NULL, failed BIGINT NOT NULL);
CREATE TABLE failures (id {pk}, policy_pk BIGINT NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    report_pk BIGINT NOT NULL, idx INTEGER NOT NULL, day TEXT NOT NULL, organization TEXT NOT NULL,
    policy_domain TEXT NOT NULL, result_type TEXT NOT NULL, sending_mta_ip TEXT NOT NULL,
    receiving_mx_hostname TEXT NOT NULL, receiving_mx_helo TEXT NOT NULL, receiving_ip TEXT NOT NULL,
    failed_session_count BIGINT NOT NULL, additional_information TEXT NOT NULL,
    failure_reason_code TEXT NOT NULL);
CREATE TABLE quarantine (id {pk}, received_at TEXT NOT NULL, channel TEXT NOT NULL, remote TEXT NOT NULL,
    reason TEXT NOT NULL, size BIGINT NOT NULL, sha256 TEXT NOT NULL, raw {blob} NOT NULL)
"""
V1_ROWS = [
    "INSERT INTO reports (report_id, organization, contact_info, start_ts, end_ts, day, received_at, channel, "
    "remote, submitter, dkim, dkim_domain, policy_domains, successful, failed, warnings, raw_json) VALUES "
    "('old-1', 'Old Org', '', '2024-05-01T00:00:00Z', '2024-05-01T23:59:59Z', '2024-05-01', "
    "'2024-05-02T00:00:00Z', 'smtp', '', '', 'pass', 'old.example', '[\"v.example\"]', 7, 1, '[]', "
    "'{\"report-id\": \"old-1\", \"organization-name\": \"Old Org\"}')",
    "INSERT INTO policies (report_pk, idx, day, organization, policy_type, policy_domain, policy_strings, "
    "mx_hosts, successful, failed) VALUES (1, 0, '2024-05-01', 'Old Org', 'sts', 'v.example', '[]', '[]', 7, 1)",
    "INSERT INTO failures (policy_pk, report_pk, idx, day, organization, policy_domain, result_type, "
    "sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip, failed_session_count, "
    "additional_information, failure_reason_code) VALUES (1, 1, 0, '2024-05-01', 'Old Org', 'v.example', "
    "'certificate-expired', '', '', '', '', 1, '', '')",
]




@pytest.mark.parametrize("kind", KINDS)
async def test_forged_post_then_dkim_mail_both_kept_the_mail_counted(kind, tmp_path):
    async with opened(kind, tmp_path) as s:
        forged = await s.add_report(record("r-1", 0, 999_999), via(Channel.HTTPS))
        assert (forged.status, forged.counted) == (AddStatus.STORED, True)
        genuine = await s.add_report(record("r-1", 500, 3), via(Channel.SMTP, DkimStatus.PASS))
        assert (genuine.status, genuine.counted, genuine.conflicts_with) == (AddStatus.CONFLICT, True,
                                                                            (forged.pk,))
        summary = await s.summary(domain="v.example")
        assert (summary.reports, summary.successful, summary.failed) == (1, 500, 3)
        assert summary.days[0].by_result_type == {"starttls-not-supported": 3}
        (domain,) = await s.domains()
        assert (domain.reports, domain.failed) == (1, 3)
        listed = {r.pk: r for r in await s.list_reports()}
        assert listed[forged.pk].conflict and not listed[forged.pk].counted
        assert listed[genuine.pk].provenance == "dkim" and listed[genuine.pk].counted
        shown = await s.get_report("r-1")  # by report-id: the counted one
        assert shown.pk == genuine.pk and shown.conflicts_with == (forged.pk,)
        # The same JSON value (pretty-printed) is a duplicate, not a third report.
        again = await s.add_report(record("r-1", 0, 999_999, indent=2), via(Channel.HTTPS))
        assert (again.status, again.pk, again.counted) == (AddStatus.DUPLICATE, forged.pk, False)
        assert (await s.counts())["reports"] == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_a_duplicate_arriving_signed_makes_its_report_the_counted_one(kind, tmp_path):
    async with opened(kind, tmp_path) as s:
        first = await s.add_report(record("r-2", 1, 100), via(Channel.HTTPS))
        second = await s.add_report(record("r-2", 9, 1), via(Channel.HTTPS))
        assert (second.status, second.counted) == (AddStatus.CONFLICT, False)  # equals: the earliest
        signed = await s.add_report(record("r-2", 9, 1), via(Channel.SMTP, DkimStatus.PASS))
        assert (signed.status, signed.pk, signed.counted) == (AddStatus.DUPLICATE, second.pk, True)
        assert (await s.summary()).failed == 1
        assert {r.pk: r.provenance for r in await s.list_reports()} == {first.pk: "https", second.pk: "dkim"}


@pytest.mark.parametrize("kind", KINDS)
async def test_quarantine_older_than_its_age_limit_keeps_a_digest_and_an_excerpt(kind, tmp_path):
    limits = StoreLimits(quarantine_max_age_days=30, quarantine_excerpt=100)
    async with opened(kind, tmp_path, limits) as s:
        old_raw, new_raw = b"o" * 5_000, b"n" * 5_000
        old = await s.add_quarantine(old_raw, "junk", via(Channel.HTTPS, at=T0 - timedelta(days=31)))
        assert (await s.get_quarantine(old)).raw == old_raw  # whole while young
        new = await s.add_quarantine(new_raw, "junk", via(Channel.HTTPS, at=T0))
        aged, kept = await s.get_quarantine(old), await s.get_quarantine(new)
        assert (aged.excerpt, aged.raw, aged.size) == (True, old_raw[:100], 5_000)
        assert aged.sha256 == hashlib.sha256(old_raw).hexdigest()
        assert (kept.excerpt, kept.raw) == (False, new_raw)


def test_report_digest_ignores_member_order_and_whitespace_only():
    assert report_digest('{"a": 1, "b": [1, 2]}') == report_digest('{"b":[1,2],\n "a":1}')
    assert report_digest('{"a": 1}') != report_digest('{"a": 2}')
    assert len(report_digest("not json")) == 64


async def test_sqlite_version_1_database_is_migrated(tmp_path):
    path = tmp_path / "reports.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_SCHEMA.format(pk="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB") + ";")
        for statement in V1_ROWS:
            db.execute(statement)
        db.execute("INSERT INTO quarantine (received_at, channel, remote, reason, size, sha256, raw) "
                   "VALUES ('2024-05-02T00:00:00Z', 'https', '', 'junk', 3, 'x', X'616263')")
    async with opened("sqlite", tmp_path) as s:
        await check_migrated(s)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        assert db.execute("SELECT COUNT(*) FROM policies WHERE report_pk = 1").fetchone() == (1,)  # kept
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []


@pytest.mark.postgres
async def test_postgres_version_1_schema_is_migrated(tmp_path):
    schema = f"test_v1_{uuid.uuid4().hex[:12]}"
    try:
        conn = await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True)
    except psycopg.Error as exc:
        pytest.fail(f"PostgreSQL unavailable: {exc}")
    async with conn:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(f'SET search_path TO "{schema}"')
        ddl = V1_SCHEMA.format(pk="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", blob="BYTEA")
        for statement in [*ddl.split(";"), *V1_ROWS]:
            await conn.execute(statement)
        await conn.execute("INSERT INTO quarantine (received_at, channel, remote, reason, size, sha256, raw) "
                           "VALUES ('2024-05-02T00:00:00Z', 'https', '', 'junk', 3, 'x', 'abc'::bytea)")
    async with opened("postgres", tmp_path, schema=schema) as s:
        await check_migrated(s)


async def check_migrated(s: ReportStore) -> None:
    (old,) = await s.list_reports()
    assert (old.report_id, old.provenance, old.conflict, old.counted) == ("old-1", "dkim", False, True)
    assert (await s.summary()).failed == 1
    (q,) = await s.list_quarantine()
    assert not q.excerpt
    # The old report's JSON again is a duplicate; another body under its key a conflict.
    import json

    same = ReportRecord.from_dict({"report-id": "old-1", "organization-name": "Old Org",
                                   "date-range": {"start-datetime": "2024-05-01T00:00:00Z",
                                                  "end-datetime": "2024-05-01T23:59:59Z"}},
                                  raw_json=json.dumps({"report-id": "old-1", "organization-name": "Old Org"}))
    assert (await s.add_report(same, via(Channel.HTTPS))).status is AddStatus.DUPLICATE
    other = record("old-1", 1, 0, org="Old Org")
    result = await s.add_report(other, via(Channel.HTTPS))
    assert (result.status, result.counted) == (AddStatus.CONFLICT, False)  # the DKIM one stays counted


@pytest.mark.postgres
async def test_two_postgres_receivers_decide_each_key_once(tmp_path):
    schema = f"test_race_{uuid.uuid4().hex[:12]}"
    a = await open_store("postgres", tmp_path, schema=schema)
    b = PostgresReportStore(PG_DSN, schema=schema, max_size=8)
    await b.open()
    try:
        keys = [f"race-{i}" for i in range(20)]
        results = await asyncio.gather(*(
            store.add_report(record(k, ok, 1), via(Channel.HTTPS))
            for k in keys for store, ok in ((a, 1), (b, 2), (a, 3), (b, 1))))  # 4th: a duplicate
        statuses = [r.status for r in results]
        assert statuses.count(AddStatus.DUPLICATE) == len(keys)
        assert statuses.count(AddStatus.STORED) == len(keys)  # the first of each key
        assert statuses.count(AddStatus.CONFLICT) == 2 * len(keys)
        listed = await a.list_reports(limit=1000)
        assert len(listed) == 3 * len(keys) and all(r.conflict for r in listed)
        counted = sorted(r.report_id for r in listed if r.counted)
        assert counted == sorted(keys)  # exactly one counted per key
        assert (await b.summary()).reports == len(keys)
    finally:
        await b.close()
        await close_store(a)
