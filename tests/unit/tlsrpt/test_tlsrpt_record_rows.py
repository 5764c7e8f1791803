"""A parsed report flattened into store rows member by member (``ReportRecord.from_report``
on a :class:`Report`) gives what flattening its RFC 8460 §4 JSON form gives
(``to_dict`` then ``from_dict``): the same record, or the same error."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from test_tlsrpt_properties import _reports
from tlsrpt_samples import corpus_files, own_files

from smtptls.errors import ReportError
from smtptls.store.reports_base import MAX_COUNT, MAX_TEXT, ReportRecord
from smtptls.tlsrpt.reader import parse_report_body
from smtptls.tlsrpt.report import FailureDetail, PolicyResult, Report


class _JsonForm:
    """The report seen only through ``to_dict``: the general way of ``from_report``."""

    def __init__(self, report: Report) -> None:
        self.report, self.warnings = report, report.warnings

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict()


def _outcome(report: Any, text: str, tree: Any) -> tuple[Any, ...]:
    try:
        return ("record", ReportRecord.from_report(report, raw_json=text, tree=tree))
    except ReportError as exc:
        return ("error", type(exc).__name__, str(exc), getattr(exc, "path", None))


def assert_rows_the_same(report: Report, text: str, tree: Any = None) -> None:
    assert _outcome(report, text, tree) == _outcome(_JsonForm(report), text, tree)


@settings(max_examples=80, deadline=None)
@given(_reports())
def test_rfc8460_4_4_generated_reports_flatten_the_same_both_ways(report):
    assert_rows_the_same(report, report.to_json())


def _read_and_compare(path: Path) -> None:
    parsed = parse_report_body(path.read_bytes())
    assert_rows_the_same(parsed.report, parsed.text, parsed.tree)


@pytest.mark.parametrize("path", own_files(".json"))
def test_rfc8460_4_4_own_reports_flatten_the_same_both_ways(path: Path):
    _read_and_compare(path)


@pytest.mark.parametrize("path", corpus_files(".json"))
def test_rfc8460_4_4_real_reports_flatten_the_same_both_ways(corpus, path):
    _read_and_compare(Path(path))


def _example() -> Report:
    detail = FailureDetail("certificate-expired", 3, sending_mta_ip="192.0.2.1",
                           receiving_mx_hostname="MX.Example.", receiving_ip="198.51.100.1")
    policy = PolicyResult("sts", "Example.NET.", 10, 3, ("version: STSv1",), ("mx.example",),
                          (detail,))
    return Report("Org", datetime(2024, 5, 1, 0, 0, 0, 500000, tzinfo=UTC),
                  datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC), None, "r-1", (policy,))


@pytest.mark.parametrize("change", [
    {},  # fractions of a second, no contact, names to normalize
    {"report_id": ""},  # refused alike
    {"report_id": "x" * (MAX_TEXT + 5), "organization_name": "é\ud800"},
    {"contact_info": "tls@example.org"},
])
def test_rfc8460_4_4_edge_values_flatten_the_same_both_ways(change):
    report = dataclasses.replace(_example(), **change)
    assert_rows_the_same(report, report.to_json())


@pytest.mark.parametrize("policy_change", [
    {"policy_domain": None},
    {"total_successful_session_count": MAX_COUNT + 1},  # past the store's bound
    {"mx_host": ("x" * (MAX_TEXT + 1),) * 3},
    {"policy_type": "something-new"},
    {"failure_details": (FailureDetail("new-type", 1, receiving_mx_helo="é"),)},
    {"failure_details": (FailureDetail("", -1),)},
])
def test_rfc8460_4_4_edge_policies_flatten_the_same_both_ways(policy_change):
    base = _example()
    policy = dataclasses.replace(base.policies[0], **policy_change)
    report = dataclasses.replace(base, policies=(policy,))
    assert_rows_the_same(report, report.to_json())
