"""TLSRPT reports sent by mail (RFC 8460 §5.3): find the report in a message.

Pure: bytes in, values out; no sockets, no DNS (DKIM verification, §5.3's MUST for
receivers, needs DNS and lives in the intake service).

RFC 8460 §5.3 mail form::

    Subject: Report Domain: example.net Submitter: mail.sender.example.com
             Report-ID: <735ff.e317+bf22029@example.net>
    TLS-Report-Domain: example.net
    TLS-Report-Submitter: mail.sender.example.com
    Content-Type: multipart/report; report-type="tlsrpt"; boundary=...
      text/plain                 a human-readable part
      application/tlsrpt+gzip    the report, named
                                 sender!policy-domain!begin!end[!unique-id].json.gz
                                 (application/tlsrpt+json: uncompressed, .json)

Tolerant by default, because real senders vary (QUIRKS.md 3, 6, 7, 10): Microsoft sends
an HTML body, a Subject Report-ID without ``<>`` and an attachment without ``name=``;
Mail.ru folds the Subject over four lines; Stalwart writes "TLS Aggregate Report";
some use ``application/tlsrpt`` (no suffix), ``application/tlsrpt+zip``,
``application/gzip``, ``application/json`` or ``application/octet-stream`` with a
``.json``/``.json.gz`` file name, or no multipart at all. ``strict=True`` accepts only
the §5.3 form: ``multipart/report; report-type=tlsrpt`` with ``application/tlsrpt+gzip``
or ``application/tlsrpt+json`` parts.
"""

from __future__ import annotations

import binascii
import email
import email.header
import email.message
import email.policy
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from smtptls.errors import (
    NoReportAttachmentError,
    ReportError,
    ReportMailError,
    ReportTooLargeError,
)
from smtptls.tlsrpt.decode import DEFAULT_MAX_DECOMPRESSED, GZIP_MAGIC, ZIP_MAGIC
from smtptls.tlsrpt.reader import parse_report
from smtptls.tlsrpt.report import Report

__all__ = [
    "DEFAULT_MAX_MESSAGE",
    "REPORT_MEDIA_TYPES",
    "ReportAttachment",
    "ReportFilename",
    "ReportMail",
    "ReportSubject",
    "extract_reports_from_message",
    "parse_filename",
    "parse_subject",
    "read_report_mail",
    "reports_from_message",
]

#: A report message larger than this is refused (base64 adds a third to the 5 MiB body).
DEFAULT_MAX_MESSAGE = 8 * 1024 * 1024
#: At most this many MIME parts are looked at.
MAX_PARTS = 64
#: At most this many reports are taken from one message.
MAX_REPORTS = 16
MAX_SUBJECT = 2048
#: A header value kept from a report mail (TLS-Report-Submitter, TLS-Report-Domain).
MAX_HEADER_VALUE = 255

#: RFC 8460 §5.3 / §6.4 / §6.5: the registered report media types.
REPORT_MEDIA_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")
# Seen in the wild (QUIRKS.md 10) or generic types a report may travel under.
_TOLERATED_TYPES = (
    "application/tlsrpt",
    "application/tlsrpt+zip",
    "application/gzip",
    "application/x-gzip",
    "application/json",
    "application/zip",
    "application/x-zip-compressed",
    "text/json",
)
_GENERIC_TYPES = ("application/octet-stream", "application/x-download", "text/plain")
_REPORT_NAME_RE = re.compile(r".+\.(?:json|json\.gz|json\.zip|gz|zip)", re.I | re.S)


class ReportAttachment(NamedTuple):
    """A report payload found in a message: its file name ("" if none) and bytes."""

    filename: str
    payload: bytes


def _content_type(part: email.message.Message) -> str:
    # compat32 falls back to text/plain for a malformed Content-Type
    return part.get_content_type().lower()


