"""I/O: the DNS facts one destination's DANE decision needs (RFC 7672 §2), gathered.

This is the async half of the destination engine; the rules live in the pure
:func:`smtptls.dane.decide.decide_destination` (which TLSA names to query, what a
status means) and :func:`smtptls.engine.destination.decide` (DANE first, then
MTA-STS). Every entry point that needs a destination's DANE facts — ``smtptls
policyd`` (answers and ``policyd query``), ``smtptls dane`` and, through the policy
daemon's engine, the TLSRPT collector — gathers them here, so they query the same
names in the same order:

1. the MX RRset with its DNSSEC status (§2.2.1); no MX records make a non-MX
   destination whose own address records are used (§2.2.2); a null MX (RFC 7505)
   accepts no mail; a bracketed next hop (``[relay]``) is a non-MX destination too;
2. per host, A and AAAA first (§2.2.2: an insecure address answer means no TLSA
   query), the host's own CNAME when it is an alias (the first step decides, §2.2.3),
   then the TLSA RRsets of the candidate base domains from
   :func:`~smtptls.dane.decide.tlsa_candidates` — the fully expanded name first when
   the whole chain is secure, then the original name, never an intermediate one.

Below an insecure MX RRset no host lookups are made at all (§2.2.1).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from smtptls.dane.decide import (
    DestinationDecision,
    DestinationLookup,
    HostLookup,
    TlsaLookup,
    decide_destination,
    tlsa_candidates,
    tlsa_query_name,
)
from smtptls.dane.tlsa import TLSARecord
from smtptls.dnssec import Security
from smtptls.engine.destination import DestinationFacts, HostFacts, NextHop
from smtptls.errors import DnsBogus, DnsError, InvalidDomainError, SmtpTlsError
from smtptls.mtasts.policy import Policy
from smtptls.net.dns import Answer, normalize_domain
from smtptls.net.protocols import Resolver

__all__ = [
    "MAX_HOSTS",
    "DestinationDns",
    "HostDns",
    "Resolver",
    "TlsaAnswer",
    "is_null_mx",
    "lookup_destination",
    "lookup_host",
    "to_facts",
    "try_query",
]

#: MX hosts examined, in preference order (an MX RRset is bounded by the resolver's
#: ``max_records`` too); the rest are not candidates for this decision.
MAX_HOSTS = 32

_SECURITY_RANK = {Security.SECURE: 0, Security.INSECURE: 1, Security.INDETERMINATE: 2,
                  Security.BOGUS: 3}



async def try_query(resolver: Resolver, name: str, rdtype: str) -> Answer:
    """A lookup whose failure is data: SERVFAIL is ``bogus``, a timeout or another
    failure ``indeterminate`` (RFC 7672 §2.1.1), ``error`` holds the exception."""
    try:
        return await resolver.query(name, rdtype)
    except DnsBogus as exc:
        return Answer(str(name), rdtype.upper(), (), Security.BOGUS, error=exc)
    except DnsError as exc:
        return Answer(str(name), rdtype.upper(), (), Security.INDETERMINATE, error=exc)


def _worst(*values: Security) -> Security:
    return max(values, key=lambda s: _SECURITY_RANK[s])


@dataclass(frozen=True, slots=True)
class TlsaAnswer:
    """One TLSA lookup as DNS answered it."""

    name: str  # _25._tcp.<base>
    security: Security
    records: tuple[TLSARecord, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "security": str(self.security),
                "records": [r.to_text() for r in self.records], "error": self.error}


@dataclass(frozen=True, slots=True)
class HostDns:
    """What DNS said about one host: the lookup the pure decision reads, the addresses,
    the TLSA answers by base domain, and the TTLs of the answers (for rechecks)."""

    lookup: HostLookup
    addresses: tuple[str, ...]
    tlsa: dict[str, TlsaAnswer]
    ttls: tuple[int, ...] = ()


def _tlsa_records(answer: Answer) -> tuple[TLSARecord, ...]:
    out = []
    for rdata in answer.records:
        try:
            out.append(TLSARecord.from_rdata(rdata))
        except SmtpTlsError:
            # RFC 6698 §4.1 / RFC 7671 §9: a malformed record is unusable, not fatal
            continue
    return tuple(out)


async def lookup_host(resolver: Resolver, host: str, port: int = 25, *,
                      want_tlsa: bool = True) -> HostDns:
    """A, AAAA, the alias's own status and the TLSA RRsets of one host (see module)."""
    a, aaaa = await asyncio.gather(try_query(resolver, host, "A"),
                                   try_query(resolver, host, "AAAA"))
    # Both address RRsets must be trustworthy: a bogus AAAA makes the host unusable
    # even when its A RRset validates (RFC 7672 §2.1.2).
    address_security = _worst(a.security, aaaa.security)
    chain = a.cname_chain or aaaa.cname_chain
    answers = [a, aaaa]
    first: Security | None = None
    if chain:
        # RFC 7672 §2.2.3: the status of the alias itself decides whether DANE can
        # apply at all; the A/AAAA answer's AD bit covers the whole expansion.
        alias = await try_query(resolver, host, "CNAME")
        first = alias.security
        answers.append(alias)
    addresses = tuple(dict.fromkeys(str(r) for r in (*a.records, *aaaa.records)))
    lookup = HostLookup(host, address_security, chain, first)
    # RFC 7672 §2.2.1: below an insecure MX RRset no TLSA lookups are made;
    # RFC 7672 §2.2.2: an insecure address answer means no TLSA query either.
    bases = tlsa_candidates(lookup) if want_tlsa else ()
    tlsa_answers = await asyncio.gather(*(
        try_query(resolver, tlsa_query_name(b, port), "TLSA") for b in bases))
    tlsa: dict[str, TlsaAnswer] = {}
    for base, ans in zip(bases, tlsa_answers, strict=True):
        tlsa[base] = TlsaAnswer(tlsa_query_name(base, port), ans.security,
                                _tlsa_records(ans),
                                None if ans.error is None else str(ans.error))
        answers.append(ans)
    ttls = tuple(ans.ttl for ans in answers if ans.error is None and ans.ttl > 0)
    return HostDns(lookup, addresses, tlsa, ttls)


