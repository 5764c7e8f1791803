"""Exim's answers: the engine's decision rendered for ``${extract{key}{...}}``.

A reader of Exim's ``${extract}`` keyed syntax (``key=value`` separated by whitespace,
a value in double quotes may hold spaces) checks that every answer reads back into
the fields docs/exim.md's configuration uses. The decisions come from the engine over
an in-memory DNS world (conftest.World); the socketmap server answers both map names
on one listener. The same answers drove a real Exim 4.96 in the lab
(tests/e2e/test_exim_destinations.py).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from smtptls.config import Config, PolicydConfig
from smtptls.dnssec import Security
from smtptls.engine.destination import Decision, DecisionKind
from smtptls.net.dns import TlsaRdata
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.services.policyd.exim import MAX_REASON, EximAnswers, exim_answer
from smtptls.services.policyd.socketmap import (
    NetstringDecoder,
    Reply,
    ReplyStatus,
    Request,
    SocketmapServer,
)
from smtptls.store import MemoryPolicyCache

TLSA = (TlsaRdata(3, 1, 1, bytes(32)),)
FIELDS = ("policy", "mode", "mx", "domain", "reason")
_TOKEN = re.compile(r'\s*([^\s=]+)\s*=\s*("(?:[^"\\]|\\.)*"|\S*)')


def read_exim(text: str) -> dict[str, str]:
    """``key=value`` pairs as Exim's ``${extract{key}{...}}`` reads them."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        assert m is not None, f"not key=value at {text[pos:]!r}"
        value = m.group(2)
        out[m.group(1)] = value[1:-1] if value.startswith('"') else value
        pos = m.end()
    return out


def make(world, clock, **policyd) -> EximAnswers:  # type: ignore[no-untyped-def]
    cfg = Config(policyd=PolicydConfig(**policyd))
    engine = PolicyEngine(cfg, dns=world, cache=MemoryPolicyCache(), clock=clock,
                          fetcher=world.fetch)
    return EximAnswers(engine, clock=clock)


async def answer(exim: EximAnswers, key: str) -> dict[str, str]:
    wire = await exim.lookup(key)
    (frame,) = NetstringDecoder(4096).feed(wire)
    reply = Reply.parse(frame.decode())
    assert reply.status is ReplyStatus.OK  # always OK: "no policy" is policy=none
    fields = read_exim(reply.data)
    assert tuple(fields) == FIELDS
    return fields


def enforce_world(world, domain: str = "example.com", *mx: str,  # type: ignore[no-untyped-def]
                  patterns: tuple[str, ...] = ("mx1.example.com",), mode: str = "enforce",
                  security: Security = Security.INSECURE) -> None:
    hosts = mx or ("mx1.example.com",)
    world.mx(domain, *hosts, security=security)
    for h in hosts:
        world.host(h, security=security)
    world.sts(domain, "v=STSv1; id=1", world.policy(*patterns, mode=mode))


@pytest.mark.rfc("8461 4.1")
async def test_rfc8461_4_1_enforce_lists_only_matching_mx_in_preference_order(world, clock) -> None:
    enforce_world(world, "example.com", "mx1.example.com", "evil.example.org",
                  "mx2.example.com", patterns=("*.example.com",))
    got = await answer(make(world, clock), "example.com")
    assert got["policy"] == "enforce"
    assert got["mode"] == "enforce"
    assert got["mx"] == "mx1.example.com:mx2.example.com"
    assert got["domain"] == "example.com"


@pytest.mark.rfc("8461 4.1")
async def test_rfc8461_4_1_wildcard_covers_one_label_only(world, clock) -> None:
    enforce_world(world, "example.com", "a.b.example.com", "mx1.example.com",
                  patterns=("*.example.com",))
    got = await answer(make(world, clock), "example.com")
    assert got["mx"] == "mx1.example.com"


@pytest.mark.rfc("8461 4.1")
async def test_rfc8461_4_1_no_matching_mx_defers(world, clock) -> None:
    enforce_world(world, "example.com", "evil.example.org", patterns=("mx1.example.com",))
    got = await answer(make(world, clock), "example.com")
    assert got["policy"] == "defer"
    assert got["mx"] == "-"
    assert "RFC 8461 4.1" in got["reason"]


