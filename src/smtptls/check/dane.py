"""DANE checks (pure): does DANE apply, does it work, and is it safe to maintain.

The decision per MX host is :func:`smtptls.dane.decide.decide_destination` (RFC 7672
§2), fed with the gathered DNS answers; the live match is
:func:`smtptls.dane.verify.verify_chain` on the chain each probe captured (RFC 7672
§3); record advice and rollover safety come from
:func:`smtptls.dane.publish.rollover_advice` (RFC 7671 §5, §8, §9).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from smtptls.check.facts import DomainFacts, LookupFacts, MxFacts, ProbeFacts
from smtptls.check.findings import Area, Finding, Severity
from smtptls.dane.decide import (
    DestinationDecision,
    DestinationLookup,
    HostLookup,
    MxDecision,
    Requirement,
    TlsaLookup,
    decide_destination,
    tlsa_query_name,
)
from smtptls.dane.tlsa import Selector, Usage, unusable_reason
from smtptls.dnssec import Security
from smtptls.errors import DaneError

if TYPE_CHECKING:
    from smtptls.dane.verify import DaneVerdict

# smtptls.dane.verify and smtptls.dane.publish (and cryptography under them) are
# imported where a captured chain is judged: a run without SMTP probes has no chain.

__all__ = ["DaneStatus", "DaneView", "HostDane", "check_dane", "dane_view", "host_lookup",
           "suggested_record"]

_RANK = {Security.SECURE: 0, Security.INSECURE: 1, Security.INDETERMINATE: 2,
         Security.BOGUS: 3}


class DaneStatus(StrEnum):
    PASS = "pass"  # noqa: S105 - every MX host authenticated by DANE (or has usable TLSA)
    FAIL = "fail"
    PARTIAL = "partial"
    NOT_APPLICABLE = "not-applicable"


@dataclass(frozen=True, slots=True)
class HostDane:
    """The DANE decision for one MX host and the verdict of each probed address."""

    host: str
    decision: MxDecision
    verdicts: tuple[tuple[ProbeFacts, DaneVerdict | None], ...] = ()

    @property
    def protected(self) -> bool:
        return self.decision.requirement is Requirement.DANE_REQUIRED

    @property
    def passed(self) -> bool | None:
        """True: every probe authenticated; False: one failed; None: not probed."""
        if not self.verdicts:
            return None
        return all(v is not None and v.ok for _, v in self.verdicts)

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {"host": self.host, "requirement": d.requirement.value,
                "reason": d.reason, "detail": d.detail, "tlsa_base": d.tlsa_base,
                "usable_records": [r.to_text() for r in d.records],
                "live": [{"address": p.address,
                          "match": None if v is None else v.ok,
                          "reason": None if v is None else v.reason,
                          "detail": None if v is None else v.detail,
                          "matched": None if v is None or v.matched is None
                          else v.matched.to_text()} for p, v in self.verdicts]}


@dataclass(frozen=True, slots=True)
class DaneView:
    decision: DestinationDecision | None
    hosts: tuple[HostDane, ...]
    status: DaneStatus
    error: str | None = None

    def host(self, name: str) -> HostDane | None:
        return next((h for h in self.hosts if h.host == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status.value,
                "mx_security": None if self.decision is None
                else self.decision.mx_security.value,
                "hosts": [h.to_dict() for h in self.hosts], "error": self.error}


def _worst(*values: Security) -> Security:
    return max(values, key=lambda s: _RANK[s])


def host_lookup(host: MxFacts) -> HostLookup:
    """The :class:`HostLookup` the DANE decision needs, from gathered facts."""
    return HostLookup(host.host, _worst(host.a.security, host.aaaa.security),
                      host.cname_chain, host.first_security)


def _destination(facts: DomainFacts) -> tuple[DestinationLookup, list[HostLookup],
                                               dict[str, TlsaLookup]]:
    mx: LookupFacts = facts.mx
    has_mx = bool(mx.records) or mx.failed
    names = tuple(h.host for h in facts.hosts) if has_mx else ()
    dest = DestinationLookup(facts.domain, mx.security, names, has_mx)
    lookups = [host_lookup(h) for h in facts.hosts]
    tlsa = {t.base: TlsaLookup(t.security, t.records) for h in facts.hosts for t in h.tlsa}
    return dest, lookups, tlsa


def decide(facts: DomainFacts) -> DestinationDecision:
    """The RFC 7672 §2 decision for the gathered facts (raises DaneError if incomplete)."""
    dest, lookups, tlsa = _destination(facts)
    return decide_destination(dest, lookups, tlsa)


def dane_view(facts: DomainFacts, now: dt.datetime) -> DaneView:
    """Decide per MX host and verify every captured chain of a DANE-protected host."""
    if facts.mx.failed and facts.mx.security is Security.INDETERMINATE or facts.null_mx \
            or facts.mx.nxdomain:
        return DaneView(None, (), DaneStatus.NOT_APPLICABLE)
    try:
        decision = decide(facts)
    except DaneError as exc:
        return DaneView(None, (), DaneStatus.NOT_APPLICABLE, str(exc))
    by_name = {h.host: h for h in facts.hosts}
    hosts = []
    for entry in decision.entries:
        facts_host = by_name.get(entry.host)
        verdicts: list[tuple[ProbeFacts, DaneVerdict | None]] = []
        if entry.requirement is Requirement.DANE_REQUIRED and facts_host is not None:
            if facts_host.probes:
                from smtptls.dane.verify import verify_chain
            for p in facts_host.probes:
                if not p.handshake_done:
                    verdicts.append((p, None))
                    continue
                verdicts.append((p, verify_chain(entry.all_records, list(p.chain_der),
                                                 entry.reference_names, now=now)))
        hosts.append(HostDane(entry.host, entry, tuple(verdicts)))
    return DaneView(decision, tuple(hosts), _status(decision, hosts))


def _status(decision: DestinationDecision, hosts: list[HostDane]) -> DaneStatus:
    if decision.reason == "mx-bogus":
        return DaneStatus.FAIL
    reqs = [h.decision.requirement for h in hosts]
    if not reqs or all(r is Requirement.NO_DANE for r in reqs):
        return DaneStatus.NOT_APPLICABLE
    if any(r in (Requirement.DEFER, Requirement.ENCRYPT_ONLY) for r in reqs) or any(
            h.passed is False for h in hosts):
        return DaneStatus.FAIL
    if all(r is Requirement.DANE_REQUIRED for r in reqs):
        return DaneStatus.PASS
    return DaneStatus.PARTIAL


def _f(code: str, severity: Severity, subject: str, message: str, fix: str | None = None,
       rfc: str | None = None) -> Finding:
    return Finding(code, severity, Area.DANE, subject, message, fix, rfc)


def suggested_record(host: str, probe: ProbeFacts | None, base: str | None = None) -> str:
    owner = f"{tlsa_query_name(base or host)}."
    if probe is not None and probe.chain_der:
        from smtptls.dane.publish import tlsa_from_cert

        try:
            rec = tlsa_from_cert(probe.chain_der[0])
            return f"{owner} IN TLSA {rec.to_text()}"
        except DaneError:
            pass
    return (f"{owner} IN TLSA 3 1 1 <SHA2-256 of the server's public key>   "
            "(smtptls publish tlsa cert.pem)")


# Rollover advice codes that repeat what the live checks say, or that are generic.
_SKIP_ADVICE = {"current-covered", "current-not-covered", "keep-old-records", "next-covered"}
# Not a fault today: rollover preparation is advice (docs/check.md).
_ADVICE_LEVEL = {"no-next-key": Severity.INFO}


def _record_findings(h: HostDane, facts_host: MxFacts | None) -> list[Finding]:
    d = h.decision
    out: list[Finding] = []
    base = d.tlsa_base or h.host
    owner = tlsa_query_name(base)
    probe = None
    if facts_host is not None:
        probe = next((p for p in facts_host.probes if p.chain_der), None)
    for rec in d.all_records:
        why = unusable_reason(rec)
        if why is None:
            continue
        if rec.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
            out.append(_f("dane.pkix-usage", Severity.WARNING, owner,
                          f"TLSA {rec.to_text()[:24]}...: {why}; SMTP clients ignore it",
                          suggested_record(h.host, probe, base), "RFC 7672 §3.1.3"))
        else:
            out.append(_f("dane.unusable-record", Severity.WARNING, owner,
                          f"TLSA {rec.to_text()[:24]}...: {why}; clients ignore it",
                          suggested_record(h.host, probe, base), "RFC 7671 §9"))
    # Rollover advice only where DANE works today: otherwise the live findings say it.
    if probe is not None and d.records and h.passed is True:
        from smtptls.dane.publish import rollover_advice

        try:
            advice = rollover_advice(d.all_records, list(probe.chain_der))
        except DaneError:
            advice = None
        if advice is not None:
            for a in advice.findings:
                if a.code in _SKIP_ADVICE or a.level == "ok" or a.code in (
                        "unusable-record",):
                    continue
                level = _ADVICE_LEVEL.get(a.code) or {
                    "error": Severity.ERROR, "warning": Severity.WARNING}.get(
                    a.level, Severity.INFO)
                fix = None
                if a.code in ("prefer-3-1-1", "no-next-key", "ee-cert-selector"):
                    fix = suggested_record(h.host, probe, base)
                out.append(_f(f"dane.rollover.{a.code}", level, owner, a.message, fix,
                              "RFC 7671 §8"))
    elif d.records and h.passed is None and not any(
            r.usage == Usage.DANE_EE and r.selector == Selector.SPKI for r in d.records):
        out.append(_f("dane.rollover.prefer-3-1-1", Severity.INFO, owner,
                      "a 3 1 1 record (DANE-EE, SPKI, SHA2-256) is the recommended form: it "
                      "survives certificate renewals with the same key",
                      suggested_record(h.host, None, base), "RFC 7671 §5.1"))
    return out


def check_dane(facts: DomainFacts, view: DaneView) -> list[Finding]:
    out: list[Finding] = []
    if view.error is not None:
        out.append(Finding("check.dane-incomplete", Severity.INFO, Area.CHECK, facts.domain,
                           f"DANE could not be judged: {view.error}"))
    by_name = {h.host: h for h in facts.hosts}
    for h in view.hosts:
        d = h.decision
        fh = by_name.get(h.host)
        req = d.requirement
        if req is Requirement.DEFER:
            if d.reason == "tlsa-bogus":
                out.append(_f("dane.tlsa-bogus", Severity.ERROR, h.host,
                              f"{d.detail}: DANE senders will not deliver to this MX",
                              "fix the DNSSEC signatures of the TLSA RRset (re-sign the zone)",
                              "RFC 7672 §2.1.2"))
            continue  # address-bogus: reported by the MX checks
        if req is Requirement.NO_DANE:
            ignored = [t for t in (fh.tlsa if fh else ()) if t.records]
            if ignored and d.reason in ("mx-insecure", "address-insecure", "no-secure-tlsa"):
                t = ignored[0]
                why = {"mx-insecure": "the MX RRset is not DNSSEC-signed",
                       "address-insecure": f"{h.host} is in an unsigned zone"}.get(
                    d.reason, "the TLSA RRset is not DNSSEC-signed")
                out.append(_f("dane.tlsa-ignored", Severity.WARNING, t.name,
                              f"TLSA records are published but {why}: senders ignore them",
                              "sign the zone(s) of the domain and of the MX host with DNSSEC",
                              "RFC 7672 §2.2"))
            continue
        if req is Requirement.ENCRYPT_ONLY:
            probe = next((p for p in (fh.probes if fh else ()) if p.chain_der), None)
            out.append(_f("dane.no-usable-tlsa", Severity.ERROR, h.host,
                          f"{d.detail}", suggested_record(h.host, probe, d.tlsa_base),
                          "RFC 7672 §3.1.3"))
            out.extend(_record_findings(h, fh))
            continue
        # DANE_REQUIRED: the live match, per probed address.
        for p, verdict in h.verdicts:
            subject = f"{h.host} [{p.address}]"
            if verdict is None:
                if not p.starttls_offered:
                    out.append(_f("dane.starttls-missing", Severity.ERROR, subject,
                                  "TLSA records are published but the server does not offer "
                                  "STARTTLS: DANE senders will not deliver to this MX",
                                  "enable STARTTLS on this MX", "RFC 7672 §2.2"))
                else:
                    out.append(_f("dane.tls-failed", Severity.ERROR, subject,
                                  f"TLSA records are published but TLS fails ({p.error}): "
                                  "DANE senders will not deliver to this MX", None,
                                  "RFC 7672 §2.2"))
            elif not verdict.ok:
                out.append(_f("dane.mismatch", Severity.ERROR, subject,
                              f"the certificate chain does not match the TLSA records: "
                              f"{verdict.detail} [{verdict.reason}]",
                              suggested_record(h.host, p, d.tlsa_base), "RFC 7672 §3"))
        out.extend(_record_findings(h, fh))
    protected = [h.host for h in view.hosts if h.protected]
    unprotected = [h.host for h in view.hosts
                   if h.decision.requirement is Requirement.NO_DANE]
    if protected and unprotected:
        out.append(_f("dane.partial", Severity.WARNING, facts.domain,
                      f"DANE protects {', '.join(protected[:4])} but not "
                      f"{', '.join(unprotected[:4])}: an attacker can steer mail to the "
                      "unprotected MX hosts",
                      "\n".join(suggested_record(u, _first_probe(by_name.get(u)))
                                for u in unprotected[:4]), "RFC 7672 §2.2"))
    return out


def _first_probe(host: MxFacts | None) -> ProbeFacts | None:
    if host is None:
        return None
    return next((p for p in host.probes if p.chain_der), None)