@dataclass(frozen=True, slots=True)
class DestinationDns:
    """The DNS facts of one destination and the RFC 7672 decision over them.

    ``mx``: the MX answer (None for a bracketed next hop, which has no MX lookup);
    ``hosts``: candidate host names in preference order with ``preferences``;
    ``has_mx``: False for a non-MX destination (the domain, or the bracketed host,
    is the one host); ``null_mx``: RFC 7505; ``nxdomain``: the domain does not
    exist; ``dane``: the per-host requirements (:mod:`smtptls.dane.decide`).
    """

    domain: str
    mx: Answer | None
    hosts: tuple[str, ...]
    preferences: dict[str, int]
    has_mx: bool
    null_mx: bool
    nxdomain: bool
    host_dns: dict[str, HostDns]
    dane: DestinationDecision
    ttls: tuple[int, ...] = field(default=())

    @property
    def mx_security(self) -> Security | None:
        return None if self.mx is None else self.mx.security

    @property
    def mx_error(self) -> DnsError | None:
        return None if self.mx is None else self.mx.error


def is_null_mx(answer: Answer) -> bool:
    """RFC 7505 §3: a single MX with the root as exchange: the domain takes no mail."""
    return (len(answer.records) == 1
            and answer.records[0].exchange in ("", ".", "@"))


