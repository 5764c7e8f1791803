"""SMTP TLS Reporting, RFC 8460 — the report format, for receivers and senders.

- :mod:`~smtptls.tlsrpt.record`: the policy record at ``_smtp._tls.<domain>`` (§3)
- :mod:`~smtptls.tlsrpt.report`: the aggregate report model (§4)
- :mod:`~smtptls.tlsrpt.reader`: reading a report, strict or tolerant (§4)
- :mod:`~smtptls.tlsrpt.decode`: report bodies (JSON, gzip) to JSON, within named bounds
- :mod:`~smtptls.tlsrpt.values`: checks of host names, addresses and dates in a report
- :mod:`~smtptls.tlsrpt.mail`: reports delivered by mail (§5.3)

The sending side (session results, aggregation, outgoing reports, the libtlsrpt and
Postfix log sources) is :mod:`smtptls.tlsrptsend`.

No I/O here: text and bytes in, frozen values out; every error is a
:class:`~smtptls.errors.ReportError`.
"""

from __future__ import annotations

from smtptls.tlsrpt.mail import (
    ReportAttachment,
    ReportFilename,
    ReportSubject,
    extract_reports_from_message,
    parse_filename,
    parse_subject,
    reports_from_message,
)
from smtptls.tlsrpt.reader import parse_report
from smtptls.tlsrpt.record import TlsrptRecord, parse_record, parse_txt_records, record_name
from smtptls.tlsrpt.report import FailureDetail, PolicyResult, PolicyType, Report, ResultType

__all__ = [
    "FailureDetail",
    "PolicyResult",
    "PolicyType",
    "Report",
    "ReportAttachment",
    "ReportFilename",
    "ReportSubject",
    "ResultType",
    "TlsrptRecord",
    "extract_reports_from_message",
    "parse_filename",
    "parse_record",
    "parse_report",
    "parse_subject",
    "parse_txt_records",
    "record_name",
    "reports_from_message",
]
