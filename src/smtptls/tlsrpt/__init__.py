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

from smtptls.lazy import lazy_exports
from smtptls.tlsrpt.record import TlsrptRecord, parse_record, parse_txt_records, record_name

# The report model, its reader and the mail form load on first use, not with the package:
# the record (§3) is what checkers and senders read before any report.
_LAZY = {
    "ReportAttachment": "mail",
    "ReportFilename": "mail",
    "ReportSubject": "mail",
    "extract_reports_from_message": "mail",
    "parse_filename": "mail",
    "parse_subject": "mail",
    "reports_from_message": "mail",
    "parse_report": "reader",
    "FailureDetail": "report",
    "PolicyResult": "report",
    "PolicyType": "report",
    "Report": "report",
    "ResultType": "report",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
