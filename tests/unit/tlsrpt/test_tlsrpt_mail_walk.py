"""RFC 8460 §5.3 report mails read by the bounded walk (:func:`read_report_mail`): one
multipart level read directly, everything else by the standard library's full parse;
both must give the same reports, headers and errors on every mail."""

from __future__ import annotations

import base64
import email
import email.policy
import gzip
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtptls.errors import ReportError, ReportMailError
from smtptls.tlsrpt import mail
from tests.conftest import FIXTURES, corpus_params

REPORT = gzip.compress(json.dumps({"organization-name": "o", "report-id": "r"}).encode(), mtime=0)
B64 = base64.encodebytes(REPORT).decode()


def form(*, nl: str = "\r\n", cte: str = "base64", body: str = B64, preamble: str = "",
         epilogue: str = "", close: bool = True, top: str = "", parts: int = 1,
         part_headers: str = "") -> bytes:
    head = ["From: r@reporter.example", "Subject: Report Domain: example.net Submitter: "
            "reporter.example Report-ID: <1@reporter.example>",
            "TLS-Report-Domain: example.net", "TLS-Report-Submitter:  reporter.example ",
            top or 'Content-Type: multipart/report; report-type="tlsrpt"; boundary="B"', ""]
    lines = [*head, *([preamble] if preamble else []), "--B", "Content-Type: text/plain", "",
             "A TLS report.", ""]
    for _ in range(parts):
        lines += ["--B", 'Content-Type: application/tlsrpt+gzip; name="r.json.gz"',
                  *([f"Content-Transfer-Encoding: {cte}"] if cte else []),
                  *([part_headers] if part_headers else []), "", *body.splitlines()]
    lines += ["--B--" if close else "", *([epilogue] if epilogue else []), ""]
    return nl.join(lines).encode("latin-1")


def answer(raw: bytes, strict: bool, walk) -> object:
    try:
        return walk(raw, strict=strict)
    except ReportError as exc:
        return (type(exc), str(exc))


def full(raw: bytes, strict: bool) -> mail.ReportMail:
    return mail._full_walk(raw, strict=strict, max_parts=mail.MAX_PARTS)


VARIANTS = {
    "crlf": form(), "lf": form(nl="\n"), "preamble-epilogue": form(preamble="junk", epilogue="x"),
    "unterminated": form(close=False), "two-reports": form(parts=2),
    "7bit-json": form(cte="7bit", body='{"report-id": "r"}'), "no-cte": form(cte="", body="{}"),
    "quoted-printable": form(cte="quoted-printable", body='{"a":=\n"b"}'),
    "sloppy-base64": form(body=B64[:-3]), "base64-with-junk": form(body="!!" + B64),
    "cte-trailing-space": form(cte="base64 "),
    "folded-part-header": form(part_headers="Content-Disposition: attachment;\r\n filename=r.json.gz"),
    "rfc2231-name": form(part_headers="Content-Disposition: attachment; filename*=utf-8''r%20x.json.gz"),
    "not-multipart": form(top="Content-Type: application/tlsrpt+gzip"),
    "no-boundary": form(top="Content-Type: multipart/report"),
    "nested": form(part_headers="", top='Content-Type: multipart/mixed; boundary="B"')
    .replace(b"Content-Type: text/plain", b'Content-Type: multipart/alternative; boundary="C"'),
    "unix-from": b"From someone Thu May  2 00:00:00 2024\r\n" + form(),
    "empty-part-headers": form().replace(b"--B\r\nContent-Type: text/plain\r\n", b"--B\r\n\r\n"),
}


@pytest.mark.rfc
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_rfc8460_5_3_bounded_walk_answers_as_the_full_parse(name, strict):
    raw = VARIANTS[name]
    assert answer(raw, strict, mail.read_report_mail) == answer(raw, strict, full)


@pytest.mark.parametrize("path", sorted(FIXTURES.joinpath("tlsrpt").glob("*.eml")), ids=lambda p: p.name)
def test_fixture_mails_read_the_same_both_ways(path: Path):
    raw = path.read_bytes()
    for strict in (False, True):
        assert answer(raw, strict, mail.read_report_mail) == answer(raw, strict, full)


@pytest.mark.parametrize("path", corpus_params(lambda c: sorted(c.rglob("*.eml"))),
                         ids=lambda p: p.name if p else "no-corpus")
