"""``[policyd] postfix_version = "3.10"``: the daemon's answers carry the MTA-STS
attributes Postfix 3.10 reads (the renderer is :mod:`smtptls.services.policyd.postfix310`;
its syntax rules are tested in ``test_postfix310_answers.py``)."""

from __future__ import annotations

import pytest

from smtptls.config import Config, PolicydConfig
from smtptls.dnssec import Security
from smtptls.net.dns import TlsaRdata
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.store import MemoryPolicyCache


def _engine(world, clock, **policyd):  # type: ignore[no-untyped-def]
    cfg = Config(policyd=PolicydConfig(**policyd))
    return PolicyEngine(cfg, dns=world, cache=MemoryPolicyCache(), clock=clock,
                        fetcher=world.fetch)


def _sts(world, mode: str = "enforce") -> None:  # type: ignore[no-untyped-def]
    world.mx("example.com", "mx1.example.com")
    world.host("mx1.example.com")
    world.sts("example.com", "v=STSv1; id=1",
              world.policy("mx1.example.com", "*.example.net", mode=mode))


@pytest.mark.rfc("8460 4.4")
async def test_rfc8460_4_4_enforce_answer_names_its_policy_on_310(world, clock) -> None:
    _sts(world)
    reply = (await _engine(world, clock, postfix_version="3.10").explain("example.com")
             ).reply.to_text()
    assert reply.startswith("OK secure match=mx1.example.com servername=hostname "
                            "policy_type=sts policy_domain=example.com ")
    assert "mx_host_pattern=mx1.example.com mx_host_pattern=*.example.net" in reply
    assert "{ policy_string = mode: enforce }" in reply
    assert "{ policy_string = max_age: 86400 }" in reply


async def test_37_answers_stay_plain(world, clock) -> None:
    _sts(world)
    reply = (await _engine(world, clock).explain("example.com")).reply.to_text()
    assert reply == "OK secure match=mx1.example.com servername=hostname"


@pytest.mark.rfc("8461 2")
async def test_rfc8461_2_dane_answers_carry_no_sts_attributes(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", security=Security.SECURE)
    world.host("mx1.example.com", security=Security.SECURE,
               tlsa=(TlsaRdata(3, 1, 1, bytes(32)),))
    world.sts("example.com", "v=STSv1; id=1", world.policy("mx1.example.com"))
    reply = (await _engine(world, clock, postfix_version="3.10").explain("example.com")
             ).reply.to_text()
    assert reply == "OK dane-only"


@pytest.mark.rfc("8461 5")
async def test_rfc8461_5_testing_reports_is_may_with_the_policy(world, clock) -> None:
    _sts(world, mode="testing")
    off = (await _engine(world, clock, postfix_version="3.10").explain("example.com"))
    assert off.reply.to_text() == "NOTFOUND "  # off by default: deliver as without
    on = await _engine(world, clock, postfix_version="3.10",
                       testing_reports=True).explain("example.com")
    text = on.reply.to_text()
    assert text.startswith("OK may policy_type=sts policy_domain=example.com ")
    assert "{ policy_string = mode: testing }" in text and "match=" not in text
    # on 3.7 the setting changes nothing: 3.7 refuses the attributes
    plain = await _engine(world, clock, testing_reports=True).explain("example.com")
    assert plain.reply.to_text() == "NOTFOUND "
