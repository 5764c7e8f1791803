"""Certificates generated for the DANE tests (cryptography), cached per process.

Keys are cached by (kind, slot) so a test run generates each key once; certificates
are cheap to sign. ``NOW`` is the fixed verification time of the tests.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from smtptls.dane.tlsa import TLSARecord

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@functools.cache
def key(kind: str = "ec", slot: int = 0) -> Any:
    """A private key: ``ec`` (P-256), ``ec384``, ``rsa`` (2048), ``ed25519``."""
    del slot  # only part of the cache key: distinct keys of one kind
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: Any

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def spki(self) -> bytes:
        return self.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


_serial = iter(range(1000, 10**9))


def make_cert(
    cn: str | None,
    private_key: Any,
    issuer: Issued | None = None,
    *,
    san: list[str] | None = None,
    ca: bool | None = None,
    path_len: int | None = None,
    key_usage: str | None = None,
    not_before: dt.datetime = NOW - 30 * DAY,
    not_after: dt.datetime = NOW + 365 * DAY,
    pss: bool = False,
    issuer_name: x509.Name | None = None,
) -> Issued:
    """Sign a certificate; ``issuer=None`` makes it self-signed.

    ``ca``: None leaves basicConstraints out, else sets cA; ``key_usage``: "ca"
    (keyCertSign), "ee" (digitalSignature only) or None.
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    signer_key = private_key if issuer is None else issuer.key
    iname = issuer_name or (subject if issuer is None else issuer.cert.subject)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(iname)
               .public_key(private_key.public_key()).serial_number(next(_serial))
               .not_valid_before(not_before).not_valid_after(not_after))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_len),
                                        critical=True)
    if key_usage is not None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=key_usage == "ee", content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            key_cert_sign=key_usage == "ca", crl_sign=key_usage == "ca",
            encipher_only=False, decipher_only=False), critical=True)
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in san]), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if isinstance(signer_key, ed25519.Ed25519PrivateKey):
        cert = builder.sign(signer_key, None)
    elif isinstance(signer_key, rsa.RSAPrivateKey) and pss:
        cert = builder.sign(signer_key, hashes.SHA256(), rsa_padding=padding.PSS(
            mgf=padding.MGF1(hashes.SHA256()), salt_length=32))
    else:
        cert = builder.sign(signer_key, hashes.SHA256())
    return Issued(cert, private_key)


@dataclass(frozen=True)
class Pki:
    root: Issued
    inter: Issued
    leaf: Issued

    @property
    def chain(self) -> list[bytes]:
        """As a server sends it: leaf, intermediate, root."""
        return [self.leaf.der, self.inter.der, self.root.der]


@functools.cache
def pki(kind: str = "ec", host: str = "mx.example.com") -> Pki:
    """Root CA -> intermediate CA -> leaf for ``host``, all with ``kind`` keys."""
    root = make_cert(f"{kind} Root CA", key(kind, 1), ca=True, key_usage="ca")
    inter = make_cert(f"{kind} Issuing CA", key(kind, 2), root, ca=True, path_len=0,
                      key_usage="ca")
    leaf = make_cert(host, key(kind, 3), inter, san=[host], key_usage="ee")
    return Pki(root, inter, leaf)


def rec(usage: int, selector: int, mtype: int, issued: Issued | bytes) -> TLSARecord:
    """The TLSA record of ``issued`` (a certificate, or raw SPKI DER for a bare key)."""
    if isinstance(issued, bytes):
        selected = issued
    else:
        selected = issued.der if selector == 0 else issued.spki
    data = {0: selected, 1: hashlib.sha256(selected).digest(),
            2: hashlib.sha512(selected).digest()}[mtype]
    return TLSARecord(usage, selector, mtype, data)


# Full(0) data with the outer DER shape of a certificate / SubjectPublicKeyInfo.
_EMPTY_SHAPE = {0: bytes.fromhex("300730003000030100"), 1: bytes.fromhex("30053000030100")}


def zeros(usage: int, selector: int, mtype: int) -> TLSARecord:
    """A well-formed record that matches nothing."""
    data = _EMPTY_SHAPE[selector] if mtype == 0 else bytes({1: 32, 2: 64}[mtype])
    return TLSARecord(usage, selector, mtype, data)
