"""MTA-STS discovery and policy fetch against real servers on loopback (RFC 8461 §3).

Two kinds of peers:

- the test lab (``lab`` fixture, tests/lab/API.md): NSD + validating Unbound + lab CA +
  HTTPS policy hosts. The RFC 8461 §3.1/§3.3 cases and the corpus ``lookup_and_fetch``
  vectors run there.
- a small HTTP-edge host started here: a loopback DNS responder and an aiohttp HTTPS
  server whose handlers misbehave on purpose (chunked bodies growing past the cap,
  gzip bombs, dripping bodies, cookies), for the transport limits the lab's policy
  hosts do not model. It listens on a random 127.254.x.y:443.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import ssl

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trustme
from aiohttp import web

from smtptls.config import DnsConfig, FetchConfig
from smtptls.dnssec import Security
from smtptls.engine.mtasts_discovery import Outcome, discover
from smtptls.errors import (
    DnsBogus,
    FetchContentTypeError,
    FetchError,
    FetchStatusError,
    FetchTimeoutError,
    FetchTlsError,
    FetchTooLargeError,
    MultipleRecordsError,
    PolicySyntaxError,
    StsRecordError,
)
from smtptls.mtasts import Mode, parse_policy, parse_txt_records
from smtptls.net.dns import DnsResolver
from smtptls.net.https import TlsFailure, fetch_policy
from smtptls.store import MemoryPolicyCache

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.{d}\nmax_age: 86400\n"


# =========================================================================================
# Part 1: the HTTP-edge host (no lab needed)
# =========================================================================================

EDGE_ZONE = "edge.test"
EDGE_CASES = ("ok", "cookie", "chunked-big", "gzip-bomb", "drip", "understated",
              "auth-challenge", "gzip-ok")


class _EdgeDns(asyncio.DatagramProtocol):
    """Answers A for mta-sts.<case>.edge.test with the edge host's address."""

    def __init__(self, address: str) -> None:
        self.address = address

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data, addr) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        resp = dns.message.make_response(query)
        q = query.question[0]
        name = q.name.to_text()
        if name.endswith(f".{EDGE_ZONE}.") and name.startswith("mta-sts."):
            if q.rdtype == dns.rdatatype.A:
                resp.answer.append(dns.rrset.from_text(name, 60, "IN", "A", self.address))
        else:
            resp.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(resp.to_wire(), addr)


class EdgeHost:
    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        case = request.host.split(".")[1]
        self.requests.append({"case": case, **{k.lower(): v for k, v in request.headers.items()}})
        body = POLICY.format(d=f"{case}.{EDGE_ZONE}")
        if case == "cookie":
            resp = web.Response(text=body, content_type="text/plain")
            resp.set_cookie("session", "secret")
            return resp
        if case == "auth-challenge":
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        if case == "chunked-big":
            # RFC 8461 §3.3 / corpus chunked-overlength.loc: no Content-Length, grows
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                for _ in range(40):
                    await resp.write(b"# " + b"x" * 4093 + b"\n")
            except (ConnectionError, RuntimeError):
                pass
            return resp
        if case in ("gzip-bomb", "gzip-ok"):
            raw = body.encode() + (b"# " + b"0" * 2_000_000 + b"\n" if case == "gzip-bomb"
                                   else b"")
            return web.Response(body=gzip.compress(raw), headers={
                "Content-Type": "text/plain", "Content-Encoding": "gzip"})
        if case == "drip":
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            try:
                for line in body.splitlines(keepends=True):
                    await resp.write(line.encode())
                    await asyncio.sleep(0.6)
            except (ConnectionError, RuntimeError):
                pass
            return resp
        if case == "understated":
            # Content-Length claims less than is sent: only the declared bytes count
            return web.Response(body=body.encode() + b"x" * 200_000,
                                headers={"Content-Type": "text/plain",
                                         "Content-Length": str(len(body))})
        return web.Response(text=body, content_type="text/plain")


@pytest.fixture(scope="module")
async def edge():
    ca = trustme.CA()
    address = f"127.254.{random.randint(1, 254)}.{random.randint(1, 254)}"
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _EdgeDns(address),
                                                       local_addr=("127.0.0.1", 0))
    dns_port = transport.get_extra_info("sockname")[1]
    cert = ca.issue_cert(*(f"mta-sts.{c}.{EDGE_ZONE}" for c in EDGE_CASES))
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(sctx)
    host = EdgeHost()
    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", host.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, address, 443, ssl_context=sctx)
    try:
        await site.start()
    except OSError as exc:
        transport.close()
        await runner.cleanup()
        pytest.skip(f"cannot listen on {address}:443: {exc}")
    with ca.cert_pem.tempfile() as ca_file:
        host.resolver = DnsResolver(DnsConfig(nameservers=(f"127.0.0.1:{dns_port}",),
                                              timeout=2))
        host.config = FetchConfig(ca_file=ca_file, connect_timeout=2, total_timeout=2)
        yield host
    await runner.cleanup()
    transport.close()


