"""Reports delivered by mail (RFC 8460 §5.3): finding the report, Subject, file name."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tlsrpt_samples import dumps, rfc8460_example

from smtptls.errors import (
    NoReportAttachmentError,
    ReportError,
    ReportMailError,
    ReportTooLargeError,
)
from smtptls.tlsrpt import (
    ReportFilename,
    ReportSubject,
    extract_reports_from_message,
    parse_filename,
    parse_subject,
    reports_from_message,
)

REPORT = dumps(rfc8460_example())
GZ = gzip.compress(REPORT)
NAME = "mail.sender.example!example.com!1459468800!1459555199!a1.json.gz"
SUBJECT = "Report Domain: example.com Submitter: mail.sender.example Report-ID: <1@sender.example>"


def _mail(parts: list[tuple[str, bytes, str | None]], *, report_type: str | None = "tlsrpt",
          container: str = "report", body: str = "This is an aggregate TLS report.") -> bytes:
    message = EmailMessage()
    message["From"] = "tlsrpt@mail.sender.example"
    message["Subject"] = SUBJECT
    message["TLS-Report-Domain"] = "example.com"
    message["TLS-Report-Submitter"] = "mail.sender.example"
    message.set_content(body)
    for ctype, payload, filename in parts:
        maintype, subtype = ctype.split("/")
        message.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename)
    message.replace_header(
        "Content-Type", message["Content-Type"].replace("multipart/mixed", f"multipart/{container}"))
    if report_type:
        message.set_param("report-type", report_type)
    return message.as_bytes()


def _single(ctype: str, payload: bytes) -> bytes:
    message = EmailMessage()
    message["Subject"] = SUBJECT
    maintype, subtype = ctype.split("/")
    message.set_content(payload, maintype=maintype, subtype=subtype)
    return message.as_bytes()


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(
    "ctype, payload, filename",
    [("application/tlsrpt+gzip", GZ, NAME),
     ("application/tlsrpt+json", REPORT, NAME.removesuffix(".gz"))],
    ids=["gzip", "json"],
)
def test_rfc8460_5_3_report_mail(ctype, payload, filename):
    raw = _mail([(ctype, payload, filename)])
    for strict in (True, False):
        (attachment,) = extract_reports_from_message(raw, strict=strict)
        assert attachment == (filename, payload)
        name, data = attachment  # a plain (filename, payload) pair
        assert (name, data) == (filename, payload)
    (report,) = reports_from_message(raw, strict=True)
    assert report.total_failed == 303


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(
    "kwargs, words",
    [({"report_type": None}, "report-type"), ({"report_type": "feedback-report"}, "report-type"),
     ({"container": "mixed"}, "multipart/mixed")],
    ids=["no-report-type", "other-report-type", "multipart-mixed"],
)
def test_rfc8460_5_3_strict_needs_multipart_report_tlsrpt(kwargs, words):
    raw = _mail([("application/tlsrpt+gzip", GZ, NAME)], **kwargs)
    with pytest.raises(NoReportAttachmentError, match=words):
        extract_reports_from_message(raw, strict=True)
    assert extract_reports_from_message(raw)[0].payload == GZ


@pytest.mark.parametrize(
    "ctype, payload, filename",
    [
        ("application/tlsrpt", REPORT, "r.json"),
        ("application/gzip", GZ, "r.json.gz"),
        ("application/x-gzip", GZ, None),
        ("application/json", REPORT, None),
        ("application/octet-stream", GZ, "google.com!example.com!1!2!001.json.gz"),
        ("text/plain", REPORT, "report.json"),
    ],
    ids=["tlsrpt-no-suffix", "gzip", "x-gzip-unnamed", "json", "octet-stream-named",
         "text-plain-named"],
)
def test_tolerated_attachment_types(ctype, payload, filename):
    raw = _mail([(ctype, payload, filename)])
    (attachment,) = extract_reports_from_message(raw)
    assert attachment.payload == payload and attachment.filename == (filename or "")
    with pytest.raises(NoReportAttachmentError):
        extract_reports_from_message(raw, strict=True)


@pytest.mark.parametrize(
    "ctype, payload, found",
    [("application/tlsrpt+gzip", GZ, True), ("application/octet-stream", GZ, True),
     ("text/plain", REPORT, True), ("text/plain", b"hello, this is cron", False)],
    ids=["registered-type", "octet-stream-gzip", "json-body", "plain-text"],
)
def test_non_multipart_message(ctype, payload, found):
    raw = _single(ctype, payload)
    if found:
        assert extract_reports_from_message(raw)[0].payload == payload
    else:
        with pytest.raises(NoReportAttachmentError):
            extract_reports_from_message(raw)


def test_unrelated_attachments_are_skipped():
    raw = _mail([("application/pdf", b"%PDF-1.4", "invoice.pdf"),
                 ("application/octet-stream", b"\x00\x01", "blob.bin"),
                 ("application/tlsrpt+gzip", GZ, NAME), ("text/plain", b"footer", None)])
    assert extract_reports_from_message(raw) == [(NAME, GZ)]


def test_several_reports_in_order():
    second = gzip.compress(REPORT.replace(b"Company-X", b"Company-Y"))
    raw = _mail([("application/tlsrpt+gzip", GZ, "a.json.gz"),
                 ("application/tlsrpt+gzip", second, "b.json.gz")])
    reports = reports_from_message(raw)
    assert [r.organization_name for r in reports] == ["Company-X", "Company-Y"]


def test_no_report_attachment():
    raw = _mail([("application/pdf", b"%PDF", "x.pdf")])
    with pytest.raises(NoReportAttachmentError, match="multipart/report"):
        extract_reports_from_message(raw)


@pytest.mark.parametrize("raw", [b"", b"  \r\n"], ids=["empty", "blank"])
def test_empty_message(raw):
    with pytest.raises(NoReportAttachmentError, match="empty"):
        extract_reports_from_message(raw)


def test_message_size_cap():
    raw = _mail([("application/tlsrpt+gzip", GZ, NAME)])
    with pytest.raises(ReportTooLargeError):
        extract_reports_from_message(raw, max_size=len(raw) - 1)


def test_part_count_cap():
    raw = _mail([("application/octet-stream", b"x", f"{i}.bin") for i in range(80)])
    with pytest.raises(ReportMailError, match="more than 64 MIME parts"):
        extract_reports_from_message(raw)


def test_report_count_cap():
    raw = _mail([("application/tlsrpt+gzip", GZ, f"{i}.json.gz") for i in range(20)])
    with pytest.raises(ReportMailError, match="more than 16 reports"):
        extract_reports_from_message(raw, max_parts=100)


@pytest.mark.timeout(30)
def test_deeply_nested_multipart_is_a_typed_error():
    depth = 3000
    lines = [b"Content-Type: multipart/mixed; boundary=b0", b""]
    for i in range(1, depth):
        lines += [f"--b{i - 1}".encode(), f"Content-Type: multipart/mixed; boundary=b{i}".encode(),
                  b""]
    raw = b"\r\n".join(lines) + b"\r\n"
    with pytest.raises(ReportError):
        extract_reports_from_message(raw)


def test_not_bytes():
    with pytest.raises(ReportMailError, match="bytes"):
        extract_reports_from_message("From: x\r\n\r\nbody")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_property_arbitrary_bytes_raise_only_report_errors(data):
    for candidate in (data, b"Content-Type: multipart/report; boundary=x\r\n\r\n--x\r\n" + data):
        try:
            extract_reports_from_message(candidate)
        except ReportError:
            pass


# --- Subject ---------------------------------------------------------------------------------


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(
    "subject, expected",
    [
        (SUBJECT, ReportSubject("example.com", "mail.sender.example", "1@sender.example", True)),
        ("Report Domain: example.net Submitter: mail.sender.example.com\r\n"
         "    Report-ID: <735ff.e317+bf22029@example.net>",
         ReportSubject("example.net", "mail.sender.example.com", "735ff.e317+bf22029@example.net")),
        ("Report Domain: t.example Submitter: microsoft.com Report-ID:\r\n 1331+t.example",
         ReportSubject("t.example", "microsoft.com", "1331+t.example", False)),
        ("Report\r\n Domain: krvtz.net\r\n Submitter: mail.ru\r\n Report-ID: <c9@mail.ru>",
         ReportSubject("krvtz.net", "mail.ru", "c9@mail.ru", True)),
        ("report domain: a.example submitter: b.example report-id: <x@y>",
         ReportSubject("a.example", "b.example", "x@y", True)),
        ("Report Domain: a.example Submitter: b.example",
         ReportSubject("a.example", "b.example", None, False)),
        ("=?utf-8?q?Report_Domain=3A_a.example_Submitter=3A_b.example_Report-ID=3A_=3Cx=40y=3E?=",
         ReportSubject("a.example", "b.example", "x@y", True)),
        ("TLS Aggregate Report", None),
        ("Report Domain:", None),
        ("", None),
    ],
    ids=["rfc", "folded-rfc-example", "microsoft-no-brackets", "mailru-folded", "lower-case",
         "no-report-id", "encoded-word", "stalwart", "incomplete", "empty"],
)
def test_rfc8460_5_3_subject(subject, expected):
    assert parse_subject(subject) == expected


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(
    "subject, ok",
    [(SUBJECT, True), ("Report Domain: a.example Submitter: b.example Report-ID: x@y", False),
     ("report domain: a.example submitter: b.example report-id: <x@y>", False),
     ("Report Domain: a.example Submitter: b.example Report-ID: <xy>", False)],
    ids=["rfc", "no-brackets", "lower-case", "id-without-at"],
)
def test_rfc8460_5_3_subject_strict(subject, ok):
    assert (parse_subject(subject, strict=True) is not None) is ok


def test_subject_round_trip():
    subject = parse_subject(SUBJECT)
    assert subject.to_text() == SUBJECT
    assert parse_subject(subject.to_text(), strict=True) == subject


# --- file name -------------------------------------------------------------------------------


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(
    "name, expected",
    [
        ("google.com!test.xmox.nl!1663200000!1663286399!001.json.gz",
         ReportFilename("google.com", "test.xmox.nl", datetime(2022, 9, 15, tzinfo=UTC),
                        datetime(2022, 9, 15, 23, 59, 59, tzinfo=UTC), "001", True)),
        ("mail.sender.example!example.com!1013662812!1013749130.json",
         ReportFilename("mail.sender.example", "example.com",
                        datetime(2002, 2, 14, 5, 0, 12, tzinfo=UTC),
                        datetime(2002, 2, 15, 4, 58, 50, tzinfo=UTC), None, False)),
        ("a.example!b.example!0!86399!X1.JSON.GZ",
         ReportFilename("a.example", "b.example", datetime(1970, 1, 1, tzinfo=UTC),
                        datetime(1970, 1, 1, 23, 59, 59, tzinfo=UTC), "X1", True)),
        ("report.json", None),
        ("a!b!c!d.json", None),
        ("a.example!b.example!1!2!uid.xml", None),
        ("a.example!b.example!99999999999999!2.json", None),
    ],
    ids=["google", "no-unique-id", "upper-case-extension", "plain-name", "non-numeric",
         "other-extension", "timestamp-too-long"],
)
def test_rfc8460_5_3_filename(name, expected):
    assert parse_filename(name) == expected


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(
    "name, ok",
    [("google.com!b.example!1!2!001.json.gz", True), ("a.example!b.example!1!2.json", True),
     ("a.example!b.example!1!2!u-1.json", False), ("a.example!b.example!1!2.JSON", False),
     ("a.example!b.example!1!2.zip", False)],
    ids=["rfc", "no-uid", "uid-with-dash", "upper-case", "zip"],
)
def test_rfc8460_5_3_filename_strict(name, ok):
    assert (parse_filename(name, strict=True) is not None) is ok


def test_filename_round_trip():
    parsed = parse_filename(NAME)
    assert parsed.to_text() == NAME
    assert parse_filename(parsed.to_text(), strict=True) == parsed


_HOST = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\.(example|com|net)", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_property_subject_and_filename_never_raise(text):
    for strict in (True, False):
        subject = parse_subject(text, strict=strict)
        assert subject is None or subject.domain
        name = parse_filename(text, strict=strict)
        assert name is None or name.begin.tzinfo is UTC


@settings(max_examples=150, deadline=None)
@given(_HOST, _HOST, st.from_regex(r"[a-z0-9.+_-]{1,20}@[a-z0-9.-]{1,20}", fullmatch=True),
       st.integers(0, 4_000_000_000), st.integers(0, 86400),
       st.none() | st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True), st.booleans())
def test_property_subject_and_filename_round_trip(domain, submitter, rid, begin, span, uid, gz):
    subject = ReportSubject(domain, submitter, rid, True)
    assert parse_subject(subject.to_text(), strict=True) == subject
    name = ReportFilename(submitter, domain, datetime.fromtimestamp(begin, UTC),
                          datetime.fromtimestamp(begin + span, UTC), uid, gz)
    assert parse_filename(name.to_text(), strict=True) == name
