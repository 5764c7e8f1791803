"""RFC 8461 requirements proven through the policy daemon's engine (no network).

The in-memory DNS world and fetcher of conftest.py are the engine's ``dns`` and
``fetcher`` seams; every query and fetch is counted.
"""

from __future__ import annotations

import logging

import pytest

from smtptls.config import Config, PolicydConfig
from smtptls.errors import FetchTlsError
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.services.policyd.metrics import PolicydMetrics
from smtptls.services.policyd.refresh import Refresher
from smtptls.store import MemoryPolicyCache

DAY = 86400


def make_engine(world, clock, **policyd) -> PolicyEngine:  # type: ignore[no-untyped-def]
    cfg = Config(policyd=PolicydConfig(**policyd))
    return PolicyEngine(cfg, dns=world, cache=MemoryPolicyCache(), clock=clock,
                        fetcher=world.fetch, metrics=PolicydMetrics())


def sts_domain(world, domain: str, mx: str, *, mode: str = "enforce",  # type: ignore[no-untyped-def]
               max_age: int = 7 * DAY) -> None:
    world.mx(domain, mx)
    world.host(mx)
    world.sts(domain, "v=STSv1; id=1", world.policy(mx, mode=mode, max_age=max_age))


@pytest.mark.rfc("8461 7.1")
async def test_rfc8461_7_1_sni_is_the_mx_hostname(world, clock) -> None:
    """Under ``enforce`` Postfix is told ``servername=hostname``: the SNI it sends is the
    MX host name it connects to (and ``match=`` checks the certificate against it)."""
    sts_domain(world, "example.com", "mx1.example.com")
    engine = make_engine(world, clock)
    answer = (await engine.lookup("example.com")).decode()
    assert "secure" in answer and "match=mx1.example.com" in answer
    assert answer.split(":", 1)[1].rstrip(",").split()[-1] == "servername=hostname"


@pytest.mark.rfc("8461 3.4")
async def test_rfc8461_3_4_subdomain_never_uses_the_parent_policy(world, clock) -> None:
    sts_domain(world, "example.com", "mx1.example.com")
    world.mx("sub.example.com", "mx1.example.com")  # same MX, but no _mta-sts of its own
    engine = make_engine(world, clock)
    parent = (await engine.lookup("example.com")).decode()
    assert "secure match=mx1.example.com" in parent
    child = (await engine.lookup("sub.example.com")).decode()
    assert "secure" not in child, child  # no MTA-STS for the subdomain
    assert world.queries[("_mta-sts.sub.example.com", "TXT")] == 1
    assert world.fetches["sub.example.com"] == 0 and world.fetches["example.com"] == 1
    # nothing looked up or fetched at the parent for the subdomain's sake
    assert world.queries[("_mta-sts.example.com", "TXT")] == 1


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(("mode", "level"), [
    ("enforce", logging.WARNING), ("testing", logging.WARNING), ("none", logging.INFO),
])
async def test_rfc8461_3_3_failed_refresh_alerts_unless_mode_none(world, clock, caplog,
                                                                  mode, level) -> None:
    sts_domain(world, "example.com", "mx1.example.com", mode=mode)
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    world.policies["example.com"] = FetchTlsError("bad cert", url="https://mta-sts.example.com/")
    clock.t += DAY  # the daily proactive refresh is due, and fails
    caplog.set_level(logging.INFO, logger="smtptls")
    assert await Refresher(engine).scan_once() == 1
    records = [r for r in caplog.records if r.getMessage().startswith("proactive refresh failed")]
    assert [r.levelno for r in records] == [level]
    assert (await engine.cache.get("example.com")) is not None  # the cached policy is kept


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("txt", [None, "v=STSv1; id=bad!"], ids=["record-gone", "record-broken"])
async def test_rfc8461_3_3_refresh_without_a_usable_record_alerts(world, clock, caplog,
                                                                  txt) -> None:
    sts_domain(world, "example.com", "mx1.example.com")
    engine = make_engine(world, clock)
    await engine.lookup("example.com")
    world.sts("example.com", txt)  # the TXT record vanished or broke: no refresh possible
    clock.t += DAY
    caplog.set_level(logging.INFO, logger="smtptls")
    assert await Refresher(engine).scan_once() == 1
    records = [r for r in caplog.records if r.getMessage().startswith("proactive refresh failed")]
    assert [r.levelno for r in records] == [logging.WARNING]
    cached = await engine.cache.get("example.com")
    assert cached is not None and cached.policy.mode.value == "enforce"  # still applies (B8)