async def edge_fetch(edge, case, **config):
    cfg = edge.config if not config else FetchConfig(
        **{**{f: getattr(edge.config, f) for f in ("ca_file", "connect_timeout",
                                                   "total_timeout", "max_body")},
           **config})
    return await fetch_policy(f"{case}.{EDGE_ZONE}", config=cfg, resolver=edge.resolver)


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_distinct_user_agent_no_credentials(edge):
    result = await edge_fetch(edge, "ok")
    assert parse_policy(result.text).mode is Mode.ENFORCE
    seen = [r for r in edge.requests if r["case"] == "ok"][-1]
    assert seen["user-agent"].startswith("smtptls-mta-sts/")
    assert "authorization" not in seen and "cookie" not in seen


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_cookies_not_honoured(edge):
    await edge_fetch(edge, "cookie")
    await edge_fetch(edge, "cookie")
    sent = [r for r in edge.requests if r["case"] == "cookie"]
    assert len(sent) >= 2 and all("cookie" not in r for r in sent)


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_auth_challenge_not_answered(edge):
    with pytest.raises(FetchStatusError) as info:
        await edge_fetch(edge, "auth-challenge")
    assert info.value.status == 401
    assert all("authorization" not in r for r in edge.requests)


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_chunked_body_over_cap(edge):
    with pytest.raises(FetchTooLargeError, match="cap"):
        await edge_fetch(edge, "chunked-big")


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_decompressed_size_is_capped(edge):
    with pytest.raises(FetchTooLargeError):
        await edge_fetch(edge, "gzip-bomb")
    ok = await edge_fetch(edge, "gzip-ok")
    assert parse_policy(ok.text).mx == (f"mx1.gzip-ok.{EDGE_ZONE}",)


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_understated_content_length_never_overreads(edge):
    # A server sending more than it declared: either only the declared bytes are used,
    # or the response is refused as malformed, with a short message either way.
    try:
        result = await edge_fetch(edge, "understated")
    except FetchError as exc:
        assert len(str(exc)) < 400
    else:
        assert len(result.text) < 200 and parse_policy(result.text).mode is Mode.ENFORCE


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_dripping_body_hits_total_timeout(edge):
    with pytest.raises(FetchTimeoutError):
        await edge_fetch(edge, "drip", total_timeout=1.0, connect_timeout=1.0)


async def test_body_cap_is_configurable(edge):
    with pytest.raises(FetchTooLargeError):
        await edge_fetch(edge, "ok", max_body=20)


# =========================================================================================
# Part 2: the lab (validating resolver, lab CA, policy hosts)
# =========================================================================================


@pytest.fixture(scope="module")
def lab_env(request):
    try:
        lab = request.getfixturevalue("lab")
    except pytest.FixtureLookupError:
        pytest.skip("test lab not available (tests/lab fixtures)")
    from tests.lab import LabDomain, PolicyHost

    return lab, LabDomain, PolicyHost


def _uniq(prefix: str) -> str:
    return f"{prefix}-{random.randint(0, 10**8):08d}"


def lab_resolver(lab, timeout: float = 3.0) -> DnsResolver:
    host, port = lab.resolver
    return DnsResolver(DnsConfig(nameservers=(f"{host}:{port}",), timeout=timeout))


def lab_fetch_config(lab, **kw) -> FetchConfig:
    return FetchConfig(ca_file=str(lab.ca_file), connect_timeout=kw.pop("connect", 2.0),
                       total_timeout=kw.pop("total", 3.0), **kw)


def add_policy_domain(lab_env, prefix, *, zone=None, txt=("v=STSv1; id=1",), **host):
    lab, LabDomain, PolicyHost = lab_env
    name = f"{_uniq(prefix)}.{zone or lab.ZONE_INSECURE}"
    body = host.pop("body", POLICY.format(d=name))
    policy = None if host.pop("no_host", False) else PolicyHost(body=body, **host)
    lab.add(LabDomain(name, txt={"_mta-sts": list(txt)} if txt is not None else {},
                      policy=policy))
    return name


