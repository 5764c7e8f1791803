"""The STARTTLS probe against real servers on loopback.

Part one runs small asyncio SMTP servers of its own on 127.0.0.1 (well-behaved, hostile,
broken) and needs nothing else; part two (marked ``lab``) probes the lab's receivers,
one per certificate kind, and checks each chain with the explicit PKIX verifier.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import warnings
from collections.abc import Awaitable, Callable

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtptls.errors import SmtpProbeError
from smtptls.net.pkix import verify_pkix
from smtptls.net.smtp import ProbeLimits, Stage, probe_starttls, stdlib_has_full_chain

FAST = ProbeLimits(connect_timeout=2, step_timeout=0.6, total_timeout=3)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serve(handler: Handler):
    """A one-off TCP server on 127.0.0.1:<ephemeral>; yields the port."""
    tasks: set[asyncio.Task] = set()

    async def wrapped(reader, writer):
        tasks.add(asyncio.current_task())
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError,
                asyncio.CancelledError):
            pass  # the test is over or the client left: end quietly
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await server.wait_closed()


@pytest.fixture(scope="module")
def pki():
    ca = trustme.CA()
    inter = ca.create_child_ca()
    return {"ca": ca, "direct": ca.issue_cert("mx.probe.test"),
            "chained": inter.issue_cert("mx.probe.test")}


def server_context(leaf: trustme.LeafCert, seen_sni: list | None = None,
                   maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    if maximum is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.maximum_version = maximum
    if seen_sni is not None:
        ctx.sni_callback = lambda _obj, name, _ctx: seen_sni.append(name)
    return ctx


def mini_mx(*, tls: ssl.SSLContext | None = None, banner: bytes = b"220 mx.probe.test ESMTP\r\n",
            ehlo: bytes = b"250-mx.probe.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n",
            starttls_reply: bytes = b"220 2.0.0 ready\r\n", after_220: bytes = b"",
            raw_after_220: bytes | None = None) -> Handler:
    """A scripted receiver: banner, EHLO answer, STARTTLS, then EHLO/QUIT inside TLS."""

    async def handler(reader, writer):
        writer.write(banner)
        await writer.drain()
        while line := await reader.readline():
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"EHLO":
                writer.write(ehlo)
            elif verb == b"HELO":
                writer.write(b"250 mx.probe.test\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            elif verb == b"STARTTLS":
                writer.write(starttls_reply + after_220)
                await writer.drain()
                if raw_after_220 is not None:
                    await reader.read(1)  # the ClientHello has started
                    writer.write(raw_after_220)
                    await writer.drain()
                    return
                if tls is None or not starttls_reply.startswith(b"220"):
                    continue
                await writer.start_tls(tls)
                continue
            else:
                writer.write(b"502 5.5.2 what\r\n")
            await writer.drain()

    return handler


def der(blob) -> bytes:
    return x509.load_pem_x509_certificate(blob.bytes()).public_bytes(Encoding.DER)


# --- well-behaved receivers --------------------------------------------------------------


@pytest.mark.parametrize("kind, length", [("direct", 1), ("chained", 2)])
async def test_probe_captures_the_chain_as_sent(pki, kind, length):
    sni: list[str] = []
    leaf = pki[kind]
    async with serve(mini_mx(tls=server_context(leaf, sni))) as port:
        res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST)
    assert res.error is None, res.error
    assert res.ok and res.stage_reached == Stage.QUIT
    assert res.starttls_offered
    assert res.banner == "mx.probe.test ESMTP"
    assert res.ehlo_lines[-1] == "STARTTLS" and res.ehlo_tls_lines
    assert res.tls_version in ("TLSv1.2", "TLSv1.3") and res.cipher
    assert list(res.chain_der) == [der(b) for b in leaf.cert_chain_pems]
    assert len(res.chain_der) == length
    assert sni == ["mx.probe.test"]


@pytest.mark.rfc("7672 8.1")
async def test_rfc7672_8_1_sni_is_the_tlsa_base_domain(pki):
    sni: list[str] = []
    async with serve(mini_mx(tls=server_context(pki["direct"], sni))) as port:
        res = await probe_starttls("127.0.0.1", host="mx.alias.test",
                                   server_name="mx.probe.test", port=port, limits=FAST)
    assert res.ok
    assert res.server_name == "mx.probe.test"
    assert sni == ["mx.probe.test"]


async def test_probe_does_not_verify_but_pkix_check_does(pki, tmp_path):
    """The probe returns an untrusted chain; the separate explicit check rejects it."""
    async with serve(mini_mx(tls=server_context(pki["direct"]))) as port:
        res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST)
    assert res.ok
    ca_file = tmp_path / "ca.pem"
    pki["ca"].cert_pem.write_to_path(str(ca_file))
    other = tmp_path / "other.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    assert verify_pkix(res.chain_der, "mx.probe.test", other).result_type == \
        "certificate-not-trusted"


@pytest.mark.rfc("8461 4")
async def test_rfc8461_4_tls_below_1_2_is_refused(pki):
    ctx = server_context(pki["direct"], maximum=ssl.TLSVersion.TLSv1_1)
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    async with serve(mini_mx(tls=ctx)) as port:
        res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST)
    assert res.error is not None and res.error.stage == Stage.HANDSHAKE
    assert res.tls_version is None and not res.chain_der


async def test_minimum_version_is_configurable(pki):
    ctx = server_context(pki["direct"], maximum=ssl.TLSVersion.TLSv1_2)
    async with serve(mini_mx(tls=ctx)) as port:
        ok12 = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST)
        only13 = await probe_starttls(
            "127.0.0.1", host="mx.probe.test", port=port,
            limits=ProbeLimits(step_timeout=1, total_timeout=3, min_tls_version="TLSv1.3"))
    assert ok12.tls_version == "TLSv1.2"
    assert only13.error is not None and only13.error.stage == Stage.HANDSHAKE


async def test_stdlib_backend(pki):
    leaf = pki["chained"]
    async with serve(mini_mx(tls=server_context(leaf))) as port:
        res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST,
                                   tls_backend="stdlib")
    assert res.ok, res.error
    expected = [der(b) for b in leaf.cert_chain_pems]
    # Python < 3.13 exposes only the leaf; 3.13+ the whole chain as sent.
    assert list(res.chain_der) == (expected if stdlib_has_full_chain() else expected[:1])


# --- negative answers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, stage, message, offered",
    [
        pytest.param({"ehlo": b"250-mx\r\n250 PIPELINING\r\n"}, Stage.STARTTLS,
                     "STARTTLS not offered", False, id="no-starttls"),
        pytest.param({"starttls_reply": b"454 4.7.0 TLS not available\r\n"}, Stage.STARTTLS,
                     "refused STARTTLS", True, id="starttls-refused"),
        pytest.param({"ehlo": b"502 5.5.1 no ESMTP\r\n"}, Stage.STARTTLS, "HELO only", False,
                     id="helo-only"),
        pytest.param({"banner": b"554 5.7.1 no service\r\n"}, Stage.BANNER,
                     "refused the session", False, id="banner-554"),
        pytest.param({"after_220": b"250 injected\r\n"}, Stage.STARTTLS, "plaintext after",
                     True, id="starttls-injection"),
        pytest.param({"raw_after_220": b"HTTP/1.0 200 OK\r\n\r\n" * 4}, Stage.HANDSHAKE,
                     "TLS handshake failed", True, id="not-tls-after-starttls"),
        pytest.param({"raw_after_220": b""}, Stage.HANDSHAKE, "closed", True,
                     id="close-after-starttls"),
    ],
)
async def test_negative_answers_are_typed(kwargs, stage, message, offered):
    async with serve(mini_mx(**kwargs)) as port:
        res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST)
    assert isinstance(res.error, SmtpProbeError)
    assert res.error.stage == stage
    assert message in str(res.error)
    assert res.starttls_offered is offered
    assert not res.chain_der and not res.ok


async def test_helo_fallback_is_reported():
    async with serve(mini_mx(ehlo=b"502 5.5.1 no ESMTP\r\n")) as port:
        res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST)
    assert res.used_helo and res.stage_reached == Stage.EHLO
    assert res.ehlo_lines == ("mx.probe.test",)


async def test_connection_refused_is_a_connect_error():
    async with serve(mini_mx()) as port:
        pass  # closed again: nothing listens on the port now
    res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=FAST)
    assert res.error is not None and res.error.stage == Stage.CONNECT
    assert res.stage_reached is None


# --- hostile receivers: each ends in a typed error within the deadline ---------------------


async def endless_banner(reader, writer):
    for _ in range(100000):
        writer.write(b"220-still greeting you\r\n")
        await writer.drain()


async def tarpit(reader, writer):
    for ch in b"220 slowly but surely ESMTP\r\n":
        writer.write(bytes([ch]))
        await writer.drain()
        await asyncio.sleep(0.2)


async def silent(reader, writer):
    await asyncio.sleep(30)


async def garbage(reader, writer):
    writer.write(b"\x00\xff\xfe garbage from a confused server\r\n")
    await writer.drain()
    await asyncio.sleep(30)


async def long_line(reader, writer):
    writer.write(b"220 " + b"A" * 100000)
    await writer.drain()
    await asyncio.sleep(30)


async def slow_steps(reader, writer):
    """Every reply just inside the step timeout: only the total deadline ends it."""
    await asyncio.sleep(0.4)
    writer.write(b"220 slow ESMTP\r\n")
    await writer.drain()
    while await reader.readline():
        await asyncio.sleep(0.4)
        writer.write(b"250-slow\r\n250 STARTTLS\r\n")
        await writer.drain()


async def closes_at_once(reader, writer):
    writer.close()


@pytest.mark.parametrize(
    "handler, limits, stage, message",
    [
        pytest.param(endless_banner, FAST, Stage.BANNER, "too many lines", id="endless-banner"),
        pytest.param(tarpit, FAST, Stage.BANNER, "no complete reply within", id="tarpit"),
        pytest.param(silent, FAST, Stage.BANNER, "no complete reply within", id="silent"),
        pytest.param(garbage, FAST, Stage.BANNER, "malformed reply", id="garbage"),
        pytest.param(long_line, FAST, Stage.BANNER, "line too long", id="long-line"),
        pytest.param(closes_at_once, FAST, Stage.BANNER, "closed by the server",
                     id="closes-at-once"),
        pytest.param(slow_steps, ProbeLimits(step_timeout=0.6, total_timeout=1.0), None,
                     "total deadline", id="total-deadline"),
    ],
)
async def test_hostile_servers_end_in_a_typed_error_in_time(handler, limits, stage, message):
    async with serve(handler) as port:
        start = time.monotonic()
        res = await probe_starttls("127.0.0.1", host="mx.probe.test", port=port, limits=limits)
        elapsed = time.monotonic() - start
    assert isinstance(res.error, SmtpProbeError)
    assert message in str(res.error)
    if stage is not None:
        assert res.error.stage == stage
    assert elapsed < limits.total_timeout + 1.5


# --- the lab's receivers ---------------------------------------------------------------


LAB_KINDS = [
    # cert kind, chain length sent, PKIX verdict for the MX name (None = ok)
    ("good", 1, None),
    ("wrong-name", 1, "certificate-host-mismatch"),
    ("expired", 1, "certificate-expired"),
    ("self-signed", 1, "certificate-not-trusted"),
    ("intermediate", 2, None),
    ("untrusted", 1, "certificate-not-trusted"),
]


@pytest.fixture(scope="module")
def lab_probe_domain(lab):
    from tests.lab import LabDomain, LabMx

    mxs = [LabMx(f"{kind}.probe.insecure.test", pref=10 + i, cert=kind, starttls=True)
           for i, (kind, _, _) in enumerate(LAB_KINDS)]
    mxs.append(LabMx("plain.probe.insecure.test", pref=90, cert="good", starttls=False))
    return lab.add(LabDomain("probe.insecure.test", mx=mxs))


@pytest.mark.lab
@pytest.mark.parametrize("kind, length, result_type", LAB_KINDS, ids=[k[0] for k in LAB_KINDS])
async def test_lab_probe_each_cert_kind(lab, lab_probe_domain, kind, length, result_type):
    mx = next(m for m in lab_probe_domain.mx if m.host.startswith(kind + "."))
    res = await probe_starttls(mx.address, host=mx.host, limits=FAST)
    assert res.ok, res.error
    assert res.tls_version in ("TLSv1.2", "TLSv1.3")
    assert len(res.chain_der) >= length
    verdict = verify_pkix(res.chain_der, mx.host, lab.ca_file)
    assert verdict.result_type == result_type, verdict.reason
    assert verdict.ok is (result_type is None)


@pytest.mark.lab
async def test_lab_probe_without_starttls(lab_probe_domain):
    mx = next(m for m in lab_probe_domain.mx if m.host.startswith("plain."))
    res = await probe_starttls(mx.address, host=mx.host, limits=FAST)
    assert res.error is not None and res.error.stage == Stage.STARTTLS
    assert not res.starttls_offered and res.stage_reached == Stage.EHLO


# --- property: whatever a server sends, the probe ends with a result, never an exception --


async def _probe_payload(payload: bytes):
    async def handler(reader, writer):
        writer.write(payload)
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await asyncio.wait_for(reader.read(1), 0.05)

    async with serve(handler) as port:
        return await probe_starttls("127.0.0.1", host="mx.probe.test", port=port,
                                    limits=ProbeLimits(connect_timeout=1, step_timeout=0.3,
                                                       total_timeout=1))


smtp_ish = st.lists(
    st.one_of(
        st.sampled_from([b"220 hi\r\n", b"220-more\r\n", b"250-x\r\n", b"250 STARTTLS\r\n",
                         b"220 go\r\n", b"554 no\r\n", b"\r\n", b"\n", b"\x16\x03\x01"]),
        st.binary(max_size=40),
    ),
    max_size=8,
).map(b"".join)


@given(smtp_ish)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_server_bytes_end_in_a_result(payload):
    res = asyncio.run(_probe_payload(payload))
    assert res.ok is False
    assert isinstance(res.error, SmtpProbeError)
    assert res.error.stage in set(Stage)
