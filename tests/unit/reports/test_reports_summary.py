"""Summary assembly, the CSV schema and --since parsing (pure parts of the report store)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import ConfigError, SmtpTlsError
from smtptls.store.reports_base import CSV_COLUMNS, build_summary, parse_since, summary_csv_rows

NOW = datetime(2024, 5, 31, 12, 0, tzinfo=UTC)


def _summary():
    return build_summary(
        domain="example.com", since=None,
        day_rows=[("2024-05-01", "Google", 1, 100, 3), ("2024-05-01", "Microsoft", 2, 50, 0),
                  ("2024-05-02", "Google", 1, 10, 5)],
        failure_rows=[("2024-05-01", "Google", "certificate-expired", "mx1.example.com", "192.0.2.1", 2),
                      ("2024-05-01", "Google", "starttls-not-supported", "mx2.example.com", "192.0.2.1", 1),
                      ("2024-05-02", "Google", "certificate-expired", "mx1.example.com", "192.0.2.9", 5)],
    )


def test_summary_totals_per_day_and_overall():
    s = _summary()
    assert [(d.day, d.reports, d.successful, d.failed) for d in s.days] == [
        (date(2024, 5, 1), 3, 150, 3), (date(2024, 5, 2), 1, 10, 5)]
    assert (s.reports, s.successful, s.failed) == (4, 160, 8)


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        pytest.param("by_result_type", {"certificate-expired": 2, "starttls-not-supported": 1}, id="result-type"),
        pytest.param("by_receiving_mx", {"mx1.example.com": 2, "mx2.example.com": 1}, id="receiving-mx"),
        pytest.param("by_sending_ip", {"192.0.2.1": 3}, id="sending-ip"),
    ],
)
def test_summary_failure_breakdowns_of_a_day(attr, expected):
    assert getattr(_summary().days[0], attr) == expected


def test_summary_by_organization_and_matrix():
    s = _summary()
    assert s.days[0].by_organization["Microsoft"] == {"reports": 2, "successful": 50, "failed": 0}
    assert s.failures[0] == ("certificate-expired", "mx1.example.com", "Google", "192.0.2.9", 5)
    assert sum(n for *_, n in s.failures) == 8


def test_summary_json_schema_keys():
    d = _summary().to_dict()
    assert set(d) == {"domain", "since", "totals", "days", "failures"}
    assert d["totals"] == {"reports": 4, "successful_sessions": 160, "failed_sessions": 8}
    assert set(d["days"][0]) == {"date", "reports", "successful_sessions", "failed_sessions",
                                 "failures_by_result_type", "failures_by_receiving_mx",
                                 "failures_by_sending_ip", "by_organization"}


def test_summary_csv_rows_follow_the_columns():
    rows = summary_csv_rows(_summary())
    assert all(len(r) == len(CSV_COLUMNS) for r in rows)
    summaries = [r for r in rows if r[1] == "summary"]
    failures = [r for r in rows if r[1] == "failure"]
    assert sum(int(r[3]) for r in summaries) == 160
    assert sum(int(r[4]) for r in summaries) == 8
    assert sum(int(r[8]) for r in failures) == 8


def test_empty_summary():
    s = build_summary(domain=None, since=None, day_rows=[], failure_rows=[])
    assert (s.days, s.failures, s.reports) == ((), (), 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("30d", date(2024, 5, 1), id="days"),
        pytest.param("2w", date(2024, 5, 17), id="weeks"),
        pytest.param("12h", date(2024, 5, 31), id="hours"),
        pytest.param("36H", date(2024, 5, 30), id="upper-case-unit"),
        pytest.param("2024-01-02", date(2024, 1, 2), id="iso-date"),
    ],
)
def test_parse_since(text, expected):
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "30", "30y", "-3d", "2024-13-01", "9" * 40,
                                  "999999d"])
def test_parse_since_rejects(text):
    with pytest.raises(ConfigError):
        parse_since(text, now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_property_parse_since_only_typed_errors(text):
    try:
        assert isinstance(parse_since(text, now=NOW), date)
    except SmtpTlsError:
        pass