async def lab_fetch(lab_env, name, **kw):
    lab = lab_env[0]
    return await fetch_policy(name, config=lab_fetch_config(lab, **kw),
                              resolver=lab_resolver(lab))


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_valid_policy(lab_env):
    name = add_policy_domain(lab_env, "valid")
    result = await lab_fetch(lab_env, name)
    assert result.status == 200
    assert result.url == f"https://mta-sts.{name}/.well-known/mta-sts.txt"
    policy = parse_policy(result.text)
    assert policy.mode is Mode.ENFORCE and policy.mx == (f"mx1.{name}",)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_intermediate_chain_accepted(lab_env):
    name = add_policy_domain(lab_env, "chain", cert="intermediate")
    assert parse_policy((await lab_fetch(lab_env, name)).text).mode is Mode.ENFORCE


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "cert, reason",
    [
        ("wrong-name", TlsFailure.WRONG_NAME),
        ("expired", TlsFailure.EXPIRED),
        ("untrusted", TlsFailure.UNTRUSTED),
        ("self-signed", TlsFailure.UNTRUSTED),
        ("not-yet-valid", TlsFailure.NOT_YET_VALID),
    ],
    ids=["wrong-name", "expired", "untrusted-ca", "self-signed", "not-yet-valid"],
)
async def test_rfc8461_3_3_certificate_must_be_valid(lab_env, cert, reason):
    name = add_policy_domain(lab_env, f"cert-{cert}", cert=cert)
    with pytest.raises(FetchTlsError) as info:
        await lab_fetch(lab_env, name)
    assert info.value.reason is reason


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_rfc8461_3_3_redirect_not_followed(lab_env, status):
    target = add_policy_domain(lab_env, "redirect-target")
    name = add_policy_domain(
        lab_env, "redirect", status=status,
        redirect_to=f"https://mta-sts.{target}/.well-known/mta-sts.txt")
    # the target serves a valid policy: following the redirect would succeed
    with pytest.raises(FetchStatusError) as info:
        await lab_fetch(lab_env, name)
    assert info.value.status == status and "not followed" in str(info.value)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("status", [403, 404, 500, 503])
async def test_rfc8461_3_3_only_200_yields_policy(lab_env, status):
    name = add_policy_domain(lab_env, f"status{status}", status=status)
    with pytest.raises(FetchStatusError) as info:
        await lab_fetch(lab_env, name)
    assert info.value.status == status


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "content_type, ok",
    [
        ("text/plain", True),
        ("text/plain; charset=utf-8", True),
        ("TEXT/PLAIN;charset=UTF-8", True),
        ("text/html", False),
        ("application/octet-stream", False),
        ("application/json+text/plain", False),
        (None, False),
    ],
    ids=["plain", "charset", "upper-case", "html", "octet-stream", "json-plus", "missing"],
)
async def test_rfc8461_3_3_media_type_text_plain(lab_env, content_type, ok):
    name = add_policy_domain(lab_env, "ctype", content_type=content_type)
    if ok:
        assert parse_policy((await lab_fetch(lab_env, name)).text).mode is Mode.ENFORCE
    else:
        with pytest.raises(FetchContentTypeError):
            await lab_fetch(lab_env, name)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_oversized_body_with_content_length(lab_env):
    # corpus static-overlength.loc (131193 bytes) and mox's 65538-byte body
    name = add_policy_domain(lab_env, "overlength", body_size=131193)
    with pytest.raises(FetchTooLargeError):
        await lab_fetch(lab_env, name)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_oversized_chunked_body(lab_env):
    # corpus chunked-overlength.loc: no Content-Length, the body grows past 64 KiB
    name = add_policy_domain(lab_env, "chunked-over", body_size=70000, chunked=True)
    with pytest.raises(FetchTooLargeError):
        await lab_fetch(lab_env, name)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_chunked_policy_within_cap(lab_env):
    name = add_policy_domain(lab_env, "chunked-ok", chunked=True, chunk_size=16)
    assert parse_policy((await lab_fetch(lab_env, name)).text).mode is Mode.ENFORCE


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "host",
    [{"delay": 3.0}, {"body_delay": 0.7, "chunk_size": 20}],
    ids=["slow-head", "trickling-body"],
)
async def test_rfc8461_3_3_slow_server_times_out(lab_env, host):
    name = add_policy_domain(lab_env, "slow", **host)
    with pytest.raises(FetchTimeoutError):
        await lab_fetch(lab_env, name, connect=1.0, total=1.0)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_connection_refused_and_aborted(lab_env):
    refused = add_policy_domain(lab_env, "refused", reachable=False)
    with pytest.raises(FetchError, match="connect"):
        await lab_fetch(lab_env, refused)
    aborted = add_policy_domain(lab_env, "aborted", body_size=4000, abort_after=100)
    with pytest.raises(FetchError):
        await lab_fetch(lab_env, aborted)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.2")
