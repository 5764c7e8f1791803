"""Judge gathered facts: every area's checks, one :class:`CheckReport` (pure).

``evaluate(facts)`` reads no clock: "now" is ``facts.checked_at`` unless given.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from smtptls.check.consistency import check_consistency
from smtptls.check.dane import DaneStatus, DaneView, check_dane, dane_view
from smtptls.check.facts import DomainFacts, MxFacts
from smtptls.check.findings import Area, Finding, Severity
from smtptls.check.mtasts import StsView, check_mtasts, sts_view
from smtptls.check.mx import check_mx
from smtptls.check.report import Adoption, CheckReport
from smtptls.check.tls import check_tls
from smtptls.check.tlsrpt import TlsrptView, check_tlsrpt, tlsrpt_view
from smtptls.dnssec import Security
from smtptls.engine.destination import (
    Decision,
    DestinationFacts,
    HostFacts,
    NextHop,
    decide,
)
from smtptls.errors import InvalidDomainError

__all__ = ["evaluate", "sender_decision"]

_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
_AREAS = list(Area)


def _host_dict(h: MxFacts) -> dict[str, Any]:
    worst = max((h.a.security, h.aaaa.security),
                key=lambda s: [Security.SECURE, Security.INSECURE, Security.INDETERMINATE,
                               Security.BOGUS].index(s))
    return {"host": h.host, "preference": h.preference, "addresses": list(h.addresses),
            "address_security": worst.value, "cname_chain": list(h.cname_chain),
            "tlsa": [t.to_dict() for t in h.tlsa],
            "probed": h.probed, "tls": [p.to_dict() for p in h.probes]}


def sender_decision(facts: DomainFacts, sts: StsView, dane: DaneView) -> Decision | None:
    """What a sender (``smtptls policyd``) decides for this domain, from the same facts:
    the one destination decision of :func:`smtptls.engine.destination.decide`. The
    MTA-STS policy counts only when a sender would apply it (a valid record and a
    valid policy; no cache here). None when the domain is not a next hop."""
    try:
        nexthop = NextHop.parse(facts.domain)
    except InvalidDomainError:
        return None
    entries = {} if dane.decision is None else {e.host: e for e in dane.decision.entries}
    hosts = tuple(HostFacts(h.host, h.preference or 0, entries.get(h.host))
                  for h in facts.hosts)
    policy = sts.policy if sts.record is not None and not sts.lenient else None
    mx_security = facts.mx.security
    return decide(DestinationFacts(nexthop, mx_security, hosts,
                                   implicit_mx=not facts.mx.records and not facts.mx.failed,
                                   null_mx=facts.null_mx, mx_error=facts.mx.error,
                                   policy=policy))


def _sections(facts: DomainFacts, sts: StsView, dane: DaneView,
              tlsrpt: TlsrptView) -> dict[str, Any]:
    decision = sender_decision(facts, sts, dane)
    return {
        "decision": None if decision is None else decision.to_dict(),
        "mx": {"lookup": facts.mx.to_dict(), "null_mx": facts.null_mx,
               "hosts": [_host_dict(h) for h in facts.hosts]},
        "mta_sts": {"txt": None if facts.sts_txt is None else facts.sts_txt.to_dict(),
                    **sts.to_dict(),
                    "fetch": None if facts.policy is None else facts.policy.to_dict()},
        "tlsrpt": {"txt": None if facts.tlsrpt_txt is None else facts.tlsrpt_txt.to_dict(),
                   **tlsrpt.to_dict(), "rua_checks": [r.to_dict() for r in facts.rua]},
        "dane": dane.to_dict(),
    }


def evaluate(facts: DomainFacts, now: dt.datetime | None = None) -> CheckReport:
    """Run every check on ``facts``; findings sorted by severity, then area."""
    when = now or facts.checked_at
    sts = sts_view(facts)
    tlsrpt = tlsrpt_view(facts)
    dane = dane_view(facts, when)
    findings: list[Finding] = []
    findings += check_mx(facts)
    findings += check_tls(facts, dane, when)
    findings += check_mtasts(facts, sts, dane)
    findings += check_tlsrpt(facts, tlsrpt)
    findings += check_dane(facts, dane)
    findings += check_consistency(facts, sts, dane, tlsrpt)
    if facts.timed_out:
        findings.append(Finding("check.time-limit", Severity.WARNING, Area.CHECK, facts.domain,
                                "the per-domain time limit was reached: some facts are "
                                "missing and the report is incomplete"))
    for note in facts.notes[:8]:
        findings.append(Finding("check.note", Severity.INFO, Area.CHECK, facts.domain, note))
    findings.sort(key=lambda f: (_ORDER[f.severity], _AREAS.index(f.area), f.code, f.subject))
    adoption = Adoption(
        mta_sts=None if sts.policy is None else sts.policy.mode.value,
        mta_sts_record=sts.present,
        tlsrpt=tlsrpt.record is not None,
        dane=dane.status.value if dane.status is not DaneStatus.NOT_APPLICABLE
        else "not-applicable",
        mx_dnssec=None if facts.mx.failed and facts.mx.security is Security.INDETERMINATE
        else facts.mx.security.value)
    return CheckReport(facts.domain, facts.checked_at, tuple(findings), adoption,
                       facts.elapsed, facts.smtp_probed, facts.timed_out,
                       _sections(facts, sts, dane, tlsrpt))
