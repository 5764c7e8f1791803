"""Unit tests for smtptls.net.https pieces that need no network."""

from __future__ import annotations

import socket
import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.config import DnsConfig, FetchConfig
from smtptls.errors import FetchError, InvalidDomainError, PolicySyntaxError
from smtptls.net import https
from smtptls.net.dns import DnsResolver
from smtptls.net.https import TlsFailure, fetch_policy, policy_url


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "domain, url",
    [
        ("example.com", "https://mta-sts.example.com/.well-known/mta-sts.txt"),
        ("Example.COM.", "https://mta-sts.example.com/.well-known/mta-sts.txt"),
        ("bücher.example", "https://mta-sts.xn--bcher-kva.example/.well-known/mta-sts.txt"),
    ],
    ids=["plain", "normalized", "idna"],
)
def test_rfc8461_3_3_policy_url(domain, url):
    assert policy_url(domain) == url


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("domain", [".good.loc", "a..b", "", "192.0.2.1", "x y.example"],
                         ids=["leading-dot", "empty-label", "empty", "ip", "space"])
async def test_rfc8461_3_3_invalid_policy_domain_rejected_before_io(domain):
    # The resolver points at the discard port: a query would time out, not fail fast.
    resolver = DnsResolver(DnsConfig(nameservers=("127.0.0.1:9",), timeout=5))
    with pytest.raises(InvalidDomainError):
        await fetch_policy(domain, config=FetchConfig(total_timeout=5), resolver=resolver)


class _CertError(ssl.SSLCertVerificationError):
    def __init__(self, code, message):
        super().__init__(1, message)
        self.verify_code = code
        self.verify_message = message


@pytest.mark.parametrize(
    "code, message, reason",
    [
        (10, "certificate has expired", TlsFailure.EXPIRED),
        (62, "Hostname mismatch, certificate is not valid for 'x'.", TlsFailure.WRONG_NAME),
        (20, "unable to get local issuer certificate", TlsFailure.UNTRUSTED),
        (18, "self-signed certificate", TlsFailure.UNTRUSTED),
        (19, "self-signed certificate in certificate chain", TlsFailure.UNTRUSTED),
        (9, "certificate is not yet valid", TlsFailure.NOT_YET_VALID),
        (7, "certificate signature failure", TlsFailure.HANDSHAKE),
    ],
    ids=["expired", "wrong-name", "no-local-issuer", "self-signed", "self-signed-chain",
         "not-yet-valid", "bad-signature"],
)
def test_rfc8461_3_3_tls_failure_reasons(code, message, reason):
    err = https._tls_error(_CertError(code, message), "https://mta-sts.x/")
    assert err.reason is reason
    assert reason.value in str(err) and message in str(err)
    assert err.url == "https://mta-sts.x/"


def test_tls_failure_without_verify_code_is_handshake():
    err = https._tls_error(ssl.SSLError(1, "tlsv1 alert protocol version"), "u")
    assert err.reason is TlsFailure.HANDSHAKE


@pytest.mark.parametrize(
    "body, line",
    [(b"version: STSv1\n\xff\n", 2), (b"\xc3", 1), (b"a\nb\nc\n\xe2\x28\xa1", 4)],
    ids=["line-2", "truncated-utf8", "line-4"],
)
def test_non_utf8_body_is_policy_syntax_error_with_line(body, line):
    with pytest.raises(PolicySyntaxError) as info:
        https._decode(body)
    assert info.value.line == line


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_only_typed_errors(body):
    try:
        text = https._decode(body)
    except PolicySyntaxError:
        return
    assert text.encode("utf-8") == body


def test_ssl_context_verifies_and_checks_names():
    ctx = https.https_ssl_context(FetchConfig())
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_ssl_context_bad_ca_file_is_fetch_error(tmp_path):
    with pytest.raises(FetchError, match="CA file"):
        https.https_ssl_context(FetchConfig(ca_file=str(tmp_path / "missing.pem")))


async def test_aiohttp_resolver_wraps_dns_errors_as_oserror():
    resolver = https.DnsAiohttpResolver(DnsResolver(DnsConfig(nameservers=("127.0.0.1:9",))))
    with pytest.raises(OSError) as info:
        await resolver.resolve("bad..name", 443, socket.AF_INET)
    assert isinstance(info.value.error, InvalidDomainError)
    await resolver.close()
