"""Audits of a domain's mail transport security: MX, STARTTLS/TLS, MTA-STS, TLSRPT, DANE.

For domain owners and auditors (``smtptls check``). Two halves, kept apart:

- gathering (I/O): :class:`~smtptls.check.gather.Gatherer` asks DNS, fetches the
  MTA-STS policy, probes rua destinations and MX hosts, with run-scoped memos and
  connection limits; it produces :class:`~smtptls.check.facts.DomainFacts`;
- evaluation (pure): :func:`~smtptls.check.evaluate.evaluate` runs the checks of each
  area (:mod:`.mx`, :mod:`.tls`, :mod:`.mtasts`, :mod:`.tlsrpt`, :mod:`.dane`,
  :mod:`.consistency`) and returns a :class:`~smtptls.check.report.CheckReport` of
  :class:`~smtptls.check.findings.Finding` values, each with a severity and a fix.

:mod:`.bulk` checks many domains concurrently (resumable JSON Lines, summary). The JSON
form of a report is the versioned schema ``smtptls.check/1`` (docs/check.md).
"""

from smtptls.check.evaluate import evaluate
from smtptls.check.facts import (
    CertFacts,
    DomainFacts,
    FetchFacts,
    LookupFacts,
    MxFacts,
    ProbeFacts,
    RuaFacts,
    TlsaFacts,
)
from smtptls.check.findings import Area, Finding, Severity, worst_severity
from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.check.report import SCHEMA, Adoption, CheckReport
from smtptls.check.runner import check_domain, check_domains, check_domains_sync

__all__ = [
    "SCHEMA",
    "Adoption",
    "Area",
    "CertFacts",
    "CheckOptions",
    "CheckReport",
    "DomainFacts",
    "FetchFacts",
    "Finding",
    "Gatherer",
    "LookupFacts",
    "MxFacts",
    "ProbeFacts",
    "RuaFacts",
    "Severity",
    "TlsaFacts",
    "check_domain",
    "check_domains",
    "check_domains_sync",
    "evaluate",
    "worst_severity",
]
