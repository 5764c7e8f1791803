"""TLSRPT aggregate reports (RFC 8460 §4): the model, strict and tolerant parsing, output."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from tlsrpt_samples import dumps, rfc8460_example

from smtptls.errors import ReportParseError
from smtptls.tlsrpt import (
    FailureDetail,
    PolicyResult,
    PolicyType,
    Report,
    ResultType,
    parse_report,
)
from smtptls.tlsrpt.decode import MAX_WARNINGS
from smtptls.tlsrpt.report import format_datetime

# --- the strictly valid base -------------------------------------------------------------


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_5_example_with_erratum_is_strictly_valid():
    report = parse_report(dumps(rfc8460_example()), strict=True)
    assert report.organization_name == "Company-X"
    assert report.start_datetime == datetime(2016, 4, 1, tzinfo=UTC)
    assert report.end_datetime == datetime(2016, 4, 1, 23, 59, 59, tzinfo=UTC)
    assert report.contact_info == "sts-reporting@company-x.example"
    assert report.report_id == "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    (policy,) = report.policies
    assert policy.policy_type is PolicyType.STS
    assert policy.policy_domain == "company-y.example"
    assert policy.mx_host == ("*.mail.company-y.example",)
    assert policy.policy_string[1] == "mode: testing"
    assert (policy.total_successful_session_count, policy.total_failure_session_count) == (5326, 303)
    assert [d.result_type for d in policy.failure_details] == [
        ResultType.CERTIFICATE_EXPIRED, ResultType.STARTTLS_NOT_SUPPORTED,
        ResultType.VALIDATION_FAILURE,
    ]
    second = policy.failure_details[1]
    assert second.receiving_ip == "203.0.113.56"
    assert second.additional_information.endswith("#StarttlsNotSupported")
    assert policy.failure_details[2].failure_reason_code == "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
    assert policy.failure_details[0].receiving_ip is None  # optional: the example omits it
    assert report.warnings == ()


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_totals_and_policy_domains():
    doc = rfc8460_example()
    second = json.loads(json.dumps(doc["policies"][0]))
    second["policy"]["policy-domain"] = "Other.Example."
    second["summary"] = {"total-successful-session-count": 1, "total-failure-session-count": 0}
    second["failure-details"] = []
    doc["policies"].append(second)
    doc["policies"].append(json.loads(json.dumps(second)))
    report = parse_report(dumps(doc), strict=True)
    assert report.total_successful == 5328
    assert report.total_failed == 303
    assert report.policy_domains == ("company-y.example", "other.example")
    assert report.policies[0].failed_in_details == 303


# --- deviations: strict rejects with a path, tolerant accepts and warns --------------------


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = _steps(path)
        node = doc
        for step in parents:
            node = node[step]
        node[last] = value
    return mutate


def _del(path: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = _steps(path)
        node = doc
        for step in parents:
            node = node[step]
        del node[last]
    return mutate


def _rename(path: str, new: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        *parents, last = _steps(path)
        node = doc
        for step in parents:
            node = node[step]
        node[new] = node.pop(last)
    return mutate


def _steps(path: str) -> list:
    steps: list = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        if name:
            steps.append(name)
        if index:
            steps.append(int(index.rstrip("]")))
    return steps


P0 = "policies[0]"
D0 = "policies[0].failure-details[0]"
UTC_START = datetime(2016, 4, 1, tzinfo=UTC)

# id, mutation, JSON path strict names, check on the tolerant result
DEVIATIONS = [
    ("contact-info-null", _set("contact-info", None), "$.contact-info",
     lambda r: r.contact_info is None),
    ("contact-info-absent", _del("contact-info"), "$.contact-info",
     lambda r: r.contact_info is None),
    ("contact-info-not-address", _set("contact-info", "Company X"), "$.contact-info",
     lambda r: r.contact_info == "Company X"),
    ("organization-name-absent", _del("organization-name"), "$.organization-name",
     lambda r: r.organization_name == ""),
    ("organization-name-empty", _set("organization-name", " "), "$.organization-name",
     lambda r: r.organization_name == " "),
    ("date-without-zone", _set("date-range.start-datetime", "2016-04-01T00:00:00"),
     "$.date-range.start-datetime", lambda r: r.start_datetime == UTC_START),
    ("date-only-start", _set("date-range.start-datetime", "2016-04-01"),
     "$.date-range.start-datetime", lambda r: r.start_datetime == UTC_START),
    ("date-only-end", _set("date-range.end-datetime", "2016-04-01"),
     "$.date-range.end-datetime",
     lambda r: r.end_datetime == datetime(2016, 4, 1, 23, 59, 59, tzinfo=UTC)),
    ("date-space-separator", _set("date-range.start-datetime", "2016-04-01 00:00:00Z"),
     "$.date-range.start-datetime", lambda r: r.start_datetime == UTC_START),
    ("date-no-seconds", _set("date-range.start-datetime", "2016-04-01T00:00Z"),
     "$.date-range.start-datetime", lambda r: r.start_datetime == UTC_START),
    ("date-offset-without-colon", _set("date-range.start-datetime", "2016-04-01T00:00:00+0000"),
     "$.date-range.start-datetime", lambda r: r.start_datetime == UTC_START),
    ("date-zone-word", _set("date-range.start-datetime", "2016-04-01T00:00:00 UTC"),
     "$.date-range.start-datetime", lambda r: r.start_datetime == UTC_START),
    ("date-padded", _set("date-range.start-datetime", " 2016-04-01T00:00:00Z "),
     "$.date-range.start-datetime", lambda r: r.start_datetime == UTC_START),
    ("end-before-start", _set("date-range.end-datetime", "2016-03-31T00:00:00Z"),
     "$.date-range", lambda r: r.end_datetime < r.start_datetime),
    ("count-as-string", _set(f"{P0}.summary.total-successful-session-count", "5326"),
     f"$.{P0}.summary.total-successful-session-count",
     lambda r: r.policies[0].total_successful_session_count == 5326),
    ("count-as-float", _set(f"{D0}.failed-session-count", 100.0),
     f"$.{D0}.failed-session-count",
     lambda r: r.policies[0].failure_details[0].failed_session_count == 100),
    ("summary-missing-count", _del(f"{P0}.summary.total-failure-session-count"),
     f"$.{P0}.summary.total-failure-session-count",
     lambda r: r.policies[0].total_failure_session_count == 0),
    ("summary-absent", _del(f"{P0}.summary"), f"$.{P0}.summary",
     lambda r: r.total_successful == 0),
    ("failure-details-absent", _del(f"{P0}.failure-details"), f"$.{P0}.failure-details",
     lambda r: r.policies[0].failure_details == ()),
    ("policies-absent", _del("policies"), "$.policies", lambda r: r.policies == ()),
    ("policy-domain-absent", _del(f"{P0}.policy.policy-domain"),
     f"$.{P0}.policy.policy-domain", lambda r: r.policies[0].policy_domain is None),
    ("policy-domain-u-label", _set(f"{P0}.policy.policy-domain", "bücher.example"),
     f"$.{P0}.policy.policy-domain", lambda r: r.policies[0].policy_domain == "bücher.example"),
    ("policy-string-absent-for-sts", _del(f"{P0}.policy.policy-string"),
     f"$.{P0}.policy.policy-string", lambda r: r.policies[0].policy_string == ()),
    ("policy-string-a-string", _set(f"{P0}.policy.policy-string", "version: STSv1"),
     f"$.{P0}.policy.policy-string",
     lambda r: r.policies[0].policy_string == ("version: STSv1",)),
    ("mx-host-a-string", _set(f"{P0}.policy.mx-host", "*.mail.company-y.example"),
     f"$.{P0}.policy.mx-host",
     lambda r: r.policies[0].mx_host == ("*.mail.company-y.example",)),
    ("mx-host-absent-for-sts", _del(f"{P0}.policy.mx-host"), f"$.{P0}.policy.mx-host",
     lambda r: r.policies[0].mx_host == ()),
    ("mx-host-not-a-pattern", _set(f"{P0}.policy.mx-host", ["mx: mx.example"]),
     f"$.{P0}.policy.mx-host[0]", lambda r: r.policies[0].mx_host == ("mx: mx.example",)),
    ("mx-host-pattern-member", _rename(f"{P0}.policy.mx-host", "mx-host-pattern"),
     f"$.{P0}.policy.mx-host-pattern",
     lambda r: r.policies[0].mx_host == ("*.mail.company-y.example",)),
    ("additional-info-uri-member",
     _rename("policies[0].failure-details[1].additional-information", "additional-info-uri"),
     f"$.{P0}.failure-details[1].additional-info-uri",
     lambda r: r.policies[0].failure_details[1].additional_information.startswith("https:")),
    ("additional-information-not-uri",
     _set("policies[0].failure-details[1].additional-information", "see our web site"),
     f"$.{P0}.failure-details[1].additional-information",
     lambda r: r.policies[0].failure_details[1].additional_information == "see our web site"),
    ("member-name-case", _rename("organization-name", "Organization-Name"),
     "$.Organization-Name", lambda r: r.organization_name == "Company-X"),
    ("member-name-underscore", _rename("report-id", "report_id"), "$.report_id",
     lambda r: r.report_id.startswith("5065427c")),
    ("extra-member-top", _set("x-extra", 1), "$.x-extra", lambda r: r.report_id),
    ("extra-member-policy", _set(f"{P0}.policy.policy-id", "abc"),
     f"$.{P0}.policy.policy-id", lambda r: r.policies),
    ("extra-member-detail", _set(f"{D0}.note", "x"), f"$.{D0}.note",
     lambda r: r.policies[0].failure_details),
    ("policy-type-upper-case", _set(f"{P0}.policy.policy-type", "STS"),
     f"$.{P0}.policy.policy-type", lambda r: r.policies[0].policy_type is PolicyType.STS),
    ("policy-type-unknown", _set(f"{P0}.policy.policy-type", "invalid-policy-type"),
     f"$.{P0}.policy.policy-type",
     lambda r: r.policies[0].policy_type == "invalid-policy-type"),
    ("result-type-upper-case", _set(f"{D0}.result-type", "Certificate-Expired"),
     f"$.{D0}.result-type",
     lambda r: r.policies[0].failure_details[0].result_type is ResultType.CERTIFICATE_EXPIRED),
    ("sending-mta-ip-absent", _del(f"{D0}.sending-mta-ip"), f"$.{D0}.sending-mta-ip",
     lambda r: r.policies[0].failure_details[0].sending_mta_ip is None),
    ("sending-mta-ip-invalid", _set(f"{D0}.sending-mta-ip", "300.1.1.1"),
     f"$.{D0}.sending-mta-ip",
     lambda r: r.policies[0].failure_details[0].sending_mta_ip == "300.1.1.1"),
    ("receiving-ip-invalid", _set(f"{D0}.receiving-ip", "mx1"), f"$.{D0}.receiving-ip",
     lambda r: r.policies[0].failure_details[0].receiving_ip == "mx1"),
    ("receiving-mx-hostname-absent", _del(f"{D0}.receiving-mx-hostname"),
     f"$.{D0}.receiving-mx-hostname",
     lambda r: r.policies[0].failure_details[0].receiving_mx_hostname is None),
    ("failed-session-count-absent", _del(f"{D0}.failed-session-count"),
     f"$.{D0}.failed-session-count",
     lambda r: r.policies[0].failure_details[0].failed_session_count == 0),
    ("optional-member-null", _set(f"{D0}.receiving-mx-helo", None),
     f"$.{D0}.receiving-mx-helo",
     lambda r: r.policies[0].failure_details[0].receiving_mx_helo is None),
]


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "mutate, path, check", [pytest.param(m, p, c, id=i) for i, m, p, c in DEVIATIONS]
)
def test_rfc8460_4_4_strict_rejects_tolerant_warns(mutate, path, check):
    doc = rfc8460_example()
    mutate(doc)
    with pytest.raises(ReportParseError) as info:
        parse_report(dumps(doc), strict=True)
    assert info.value.path == path
    report = parse_report(dumps(doc))
    assert any(w.startswith(path + ":") for w in report.warnings), report.warnings
    assert check(report)


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "text, path",
    [
        ('{"report-id": "a", "report-id": "b"}', "$.report-id"),
        ('{"organization-name": "\\ud800x"}', "$.organization-name"),
    ],
    ids=["duplicate-member", "lone-surrogate"],
)
def test_rfc8460_4_4_i_json_rules(text, path):
    """I-JSON (RFC 7493 §2.1, §2.3): unique member names, no unpaired surrogates."""
    doc = rfc8460_example()
    raw = dumps(doc).decode()
    key = text.split('"')[1]
    inner = text[1:-1]
    raw = raw.replace(f'"{key}": {json.dumps(doc[key])}', inner, 1)
    with pytest.raises(ReportParseError) as info:
        parse_report(raw, strict=True)
    assert info.value.path == path
    report = parse_report(raw)
    assert any(w.startswith(path + ":") for w in report.warnings)
    if key == "report-id":
        assert report.report_id == "b"  # the last one, as most JSON parsers do
    else:
        assert report.organization_name == "\ufffdx"


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "data",
    [b"\xef\xbb\xbf" + dumps(rfc8460_example()), "\ufeff" + dumps(rfc8460_example()).decode()],
    ids=["bytes", "str"],
)
def test_rfc8460_4_4_byte_order_mark(data):
    with pytest.raises(ReportParseError, match="byte order mark"):
        parse_report(data, strict=True)
    assert parse_report(data).report_id.startswith("5065427c")


def test_exact_name_wins_over_variant():
    doc = rfc8460_example()
    doc["Report-Id"] = "variant"
    report = parse_report(dumps(doc))
    assert report.report_id.startswith("5065427c")
    assert any("given twice" in w for w in report.warnings)


# --- notes: allowed by RFC 8460, shown in both modes --------------------------------------

NOTES = [
    ("end-next-day-midnight", _set("date-range.end-datetime", "2016-04-02T00:00:00Z"),
     "$.date-range", "next day's 00:00:00Z"),
    ("seven-day-range", _set("date-range.end-datetime", "2016-04-07T23:59:59Z"),
     "$.date-range", "not one UTC day"),
    ("start-not-midnight", _set("date-range.start-datetime", "2016-04-01T06:00:00Z"),
     "$.date-range", "not 00:00:00Z"),
    ("offset-converted", _set("date-range.start-datetime", "2016-04-01T02:00:00+02:00"),
     "$.date-range.start-datetime", "converted to UTC"),
    ("leap-second", _set("date-range.end-datetime", "2016-04-01T23:59:60Z"),
     "$.date-range.end-datetime", "leap second"),
    ("unregistered-result-type", _set(f"{D0}.result-type", "certificate-revoked"),
     f"$.{D0}.result-type", "unregistered result type"),
    ("details-exceed-total", _set(f"{P0}.summary.total-failure-session-count", 3),
     f"$.{P0}.failure-details", "adds up to 303, more than"),
    ("tlsa-json-array-string",
     _set(f"{P0}.policy.policy-string", ['["3 1 1 AB","3 1 1 CD"]']),
     f"$.{P0}.policy.policy-string", "JSON-encoded array"),
]


@pytest.mark.rfc("8460 4.1")
@pytest.mark.parametrize(
    "mutate, path, words", [pytest.param(m, p, w, id=i) for i, m, p, w in NOTES]
)
def test_rfc8460_4_1_notes_in_both_modes(mutate, path, words):
    doc = rfc8460_example()
    mutate(doc)
    for strict in (True, False):
        report = parse_report(dumps(doc), strict=strict)
        assert any(w.startswith(path + ":") and words in w for w in report.warnings), (
            report.warnings
        )


@pytest.mark.rfc("8460 4.1")
def test_rfc8460_4_1_offset_is_converted_to_utc():
    doc = rfc8460_example()
    doc["date-range"]["start-datetime"] = "2016-04-01T02:00:00.250+02:00"
    report = parse_report(dumps(doc), strict=True)
    assert report.start_datetime == datetime(2016, 4, 1, 0, 0, 0, 250000, tzinfo=UTC)
    assert report.to_dict()["date-range"]["start-datetime"] == "2016-04-01T00:00:00.25Z"


@pytest.mark.rfc("8460 4.1")
def test_rfc8460_4_1_lower_case_t_and_z_are_rfc3339():
    doc = rfc8460_example()
    doc["date-range"]["start-datetime"] = "2016-04-01t00:00:00z"
    assert parse_report(dumps(doc), strict=True).start_datetime == UTC_START


# --- fatal in both modes -------------------------------------------------------------------

FATAL = [
    ("top-level-array", lambda d: [d], "$", "expected an object"),
    ("report-id-absent", _del("report-id"), "$.report-id", "missing"),
    ("report-id-empty", _set("report-id", "  "), "$.report-id", "empty"),
    ("report-id-number", _set("report-id", 12345), "$.report-id", "expected a string"),
    ("date-range-absent", _del("date-range"), "$.date-range", "missing"),
    ("date-range-string", _set("date-range", "2016-04-01"), "$.date-range", "expected an object"),
    ("start-absent", _del("date-range.start-datetime"), "$.date-range.start-datetime",
     "missing"),
    ("start-not-a-date", _set("date-range.start-datetime", "yesterday"),
     "$.date-range.start-datetime", "not an RFC 3339"),
    ("start-impossible-date", _set("date-range.start-datetime", "2016-02-30T00:00:00Z"),
     "$.date-range.start-datetime", "not a valid date-time"),
    ("start-bad-offset", _set("date-range.start-datetime", "2016-04-01T00:00:00+24:00"),
     "$.date-range.start-datetime", "out of range"),
    ("organization-name-number", _set("organization-name", 7), "$.organization-name",
     "expected a string"),
    ("policies-object", _set("policies", {}), "$.policies", "expected an array"),
    ("policy-entry-string", _set("policies", ["sts"]), "$.policies[0]", "expected an object"),
    ("policy-absent", _del(f"{P0}.policy"), f"$.{P0}.policy", "missing"),
    ("policy-type-absent", _del(f"{P0}.policy.policy-type"), f"$.{P0}.policy.policy-type",
     "missing"),
    ("policy-type-number", _set(f"{P0}.policy.policy-type", 1), f"$.{P0}.policy.policy-type",
     "expected a string"),
    ("mx-host-number", _set(f"{P0}.policy.mx-host", 5), f"$.{P0}.policy.mx-host",
     "expected an array"),
    ("policy-string-numbers", _set(f"{P0}.policy.policy-string", [1, 2]),
     f"$.{P0}.policy.policy-string[0]", "expected a string"),
    ("failure-details-string", _set(f"{P0}.failure-details", "none"),
     f"$.{P0}.failure-details", "expected an array"),
    ("result-type-absent", _del(f"{D0}.result-type"), f"$.{D0}.result-type", "missing"),
    ("count-negative", _set(f"{D0}.failed-session-count", -1), f"$.{D0}.failed-session-count",
     "out of range"),
    ("count-boolean", _set(f"{D0}.failed-session-count", True), f"$.{D0}.failed-session-count",
     "boolean"),
    ("count-over-2-53", _set(f"{D0}.failed-session-count", 2**60),
     f"$.{D0}.failed-session-count", "out of range"),
    ("count-fraction", _set(f"{D0}.failed-session-count", 1.5), f"$.{D0}.failed-session-count",
     "non-negative integer"),
    ("count-word", _set(f"{D0}.failed-session-count", "many"), f"$.{D0}.failed-session-count",
     "non-negative integer"),
    ("summary-array", _set(f"{P0}.summary", [1, 2]), f"$.{P0}.summary", "expected an object"),
    ("string-too-long", _set(f"{D0}.failure-reason-code", "x" * 20000),
     f"$.{D0}.failure-reason-code", "characters"),
]


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "mutate, path, words", [pytest.param(m, p, w, id=i) for i, m, p, w in FATAL]
)
def test_rfc8460_4_4_fatal_in_both_modes(mutate, path, words):
    doc = rfc8460_example()
    result = mutate(doc)
    if result is not None:
        doc = result
    for strict in (True, False):
        with pytest.raises(ReportParseError, match=words) as info:
            parse_report(dumps(doc), strict=strict)
        assert info.value.path == path
        assert str(info.value).startswith(path + ": ")


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_report_id_required_for_idempotency():
    """H3 (receiver side): the report-id is what a receiver de-duplicates on."""
    doc = rfc8460_example()
    first = parse_report(dumps(doc))
    again = parse_report(json.dumps(doc, indent=2))
    assert first == again and hash(first) == hash(again)
    assert (first.report_id, first.organization_name) == (again.report_id, again.organization_name)


# --- §4.3 / §4.4 closed sets -----------------------------------------------------------------


@pytest.mark.rfc("8460 4.3")
@pytest.mark.parametrize("value", [t.value for t in ResultType])
def test_rfc8460_4_3_result_types(value):
    doc = rfc8460_example()
    doc["policies"][0]["failure-details"][0]["result-type"] = value
    detail = parse_report(dumps(doc), strict=True).policies[0].failure_details[0]
    assert detail.result_type is ResultType(value)
    assert detail.is_registered


@pytest.mark.rfc("8460 4.3")
def test_rfc8460_4_3_result_type_registry_is_complete():
    assert {t.value for t in ResultType} == {
        "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
        "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
        "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
    }


@pytest.mark.rfc("8460 4.3")
def test_rfc8460_4_3_unknown_result_type_accepted_even_in_strict_mode():
    doc = rfc8460_example()
    doc["policies"][0]["failure-details"][0]["result-type"] = "tls-downgrade"
    report = parse_report(dumps(doc), strict=True)
    detail = report.policies[0].failure_details[0]
    assert detail.result_type == "tls-downgrade" and not detail.is_registered
    assert report.to_dict()["policies"][0]["failure-details"][0]["result-type"] == "tls-downgrade"


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "policy, expected",
    [
        ({"policy-type": "tlsa", "policy-string": ["3 1 1 ABCD"], "policy-domain": "mx.example"},
         PolicyType.TLSA),
        ({"policy-type": "no-policy-found", "policy-domain": "example.com"},
         PolicyType.NO_POLICY_FOUND),
        ({"policy-type": "no-policy-found", "policy-string": [], "policy-domain": "example.com",
          "mx-host": []}, PolicyType.NO_POLICY_FOUND),
    ],
    ids=["tlsa", "no-policy-found-minimal", "no-policy-found-empty-arrays"],
)
def test_rfc8460_4_4_policy_types(policy, expected):
    doc = rfc8460_example()
    doc["policies"][0]["policy"] = policy
    result = parse_report(dumps(doc), strict=True).policies[0]
    assert result.policy_type is expected
    assert result.mx_host == ()


# --- canonical output ----------------------------------------------------------------------


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_to_json_canonical_names_and_order():
    doc = rfc8460_example()
    shuffled = dict(reversed(list(doc.items())))
    report = parse_report(json.dumps(shuffled))
    data = json.loads(report.to_json())
    assert list(data) == [
        "organization-name", "date-range", "contact-info", "report-id", "policies"]
    assert list(data["date-range"]) == ["start-datetime", "end-datetime"]
    entry = data["policies"][0]
    assert list(entry) == ["policy", "summary", "failure-details"]
    assert list(entry["policy"]) == ["policy-type", "policy-string", "policy-domain", "mx-host"]
    assert list(entry["failure-details"][1]) == [
        "result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-ip",
        "failed-session-count", "additional-information"]
    assert data == doc  # the RFC example is already canonical
    assert report.to_dict() == data
    assert report.to_json() == json.dumps(report.to_dict(), ensure_ascii=False,
                                          separators=(",", ":"))


def test_to_json_emits_mx_host_array_and_additional_information():
    doc = rfc8460_example()
    doc["policies"][0]["policy"]["mx-host-pattern"] = doc["policies"][0]["policy"].pop("mx-host")
    detail = doc["policies"][0]["failure-details"][1]
    detail["additional-info-uri"] = detail.pop("additional-information")
    out = json.loads(parse_report(dumps(doc)).to_json())
    assert out["policies"][0]["policy"]["mx-host"] == ["*.mail.company-y.example"]
    assert "additional-information" in out["policies"][0]["failure-details"][1]
    assert "mx-host-pattern" not in json.dumps(out)


def test_to_json_is_utf8_i_json():
    doc = rfc8460_example()
    doc["organization-name"] = "Société Ünïcode 例"
    report = parse_report(dumps(doc).decode(), strict=True)
    text = report.to_json()
    assert "Société Ünïcode 例" in text
    assert parse_report(text.encode("utf-8"), strict=True) == report
    assert json.loads(report.to_json(indent=2)) == json.loads(text)


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("compress", [False, True], ids=["json", "gzip"])
def test_rfc8460_4_4_round_trip_strict(compress):
    report = parse_report(dumps(rfc8460_example()), strict=True)
    data = report.to_json().encode()
    if compress:
        data = gzip.compress(data)
    assert parse_report(data, strict=True) == report


def test_tolerant_report_serialises_to_a_tolerant_equal():
    doc = rfc8460_example()
    doc["contact-info"] = None
    doc["policies"][0]["policy"]["mx-host"] = "*.mail.company-y.example"
    report = parse_report(dumps(doc))
    again = parse_report(report.to_json())
    assert again == report
    assert report.warnings and again.warnings  # contact-info still missing


def test_from_dict_applies_the_same_rules():
    doc = rfc8460_example()
    assert Report.from_dict(doc, strict=True) == parse_report(dumps(doc), strict=True)
    doc["contact-info"] = None
    with pytest.raises(ReportParseError, match="null"):
        Report.from_dict(doc, strict=True)
    assert Report.from_dict(doc).contact_info is None


def test_report_parse_classmethod():
    assert Report.parse(dumps(rfc8460_example())).report_id.startswith("5065427c")


def test_report_constructor_normalises_to_utc_and_rejects_naive():
    start = datetime(2016, 4, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    report = Report("x", start, start, "a@b.example", "id", [])
    assert report.start_datetime == datetime(2016, 4, 1, tzinfo=UTC)
    assert report.start_datetime.utcoffset() == timedelta(0) and report.policies == ()
    with pytest.raises(ReportParseError, match="timezone-aware"):
        Report("x", datetime(2016, 4, 1), start, None, "id")
    with pytest.raises(ReportParseError):
        format_datetime(datetime(2016, 4, 1))


def test_policy_lines_unpacks_the_microsoft_form():
    policy = PolicyResult(PolicyType.TLSA, "example.com", 1, 0,
                          policy_string=('["3 1 1 AB","3 1 1 CD"]',))
    assert policy.policy_lines == ("3 1 1 AB", "3 1 1 CD")
    plain = PolicyResult(PolicyType.TLSA, "example.com", 1, 0, policy_string=("3 1 1 AB",))
    assert plain.policy_lines == ("3 1 1 AB",)
    broken = PolicyResult(PolicyType.TLSA, "example.com", 1, 0, policy_string=("[not json",))
    assert broken.policy_lines == ("[not json",)


def test_failure_detail_to_dict_omits_absent_members():
    detail = FailureDetail(ResultType.STS_POLICY_FETCH_ERROR, 3)
    assert detail.to_dict() == {"result-type": "sts-policy-fetch-error", "failed-session-count": 3}


def test_warnings_are_bounded():
    doc = rfc8460_example()
    for i in range(500):
        doc[f"x-{i}"] = i
    report = parse_report(dumps(doc))
    assert len(report.warnings) == MAX_WARNINGS + 1
    assert report.warnings[-1] == f"$: {500 - MAX_WARNINGS} more warnings not shown"


def test_warnings_do_not_take_part_in_equality():
    doc = rfc8460_example()
    clean = parse_report(dumps(doc))
    doc["x-extra"] = 1
    noisy = parse_report(dumps(doc))
    assert noisy.warnings and not clean.warnings
    assert noisy == clean
