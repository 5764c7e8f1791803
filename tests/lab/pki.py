"""The lab's certificate authorities and leaf certificates, made with ``cryptography``.

Three authorities: the lab root (its PEM is ``lab.ca_file``, the only trust anchor tests
use), a lab intermediate signed by that root, and an unrelated "untrusted" root. Leaves
are issued on demand per (names, kind) and cached; keys are ECDSA P-256 (fast to make).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .model import CertKind, LabError, normalize_name

__all__ = ["CertChain", "LabPki", "spki_der", "tlsa_data"]

DER = serialization.Encoding.DER
PEM = serialization.Encoding.PEM
WRONG_NAME = "wrong-name.lab.invalid"
EXPIRING_CERT_DAYS = 5  # cert kind "expiring": notAfter this long after the lab started


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def spki_der(cert: x509.Certificate) -> bytes:
    """DER SubjectPublicKeyInfo of ``cert`` (TLSA selector 1)."""
    return cert.public_key().public_bytes(DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def tlsa_data(cert: x509.Certificate, selector: int, mtype: int) -> str:
    """Hex association data for a TLSA record (RFC 6698 §2.1.2-2.1.3)."""
    raw = cert.public_bytes(DER) if selector == 0 else spki_der(cert)
    if mtype == 0:
        return raw.hex()
    if mtype == 1:
        return hashlib.sha256(raw).hexdigest()
    if mtype == 2:
        return hashlib.sha512(raw).hexdigest()
    raise LabError(f"cannot compute 'auto' for TLSA matching type {mtype}")


@dataclass(frozen=True, slots=True)
class CertChain:
    """A leaf and the chain a server sends (leaf first), plus where they are on disk."""

    names: tuple[str, ...]
    kind: CertKind
    leaf: x509.Certificate
    issuer: x509.Certificate          # the certificate that signed the leaf
    chain: tuple[x509.Certificate, ...]
    key_pem: bytes
    key_file: Path
    cert_file: Path                   # leaf only
    chain_file: Path                  # what the server sends, leaf first

    @property
    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(PEM) for c in self.chain)

    @property
    def leaf_der(self) -> bytes:
        return self.leaf.public_bytes(DER)

    @property
    def chain_der(self) -> tuple[bytes, ...]:
        return tuple(c.public_bytes(DER) for c in self.chain)

    @property
    def issuer_der(self) -> bytes:
        return self.issuer.public_bytes(DER)


class _Authority:
    def __init__(self, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate):
        self.name = name
        self.key = key
        self.cert = cert


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "smtptls lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, now: dt.datetime, parent: _Authority | None, path_len: int | None) -> _Authority:
    key = _key()
    subject = _name(cn)
    issuer_name = parent.cert.subject if parent else subject
    signer = parent.key if parent else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=2))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )
    if parent:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()),
            critical=False)
    cert = builder.sign(signer, hashes.SHA256())
    return _Authority(cn, key, cert)


class LabPki:
    """Lab root, intermediate and an untrusted root; leaves on demand, cached."""

    def __init__(self, directory: Path, now: dt.datetime | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.now = now or dt.datetime.now(dt.UTC)
        self.root = _ca("smtptls lab root CA", self.now, None, None)
        self.intermediate = _ca("smtptls lab intermediate CA", self.now, self.root, 0)
        self.untrusted = _ca("smtptls untrusted CA", self.now, None, None)
        self.ca_file = self.dir / "lab-ca.pem"
        self.ca_file.write_bytes(self.root.cert.public_bytes(PEM))
        self.untrusted_ca_file = self.dir / "untrusted-ca.pem"
        self.untrusted_ca_file.write_bytes(self.untrusted.cert.public_bytes(PEM))
        self._cache: dict[tuple[tuple[str, ...], CertKind, bool], CertChain] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def issue(self, names: str | tuple[str, ...] | list[str], kind: CertKind | str = "good",
              *, full_chain: bool = False) -> CertChain:
        """A leaf for ``names`` (first one is the CN) of ``kind``; cached per arguments.

        ``full_chain`` adds the issuing CA certificate to the chain sent (for DANE-TA).
        """
        if isinstance(names, str):
            names = (names,)
        names = tuple(normalize_name(n) if not n.startswith("*.") else "*." + normalize_name(n[2:])
                      for n in names)
        if not names:
            raise LabError("a certificate needs at least one name")
        try:
            kind = CertKind(kind)
        except ValueError:
            raise LabError(f"unknown cert kind {kind!r}") from None
        key = (names, kind, full_chain)
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._make(names, kind, full_chain)
            return self._cache[key]

    def _make(self, names: tuple[str, ...], kind: CertKind, full_chain: bool) -> CertChain:
        now = self.now
        not_before, not_after = now - dt.timedelta(days=1), now + dt.timedelta(days=90)
        san_names = names
        authority: _Authority | None = self.root
        if kind is CertKind.WRONG_NAME:
            san_names = (WRONG_NAME,)
        elif kind is CertKind.EXPIRED:
            not_before, not_after = now - dt.timedelta(days=60), now - dt.timedelta(days=2)
        elif kind is CertKind.EXPIRING:
            not_after = now + dt.timedelta(days=EXPIRING_CERT_DAYS)
        elif kind is CertKind.NOT_YET_VALID:
            not_before, not_after = now + dt.timedelta(days=2), now + dt.timedelta(days=60)
        elif kind is CertKind.SELF_SIGNED:
            authority = None
        elif kind is CertKind.INTERMEDIATE:
            authority = self.intermediate
        elif kind is CertKind.UNTRUSTED:
            authority = self.untrusted
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, san_names[0])])
        issuer_name = authority.cert.subject if authority else subject
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in san_names]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
        )
        if authority:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
                critical=False)
        leaf = builder.sign(authority.key if authority else key, hashes.SHA256())
        issuer = authority.cert if authority else leaf
        chain: tuple[x509.Certificate, ...] = (leaf,)
        if kind is CertKind.INTERMEDIATE:
            chain = (leaf, self.intermediate.cert)
            if full_chain:
                chain = (leaf, self.intermediate.cert, self.root.cert)
        elif full_chain and authority:
            chain = (leaf, authority.cert)
        self._counter += 1
        stem = f"{self._counter:04d}-{kind.value}-{names[0].replace('*', '_star')}"
        key_pem = _key_pem(key)
        key_file = self.dir / f"{stem}.key"
        key_file.write_bytes(key_pem)
        key_file.chmod(0o640)
        cert_file = self.dir / f"{stem}.crt"
        cert_file.write_bytes(leaf.public_bytes(PEM))
        chain_file = self.dir / f"{stem}.chain.pem"
        chain_file.write_bytes(b"".join(c.public_bytes(PEM) for c in chain))
        return CertChain(names=names, kind=kind, leaf=leaf, issuer=issuer, chain=chain,
                         key_pem=key_pem, key_file=key_file, cert_file=cert_file,
                         chain_file=chain_file)

    def tlsa_rdata(self, spec: str, chain: CertChain) -> str:
        """Resolve ``auto`` in a TLSA rdata string against ``chain``; others pass through."""
        fields = spec.split()
        if not fields or fields[-1].lower() != "auto":
            return spec
        if len(fields) != 4:
            raise LabError(f"TLSA 'auto' needs 'usage selector mtype auto': {spec!r}")
        try:
            usage, selector, mtype = (int(f) for f in fields[:3])
        except ValueError as exc:
            raise LabError(f"bad TLSA spec {spec!r}") from exc
        # RFC 6698 §2.1.1: usages 0 and 2 name a CA certificate, 1 and 3 the end entity.
        cert = chain.issuer if usage in (0, 2) else chain.leaf
        return f"{usage} {selector} {mtype} {tlsa_data(cert, selector, mtype)}"
