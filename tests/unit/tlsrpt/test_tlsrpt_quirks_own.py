"""Each quirk of real TLSRPT reports, proven on the project's own fixtures.

The same forms as the shared corpus' QUIRKS.md (test_tlsrpt_corpus.py runs those real
reports when the corpus is present), written here as small synthetic reports in
tests/fixtures/tlsrpt (README.md there names the form of each file). Expected totals are
summed from the raw JSON by ``tlsrpt_samples``, never through the parser under test.
"""

from __future__ import annotations

import email
import email.policy
import gzip
import io
import json
import zipfile
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest
from tlsrpt_samples import OWN_REPORTS, own_files, raw_reports_in_eml, raw_totals

from smtptls.errors import NoReportAttachmentError, ReportParseError
from smtptls.tlsrpt import (
    PolicyType,
    ResultType,
    extract_reports_from_message,
    parse_filename,
    parse_report,
    parse_subject,
    reports_from_message,
)

NEGATIVE = "cron-mail.eml"
NOT_NAMED = ("non-multipart-gzip.eml",)  # the whole message is the report: no file name


def _load(name: str) -> bytes:
    return (OWN_REPORTS / name).read_bytes()


def _subject(name: str) -> str:
    message = email.message_from_bytes(_load(name), policy=email.policy.compat32)
    return str(message["Subject"])


def test_every_fixture_is_described():
    listed = (OWN_REPORTS / "README.md").read_text(encoding="utf-8")
    files = sorted(p.name for p in OWN_REPORTS.iterdir() if p.suffix in (".json", ".eml"))
    assert len(files) >= 18
    assert [f for f in files if f"`{f}`" not in listed] == []


# --- every own report, as the corpus' reports are read ----------------------------------------


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("path", own_files(".json"))
def test_own_json_tolerant_totals(path):
    raw = path.read_bytes()
    report = parse_report(raw)
    assert (report.total_successful, report.total_failed) == raw_totals(json.loads(raw))
    assert report.report_id == json.loads(raw)["report-id"]
    assert len(report.policies) == len(json.loads(raw)["policies"])
    assert parse_report(gzip.compress(raw)) == report


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("path", own_files(".json"))
def test_own_json_strict_rejects_with_a_path(path):
    """Each own report has its quirk; strict names the place, tolerant warns there."""
    raw = path.read_bytes()
    with pytest.raises(ReportParseError) as info:
        parse_report(raw, strict=True)
    assert info.value.path and info.value.path.startswith("$")
    assert any(w.startswith(info.value.path + ":") for w in parse_report(raw).warnings)


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize("path", own_files(".eml", exclude=(NEGATIVE,)))
def test_own_eml_tolerant_totals(path):
    raw = path.read_bytes()
    expected = [raw_totals(doc) for doc in raw_reports_in_eml(raw)]
    reports = reports_from_message(raw)
    assert expected and [(r.total_successful, r.total_failed) for r in reports] == expected
    for attachment in extract_reports_from_message(raw):
        if path.name in NOT_NAMED:
            assert not attachment.filename
        else:
            assert parse_filename(attachment.filename) is not None


def test_own_negative_sample_is_rejected_clearly():
    with pytest.raises(NoReportAttachmentError) as info:
        extract_reports_from_message(_load(NEGATIVE))
    message = str(info.value)
    assert "no TLSRPT report attachment" in message and "text/plain" in message
    assert "Cron" in message


# --- the quirks, one test each (numbers as in the corpus' QUIRKS.md) --------------------------


@pytest.mark.parametrize("name", ["zone-less-dates.json", "digits-report-id.eml"])
def test_quirk_1_datetime_without_time_zone(name):
    raw = _load(name)
    read = reports_from_message if name.endswith(".eml") else (lambda d, **kw: [parse_report(d, **kw)])
    (report,) = read(raw)
    assert report.start_datetime == datetime(2025, 2, 3, tzinfo=UTC)
    assert report.end_datetime == datetime(2025, 2, 3, 23, 59, 59, tzinfo=UTC)
    assert "$.date-range.start-datetime: no time zone; read as UTC" in report.warnings
    with pytest.raises(ReportParseError) as info:
        read(raw, strict=True)
    assert info.value.path == "$.date-range.start-datetime"


