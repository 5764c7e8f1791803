"""Reports on their way out (RFC 8460 §5): the gzip body, the HTTPS request, the mail.

Pure: bytes and values in, bytes and values out; the date and unique parts are
arguments. What RFC 8460 asks, and where it is done:

- §5.3 / §6.4: the report is gzip-compressed JSON, media type ``application/tlsrpt+gzip``
  (:func:`gzip_report`; deterministic: no file name or time in the gzip header, so a
  retry sends the same bytes);
- §5.4: HTTPS POST of that body with that media type (:func:`https_post`);
- §5.3: mail as ``multipart/report; report-type="tlsrpt"`` with a human-readable part and
  the report as an ``application/tlsrpt+gzip`` attachment named
  ``submitter!policy-domain!begin!end!unique-id.json.gz``, the Subject
  ``Report Domain: <d> Submitter: <s> Report-ID: <<id>>``, and the headers
  ``TLS-Report-Domain`` and ``TLS-Report-Submitter`` (:func:`compose_report_mail`);
- §5.3: the mail is DKIM-signed by the submitter, without the ``l=`` body-length tag
  (:func:`dkim_sign`, dkimpy);
- RFC 8689 §5: ``TLS-Required: No`` so a report about TLS trouble still gets through a
  receiver whose TLS is broken; RFC 3834 ``Auto-Submitted: auto-generated``;
- no report loops: the Message-ID has a form (:func:`report_message_id`) the collector
  recognises in Postfix's log, and sessions delivering it are never reported.
"""

from __future__ import annotations

import email.policy
import email.utils
import gzip
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import unquote

import dkim

from smtptls.errors import ReportDeliveryError, ReportError
from smtptls.tlsrpt.mail import ReportFilename, ReportSubject
from smtptls.tlsrpt.report import Report
from smtptls.tlsrptsend.aggregate import report_uuid
from smtptls.tlsrptsend.postfix_lines import report_message_id

__all__ = [
    "GZIP_MEDIA_TYPE",
    "HttpsPost",
    "ReportMail",
    "compose_report_mail",
    "dkim_sign",
    "gzip_report",
    "https_post",
    "mailto_addresses",
    "report_filename",
    "report_subject",
]

#: RFC 8460 §6.4: the media type of a gzip-compressed report.
GZIP_MEDIA_TYPE = "application/tlsrpt+gzip"
#: RFC 8460 §5.3: these headers are signed with the message (TLS-Required is left out:
#: RFC 8689 lets relays act on it, and a removed header must not break the signature).
SIGNED_HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
                  b"content-type", b"tls-report-domain", b"tls-report-submitter",
                  b"auto-submitted")
MAX_ADDRESSES = 16
# RFC 5322 §2.1.1: lines at most 998 characters; long enough that the §5.3 Subject and
# the attachment's file name stay on one line (no RFC 2231 continuations to decode)
_POLICY = email.policy.SMTP.clone(max_line_length=998)
_ADDRESS_RE = re.compile(r"[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}")


def gzip_report(report: Report) -> bytes:
    """The report as gzip-compressed UTF-8 JSON (RFC 8460 §5.3), byte-for-byte stable."""
    return gzip.compress(report.to_json().encode("utf-8"), compresslevel=9, mtime=0)


def _policy_domain(report: Report) -> str:
    domains = report.policy_domains
    if len(domains) != 1:
        # RFC 8460 §4: one report per policy domain (H3)
        raise ReportError(f"a report for sending covers one policy domain, not {len(domains)}")
    return domains[0]


def report_filename(report: Report, submitter: str, *, compressed: bool = True) -> str:
    """RFC 8460 §5.3: ``submitter!policy-domain!begin-timestamp!end-timestamp!unique-id
    .json.gz`` (timestamps in seconds since the epoch; unique-id alphanumeric)."""
    domain = _policy_domain(report)
    unique = report_uuid(report.start_datetime.date(), domain, submitter).hex[:16]
    return ReportFilename(submitter, domain, report.start_datetime, report.end_datetime,
                          unique, compressed).to_text()


def report_subject(report: Report, submitter: str) -> str:
    """RFC 8460 §5.3: ``Report Domain: <d> Submitter: <s> Report-ID: <<report-id>>``."""
    return ReportSubject(_policy_domain(report), submitter, report.report_id).to_text()


@dataclass(frozen=True, slots=True)
class HttpsPost:
    """An RFC 8460 §5.4 delivery: POST ``body`` to ``url`` with these headers."""

    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...]


def https_post(report: Report, url: str, *, user_agent: str = "smtptls-tlsrpt/0.1"
               ) -> HttpsPost:
    """The POST request for ``url`` (an ``https:`` rua): gzip body, §5.4 media type."""
    if not url.lower().startswith("https://"):
        raise ReportDeliveryError("only https: URIs are POSTed (RFC 8460 §3)", uri=url,
                                  permanent=True)
    return HttpsPost(url, gzip_report(report),
                     (("Content-Type", GZIP_MEDIA_TYPE), ("User-Agent", user_agent)))


