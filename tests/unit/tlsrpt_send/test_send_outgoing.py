"""Reports going out (RFC 8460 §5): gzip body, HTTPS POST, the §5.3 mail, DKIM."""

from __future__ import annotations

import email
import email.policy
import gzip
import re
from datetime import UTC, date, datetime

import dkim
import pytest
from send_helpers import STS, bad, ok, rsa_key

from smtptls.errors import ReportDeliveryError, ReportError
from smtptls.net.dkim import verify_report_mail
from smtptls.store.reports_base import DkimStatus
from smtptls.tlsrpt import parse_report, reports_from_message
from smtptls.tlsrpt.mail import extract_reports_from_message, parse_filename, parse_subject
from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate
from smtptls.tlsrptsend.outgoing import (
    GZIP_MEDIA_TYPE,
    compose_report_mail,
    dkim_sign,
    gzip_report,
    https_post,
    mailto_addresses,
    report_filename,
    report_subject,
)
from smtptls.tlsrptsend.postfix_lines import is_report_message_id

DAY = date(2024, 5, 1)
SUBMITTER = "mta.sender.example"
IDENTITY = ReportIdentity("Sender Inc.", "tlsrpt@mta.sender.example", SUBMITTER)
NOW = datetime(2024, 5, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def report():
    (r,) = aggregate([ok(), ok(), bad("certificate-expired")], DAY, IDENTITY)
    return r


@pytest.fixture(scope="module")
def key():
    return rsa_key()


def mail(report, **kw):
    args = {"submitter": SUBMITTER, "mail_from": "noreply-tlsrpt@mta.sender.example",
            "rcpt_to": ["tlsrpt@example.com"], "date": NOW, "unique": "0"} | kw
    return compose_report_mail(report, **args)


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_gzip_body_is_the_json(report):
    body = gzip_report(report)
    assert body[:2] == b"\x1f\x8b"
    assert gzip.decompress(body).decode() == report.to_json()
    assert gzip_report(report) == body  # no time stamp: a retry sends the same bytes
    assert parse_report(body, strict=True) == report


@pytest.mark.rfc("8460 5.4")
def test_rfc8460_5_4_https_post_media_type(report):
    post = https_post(report, "https://reports.example.com/tlsrpt")
    assert dict(post.headers)["Content-Type"] == "application/tlsrpt+gzip" == GZIP_MEDIA_TYPE
    assert post.body == gzip_report(report)


@pytest.mark.rfc("8460 5.4")
def test_rfc8460_5_4_only_https_urls_posted(report):
    with pytest.raises(ReportDeliveryError) as info:
        https_post(report, "http://reports.example.com/")
    assert info.value.permanent


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_subject(report):
    subject = report_subject(report, SUBMITTER)
    assert subject == (f"Report Domain: example.com Submitter: {SUBMITTER} "
                       f"Report-ID: <{report.report_id}>")
    parsed = parse_subject(subject, strict=True)
    assert (parsed.domain, parsed.submitter, parsed.report_id) == (
        "example.com", SUBMITTER, report.report_id)


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_filename(report):
    name = report_filename(report, SUBMITTER)
    assert re.fullmatch(r"mta\.sender\.example!example\.com!1714521600!1714607999!"
                        r"[0-9a-f]{16}\.json\.gz", name)
    parsed = parse_filename(name, strict=True)
    assert (parsed.begin, parsed.end) == (report.start_datetime, report.end_datetime)
    assert report_filename(report, SUBMITTER, compressed=False).endswith(".json")


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_mail_structure(report):
    m = mail(report)
    msg = email.message_from_bytes(m.message, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["TLS-Report-Domain"] == "example.com"
    assert msg["TLS-Report-Submitter"] == SUBMITTER
    assert msg["Subject"] == report_subject(report, SUBMITTER)
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "application/tlsrpt+gzip"]
    assert "aggregate SMTP TLS report" in parts[0].get_content()
    assert parts[1].get_filename() == report_filename(report, SUBMITTER)
    assert parts[1]["MIME-Version"] is None
    assert b"\r\n" in m.message and b"\n" not in m.message.replace(b"\r\n", b"")


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_mail_parses_back_with_the_receiving_code(report):
    raw = mail(report).message
    assert reports_from_message(raw, strict=True) == [report]
    (att,) = extract_reports_from_message(raw, strict=True)
    assert att.filename == report_filename(report, SUBMITTER)


def test_rfc8689_tls_required_no_and_auto_submitted(report):
    msg = email.message_from_bytes(mail(report).message, policy=email.policy.default)
    assert msg["TLS-Required"] == "No"
    assert msg["Auto-Submitted"] == "auto-generated"


def test_message_id_marks_our_own_report_mail(report):
    m = mail(report, unique="3")
    msg = email.message_from_bytes(m.message, policy=email.policy.default)
    assert msg["Message-ID"] == f"<{m.message_id}>"
    assert is_report_message_id(msg["Message-ID"], SUBMITTER)
    assert not is_report_message_id("<CAF=abc@mail.gmail.com>")
    assert mail(report, unique="4").message_id != m.message_id


def test_mail_is_reproducible(report):
    assert mail(report).message == mail(report).message


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_dkim_signature_verifies_without_l_tag(report, key):
    pem, pub = key
    signed = dkim_sign(mail(report).message, selector="rpt", domain=SUBMITTER, private_key=pem)
    header = signed.split(b"\r\n\r\n", 1)[0]
    sig = re.search(rb"DKIM-Signature:(.*?)\r\n(?=\S)", header, re.S).group(1)
    tags = {t.split(b"=", 1)[0].strip() for t in re.sub(rb"\s+", b"", sig).split(b";") if t}
    assert b"l" not in tags
    assert {b"tls-report-domain", b"tls-report-submitter"} <= {
        h.strip() for h in re.search(rb"h=([^;]*)", re.sub(rb"\s+", b"", sig)).group(1).split(b":")}

    def dnsfunc(name, timeout=5):
        assert name == b"rpt._domainkey.mta.sender.example."
        return f"v=DKIM1; k=rsa; s=tlsrpt; p={pub}".encode()

    # dkimpy's TLSRPT mode (RFC 8460 §5.3): key service type tlsrpt, no l= accepted
    assert dkim.verify(signed, dnsfunc=dnsfunc, tlsrpt="strict")


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_receiver_dkim_check_passes(report, key):
    pem, pub = key
    signed = dkim_sign(mail(report).message, selector="rpt", domain=SUBMITTER, private_key=pem)

    async def lookup(name):
        return [f"v=DKIM1; k=rsa; s=tlsrpt; p={pub}"] if name == f"rpt._domainkey.{SUBMITTER}" \
            else []

    result = await verify_report_mail(signed, lookup)
    assert result.status is DkimStatus.PASS and result.tlsrpt_service


def test_dkim_tampered_body_fails(report, key):
    pem, pub = key
    signed = dkim_sign(mail(report).message, selector="rpt", domain=SUBMITTER, private_key=pem)
    tampered = signed.replace(b"Successful sessions:    2", b"Successful sessions:    9")
    assert tampered != signed
    assert not dkim.verify(tampered, dnsfunc=lambda n, timeout=5:
                           f"v=DKIM1; k=rsa; p={pub}".encode())


def test_dkim_bad_key_is_permanent(report):
    with pytest.raises(ReportDeliveryError) as info:
        dkim_sign(mail(report).message, selector="rpt", domain=SUBMITTER,
                  private_key=b"not a key")
    assert info.value.permanent


@pytest.mark.parametrize(("uri", "expected"), [
    ("mailto:tlsrpt@example.com", ["tlsrpt@example.com"]),
    ("mailto:tlsrpt@example.com?subject=hi", ["tlsrpt@example.com"]),
    ("mailto:a@example.com%2Cb@example.net", ["a@example.com", "b@example.net"]),
    ("MAILTO:Ops@Example.com", ["Ops@Example.com"]),
    ("mailto:ops%40team@example.com", None),
])
def test_rfc8460_3_mailto_addresses(uri, expected):
    if expected is None:
        with pytest.raises(ReportDeliveryError):
            mailto_addresses(uri)
    else:
        assert mailto_addresses(uri) == expected


@pytest.mark.parametrize("uri", ["https://x.example/", "mailto:", "mailto:nobody",
                                 "mailto:" + ",".join(f"a{i}@x.example" for i in range(20))])
def test_mailto_unusable_is_permanent(uri):
    with pytest.raises(ReportDeliveryError) as info:
        mailto_addresses(uri)
    assert info.value.permanent


def test_multi_domain_report_refused():
    reports = aggregate([ok(), ok(STS.__class__(STS.policy_type, "example.net"))], DAY, IDENTITY)
    merged = reports[0].__class__(
        reports[0].organization_name, reports[0].start_datetime, reports[0].end_datetime,
        reports[0].contact_info, "x@y", reports[0].policies + reports[1].policies)
    with pytest.raises(ReportError, match="one policy domain"):
        report_subject(merged, SUBMITTER)


def test_compose_checks_arguments(report):
    with pytest.raises(ReportDeliveryError):
        mail(report, rcpt_to=[])
    with pytest.raises(ReportError):
        mail(report, unique="bad unique!")
    with pytest.raises(ReportError):
        mail(report, date=datetime(2024, 5, 2))