def _filename(part: email.message.Message) -> str:
    if ("content-disposition" not in part
            and "name" not in str(part.get("content-type", "")).lower()):
        return ""  # neither parameter can be there: skip the parameter parser
    name = part.get_filename() or part.get_param("name")
    if isinstance(name, tuple):  # RFC 2231 triple
        name = email.utils.collapse_rfc2231_value(name)
    if not isinstance(name, str):
        return ""
    if "=?" in name:
        try:
            name = str(email.header.make_header(email.header.decode_header(name)))
        except (ValueError, LookupError, UnicodeError):
            pass
    return name.strip()[:255]


def _looks_like_report(payload: bytes) -> bool:
    head = payload[:64].lstrip()
    return head[:2] == GZIP_MAGIC or head[:4] == ZIP_MAGIC or head[:1] == b"{"


def _candidate(part: email.message.Message, *, strict: bool, top_level: bool) -> bool:
    ctype = _content_type(part)
    if ctype in REPORT_MEDIA_TYPES:
        return True
    if strict:
        return False
    if ctype in _TOLERATED_TYPES:
        return True
    name = _filename(part)
    if name and _REPORT_NAME_RE.fullmatch(name) and not ctype.startswith("multipart/"):
        return True
    if top_level and ctype in _GENERIC_TYPES:
        # a non-multipart message whose body is the report itself
        payload = part.get_payload(decode=True)
        return isinstance(payload, bytes) and _looks_like_report(payload)
    return False


class ReportMail(NamedTuple):
    """What the intake needs of a report mail: its reports and two §5.3 headers."""

    attachments: list[ReportAttachment]
    submitter: str | None  # TLS-Report-Submitter, one line, at most MAX_HEADER_VALUE
    report_domain: str | None  # TLS-Report-Domain, likewise


def header_line(value: Any) -> str | None:
    """A header value as one line of at most MAX_HEADER_VALUE characters; None if empty."""
    if value is None:
        return None
    return " ".join(str(value).split())[:MAX_HEADER_VALUE] or None


def extract_reports_from_message(
    raw: bytes,
    *,
    strict: bool = False,
    max_size: int = DEFAULT_MAX_MESSAGE,
    max_parts: int = MAX_PARTS,
) -> list[ReportAttachment]:
    """The report attachments of a TLSRPT report e-mail (RFC 8460 §5.3), in order.

    Returns ``(filename, payload)`` pairs; *payload* is the decoded attachment (gzip,
    JSON, or zip) for :func:`~smtptls.tlsrpt.report.parse_report`. Raises
    :class:`~smtptls.errors.ReportTooLargeError` over *max_size*,
    :class:`~smtptls.errors.ReportMailError` for an unreadable message or more than
    *max_parts* MIME parts, and :class:`~smtptls.errors.NoReportAttachmentError` when
    nothing in it is a report.
    """
    return read_report_mail(raw, strict=strict, max_size=max_size,
                            max_parts=max_parts).attachments


def read_report_mail(
    raw: bytes,
    *,
    strict: bool = False,
    max_size: int = DEFAULT_MAX_MESSAGE,
    max_parts: int = MAX_PARTS,
) -> ReportMail:
    """The reports of a §5.3 mail and its TLS-Report-* headers, reading little.

    The common form (one multipart level whose parts are 7bit, 8bit or base64) is read
    directly: the top header block parsed once, the body split at its boundary, each
    part's header block parsed, and only report parts decoded. Anything else (nested
    multiparts, quoted-printable, a single-part message, a walk that finds no report)
    goes through the standard library's full parse, so both give the same answer and
    the same errors as :func:`extract_reports_from_message` always did.
    """
    if isinstance(raw, bytearray | memoryview):
        raw = bytes(raw)
    if not isinstance(raw, bytes):
        raise ReportMailError(f"a message is bytes, not {type(raw).__name__}")
    if len(raw) > max_size:
        raise ReportTooLargeError(f"message of {len(raw)} bytes is over the {max_size}-byte cap")
    if not raw.strip():
        raise NoReportAttachmentError("empty message")
    try:
        quick = _quick_walk(raw, strict=strict, max_parts=max_parts)
    except (ValueError, LookupError, TypeError, AttributeError, IndexError, UnicodeError,
            RecursionError, binascii.Error):
        quick = None  # the full parse below says what is wrong with it
    if quick is not None:
        return quick
    return _full_walk(raw, strict=strict, max_parts=max_parts)


