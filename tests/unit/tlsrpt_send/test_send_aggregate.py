"""Daily aggregation into RFC 8460 §4 reports: counts, grouping, dates, report-id."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from send_helpers import NONE_ORG, SENDING_IP, STS, T0, TLSA_MX1, bad, ok, results

from smtptls.errors import ReportError
from smtptls.tlsrpt import parse_report
from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.aggregate import (
    ContactDomainError,
    DayTally,
    ReportIdentity,
    aggregate,
    build_reports,
    day_range,
    parse_day,
    previous_day,
    report_id,
)
from smtptls.tlsrptsend.results import Failure, SessionResult

DAY = date(2024, 5, 1)
IDENTITY = ReportIdentity("Sender Inc.", "tlsrpt@mta.sender.example", "mta.sender.example")


def one(results, **kw):
    (report,) = aggregate(results, DAY, IDENTITY, **kw)
    return report


@pytest.mark.rfc("8460 4.1")
def test_rfc8460_4_1_date_range_is_the_utc_day():
    start, end = day_range(DAY)
    assert start == datetime(2024, 5, 1, tzinfo=UTC)
    assert end == datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)  # as the §4.5 example
    report = one([ok()])
    d = report.to_dict()["date-range"]
    assert d == {"start-datetime": "2024-05-01T00:00:00Z", "end-datetime": "2024-05-01T23:59:59Z"}


@pytest.mark.rfc("8460 4.1")
@pytest.mark.parametrize(("now", "expected"), [
    (datetime(2024, 5, 2, 0, 0, 1, tzinfo=UTC), date(2024, 5, 1)),
    (datetime(2024, 5, 2, 23, 59, tzinfo=UTC), date(2024, 5, 1)),
    (datetime(2024, 1, 1, 0, 30, tzinfo=UTC), date(2023, 12, 31)),
    # 01:30 at +02:00 is 23:30Z the day before: the previous UTC day is two days back
    (datetime(2024, 5, 2, 1, 30, tzinfo=timezone(timedelta(hours=2))),
     date(2024, 4, 30)),
])
def test_rfc8460_4_1_previous_utc_day(now, expected):
    assert previous_day(now) == expected


@pytest.mark.rfc("8460 4.1")
def test_rfc8460_4_1_results_of_other_days_left_out():
    report = one([ok(), ok(time=T0 + timedelta(days=1)), ok(time=T0 - timedelta(days=1))])
    assert report.total_successful == 1


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_summary_counts_sessions():
    report = one([ok(), ok(), ok(), bad("certificate-expired"), bad("starttls-not-supported")])
    (p,) = report.policies
    assert (p.total_successful_session_count, p.total_failure_session_count) == (3, 2)


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_failure_details_grouped_and_counted():
    report = one([
        bad("certificate-expired"), bad("certificate-expired"),
        bad("certificate-expired", mx="mx2.mail.example.com", ip="192.0.2.11"),
        bad("starttls-not-supported"),
    ])
    details = {(str(d.result_type), d.receiving_mx_hostname, d.receiving_ip):
               d.failed_session_count for d in report.policies[0].failure_details}
    assert details == {
        ("certificate-expired", "mx1.mail.example.com", "192.0.2.10"): 2,
        ("certificate-expired", "mx2.mail.example.com", "192.0.2.11"): 1,
        ("starttls-not-supported", "mx1.mail.example.com", "192.0.2.10"): 1,
    }
    # most frequent first
    assert report.policies[0].failure_details[0].failed_session_count == 2
    assert all(d.sending_mta_ip == SENDING_IP for d in report.policies[0].failure_details)


@pytest.mark.rfc("8460 4.3")
def test_rfc8460_4_3_overlapping_failures_count_once_per_session():
    r = SessionResult(T0, STS, mx_host="mx1.mail.example.com", receiving_ip="192.0.2.10",
                      sending_mta_ip=SENDING_IP,
                      failures=(Failure("certificate-expired"), Failure("certificate-host-mismatch")))
    (p,) = one([r]).policies
    assert p.total_failure_session_count == 1
    assert sorted(str(d.result_type) for d in p.failure_details) == [
        "certificate-expired", "certificate-host-mismatch"]


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_detail_optional_fields_kept():
    report = one([bad("validation-failure", receiving_mx_helo="mx1.helo.example",
                      additional_information="https://mta.sender.example/why",
                      failure_reason_code="X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED")])
    d = report.to_dict()["policies"][0]["failure-details"][0]
    assert d["receiving-mx-helo"] == "mx1.helo.example"
    assert d["additional-information"] == "https://mta.sender.example/why"
    assert d["failure-reason-code"] == "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_policies_kept_apart_by_type_and_strings():
    other_sts = STS.__class__(PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce"),
                              ("*.mail.example.com",))
    report = one([ok(STS), ok(other_sts), bad("tlsa-invalid", TLSA_MX1.__class__(
        PolicyType.TLSA, "example.com", ("3 1 1 aa",)))])
    kinds = sorted((str(p.policy_type), p.policy_string) for p in report.policies)
    assert len(kinds) == 3
    for p in report.policies:
        if p.policy_type is PolicyType.TLSA:
            assert p.mx_host == ()  # mx-host describes sts policies only


@pytest.mark.rfc("8460 4")
def test_rfc8460_4_one_report_per_policy_domain():
    reports = aggregate([ok(STS), ok(TLSA_MX1, mx="mx1.example.net"), ok(NONE_ORG, mx="mx.example.org"),
                         bad("starttls-not-supported", NONE_ORG, mx="mx.example.org")],
                        DAY, IDENTITY)
    assert [r.policy_domains for r in reports] == [("example.com",), ("example.net",),
                                                  ("example.org",)]
    assert len({r.report_id for r in reports}) == 3
    org = reports[2]
    assert org.policies[0].policy_type is PolicyType.NO_POLICY_FOUND
    assert org.to_dict()["policies"][0]["policy"]["policy-string"] == []


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_report_id_stable_for_retries():
    first = one([ok()]).report_id
    # the same day, domain and submitter: the same id, whatever the data
    assert one([ok(), bad("certificate-expired")]).report_id == first
    assert report_id(DAY, "EXAMPLE.com.", "MTA.sender.example") == first
    assert first.endswith("@mta.sender.example")


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(("day", "domain", "submitter"), [
    pytest.param(date(2024, 5, 2), "example.com", "mta.sender.example", id="other-day"),
    pytest.param(DAY, "example.net", "mta.sender.example", id="other-domain"),
    pytest.param(DAY, "example.com", "other.sender.example", id="other-submitter"),
])
def test_rfc8460_4_4_report_id_unique(day, domain, submitter):
    assert report_id(day, domain, submitter) != report_id(DAY, "example.com",
                                                          "mta.sender.example")


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_own_output_is_strictly_valid():
    rs = [ok(), bad("certificate-expired", failure_reason_code="expired"),
          ok(TLSA_MX1, mx="mx1.example.net"), bad("starttls-not-supported", NONE_ORG,
                                                   mx="mx.example.org")]
    for report in aggregate(rs, DAY, IDENTITY):
        assert parse_report(report.to_json(), strict=True) == report
        assert report.warnings == ()


def test_output_is_deterministic():
    rs = [ok(), bad("certificate-expired"), bad("starttls-not-supported"), ok(TLSA_MX1)]
    a = [r.to_json() for r in aggregate(rs, DAY, IDENTITY)]
    b = [r.to_json() for r in aggregate(list(reversed(rs)), DAY, IDENTITY)]
    assert a == b


def test_default_sending_ip_fills_missing():
    r = SessionResult.failure(T0, STS, "certificate-expired", mx_host="mx1.mail.example.com")
    report = one([r], default_sending_ip="203.0.113.5")
    assert report.policies[0].failure_details[0].sending_mta_ip == "203.0.113.5"


def test_tally_from_counter_rows_equals_tally_from_results():
    rs = [ok(), ok(), bad("certificate-expired")]
    from_results = DayTally(DAY)
    for r in rs:
        from_results.add(r)
    rows = DayTally(DAY)
    rows.add_sessions(STS, 2, 1)
    rows.add_detail(STS, rs[2].detail_keys()[0], 1)
    assert build_reports(rows, IDENTITY) == build_reports(from_results, IDENTITY)
    assert rows.total() == (2, 1) and rows.policy_domains == ["example.com"]


def test_tally_refuses_results_of_another_day():
    with pytest.raises(ReportError, match="added to the tally"):
        DayTally(date(2024, 5, 2)).add(ok())


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(("org", "contact", "submitter", "message"), [
    ("", "a@b.example", "b.example", "organization-name"),
    ("Org", "not-an-address", "b.example", "contact-info"),
    ("Org", "a@b.example", "not a domain", "submitter"),
])
def test_rfc8460_4_4_identity_checked(org, contact, submitter, message):
    with pytest.raises(ReportError, match=message):
        ReportIdentity(org, contact, submitter)


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(("contact", "submitter", "refused"), [
    ("tlsrpt@mta.sender.example", "mta.sender.example", False),
    ("TLSRPT@MTA.Sender.Example.", "mta.sender.example", False),
    ("tlsrpt@sender.example", "mta.sender.example", True),  # parent domain
    ("tlsrpt@reports.sender.example", "sender.example", True),  # subdomain
    ("tlsrpt@elsewhere.example", "sender.example", True),
])
def test_rfc8460_5_3_contact_info_in_the_submitters_domain(contact, submitter, refused):
    # TLS-Report-Submitter (our submitter) MUST match the contact-info domain
    if refused:
        with pytest.raises(ContactDomainError, match=r"RFC 8460 §5\.3") as info:
            ReportIdentity("Org", contact, submitter)
        assert isinstance(info.value, ReportError)
        assert f"@{submitter}" in str(info.value)  # says what to use instead
    else:
        assert ReportIdentity("Org", contact, submitter).submitter == submitter


def test_identity_defaults():
    ident = ReportIdentity.with_defaults("MTA.Example.")
    assert (ident.organization_name, ident.contact_info, ident.submitter) == (
        "mta.example", "postmaster@mta.example", "mta.example")


@pytest.mark.parametrize("text", ["2024-5-1", "yesterday", "2024-02-30", ""])
def test_parse_day_rejects(text):
    with pytest.raises(ReportError):
        parse_day(text)


@settings(max_examples=100, deadline=None)
@given(st.lists(results(), max_size=30))
def test_property_reports_valid_and_totals_match(rs):
    reports = aggregate(rs, DAY, IDENTITY)
    assert sum(r.total_successful for r in reports) == sum(r.succeeded for r in rs)
    assert sum(r.total_failed for r in reports) == sum(bool(r.failed) for r in rs)
    assert sum(p.failed_in_details for r in reports for p in r.policies) == \
        sum(len(r.failures) for r in rs)
    for report in reports:
        assert parse_report(report.to_json(), strict=True) == report
    assert len({r.report_id for r in reports}) == len(reports)
    assert all(len(r.policy_domains) == 1 for r in reports)


def test_registered_types_come_back_as_enum():
    (p,) = one([bad("dnssec-invalid", TLSA_MX1.__class__(PolicyType.TLSA, "example.com",
                                                          ("3 1 1 aa",)))]).policies
    assert p.failure_details[0].result_type is ResultType.DNSSEC_INVALID