@pytest.mark.rfc("8461 2")
async def test_rfc8461_2_dane_destination_with_enforce_policy_stays_dane(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", security=Security.SECURE)
    world.host("mx1.example.com", security=Security.SECURE, tlsa=TLSA)
    world.sts("example.com", "v=STSv1; id=1", world.policy("mx1.example.com"))
    got = await answer(make(world, clock), "example.com")
    assert got["policy"] == "dane-required"
    assert got["mode"] == "enforce"   # the policy is known, and not applied over DANE
    assert got["mx"] == "-"


@pytest.mark.rfc("7672 2.1.1")
async def test_rfc7672_2_1_1_some_hosts_with_dane_is_try_dane(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", "mx2.example.com", security=Security.SECURE)
    world.host("mx1.example.com", security=Security.SECURE, tlsa=TLSA)
    world.host("mx2.example.com", security=Security.SECURE)
    got = await answer(make(world, clock), "example.com")
    assert got["policy"] == "dane"


@pytest.mark.rfc("8461 5")
async def test_rfc8461_5_testing_leaves_exims_defaults(world, clock) -> None:
    enforce_world(world, mode="testing")
    got = await answer(make(world, clock), "example.com")
    assert (got["policy"], got["mode"], got["mx"]) == ("testing", "testing", "-")


@pytest.mark.rfc("8461 5")
async def test_rfc8461_5_strict_testing_is_enforced(world, clock) -> None:
    enforce_world(world, mode="testing")
    got = await answer(make(world, clock, strict_testing=True), "example.com")
    assert (got["policy"], got["mx"]) == ("enforce", "mx1.example.com")


async def test_no_policy_is_none(world, clock) -> None:
    world.mx("example.com", "mx1.example.com")
    world.host("mx1.example.com")
    got = await answer(make(world, clock), "example.com")
    assert (got["policy"], got["mode"]) == ("none", "-")


@pytest.mark.rfc("7672 2.2.1")
async def test_rfc7672_2_2_1_bogus_mx_defers(world, clock) -> None:
    world.mx("example.com", "mx1.example.com", security=Security.BOGUS)
    got = await answer(make(world, clock), "example.com")
    assert got["policy"] == "defer"


@pytest.mark.parametrize(("override", "policy"), [
    ("dane-only", "dane-required"), ("dane", "dane"), ("encrypt", "none"),
    ("secure match=x", "none")])
async def test_overrides_in_postfix_syntax(world, clock, override: str, policy: str) -> None:
    got = await answer(make(world, clock, overrides={"example.com": override}), "example.com")
    assert got["policy"] == policy


@pytest.mark.parametrize("reason", ['a "quoted" \\ reason', "line\nbreak\x00", "x" * 5000])
def test_reason_is_one_bounded_quoted_value(reason: str) -> None:
    text = exim_answer(Decision(DecisionKind.TEMP, None, reason), None)
    got = read_exim(text)
    assert tuple(got) == FIELDS
    assert len(got["reason"]) <= MAX_REASON
    assert all(" " <= c <= "~" for c in text)  # Exim's log escapes anything else


@pytest.mark.parametrize("key", ["", "[192.0.2.1]", ".example.com", "a" * 700, "bad..name"])
async def test_odd_keys_get_an_answer_never_an_error(world, clock, key: str) -> None:
    got = await answer(make(world, clock), key)
    assert got["policy"] in ("none", "defer")


async def test_answers_are_cached_until_the_engine_recheck(world, clock) -> None:
    enforce_world(world)
    exim = make(world, clock)
    assert exim.lookup_cached("example.com") is None
    first = await exim.lookup("example.com")
    queries = sum(world.queries.values())
    assert exim.lookup_cached("EXAMPLE.COM") == first
    assert sum(world.queries.values()) == queries
    clock.t += 4000
    assert exim.lookup_cached("example.com") is None


async def test_both_map_names_on_one_listener(world, clock) -> None:
    enforce_world(world)
    exim = make(world, clock)
    server = SocketmapServer(exim.engine, extra_maps={"exim": exim})
    host, port = await server.listen_tcp("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(host, port)
        replies = []
        for name in ("postfix", "exim", "other"):
            writer.write(Request(name, "example.com").to_bytes())
            await writer.drain()
            head = await reader.readuntil(b":")
            body = await reader.readexactly(int(head[:-1]) + 1)
            replies.append(Reply.parse(body[:-1].decode()))
        writer.close()
    finally:
        await server.close(1.0)
    postfix, exim_reply, other = replies
    assert postfix.to_text() == "OK secure match=mx1.example.com servername=hostname"
    assert read_exim(exim_reply.data)["mx"] == "mx1.example.com"
    assert other.status is ReplyStatus.PERM