async def test_rfc8461_3_2_malformed_policy_is_no_policy(lab_env):
    name = add_policy_domain(lab_env, "malformed", body="bogus")
    text = (await lab_fetch(lab_env, name)).text
    with pytest.raises(PolicySyntaxError):
        parse_policy(text)
    d = await discover(name, dns=lab_resolver(lab_env[0]), cache=MemoryPolicyCache(),
                       fetch_config=lab_fetch_config(lab_env[0]), now=1e9)
    assert d.outcome is Outcome.FETCH_FAILED and isinstance(d.fetch_error, PolicySyntaxError)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_policy_host_nxdomain(lab_env):
    name = add_policy_domain(lab_env, "nohost", no_host=True)
    with pytest.raises(FetchError, match="NXDOMAIN|no address"):
        await lab_fetch(lab_env, name)


# --- TXT lookup: corpus lookup_and_fetch vectors -------------------------------------------


def _txt_vectors(corpus):
    data = json.loads((corpus / "vectors" / "mtasts_tlsrpt_conformance.json").read_text())
    return [v for v in data["lookup_and_fetch"] if v["kind"] == "txt_lookup"]


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
async def test_rfc8461_3_1_corpus_txt_lookup(lab_env, corpus):
    lab, LabDomain, _ = lab_env
    vectors = _txt_vectors(corpus)
    assert len(vectors) >= 9
    resolver = lab_resolver(lab)
    checked = 0
    for v in vectors:
        if v["cname"]:
            continue  # CNAME vectors: test_rfc8461_3_1_cname_chain_followed
        slug = v["domain"].split(".")[0]
        if slug == "temperror":
            name = f"{_uniq(slug)}.{lab.ZONE_BOGUS}"
            lab.add(LabDomain(name, txt={"_mta-sts": ["v=STSv1; id=1"]}))
            with pytest.raises(DnsBogus):
                await resolver.txt(f"_mta-sts.{name}")
            checked += 1
            continue
        name = f"{_uniq(slug)}.{lab.ZONE_SECURE}"
        lab.add(LabDomain(name, txt={"_mta-sts": v["txt"]} if v["txt"] else {}))
        answer = await resolver.txt(f"_mta-sts.{name}")
        assert answer.security is Security.SECURE, v
        expected = v["expected"]
        if expected.startswith("no record"):
            assert parse_txt_records(answer.records) is None, v
        elif expected.startswith("record id="):
            record = parse_txt_records(answer.records)
            assert record is not None and record.id == expected.split("=")[1].split()[0], v
        elif "multiple" in expected:
            with pytest.raises(MultipleRecordsError):
                parse_txt_records(answer.records)
        else:
            with pytest.raises(StsRecordError):
                parse_txt_records(answer.records)
        checked += 1
    assert checked == len([v for v in vectors if not v["cname"]])


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
async def test_rfc8461_3_1_txt_strings_concatenated(lab_env):
    lab, LabDomain, _ = lab_env
    name = f"{_uniq('split')}.{lab.ZONE_INSECURE}"
    # one TXT record published as two character-strings
    lab.add(LabDomain(name, txt={"_mta-sts": [("v=STSv1; ", "id=split1")]}))
    answer = await lab_resolver(lab).txt(f"_mta-sts.{name}")
    assert answer.records == ("v=STSv1; id=split1",)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