def _one_tlsa_record() -> bytes:
    doc = json.loads(_load("tlsa-policy-string-array.json"))
    tlsa = doc["policies"][1]["policy"]
    tlsa["policy-string"] = [json.dumps(json.loads(tlsa["policy-string"][0])[:1])]
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "raw, count",
    [pytest.param(_one_tlsa_record(), 1, id="one-record"),
     pytest.param(_load("tlsa-policy-string-array.json"), 2, id="two-records")],
)
def test_quirk_2_tlsa_policy_string_holds_a_json_array(raw, count):
    report = parse_report(raw)
    tlsa = next(p for p in report.policies if p.policy_type is PolicyType.TLSA)
    assert len(tlsa.policy_string) == 1 and tlsa.policy_string[0].startswith('["3 1 1 ')
    assert len(tlsa.policy_lines) == count
    assert all(line.startswith("3 1 1 ") and len(line) == 6 + 64 for line in tlsa.policy_lines)
    sts = next(p for p in report.policies if p.policy_type is PolicyType.STS)
    assert tlsa.policy_domain == sts.policy_domain == "example.net"  # kept as sent
    assert any("JSON-encoded array" in w for w in report.warnings)


def test_quirk_3_digit_report_id_and_mail_form():
    assert parse_report(_load("report-id-trailing-plus.json")).report_id == "8080808080+"
    raw = _load("digits-report-id.eml")
    subject = parse_subject(_subject("digits-report-id.eml"))
    assert subject.report_id == "4455667788+example.net" and not subject.bracketed
    assert parse_subject(_subject("digits-report-id.eml"), strict=True) is None
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert "text/html" in [p.get_content_type() for p in message.walk()]  # HTML body
    report_part = next(p for p in message.walk()
                       if p.get_content_type() == "application/tlsrpt+gzip")
    assert report_part.get_param("name") is None  # attachment without name=
    (attachment,) = extract_reports_from_message(raw)
    assert attachment.filename.startswith("northwind.example!example.net!")
    assert parse_report(attachment.payload).report_id == subject.report_id


def _folded_report():
    (report,) = reports_from_message(_load("folded-subject.eml"))
    return report


@pytest.mark.parametrize(
    "report",
    [pytest.param(lambda: parse_report(_load("fetch-error-without-addresses.json")),
                  id="fetch-error-without-addresses"),
     pytest.param(lambda: parse_report(_load("next-day-end-overlapping-counts.json")),
                  id="next-day-end-overlapping-counts"),
     pytest.param(_folded_report, id="folded-subject")],
)
def test_quirk_4_fetch_error_details_without_addresses(report):
    report = report()
    details = report.policies[0].failure_details
    assert details and all(d.result_type is ResultType.STS_POLICY_FETCH_ERROR for d in details)
    assert all(d.sending_mta_ip is None and d.receiving_ip is None
               and d.receiving_mx_hostname is None for d in details)
    assert any(w.endswith("sending-mta-ip: required member missing") for w in report.warnings)


def test_quirk_5_subject_report_id_differs_and_mx_host_optional():
    subject = parse_subject(_subject("subject-id-differs.eml"), strict=True)
    (report,) = reports_from_message(_load("subject-id-differs.eml"))
    assert subject.report_id == "2025.04.05T00.00.00Z+example.net@lighthouse-relay.example"
    assert report.report_id == "2025-04-05T00:00:00Z_example.net"  # differs; both kept
    assert report.policies[0].mx_host == ("mx1.example.net",)
    without = parse_report(_load("no-mx-host.json"))
    assert without.policies[0].mx_host == ()
    assert "$.policies[0].policy.mx-host: required member missing; read as []" in without.warnings


def test_quirk_6_next_day_end_overlapping_counts_free_text_folded_subject():
    report = parse_report(_load("next-day-end-overlapping-counts.json"))
    assert report.end_datetime - report.start_datetime == timedelta(days=1)
    assert any("next day's 00:00:00Z" in w for w in report.warnings)
    policy = report.policies[0]
    assert policy.failed_in_details == 2 > policy.total_failure_session_count == 1
    assert any("adds up to 2, more than total-failure-session-count 1" in w
               for w in report.warnings)
    assert {d.failure_reason_code for d in policy.failure_details} == {
        "policy host answered with status 503", "policy host answered with status 410"}
    assert _folded_report().policies[0].failure_details[0].failure_reason_code.startswith(
        'could not fetch "https://mta-sts.example.net/')
    subject = parse_subject(_subject("folded-subject.eml"))  # folded over four lines
    assert (subject.domain, subject.submitter) == ("example.net", "tundra-post.example")
    assert subject.report_id == "d1f0c0de-7e57-4a11-9f00-000000000002@tundra-post.example"


def test_quirk_7_contact_info_null_and_empty_arrays():
    name = "contact-info-null-empty-arrays.json"
    report = parse_report(_load(name))
    assert report.contact_info is None
    assert "$.contact-info: null; read as absent" in report.warnings
    assert "." in report.organization_name  # a host name as organization-name
    assert report.end_datetime - report.start_datetime == timedelta(seconds=86400)
    with pytest.raises(ReportParseError) as info:
        parse_report(_load(name), strict=True)
    assert info.value.path == "$.contact-info"
    policy = report.policies[0]
    assert policy.policy_type is PolicyType.NO_POLICY_FOUND
    assert (policy.policy_string, policy.mx_host, policy.failure_details) == ((), (), ())
    assert parse_subject("TLS Aggregate Report") is None  # not the §5.3 form; not an error


