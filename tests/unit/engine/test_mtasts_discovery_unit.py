"""Discovery orchestration with an in-memory DNS answer source and fetcher (no I/O).

The DNS source and the fetcher are passed in as arguments (the same seams policyd
uses); nothing is monkeypatched. The lab-backed tests in
tests/integration/test_mtasts_fetch.py cover the real DNS and HTTPS paths.
"""

from __future__ import annotations

import asyncio

import pytest

from smtptls.config import FetchConfig
from smtptls.dnssec import Security
from smtptls.engine.mtasts_discovery import Outcome, discover, refresh_due
from smtptls.errors import (
    DnsBogus,
    DnsTimeout,
    FetchStatusError,
    MultipleRecordsError,
    PolicySyntaxError,
    StoreError,
)
from smtptls.mtasts import Action, CachedPolicy, Mode, Policy
from smtptls.net.https import FetchResult
from smtptls.net.memory import MemoryResolver
from smtptls.store import MemoryPolicyCache

T0 = 1_700_000_000.0
ENFORCE = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\n"
TESTING = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n"
NONE = "version: STSv1\nmode: none\nmax_age: 86400\n"


def txt_dns(txt):
    """The package's in-memory resolver answering TXT lookups from a dict; an exception
    value is raised; TTL 0 as a bare answer has."""
    dns = MemoryResolver(negative_ttl=0)
    for name, value in txt.items():
        dns.records[(name, "TXT")] = (
            value if isinstance(value, Exception) else (tuple(value), Security.INSECURE, 0))
    return dns


class FakeFetcher:
    def __init__(self, body=ENFORCE, error=None, delay=0.0):
        self.body, self.error, self.delay, self.calls = body, error, delay, 0

    async def __call__(self, domain, *, config, resolver):
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return FetchResult(self.body, "text/plain", 200,
                           f"https://mta-sts.{domain}/.well-known/mta-sts.txt", 0.01)


def txt(record_id="1"):
    return {"_mta-sts.example.com": [f"v=STSv1; id={record_id}"]}


async def run(dns, cache, fetcher, now=T0, **kw):
    return await discover("example.com", dns=dns, cache=cache, fetch_config=FetchConfig(),
                          now=now, fetcher=fetcher, **kw)


def cached(body=ENFORCE, policy_id="1", at=T0 - 100):
    return CachedPolicy.from_fetch(Policy.parse(body), policy_id, at)


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_nothing_cached_fetches_and_stores():
    cache, fetcher = MemoryPolicyCache(), FakeFetcher()
    d = await run(txt_dns(txt()), cache, fetcher)
    assert d.outcome is Outcome.FETCHED and d.action is Action.FETCH
    assert d.policy.mode is Mode.ENFORCE and d.policy_id == "1" and d.record_id == "1"
    assert not d.from_cache and fetcher.calls == 1
    stored = await cache.get("example.com")
    assert stored.policy_id == "1" and stored.expires_at == T0 + 86400
    assert d.to_dict()["policy"] == {"version": "STSv1", "mode": "enforce",
                                     "max_age": 86400, "mx": ["mx.example.com"]}


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_same_id_uses_cache_without_fetch():
    cache, fetcher = MemoryPolicyCache(), FakeFetcher()
    await cache.put("example.com", cached())
    d = await run(txt_dns(txt("1")), cache, fetcher)
    assert d.outcome is Outcome.CACHED and d.from_cache and fetcher.calls == 0
    assert d.policy.mode is Mode.ENFORCE


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_id_change_triggers_refetch():
    cache, fetcher = MemoryPolicyCache(), FakeFetcher(body=TESTING)
    await cache.put("example.com", cached(policy_id="1"))
    d = await run(txt_dns(txt("2")), cache, fetcher)
    assert d.outcome is Outcome.FETCHED and fetcher.calls == 1
    assert d.policy.mode is Mode.TESTING and d.policy_id == "2"
    assert (await cache.get("example.com")).policy_id == "2"


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "error",
    [FetchStatusError("HTTP 500", status=500), PolicySyntaxError("bad", line=1)],
    ids=["http-500", "invalid-policy"],
)
async def test_rfc8461_3_3_failed_refresh_keeps_cached_policy(error):
    cache = MemoryPolicyCache()
    before = cached(policy_id="1")
    await cache.put("example.com", before)
    d = await run(txt_dns(txt("2")), cache, FakeFetcher(error=error))
    assert d.outcome is Outcome.FETCH_FAILED_KEPT_CACHED and d.from_cache
    assert d.policy == before.policy and d.policy_id == "1"
    assert d.fetch_error is error
    after = await cache.get("example.com")
    assert after.policy == before.policy and after.policy_id == "1"
    assert after.last_checked == T0  # the attempt is noted (rate limit of refetches)
    assert d.to_dict()["errors"]["fetch"]["type"] == type(error).__name__


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_fetch_fails_nothing_cached_is_no_policy():
    cache = MemoryPolicyCache()
    d = await run(txt_dns(txt()), cache, FakeFetcher(error=FetchStatusError("404", status=404)))
    assert d.outcome is Outcome.FETCH_FAILED and d.policy is None
    assert await cache.get("example.com") is None