def mailto_addresses(uri: str) -> list[str]:
    """The addresses of a ``mailto:`` rua (RFC 6068: percent-decoded, ``,`` separated,
    any ``?`` header fields ignored). Raises a permanent :class:`ReportDeliveryError`."""
    if not isinstance(uri, str) or not uri.lower().startswith("mailto:"):
        raise ReportDeliveryError("not a mailto: URI", uri=str(uri)[:200], permanent=True)
    to = unquote(uri[7:].partition("?")[0])
    addresses = [a.strip() for a in to.split(",") if a.strip()]
    if not addresses or len(addresses) > MAX_ADDRESSES:
        raise ReportDeliveryError("mailto: URI with no usable address", uri=uri[:200],
                                  permanent=True)
    for a in addresses:
        if not _ADDRESS_RE.fullmatch(a):
            raise ReportDeliveryError(f"mailto: address {a[:100]!r} is not usable",
                                      uri=uri[:200], permanent=True)
    return addresses


def _human_text(report: Report, submitter: str) -> str:
    domain = _policy_domain(report)
    start = report.start_datetime.strftime("%Y-%m-%d %H:%M:%SZ")
    end = report.end_datetime.strftime("%Y-%m-%d %H:%M:%SZ")
    lines = [
        "This is an aggregate SMTP TLS report (RFC 8460).",
        "",
        f"Reporting organization: {report.organization_name}",
        f"Submitter:              {submitter}",
        f"Policy domain:          {domain}",
        f"Period:                 {start} to {end}",
        f"Report-ID:              {report.report_id}",
        f"Successful sessions:    {report.total_successful}",
        f"Failed sessions:        {report.total_failed}",
    ]
    for p in report.policies:
        for d in p.failure_details[:20]:
            where = d.receiving_mx_hostname or d.receiving_ip or "-"
            lines.append(f"  {p.policy_type!s:<15} {d.result_type!s:<26} {where:<40} "
                         f"{d.failed_session_count}")
    lines += ["", "The report itself is attached as gzip-compressed JSON "
              "(application/tlsrpt+gzip).",
              f"Questions: {report.contact_info}" if report.contact_info else ""]
    return "\n".join(lines).rstrip() + "\n"


@dataclass(frozen=True, slots=True)
class ReportMail:
    """A composed report mail: the envelope and the message bytes (CRLF line ends)."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    message_id: str  # without angle brackets
    message: bytes


def compose_report_mail(report: Report, *, submitter: str, mail_from: str,
                        rcpt_to: list[str] | tuple[str, ...], date: datetime,
                        unique: str) -> ReportMail:
    """The RFC 8460 §5.3 report mail (unsigned; see :func:`dkim_sign`).

    ``unique`` makes the Message-ID unique per message (e.g. the rua's index); the
    same arguments always give the same bytes, except the MIME boundary, which is fixed
    from the report-id too.
    """
    domain = _policy_domain(report)
    if not rcpt_to:
        raise ReportDeliveryError("a report mail needs a recipient", permanent=True)
    if not re.fullmatch(r"[A-Za-z0-9.-]{1,64}", unique):
        raise ReportError("unique must be a short token of letters, digits, '.' and '-'")
    if date.tzinfo is None:
        raise ReportError("date must be timezone-aware")
    ruuid = report_uuid(report.start_datetime.date(), domain, submitter)
    message_id = report_message_id(f"{ruuid.hex}.{unique}", submitter)
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = mail_from
    msg["To"] = ", ".join(rcpt_to)
    # RFC 8460 §5.3: Subject, TLS-Report-Domain, TLS-Report-Submitter
    msg["Subject"] = report_subject(report, submitter)
    msg["Date"] = email.utils.format_datetime(date.astimezone(UTC))
    msg["Message-ID"] = f"<{message_id}>"
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = submitter
    msg["TLS-Required"] = "No"  # RFC 8689 §5
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834 §5
    msg.set_content(_human_text(report, submitter), charset="utf-8", cte="quoted-printable")
    msg.add_attachment(
        gzip_report(report), maintype="application", subtype="tlsrpt+gzip",
        filename=report_filename(report, submitter),
    )
    # RFC 8460 §5.3: multipart/report with report-type "tlsrpt" (RFC 6522)
    msg.replace_header("Content-Type", "multipart/report")
    msg.set_param("report-type", "tlsrpt")
    msg.set_boundary(f"tlsrpt-{ruuid.hex}-{unique}")
    for part in msg.iter_parts():
        del part["MIME-Version"]  # RFC 2045 §4: a top-level header only
    raw = msg.as_bytes(policy=_POLICY)
    return ReportMail(mail_from, tuple(rcpt_to), message_id, raw)


def dkim_sign(message: bytes, *, selector: str, domain: str, private_key: bytes) -> bytes:
    """The message with a DKIM-Signature (RFC 6376; relaxed/relaxed, rsa-sha256 or
    ed25519-sha256 by key) prepended. RFC 8460 §5.3: no ``l=`` tag, ever."""
    try:
        signature = dkim.sign(
            message, selector.encode("ascii"), domain.encode("ascii"), private_key,
            include_headers=list(SIGNED_HEADERS),
            canonicalize=(b"relaxed", b"relaxed"),
            length=False,  # RFC 8460 §5.3: "without the l= tag"
            linesep=b"\r\n",
        )
    except (dkim.DKIMException, ValueError, UnicodeError) as exc:
        raise ReportDeliveryError(f"cannot DKIM-sign the report mail: {exc}",
                                  permanent=True) from exc
    if re.search(rb"(?:^|;)\s*l=", signature.replace(b"\r\n", b"")):
        raise ReportDeliveryError("DKIM signature carries an l= tag (RFC 8460 §5.3)",
                                  permanent=True)
    return signature + message