def test_quirk_8_no_policy_found_without_policy_domain():
    name = "no-policy-found-without-policy-domain.json"
    report = parse_report(_load(name))
    policy = report.policies[0]
    assert policy.policy_type is PolicyType.NO_POLICY_FOUND and policy.policy_domain is None
    assert report.total_successful == 2 and report.policy_domains == ()
    assert "policy-domain" not in report.to_dict()["policies"][0]["policy"]
    with pytest.raises(ReportParseError) as info:
        parse_report(_load(name), strict=True)
    assert info.value.path == "$.policies[0].policy.policy-domain"


def test_quirk_9_mx_host_string_and_spaced_uri():
    report = parse_report(_load("mx-host-string.json"))
    assert report.policies[0].mx_host == ("*.mail.example.net",)
    assert report.warnings == (
        "$.policies[0].policy.mx-host: a string where RFC 8460 §4.4 has an array of strings",)
    spaced = parse_report(_load("spaced-additional-information.json"))
    info = spaced.policies[0].failure_details[1].additional_information
    assert info == "https://reports.reporter.example/  detail ? id = 9d4b6a2e# No Starttls "
    assert any("additional-information: not a valid URI" in w for w in spaced.warnings)


def test_mx_host_and_additional_information_are_kept():
    report = parse_report(_load("mx-host-string.json"))
    out = report.to_dict()["policies"][0]
    assert out["policy"]["mx-host"] == ["*.mail.example.net"]
    assert out["failure-details"][1]["additional-information"] == (
        "https://reports.reporter.example/detail?id=9d4b6a2e#NoStarttls")


def _mail(ctype: str, payload: bytes, *, filename: str | None = "r.json.gz",
          multipart: bool = True) -> bytes:
    maintype, subtype = ctype.split("/")
    message = EmailMessage()
    message["Subject"] = ("Report Domain: example.net Submitter: reporter.example "
                          "Report-ID: <own-1@reporter.example>")
    if multipart:
        message.set_content("A TLS report.")
        message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
        message.replace_header("Content-Type", message["Content-Type"].replace(
            "multipart/mixed", "multipart/report"))
        message.set_param("report-type", "tlsrpt")
    else:
        message.set_content(payload, maintype=maintype, subtype=subtype)
    return message.as_bytes()


def test_quirk_10_media_types():
    (report,) = reports_from_message(_load("application-tlsrpt.eml"))  # application/tlsrpt
    assert (report.total_successful, report.total_failed) == (31, 2)
    (report,) = reports_from_message(_load("nested-alternative.eml"))  # application/gzip
    assert (report.total_successful, report.total_failed) == (44, 0)
    doc = _load("no-mx-host.json")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("report.json", doc)
    cases = [
        _mail("application/tlsrpt+json", doc, filename="r.json"),
        _mail("application/tlsrpt+gzip", gzip.compress(doc), multipart=False),
        _mail("application/tlsrpt+zip", archive.getvalue(), filename="r.zip"),
    ]
    for raw in cases:
        (report,) = reports_from_message(raw)
        assert (report.total_successful, report.total_failed) == (120, 5)
    assert any("zip archive" in w for w in reports_from_message(cases[2])[0].warnings)
    (single,) = reports_from_message(_load("non-multipart-gzip.eml"))
    assert (single.total_successful, single.total_failed) == (8, 1)


def test_quirk_11_unknown_types_and_missing_count():
    report = parse_report(_load("unknown-types-missing-count.json"))
    assert [p.policy_type for p in report.policies] == [
        PolicyType.NO_POLICY_FOUND, "made-up-policy-type", PolicyType.STS]
    assert [p.total_failure_session_count for p in report.policies] == [0, 0, 2]
    assert report.total_successful == 7
    assert any("unknown policy type 'made-up-policy-type'" in w for w in report.warnings)
    assert any("total-failure-session-count: required member missing" in w
               for w in report.warnings)
    detail = report.policies[2].failure_details[0]
    assert detail.result_type == "some-future-failure" and not detail.is_registered


def test_quirk_12_invalid_gzip_attachment_has_a_clear_reason():
    good = gzip.compress(_load("mx-host-string.json"))
    broken = good[:10] + bytes(b ^ 0x5A for b in good[10:40]) + good[40:]
    (attachment,) = extract_reports_from_message(_mail("application/tlsrpt+gzip", broken))
    with pytest.raises(ReportParseError, match="not valid gzip") as info:
        parse_report(attachment.payload)
    assert info.value.path == "$"