_COMPAT32 = email.policy.compat32
# RFC 5322 §2.2: a field name is printable US-ASCII but ":", then ":"; the e-mail
# package's feed parser splits lines at CRLF, CR or LF and so does this.
_FIELD = re.compile(r"[\041-\071\073-\176]+:")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class _Fields(email.message.Message):
    """A parsed header block that finds a field by its name at once.

    ``get`` and ``in`` answer as :class:`email.message.Message` does (the first field of
    that name, compared case-insensitively) from an index of first occurrences, instead
    of lowering every name on every call; the walk reads a few fields of many and never
    changes them, so a field's lines are joined into its value only when it is read
    (every field is, as the feed parser stores them, once anything else asks for them).
    """

    def __init__(self, fields: list[list[str]] | None = None,
                 first: dict[str, int] | None = None) -> None:
        super().__init__(policy=_COMPAT32)  # sets _headers empty
        self._lines: list[list[str]] = fields or []
        self._first: dict[str, int] = first or {}
        self._type: str | None = None
        self._params: dict[str, Any] = {}

    @property  # type: ignore[override]
    def _headers(self) -> list[tuple[str, str]]:
        if self._lines:  # every field, as Message.set_raw would have stored it
            self._parsed = [_COMPAT32.header_source_parse(f) for f in self._lines]
            self._lines = []
        return self._parsed

    @_headers.setter
    def _headers(self, value: list[tuple[str, str]]) -> None:
        self._parsed = value
        self._lines = []

    def set_raw(self, name: str, value: str) -> None:
        self._first.setdefault(name.lower(), len(self._headers))
        super().set_raw(name, value)

    def get(self, name: str, failobj: Any = None) -> Any:
        i = self._first.get(name.lower())
        if i is None:
            return failobj
        k, v = (_COMPAT32.header_source_parse(self._lines[i]) if self._lines
                else self._parsed[i])
        return self.policy.header_fetch_parse(k, v)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    # The walk asks for the type and the parameters of a field several times: each is
    # parsed once (the fields never change once read).
    def get_content_type(self) -> str:
        if self._type is None:
            self._type = super().get_content_type()
        return self._type

    def _get_params_preserve(self, failobj: Any, header: str) -> Any:
        key = header.lower()
        if key not in self._params:
            self._params[key] = super()._get_params_preserve(_NO_FIELD, header)
        params = self._params[key]
        return failobj if params is _NO_FIELD else params


_NO_FIELD = object()


def _header_block(block: bytes) -> email.message.Message | None:
    """The fields of one header block as the feed parser would store them; None for
    anything it would treat specially (a Unix From line, a line that is no field)."""
    fields: list[list[str]] = []
    first: dict[str, int] = {}
    for line in _LINE.findall(block.decode("ascii", "surrogateescape")):
        if line[:1] in (" ", "\t"):
            if not fields:
                return None
            fields[-1].append(line)
            continue
        name = _FIELD.match(line)
        if name is None:
            return None
        first.setdefault(name.group()[:-1].lower(), len(fields))
        fields.append([line])
    return _Fields(fields, first)


# A part's header block ends at the first empty line (RFC 5322 §2.1).
_PLAIN_CTE = ("", "7bit", "8bit", "binary")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


def _split_head(block: bytes) -> tuple[bytes, bytes] | None:
    if block.startswith((b"\r\n", b"\n")):  # no headers at all
        return b"", block[2 if block.startswith(b"\r\n") else 1:]
    found = blank_line(block)
    if found is None:
        return None
    start, end = found
    if block.count(b"\r", 0, start) != block.count(b"\r\n", 0, start):
        return None  # a CR alone in the header: the feed parser splits lines there
    return block[:start], block[end:]


