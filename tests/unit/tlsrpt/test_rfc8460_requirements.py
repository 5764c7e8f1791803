"""RFC 8460 requirements of docs/requirements.md proven on the pure TLSRPT core.

No network: records, reports and mails are values. Each test names its section.
"""

from __future__ import annotations

import copy
import email
import email.policy
import gzip
import json
from datetime import UTC, datetime

import pytest

from smtptls.errors import ReportError
from smtptls.tlsrpt import parse_report, record_name, reports_from_message
from smtptls.tlsrpt.mail import parse_filename, parse_subject
from smtptls.tlsrptsend.outgoing import (
    GZIP_MEDIA_TYPE,
    compose_report_mail,
    https_post,
    report_filename,
)

SUBMITTER = "mta.sender.example"
REPORT = {
    "organization-name": "Sender Inc.",
    "date-range": {"start-datetime": "2024-05-01T00:00:00Z",
                   "end-datetime": "2024-05-01T23:59:59Z"},
    "contact-info": "tlsrpt@mta.sender.example",
    "report-id": "2024-05-01T00:00:00Z_b.example",
    "policies": [{
        "policy": {"policy-type": "sts",
                   "policy-string": ["version: STSv1", "mode: enforce", "mx: mx.b.example",
                                     "max_age: 86400"],
                   "policy-domain": "b.example", "mx-host": ["mx.b.example"]},
        "summary": {"total-successful-session-count": 5, "total-failure-session-count": 1},
        "failure-details": [{
            "result-type": "certificate-expired", "sending-mta-ip": "192.0.2.1",
            "receiving-mx-hostname": "mx.b.example", "receiving-mx-helo": "mx1.b.example",
            "receiving-ip": "198.51.100.2", "failed-session-count": 1,
            "additional-information": "https://sender.example/tlsrpt",
            "failure-reason-code": "X509_V_ERR_CERT_HAS_EXPIRED"}],
    }],
}


def _report(data=REPORT):  # type: ignore[no-untyped-def]
    return parse_report(json.dumps(data).encode(), strict=True)


# --- G1: the record's place ----------------------------------------------------------------


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(("domain", "name"), [
    ("example.com", "_smtp._tls.example.com"),
    ("example.com.", "_smtp._tls.example.com"),
])
def test_rfc8460_3_record_lives_at_smtp_tls(domain, name):
    assert record_name(domain) == name


# --- H1: the report's members ----------------------------------------------------------------


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_failure_detail_members_incl_receiving_mx_helo():
    report = _report()
    detail = report.policies[0].failure_details[0]
    assert (detail.receiving_mx_helo, detail.failure_reason_code) == (
        "mx1.b.example", "X509_V_ERR_CERT_HAS_EXPIRED")
    out = json.loads(report.to_json())
    emitted = out["policies"][0]["failure-details"][0]
    for member in ("result-type", "sending-mta-ip", "receiving-mx-hostname",
                   "receiving-mx-helo", "receiving-ip", "failed-session-count",
                   "additional-information", "failure-reason-code"):
        assert member in emitted, member
    assert set(out) >= {"organization-name", "date-range", "contact-info", "report-id",
                        "policies"}
    assert _report(out) == report  # what we emit reads back unchanged


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("strict", [True, False])
def test_rfc8460_4_4_policies_is_an_array(strict):
    data = copy.deepcopy(REPORT)
    data["policies"] = data["policies"][0]
    with pytest.raises(ReportError, match=r"\$\.policies"):
        parse_report(json.dumps(data).encode(), strict=strict)


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_domains_are_a_labels():
    data = copy.deepcopy(REPORT)
    data["policies"][0]["policy"]["policy-domain"] = "b\u00fccher.example"
    with pytest.raises(ReportError, match="A-labels"):
        parse_report(json.dumps(data).encode(), strict=True)


# --- I1: gzip over HTTPS ---------------------------------------------------------------------


@pytest.mark.rfc("8460 5.4")
def test_rfc8460_5_4_post_is_gzip_with_the_tlsrpt_gzip_type():
    post = https_post(_report(), "https://reports.b.example/v1")
    assert dict(post.headers)["Content-Type"] == GZIP_MEDIA_TYPE == "application/tlsrpt+gzip"
    assert _report(json.loads(gzip.decompress(post.body))) == _report()


# --- I6: file name and its extension ---------------------------------------------------------


@pytest.mark.rfc("8460 5.1")
@pytest.mark.parametrize(("compressed", "extension"), [(True, ".json.gz"), (False, ".json")])
def test_rfc8460_5_1_filename_extension_json_or_json_gz(compressed, extension):
    report = _report()
    name = report_filename(report, SUBMITTER, compressed=compressed)
    assert name.endswith(extension) and not name.endswith(".gz.json")
    parsed = parse_filename(name, strict=True)
    assert parsed is not None and parsed.compressed is compressed
    assert (parsed.sender, parsed.policy_domain) == (SUBMITTER, "b.example")
    assert (parsed.begin, parsed.end) == (report.start_datetime, report.end_datetime)
    assert parsed.to_text() == name


@pytest.mark.rfc("8460 5.1")
@pytest.mark.parametrize("name", [
    "a.example!b.example!1714521600!1714607999.gz",
    "a.example!b.example!1714521600!1714607999.zip",
    "a.example!b.example!1714521600!1714607999.json.zip",
    "a.example!b.example!1714521600!1714607999.txt",
])
def test_rfc8460_5_1_other_extensions_are_not_the_rfc_form(name):
    assert parse_filename(name, strict=True) is None


# --- I7: the report wins over the Subject and the file name ----------------------------------


@pytest.mark.rfc("8460 5.6")
def test_rfc8460_5_6_report_wins_over_subject_and_filename():
    report = _report()
    mail = compose_report_mail(report, submitter=SUBMITTER,
                               mail_from=f"noreply@{SUBMITTER}", rcpt_to=["r@b.example"],
                               date=datetime(2024, 5, 2, 1, 0, tzinfo=UTC), unique="0")
    right_name = report_filename(report, SUBMITTER)
    wrong_name = "liar.example!c.example!1!2!x.json.gz"
    raw = mail.message.replace(right_name.encode(), wrong_name.encode())
    raw = raw.replace(b"Report Domain: b.example", b"Report Domain: c.example")
    raw = raw.replace(report.report_id.encode(), b"other-id@liar.example", 1)
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    subject = parse_subject(message["Subject"])
    assert subject is not None and subject.domain == "c.example"
    assert subject.report_id != report.report_id
    attachment = next(p for p in message.walk() if p.get_filename())
    assert parse_filename(attachment.get_filename()).policy_domain == "c.example"
    # the metadata disagree; what is read is the report itself
    (read,) = reports_from_message(raw, strict=True)
    assert read == report
    assert read.policy_domains == ("b.example",) and read.report_id == report.report_id
