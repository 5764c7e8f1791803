"""Batch writes of the report store (``add_reports``, ``add_quarantines``) on SQLite and
a real PostgreSQL: one transaction per batch, each item as ``add_report`` would store
it (duplicates, conflicts, counted report), results in item order, all or nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3

import pytest

from smtptls.errors import StoreError
from smtptls.store.reports_base import AddStatus, Channel, DkimStatus, ReportRecord, StoreLimits
from smtptls.store.reports_sql import KNOWN_KEYS_STEP, prepare_report
from tests.integration.reports_store_support import KINDS, opened, record, via


def many(n: int, prefix: str = "b") -> list[ReportRecord]:
    return [record(f"{prefix}-{i}", i, 1) for i in range(n)]


@pytest.mark.parametrize("kind", KINDS)
async def test_add_reports_stores_a_batch_with_results_in_item_order(kind, tmp_path):
    async with opened(kind, tmp_path) as s:
        records = many(50)
        results = await s.add_reports([(r, via(Channel.IMPORT)) for r in records])
        assert [r.status for r in results] == [AddStatus.STORED] * 50
        assert len({r.pk for r in results}) == 50
        for rec, res in zip(records, results, strict=True):
            shown = await s.get_report(res.pk)
            assert shown.report_id == rec.report_id and shown.successful == rec.successful
        assert (await s.counts())["reports"] == 50
        assert (await s.summary()).successful == sum(range(50))
        assert await s.add_reports([]) == []


@pytest.mark.parametrize("kind", KINDS)
async def test_rfc8460_4_4_batch_is_idempotent_like_add_report(kind, tmp_path):
    async with opened(kind, tmp_path) as s:
        first = await s.add_report(record("k-1", 5, 1), via(Channel.HTTPS))
        batch = [
            (record("k-1", 5, 1, indent=2), via(Channel.IMPORT)),  # same value: duplicate
            (record("k-2", 7, 0), via(Channel.IMPORT)),
            (record("k-2", 7, 0), via(Channel.IMPORT)),  # twice in one batch: duplicate
            (record("k-3", 1, 1), via(Channel.HTTPS)),
            (record("k-3", 2, 2), via(Channel.SMTP, DkimStatus.PASS)),  # conflict in the batch
        ]
        res = await s.add_reports(batch)
        assert [r.status for r in res] == [AddStatus.DUPLICATE, AddStatus.STORED,
                                          AddStatus.DUPLICATE, AddStatus.STORED,
                                          AddStatus.CONFLICT]
        assert res[0].pk == first.pk and res[2].pk == res[1].pk
        assert res[4].counted and res[4].conflicts_with == (res[3].pk,)
        assert (await s.counts())["reports"] == 4
        # The whole batch again: every item a duplicate, nothing new stored.
        again = await s.add_reports(batch)
        assert [r.status for r in again] == [AddStatus.DUPLICATE] * 5
        assert [r.pk for r in again] == [first.pk, res[1].pk, res[1].pk, res[3].pk, res[4].pk]
        assert (await s.counts())["reports"] == 4
        summary = await s.summary()
        assert (summary.reports, summary.successful, summary.failed) == (3, 5 + 7 + 2, 1 + 0 + 2)


@pytest.mark.parametrize("kind", KINDS)
async def test_rfc8460_4_4_a_key_is_its_report_id_and_organization_in_a_batch(kind, tmp_path):
    # The batch reads the stored keys among its report ids at once: a report-id known
    # under another organization is a new key; the same key later in the batch is not.
    async with opened(kind, tmp_path) as s:
        await s.add_report(record("one-id", 1, 0, org="First"), via(Channel.HTTPS))
        res = await s.add_reports([
            (record("one-id", 2, 0, org="Second"), via(Channel.IMPORT)),
            (record("one-id", 3, 0, org="Third"), via(Channel.IMPORT)),
            (record("one-id", 4, 0, org="Second"), via(Channel.IMPORT)),  # conflict
            (record("one-id", 1, 0, org="First"), via(Channel.IMPORT)),  # duplicate
        ])
        assert [r.status for r in res] == [AddStatus.STORED, AddStatus.STORED,
                                          AddStatus.CONFLICT, AddStatus.DUPLICATE]
        assert res[2].conflicts_with == (res[0].pk,)
        assert res[0].counted is True and res[1].counted is True


@pytest.mark.parametrize("kind", KINDS)
async def test_rfc8460_4_4_known_keys_are_found_past_one_lookup_of_report_ids(kind, tmp_path):
    # More report ids than one lookup of stored keys takes: a known key in each part.
    async with opened(kind, tmp_path) as s:
        n = 2 * KNOWN_KEYS_STEP + 7
        records = many(n, "w")
        known = [records[3], records[KNOWN_KEYS_STEP + 5], records[-1]]
        firsts = await s.add_reports([(r, via(Channel.HTTPS)) for r in known])
        res = await s.add_reports([(r, via(Channel.IMPORT)) for r in records])
        dup = {r.report_id for r in known}
        assert [r.status for r in res] == [
            AddStatus.DUPLICATE if rec.report_id in dup else AddStatus.STORED
            for rec in records]
        assert [res[3].pk, res[KNOWN_KEYS_STEP + 5].pk, res[-1].pk] == [f.pk for f in firsts]
        assert (await s.counts())["reports"] == n


def _folded(i: int) -> ReportRecord:
    # three failure details of distinct types: folded by a limit of two rows
    data = json.loads(record(f"p-{i}", i, 3).raw_json)
    data["policies"][0]["failure-details"] = [
        {"result-type": t, "failed-session-count": 1}
        for t in ("certificate-expired", "starttls-not-supported", "validation-failure")]
    return ReportRecord.from_dict(data, raw_json=json.dumps(data))


@pytest.mark.parametrize("kind", KINDS)
async def test_rfc8460_4_4_prepared_rows_are_stored_as_the_record_would_be(kind, tmp_path):
    # A parser process hands over the rows prepared (prepare_report); the store keeps
    # them exactly as it keeps the record itself: the same reports, policies, failures.
    limits = StoreLimits(max_failure_rows=2)
    records = [_folded(i) for i in range(3)] + [record("p-0", 9, 9)]  # a conflict too
    stored = []
    for prepared in (False, True):
        async with opened(kind, tmp_path / str(prepared), limits) as s:
            items = [(prepare_report(r, limits) if prepared else r, via(Channel.IMPORT))
                     for r in records]
            res = await s.add_reports(items)
            shown = [await s.get_report(r.pk) for r in res]
            stored.append(([(r.status, r.counted) for r in res],
                           [(x.report_id, x.successful, x.failed, x.policy_domains,
                             x.policies, x.failure_rows, x.conflict, x.counted, x.raw_json)
                            for x in shown],
                           (await s.summary()).to_dict()))
    assert stored[0] == stored[1]
    assert stored[0][0][-1] == (AddStatus.CONFLICT, False)  # the first of a key counts
    folded = stored[0][1][1][4][0].failures  # two rows as given, the third one folded
    assert len(folded) == 3 and "folded" in folded[-1].additional_information


async def test_rows_prepared_under_other_limits_are_refused(tmp_path):
    async with opened("sqlite", tmp_path, StoreLimits(max_failure_rows=2)) as s:
        with pytest.raises(ValueError, match="other store limits"):
            await s.add_reports([(prepare_report(_folded(1), StoreLimits()), via(Channel.IMPORT))])
        assert (await s.counts())["reports"] == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_concurrent_batches_sharing_keys_store_each_report_once(kind, tmp_path):
    async with opened(kind, tmp_path) as s:
        records = many(40, "c")
        forward = [(r, via(Channel.IMPORT)) for r in records]
        backward = list(reversed(forward))
        out = await asyncio.gather(s.add_reports(forward), s.add_reports(backward),
                                   s.add_reports(forward[10:30]))
        assert (await s.counts())["reports"] == 40
        pks = {r.pk for batch in out for r in batch}
        assert len(pks) == 40
        assert sum(r.status is AddStatus.STORED for batch in out for r in batch) == 40


@pytest.mark.parametrize("kind", KINDS)
async def test_add_quarantines_keeps_each_submission_in_order(kind, tmp_path):
    async with opened(kind, tmp_path) as s:
        raws = [b"junk %d" % i for i in range(5)]
        pks = await s.add_quarantines([(raw, f"reason {i}", via(Channel.IMPORT))
                                       for i, raw in enumerate(raws)])
        assert len(set(pks)) == 5
        for i, (pk, raw) in enumerate(zip(pks, raws, strict=True)):
            entry = await s.get_quarantine(pk)
            assert (entry.raw, entry.reason) == (raw, f"reason {i}")
        assert await s.add_quarantines([]) == []


async def test_sqlite_batch_is_one_transaction_all_or_nothing(tmp_path):
    path = tmp_path / "reports.sqlite3"  # where opened("sqlite", ...) keeps it
    async with opened("sqlite", tmp_path) as s:
        with sqlite3.connect(path) as db:  # a database that refuses one report of the batch
            db.execute("CREATE TRIGGER refuse BEFORE INSERT ON reports WHEN NEW.report_id = 'bad' "
                       "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        batch = [(record("ok-1", 1, 0), via(Channel.IMPORT)), (record("bad", 1, 0), via(Channel.IMPORT))]
        with pytest.raises(StoreError, match="refused"):
            await s.add_reports(batch)
        assert (await s.counts())["reports"] == 0
        assert (await s.add_reports(batch[:1]))[0].status is AddStatus.STORED


def test_lone_surrogates_in_report_json_become_replacement_characters():
    data = json.loads(record("x", 1, 0).raw_json)
    rec = ReportRecord.from_dict({**data, "report-id": json.loads('"bad-\\ud800"')})
    assert rec.report_id == "bad-\ufffd"
    rec.raw_json.encode("utf-8")  # storable


async def test_a_report_id_with_a_lone_surrogate_is_stored(tmp_path):
    async with opened("sqlite", tmp_path) as s:
        data = json.loads(record("x", 1, 0).raw_json)
        rec = ReportRecord.from_dict({**data, "report-id": json.loads('"bad-\\ud800"')})
        (res,) = await s.add_reports([(rec, via(Channel.IMPORT))])
        assert (await s.get_report(res.pk)).report_id == "bad-\ufffd"
