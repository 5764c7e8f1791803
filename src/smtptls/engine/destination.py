"""The destination decision: which TLS policy Postfix applies to one next hop (pure).

Input is what DNS and MTA-STS discovery found (:class:`DestinationFacts`); output is a
:class:`Decision` whose :attr:`~Decision.policy` is a Postfix TLS policy
(``smtp_tls_policy_maps`` syntax) or None. The order is the RFCs' order:

1. **DANE** (RFC 7672; RFC 8461 §2: "senders who implement DANE ... MUST NOT" let
   MTA-STS override it). Each candidate host's requirement comes from
   :mod:`smtptls.dane.decide` (the one place that knows where TLSA records are looked
   for, CNAME'd hosts included, RFC 7672 §2.2.3), over the lookups
   :mod:`smtptls.engine.gather` made:

   - the MX RRset is bogus or its lookup failed -> TEMP: defer (§2.2.1, §2.1.2);
   - every host has secure, usable TLSA -> ``dane-only``: Postfix authenticates every
     MX with DANE and delivers to none otherwise (§2.2);
   - every host's lookups failed (bogus/indeterminate) -> TEMP (§2.1.2);
   - some hosts have secure TLSA (usable or not) or failed lookups -> ``dane``: Postfix
     does the TLSA lookups itself, authenticates the hosts with usable TLSA, uses
     mandatory unauthenticated TLS where all records are unusable (§3.1.3,
     "encrypt"), skips hosts whose lookups fail and uses opportunistic TLS for hosts
     without TLSA (MTA-STS is then not applied to those: Postfix 3.7's policy syntax
     has one level per next hop; see docs/postfix.md, residual risks);
   - DANE applies to no host (insecure MX RRset, hosts in unsigned zones, secure
     denial of TLSA) -> go on.

2. **MTA-STS** (RFC 8461 §5): ``enforce`` -> ``secure match=<names>
   servername=hostname`` where the names are the MX hosts of the domain that match the
   policy (§4.1), listed literally. Postfix reads ``.example.com`` in a match list as
   "any subdomain, at any depth", while an RFC 8461 wildcard ``*.example.com`` covers
   exactly one label; listing the matching host names keeps the one-label rule and
   keeps a spoofed MX (whose certificate names none of them) from being used. When no
   MX host matches, TEMP: those hosts MUST NOT be used (§4.1) and deferring lets a new
   policy be picked up (§5.1). ``testing`` -> the configured ``testing_answer`` (None:
   NOTFOUND), or ``enforce`` handling under ``strict_testing``; ``none`` or no policy
   -> NOTFOUND.

3. Otherwise NOTFOUND: Postfix's own ``smtp_tls_security_level`` applies.

Next-hop keys come as Postfix sends them (TLS_README, "TLS policy table"): a domain,
``domain:port``, ``[host]``, ``[host]:port``, ``.parent.domain`` (parent-domain
matching, answered NOTFOUND: RFC 8461 §3.4 says a policy covers its exact domain only),
or an IP literal (NOTFOUND: MTA-STS and DANE name hosts). For ``[host]`` (a smart host
or a transport(5) override) there is no MX lookup; RFC 8461 §3.4 makes the smart host's
domain the policy domain, and the host is the only candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smtptls.dane.decide import MxDecision, Requirement
from smtptls.dane.names import is_address_literal
from smtptls.dnssec import Security
from smtptls.errors import InvalidDomainError
from smtptls.mtasts.policy import Mode, Policy
from smtptls.net.dns import normalize_domain

__all__ = [
    "MAX_MATCH_NAMES",
    "Decision",
    "DecisionKind",
    "DestinationFacts",
    "HostFacts",
    "NextHop",
    "NextHopKind",
    "Options",
    "dane_decision",
    "decide",
    "derive_match",
]

#: At most this many names in a ``match=`` list (an MX RRset is bounded by
#: DnsConfig.max_records anyway; Postfix replies are capped at 100000 octets).
MAX_MATCH_NAMES = 64
#: A next-hop key longer than this is not a name Postfix would send.
MAX_KEY = 600


# --- next hops ---------------------------------------------------------------------------


class NextHopKind(StrEnum):
    DOMAIN = "domain"  # recipient domain (MX lookup), maybe with :port
    HOST = "host"  # [host] or [host]:port: no MX lookup
    IP_LITERAL = "ip-literal"  # [192.0.2.1], [ipv6:...], a bare address
    PARENT = "parent"  # .example.com: Postfix's parent-domain lookup


@dataclass(frozen=True, slots=True)
class NextHop:
    """A Postfix next-hop key, parsed. ``name`` is the normalized domain or host."""

    key: str
    kind: NextHopKind
    name: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, key: str) -> NextHop:
        """Parse a lookup key; raises :class:`InvalidDomainError` for a broken one."""
        if not isinstance(key, str):
            raise InvalidDomainError("next-hop key must be text")
        text = key.strip()
        if not text or len(text) > MAX_KEY:
            raise InvalidDomainError("empty or overlong next-hop key", name=text[:80])
        if text.startswith("["):
            inner, sep, rest = text[1:].partition("]")
            if not sep:
                raise InvalidDomainError("unbalanced '[' in next hop", name=text[:80])
            port = _port(rest, text)
            if _is_ip(inner):
                return cls(key, NextHopKind.IP_LITERAL, inner.lower(), port)
            return cls(key, NextHopKind.HOST, normalize_domain(inner), port)
        if text.startswith("."):
            # TLS_README: with a domain key not found, Postfix looks up ".parent" forms
            return cls(key, NextHopKind.PARENT, text.lower().rstrip("."), None)
        if _is_ip(text):
            return cls(key, NextHopKind.IP_LITERAL, text.lower(), None)
        host, sep, port_text = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        port = _port(":" + port_text, text) if sep else None
        return cls(key, NextHopKind.DOMAIN, normalize_domain(host), port)

    @property
    def policy_domain(self) -> str | None:
        """The MTA-STS policy domain (RFC 8461 §3.4: a smart host's own domain)."""
        return self.name if self.kind in (NextHopKind.DOMAIN, NextHopKind.HOST) else None

    @property
    def tlsa_port(self) -> int:
        # RFC 7672 §2.2.3 / RFC 6698 §3: TLSA at _<port>._tcp.<host>; SMTP is port 25
        return self.port or 25

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind.value, "name": self.name, "port": self.port}


