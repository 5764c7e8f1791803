"""SMTP TLS Reporting, RFC 8460 — the sending side: results in, reports out.

- :mod:`~smtptls.tlsrptsend.results`: one TLS result per SMTP session (§4.3)
- :mod:`~smtptls.tlsrptsend.aggregate`: daily aggregation into §4 reports, stable report-ids
- :mod:`~smtptls.tlsrptsend.outgoing`: the HTTPS body and the §5.3 mail of a report
- :mod:`~smtptls.tlsrptsend.libtlsrpt`: the datagrams Postfix >= 3.10 sends
- :mod:`~smtptls.tlsrptsend.postfix_lines`: what Postfix logs, syslog and journald lines
- :mod:`~smtptls.tlsrptsend.postfix_log`: Postfix log lines to SMTP sessions
- :mod:`~smtptls.tlsrptsend.postfix_results`: sessions and their policy to results

Pure like :mod:`smtptls.tlsrpt`, whose report format it builds: no sockets, files or
clocks (the collector and sender services in :mod:`smtptls.services` do the I/O).
"""

from __future__ import annotations

from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate, report_id
from smtptls.tlsrptsend.libtlsrpt import Datagram, decode_datagram
from smtptls.tlsrptsend.results import AppliedPolicy, Failure, SessionResult

__all__ = [
    "AppliedPolicy",
    "Datagram",
    "Failure",
    "ReportIdentity",
    "SessionResult",
    "aggregate",
    "decode_datagram",
    "report_id",
]