def blank_line(block: bytes) -> tuple[int, int] | None:
    """(start, end) of the first empty line as ``re.search(rb"\r?\n\r?\n", block)``
    finds it: the earliest start of its four forms, the longest form there."""
    starts = [i for i in (block.find(b"\r\n\r\n"), block.find(b"\r\n\n"),
                          block.find(b"\n\r\n"), block.find(b"\n\n")) if i >= 0]
    if not starts:
        return None
    start = min(starts)
    for form in (b"\r\n\r\n", b"\r\n\n", b"\n\r\n", b"\n\n"):
        if block.startswith(form, start):
            return start, start + len(form)
    raise AssertionError("a form was found at start")  # pragma: no cover


def delimiter_lines(body: bytes, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is-close) of each boundary delimiter line of a multipart body.

    What ``re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.M)``
    finds (RFC 2046 §5.1.1: a delimiter line, white space allowed after it; ``end``
    is before the line's LF), without compiling an expression for every message's
    boundary (compiling one costs more than the rest of the walk of a small mail).
    """
    marker = b"--" + boundary
    size = len(body)
    pos = 0
    while (i := body.find(marker, pos)) >= 0:
        pos = i + 1
        if i and body[i - 1] != _LF:
            continue  # not at the start of a line
        k = i + len(marker)
        close = body.startswith(b"--", k)
        if close:
            k += 2
        while k < size and body[k] in _BLANKS:
            k += 1
        if k < size and body[k] == _CR:
            k += 1
        if k == size or body[k] == _LF:
            yield i, k, close
            pos = k


_LF, _CR, _BLANKS = 0x0A, 0x0D, (0x20, 0x09)


def _quick_walk(raw: bytes, *, strict: bool, max_parts: int) -> ReportMail | None:
    """The one-level multipart walk of :func:`read_report_mail`; None: use the full one."""
    split = _split_head(raw)
    if split is None:
        return None
    head, body = split
    top = _header_block(head)
    if top is None:
        return None
    top_type = _content_type(top)
    if not top_type.startswith("multipart/") or top_type == "multipart/digest":
        return None
    if strict and (top_type != "multipart/report"
                   or str(top.get_param("report-type") or "").lower() != "tlsrpt"):
        return None  # the full walk words the refusal
    boundary = top.get_boundary()
    if not boundary or len(boundary) > 200 or not boundary.isascii():
        return None
    found: list[ReportAttachment] = []
    seen = 1  # the message itself, as the full walk counts it
    start: int | None = None
    for first, last, close in delimiter_lines(body, boundary.encode("ascii")):
        if start is not None:
            end = first
            end -= 2 if body[end - 2:end] == b"\r\n" else 1 if body[end - 1:end] == b"\n" else 0
            seen += 1
            if seen > max_parts:
                return None
            if not _quick_part(body[start:max(start, end)], strict, found):
                return None
        if close:
            start = None
            break
        start = last + (2 if body[last:last + 2] == b"\r\n" else 1)
    if start is not None or seen == 1 or not found or len(found) > MAX_REPORTS:
        return None  # unterminated, empty or unusual: the full walk decides
    return ReportMail(found, header_line(top.get("TLS-Report-Submitter")),
                      header_line(top.get("TLS-Report-Domain")))


def _quick_part(block: bytes, strict: bool, found: list[ReportAttachment]) -> bool:
    """Add the part to ``found`` if it is a report; False if the full walk must read it."""
    split = _split_head(block)
    if split is None:
        return False
    head, content = split
    part = _header_block(head) if head else _Fields()
    if part is None:
        return False
    if _content_type(part).startswith(("multipart/", "message/")):
        return False
    if not _candidate(part, strict=strict, top_level=False):
        return True
    # As Message.get_payload(decode=True) reads it (compat32: the value as written).
    cte = str(part.get("content-transfer-encoding", "")).lower()
    if cte == "base64":
        text = b"".join(content.split())
        if len(text) % 4 or not _BASE64.fullmatch(text):
            return False  # sloppy base64: the standard library's lenient decoder reads it
        payload = binascii.a2b_base64(text, strict_mode=True)
    elif cte in _PLAIN_CTE:
        payload = content
    else:
        return False
    if payload.strip():
        found.append(ReportAttachment(_filename(part), payload))
    return True


def _full_walk(raw: bytes, *, strict: bool, max_parts: int) -> ReportMail:
    try:
        message = email.message_from_bytes(raw, policy=email.policy.compat32)
        top_type = _content_type(message)
        if strict:
            # RFC 8460 §5.3: multipart/report with report-type "tlsrpt"
            report_type = str(message.get_param("report-type") or "").lower()
            if top_type != "multipart/report" or report_type != "tlsrpt":
                raise NoReportAttachmentError(
                    f"message is {top_type}"
                    + (f"; report-type={report_type}" if report_type else "")
                    + ", not multipart/report; report-type=tlsrpt (RFC 8460 §5.3)"
                )
        found: list[ReportAttachment] = []
        seen = 0
        for part in message.walk():
            seen += 1
            if seen > max_parts:
                raise ReportMailError(f"message has more than {max_parts} MIME parts")
            if part.is_multipart():
                continue
            if not _candidate(part, strict=strict, top_level=part is message):
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes) or not payload.strip():
                continue
            found.append(ReportAttachment(_filename(part), payload))
            if len(found) > MAX_REPORTS:
                raise ReportMailError(f"message carries more than {MAX_REPORTS} reports")
    except ReportError:
        raise
    except RecursionError:
        # the cause is hidden on purpose: its traceback is as deep as the hostile nesting
        raise ReportMailError("MIME structure nested too deeply") from None
    except (ValueError, LookupError, TypeError, AttributeError, IndexError, UnicodeError) as exc:
        # the stdlib e-mail parser is lenient, but its accessors can still trip on junk
        raise ReportMailError(f"unreadable message: {str(exc)[:100]}") from exc
    if not found:
        subject = " ".join(_decode_header(message.get("Subject", "")).split())[:80]
        raise NoReportAttachmentError(
            f"no TLSRPT report attachment in a {top_type} message"
            + (f" (Subject: {subject!r})" if subject else "")
        )
    return ReportMail(found, header_line(message.get("TLS-Report-Submitter")),
                      header_line(message.get("TLS-Report-Domain")))


def reports_from_message(
    raw: bytes,
    *,
    strict: bool = False,
    max_size: int = DEFAULT_MAX_MESSAGE,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> list[Report]:
    """Every report in a report e-mail, parsed (see :func:`parse_report`)."""
    return [
        parse_report(
            a.payload, strict=strict, max_size=max_size, max_decompressed=max_decompressed
        )
        for a in extract_reports_from_message(raw, strict=strict, max_size=max_size)
    ]


# --- Subject and file name --------------------------------------------------------------------


def _decode_header(value: Any) -> str:
    if isinstance(value, email.header.Header):
        value = str(value)
    if not isinstance(value, str):
        return ""
    if "=?" in value:
        try:
            value = str(email.header.make_header(email.header.decode_header(value)))
        except (ValueError, LookupError, UnicodeError):
            pass
    return value


@dataclass(frozen=True, slots=True)
class ReportSubject:
    """The RFC 8460 §5.3 Subject: ``Report Domain: <d> Submitter: <s> Report-ID: <<id>>``.

    ``report_id`` is without the angle brackets; ``bracketed`` says whether they were
    there (Microsoft leaves them out). The Subject's Report-ID need not equal the JSON
    ``report-id`` (Google writes them differently).
    """

    domain: str
    submitter: str
    report_id: str | None
    bracketed: bool = True

    def to_text(self) -> str:
        text = f"Report Domain: {self.domain} Submitter: {self.submitter}"
        if self.report_id is not None:
            rid = f"<{self.report_id}>" if self.bracketed else self.report_id
            text += f" Report-ID: {rid}"
        return text


# RFC 8460 §5.3: "Report" 1*FWS "Domain:" 1*FWS domain 1*FWS "Submitter:" 1*FWS domain
#                1*FWS "Report-ID:" 1*FWS "<" id-left "@" id-right ">"
_SUBJECT_STRICT_RE = re.compile(
    r"Report Domain: (?P<domain>[^\s<>]+) Submitter: (?P<submitter>[^\s<>]+)"
    r" Report-ID: <(?P<id>[^\s<>@]+@[^\s<>@]+)>"
)
_SUBJECT_RE = re.compile(
    r"Report\s*Domain:\s*(?P<domain>[^\s<>]+)\s+Submitter:\s*(?P<submitter>[^\s<>]+)"
    r"(?:\s+Report-ID:\s*(?:<(?P<bid>[^\s<>]*)>|(?P<id>[^\s<>]+))?)?",
    re.I,
)


def parse_subject(subject: str, *, strict: bool = False) -> ReportSubject | None:
    """Read an RFC 8460 §5.3 report Subject; None if it does not have that form.

    Folded lines are unfolded and RFC 2047 encoded words decoded first. Tolerant mode
    (default) also takes lower case keywords, a Report-ID without ``<>`` or none at all.
    The Subject is a SHOULD: a report mail with any other Subject is still a report.
    """
    if not isinstance(subject, str):
        return None
    text = " ".join(_decode_header(subject[:MAX_SUBJECT]).split())
    if strict:
        m = _SUBJECT_STRICT_RE.fullmatch(text)
        if m is None:
            return None
        return ReportSubject(m["domain"], m["submitter"], m["id"], True)
    m = _SUBJECT_RE.fullmatch(text)
    if m is None:
        return None
    if m["bid"] is not None:
        return ReportSubject(m["domain"], m["submitter"], m["bid"] or None, True)
    return ReportSubject(m["domain"], m["submitter"], m["id"], False)


@dataclass(frozen=True, slots=True)
class ReportFilename:
    """The RFC 8460 §5.3 attachment name:
    ``sender!policy-domain!begin-timestamp!end-timestamp[!unique-id].json[.gz]``.

    Timestamps are seconds since the epoch, read as aware UTC datetimes.
    """

    sender: str
    policy_domain: str
    begin: datetime
    end: datetime
    unique_id: str | None = None
    compressed: bool = True

    def to_text(self) -> str:
        name = (
            f"{self.sender}!{self.policy_domain}!"
            f"{int(self.begin.timestamp())}!{int(self.end.timestamp())}"
        )
        if self.unique_id:
            name += f"!{self.unique_id}"
        return name + (".json.gz" if self.compressed else ".json")


# RFC 8460 §5.3: filename = sender "!" policy-domain "!" begin-timestamp "!" end-timestamp
#   [ "!" unique-id ] "." extension;  unique-id = 1*(ALPHA / DIGIT);
#   extension = "json" / "json.gz"
_FILENAME_RE = re.compile(
    r"(?P<sender>[A-Za-z0-9_.\-]{1,253})!(?P<domain>[A-Za-z0-9_.\-]{1,253})"
    r"!(?P<begin>[0-9]{1,11})!(?P<end>[0-9]{1,11})(?:!(?P<uid>[A-Za-z0-9]{1,64}))?"
    r"\.(?P<ext>json|json\.gz)"
)
_FILENAME_LOOSE_RE = re.compile(
    r"(?P<sender>[A-Za-z0-9_.\-]{1,253})!(?P<domain>[A-Za-z0-9_.\-]{1,253})"
    r"!(?P<begin>[0-9]{1,11})!(?P<end>[0-9]{1,11})(?:!(?P<uid>[A-Za-z0-9_\-]{1,64}))?"
    r"\.(?P<ext>json|json\.gz|gz|json\.zip|zip)",
    re.I,
)


def parse_filename(name: str, *, strict: bool = False) -> ReportFilename | None:
    """Read an RFC 8460 §5.3 report file name; None if it does not have that form."""
    if not isinstance(name, str) or len(name) > 600:
        return None
    regex = _FILENAME_RE if strict else _FILENAME_LOOSE_RE
    m = regex.fullmatch(name.strip())
    if m is None:
        return None
    try:
        begin = datetime.fromtimestamp(int(m["begin"]), UTC)
        end = datetime.fromtimestamp(int(m["end"]), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return ReportFilename(
        sender=m["sender"],
        policy_domain=m["domain"],
        begin=begin,
        end=end,
        unique_id=m["uid"],
        compressed=m["ext"].lower() != "json",
    )
