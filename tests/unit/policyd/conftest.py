"""An in-memory DNS world and HTTPS fetcher for the policy engine (no network).

Both are passed to :class:`PolicyEngine` through its ``dns`` and ``fetcher`` seams;
nothing is monkeypatched. Every lookup and fetch is counted, so tests can prove that a
cached answer caused no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

from smtptls.dnssec import Security
from smtptls.errors import FetchError
from smtptls.net.dns import Answer, MxHost, TlsaRdata, normalize_domain
from smtptls.net.https import FetchResult


@dataclass
class World:
    """DNS records (name, type) -> (records, security, ttl) or an exception; policy
    bodies per domain or an exception."""

    records: dict[tuple[str, str], tuple[tuple, Security, int] | Exception] = field(
        default_factory=dict)
    policies: dict[str, str | Exception] = field(default_factory=dict)
    queries: Counter = field(default_factory=Counter)
    fetches: Counter = field(default_factory=Counter)
    fetch_delay: float = 0.0
    query_delay: float = 0.0

    # building

    def mx(self, domain: str, *hosts: str, security: Security = Security.INSECURE,
           ttl: int = 3600) -> None:
        recs = tuple(MxHost(10 * (i + 1), h) for i, h in enumerate(hosts))
        self.records[(domain, "MX")] = (recs, security, ttl)

    def host(self, name: str, *, security: Security = Security.INSECURE,
             tlsa: tuple[TlsaRdata, ...] | Exception = (), port: int = 25) -> None:
        self.records[(name, "A")] = (("127.0.0.1",), security, 3600)
        self.records[(name, "AAAA")] = ((), security, 3600)  # NODATA, same zone
        key = (f"_{port}._tcp.{name}", "TLSA")
        self.records[key] = tlsa if isinstance(tlsa, Exception) else (tlsa, security, 3600)

    def sts(self, domain: str, record: str | None, body: str | Exception | None = None,
            *, ttl: int = 300) -> None:
        if record is not None:
            self.records[(f"_mta-sts.{domain}", "TXT")] = ((record,), Security.INSECURE, ttl)
        else:
            self.records.pop((f"_mta-sts.{domain}", "TXT"), None)
        if body is not None:
            self.policies[domain] = body

    @staticmethod
    def policy(*mx: str, mode: str = "enforce", max_age: int = 86400) -> str:
        lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx),
                 f"max_age: {max_age}"]
        return "\n".join(lines) + "\n"

    # the resolver interface

    def cname(self, alias: str, target: str, *, security: Security = Security.SECURE,
              ttl: int = 3600) -> None:
        """``alias`` is a CNAME for ``target``; ``security`` is the alias RRset's own."""
        self.records[(alias, "CNAME")] = ((target,), security, ttl)

    async def query(self, name: str, rdtype: str) -> Answer:
        name = normalize_domain(name)
        self.queries[(name, rdtype)] += 1
        if self.query_delay:
            import asyncio

            await asyncio.sleep(self.query_delay)
        alias = self.records.get((name, "CNAME"))
        if rdtype != "CNAME" and isinstance(alias, tuple):
            # follow the alias like a resolver: the chain is recorded, the status is
            # the worst along it (a validating resolver's AD bit covers the whole chain)
            (target,), alias_security, _ = alias
            answer = await self.query(target, rdtype)
            rank = [Security.SECURE, Security.INSECURE, Security.INDETERMINATE,
                    Security.BOGUS]
            worst = max(alias_security, answer.security, key=rank.index)
            return Answer(name, rdtype, answer.records, worst,
                          (target, *answer.cname_chain), answer.ttl, answer.nxdomain)
        entry = self.records.get((name, rdtype))
        if isinstance(entry, Exception):
            raise entry
        if entry is None:
            return Answer(name, rdtype, (), Security.INSECURE, ttl=60, nxdomain=False)
        recs, security, ttl = entry
        return Answer(name, rdtype, tuple(recs), security, ttl=ttl)

    async def txt(self, name: str) -> Answer:
        return await self.query(name, "TXT")

    async def a(self, name: str) -> Answer:
        return await self.query(name, "A")

    async def aaaa(self, name: str) -> Answer:
        return await self.query(name, "AAAA")

    async def mx_lookup(self, name: str) -> Answer:
        return await self.query(name, "MX")

    # the fetcher interface

    async def fetch(self, domain: str, *, config: object, resolver: object) -> FetchResult:
        import asyncio

        self.fetches[domain] += 1
        if self.fetch_delay:
            await asyncio.sleep(self.fetch_delay)
        body = self.policies.get(domain)
        if body is None:
            raise FetchError("connection refused", url=f"https://mta-sts.{domain}/")
        if isinstance(body, Exception):
            raise body
        return FetchResult(body, "text/plain", 200, f"https://mta-sts.{domain}/", 0.01)


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def clock() -> Clock:
    return Clock()