async def lookup_destination(
    resolver: Resolver,
    domain: str,
    *,
    port: int = 25,
    mx: bool = True,
    include_nexthop: bool = False,
    max_hosts: int = MAX_HOSTS,
) -> DestinationDns:
    """Gather and decide DANE for ``domain`` (``mx=False``: a bracketed next hop, the
    host itself, no MX lookup). Never raises for DNS failures: they are statuses."""
    domain = normalize_domain(domain)
    if not mx:
        info = await lookup_host(resolver, domain, port)
        # RFC 7672 §2.2.2: a next hop reached without MX records; its own lookups decide
        dest = DestinationLookup(domain, Security.INSECURE, (), False, False)
        decision = decide_destination(dest, [info.lookup], _tlsa_map([info]))
        return DestinationDns(domain, None, (domain,), {domain: 0}, False, False, False,
                              {domain: info}, decision, info.ttls)
    answer = await try_query(resolver, domain, "MX")
    ttls: list[int] = [answer.ttl] if answer.error is None and answer.ttl > 0 else []
    null_mx = is_null_mx(answer)
    hosts: list[str] = []
    prefs: dict[str, int] = {}
    # RFC 7672 §2.2.1 / RFC 5321 §5.1: MX hosts by preference, best first
    for rec in (() if null_mx else sorted(answer.records, key=lambda r: r.preference)):
        try:
            name = normalize_domain(rec.exchange)
        except InvalidDomainError:
            continue  # an MX target that is not a host name cannot be used
        if name not in prefs:
            hosts.append(name)
            prefs[name] = rec.preference
    hosts = hosts[:max_hosts]
    failed = answer.security in (Security.BOGUS, Security.INDETERMINATE)
    has_mx = bool(hosts) or failed or null_mx
    if null_mx or answer.nxdomain:
        decision = DestinationDecision(
            domain, answer.security, "null-mx" if null_mx else "nxdomain",
            "the domain accepts no mail (null MX, RFC 7505)" if null_mx
            else "the domain does not exist (NXDOMAIN)")
        return DestinationDns(domain, answer, (), {}, not answer.nxdomain, null_mx,
                              answer.nxdomain, {}, decision, tuple(ttls))
    names = hosts if has_mx else [domain]
    if not has_mx:
        prefs[domain] = 0
    # RFC 7672 §3.2.2: the next-hop domain's CNAME expansion is a DANE-TA name too
    expanded = answer.cname_chain[-1] if answer.cname_chain else None
    dest = DestinationLookup(domain, answer.security, tuple(hosts), has_mx, include_nexthop,
                             domain_expanded=expanded)
    infos: list[HostDns] = []
    if not failed and (not has_mx or answer.security is Security.SECURE):
        # RFC 7672 §2.2.1: hosts of an insecure MX RRset get no DANE lookups at all
        infos = list(await asyncio.gather(*(lookup_host(resolver, h, port) for h in names)))
    decision = decide_destination(dest, [i.lookup for i in infos], _tlsa_map(infos))
    for info in infos:
        ttls.extend(info.ttls)
    return DestinationDns(domain, answer, tuple(names), prefs, has_mx, False, False,
                          {i.lookup.name: i for i in infos}, decision, tuple(ttls))


def _tlsa_map(infos: list[HostDns]) -> dict[str, TlsaLookup]:
    return {base: TlsaLookup(t.security, t.records)
            for info in infos for base, t in info.tlsa.items()}


def to_facts(found: DestinationDns, nexthop: NextHop, *, policy: Policy | None = None,
             sts_note: str = "") -> DestinationFacts:
    """The facts :func:`smtptls.engine.destination.decide` reads, from what was found
    (and the MTA-STS policy in force, if any)."""
    by_host = {e.host: e for e in found.dane.entries}
    hosts = tuple(HostFacts(h, found.preferences.get(h, 0), by_host.get(h))
                  for h in found.hosts)
    mx = found.mx
    return DestinationFacts(
        nexthop=nexthop, mx_security=found.mx_security, hosts=hosts,
        implicit_mx=mx is not None and not found.has_mx, null_mx=found.null_mx,
        mx_error=None if found.mx_error is None else str(found.mx_error),
        policy=policy, sts_note=sts_note)
