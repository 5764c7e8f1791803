"""Checks on the MX RRset and the MX hosts' address records (pure).

RFC 5321 §5.1 (MX records, implicit MX), RFC 7505 (null MX), RFC 2181 §10.3 (an MX
target must not be an alias), RFC 7672 §2.2.1 (DNSSEC of the MX RRset for DANE).
"""

from __future__ import annotations

from smtptls.check.facts import DomainFacts, LookupFacts
from smtptls.check.findings import Area, Finding, Severity
from smtptls.dnssec import Security
from smtptls.errors import InvalidDomainError
from smtptls.net.dns import normalize_domain

__all__ = ["MAX_HOSTS", "check_mx", "mx_targets"]

#: MX hosts examined per domain, in preference order.
MAX_HOSTS = 16

_FAILED = (Security.BOGUS, Security.INDETERMINATE)


def mx_targets(mx: LookupFacts) -> tuple[list[tuple[int, str]], list[str]]:
    """``(preference, host)`` pairs in preference order, and the unusable targets.

    Records are ``"<preference> <exchange>."`` texts as :class:`LookupFacts` keeps them.
    """
    good: list[tuple[int, str]] = []
    bad: list[str] = []
    seen: set[str] = set()
    for text in mx.records[:256]:
        pref_text, _, exchange = text.partition(" ")
        try:
            pref = int(pref_text)
            host = normalize_domain(exchange)
        except (ValueError, InvalidDomainError):
            bad.append(exchange or text)
            continue
        if host not in seen:
            seen.add(host)
            good.append((pref, host))
    good.sort()
    return good, bad


def _f(code: str, severity: Severity, subject: str, message: str, fix: str | None = None,
       rfc: str | None = None) -> Finding:
    return Finding(code, severity, Area.MX, subject, message, fix, rfc)


def check_mx(facts: DomainFacts) -> list[Finding]:
    d = facts.domain
    mx = facts.mx
    out: list[Finding] = []
    if mx.failed:
        if mx.security is Security.BOGUS:
            # RFC 7672 §2.2.1 / §2.1.1: a validating sender cannot use a bogus MX RRset.
            out.append(_f("mx.bogus", Severity.ERROR, d,
                          f"the MX lookup fails DNSSEC validation ({mx.error}): validating "
                          "senders defer all mail to this domain",
                          "fix the zone's DNSSEC: re-sign it, check RRSIG expiry and that "
                          "the DS record at the parent matches a published DNSKEY",
                          "RFC 7672 §2.2.1"))
        else:
            out.append(_f("mx.lookup-failed", Severity.ERROR, d,
                          f"the MX lookup failed: {mx.error}",
                          "make sure every authoritative name server answers", None))
        return out
    if mx.nxdomain:
        out.append(_f("mx.nxdomain", Severity.ERROR, d, "the domain does not exist (NXDOMAIN)",
                      None, None))
        return out
    if facts.null_mx:
        out.append(_f("mx.null", Severity.INFO, d,
                      "the domain publishes a null MX: it accepts no mail, nothing else to "
                      "check for mail transport", None, "RFC 7505 §3"))
        return out
    if not mx.records:
        out.append(_f("mx.none", Severity.WARNING, d,
                      "no MX records: senders fall back to the domain's own address records "
                      "(implicit MX); MTA-STS policies and DANE need named MX hosts",
                      f"{d}. IN MX 10 mail.{d}.", "RFC 5321 §5.1"))
    if mx.security is Security.INSECURE and mx.records:
        out.append(_f("mx.unsigned", Severity.INFO, d,
                      "the MX RRset is not DNSSEC-signed: DANE cannot apply to this domain",
                      "sign the zone with DNSSEC and publish its DS record at the parent",
                      "RFC 7672 §2.2.1"))
    targets, bad = mx_targets(mx)
    for target in bad[:8]:
        out.append(_f("mx.invalid-target", Severity.ERROR, d,
                      f"MX target {target[:80]!r} is not a host name: senders skip it",
                      "point the MX record at a host name with address records",
                      "RFC 5321 §5.1"))
    if len(targets) > MAX_HOSTS:
        out.append(Finding("check.mx-limit", Severity.INFO, Area.CHECK, d,
                           f"{len(targets)} MX hosts; only the first {MAX_HOSTS} were "
                           "examined"))
    for host in facts.hosts:
        name = host.host
        failed = [x for x in (host.a, host.aaaa) if x.failed]
        if any(x.security is Security.BOGUS for x in failed):
            out.append(_f("mx.host-address-bogus", Severity.ERROR, name,
                          f"the address lookup of {name} fails DNSSEC validation: validating "
                          "senders do not use this MX",
                          "fix the DNSSEC signatures of the host's zone", "RFC 7672 §2.1.2"))
            continue
        if not host.addresses:
            if failed:
                out.append(_f("mx.host-address-failed", Severity.ERROR, name,
                              f"the address lookup of {name} failed: {failed[0].error}",
                              None, None))
            else:
                out.append(_f("mx.host-no-address", Severity.ERROR, name,
                              f"{name} has no A or AAAA record: this MX cannot receive mail",
                              f"{name}. IN A <address>   (or remove the MX record)",
                              "RFC 5321 §5.1"))
        if host.cname_chain:
            # RFC 2181 §10.3: the target of an MX record must not be an alias.
            out.append(_f("mx.host-is-alias", Severity.WARNING, name,
                          f"the MX target {name} is an alias (CNAME to {host.cname_chain[-1]})",
                          f"{d}. IN MX {host.preference or 10} {host.cname_chain[-1]}.",
                          "RFC 2181 §10.3"))
    return out
