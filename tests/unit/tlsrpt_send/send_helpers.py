"""Shared values for the TLSRPT sending tests: policies, results, a DKIM key."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import strategies as st

from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.results import AppliedPolicy, Failure, SessionResult

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
SENDING_IP = "198.51.100.25"

STS_LINES = ("version: STSv1", "mode: testing", "mx: *.mail.example.com", "max_age: 86400")
STS = AppliedPolicy(PolicyType.STS, "example.com", STS_LINES, ("*.mail.example.com",))
TLSA_MX1 = AppliedPolicy(PolicyType.TLSA, "example.net", (
    "3 1 1 0f2c1b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8",))
NONE_ORG = AppliedPolicy.none_found("example.org")


def ok(policy: AppliedPolicy = STS, *, mx: str = "mx1.mail.example.com",
       ip: str = "192.0.2.10", time: datetime = T0) -> SessionResult:
    return SessionResult.success(time, policy, mx_host=mx, receiving_ip=ip,
                                 sending_mta_ip=SENDING_IP)


def bad(result_type: ResultType | str, policy: AppliedPolicy = STS, *,
        mx: str = "mx1.mail.example.com", ip: str = "192.0.2.10", time: datetime = T0,
        **details: str) -> SessionResult:
    return SessionResult.failure(time, policy, result_type, mx_host=mx, receiving_ip=ip,
                                 sending_mta_ip=SENDING_IP, **details)


def rsa_key() -> tuple[bytes, str]:
    """(PEM private key, base64 DER public key for a p= tag)."""
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM,
                          serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


# --- hypothesis strategies -----------------------------------------------------------------

label = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
domains = st.builds(lambda a, b: f"{a}.{b}", label, st.sampled_from(["com", "net", "example"]))
ipv4 = st.builds(lambda *o: ".".join(map(str, o)), *[st.integers(1, 254)] * 4)
ipv6 = st.builds(lambda a, b: f"2001:db8:{a:x}::{b:x}", st.integers(0, 0xFFFF),
                 st.integers(1, 0xFFFF))
ips = st.one_of(ipv4, ipv6)
texts = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
                max_size=40)
result_types = st.sampled_from(list(ResultType))


@st.composite
def policies(draw: st.DrawFn) -> AppliedPolicy:
    ptype = draw(st.sampled_from(list(PolicyType)))
    domain = draw(domains)
    if ptype is PolicyType.NO_POLICY_FOUND:
        return AppliedPolicy.none_found(domain)
    strings = tuple(draw(st.lists(texts.filter(bool), min_size=1, max_size=4)))
    patterns = tuple(draw(st.lists(st.builds(lambda d: f"*.{d}", domains), max_size=2))) \
        if ptype is PolicyType.STS else ()
    return AppliedPolicy(ptype, domain, strings, patterns)


@st.composite
def results(draw: st.DrawFn, day: datetime = T0) -> SessionResult:
    policy = draw(policies())
    failures = tuple(
        Failure(draw(result_types),
                receiving_mx_helo=draw(st.none() | label),
                additional_information=draw(st.none() | st.just("https://example.com/why")),
                failure_reason_code=draw(st.none() | texts.filter(bool)))
        for _ in range(draw(st.integers(0, 2))))
    seconds = draw(st.integers(0, 86399))
    t = day.replace(hour=0, minute=0, second=0) + timedelta(seconds=seconds)
    return SessionResult(t, policy, mx_host=draw(st.builds(lambda d: f"mx.{d}", domains)),
                         receiving_ip=draw(ips), sending_mta_ip=draw(ips), failures=failures)
