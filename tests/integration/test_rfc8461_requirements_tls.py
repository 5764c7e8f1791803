"""RFC 8461 §3.3 / §7.1: the policy host's certificate names, SNI and HTTP caching, on loopback.

- A loopback TLS server (127.0.0.1, a random port) presents certificates issued here by
  a throw-away CA; the client side is the very context policy fetches use
  (:func:`smtptls.net.https.https_ssl_context`). The certificate must be valid for
  ``mta-sts.<policy-domain>`` by a DNS-ID (a subjectAltName dNSName, RFC 6125); a
  subject CN alone never makes it valid, and a wildcard covers exactly one whole
  left-most label.
- A small HTTPS policy host (aiohttp on a random 127.254.x.y:443, with a loopback DNS
  responder for its name) records the SNI of each fetch and answers with HTTP caching
  headers, which :func:`smtptls.net.https.fetch_policy` must not use.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import ssl

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trustme
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smtptls.config import DnsConfig, FetchConfig
from smtptls.mtasts import parse_policy
from smtptls.net.dns import DnsResolver
from smtptls.net.https import TlsFailure, _tls_failure, fetch_policy, https_ssl_context

POLICY_HOST = "mta-sts.example.com"
NOW = dt.datetime.now(dt.UTC)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class _Ca:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("smtptls test root"))
            .issuer_name(_name("smtptls test root"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def leaf(self, tmp_path, cn: str, sans: tuple[str, ...]) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1))
            .not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in sans]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        stem = f"{cn.replace('*', 'star')}-{len(sans)}"
        cert_file, key_file = tmp_path / f"{stem}.crt", tmp_path / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return str(cert_file), str(key_file)


@pytest.fixture(scope="module")
def ca_and_file(tmp_path_factory):
    ca = _Ca()
    path = tmp_path_factory.mktemp("ca") / "root.pem"
    path.write_bytes(ca.cert.public_bytes(serialization.Encoding.PEM))
    return ca, str(path)


async def _handshake(cert_file: str, key_file: str, ca_file: str,
                     server_name: str = POLICY_HOST) -> BaseException | None:
    """Connect with the policy-fetch TLS context; the verification error, or None."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read(1)
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    client_ctx = https_ssl_context(FetchConfig(ca_file=ca_file))
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                    server_hostname=server_name), 10)
    except ssl.SSLCertVerificationError as exc:
        return exc
    finally:
        server.close()
    writer.close()
    return None


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_common_name_alone_is_not_a_dns_id(tmp_path, ca_and_file):
    ca, ca_file = ca_and_file
    cert, key = ca.leaf(tmp_path, POLICY_HOST, ())  # the right name, but only as the CN
    error = await _handshake(cert, key, ca_file)
    assert error is not None, "a certificate naming the policy host only in its CN passed"
    assert _tls_failure(error)[0] is TlsFailure.WRONG_NAME


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(("sans", "valid"), [
    pytest.param((POLICY_HOST,), True, id="san-exact"),
    pytest.param(("*.example.com",), True, id="san-wildcard-one-label"),
    pytest.param(("*.com",), False, id="wildcard-two-labels"),
    pytest.param(("mta*.example.com",), False, id="partial-label-wildcard"),
    pytest.param(("other.example.com",), False, id="other-name"),
])
async def test_rfc8461_3_3_policy_host_dns_id(tmp_path, ca_and_file, sans, valid):
    ca, ca_file = ca_and_file
    cert, key = ca.leaf(tmp_path, POLICY_HOST, sans)  # the CN always names the host
    error = await _handshake(cert, key, ca_file)
    assert (error is None) is valid, error
    if not valid:
        assert _tls_failure(error)[0] is TlsFailure.WRONG_NAME


@pytest.mark.rfc("8461 7.1")
def test_rfc8461_3_3_fetch_context_checks_names_without_cn_fallback():
    ctx = https_ssl_context(FetchConfig())
    assert ctx.check_hostname and ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.hostname_checks_common_name is False
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


# --- a policy host that records SNI and offers HTTP caching --------------------------------

CACHE_DOMAIN = "cache.example"
BODY = "version: STSv1\nmode: {mode}\nmx: mx1.cache.example\nmax_age: 86400\n"


class _Dns(asyncio.DatagramProtocol):
    def __init__(self, address: str) -> None:
        self.address = address

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def datagram_received(self, data, addr) -> None:  # type: ignore[no-untyped-def]
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return
        resp = dns.message.make_response(query)
        q = query.question[0]
        name = q.name.to_text()
        if name == f"mta-sts.{CACHE_DOMAIN}." and q.rdtype == dns.rdatatype.A:
            resp.answer.append(dns.rrset.from_text(name, 60, "IN", "A", self.address))
        elif name != f"mta-sts.{CACHE_DOMAIN}.":
            resp.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(resp.to_wire(), addr)


@pytest.fixture
async def caching_host():
    ca = trustme.CA()
    address = f"127.254.{random.randint(1, 254)}.{random.randint(1, 254)}"
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Dns(address),
                                                       local_addr=("127.0.0.1", 0))
    dns_port = transport.get_extra_info("sockname")[1]
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(f"mta-sts.{CACHE_DOMAIN}").configure_cert(sctx)
    state = {"mode": "testing", "sni": [], "requests": []}
    sctx.sni_callback = lambda _obj, name, _ctx: state["sni"].append(name)

    async def handle(request: web.Request) -> web.Response:
        state["requests"].append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(text=BODY.format(mode=state["mode"]), content_type="text/plain",
                            headers={"Cache-Control": "public, max-age=86400",
                                     "ETag": '"v1"', "Last-Modified":
                                     "Mon, 01 Jan 2024 00:00:00 GMT",
                                     "Expires": "Thu, 01 Jan 2099 00:00:00 GMT"})

    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", handle)
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
        state["resolver"] = DnsResolver(DnsConfig(nameservers=(f"127.0.0.1:{dns_port}",),
                                                  timeout=2))
        state["config"] = FetchConfig(ca_file=ca_file, connect_timeout=2, total_timeout=5)
        yield state
    await runner.cleanup()
    transport.close()


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_sni_is_the_policy_host(caching_host):
    await fetch_policy(CACHE_DOMAIN, config=caching_host["config"],
                       resolver=caching_host["resolver"])
    assert caching_host["sni"] == [f"mta-sts.{CACHE_DOMAIN}"]


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_http_caching_not_used(caching_host):
    fetch = {"config": caching_host["config"], "resolver": caching_host["resolver"]}
    first = await fetch_policy(CACHE_DOMAIN, **fetch)
    caching_host["mode"] = "enforce"  # changed behind a "fresh for a day" response
    second = await fetch_policy(CACHE_DOMAIN, **fetch)
    assert parse_policy(first.text).mode.value == "testing"
    assert parse_policy(second.text).mode.value == "enforce"
    assert len(caching_host["requests"]) == 2  # both reached the host
    for headers in caching_host["requests"]:
        assert "if-none-match" not in headers and "if-modified-since" not in headers
