"""Findings, reports and bulk inputs: validation, round trips, typed errors only."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from smtptls.check import evaluate
from smtptls.check.bulk import BulkSummary, parse_domain_lines, read_results
from smtptls.check.findings import Area, Finding, Severity, worst_severity
from smtptls.check.report import SCHEMA, CheckReport
from smtptls.errors import SmtpTlsError

from .builders import facts, host, probe, tlsa_311

finding_st = st.builds(
    Finding,
    code=st.from_regex(r"[a-z][a-z0-9.\-]{0,40}", fullmatch=True),
    severity=st.sampled_from(list(Severity)),
    area=st.sampled_from(list(Area)),
    subject=st.text(max_size=50),
    message=st.text(max_size=200),
    fix=st.none() | st.text(max_size=100),
    rfc=st.none() | st.text(max_size=20),
)


@pytest.mark.parametrize(("kwargs", "ok"), [
    ({"code": "mx.none"}, True),
    ({"code": "has space"}, False),
    ({"code": ""}, False),
    ({"severity": "fatal"}, False),
    ({"area": "nowhere"}, False),
    ({"message": 42}, False),
], ids=["valid", "space-in-code", "empty-code", "bad-severity", "bad-area", "non-text"])
def test_finding_validation(kwargs, ok):
    base = {"code": "x.y", "severity": "error", "area": "mx", "subject": "d",
            "message": "m"}
    base.update(kwargs)
    if ok:
        assert Finding(**base).code == base["code"]
    else:
        with pytest.raises(SmtpTlsError):
            Finding(**base)


def test_finding_text_is_bounded_and_single_line():
    f = Finding("a.b", Severity.INFO, Area.MX, "s\nt", "x" * 5000)
    assert "\n" not in f.subject
    assert len(f.message) <= 2000


@given(finding_st)
def test_finding_round_trip(f):
    assert Finding.from_dict(f.to_dict()) == f


@given(st.lists(finding_st, max_size=10))
def test_worst_severity_is_the_maximum(fs):
    w = worst_severity(fs)
    if not fs:
        assert w is None
    else:
        assert w.rank == max(f.severity.rank for f in fs)


def test_report_round_trip_keeps_sections():
    report = evaluate(facts(sts=("v=STSv1; id=1",), hosts=(
        host("mx1.example.com", tlsa=(tlsa_311("mx1.example.com"),),
             probes=(probe("mx1.example.com"),)),)))
    doc = report.to_dict()
    assert doc["schema"] == SCHEMA
    again = CheckReport.from_dict(json.loads(json.dumps(doc)))
    assert again.to_dict() == doc
    assert again.findings == report.findings


@pytest.mark.parametrize("doc", [
    None, [], {}, {"schema": "other/1", "domain": "x"},
    {"schema": SCHEMA}, {"schema": SCHEMA, "domain": "x", "checked_at": "yesterday"},
    {"schema": SCHEMA, "domain": "x", "checked_at": "2025-01-01T00:00:00Z",
     "findings": [{"code": "a"}]},
    {"schema": SCHEMA, "domain": "x", "checked_at": "2025-01-01T00:00:00Z", "elapsed": "1"},
], ids=["null", "list", "empty", "other-schema", "no-domain", "bad-time", "bad-finding",
        "bad-elapsed"])
def test_report_from_dict_rejects_with_typed_error(doc):
    with pytest.raises(SmtpTlsError):
        CheckReport.from_dict(doc)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(
                        st.sampled_from(["schema", "domain", "checked_at", "findings",
                                         "adoption", "elapsed", "x"]), c, max_size=6),
                    max_leaves=20))
def test_report_from_dict_only_typed_errors(doc):
    try:
        CheckReport.from_dict(doc)
    except SmtpTlsError:
        pass


@pytest.mark.parametrize(("lines", "domains", "invalid", "dups"), [
    (["example.com", "Example.COM.", "# comment", "", "b.example"], ["example.com",
                                                                     "b.example"], 0, 1),
    (["1,google.com", "2,youtube.com"], [], 2, 0),
    (["google.com,1", "  x.org  # note"], ["google.com", "x.org"], 0, 0),
    (["-bad-.com", "a..b", "192.0.2.1"], [], 3, 0),
], ids=["comments-and-duplicates", "rank-first-csv", "domain-first-csv", "invalid-names"])
def test_parse_domain_lines(lines, domains, invalid, dups):
    got = parse_domain_lines(lines)
    assert got.domains == domains
    assert len(got.invalid) == invalid
    assert got.duplicates == dups


@given(st.lists(st.text(max_size=80), max_size=30))
@example([","])  # a line of separators only: nothing left once they are spaces
def test_parse_domain_lines_never_raises_untyped(lines):
    got = parse_domain_lines(lines)
    assert len(set(got.domains)) == len(got.domains)


@settings(max_examples=50)
@given(st.lists(st.text(max_size=200), max_size=10))
def test_read_results_counts_bad_lines(lines):
    reports, bad = read_results(lines)
    assert len(reports) + bad == sum(1 for x in lines if x.strip())


def test_read_results_resumes_past_a_truncated_line():
    good = json.dumps(evaluate(facts()).to_dict())
    reports, bad = read_results([good, good[: len(good) // 2]])
    assert [r.domain for r in reports] == ["example.com"]
    assert bad == 1


def test_bulk_summary_percentages_and_top_failures():
    s = BulkSummary()
    s.add(evaluate(facts(sts=("v=STSv1; id=1",), tlsrpt=("v=TLSRPTv1; rua=mailto:a@b.example",))))
    s.add(evaluate(facts(hosts=(host("mx1.example.com", addresses=()),))))
    d = s.to_dict()
    assert d["schema"] == "smtptls.check-summary/1"
    assert d["adoption"]["mta_sts_policy"] == {"count": 1, "percent": 50.0}
    assert d["adoption"]["tlsrpt"]["percent"] == 50.0
    assert d["adoption"]["mta_sts_modes"] == {"enforce": 1}
    assert d["top_failures"][0]["code"] == "mx.host-no-address"
    assert "top failures" in s.render()
