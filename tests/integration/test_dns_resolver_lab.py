"""smtptls.net.dns against the lab's validating resolver, and a resolver that never answers.

Proves the DNSSEC status of every kind of answer (RFC 7672 §2.1.1): positive and negative
answers in a signed zone are ``secure``, in an unsigned zone ``insecure``; a zone with
broken signatures gives SERVFAIL, which is ``DnsBogus``; no answer is ``DnsTimeout``.
"""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from smtptls.config import DnsConfig
from smtptls.dnssec import Security
from smtptls.errors import DnsBogus, DnsError, DnsLimitError, DnsTimeout
from smtptls.net.dns import DnsResolver, MxHost, TlsaRdata, run_sync


@pytest.fixture(scope="module")
def lab_env(request):
    try:
        lab = request.getfixturevalue("lab")
    except pytest.FixtureLookupError:
        pytest.skip("test lab not available (tests/lab fixtures)")
    from tests.lab import LabDomain, LabMx

    return lab, LabDomain, LabMx


def resolver(lab, **kw) -> DnsResolver:
    host, port = lab.resolver
    return DnsResolver(DnsConfig(nameservers=(f"{host}:{port}",), timeout=3, **kw))


def uniq(prefix: str) -> str:
    return f"{prefix}-{random.randint(0, 10**8):08d}"


@pytest.mark.lab
@pytest.mark.rfc("7672 2.1.1")
@pytest.mark.parametrize("zone_attr, security", [
    ("ZONE_SECURE", Security.SECURE), ("ZONE_INSECURE", Security.INSECURE)],
    ids=["signed-zone", "unsigned-zone"])
async def test_rfc7672_2_1_1_answers_carry_security(lab_env, zone_attr, security):
    lab, LabDomain, LabMx = lab_env
    name = f"{uniq('sec')}.{getattr(lab, zone_attr)}"
    domain = lab.add(LabDomain(name, mx=[LabMx(f"mx1.{name}", tlsa=["3 1 1 auto"])],
                                  txt={"": ["hello"]}))
    r = resolver(lab)
    mx = await r.mx(name)
    assert mx.records == (MxHost(10, f"mx1.{name}"),) and mx.security is security
    a = await r.a(f"mx1.{name}")
    assert a.records == (domain.mx[0].address,) and a.security is security
    tlsa = await r.tlsa(f"_25._tcp.mx1.{name}")
    assert len(tlsa.records) == 1 and isinstance(tlsa.records[0], TlsaRdata)
    assert tlsa.records[0].usage == 3 and len(tlsa.records[0].data) == 32
    txt = await r.txt(name)
    assert txt.records == ("hello",) and txt.security is security
    nodata = await r.aaaa(f"mx1.{name}")
    assert nodata.records == () and not nodata.nxdomain and nodata.security is security
    nx = await r.txt(f"nothing-here.{name}")
    assert nx.records == () and nx.nxdomain and nx.security is security


@pytest.mark.lab
@pytest.mark.rfc("7672 2.1.1")
async def test_rfc7672_2_1_1_bogus_zone_is_servfail(lab_env):
    lab, LabDomain, _ = lab_env
    name = f"{uniq('bogus')}.{lab.ZONE_BOGUS}"
    lab.add(LabDomain(name, txt={"": ["x"]}))
    r = resolver(lab)
    with pytest.raises(DnsBogus):
        await r.txt(name)
    answer = await r.try_query(name, "TXT")
    assert answer.security is Security.BOGUS and isinstance(answer.error, DnsBogus)


@pytest.mark.lab
async def test_cname_chain_bound_enforced_on_live_answer(lab_env):
    lab, LabDomain, _ = lab_env
    base = f"{uniq('chain')}.{lab.ZONE_INSECURE}"
    records = [(f"c{i}.{base}", "CNAME", f"c{i + 1}.{base}.") for i in range(4)]
    lab.add(LabDomain(base, records=[*records, (f"c4.{base}", "TXT", '"end"')]))
    assert (await resolver(lab).txt(f"c0.{base}")).records == ("end",)
    with pytest.raises(DnsLimitError):
        await resolver(lab, max_cname_chain=2).txt(f"c0.{base}")


@pytest.mark.lab
async def test_record_count_bound_enforced_on_live_answer(lab_env):
    lab, LabDomain, _ = lab_env
    name = f"{uniq('many')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(name, txt={"": [f"r{i}" for i in range(10)]}))
    assert len((await resolver(lab).txt(name)).records) == 10
    with pytest.raises(DnsLimitError):
        await resolver(lab, max_records=5).txt(name)


@pytest.mark.lab
def test_sync_wrapper_for_scripts(lab_env):
    lab, LabDomain, _ = lab_env
    name = f"{uniq('sync')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(name, txt={"_mta-sts": ["v=STSv1; id=7"]}))
    answer = run_sync(lambda: resolver(lab).txt(f"_mta-sts.{name}"))
    assert answer.records == ("v=STSv1; id=7",) and answer.secure


async def test_silent_resolver_times_out():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # receives queries, never answers
    try:
        port = sock.getsockname()[1]
        r = DnsResolver(DnsConfig(nameservers=(f"127.0.0.1:{port}",), timeout=0.5))
        started = asyncio.get_running_loop().time()
        with pytest.raises(DnsTimeout):
            await r.txt("_mta-sts.example.com")
        assert asyncio.get_running_loop().time() - started < 3
        answer = await r.try_query("_mta-sts.example.com", "TXT")
        assert answer.security is Security.INDETERMINATE
        assert isinstance(answer.error, DnsError)
    finally:
        sock.close()
