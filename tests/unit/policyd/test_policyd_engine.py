"""The policy engine and the refresher against an in-memory DNS world (no network).

Proves the cache behaviour policyd promises: cached answers need no I/O, concurrent
requests share one computation and one fetch, a changed ``_mta-sts`` id is noticed on a
schedule bounded by the TXT TTL and ``txt_recheck_interval`` (not per request), failed
refreshes never replace a good policy, and policies are refreshed before expiry.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from smtptls.config import Config, PolicydConfig
from smtptls.dnssec import Security
from smtptls.errors import DnsBogus, DnsTimeout, FetchTlsError
from smtptls.net.dns import TlsaRdata
from smtptls.services.policyd.decide import MIN_RECHECK, PolicyEngine
from smtptls.services.policyd.metrics import PolicydMetrics
from smtptls.services.policyd.refresh import Refresher
from smtptls.store import MemoryPolicyCache

TLSA = (TlsaRdata(3, 1, 1, bytes(32)),)
SECURE_MX1 = b"OK secure match=mx1.example.com servername=hostname"


def netstring(text: bytes) -> bytes:
    return b"%d:%s," % (len(text), text)


def make_engine(world, clock, **policyd) -> PolicyEngine:  # type: ignore[no-untyped-def]
    cfg = Config(policyd=PolicydConfig(**policyd))
    return PolicyEngine(cfg, dns=world, cache=MemoryPolicyCache(), clock=clock,
                        fetcher=world.fetch, metrics=PolicydMetrics())


def sts_domain(world, domain: str = "example.com", *, ttl: int = 300, mode: str = "enforce",
               rid: str = "1") -> None:  # type: ignore[no-untyped-def]
    world.mx(domain, "mx1.example.com")
    world.host("mx1.example.com")
    world.sts(domain, f"v=STSv1; id={rid}", world.policy("mx1.example.com", mode=mode),
              ttl=ttl)


async def test_cached_answer_is_served_without_any_io(world, clock) -> None:
    sts_domain(world)
    engine = make_engine(world, clock)
    assert engine.lookup_cached("example.com") is None
    assert await engine.lookup("example.com") == netstring(SECURE_MX1)
    queries, fetches = sum(world.queries.values()), sum(world.fetches.values())
    for _ in range(1000):
        assert engine.lookup_cached("example.com") == netstring(SECURE_MX1)
    assert engine.lookup_cached("EXAMPLE.com") == netstring(SECURE_MX1)
    assert sum(world.queries.values()) == queries
    assert sum(world.fetches.values()) == fetches == 1
    assert engine.computations == 1


async def test_concurrent_requests_share_one_computation_and_one_fetch(world, clock) -> None:
    sts_domain(world)
    world.fetch_delay = 0.05
    engine = make_engine(world, clock)
    replies = await asyncio.gather(*(engine.lookup("example.com") for _ in range(50)))
    assert set(replies) == {netstring(SECURE_MX1)}
    assert world.fetches["example.com"] == 1
    assert world.queries[("_mta-sts.example.com", "TXT")] == 1
    assert engine.computations == 1


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_changed_id_noticed_when_txt_ttl_expires(world, clock) -> None:
    sts_domain(world, ttl=60)
    engine = make_engine(world, clock, txt_recheck_interval=300.0)
    refresher = Refresher(engine)
    await engine.lookup("example.com")
    # the domain moves to a new MX and publishes a new id
    world.mx("example.com", "mx2.example.com")
    world.host("mx2.example.com")
    world.sts("example.com", "v=STSv1; id=2", world.policy("mx2.example.com"), ttl=60)
    clock.t += 59
    assert refresher.run_due() == 0  # TTL not over: no recheck, no per-request lookups
    assert engine.lookup_cached("example.com") == netstring(SECURE_MX1)
    clock.t += 1.5
    assert refresher.run_due() == 1
    await asyncio.gather(*refresher._tasks)
    assert engine.lookup_cached("example.com") == netstring(
        b"OK secure match=mx2.example.com servername=hostname")
    assert world.fetches["example.com"] == 2


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_recheck_bounded_by_txt_recheck_interval(world, clock) -> None:
    sts_domain(world, ttl=86400)
    engine = make_engine(world, clock, txt_recheck_interval=120.0)
    await engine.lookup("example.com")
    entry = engine._answers["example.com"]
    assert entry.recheck_at - clock.t == 120.0


async def test_recheck_never_faster_than_the_floor(world, clock) -> None:
    sts_domain(world, ttl=0)
    world.records[("mx1.example.com", "A")] = (("127.0.0.1",), Security.INSECURE, 0)
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    entry = engine._answers["example.com"]
    assert entry.recheck_at - clock.t == MIN_RECHECK


@pytest.mark.rfc("8461 5.1")
async def test_rfc8461_5_1_failed_refresh_keeps_cached_policy(world, clock) -> None:
    sts_domain(world, ttl=60)
    engine = make_engine(world, clock)
    refresher = Refresher(engine)
    await engine.lookup("example.com")
    # new id published, but the policy host is broken; later the TXT lookup times out
    world.sts("example.com", "v=STSv1; id=2",
              FetchTlsError("certificate expired", url="https://mta-sts.example.com/"))
    for _ in range(3):
        clock.t += 61
        refresher.run_due()
        await asyncio.gather(*refresher._tasks)
        assert engine.lookup_cached("example.com") == netstring(SECURE_MX1)
    world.records[("_mta-sts.example.com", "TXT")] = DnsTimeout("no answer")
    clock.t += 400
    refresher.run_due()
    await asyncio.gather(*refresher._tasks)
    assert engine.lookup_cached("example.com") == netstring(SECURE_MX1)


@pytest.mark.rfc("8461 3.2")
async def test_rfc8461_3_2_policy_stops_applying_after_max_age(world, clock) -> None:
    world.mx("example.com", "mx1.example.com")
    world.host("mx1.example.com")
    world.sts("example.com", "v=STSv1; id=1", world.policy("mx1.example.com", max_age=600))
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    entry = engine._answers["example.com"]
    assert entry.recheck_at - clock.t <= 300
    world.policies["example.com"] = FetchTlsError("bad cert", url="x")
    world.sts("example.com", "v=STSv1; id=2")
    clock.t += 601
    assert await engine.refresh("example.com") is not None
    assert engine.lookup_cached("example.com") == netstring(b"NOTFOUND ")


async def test_failed_mx_recheck_keeps_the_previous_mx_list(world, clock) -> None:
    sts_domain(world, ttl=60)
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    world.records[("example.com", "MX")] = DnsTimeout("no answer")
    clock.t += 61
    await engine.refresh("example.com")
    assert engine.lookup_cached("example.com") == netstring(SECURE_MX1)


@pytest.mark.rfc("8461 2")
async def test_rfc8461_2_dane_destination_gets_dane_only_even_with_mta_sts(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", security=Security.SECURE)
    world.host("mx1.example.com", security=Security.SECURE, tlsa=TLSA)
    world.sts("example.com", "v=STSv1; id=1", world.policy("mx1.example.com"))
    engine = make_engine(world, clock)
    assert await engine.lookup("example.com") == netstring(b"OK dane-only")


@pytest.mark.rfc("7672 2.1.1")
async def test_rfc7672_2_1_1_bogus_tlsa_answers_dane(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", "mx2.example.com", security=Security.SECURE)
    world.host("mx1.example.com", security=Security.SECURE, tlsa=DnsBogus("SERVFAIL"))
    world.host("mx2.example.com", security=Security.SECURE)
    engine = make_engine(world, clock)
    assert await engine.lookup("example.com") == netstring(b"OK dane")


@pytest.mark.rfc("7672 2.2.1")
async def test_rfc7672_2_2_1_insecure_mx_never_looks_up_tlsa(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", security=Security.INSECURE)
    world.host("mx1.example.com", security=Security.SECURE, tlsa=TLSA)
    engine = make_engine(world, clock)
    assert await engine.lookup("example.com") == netstring(b"NOTFOUND ")
    assert world.queries[("_25._tcp.mx1.example.com", "TLSA")] == 0


@pytest.mark.rfc("7672 2.2.2")
async def test_rfc7672_2_2_2_implicit_mx_uses_the_domain_itself(world, clock) -> None:
    world.records[("example.com", "MX")] = ((), Security.SECURE, 300)
    world.host("example.com", security=Security.SECURE, tlsa=TLSA)
    engine = make_engine(world, clock)
    assert await engine.lookup("example.com") == netstring(b"OK dane-only")


@pytest.mark.rfc("8461 3.4")
async def test_rfc8461_3_4_smart_host_with_port(world, clock) -> None:
    world.host("relay.example.net", security=Security.SECURE, tlsa=TLSA, port=587)
    engine = make_engine(world, clock)
    assert await engine.lookup("[relay.example.net]:587") == netstring(b"OK dane-only")
    assert world.queries[("relay.example.net", "MX")] == 0  # no MX lookup for [host]
    world.host("relay2.example.net")
    world.sts("relay2.example.net", "v=STSv1; id=1", world.policy("relay2.example.net"))
    assert await engine.lookup("[relay2.example.net]") == netstring(
        b"OK secure match=relay2.example.net servername=hostname")


async def test_answers_expire_if_the_refresher_falls_behind(world, clock) -> None:
    sts_domain(world, ttl=60)
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    clock.t += 119
    assert engine.lookup_cached("example.com") is not None  # due, still served
    clock.t += 2
    assert engine.lookup_cached("example.com") is None  # past twice the period


async def test_slow_lookup_answers_temp_and_finishes_in_background(world, clock) -> None:
    # DNS slower than answer_timeout: TEMP, and the computation finishes for the next
    sts_domain(world)
    world.query_delay = 0.3
    engine = make_engine(world, clock)
    engine.compute_timeout = 0.05
    assert (await engine.lookup("example.com")) == netstring(b"TEMP policy lookup still in progress")
    await asyncio.sleep(0.8)
    assert engine.lookup_cached("example.com") == netstring(SECURE_MX1)


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_slow_policy_host_nothing_cached_is_no_mta_sts(world, clock) -> None:
    # a policy host that stalls with nothing cached: the answer does not wait past
    # sts_wait, it is "no MTA-STS" (B7, §5); the fetch goes on and the next answer
    # enforces the policy it brought
    sts_domain(world)
    world.fetch_delay = 0.3
    cfg = Config(policyd=PolicydConfig(sts_wait=0.05))
    engine = PolicyEngine(cfg, dns=world, cache=MemoryPolicyCache(), clock=clock,
                          fetcher=world.fetch)
    assert await engine.lookup("example.com") == netstring(b"NOTFOUND ")
    explanation = (await engine.explain("example.com")).to_dict()
    assert explanation["mta_sts"]["outcome"] == "fetch-pending"
    entry = engine._answers["example.com"]
    assert entry.recheck_at - clock.t <= 15.0  # asked again soon
    # when the fetch finishes the engine recomputes the answer itself
    for _ in range(50):
        await asyncio.sleep(0.05)
        if engine.lookup_cached("example.com") == netstring(SECURE_MX1):
            break
    assert engine.lookup_cached("example.com") == netstring(SECURE_MX1)
    assert world.fetches["example.com"] == 1  # one fetch served both


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_slow_policy_host_cached_policy_applies(world, clock) -> None:
    # a new id is published and the policy host stalls: the unexpired cached policy
    # keeps applying meanwhile (B8)
    sts_domain(world)
    cfg = Config(policyd=PolicydConfig(sts_wait=0.05))
    engine = PolicyEngine(cfg, dns=world, cache=MemoryPolicyCache(), clock=clock,
                          fetcher=world.fetch)
    assert await engine.lookup("example.com") == netstring(SECURE_MX1)
    world.sts("example.com", "v=STSv1; id=2", world.policy("mx1.example.com"))
    world.fetch_delay = 0.3
    clock.t += 600
    answer = await engine.explain("example.com")
    assert answer.reply.to_bytes() == netstring(SECURE_MX1)
    assert answer.discovery is not None and answer.discovery.outcome.value == "fetch-pending"
    await asyncio.sleep(0.4)


async def test_reconfigure_applies_new_overrides(world, clock) -> None:
    sts_domain(world)
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    cfg = engine.config
    engine.reconfigure(replace(cfg, policyd=replace(cfg.policyd,
                                                    overrides={"example.com": "encrypt"})))
    assert engine.lookup_cached("example.com") is None
    assert await engine.lookup("example.com") == netstring(b"OK encrypt")


async def test_refresher_drops_answers_nobody_asks_for(world, clock) -> None:
    sts_domain(world, ttl=60)
    engine = make_engine(world, clock)
    refresher = Refresher(engine, idle_drop=100)
    await engine.lookup("example.com")
    clock.t += 61
    assert refresher.run_due() == 1  # recently used: rechecked
    await asyncio.gather(*refresher._tasks)
    clock.t += 61
    assert refresher.run_due() == 0  # unused for 122 s > 100 s: dropped
    assert "example.com" not in engine._answers


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_proactive_refresh_before_expiry(world, clock) -> None:
    sts_domain(world)
    engine = make_engine(world, clock, refresh_before_expiry=3600.0)
    refresher = Refresher(engine)
    await engine.lookup("example.com")
    assert await refresher.scan_once() == 0  # fresh policy: nothing to do
    clock.t += 86400 - 1800  # within the last hour before expiry
    assert await refresher.scan_once() == 1
    assert world.fetches["example.com"] == 2
    cached = await engine.cache.get("example.com")
    assert cached is not None and cached.fetched_at == clock.t
    # a failing proactive refresh keeps the cached policy (RFC 8461 §5.1)
    world.policies["example.com"] = FetchTlsError("bad cert", url="x")
    clock.t += 86400 - 1800
    assert await refresher.scan_once() == 1
    assert await engine.cache.get("example.com") is not None


async def test_metrics_count_hits_misses_and_fetch_errors(world, clock) -> None:
    sts_domain(world)
    world.sts("broken.example", "v=STSv1; id=1",
              FetchTlsError("bad cert", url="https://mta-sts.broken.example/"))
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    await engine.lookup("broken.example")
    engine.lookup_cached("example.com")
    text = engine.metrics.render().decode()
    assert 'smtptls_policyd_answer_cache_total{result="hit"} 1.0' in text
    assert 'smtptls_policyd_fetch_errors_total{kind="tls"} 1.0' in text
    assert 'smtptls_policyd_policy_lookups_total{outcome="fetched"} 1.0' in text


async def test_explain_gives_the_reasoning(world, clock) -> None:
    sts_domain(world)
    engine = make_engine(world, clock)
    data = (await engine.explain("example.com")).to_dict()
    assert data["reply"] == SECURE_MX1.decode()
    assert data["facts"]["hosts"][0]["host"] == "mx1.example.com"
    assert data["mta_sts"]["policy"]["mode"] == "enforce"
    assert "enforce" in data["decision"]["reason"]


async def test_failed_tlsa_lookup_is_rechecked_soon(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", "mx2.example.com", security=Security.SECURE)
    world.host("mx1.example.com", security=Security.SECURE, tlsa=DnsTimeout("no answer"))
    world.host("mx2.example.com", security=Security.SECURE)
    engine = make_engine(world, clock)
    assert await engine.lookup("example.com") == netstring(b"OK dane")
    entry = engine._answers["example.com"]
    assert entry.recheck_at - clock.t <= 15.0
