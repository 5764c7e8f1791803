"""The group committer: concurrent reports share a transaction, each caller answered
with its own result only after the commit; failures and back-pressure reach the caller
(RFC 8460 §5.4: the sender retries)."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
from datetime import UTC, datetime

import pytest

from smtptls.errors import StoreError
from smtptls.services.reports_server.commit_queue import CommitQueueFull, GroupCommitter
from smtptls.services.reports_server.intake import INLINE_PARSE_MAX, ReportIntake
from smtptls.store.reports_base import AddStatus, Channel, Intake, ReportRecord
from smtptls.store.reports_sqlite import SqliteReportStore


def record(report_id: str, ok: int = 5) -> ReportRecord:
    doc = {"organization-name": "Commit Org", "report-id": report_id,
           "contact-info": "x@commit.example",
           "date-range": {"start-datetime": "2024-06-01T00:00:00Z",
                          "end-datetime": "2024-06-01T23:59:59Z"},
           "policies": [{"policy": {"policy-type": "no-policy-found",
                                    "policy-domain": "commit.example"},
                         "summary": {"total-successful-session-count": ok,
                                     "total-failure-session-count": 0}}]}
    return ReportIntake(None).parse_body(json.dumps(doc).encode())  # type: ignore[arg-type]


def intake() -> Intake:
    return Intake(Channel.HTTPS, datetime.now(UTC), remote="127.0.0.1")


@pytest.fixture
async def store(tmp_path):
    s = SqliteReportStore(tmp_path / "r.sqlite3")
    await s.open()
    yield s
    await s.close()


async def test_concurrent_reports_share_commits_and_each_gets_its_own_result(store):
    committer = GroupCommitter(store, max_batch=256)
    results = await asyncio.gather(*(committer.add(record(f"r-{i}"), intake())
                                     for i in range(100)))
    assert [r.status for r in results] == [AddStatus.STORED] * 100
    assert len({r.pk for r in results}) == 100
    for i, r in enumerate(results):  # each caller holds its own report's row
        stored = await store.get_report(r.pk)
        assert stored is not None and stored.report_id == f"r-{i}"
    assert committer.committed == 100
    assert committer.commits < 100  # grouped: fewer transactions than reports
    await committer.close()


async def test_a_batch_sees_its_own_earlier_reports(store):
    committer = GroupCommitter(store, max_batch=256)
    first, again, other = await asyncio.gather(
        committer.add(record("same"), intake()), committer.add(record("same"), intake()),
        committer.add(record("same", ok=9), intake()))
    assert first.status is AddStatus.STORED
    assert again.status is AddStatus.DUPLICATE and again.pk == first.pk
    assert other.status is AddStatus.CONFLICT and first.pk in other.conflicts_with
    await committer.close()


async def test_batch_of_one_commits_every_report_alone(store):
    committer = GroupCommitter(store, max_batch=1)
    await asyncio.gather(*(committer.add(record(f"one-{i}"), intake()) for i in range(10)))
    assert committer.commits == 10
    await committer.close()


async def test_store_down_fails_every_caller_and_none_is_told_stored(store):
    committer = GroupCommitter(store, max_batch=256)
    await store.close()
    outcomes = await asyncio.gather(*(committer.add(record(f"down-{i}"), intake())
                                      for i in range(20)), return_exceptions=True)
    assert all(isinstance(o, StoreError) for o in outcomes)
    assert committer.committed == 0
    await committer.close()


async def test_full_queue_refuses_at_once(store):
    committer = GroupCommitter(store, max_batch=2, max_queue=4)
    outcomes = await asyncio.gather(*(committer.add(record(f"q-{i}"), intake())
                                      for i in range(10)), return_exceptions=True)
    refused = [o for o in outcomes if isinstance(o, CommitQueueFull)]
    stored = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(refused) == 6 and len(stored) == 4
    assert isinstance(refused[0], StoreError)  # answered 503 / 451 like a store failure
    await committer.close()


async def test_close_commits_what_waits_then_refuses_more(store):
    committer = GroupCommitter(store, max_batch=256)
    pending = [asyncio.create_task(committer.add(record(f"c-{i}"), intake())) for i in range(30)]
    await asyncio.sleep(0)  # queued, not yet committed
    await committer.close()
    assert all(t.done() and t.result().status is AddStatus.STORED for t in pending)
    assert (await store.counts())["reports"] == 30
    with pytest.raises(StoreError, match="closing"):
        await committer.add(record("late"), intake())


async def test_a_small_gzip_that_decompresses_past_the_inline_cap_is_still_parsed_whole():
    doc = json.loads(record("big").raw_json)
    detail = doc["policies"][0]
    detail["failure-details"] = [{"result-type": "starttls-not-supported",
                                  "sending-mta-ip": "192.0.2.1", "failed-session-count": 1}
                                 ] * (2 * INLINE_PARSE_MAX // 80)  # compresses to a few kB
    body = gzip.compress(json.dumps(doc).encode())
    assert len(body) <= INLINE_PARSE_MAX
    parsed = await ReportIntake(None)._parse(body)  # type: ignore[arg-type]
    assert parsed.report_id == "big" and len(parsed.raw_json) > INLINE_PARSE_MAX
    assert len(parsed.policies[0].failures) == 2 * INLINE_PARSE_MAX // 80


async def test_one_report_the_store_refuses_fails_only_its_own_sender(store):
    good = [record(f"ok-{i}") for i in range(5)]
    bad = record("bad")
    policy = dataclasses.replace(bad.policies[0], successful=2**70)  # no SQLite integer holds it
    bad = dataclasses.replace(bad, policies=(policy,))
    committer = GroupCommitter(store, max_batch=256)
    outcomes = await asyncio.gather(*(committer.add(r, intake())
                                      for r in [*good[:2], bad, *good[2:]]),
                                    return_exceptions=True)
    assert isinstance(outcomes[2], StoreError)
    stored = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(o.status is AddStatus.STORED for o in stored)  # type: ignore[union-attr]
    assert (await store.counts())["reports"] == 5
    await committer.close()
