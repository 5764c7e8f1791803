"""The in-memory twins of the network seams answer as the real adapters do."""

from __future__ import annotations

import pytest

from smtptls.dnssec import Security
from smtptls.errors import DnsBogus, DnsTimeout, FetchError
from smtptls.net.dns import MxHost
from smtptls.net.memory import NEGATIVE_TTL, MemoryFetcher, MemoryResolver
from smtptls.net.protocols import PolicyFetcher, Resolver


async def test_resolver_answers_counts_and_follows_cnames():
    dns: Resolver = MemoryResolver()
    dns.mx("example.com", "mx1.example.com", "mx2.example.com", security=Security.SECURE)
    dns.cname("alias.example.com", "example.com", security=Security.INSECURE)
    answer = await dns.query("Example.COM.", "MX")
    assert answer.records == (MxHost(10, "mx1.example.com"), MxHost(20, "mx2.example.com"))
    assert answer.security is Security.SECURE and answer.ttl == 3600
    via = await dns.query("alias.example.com", "MX")
    assert via.records == answer.records and via.cname_chain == ("example.com",)
    assert via.security is Security.INSECURE  # the worst along the chain
    assert dns.queries[("example.com", "MX")] == 2


async def test_resolver_nodata_and_failures_as_the_real_resolver_gives_them():
    dns = MemoryResolver()
    dns.records[("bogus.example", "TXT")] = DnsBogus("SERVFAIL", name="bogus.example",
                                                     rdtype="TXT")
    dns.records[("slow.example", "A")] = DnsTimeout("no answer", name="slow.example",
                                                    rdtype="A")
    empty = await dns.txt("nothing.example")
    assert empty.records == () and empty.ttl == NEGATIVE_TTL and not empty.nxdomain
    with pytest.raises(DnsBogus):
        await dns.txt("bogus.example")
    assert (await dns.try_query("bogus.example", "TXT")).security is Security.BOGUS
    assert (await dns.try_query("slow.example", "A")).security is Security.INDETERMINATE
    assert MemoryResolver(negative_ttl=3600).negative_ttl == 3600


async def test_fetcher_serves_bodies_and_refuses_unknown_hosts():
    fetch: PolicyFetcher = MemoryFetcher({"example.com": "version: STSv1\n"})
    result = await fetch("example.com", config=None, resolver=None)  # type: ignore[arg-type]
    assert result.text == "version: STSv1\n" and result.status == 200
    assert result.url == "https://mta-sts.example.com/.well-known/mta-sts.txt"
    with pytest.raises(FetchError):
        await fetch("other.example", config=None, resolver=None)  # type: ignore[arg-type]
    assert fetch.fetches == {"example.com": 1, "other.example": 1}
