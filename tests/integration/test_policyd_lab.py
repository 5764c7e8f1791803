"""The policy daemon against the lab's real DNSSEC world (NSD + validating Unbound) and
HTTPS policy hosts, queried over a real socketmap connection.

Each case publishes a domain in the lab and asserts the socketmap reply: DANE first
(secure MX RRset + DNSSEC-validated TLSA), then MTA-STS, then NOTFOUND.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from smtptls.config import CacheConfig, Config, DnsConfig, FetchConfig, PolicydConfig
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.services.policyd.socketmap import NetstringDecoder, Request, SocketmapServer
from smtptls.store import MemoryPolicyCache

pytestmark = pytest.mark.lab

_n = itertools.count()


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}pd"


def policy(*mx: str, mode: str = "enforce") -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), "max_age: 86400"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def lab_env(request):
    try:
        lab = request.getfixturevalue("lab")
    except pytest.FixtureLookupError:  # pragma: no cover - the lab plugin is loaded
        pytest.skip("test lab not available")
    from tests.lab import LabDomain, LabMx, PolicyHost

    return lab, LabDomain, LabMx, PolicyHost


@pytest.fixture
async def policyd(lab_env):
    lab = lab_env[0]
    host, port = lab.resolver
    cfg = Config(dns=DnsConfig(nameservers=(f"{host}:{port}",), timeout=3.0),
                 fetch=FetchConfig(ca_file=str(lab.ca_file), connect_timeout=3.0,
                                   total_timeout=5.0),
                 cache=CacheConfig(lru_size=1000),
                 policyd=PolicydConfig(testing_answer=None))
    from smtptls.net.dns import DnsResolver

    engine = PolicyEngine(cfg, dns=DnsResolver(cfg.dns), cache=MemoryPolicyCache())
    server = SocketmapServer(engine)
    addr = await server.listen_tcp("127.0.0.1", 0)

    async def ask(key: str) -> str:
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(Request("postfix", key).to_bytes())
        dec = NetstringDecoder(100000)
        async with asyncio.timeout(30):
            while True:
                frames = dec.feed(await reader.read(65536))
                if frames:
                    writer.close()
                    return frames[0].decode()

    ask.engine = engine  # type: ignore[attr-defined]
    yield ask
    await server.close(1.0)


async def test_dane_every_mx_with_tlsa_is_dane_only(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, _ = lab_env
    d = f"{uniq('dane')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="self-signed", tlsa=["3 1 1 auto"]),
                             LabMx(f"mx2.{d}", pref=20, cert="good", tlsa=["3 1 1 auto"])]))
    assert await policyd(d) == "OK dane-only"


@pytest.mark.rfc("8461 2")
async def test_rfc8461_2_dane_beats_mta_sts(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, PolicyHost = lab_env
    d = f"{uniq('both')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", tlsa=["3 1 1 auto"])],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=policy(f"mx1.{d}"))))
    assert await policyd(d) == "OK dane-only"


async def test_dane_some_mx_with_tlsa_is_dane(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, _ = lab_env
    d = f"{uniq('mixed')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", tlsa=["3 1 1 auto"]), LabMx(f"mx2.{d}", pref=20)]))
    assert await policyd(d) == "OK dane"


@pytest.mark.rfc("7672 2.1.2")
async def test_rfc7672_2_1_2_only_mx_host_bogus_defers(lab_env, policyd) -> None:
    # the one MX host's lookups are bogus: it must not be used, so nothing can be
    lab, LabDomain, LabMx, _ = lab_env
    d = uniq("bog")
    lab.add(LabDomain(f"{d}.{lab.ZONE_SECURE}",
                      mx=[LabMx(f"mx1.{d}.{lab.ZONE_BOGUS}", tlsa=["3 1 1 auto"])]))
    assert (await policyd(f"{d}.{lab.ZONE_SECURE}")).startswith("TEMP no MX host can be used")


@pytest.mark.rfc("7672 2.1.2")
async def test_rfc7672_2_1_2_bogus_mx_host_beside_a_good_one_is_dane(lab_env, policyd) -> None:
    # Postfix's "dane" level skips the bogus host and uses the other one
    lab, LabDomain, LabMx, _ = lab_env
    d = uniq("bog2")
    lab.add(LabDomain(f"{d}.{lab.ZONE_SECURE}",
                      mx=[LabMx(f"mx1.{d}.{lab.ZONE_BOGUS}", tlsa=["3 1 1 auto"]),
                          LabMx(f"mx2.{d}.{lab.ZONE_SECURE}", pref=20)]))
    assert await policyd(f"{d}.{lab.ZONE_SECURE}") == "OK dane"


@pytest.mark.rfc("7672 2.2.1")
async def test_rfc7672_2_2_1_insecure_zone_tlsa_ignored_mta_sts_applies(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, PolicyHost = lab_env
    d = f"{uniq('ins')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", tlsa=["3 1 1 auto"])],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=policy(f"mx1.{d}"))))
    assert await policyd(d) == f"OK secure match=mx1.{d} servername=hostname"


@pytest.mark.rfc("8461 4.1")
async def test_rfc8461_4_1_wildcard_policy_lists_matching_mx_hosts(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, PolicyHost = lab_env
    d = f"{uniq('wild')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"a.{d}"), LabMx(f"b.c.{d}", pref=20)],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=policy(f"*.{d}"))))
    assert await policyd(d) == f"OK secure match=a.{d} servername=hostname"


@pytest.mark.rfc("8461 5")
async def test_rfc8461_5_testing_and_no_policy_are_notfound(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, PolicyHost = lab_env
    t = f"{uniq('testing')}.{lab.ZONE_INSECURE}"
    n = f"{uniq('plain')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(t, mx=[LabMx(f"mx1.{t}")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=policy(f"mx1.{t}", mode="testing"))),
            LabDomain(n, mx=[LabMx(f"mx1.{n}")]))
    assert await policyd(t) == "NOTFOUND "
    assert await policyd(n) == "NOTFOUND "


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_fetch_failure_nothing_cached_is_notfound(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, PolicyHost = lab_env
    d = f"{uniq('fail')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=policy(f"mx1.{d}"), cert="wrong-name")))
    assert await policyd(d) == "NOTFOUND "


async def test_secure_mx_without_tlsa_falls_to_mta_sts(lab_env, policyd) -> None:
    lab, LabDomain, LabMx, PolicyHost = lab_env
    d = f"{uniq('sts')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=policy(f"mx1.{d}"))))
    assert await policyd(d) == f"OK secure match=mx1.{d} servername=hostname"
    assert await policyd(f"{d}.") == f"OK secure match=mx1.{d} servername=hostname"
    assert await policyd(d.upper()) == f"OK secure match=mx1.{d} servername=hostname"