@pytest.mark.rfc("8461 8.3")
async def test_rfc8461_8_3_mode_none_replaces_cache():
    cache = MemoryPolicyCache()
    await cache.put("example.com", cached(policy_id="1"))
    d = await run(txt_dns(txt("2")), cache, FakeFetcher(body=NONE))
    assert d.outcome is Outcome.FETCHED and d.policy.mode is Mode.NONE
    assert (await cache.get("example.com")).policy.mode is Mode.NONE


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize(
    "answer, error_type, security",
    [
        ([], None, Security.INSECURE),
        (["bogus", "more"], None, Security.INSECURE),
        (["v=STSv1; id=1", "v=STSv1; id=2"], MultipleRecordsError, Security.INSECURE),
        (DnsBogus("SERVFAIL"), DnsBogus, Security.BOGUS),
        (DnsTimeout("timeout"), DnsTimeout, Security.INDETERMINATE),
    ],
    ids=["no-record", "non-sts-ignored", "multiple-records", "servfail", "timeout"],
)
async def test_rfc8461_3_1_no_usable_record(answer, error_type, security):
    fetcher = FakeFetcher()
    d = await run(txt_dns({"_mta-sts.example.com": answer}), MemoryPolicyCache(), fetcher)
    assert d.outcome is Outcome.NO_POLICY and d.policy is None and fetcher.calls == 0
    assert d.txt_security is security
    assert (d.txt_error is None) if error_type is None else isinstance(d.txt_error, error_type)


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize(
    "answer",
    [[], ["v=STSv1; id=1", "v=STSv1; id=2"], DnsBogus("SERVFAIL")],
    ids=["record-gone", "multiple-records", "servfail"],
)
async def test_rfc8461_3_1_broken_record_keeps_unexpired_cache(answer):
    cache = MemoryPolicyCache()
    await cache.put("example.com", cached())
    d = await run(txt_dns({"_mta-sts.example.com": answer}), cache, FakeFetcher())
    assert d.outcome is Outcome.CACHED and d.policy.mode is Mode.ENFORCE


async def test_expired_cache_entry_dropped():
    cache = MemoryPolicyCache()
    await cache.put("example.com", cached(at=T0 - 90000))
    d = await run(txt_dns({}), cache, FakeFetcher())
    assert d.outcome is Outcome.NO_POLICY
    assert await cache.get("example.com") is None


async def test_proactive_refresh_fetches_with_same_id():
    cache, fetcher = MemoryPolicyCache(), FakeFetcher()
    await cache.put("example.com", cached())
    d = await run(txt_dns(txt("1")), cache, fetcher, proactive=True)
    assert d.outcome is Outcome.FETCHED and fetcher.calls == 1
    assert (await cache.get("example.com")).fetched_at == T0


async def test_leading_dot_domain_is_no_policy_without_io():
    dns, fetcher = txt_dns(txt()), FakeFetcher()
    d = await discover(".good.loc", dns=dns, cache=MemoryPolicyCache(), now=T0,
                       fetcher=fetcher)
    assert d.outcome is Outcome.NO_POLICY and dns.queries.total() == 0 and fetcher.calls == 0
    assert d.to_dict()["errors"]["txt"]["type"] == "InvalidDomainError"


async def test_concurrent_discoveries_share_one_fetch():
    cache, dns, fetcher = MemoryPolicyCache(), txt_dns(txt()), FakeFetcher(delay=0.05)
    results = await asyncio.gather(*(run(dns, cache, fetcher) for _ in range(20)))
    assert fetcher.calls == 1 and dns.queries.total() == 1
    assert {r.outcome for r in results} == {Outcome.FETCHED}
    # once finished, a new call does its own lookup again
    await run(dns, cache, fetcher)
    assert dns.queries.total() == 2 and fetcher.calls == 1


async def test_cancelled_caller_does_not_cancel_shared_discovery():
    cache, dns, fetcher = MemoryPolicyCache(), txt_dns(txt()), FakeFetcher(delay=0.05)
    first = asyncio.ensure_future(run(dns, cache, fetcher))
    second = asyncio.ensure_future(run(dns, cache, fetcher))
    await asyncio.sleep(0.01)
    first.cancel()
    d = await second
    assert d.outcome is Outcome.FETCHED and fetcher.calls == 1


class BrokenCache(MemoryPolicyCache):
    async def get(self, domain):
        raise StoreError("down")

    async def put(self, domain, cached):
        raise StoreError("down")


