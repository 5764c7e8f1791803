"""PKIX verification of a probed chain (RFC 8461 §4.2 / E2), offline with trustme certs."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import ConfigError
from smtptls.net.pkix import load_roots, verify_pkix

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


DAY = dt.timedelta(days=1)


class Issuer:
    """A test CA that issues certificates the strict RFC 5280 verifier accepts."""

    def __init__(self, name: str, parent: Issuer | None = None) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        signer = parent or self
        builder = (
            self._base(self.name, signer.name if parent else self.name, NOW - 9 * DAY,
                       NOW + 900 * DAY)
            .public_key(self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()),
                           critical=False)
        )
        if parent:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
                critical=False)
        self.cert = builder.sign(signer.key, hashes.SHA256())
        self.chain = [self.cert, *(parent.chain if parent else [])]

    @staticmethod
    def _base(subject, issuer, not_before, not_after):
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before).not_valid_after(not_after))

    def issue(self, name: str, *, not_before=NOW - DAY, not_after=NOW + 90 * DAY) -> list[bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        leaf = (
            self._base(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]), self.name,
                       not_before, not_after)
            .public_key(key.public_key())
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        chain = [leaf, *self.chain[:-1]]  # the root is not sent
        return [c.public_bytes(Encoding.DER) for c in chain]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = Issuer("Test Root")
    (d / "ca.pem").write_bytes(ca.cert.public_bytes(Encoding.PEM))
    other = Issuer("Other Root")
    inter = Issuer("Test Intermediate", parent=ca)
    return {
        "ca_file": d / "ca.pem",
        "good": ca.issue("mx1.example.test"),
        "wildcard": ca.issue("*.example.test"),
        "expired": ca.issue("mx1.example.test", not_before=NOW - 99 * DAY,
                            not_after=NOW - 9 * DAY),
        "untrusted": other.issue("mx1.example.test"),
        "intermediate": inter.issue("mx1.example.test"),
        "ip": ca.issue("192.0.2.7"),
    }


@pytest.mark.rfc("8461 4.2")
@pytest.mark.parametrize(
    "kind, hostname, ok, result_type",
    [
        pytest.param("good", "mx1.example.test", True, None, id="good"),
        pytest.param("good", "MX1.Example.Test.", True, None, id="case-and-trailing-dot"),
        pytest.param("intermediate", "mx1.example.test", True, None, id="via-intermediate"),
        pytest.param("wildcard", "mx1.example.test", True, None, id="wildcard-one-label"),
        pytest.param("wildcard", "a.mx1.example.test", False, "certificate-host-mismatch",
                     id="wildcard-not-two-labels"),
        pytest.param("wildcard", "example.test", False, "certificate-host-mismatch",
                     id="wildcard-not-parent"),
        pytest.param("good", "mx2.example.test", False, "certificate-host-mismatch",
                     id="wrong-name"),
        pytest.param("expired", "mx1.example.test", False, "certificate-expired", id="expired"),
        pytest.param("untrusted", "mx1.example.test", False, "certificate-not-trusted",
                     id="untrusted"),
        pytest.param("ip", "192.0.2.7", True, None, id="ip-address-san"),
    ],
)
def test_rfc8461_4_2_certificate_validation(pki, kind, hostname, ok, result_type):
    verdict = verify_pkix(pki[kind], hostname, pki["ca_file"], NOW)
    assert verdict.ok is ok, verdict.reason
    assert verdict.result_type == result_type
    assert verdict.reason


def test_rfc8461_4_2_intermediate_missing_is_not_trusted(pki):
    verdict = verify_pkix(pki["intermediate"][:1], "mx1.example.test", pki["ca_file"], NOW)
    assert not verdict.ok
    assert verdict.result_type == "certificate-not-trusted"


@pytest.mark.parametrize(
    "chain, result_type",
    [
        pytest.param([], "certificate-not-trusted", id="empty"),
        pytest.param([b"\x30\x03\x02\x01\x00"], "validation-failure", id="bad-der"),
        pytest.param([b"x"] * 17, "validation-failure", id="too-long"),
    ],
)
def test_bad_chains_give_a_verdict(pki, chain, result_type):
    verdict = verify_pkix(chain, "mx1.example.test", pki["ca_file"], NOW)
    assert (verdict.ok, verdict.result_type) == (False, result_type)


def test_naive_now_is_utc(pki):
    assert verify_pkix(pki["good"], "mx1.example.test", pki["ca_file"],
                       NOW.replace(tzinfo=None)).ok


@pytest.mark.parametrize(
    "content", [pytest.param(None, id="missing"), pytest.param(b"not pem", id="not-pem")]
)
def test_bad_ca_file_is_a_config_error(tmp_path, content):
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError):
        load_roots(path)


def test_system_roots_load():
    roots = load_roots(None)
    assert len(roots) > 10


@given(st.lists(st.binary(max_size=200), max_size=4), st.text(max_size=30))
@settings(max_examples=100, deadline=None)
def test_any_input_gives_a_verdict(pki, chain, hostname):
    verdict = verify_pkix(chain, hostname or "x", pki["ca_file"], NOW)
    assert verdict.ok is False
    assert verdict.result_type is not None
