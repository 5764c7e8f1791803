"""The facts an audit gathers about one domain: plain, frozen values, no I/O.

:mod:`smtptls.check.gather` fills them in from DNS, HTTPS and SMTP; the checks in
:mod:`smtptls.check.evaluate` judge them. Tests build them by hand, so every check can
be proven without a network. Times are explicit (``checked_at``); nothing here reads
a clock.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from smtptls.dane.tlsa import TLSARecord
from smtptls.dnssec import Security

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "CertFacts",
    "DomainFacts",
    "FetchFacts",
    "LookupFacts",
    "MxFacts",
    "ProbeFacts",
    "RuaFacts",
    "TlsaFacts",
    "cert_facts",
    "is_root",
]


@dataclass(frozen=True, slots=True)
class LookupFacts:
    """One DNS answer: records as text, DNSSEC status, and the failure if any.

    ``error`` is set when the lookup failed (timeout, SERVFAIL: ``security`` then says
    bogus or indeterminate). No records and no error: NODATA, or NXDOMAIN with
    ``nxdomain``.
    """

    name: str
    security: Security
    records: tuple[str, ...] = ()
    error: str | None = None
    nxdomain: bool = False

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "security": self.security.value,
                "records": list(self.records), "error": self.error,
                "nxdomain": self.nxdomain}


@dataclass(frozen=True, slots=True)
class TlsaFacts:
    """The TLSA RRset at ``_25._tcp.<base>`` as DNS answered."""

    base: str
    name: str
    security: Security
    records: tuple[TLSARecord, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "security": self.security.value,
                "records": [r.to_text() for r in self.records], "error": self.error}


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What the leaf certificate says (for humans and the expiry horizon)."""

    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "issuer": self.issuer,
                "dns_names": list(self.dns_names),
                "not_before": self.not_before.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "not_after": self.not_after.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _name_text(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()[:200]
    except Exception:  # odd encodings in real certificates
        return "?"


def cert_facts(der: bytes) -> CertFacts | None:
    """Facts of a DER certificate, or None when it cannot be parsed."""
    # cryptography loads with the first certificate: a run without SMTP probes has none
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(bytes(der))
    except ValueError:
        return None
    names: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n).lower() for n in san.get_values_for_type(x509.DNSName))[:100]
    except (x509.ExtensionNotFound, ValueError):
        pass
    try:
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except ValueError:
        return None
    return CertFacts(_name_text(cert.subject), _name_text(cert.issuer), names,
                     not_before, not_after)


@dataclass(frozen=True, slots=True)
class ProbeFacts:
    """One STARTTLS probe of one MX address, with the PKIX verdict of its chain.

    ``server_name`` is the SNI sent. ``error_stage`` and ``error`` say where and why the
    session failed (None: it completed). ``pkix_ok`` is None when no chain was received.
    """

    address: str
    server_name: str | None
    starttls_offered: bool
    tls_version: str | None = None
    cipher: str | None = None
    chain_der: tuple[bytes, ...] = ()
    error_stage: str | None = None
    error: str | None = None
    pkix_ok: bool | None = None
    pkix_reason: str | None = None
    pkix_result_type: str | None = None
    cert: CertFacts | None = None

    @property
    def handshake_done(self) -> bool:
        return self.tls_version is not None

    def to_dict(self) -> dict[str, Any]:
        return {"address": self.address, "server_name": self.server_name,
                "starttls": self.starttls_offered, "tls_version": self.tls_version,
                "cipher": self.cipher, "chain_length": len(self.chain_der),
                "error": None if self.error is None else {"stage": self.error_stage,
                                                          "message": self.error},
                "pkix": None if self.pkix_ok is None else {
                    "valid": self.pkix_ok, "reason": self.pkix_reason,
                    "result_type": self.pkix_result_type},
                "certificate": None if self.cert is None else self.cert.to_dict()}


@dataclass(frozen=True, slots=True)
class MxFacts:
    """One MX host: addresses with their status, TLSA lookups, probes."""

    host: str
    preference: int | None
    a: LookupFacts
    aaaa: LookupFacts
    cname_chain: tuple[str, ...] = ()
    first_security: Security | None = None  # the status of the alias itself (CNAME)
    tlsa: tuple[TlsaFacts, ...] = ()
    probes: tuple[ProbeFacts, ...] = ()
    probed: bool = False

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.a.records, *self.aaaa.records)))


@dataclass(frozen=True, slots=True)
class FetchFacts:
    """The MTA-STS policy fetch (RFC 8461 §3.3): the body, or why there is none.

    ``error_kind`` is one of ``tls``, ``status``, ``content-type``, ``too-large``,
    ``timeout``, ``dns``, ``fetch``, ``encoding`` (None on success); ``tls_reason``
    refines ``tls`` (``expired``, ``wrong-name``, ``untrusted``, ...).
    """

    url: str
    body: str | None = None
    status: int | None = None
    content_type: str | None = None
    error_kind: str | None = None
    error: str | None = None
    tls_reason: str | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.body is not None and self.error_kind is None

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "status": self.status,
                "content_type": self.content_type,
                "error": None if self.error_kind is None else {
                    "kind": self.error_kind, "message": self.error,
                    "tls_reason": self.tls_reason}}


@dataclass(frozen=True, slots=True)
class RuaFacts:
    """A TLSRPT ``rua`` destination and whether it looked reachable.

    ``reachable`` is None when not probed (unsupported scheme, or probing off).
    ``status`` is the HTTP status of the HEAD/OPTIONS probe for https URIs.
    """

    uri: str
    scheme: str
    reachable: bool | None
    detail: str = ""
    status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "scheme": self.scheme, "reachable": self.reachable,
                "detail": self.detail, "status": self.status}


@dataclass(frozen=True, slots=True)
class DomainFacts:
    """Everything gathered about one domain at ``checked_at``."""

    domain: str
    checked_at: dt.datetime
    mx: LookupFacts
    hosts: tuple[MxFacts, ...] = ()
    sts_txt: LookupFacts | None = None
    policy: FetchFacts | None = None
    tlsrpt_txt: LookupFacts | None = None
    rua: tuple[RuaFacts, ...] = ()
    smtp_probed: bool = False
    timed_out: bool = False  # the per-domain time limit cut the gathering short
    elapsed: float = 0.0
    notes: tuple[str, ...] = field(default=())

    @property
    def null_mx(self) -> bool:
        # RFC 7505 §3: one MX with preference 0 and the root as exchange: no mail.
        return len(self.mx.records) == 1 and is_root(self.mx.records[0].split()[-1])


def is_root(exchange: str) -> bool:
    """The root name as an MX exchange, in any of the forms it is shown in."""
    return exchange.rstrip(".") in ("", "@")