async def test_store_failures_are_data_not_exceptions():
    d = await run(txt_dns(txt()), BrokenCache(), FakeFetcher())
    assert d.outcome is Outcome.FETCHED and d.policy.mode is Mode.ENFORCE
    assert isinstance(d.store_error, StoreError)
    assert d.to_dict()["errors"]["store"]["message"] == "down"


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_refetch_rate_limited_after_failure():
    cache = MemoryPolicyCache()
    await cache.put("example.com", cached(policy_id="1"))
    failing = FakeFetcher(error=FetchStatusError("HTTP 500", status=500))
    d = await run(txt_dns(txt("2")), cache, failing, now=T0)
    assert d.outcome is Outcome.FETCH_FAILED_KEPT_CACHED and failing.calls == 1
    d = await run(txt_dns(txt("2")), cache, failing, now=T0 + 60)
    assert d.outcome is Outcome.CACHED and d.rate_limited and failing.calls == 1
    assert d.policy.mode is Mode.ENFORCE and d.to_dict()["rate_limited"] is True
    working = FakeFetcher(body=TESTING)
    d = await run(txt_dns(txt("2")), cache, working, now=T0 + 301)
    assert d.outcome is Outcome.FETCHED and working.calls == 1
    assert d.policy.mode is Mode.TESTING


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_proactive_refresh_of_due_entries():
    cache = MemoryPolicyCache()
    await cache.put("old.example", cached(at=T0 - 86400 + 1000))  # a day old: due
    await cache.put("fresh.example", cached(at=T0 - 60))  # fetched a minute ago
    dns = txt_dns({"_mta-sts.old.example": ["v=STSv1; id=1"],
                   "_mta-sts.fresh.example": ["v=STSv1; id=1"]})
    fetcher = FakeFetcher(body=TESTING)
    results = await refresh_due(dns=dns, cache=cache, now=T0, fetcher=fetcher)
    assert [r.domain for r in results] == ["old.example"]
    assert results[0].outcome is Outcome.FETCHED and fetcher.calls == 1
    refreshed = await cache.get("old.example")
    assert refreshed.fetched_at == T0 and refreshed.policy.mode is Mode.TESTING
    assert (await cache.get("fresh.example")).fetched_at == T0 - 60


async def test_proactive_refresh_bounded():
    cache = MemoryPolicyCache()
    for i in range(10):
        await cache.put(f"d{i}.example", cached(at=T0 - 90000 + 7200))
    dns = txt_dns({f"_mta-sts.d{i}.example": ["v=STSv1; id=1"] for i in range(10)})
    results = await refresh_due(dns=dns, cache=cache, now=T0, fetcher=FakeFetcher(),
                                max_domains=3, concurrency=2)
    assert len(results) == 3


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_failed_fetch_nothing_cached_waits_five_minutes_per_id():
    # B6 with nothing cached (B7): the failure of id 1 is remembered; no new fetch for
    # id 1 within 300 s, but a new id is fetched at once
    cache = MemoryPolicyCache()
    failing = FakeFetcher(error=FetchStatusError("HTTP 500", status=500))
    d = await run(txt_dns(txt("1")), cache, failing, now=T0)
    assert d.outcome is Outcome.FETCH_FAILED and failing.calls == 1
    d = await run(txt_dns(txt("1")), cache, failing, now=T0 + 120)
    assert d.outcome is Outcome.FETCH_FAILED and d.rate_limited and failing.calls == 1
    assert d.policy is None  # still no MTA-STS: deliver as without it
    working = FakeFetcher(body=TESTING)
    d = await run(txt_dns(txt("2")), cache, working, now=T0 + 121)
    assert d.outcome is Outcome.FETCHED and working.calls == 1


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_new_id_after_a_failure_is_fetched_with_a_cached_policy():
    cache = MemoryPolicyCache()
    await cache.put("example.com", cached(policy_id="1"))
    failing = FakeFetcher(error=FetchStatusError("HTTP 500", status=500))
    d = await run(txt_dns(txt("2")), cache, failing, now=T0)
    assert d.outcome is Outcome.FETCH_FAILED_KEPT_CACHED and failing.calls == 1
    working = FakeFetcher(body=TESTING)
    d = await run(txt_dns(txt("3")), cache, working, now=T0 + 60)  # another new id
    assert d.outcome is Outcome.FETCHED and working.calls == 1
    assert d.policy.mode is Mode.TESTING


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_failure_memo_is_per_cache():
    failing = FakeFetcher(error=FetchStatusError("HTTP 500", status=500))
    await run(txt_dns(txt("1")), MemoryPolicyCache(), failing, now=T0)
    working = FakeFetcher(body=TESTING)
    d = await run(txt_dns(txt("1")), MemoryPolicyCache(), working, now=T0 + 10)
    assert d.outcome is Outcome.FETCHED and working.calls == 1
