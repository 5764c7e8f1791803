"""SMTP TLS Reporting, RFC 8460 — the pure core for receivers and senders.

- :mod:`~smtptls.tlsrpt.record`: the policy record at ``_smtp._tls.<domain>`` (§3)
- :mod:`~smtptls.tlsrpt.report`: aggregate reports, JSON or gzip, strict or tolerant (§4)
- :mod:`~smtptls.tlsrpt.mail`: reports delivered by mail (§5.3)
- :mod:`~smtptls.tlsrpt.results`: one TLS result per SMTP session (sender side)
- :mod:`~smtptls.tlsrpt.aggregate`: daily aggregation into §4 reports, stable report-ids
- :mod:`~smtptls.tlsrpt.libtlsrpt`: the datagrams Postfix >= 3.10 sends
- :mod:`~smtptls.tlsrpt.postfix_log`: Postfix TLS log lines to results
- :mod:`~smtptls.tlsrpt.outgoing`: the HTTPS body and the §5.3 mail of a report

No I/O here: text and bytes in, frozen values out; every error is a
:class:`~smtptls.errors.ReportError`.
"""

from __future__ import annotations

from smtptls.tlsrpt.aggregate import ReportIdentity, aggregate, report_id
from smtptls.tlsrpt.libtlsrpt import Datagram, decode_datagram
from smtptls.tlsrpt.mail import (
    ReportAttachment,
    ReportFilename,
    ReportSubject,
    extract_reports_from_message,
    parse_filename,
    parse_subject,
    reports_from_message,
)
from smtptls.tlsrpt.record import TlsrptRecord, parse_record, parse_txt_records, record_name
from smtptls.tlsrpt.report import (
    FailureDetail,
    PolicyResult,
    PolicyType,
    Report,
    ResultType,
    parse_report,
)
from smtptls.tlsrpt.results import AppliedPolicy, Failure, SessionResult

__all__ = [
    "AppliedPolicy",
    "Datagram",
    "Failure",
    "FailureDetail",
    "PolicyResult",
    "PolicyType",
    "Report",
    "ReportAttachment",
    "ReportFilename",
    "ReportIdentity",
    "ReportSubject",
    "ResultType",
    "SessionResult",
    "TlsrptRecord",
    "aggregate",
    "decode_datagram",
    "extract_reports_from_message",
    "parse_filename",
    "parse_record",
    "parse_report",
    "parse_subject",
    "parse_txt_records",
    "record_name",
    "report_id",
    "reports_from_message",
]
