"""Every real report of the shared corpus, and each quirk of its QUIRKS.md, by name.

Expected totals are summed straight from the raw JSON (``tlsrpt_samples.raw_totals``),
never through the parser under test.
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
from pathlib import Path

import pytest
from tlsrpt_samples import REPORTS, corpus_files, raw_reports_in_eml, raw_totals

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

NEGATIVE = "tlsrpt-rs__empty.eml"  # SOURCES.txt: NEGATIVE sample, a cron e-mail


def _json_params():
    return corpus_files(".json")


def _eml_params():
    return corpus_files(".eml", exclude=(NEGATIVE,))


def _load(corpus: Path, name: str) -> bytes:
    return (corpus / REPORTS / name).read_bytes()


def _subject(corpus: Path, name: str) -> str:
    message = email.message_from_bytes(_load(corpus, name), policy=email.policy.compat32)
    return str(message["Subject"])


def test_corpus_is_complete(corpus):
    folder = corpus / REPORTS
    assert len(list(folder.glob("*.json"))) == 19
    assert len(list(folder.glob("*.eml"))) == 14
    assert (folder / NEGATIVE).is_file()


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("path", _json_params())
def test_corpus_json_tolerant_totals(corpus, path):
    raw = path.read_bytes()
    report = parse_report(raw)
    assert (report.total_successful, report.total_failed) == raw_totals(json.loads(raw))
    assert report.report_id == json.loads(raw)["report-id"]
    assert len(report.policies) == len(json.loads(raw)["policies"])
    # gzip as a sender would send it gives the same report
    assert parse_report(gzip.compress(raw)) == report


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("path", _json_params())
def test_corpus_json_strict_rejects_with_a_path(corpus, path):
    """Every corpus report deviates somewhere; strict names the place, tolerant warns."""
    raw = path.read_bytes()
    with pytest.raises(ReportParseError) as info:
        parse_report(raw, strict=True)
    assert info.value.path and info.value.path.startswith("$")
    warnings = parse_report(raw).warnings
    assert any(w.startswith(info.value.path + ":") for w in warnings)


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize("path", _eml_params())
def test_corpus_eml_tolerant_totals(corpus, path):
    raw = path.read_bytes()
    expected = [raw_totals(doc) for doc in raw_reports_in_eml(raw)]
    reports = reports_from_message(raw)
    assert expected and [(r.total_successful, r.total_failed) for r in reports] == expected
    for attachment in extract_reports_from_message(raw):
        assert parse_filename(attachment.filename) is not None


def test_negative_sample_is_rejected_clearly(corpus):
    with pytest.raises(NoReportAttachmentError) as info:
        extract_reports_from_message(_load(corpus, NEGATIVE))
    message = str(info.value)
    assert "no TLSRPT report attachment" in message and "text/plain" in message
    assert "Cron" in message


# --- QUIRKS.md, one test each ---------------------------------------------------------------


def test_quirk_1_microsoft_datetime_without_time_zone(corpus):
    (report,) = reports_from_message(_load(corpus, "mox__microsoft.eml"))
    assert report.start_datetime == datetime(2023, 1, 10, tzinfo=UTC)
    assert report.end_datetime == datetime(2023, 1, 10, 23, 59, 59, tzinfo=UTC)
    assert "$.date-range.start-datetime: no time zone; read as UTC" in report.warnings
    with pytest.raises(ReportParseError) as info:
        reports_from_message(_load(corpus, "mox__microsoft.eml"), strict=True)
    assert info.value.path == "$.date-range.start-datetime"


@pytest.mark.parametrize(
    "name, count",
    [("sebastka-tlsrpt__microsoft-tlsa-sts.json", 1),
     ("cry-inc-dmarc-report-viewer__microsoft.json", 2)],
    ids=["one-record", "two-records"],
)
def test_quirk_2_microsoft_tlsa_policy_string_holds_a_json_array(corpus, name, count):
    report = parse_report(_load(corpus, name))
    tlsa = next(p for p in report.policies if p.policy_type is PolicyType.TLSA)
    assert len(tlsa.policy_string) == 1 and tlsa.policy_string[0].startswith('["3 1 1 ')
    assert len(tlsa.policy_lines) == count
    assert all(line.startswith("3 1 1 ") for line in tlsa.policy_lines)
    sts = next(p for p in report.policies if p.policy_type is PolicyType.STS)
    # the TLSA policy-domain is the recipient domain (not the MX host); kept as sent
    assert tlsa.policy_domain == sts.policy_domain
    assert any("JSON-encoded array" in w for w in report.warnings)


def test_quirk_3_microsoft_report_id_and_mail_form(corpus):
    assert parse_report(_load(corpus, "cry-inc-dmarc-report-viewer__no_ip_and_mx.json")).report_id == (
        "1234567890+")
    raw = _load(corpus, "tlsrpt-digest__tlsrpt_success_microsoft.eml")
    subject = parse_subject(_subject(corpus, "tlsrpt-digest__tlsrpt_success_microsoft.eml"))
    assert subject.report_id == "134232617934286362+example.com" and not subject.bracketed
    assert parse_subject(_subject(corpus, "tlsrpt-digest__tlsrpt_success_microsoft.eml"),
                         strict=True) is None
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    types = [p.get_content_type() for p in message.walk()]
    assert "text/html" in types  # HTML body
    report_part = next(p for p in message.walk()
                       if p.get_content_type() == "application/tlsrpt+gzip")
    assert report_part.get_param("name") is None  # attachment without name=
    (attachment,) = extract_reports_from_message(raw)
    assert attachment.filename.startswith("microsoft.com!example.com!")
    assert parse_report(attachment.payload).report_id == subject.report_id


@pytest.mark.parametrize(
    "name",
    ["issue__cry-inc-dmarc-report-viewer-57__microsoft_fetch_error.json",
     "parsedmarc__mail.ru.json", "tlsrpt-rs__mail.ru.json"],
)
def test_quirk_4_fetch_error_details_without_addresses(corpus, name):
    report = parse_report(_load(corpus, name))
    details = report.policies[0].failure_details
    assert details and all(d.result_type is ResultType.STS_POLICY_FETCH_ERROR for d in details)
    assert all(d.sending_mta_ip is None and d.receiving_ip is None
               and d.receiving_mx_hostname is None for d in details)
    assert any(w.endswith("sending-mta-ip: required member missing") for w in report.warnings)


def test_quirk_5_google_subject_report_id_and_mx_host(corpus):
    raw = _load(corpus, "mox__google_example.eml")
    subject = parse_subject(_subject(corpus, "mox__google_example.eml"), strict=True)
    (report,) = reports_from_message(raw)
    assert subject.report_id == "2022.09.15T00.00.00Z+test.xmox.nl@google.com"
    assert report.report_id == "2022-09-15T00:00:00Z_test.xmox.nl"  # differs; both kept
    assert report.policies[0].mx_host == ("komijn.test.xmox.nl",)
    without = parse_report(_load(corpus, "parsedmarc__smtp_tls.json"))
    assert without.policies[0].mx_host == ()
    assert "$.policies[0].policy.mx-host: required member missing; read as []" in without.warnings


def test_quirk_6_mailru_next_day_end_overlapping_counts_free_text(corpus):
    report = parse_report(_load(corpus, "parsedmarc__mail.ru.json"))
    assert report.end_datetime - report.start_datetime == timedelta(days=1)
    assert any("next day's 00:00:00Z" in w for w in report.warnings)
    policy = report.policies[0]
    assert policy.failed_in_details == 2 > policy.total_failure_session_count == 1
    assert any("adds up to 2, more than total-failure-session-count 1" in w
               for w in report.warnings)
    assert {d.failure_reason_code for d in policy.failure_details} == {
        "bad https response code: 404", "bad https response code: 500"}
    (mailru,) = reports_from_message(_load(corpus, "tlsrpt-rs__mail.ru.eml"))
    assert mailru.policies[0].failure_details[0].failure_reason_code.startswith(
        'unable to do http request: Get "https://mta-sts.krvtz.net/')
    subject = parse_subject(_subject(corpus, "tlsrpt-rs__mail.ru.eml"))  # folded over four lines
    assert (subject.domain, subject.submitter) == ("krvtz.net", "mail.ru")
    assert subject.report_id == "c96d67df-0440-57f7-6e96-c83824d0fdf2@mail.ru"


@pytest.mark.parametrize(
    "name",
    ["issue__cry-inc-dmarc-report-viewer-71__stalwart_contact_null.json",
     "issue__parsedmarc-575__stalwart_egressif_contact_null.json"],
)
def test_quirk_stalwart_contact_info_null(corpus, name):
    report = parse_report(_load(corpus, name))
    assert report.contact_info is None
    assert "$.contact-info: null; read as absent" in report.warnings
    assert "." in report.organization_name  # a host name as organization-name
    assert report.end_datetime - report.start_datetime == timedelta(seconds=86400)
    with pytest.raises(ReportParseError) as info:
        parse_report(_load(corpus, name), strict=True)
    assert info.value.path == "$.contact-info"


def test_quirk_7_stalwart_empty_arrays_and_subject(corpus):
    report = parse_report(_load(corpus, "issue__parsedmarc-575__stalwart_egressif_contact_null.json"))
    policy = report.policies[0]
    assert policy.policy_type is PolicyType.NO_POLICY_FOUND
    assert (policy.policy_string, policy.mx_host, policy.failure_details) == ((), (), ())
    assert parse_subject("TLS Aggregate Report") is None  # not the §5.3 form; not an error


def test_quirk_8_postfix_sys4_no_policy_found_without_policy_domain(corpus):
    name = "issue__sys4-tlsrpt-reporter-51__postfix_sys4_no_policy_domain.json"
    report = parse_report(_load(corpus, name))
    policy = report.policies[0]
    assert policy.policy_type is PolicyType.NO_POLICY_FOUND and policy.policy_domain is None
    assert report.total_successful == 1 and report.policy_domains == ()
    with pytest.raises(ReportParseError) as info:
        parse_report(_load(corpus, name), strict=True)
    assert info.value.path == "$.policies[0].policy.policy-domain"


def test_quirk_9_rfc_example_mx_host_string_and_spaced_uri(corpus):
    report = parse_report(_load(corpus, "parsedmarc__rfc8460.json"))
    assert report.policies[0].mx_host == ("*.mail.company-y.example",)
    assert report.warnings == (
        "$.policies[0].policy.mx-host: a string where RFC 8460 §4.4 has an array of strings",)
    spaced = parse_report(_load(corpus, "tlsrpt-rs__rfc8460.json"))
    info = spaced.policies[0].failure_details[1].additional_information
    assert info == ("https://reports.company-x.example/  report_info ? id = 5065427 c - 23 d3#"
                    " StarttlsNotSupported ")  # kept verbatim
    assert any("additional-information: not a valid URI" in w for w in spaced.warnings)


def _mail(ctype: str, payload: bytes, *, filename: str | None = "r.json.gz",
          multipart: bool = True) -> bytes:
    maintype, subtype = ctype.split("/")
    message = EmailMessage()
    message["Subject"] = "Report Domain: example.com Submitter: s.example Report-ID: <1@s.example>"
    if multipart:
        message.set_content("A TLS report.")
        message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
        message.replace_header("Content-Type", message["Content-Type"].replace(
            "multipart/mixed", "multipart/report"))
        message.set_param("report-type", "tlsrpt")
    else:
        message.set_content(payload, maintype=maintype, subtype=subtype)
    return message.as_bytes()


def test_quirk_10_media_types(corpus):
    (report,) = reports_from_message(_load(corpus, "stalwart-mail-auth__rpt02.eml"))  # application/tlsrpt
    assert report.total_successful == 23
    doc = _load(corpus, "parsedmarc__smtp_tls.json")
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
        assert (report.total_successful, report.total_failed) == (0, 3)
    assert any("zip archive" in w for w in reports_from_message(cases[2])[0].warnings)


def test_quirk_11_unknown_types_and_missing_count(corpus):
    report = parse_report(_load(corpus, "stalwart-mail-auth__rpt03.json"))
    assert [p.policy_type for p in report.policies] == [
        PolicyType.NO_POLICY_FOUND, "invalid-policy-type"]
    assert [p.total_failure_session_count for p in report.policies] == [0, 0]
    assert report.total_successful == 2
    assert any("unknown policy type 'invalid-policy-type'" in w for w in report.warnings)
    assert any("total-failure-session-count: required member missing" in w
               for w in report.warnings)
    doc = json.loads(_load(corpus, "parsedmarc__smtp_tls.json"))
    doc["policies"][0]["failure-details"][0]["result-type"] = "some-new-failure"
    detail = parse_report(json.dumps(doc)).policies[0].failure_details[0]
    assert detail.result_type == "some-new-failure" and not detail.is_registered


def test_quirk_12_invalid_gzip_attachment_has_a_clear_reason(corpus):
    good = gzip.compress(_load(corpus, "parsedmarc__smtp_tls.json"))
    broken = good[:10] + bytes(b ^ 0x5A for b in good[10:40]) + good[40:]
    (attachment,) = extract_reports_from_message(_mail("application/tlsrpt+gzip", broken))
    with pytest.raises(ReportParseError, match="not valid gzip") as info:
        parse_report(attachment.payload)
    assert info.value.path == "$"


# --- better than peers ------------------------------------------------------------------------


def test_mx_host_and_additional_information_are_kept(corpus):
    """A known parser drops both; here they survive parsing and serialisation."""
    report = parse_report(_load(corpus, "stalwart-mail-auth__rpt01.json"))
    assert report.policies[0].mx_host == ("*.mail.company-y.example",)
    out = report.to_dict()["policies"][0]
    assert out["policy"]["mx-host"] == ["*.mail.company-y.example"]
    assert out["failure-details"][1]["additional-information"].startswith(
        "https://reports.company-x.example/")


def test_no_policy_found_without_policy_domain_is_accepted(corpus):
    report = parse_report(_load(corpus, "stalwart-mail-auth__rpt03.json"))
    assert report.policies[0].policy_domain is None
    assert "policy-domain" not in report.to_dict()["policies"][0]["policy"]
