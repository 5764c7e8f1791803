"""The destination engine end to end over an in-memory DNS: CNAME'd MX hosts (RFC 7672
§2.2.3), hosts in other zones, and the decision the policy daemon answers with.

The lookups are those of :func:`smtptls.engine.gather.lookup_destination` (the one
gatherer every entry point uses); the queries made are asserted, so the test proves
where TLSA records are looked for, not only what comes out.
"""

from __future__ import annotations

import pytest

from smtptls.config import Config
from smtptls.dnssec import Security
from smtptls.engine.destination import DecisionKind, NextHop, decide
from smtptls.engine.gather import lookup_destination, to_facts
from smtptls.net.dns import TlsaRdata
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.store import MemoryPolicyCache

S, INS = Security.SECURE, Security.INSECURE
TLSA = (TlsaRdata(3, 1, 1, bytes(32)),)
D = "example.com"


def _cname_world(world, *, alias_sec: Security, target_sec: Security,
                 tlsa_at: str | None) -> None:
    """example.com MX mx.example.com, a CNAME for real.example.net."""
    world.mx(D, "mx.example.com", security=S)
    world.cname("mx.example.com", "real.example.net", security=alias_sec)
    world.host("real.example.net", security=target_sec)
    for name in ("real.example.net", "mx.example.com"):
        world.records.pop((f"_25._tcp.{name}", "TLSA"), None)
    if tlsa_at is not None:
        world.records[(f"_25._tcp.{tlsa_at}", "TLSA")] = (TLSA, S, 3600)


async def _decide(world):  # type: ignore[no-untyped-def]
    found = await lookup_destination(world, D)
    return found, decide(to_facts(found, NextHop.parse(D)))


@pytest.mark.rfc("7672 2.2.3")
async def test_rfc7672_2_2_3_secure_chain_tlsa_at_expanded_name(world) -> None:
    _cname_world(world, alias_sec=S, target_sec=S, tlsa_at="real.example.net")
    found, decision = await _decide(world)
    entry = found.dane.entries[0]
    assert entry.tlsa_base == "real.example.net" and entry.sni == "real.example.net"
    assert decision.kind is DecisionKind.DANE_ONLY


@pytest.mark.rfc("7672 2.2.3")
async def test_rfc7672_2_2_3_secure_chain_falls_back_to_original_name(world) -> None:
    _cname_world(world, alias_sec=S, target_sec=S, tlsa_at="mx.example.com")
    found, decision = await _decide(world)
    # the expanded name first, then the original one (RFC 7671 §7)
    assert world.queries[("_25._tcp.real.example.net", "TLSA")] == 1
    assert found.dane.entries[0].tlsa_base == "mx.example.com"
    assert decision.kind is DecisionKind.DANE_ONLY


@pytest.mark.rfc("7672 2.2.3")
async def test_rfc7672_2_2_3_insecure_target_uses_original_name_only(world) -> None:
    # a secure alias into an unsigned zone: the expanded name cannot be trusted
    _cname_world(world, alias_sec=S, target_sec=INS, tlsa_at="real.example.net")
    found, decision = await _decide(world)
    assert world.queries[("_25._tcp.real.example.net", "TLSA")] == 0
    assert world.queries[("_25._tcp.mx.example.com", "TLSA")] == 1
    assert decision.kind is DecisionKind.NOTFOUND  # no secure TLSA at the original name


@pytest.mark.rfc("7672 2.2.3")
async def test_rfc7672_2_2_3_insecure_alias_no_dane_no_tlsa_query(world) -> None:
    _cname_world(world, alias_sec=INS, target_sec=S, tlsa_at="real.example.net")
    _, decision = await _decide(world)
    assert not any(rdtype == "TLSA" for (_, rdtype) in world.queries)
    assert decision.kind is DecisionKind.NOTFOUND


@pytest.mark.rfc("7672 2.2.3")
async def test_rfc7672_2_2_3_never_an_intermediate_name(world) -> None:
    # mx.example.com -> mid.example.org -> real.example.net, TLSA only at the middle
    world.mx(D, "mx.example.com", security=S)
    world.cname("mx.example.com", "mid.example.org", security=S)
    world.cname("mid.example.org", "real.example.net", security=S)
    world.host("real.example.net", security=S)
    world.records.pop(("_25._tcp.real.example.net", "TLSA"), None)
    world.records[("_25._tcp.mid.example.org", "TLSA")] = (TLSA, S, 3600)
    _, decision = await _decide(world)
    assert world.queries[("_25._tcp.mid.example.org", "TLSA")] == 0
    assert decision.kind is DecisionKind.NOTFOUND


@pytest.mark.rfc("8461 2")
async def test_rfc8461_2_cname_mx_with_tlsa_beats_enforce_policy(world, clock) -> None:
    # defect of a daemon that looks only at _25._tcp.<MX name>: it answered "secure"
    _cname_world(world, alias_sec=S, target_sec=S, tlsa_at="real.example.net")
    world.sts(D, "v=STSv1; id=1", world.policy("mx.example.com"))
    engine = PolicyEngine(Config(), dns=world, cache=MemoryPolicyCache(), clock=clock,
                          fetcher=world.fetch)
    explanation = await engine.explain(D)
    assert explanation.reply.to_text() == "OK dane-only"


@pytest.mark.rfc("7672 2.2.1")
async def test_rfc7672_2_2_1_insecure_mx_makes_no_host_lookups(world) -> None:
    world.mx(D, "mx1.example.com", security=INS)
    world.host("mx1.example.com", security=S, tlsa=TLSA)
    found, decision = await _decide(world)
    assert [k for k in world.queries if k[1] != "MX"] == []
    assert decision.kind is DecisionKind.NOTFOUND
    assert found.dane.reason == "mx-insecure"


@pytest.mark.rfc("7672 2.2.2")
async def test_rfc7672_2_2_2_address_before_tlsa_insecure_address_no_tlsa(world) -> None:
    # a secure MX RRset naming a host in an unsigned zone: its A/AAAA answer is
    # insecure, so its TLSA RRset is not even queried
    world.mx(D, "mx1.unsigned.example", security=S)
    world.host("mx1.unsigned.example", security=INS, tlsa=TLSA)
    _, decision = await _decide(world)
    assert world.queries[("_25._tcp.mx1.unsigned.example", "TLSA")] == 0
    assert decision.kind is DecisionKind.NOTFOUND


@pytest.mark.rfc("7672 2.2.1")
async def test_rfc7672_2_2_1_mx_hosts_sorted_by_preference(world) -> None:
    world.mx(D, "b.example.com", "a.example.com", security=S)
    world.records[(D, "MX")] = ((*reversed(world.records[(D, "MX")][0]),), S, 3600)
    world.host("a.example.com", security=S, tlsa=TLSA)
    world.host("b.example.com", security=S, tlsa=TLSA)
    found, _ = await _decide(world)
    prefs = [found.preferences[h] for h in found.hosts]
    assert prefs == sorted(prefs)
