"""DANE for one destination domain, live: DNS lookups, the pure decision, probes, verdicts.

The I/O half of RFC 7672 for a sender (or an auditor):

1. MX lookup with its DNSSEC status (RFC 7672 §2.2.1); no MX records makes a non-MX
   destination whose own address records are used (§2.2.2); a null MX (RFC 7505)
   means the domain accepts no mail.
2. Per MX host: A and AAAA with their status and CNAME chain, the host's own CNAME
   when it is an alias (the status of the first step, §2.2.3), then the TLSA RRsets
   ``_25._tcp.<base>`` of the candidate base domains (expanded name first, RFC 7671 §7).
3. :func:`smtptls.dane.decide.decide_destination` turns those answers into a
   requirement per MX host (pure; the RFC reasoning lives there).
4. Optionally, each MX address is probed (:func:`smtptls.net.smtp.probe_starttls`,
   SNI = the TLSA base domain, §8.1) and the chain it sent is verified with
   :func:`smtptls.dane.verify.verify_chain` against the reference names (§3.2.2).

The result is a :class:`DestinationReport`: per MX a :class:`Verdict` and a reason a
postmaster can act on, and a verdict for the destination.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smtptls.config import DnsConfig
from smtptls.dane.decide import DestinationDecision, MxDecision, Requirement
from smtptls.dane.tlsa import Usage
from smtptls.dane.verify import DaneVerdict, verify_chain
from smtptls.dnssec import Security
from smtptls.engine.destination import Decision, NextHop, dane_decision
from smtptls.engine.gather import TlsaAnswer, lookup_destination, to_facts
from smtptls.net.dns import DnsResolver, normalize_domain, run_sync
from smtptls.net.protocols import Resolver
from smtptls.net.smtp import ProbeLimits, ProbeResult, TlsBackend, probe_starttls

__all__ = [
    "AddressCheck",
    "DestinationReport",
    "DestinationVerdict",
    "MxReport",
    "TlsaAnswer",
    "Verdict",
    "check_destination",
    "check_destination_sync",
]

MAX_MX = 16  # MX hosts examined, in preference order
MAX_ADDRESSES = 4  # addresses probed per MX host
MAX_PARALLEL_PROBES = 4


class Verdict(StrEnum):
    """Outcome for one MX host."""

    PASS = "pass"  # noqa: S105 - DANE authenticated the server (every address probed)
    FAIL = "fail"  # DANE applies and the host must not get mail (or it failed)
    ENCRYPT_ONLY = "encrypt-only"  # TLSA records all unusable; TLS worked, unauthenticated
    NO_DANE = "no-dane"  # DANE does not apply to this host
    UNCHECKED = "unchecked"  # DANE applies; not probed


class DestinationVerdict(StrEnum):
    # every MX host has usable TLSA records and passes (unprobed: has them)
    PASS = "pass"  # noqa: S105
    FAIL = "fail"  # some MX host fails, or DNSSEC says bogus
    PARTIAL = "partial"  # DANE applies to some MX hosts only, or only encrypts
    NOT_APPLICABLE = "not-applicable"  # DANE applies to no MX host


@dataclass(frozen=True, slots=True)
class AddressCheck:
    """The probe of one address of an MX host and what its chain proved."""

    address: str
    verdict: Verdict
    reason: str
    probe: ProbeResult
    dane: DaneVerdict | None = None

    def to_dict(self) -> dict[str, Any]:
        dane = None
        if self.dane is not None:
            dane = {"ok": self.dane.ok, "reason": self.dane.reason, "detail": self.dane.detail,
                    "matched": None if self.dane.matched is None else self.dane.matched.to_text(),
                    "depth": self.dane.depth, "result_type": self.dane.result_type}
        return {"address": self.address, "verdict": str(self.verdict), "reason": self.reason,
                "probe": self.probe.to_dict(), "dane": dane}


@dataclass(frozen=True, slots=True)
class MxReport:
    """Everything about one MX host (or the domain itself for a non-MX destination)."""

    host: str
    preference: int | None
    addresses: tuple[str, ...]
    address_security: Security
    cname_chain: tuple[str, ...]
    tlsa: tuple[TlsaAnswer, ...]
    decision: MxDecision
    checks: tuple[AddressCheck, ...]
    verdict: Verdict
    reason: str

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "host": self.host,
            "preference": self.preference,
            "addresses": list(self.addresses),
            "address_security": str(self.address_security),
            "cname_chain": list(self.cname_chain),
            "tlsa": [t.to_dict() for t in self.tlsa],
            "requirement": str(d.requirement),
            "decision": {"reason": d.reason, "detail": d.detail, "tlsa_base": d.tlsa_base,
                         "sni": d.sni, "reference_names": list(d.reference_names),
                         "usable_records": [r.to_text() for r in d.records]},
            "checks": [c.to_dict() for c in self.checks],
            "verdict": str(self.verdict),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class DestinationReport:
    domain: str
    mx_security: Security
    has_mx: bool
    null_mx: bool
    mx: tuple[MxReport, ...]
    verdict: DestinationVerdict
    reason: str
    probed: bool = True
    checked_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    #: The DANE part of the sender's decision (:func:`smtptls.engine.destination.
    #: dane_decision`), the same one ``smtptls policyd`` puts before MTA-STS; None:
    #: DANE applies to no host.
    decision: Decision | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is DestinationVerdict.PASS

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "checked_at": self.checked_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "mx_security": str(self.mx_security),
            "has_mx": self.has_mx,
            "null_mx": self.null_mx,
            "probed": self.probed,
            "verdict": str(self.verdict),
            "reason": self.reason,
            "decision": None if self.decision is None else self.decision.to_dict(),
            "mx": [m.to_dict() for m in self.mx],
        }


# --- verdicts --------------------------------------------------------------------------

# What a postmaster can do about each kind of decision.
_HINTS = {
    "mx-insecure": "sign the zone with DNSSEC to enable DANE",
    "address-insecure": "the host's zone is unsigned; sign it to enable DANE",
    "no-secure-tlsa": "publish TLSA records (e.g. 3 1 1) to enable DANE",
    "tlsa-bogus": "fix the DNSSEC signatures of the TLSA records",
    "address-bogus": "fix the DNSSEC signatures of the host's address records",
}


def _describe_match(v: DaneVerdict) -> str:
    rec = v.matched
    if rec is None:  # pragma: no cover - ok verdicts carry the record
        return v.detail
    if rec.usage == Usage.DANE_EE:
        what = "the server certificate"
    elif v.depth == 0:
        what = "the self-signed server certificate as trust anchor"
    else:
        what = f"the trust anchor at depth {v.depth}"
    return f"TLSA {int(rec.usage)} {int(rec.selector)} {int(rec.mtype)} matches {what}"


def _probe_failure(p: ProbeResult, required: str) -> str:
    if p.error is not None and p.error.stage == "starttls" and not p.starttls_offered:
        # RFC 7672 §2.2: with TLSA records TLS is mandatory; no STARTTLS, no delivery.
        return f"no STARTTLS offered although DANE requires {required}: " \
            "do not deliver to this MX"
    return f"{p.error}: do not deliver to this MX"


def _judge_address(decision: MxDecision, probe: ProbeResult, now: dt.datetime) -> AddressCheck:
    req = decision.requirement
    if req is Requirement.NO_DANE:
        tls = (f"{probe.tls_version}" if probe.handshake_done
               else f"no TLS ({probe.error})")
        return AddressCheck(probe.address, Verdict.NO_DANE, f"DANE does not apply; {tls}",
                            probe)
    if not probe.handshake_done:
        needed = "TLS" if req is Requirement.ENCRYPT_ONLY else "authenticated TLS"
        return AddressCheck(probe.address, Verdict.FAIL, _probe_failure(probe, needed), probe)
    if req is Requirement.ENCRYPT_ONLY:
        # RFC 7672 §2.2, §3.1.3: TLS is mandatory, the unusable records authenticate
        # nothing, so the server is not authenticated.
        return AddressCheck(probe.address, Verdict.ENCRYPT_ONLY,
                            f"{probe.tls_version} established without authentication: "
                            "no TLSA record is usable for SMTP (publish 3 1 1 or 2 1 1)",
                            probe)
    verdict = verify_chain(decision.all_records, list(probe.chain_der),
                           decision.reference_names, now=now)
    if verdict.ok:
        reason = _describe_match(verdict)
        if probe.error is not None:
            reason += f" (but the session then failed: {probe.error})"
        return AddressCheck(probe.address, Verdict.PASS, reason, probe, verdict)
    return AddressCheck(probe.address, Verdict.FAIL,
                        f"{verdict.detail} [{verdict.reason}]: do not deliver to this MX",
                        probe, verdict)


def _mx_verdict(decision: MxDecision, addresses: Sequence[str],
                checks: Sequence[AddressCheck], probed: bool) -> tuple[Verdict, str]:
    hint = _HINTS.get(decision.reason)
    detail = decision.detail + (f"; {hint}" if hint else "")
    req = decision.requirement
    if req is Requirement.DEFER:
        return Verdict.FAIL, detail
    if req is Requirement.NO_DANE:
        return Verdict.NO_DANE, detail
    if not addresses:
        return Verdict.FAIL, f"{decision.host} has no address records: cannot deliver"
    if not probed:
        return Verdict.UNCHECKED, detail
    for c in checks:
        if c.verdict is Verdict.FAIL:
            return Verdict.FAIL, c.reason
    first = checks[0]
    if len(checks) > 1:
        return first.verdict, f"{first.reason} (all {len(checks)} addresses)"
    return first.verdict, first.reason


def _destination_verdict(decision: DestinationDecision, mx: Sequence[MxReport],
                         probed: bool) -> tuple[DestinationVerdict, str]:
    if decision.reason == "mx-bogus":
        return DestinationVerdict.FAIL, decision.detail + " (RFC 7672 §2.2.1)"
    verdicts = [m.verdict for m in mx]
    if not verdicts:
        return DestinationVerdict.NOT_APPLICABLE, "no MX host to check"
    failed = [m for m in mx if m.verdict is Verdict.FAIL]
    if failed:
        names = ", ".join(m.host for m in failed[:4])
        return DestinationVerdict.FAIL, f"{len(failed)} of {len(mx)} MX host(s) fail DANE: " \
            f"{names}"
    if all(v is Verdict.NO_DANE for v in verdicts):
        return DestinationVerdict.NOT_APPLICABLE, mx[0].reason
    good = Verdict.PASS if probed else Verdict.UNCHECKED
    if all(v is good for v in verdicts) and all(
            m.decision.requirement is Requirement.DANE_REQUIRED for m in mx):
        if probed:
            return DestinationVerdict.PASS, f"all {len(mx)} MX host(s) pass DANE"
        return DestinationVerdict.PASS, f"all {len(mx)} MX host(s) publish usable TLSA " \
            "records (not probed)"
    weak = [m.host for m in mx if m.verdict not in (Verdict.PASS, Verdict.UNCHECKED)]
    return DestinationVerdict.PARTIAL, "DANE does not authenticate every MX host: " \
        + ", ".join(weak[:4])


# --- the check --------------------------------------------------------------------------


async def check_destination(
    domain: str,
    *,
    dns_config: DnsConfig | None = None,
    resolver: Resolver | None = None,
    probe: bool = True,
    port: int = 25,
    limits: ProbeLimits | None = None,
    helo_name: str = "localhost",
    include_nexthop: bool = False,
    now: dt.datetime | None = None,
    tls_backend: TlsBackend = "auto",
) -> DestinationReport:
    """Check DANE for ``domain`` (lookups, decision, optional probes and verification).

    Raises :class:`~smtptls.errors.DnsError` when the MX lookup itself fails for a
    reason other than DNSSEC (timeout, unreachable resolver): nothing can be said then.
    A bogus MX RRset is a finding, reported as a failed destination.
    """
    domain = normalize_domain(domain)
    resolver = resolver or DnsResolver(dns_config)
    limits = limits or ProbeLimits()
    when = now or dt.datetime.now(dt.UTC)

    found = await lookup_destination(resolver, domain, port=port,
                                     include_nexthop=include_nexthop, max_hosts=MAX_MX)
    mx_answer = found.mx
    assert mx_answer is not None
    sender = dane_decision(to_facts(found, NextHop.parse(domain)))
    if mx_answer.security is Security.INDETERMINATE and mx_answer.error is not None:
        # A timeout or an unreachable resolver: nothing can be said about DNSSEC.
        raise mx_answer.error
    if found.null_mx or found.nxdomain:
        return DestinationReport(domain, mx_answer.security, found.has_mx, found.null_mx,
                                 (), DestinationVerdict.NOT_APPLICABLE, found.dane.detail,
                                 probe, when, sender)
    has_mx = found.has_mx
    prefs = found.preferences if has_mx else {}
    decision = found.dane
    by_host = found.host_dns

    semaphore = asyncio.Semaphore(MAX_PARALLEL_PROBES)

    async def probe_one(entry: MxDecision, address: str) -> AddressCheck:
        async with semaphore:
            result = await probe_starttls(address, host=entry.host,
                                          server_name=entry.sni or entry.host, port=port,
                                          helo_name=helo_name, limits=limits,
                                          tls_backend=tls_backend)
        return _judge_address(entry, result, when)

    async def report_for(entry: MxDecision) -> MxReport:
        info = by_host.get(entry.host)
        addresses = info.addresses if info else ()
        checks: tuple[AddressCheck, ...] = ()
        runs = probe and entry.requirement is not Requirement.DEFER and addresses
        if runs:
            checks = tuple(await asyncio.gather(*(probe_one(entry, a)
                                                  for a in addresses[:MAX_ADDRESSES])))
        verdict, reason = _mx_verdict(entry, addresses, checks, probe)
        return MxReport(
            host=entry.host, preference=prefs.get(entry.host),
            addresses=addresses,
            address_security=info.lookup.address_security if info else mx_answer.security,
            cname_chain=info.lookup.cname_chain if info else (),
            tlsa=tuple(info.tlsa.values()) if info else (),
            decision=entry, checks=checks, verdict=verdict, reason=reason)

    reports = tuple(await asyncio.gather(*(report_for(e) for e in decision.entries)))
    verdict, reason = _destination_verdict(decision, reports, probe)
    if not has_mx:
        reason = f"no MX records: {domain} itself is the host (RFC 7672 §2.2.2); {reason}"
    return DestinationReport(domain, mx_answer.security, has_mx, False, reports, verdict,
                             reason, probe, when, sender)


def check_destination_sync(domain: str, **kwargs: Any) -> DestinationReport:
    """Blocking twin of :func:`check_destination` for scripts and the CLI."""
    return run_sync(lambda: check_destination(domain, **kwargs))