def _is_ip(text: str) -> bool:
    # an address with or without Postfix's "ipv6:" prefix, as inside [...]: the one
    # address-literal rule (RFC 5321 §4.1.3; RFC 7672 §2.2: no DANE for literals)
    return is_address_literal(f"[{text}]")


def _port(rest: str, text: str) -> int | None:
    if not rest:
        return None
    if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
        raise InvalidDomainError("bad port in next hop", name=text[:80])
    port = int(rest[1:])
    if not 0 < port < 65536:
        raise InvalidDomainError("port out of range in next hop", name=text[:80])
    return port


# --- DNS facts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostFacts:
    """One candidate host: its name, MX preference and its RFC 7672 requirement
    (:class:`~smtptls.dane.decide.MxDecision`, decided by :mod:`smtptls.dane.decide`
    from the lookups :mod:`smtptls.engine.gather` made; None: not looked up)."""

    host: str
    preference: int = 0
    dane: MxDecision | None = None

    @property
    def requirement(self) -> Requirement:
        return Requirement.NO_DANE if self.dane is None else self.dane.requirement

    @property
    def tlsa_records(self) -> tuple[str, ...]:
        """The TLSA RRset found for the host (presentation form), usable or not."""
        return () if self.dane is None else tuple(r.to_text() for r in self.dane.all_records)

    def to_dict(self) -> dict[str, Any]:
        d = self.dane
        return {"host": self.host, "preference": self.preference,
                "dane": self.requirement.value,
                "reason": None if d is None else d.reason,
                "detail": None if d is None else d.detail,
                "tlsa_base": None if d is None else d.tlsa_base,
                "tlsa_records": list(self.tlsa_records)}


