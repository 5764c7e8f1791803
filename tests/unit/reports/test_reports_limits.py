"""Pure parts of the intake's limits: in-flight budget, rate limiter, folded failure
details, which report of a key counts, and the SMTP reply wording."""

from __future__ import annotations

import pytest

from smtptls.services.reports_server.intake import IntakeOutcome, Outcome
from smtptls.services.reports_server.limits import InflightBudget, RateLimiter, source_key
from smtptls.services.reports_server.mail import declared_size, delivery_reply
from smtptls.store.reports_base import (
    AGGREGATE_OTHER,
    MAX_AGGREGATE_TYPES,
    ReportRecord,
    counted_report,
)


def test_budget_reserves_grows_and_releases():
    budget = InflightBudget(100)
    a = budget.reserve(60)
    assert a is not None and budget.used == 60
    assert budget.reserve(41) is None and budget.refused == 1
    b = budget.hold()
    assert b.grow(40) and budget.used == 100
    assert not b.grow(41) and b.size == 40
    a.release()
    a.release()  # once only
    assert budget.used == 40
    with b:
        pass
    assert budget.used == 0


def test_budget_zero_is_unlimited():
    assert InflightBudget(0).reserve(10**12) is not None


def test_rate_limiter_bucket_per_source_and_ipv6_prefix():
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.allow("192.0.2.1", 0.0) == 0.0
    assert limiter.allow("192.0.2.1", 0.0) == 0.0
    assert limiter.allow("192.0.2.1", 0.0) >= 1.0  # burst spent
    assert limiter.allow("192.0.2.2", 0.0) == 0.0  # another address
    assert limiter.allow("192.0.2.1", 1.0) == 0.0  # one token a second
    assert source_key("2001:db8:1:2::5") == source_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert RateLimiter(0, 1).allow("x", 0.0) == 0.0


def test_rate_limiter_forgets_the_least_recent_sources_first():
    limiter = RateLimiter(per_minute=1, burst=1, max_sources=2)
    for who in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        limiter.allow(who, 0.0)
    assert len(limiter._buckets) == 2 and "192.0.2.1" not in limiter._buckets


def record(details: list[tuple[str, int]], policies: int = 1) -> ReportRecord:
    return ReportRecord.from_dict({
        "organization-name": "O", "report-id": "r",
        "date-range": {"start-datetime": "2024-06-01T00:00:00Z", "end-datetime": "2024-06-01T23:59:59Z"},
        "policies": [{"policy": {"policy-type": "sts", "policy-domain": f"d{p}.example"},
                      "summary": {"total-failure-session-count": sum(n for _, n in details)},
                      "failure-details": [{"result-type": rt, "failed-session-count": n,
                                           "receiving-ip": f"192.0.2.{i % 250}"}
                                          for i, (rt, n) in enumerate(details)]}
                     for p in range(policies)]})


def totals(rec: ReportRecord) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in rec.policies:
        for f in p.failures:
            out[f.result_type] = out.get(f.result_type, 0) + f.failed_session_count
    return out


@pytest.mark.parametrize(("name", "details", "limit", "rows"), [
    ("under the limit", [("a", 1)] * 5, 10, 5),
    ("no limit", [("a", 1)] * 50, 0, 50),
    ("two types folded", [("a", 2), ("b", 3)] * 50, 10, 12),
    ("one type folded", [("a", 7)] * 100, 1, 2),
])
def test_bounded_keeps_the_first_rows_and_folds_the_rest_per_type(name, details, limit, rows):
    rec = record(details)
    bounded = rec.bounded(limit)
    assert sum(len(p.failures) for p in bounded.policies) == rows, name
    assert totals(bounded) == totals(rec)
    assert bounded.raw_json == rec.raw_json and bounded.digest == rec.digest
    if rows < len(details):
        assert bounded.policies[0].failures[:limit] == rec.policies[0].failures[:limit]
        assert "folded" in bounded.policies[0].failures[-1].additional_information


def test_bounded_folds_many_result_types_into_other():
    rec = record([(f"type-{i}", 1) for i in range(200)])
    bounded = rec.bounded(5)
    types = [f.result_type for f in bounded.policies[0].failures[5:]]
    assert len(types) == MAX_AGGREGATE_TYPES + 1 and types[-1] == AGGREGATE_OTHER
    assert sum(totals(bounded).values()) == 200


def test_bounded_spreads_the_budget_over_policies():
    bounded = record([("a", 1)] * 30, policies=3).bounded(40)
    assert [len(p.failures) for p in bounded.policies] == [30, 10 + 1, 1]


def test_counted_report_prefers_dkim_then_import_then_the_earliest():
    assert counted_report([(1, "https"), (2, "dkim")]) == 2
    assert counted_report([(1, "https"), (2, "unsigned-mail")]) == 1
    assert counted_report([(3, "import"), (1, "https"), (2, "unsigned-mail")]) == 3
    assert counted_report([(5, "dkim"), (4, "dkim"), (1, "https")]) == 4


@pytest.mark.parametrize(("outcomes", "text"), [
    ([Outcome.STORED], "250 2.0.0 1 report(s) stored"),
    ([Outcome.DUPLICATE], "250 2.0.0 1 duplicate(s) of stored reports, not stored again"),
    ([Outcome.CONFLICT], "250 2.0.0 1 report(s) kept in conflict with a different report of the same "
                         "report-id"),
    ([Outcome.STORED, Outcome.DUPLICATE, Outcome.QUARANTINED],
     "250 2.0.0 1 report(s) stored; 1 duplicate(s) of stored reports, not stored again; 1 kept in quarantine"),
    ([], "250 2.0.0 message kept in quarantine"),
])
def test_delivery_reply_says_what_happened_to_each_report(outcomes, text):
    assert delivery_reply([IntakeOutcome(o) for o in outcomes]) == text


def test_declared_size_reads_rfc1870_size():
    assert declared_size(["BODY=8BITMIME", "SIZE=12345"]) == 12345
    assert declared_size(["size=7"]) == 7
    assert declared_size(["SIZE=x", "SIZE=" + "9" * 20]) is None
    assert declared_size(None) is None
