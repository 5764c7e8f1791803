"""The RRSIG expirations of a domain's mail RRsets, for the monitor (thin I/O adapter).

A signed zone whose signatures are not renewed turns bogus the second its RRSIGs pass
their Signature Expiration (RFC 4034 §3.1.5): the validating resolver then answers
SERVFAIL, and senders defer mail (RFC 7672 §2.1.1 for the TLSA RRset and the MX and
address records that lead to it; an MTA-STS sender sees no ``_mta-sts`` record). This
module asks the project's :class:`~smtptls.net.protocols.Resolver` for those RRsets and
keeps, per RRset, the earliest expiration of the signatures the resolver returned
(:attr:`~smtptls.net.dns.Answer.sig_expires`); :func:`smtptls.monitor.rules.judge`
decides what is close enough to alert about.

Only answers the resolver validated (AD, ``Security.SECURE``) count: signatures in a
zone without a chain of trust fail nobody when they expire. Negative answers (their
NSEC proofs) are not followed.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from smtptls.check.facts import DomainFacts
from smtptls.dane.decide import tlsa_query_name
from smtptls.dnssec import Security
from smtptls.errors import SmtpTlsError
from smtptls.monitor.rules import SignedRRset
from smtptls.net.dns import Answer
from smtptls.net.protocols import Resolver

__all__ = ["MAX_HOSTS", "SignedRRset", "gather_signatures", "lookups_for"]

#: MX hosts whose TLSA and address RRsets are asked (check probes as many at most).
MAX_HOSTS = 10


def lookups_for(facts: DomainFacts) -> list[tuple[str, str]]:
    """The (name, type) lookups whose signatures matter for mail to ``facts.domain``
    (pure): its MX, its ``_mta-sts`` TXT, and per MX host the TLSA RRset check looked up
    (``_25._tcp.<host>`` when none) and the host's A and AAAA."""
    out = [(facts.domain, "MX"), (f"_mta-sts.{facts.domain}", "TXT")]
    for host in facts.hosts[:MAX_HOSTS]:
        names = [t.name for t in host.tlsa] or [tlsa_query_name(host.host)]
        out += [(name, "TLSA") for name in names]
        out += [(host.host, "A"), (host.host, "AAAA")]
    return list(dict.fromkeys(out))


def signed_rrsets(answers: list[Answer]) -> tuple[SignedRRset, ...]:
    """The validated, signed answers among ``answers`` (pure), one per RRset, earliest
    expiration kept."""
    best: dict[tuple[str, str], dt.datetime] = {}
    for answer in answers:
        if answer.security is not Security.SECURE or answer.sig_expires is None \
                or not answer.records:
            continue
        key = (answer.canonical_name, answer.rdtype)
        if key not in best or answer.sig_expires < best[key]:
            best[key] = answer.sig_expires
    return tuple(SignedRRset(n, t, when) for (n, t), when in best.items())


async def gather_signatures(resolver: Resolver, facts: DomainFacts
                            ) -> tuple[SignedRRset, ...]:
    """Ask ``resolver`` for :func:`lookups_for` ``facts`` (concurrently); a failed
    lookup is left out (check reports it as a finding)."""
    if facts.mx.failed:
        return ()
    try:
        wanted = lookups_for(facts)
    except SmtpTlsError:
        return ()
    answers = await asyncio.gather(*(resolver.try_query(n, t) for n, t in wanted))
    return signed_rrsets(list(answers))