@dataclass(frozen=True, slots=True)
class DestinationFacts:
    """What was found about one next hop.

    - ``mx_security``: DNSSEC status of the MX lookup (None: no MX lookup, ``[host]``);
    - ``hosts``: the candidate hosts in preference order (the MX hosts; the domain itself
      for an implicit MX, RFC 5321 §5.1; the bracketed host);
    - ``implicit_mx``: no MX records, the domain's own addresses are used;
    - ``null_mx``: the domain publishes a null MX (RFC 7505) and accepts no mail;
    - ``mx_error``: why the MX lookup failed (hosts then unknown);
    - ``policy``: the MTA-STS policy in force (None: no MTA-STS), ``sts_note`` how it was
      obtained (for the explanation).
    """

    nexthop: NextHop
    mx_security: Security | None = None
    hosts: tuple[HostFacts, ...] = ()
    implicit_mx: bool = False
    null_mx: bool = False
    mx_error: str | None = None
    policy: Policy | None = None
    sts_note: str = ""

    @property
    def mx_failed(self) -> bool:
        """The MX lookup was bogus or failed (RFC 7672 §2.1.2): no host can be trusted."""
        return self.mx_security in (Security.BOGUS, Security.INDETERMINATE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nexthop": self.nexthop.to_dict(),
            "mx_security": None if self.mx_security is None else self.mx_security.value,
            "implicit_mx": self.implicit_mx,
            "null_mx": self.null_mx,
            "mx_error": self.mx_error,
            "hosts": [h.to_dict() for h in self.hosts],
            "policy": None if self.policy is None else self.policy.to_dict(),
            "sts_note": self.sts_note,
        }


# --- the decision ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    """The configurable parts (config ``[policyd]``)."""

    testing_answer: str | None = None
    strict_testing: bool = False
    overrides: dict[str, str] = field(default_factory=dict)


class DecisionKind(StrEnum):
    DANE_ONLY = "dane-only"
    DANE = "dane"
    SECURE = "secure"  # MTA-STS enforce (or testing under strict_testing)
    TESTING = "testing"  # MTA-STS testing: the configured testing answer
    OVERRIDE = "override"  # a configured per-domain answer
    NOTFOUND = "notfound"  # Postfix's own default applies
    TEMP = "temp"  # cannot decide now: Postfix defers and retries


@dataclass(frozen=True, slots=True)
class Decision:
    """``policy``: the Postfix TLS policy text for an OK reply (None for NOTFOUND/TEMP);
    ``reason``: why, in one sentence; ``match``: the names of a ``secure`` answer."""

    kind: DecisionKind
    policy: str | None
    reason: str
    match: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "policy": self.policy, "reason": self.reason,
                "match": list(self.match)}


def derive_match(policy: Policy, hosts: Sequence[str], *, limit: int = MAX_MATCH_NAMES
                 ) -> tuple[str, ...]:
    """The ``match=`` names for an enforced policy: the MX hosts that match a policy
    ``mx`` pattern (RFC 8461 §4.1; ``*.example.com`` covers exactly one label), in MX
    preference order. Empty when none matches: RFC 8461 §4.1 says such MX hosts MUST
    NOT be used, so nothing may be listed in their place (the caller defers).
    """
    out: list[str] = []
    for host in hosts:
        if policy.matches_mx(host) and host not in out:
            out.append(host)
            if len(out) >= limit:
                break
    return tuple(out)


def _override(nexthop: NextHop, options: Options) -> Decision | None:
    if not options.overrides or nexthop.name is None:
        return None
    value = options.overrides.get(nexthop.name)
    if value is None:
        return None
    value = value.strip()
    if not value or value.upper() == "NOTFOUND":
        return Decision(DecisionKind.NOTFOUND, None, f"override for {nexthop.name}: NOTFOUND")
    return Decision(DecisionKind.OVERRIDE, value, f"override for {nexthop.name}")


def pre_decide(nexthop: NextHop, options: Options) -> Decision | None:
    """What can be decided from the key and the configuration alone (no DNS)."""
    if nexthop.kind is NextHopKind.IP_LITERAL:
        return Decision(DecisionKind.NOTFOUND, None,
                        "IP literal: neither MTA-STS nor DANE names an address")
    if nexthop.kind is NextHopKind.PARENT:
        return Decision(DecisionKind.NOTFOUND, None,
                        "parent-domain lookup: a policy covers its exact domain only "
                        "(RFC 8461 §3.4)")
    return _override(nexthop, options)


_DANE_SIGNAL = (Requirement.DANE_REQUIRED, Requirement.ENCRYPT_ONLY, Requirement.DEFER)


