"""In-memory twins of the network seams (:mod:`smtptls.net.protocols`): a DNS world and
an MTA-STS policy host, for tests, benchmarks and library users; no sockets.

    dns = MemoryResolver()
    dns.mx("example.com", "mx.example.com")
    dns.host("mx.example.com", security=Security.SECURE, tlsa=(TlsaRdata(3, 1, 1, b"..."),))
    dns.txt_record("_mta-sts.example.com", "v=STSv1; id=1")
    fetcher = MemoryFetcher({"example.com": "version: STSv1\\nmode: enforce\\n..."})
    engine = PolicyEngine(config, dns=dns, cache=MemoryPolicyCache(), fetcher=fetcher)

Every lookup and fetch is counted (``queries``, ``fetches``), so a test can prove that
a cached answer caused no I/O. A record or a policy may be an exception: it is raised.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from smtptls.dnssec import Security
from smtptls.errors import FetchError
from smtptls.net.dns import Answer, DnsResolver, MxHost, TlsaRdata, normalize_domain
from smtptls.net.https import FetchResult, policy_url

__all__ = ["MemoryFetcher", "MemoryResolver"]

#: The TTL of a negative answer the world has no record for (``negative_ttl``).
NEGATIVE_TTL = 60
_RANK = [Security.SECURE, Security.INSECURE, Security.INDETERMINATE, Security.BOGUS]

_Entry = tuple[tuple[Any, ...], Security, int] | Exception


@dataclass
class MemoryResolver:
    """DNS records ``(name, type) -> (records, security, ttl)`` or an exception.

    A CNAME is followed like a validating resolver does: the chain is recorded and the
    status is the worst along it. A name without records is NODATA (insecure), with
    the TTL ``negative_ttl``. ``signatures`` holds the earliest RRSIG expiration of an
    RRset (:meth:`sign`), carried as :attr:`~smtptls.net.dns.Answer.sig_expires`.
    ``try_query``, ``txt``, ``mx``, ``a``, ``aaaa``, ``tlsa`` and ``addresses`` are
    :class:`~smtptls.net.dns.DnsResolver`'s own, over :meth:`query`.
    """

    records: dict[tuple[str, str], _Entry] = field(default_factory=dict)
    queries: Counter[tuple[str, str]] = field(default_factory=Counter)
    query_delay: float = 0.0
    negative_ttl: int = NEGATIVE_TTL
    signatures: dict[tuple[str, str], dt.datetime] = field(default_factory=dict)

    # building

    def set(self, name: str, rdtype: str, *records: Any,
            security: Security = Security.INSECURE, ttl: int = 3600) -> None:
        self.records[(normalize_domain(name), rdtype.upper())] = (tuple(records), security, ttl)

    def txt_record(self, name: str, *texts: str, security: Security = Security.INSECURE,
                   ttl: int = 300) -> None:
        self.set(name, "TXT", *texts, security=security, ttl=ttl)

    def mx(self, domain: str, *hosts: str, security: Security = Security.INSECURE,
           ttl: int = 3600) -> None:
        self.set(domain, "MX", *(MxHost(10 * (i + 1), h) for i, h in enumerate(hosts)),
                 security=security, ttl=ttl)

    def host(self, name: str, *, security: Security = Security.INSECURE,
             tlsa: tuple[TlsaRdata, ...] | Exception = (), port: int = 25,
             address: str = "127.0.0.1") -> None:
        """An MX host: its address, no AAAA (NODATA in the same zone) and its TLSA."""
        self.records[(name, "A")] = ((address,), security, 3600)
        self.records[(name, "AAAA")] = ((), security, 3600)
        key = (f"_{port}._tcp.{name}", "TLSA")
        self.records[key] = tlsa if isinstance(tlsa, Exception) else (tlsa, security, 3600)

    def cname(self, alias: str, target: str, *, security: Security = Security.SECURE,
              ttl: int = 3600) -> None:
        """``alias`` is a CNAME for ``target``; ``security`` is the alias RRset's own."""
        self.records[(alias, "CNAME")] = ((target,), security, ttl)

    def sign(self, name: str, rdtype: str, expires: dt.datetime) -> None:
        """The RRset ``(name, rdtype)`` is signed until ``expires`` (RFC 4034 §3.1.5)."""
        self.signatures[(normalize_domain(name), rdtype.upper())] = expires

    # the Resolver protocol

    async def query(self, name: str, rdtype: str) -> Answer:
        name = normalize_domain(name)
        self.queries[(name, rdtype)] += 1
        if self.query_delay:
            await asyncio.sleep(self.query_delay)
        alias = self.records.get((name, "CNAME"))
        if rdtype != "CNAME" and isinstance(alias, tuple):
            (target,), alias_security, _ = alias
            answer = await self.query(target, rdtype)
            worst = max(alias_security, answer.security, key=_RANK.index)
            return Answer(name, rdtype, answer.records, worst,
                          (target, *answer.cname_chain), answer.ttl, answer.nxdomain,
                          sig_expires=answer.sig_expires)
        entry = self.records.get((name, rdtype))
        if isinstance(entry, Exception):
            raise entry
        if entry is None:
            return Answer(name, rdtype, (), Security.INSECURE, ttl=self.negative_ttl)
        recs, security, ttl = entry
        return Answer(name, rdtype, tuple(recs), security, ttl=ttl,
                      sig_expires=self.signatures.get((name, rdtype)) if recs else None)

    try_query = DnsResolver.try_query
    txt = DnsResolver.txt
    mx_lookup = DnsResolver.mx
    a = DnsResolver.a
    aaaa = DnsResolver.aaaa
    tlsa = DnsResolver.tlsa
    addresses = DnsResolver.addresses


@dataclass
class MemoryFetcher:
    """MTA-STS policy bodies per domain (or an exception); a domain without one refuses
    the connection (:class:`~smtptls.errors.FetchError`). A
    :class:`~smtptls.net.protocols.PolicyFetcher`."""

    policies: dict[str, str | Exception] = field(default_factory=dict)
    fetches: Counter[str] = field(default_factory=Counter)
    fetch_delay: float = 0.0

    async def __call__(self, domain: str, *, config: object = None,
                       resolver: object = None) -> FetchResult:
        self.fetches[domain] += 1
        if self.fetch_delay:
            await asyncio.sleep(self.fetch_delay)
        body = self.policies.get(domain)
        url = policy_url(domain)
        if body is None:
            raise FetchError("connection refused", url=url)
        if isinstance(body, Exception):
            raise body
        return FetchResult(body, "text/plain", 200, url, 0.01)