async def test_rfc8461_3_1_cname_chain_followed(lab_env):
    """Corpus a.cnames.example: _mta-sts.a -> _mta-sts.b -> _mta-sts.c (TXT id=1)."""
    lab, LabDomain, PolicyHost = lab_env
    zone = lab.ZONE_SECURE
    a, b, c = (f"{_uniq(x)}.{zone}" for x in "abc")
    lab.add(
        LabDomain(a, policy=PolicyHost(body=POLICY.format(d=a)),
                  records=[(f"_mta-sts.{a}", "CNAME", f"_mta-sts.{b}.")]),
        LabDomain(b, records=[(f"_mta-sts.{b}", "CNAME", f"_mta-sts.{c}.")]),
        LabDomain(c, txt={"_mta-sts": ["v=STSv1; id=1"]}),
    )
    answer = await lab_resolver(lab).txt(f"_mta-sts.{a}")
    assert answer.records == ("v=STSv1; id=1",)
    assert answer.cname_chain == (f"_mta-sts.{b}", f"_mta-sts.{c}")
    assert answer.security is Security.SECURE
    d = await discover(a, dns=lab_resolver(lab), cache=MemoryPolicyCache(),
                       fetch_config=lab_fetch_config(lab), now=1e9)
    assert d.outcome is Outcome.FETCHED and d.record_id == "1"  # policy fetched from a


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
async def test_rfc8461_3_1_cname_into_servfail_is_temporary_failure(lab_env):
    """Corpus followtemperror.example: the CNAME target answers SERVFAIL."""
    lab, LabDomain, _ = lab_env
    bad = f"{_uniq('temperror')}.{lab.ZONE_BOGUS}"
    follow = f"{_uniq('followtemperror')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(bad, txt={"_mta-sts": ["v=STSv1; id=1"]}),
            LabDomain(follow, records=[(f"_mta-sts.{follow}", "CNAME", f"_mta-sts.{bad}.")]))
    with pytest.raises(DnsBogus):
        await lab_resolver(lab).txt(f"_mta-sts.{follow}")


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
async def test_rfc8461_3_1_servfail_is_temporary_failure_not_policy(lab_env):
    lab, LabDomain, _ = lab_env
    name = f"{_uniq('temperror')}.{lab.ZONE_BOGUS}"
    lab.add(LabDomain(name, txt={"_mta-sts": ["v=STSv1; id=1"]}))
    d = await discover(name, dns=lab_resolver(lab), cache=MemoryPolicyCache(),
                       fetch_config=lab_fetch_config(lab), now=1e9)
    assert d.outcome is Outcome.NO_POLICY and isinstance(d.txt_error, DnsBogus)
    assert d.txt_security is Security.BOGUS


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
async def test_rfc8461_3_1_leading_dot_domain(lab_env):
    d = await discover(".good.loc", dns=lab_resolver(lab_env[0]), cache=MemoryPolicyCache(),
                       now=1e9)
    assert d.outcome is Outcome.NO_POLICY and d.policy is None


# --- discovery and cache over the lab ------------------------------------------------------


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_discovery_cache_life_cycle(lab_env):
    """id change -> refetch; failed refresh keeps the cache; mode none replaces it."""
    lab, LabDomain, PolicyHost = lab_env
    name = f"{_uniq('cycle')}.{lab.ZONE_INSECURE}"
    resolver, cache, cfg = lab_resolver(lab), MemoryPolicyCache(), lab_fetch_config(lab)

    def publish(record_id, body, status=200):
        lab.add(LabDomain(name, txt={"_mta-sts": [f"v=STSv1; id={record_id}"]},
                          policy=PolicyHost(body=body, status=status)))

    async def run(now):
        return await discover(name, dns=resolver, cache=cache, fetch_config=cfg, now=now)

    publish("1", POLICY.format(d=name))
    d = await run(1000.0)
    assert d.outcome is Outcome.FETCHED and d.policy.mode is Mode.ENFORCE
    d = await run(1001.0)
    assert d.outcome is Outcome.CACHED  # same id: no fetch (D1)

    publish("2", POLICY.format(d=name).replace("enforce", "testing"))
    d = await run(1002.0)
    assert d.outcome is Outcome.FETCHED and d.policy.mode is Mode.TESTING  # D1
    assert d.policy_id == "2"

    publish("3", "broken", status=500)
    d = await run(1003.0)
    assert d.outcome is Outcome.FETCH_FAILED_KEPT_CACHED  # D2, B8
    assert d.policy.mode is Mode.TESTING and d.policy_id == "2"

    d = await run(1004.0)
    # the same id again within five minutes: no refetch, the cached policy applies (B6)
    assert d.outcome is Outcome.CACHED and d.rate_limited
    publish("4", "version: STSv1\nmode: none\nmax_age: 86400\n")
    d = await run(1005.0)
    # a new id is fetched at once: the wait is per policy id (B6); none replaces (D4)
    assert d.outcome is Outcome.FETCHED and d.policy.mode is Mode.NONE
    assert (await cache.get(name)).policy.mode is Mode.NONE


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_concurrent_discoveries_single_fetch(lab_env):
    lab = lab_env[0]
    name = add_policy_domain(lab_env, "burst", delay=0.3)
    cache = MemoryPolicyCache()
    results = await asyncio.gather(*(
        discover(name, dns=lab_resolver(lab), cache=cache,
                 fetch_config=lab_fetch_config(lab), now=1e9) for _ in range(10)))
    assert all(r is results[0] for r in results)
    assert results[0].outcome is Outcome.FETCHED