def dane_decision(facts: DestinationFacts) -> Decision | None:
    """The DANE part of the decision (RFC 7672 §2.2), or None when DANE does not apply
    to any host and MTA-STS (or Postfix's default) decides. ``smtptls dane`` shows this
    same decision; :func:`decide` puts it before MTA-STS (RFC 8461 §2)."""
    if facts.mx_failed:
        # RFC 7672 §2.2.1, §2.1.2: an MX RRset that cannot be validated (bogus, or the
        # lookup failed): no MX host can be trusted, delivery is deferred
        return Decision(DecisionKind.TEMP, None,
                        f"the MX lookup of {facts.nexthop.name} is "
                        f"{facts.mx_security}: defer delivery (RFC 7672 §2.2.1)")
    hosts = facts.hosts
    if not hosts:
        return None
    reqs = [h.requirement for h in hosts]
    if all(r is Requirement.DANE_REQUIRED for r in reqs):
        # RFC 7672 §2.2: every host has usable TLSA -> authenticated TLS is mandatory
        names = ", ".join(h.host for h in hosts[:5])
        return Decision(DecisionKind.DANE_ONLY, "dane-only",
                        f"every MX host has DNSSEC-validated usable TLSA records ({names})")
    if all(r is Requirement.DEFER for r in reqs):
        # RFC 7672 §2.1.2: every host's DNSSEC lookups failed: none may be used
        detail = "; ".join(h.dane.detail for h in hosts[:3] if h.dane is not None)
        return Decision(DecisionKind.TEMP, None, f"no MX host can be used: {detail}")
    marked = [h for h in hosts if h.requirement in _DANE_SIGNAL]
    if marked:
        # RFC 7672 §2.1.2, §2.2, §3.1.3 per host; Postfix's "dane" level applies them
        # itself: authenticates hosts with usable TLSA, encrypts where all records are
        # unusable, skips hosts whose lookups fail, opportunistic TLS for the others
        detail = ", ".join(f"{h.host}: {h.requirement.value}" for h in marked[:5])
        return Decision(DecisionKind.DANE, "dane",
                        f"DANE applies to some MX hosts ({detail}); "
                        "Postfix checks each host's TLSA itself")
    return None


def _secure(facts: DestinationFacts, policy: Policy, why: str) -> Decision:
    hosts = [h.host for h in facts.hosts]
    names = derive_match(policy, hosts)
    if not names:
        # RFC 8461 §4.1, §5: an MX host that matches no pattern MUST NOT be used; with
        # none left nothing is delivered now (§5.1: a new policy may be picked up later)
        what = "no MX host is known" if not hosts else "no MX host matches the policy"
        return Decision(DecisionKind.TEMP, None,
                        f"MTA-STS enforce: {what} (RFC 8461 §4.1): defer delivery")
    text = f"secure match={':'.join(names)} servername=hostname"
    return Decision(DecisionKind.SECURE, text, why, names)


def decide(facts: DestinationFacts, options: Options | None = None) -> Decision:
    """The Postfix TLS policy for ``facts.nexthop`` (see the module docstring)."""
    options = options or Options()
    pre = pre_decide(facts.nexthop, options)
    if pre is not None:
        return pre
    if facts.null_mx:
        return Decision(DecisionKind.NOTFOUND, None,
                        "null MX (RFC 7505): the domain accepts no mail")
    dane = dane_decision(facts)
    if dane is not None:
        return dane  # RFC 8461 §2: DANE takes precedence over MTA-STS
    policy = facts.policy
    if policy is None:
        return Decision(DecisionKind.NOTFOUND, None,
                        f"no MTA-STS policy{_note(facts)}; Postfix's default applies")
    if policy.mode is Mode.NONE:
        # RFC 8461 §5: mode none - as if no active policy
        return Decision(DecisionKind.NOTFOUND, None,
                        "MTA-STS policy mode none; Postfix's default applies")
    if policy.mode is Mode.TESTING:
        if options.strict_testing:
            return _secure(facts, policy, "MTA-STS testing policy enforced (strict_testing)")
        if options.testing_answer:
            # RFC 8461 §5: testing - deliver as without MTA-STS (report failures)
            return Decision(DecisionKind.TESTING, options.testing_answer,
                            "MTA-STS testing policy: the configured testing answer")
        return Decision(DecisionKind.NOTFOUND, None,
                        "MTA-STS testing policy: deliver as without MTA-STS (RFC 8461 §5)")
    # RFC 8461 §5: enforce - only MX hosts matching the policy, with a valid certificate
    return _secure(facts, policy, f"MTA-STS enforce policy{_note(facts)}")


def _note(facts: DestinationFacts) -> str:
    return f" ({facts.sts_note})" if facts.sts_note else ""