def test_corpus_mails_read_the_same_both_ways(path, corpus):
    raw = path.read_bytes()
    for strict in (False, True):
        assert answer(raw, strict, mail.read_report_mail) == answer(raw, strict, full)


def test_the_common_form_is_read_without_the_full_parse():
    for name in ("crlf", "lf", "preamble-epilogue", "two-reports", "7bit-json"):
        quick = mail._quick_walk(VARIANTS[name], strict=True, max_parts=mail.MAX_PARTS)
        assert quick is not None, name
    got = mail.read_report_mail(VARIANTS["crlf"])
    assert got.attachments == [mail.ReportAttachment("r.json.gz", REPORT)]
    assert (got.submitter, got.report_domain) == ("reporter.example", "example.net")


def test_part_count_is_bounded_on_the_quick_walk_too():
    raw = form(parts=mail.MAX_PARTS + 1)
    with pytest.raises(ReportMailError, match="more than"):
        mail.read_report_mail(raw)


def test_header_fields_are_found_as_the_email_package_finds_them():
    block = (b"Content-Type: multipart/report; report-type=tlsrpt;\r\n boundary=\"b\"\r\n"
             b"content-type: text/plain\r\nTLS-Report-Domain: first.example\r\n"
             b"tls-report-domain: second.example\r\nX-Empty:\r\n")
    fields = mail._header_block(block)
    reference = email.message_from_bytes(block + b"\r\n", policy=email.policy.compat32)
    for name in ("content-type", "Content-Type", "TLS-REPORT-DOMAIN", "x-empty", "absent"):
        assert fields.get(name) == reference.get(name), name
        assert (name in fields) == (name in reference), name
    for _ in range(2):  # parsed once, answered the same every time
        assert fields.get_content_type() == reference.get_content_type() == "multipart/report"
        assert fields.get_boundary() == reference.get_boundary() == "b"
        assert fields.get_param("report-type") == reference.get_param("report-type") == "tlsrpt"
        assert fields.get_filename() is reference.get_filename() is None
    part = mail._header_block(b"Content-Type: application/tlsrpt+gzip\r\n"
                              b"Content-Disposition: attachment;\r\n filename*=UTF-8''r%C3%A9.gz\r\n")
    reference = email.message_from_bytes(
        b"Content-Type: application/tlsrpt+gzip\r\n"
        b"Content-Disposition: attachment;\r\n filename*=UTF-8''r%C3%A9.gz\r\n\r\n",
        policy=email.policy.compat32)
    for _ in range(2):
        assert part.get_filename() == reference.get_filename() == "r\u00e9.gz"
        assert part.get_param("name") is reference.get_param("name") is None


# The delimiter lines of a multipart body, found without a regular expression per
# boundary: the same as the expression the RFC 2046 §5.1.1 form reads as.
_PIECES = st.sampled_from([b"--B", b"--", b"-", b"B", b" ", b"\t", b"\r", b"\n", b"\r\n",
                           b"x", b"--B--", b"--BB"])


@given(st.lists(_PIECES, max_size=40).map(b"".join), st.sampled_from([b"B", b"=_a.b+c"]))
def test_rfc2046_5_1_1_delimiter_lines_are_the_expressions_matches(body, boundary):
    body = body.replace(b"B", boundary)
    expression = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.M)
    expected = [(m.start(), m.end(), bool(m.group(1))) for m in expression.finditer(body)]
    assert list(mail.delimiter_lines(body, boundary)) == expected


def test_rfc2046_5_1_1_delimiter_lines_of_a_report_mail():
    raw = form(nl="\r\n")
    body = raw.split(b"\r\n\r\n", 1)[1]
    found = list(mail.delimiter_lines(body, b"B"))
    assert [close for _, _, close in found] == [False, False, True]
    assert all(body[start:end].rstrip(b"\r") in (b"--B", b"--B--") for start, end, _ in found)


@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b":", b" "]), max_size=30)
       .map(b"".join))
def test_rfc5322_2_1_the_header_block_ends_where_the_expressions_say(block):
    # The first empty line, and a CR alone before it, as the expressions read them.
    m = re.search(rb"\r?\n\r?\n", block)
    assert mail.blank_line(block) == (None if m is None else (m.start(), m.end()))
    if m is None or re.compile(rb"\r(?!\n)").search(block, 0, m.start()):
        expected = None
    else:
        expected = (block[:m.start()], block[m.end():])
    if not block.startswith((b"\r\n", b"\n")):  # no header at all: read before the search
        assert mail._split_head(block) == expected
