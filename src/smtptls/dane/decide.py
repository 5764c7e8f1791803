"""Does DANE apply to a destination, and how, from DNSSEC statuses (RFC 7672 §2).

Pure: the caller performs the lookups (``smtptls.net.dns``) and passes what DNS said,
each answer with its :class:`~smtptls.dnssec.Security` status; this module decides,
per MX host, one :class:`Requirement`:

``DANE_REQUIRED``
    Secure, usable TLSA records: TLS is mandatory and must authenticate with them
    (RFC 7672 §2.2); no STARTTLS means no delivery to this host.
``ENCRYPT_ONLY``
    A secure, non-empty TLSA RRset none of whose records is usable (only PKIX usages,
    unknown parameters, malformed digests): RFC 7672 §2.2 makes TLS mandatory once
    secure TLSA records exist, and RFC 7672 §3.1.3 says unusable records cannot
    authenticate; so TLS is required but the peer is not authenticated, as Postfix's
    ``dane`` level falls back to ``encrypt``.
``NO_DANE``
    DANE does not apply (insecure MX RRset, insecure host, no secure TLSA records):
    MTA-STS may apply, else opportunistic TLS (RFC 7672 §2.2.1, §2.2.3).
``DEFER``
    A bogus or indeterminate answer where a secure one was needed: the client must not
    deliver to this host, it tries the next MX or defers (RFC 7672 §2.1.1, §2.1.2).
    For the MX RRset itself, the whole destination is deferred (RFC 7672 §2.2.1).

TLSA base domain and CNAMEs (RFC 7672 §2.2.3, RFC 7671 §7): when the host name is an
alias and every step of its expansion (the CNAMEs and the final address RRsets) is
secure, TLSA records are sought first at the fully expanded name, then at the
original name. When the first step is secure but a later one is not, the expanded
name cannot be trusted and only the original name is used. When the host's own
first answer is insecure, DANE does not apply to it.

The search over candidate names (RFC 7671 §7): a secure, non-empty TLSA RRset ends
it (usable or not); a secure denial of existence or an insecure answer moves on to
the next candidate; a bogus or indeterminate TLSA answer ends it with ``DEFER``
(RFC 7672 §2.1.2: the TLSA records of a host whose address is secure cannot be
ignored).

Reference identifiers for DANE-TA(2) name checks (RFC 7672 §3.2.2): the TLSA base
domain, the original MX host name, the expanded name when secure, and, below a secure
MX RRset, the next-hop domain and its CNAME expansion
(``DestinationLookup.domain_expanded``). For a non-MX destination reached through a
CNAME the original name (the domain) stays one. Never the names between the first
and the last step of a CNAME chain. SNI is the TLSA base domain (RFC 7672 §8.1).

Non-MX destinations (RFC 7672 §2.2.2): when the domain has no MX records the
domain itself is the one "host", under the same rules. An address-literal next hop
(``[192.0.2.1]``) names no domain, so DANE does not apply to it (RFC 7672 §2.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from smtptls.dane.names import is_address_literal, normalize_name
from smtptls.dane.tlsa import TLSARecord, select_usable, unusable_reason
from smtptls.dnssec import Security
from smtptls.errors import DaneError

__all__ = [
    "DestinationDecision",
    "DestinationLookup",
    "HostLookup",
    "MxDecision",
    "Requirement",
    "TlsaLookup",
    "decide_destination",
    "decide_host",
    "tlsa_candidates",
    "tlsa_query_name",
]

MAX_HOSTS = 64
MAX_CNAME_CHAIN = 16

_FAILED = (Security.BOGUS, Security.INDETERMINATE)


class Requirement(StrEnum):
    DANE_REQUIRED = "dane-required"
    ENCRYPT_ONLY = "encrypt-only"
    NO_DANE = "no-dane"
    DEFER = "defer"


def _name(name: str) -> str:
    norm = normalize_name(name) if isinstance(name, str) else None
    if norm is None or norm.startswith("."):
        raise DaneError(f"not a host name: {name!r}")
    return norm


def _tuple(value: object, what: str) -> tuple:
    if isinstance(value, str | bytes):
        raise DaneError(f"{what} must be a sequence, not a single value")
    try:
        return tuple(value)  # type: ignore[arg-type]
    except TypeError:
        raise DaneError(f"{what} must be a sequence") from None


def _security(value: object, what: str) -> Security:
    try:
        return Security(value)
    except ValueError:
        raise DaneError(f"{what}: not a DNSSEC status: {value!r}") from None


def tlsa_query_name(base_domain: str, port: int = 25) -> str:
    """``_25._tcp.<base domain>`` (RFC 7672 §2.2.3, RFC 6698 §3)."""
    if not isinstance(port, int) or not 0 < port < 65536:
        raise DaneError(f"not a TCP port: {port!r}")
    return f"_{port}._tcp.{_name(base_domain)}"


@dataclass(frozen=True, slots=True)
class TlsaLookup:
    """A TLSA answer: its status and records (empty: NODATA or NXDOMAIN)."""

    security: Security
    records: tuple[TLSARecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "security", _security(self.security, "TLSA lookup"))
        recs = _tuple(self.records, "TlsaLookup.records")
        if not all(isinstance(r, TLSARecord) for r in recs):
            raise DaneError("TlsaLookup.records must hold TLSARecord values")
        object.__setattr__(self, "records", recs)


@dataclass(frozen=True, slots=True)
class HostLookup:
    """What DNS said about one MX host's name (or a non-MX destination).

    ``first_security``: the status of the first answer at ``name`` itself (its CNAME,
    or its address RRsets when there is no CNAME). ``address_security``: the status of
    the whole resolution to addresses, every CNAME step and the final A/AAAA RRsets
    (the worst of them). ``cname_chain``: the names followed, first target first, the
    last being the fully expanded name; empty without aliases.
    """

    name: str
    address_security: Security
    cname_chain: tuple[str, ...] = ()
    first_security: Security | None = None  # None: same as address_security

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", _name(self.name))
        object.__setattr__(self, "address_security",
                           _security(self.address_security, f"{self.name} address"))
        chain = _tuple(self.cname_chain, "cname_chain")
        if len(chain) > MAX_CNAME_CHAIN:
            raise DaneError(f"{self.name}: CNAME chain longer than {MAX_CNAME_CHAIN}")
        object.__setattr__(self, "cname_chain", tuple(_name(n) for n in chain))
        first = self.address_security if self.first_security is None else self.first_security
        object.__setattr__(self, "first_security", _security(first, f"{self.name} lookup"))
        if self.first_security is Security.INSECURE and self.address_security is Security.SECURE:
            # RFC 7672 §2.1.3: an insecure CNAME makes the rest of the chain insecure.
            object.__setattr__(self, "address_security", Security.INSECURE)

    @property
    def expanded(self) -> str | None:
        return self.cname_chain[-1] if self.cname_chain else None


@dataclass(frozen=True, slots=True)
class DestinationLookup:
    """What DNS said about a destination domain's MX RRset.

    ``mx_hosts`` in preference order; empty with ``has_mx=False`` for a non-MX
    destination (RFC 7672 §2.2.2), where ``domain`` is the host. ``domain_expanded``:
    the name the MX lookup ended at when ``domain`` is an alias. ``include_nexthop``
    is accepted for compatibility: below a secure MX RRset the next-hop domain is
    always a reference identifier (RFC 7672 §3.2.2).
    """

    domain: str
    mx_security: Security
    mx_hosts: tuple[str, ...] = ()
    has_mx: bool = True
    include_nexthop: bool = False
    domain_expanded: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", _name(self.domain))
        object.__setattr__(self, "mx_security", _security(self.mx_security, "MX lookup"))
        hosts = _tuple(self.mx_hosts, "mx_hosts")
        if len(hosts) > MAX_HOSTS:
            raise DaneError(f"{self.domain}: more than {MAX_HOSTS} MX hosts")
        object.__setattr__(self, "mx_hosts", tuple(_name(h) for h in hosts))
        if self.domain_expanded is not None:
            object.__setattr__(self, "domain_expanded", _name(self.domain_expanded))


@dataclass(frozen=True, slots=True)
class MxDecision:
    """The requirement for one MX host, and what a client needs to act on it."""

    host: str
    requirement: Requirement
    reason: str  # machine-readable
    detail: str  # for humans
    tlsa_base: str | None = None  # where the TLSA RRset was found
    sni: str | None = None  # RFC 7672 §8.1: the TLSA base domain
    reference_names: tuple[str, ...] = ()
    records: tuple[TLSARecord, ...] = ()  # usable records (after digest agility)
    all_records: tuple[TLSARecord, ...] = ()  # the whole RRset as found

    @property
    def tls_required(self) -> bool:
        return self.requirement in (Requirement.DANE_REQUIRED, Requirement.ENCRYPT_ONLY)

    @property
    def deliverable(self) -> bool:
        return self.requirement is not Requirement.DEFER


@dataclass(frozen=True, slots=True)
class DestinationDecision:
    """Per-MX decisions for a destination domain."""

    domain: str
    mx_security: Security
    reason: str
    detail: str
    entries: tuple[MxDecision, ...] = field(default_factory=tuple)

    @property
    def deferred(self) -> bool:
        """No MX host may be used (all deferred, or the MX lookup failed)."""
        return not any(e.deliverable for e in self.entries)

    @property
    def dane_applies(self) -> bool:
        """Some MX host is DANE-protected: MTA-STS does not apply to those (RFC 8461 §2)."""
        return any(e.tls_required for e in self.entries)


def tlsa_candidates(host: HostLookup) -> tuple[str, ...]:
    """TLSA base domains to try, in order (RFC 7672 §2.2.3, RFC 7671 §7).

    Empty when DANE cannot apply to this host (its first answer is not secure).
    """
    if host.first_security is not Security.SECURE:
        return ()
    expanded = host.expanded
    if expanded is None or expanded == host.name:
        return (host.name,)
    if host.address_security is Security.SECURE:
        # RFC 7671 §7: the expanded name first when every step is secure.
        return (expanded, host.name)
    # An insecure step after a secure first one: the expanded name is untrusted.
    return (host.name,)


def _reference_names(host: HostLookup, base: str, nexthop: tuple[str, ...]) -> tuple[str, ...]:
    # RFC 7672 §3.2.2: the TLSA base domain, the host's securely obtained names, and
    # below a secure MX RRset the next-hop domain and its CNAME expansion.
    names = [base, host.name]
    if host.expanded is not None and host.address_security is Security.SECURE:
        names.append(host.expanded)
    names.extend(nexthop)
    return tuple(dict.fromkeys(names))


def decide_host(
    host: HostLookup,
    tlsa: Mapping[str, TlsaLookup],
    *,
    nexthop: str | None = None,
    nexthop_expanded: str | None = None,
) -> MxDecision:
    """The requirement for one host. ``tlsa`` maps TLSA base domains (as returned by
    :func:`tlsa_candidates`) to their lookups; a candidate that the search needs
    but is missing raises :class:`~smtptls.errors.DaneError`. ``nexthop`` and
    ``nexthop_expanded``: the next-hop domain of a secure MX RRset and its CNAME
    expansion, extra reference identifiers (RFC 7672 §3.2.2)."""
    name = host.name
    if is_address_literal(name):
        # RFC 7672 §2.2: an address literal names no domain: no TLSA base domain.
        return MxDecision(name, Requirement.NO_DANE, "address-literal",
                          f"{name} is an address literal: DANE does not apply")
    extra = tuple(_name(n) for n in (nexthop, nexthop_expanded) if n is not None)
    first, addr = host.first_security, host.address_security
    failed = next((s for s in (first, addr) if s in _FAILED), None)
    if failed is not None:
        # RFC 7672 §2.1.2: a bogus/indeterminate address lookup: this host is unusable.
        return MxDecision(name, Requirement.DEFER, "address-bogus",
                          f"the address lookup of {name} is {failed.value}: "
                          "do not deliver to this host (RFC 7672 §2.1.2)")
    candidates = tlsa_candidates(host)
    if not candidates:
        # RFC 7672 §2.2.3: the host's own name is insecure; DANE does not apply.
        return MxDecision(name, Requirement.NO_DANE, "address-insecure",
                          f"{name} is in an insecure zone: DANE does not apply")
    norm = {}
    for key, value in tlsa.items():
        if not isinstance(value, TlsaLookup):
            raise DaneError(f"TLSA lookup for {key!r} is not a TlsaLookup")
        norm[_name(key)] = value
    tried = []
    for base in candidates:
        if base not in norm:
            raise DaneError(f"no TLSA lookup given for {tlsa_query_name(base)}")
        answer = norm[base]
        tried.append(f"{base}: {answer.security.value}"
                     f"{'' if answer.records else ', no records'}")
        if answer.security in _FAILED:
            # RFC 7672 §2.1.2: bogus or indeterminate TLSA for a secure host: skip it.
            return MxDecision(name, Requirement.DEFER, "tlsa-bogus",
                              f"TLSA lookup {tlsa_query_name(base)} is "
                              f"{answer.security.value}: do not deliver to this host "
                              "(RFC 7672 §2.1.2)", tlsa_base=base, sni=base)
        if answer.security is Security.INSECURE or not answer.records:
            continue  # RFC 7671 §7: no secure records here; try the next candidate.
        refs = _reference_names(host, base, extra)
        usable = select_usable(answer.records)
        if usable:
            return MxDecision(name, Requirement.DANE_REQUIRED, "usable-tlsa",
                              f"{len(usable)} usable TLSA record(s) at "
                              f"{tlsa_query_name(base)}: authenticated TLS required "
                              "(RFC 7672 §2.2)", base, base, refs, usable, answer.records)
        why = "; ".join(f"{r.to_text()[:20]}: {unusable_reason(r) or 'weaker digest'}"
                        for r in answer.records[:4])
        return MxDecision(name, Requirement.ENCRYPT_ONLY, "unusable-tlsa",
                          f"TLSA records at {tlsa_query_name(base)} are all unusable "
                          f"({why}): TLS required, without authentication "
                          "(RFC 7672 §2.2, §3.1.3)",
                          base, base, refs, (), answer.records)
    return MxDecision(name, Requirement.NO_DANE, "no-secure-tlsa",
                      f"no secure TLSA records ({'; '.join(tried)}): DANE does not apply")


def decide_destination(
    dest: DestinationLookup,
    hosts: Sequence[HostLookup],
    tlsa: Mapping[str, TlsaLookup],
) -> DestinationDecision:
    """Per-MX requirements for a destination (RFC 7672 §2.2).

    ``hosts`` holds a :class:`HostLookup` for each MX host (or for the domain of a
    non-MX destination); ``tlsa`` maps TLSA base domains to lookups.
    """
    domain = dest.domain
    mx = dest.mx_security
    if is_address_literal(domain):
        # RFC 7672 §2.2: an address-literal next hop gets no DANE (and no MX lookup).
        entry = MxDecision(domain, Requirement.NO_DANE, "address-literal",
                           f"{domain} is an address literal: DANE does not apply "
                           "(RFC 7672 §2.2)")
        return DestinationDecision(domain, mx, "address-literal",
                                   "address-literal next hop: no DANE", (entry,))
    if mx in _FAILED:
        # RFC 7672 §2.2.1 / §2.1.2: the MX RRset cannot be trusted: defer delivery.
        return DestinationDecision(domain, mx, "mx-bogus",
                                   f"the MX lookup of {domain} is {mx.value}: defer delivery")
    by_name = {h.name: h for h in hosts}
    names = dest.mx_hosts if dest.has_mx else (domain,)
    # RFC 7672 §3.2.2: below a secure MX RRset, the next-hop domain and its CNAME
    # expansion are reference identifiers too (a non-MX domain is the host itself).
    secure_mx = dest.has_mx and mx is Security.SECURE
    nexthop = domain if secure_mx else None
    nexthop_expanded = dest.domain_expanded if secure_mx else None
    if dest.has_mx and mx is Security.INSECURE:
        # RFC 7672 §2.2.1: an insecure MX RRset; DANE does not apply to its hosts.
        entries = tuple(MxDecision(n, Requirement.NO_DANE, "mx-insecure",
                                   f"the MX RRset of {domain} is insecure: DANE does not "
                                   "apply (RFC 7672 §2.2.1)") for n in names)
        return DestinationDecision(domain, mx, "mx-insecure",
                                   "insecure MX RRset: no DANE", entries)
    entries_list = []
    for n in names:
        if n not in by_name:
            raise DaneError(f"no address lookup given for {n}")
        entries_list.append(decide_host(by_name[n], tlsa, nexthop=nexthop,
                                        nexthop_expanded=nexthop_expanded))
    entries = tuple(entries_list)
    kinds = sorted({e.requirement.value for e in entries})
    kind = "non-MX destination (RFC 7672 §2.2.2)" if not dest.has_mx else "MX hosts"
    return DestinationDecision(domain, mx, "decided", f"{kind}: {', '.join(kinds)}", entries)
