"""Hand-built facts for the pure check tests: certificates from trustme, no network."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smtptls.check.facts import (
    DomainFacts,
    FetchFacts,
    LookupFacts,
    MxFacts,
    ProbeFacts,
    RuaFacts,
    TlsaFacts,
    cert_facts,
)
from smtptls.dane.publish import tlsa_from_cert
from smtptls.dane.tlsa import TLSARecord
from smtptls.dnssec import Security

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
S, INS, B = Security.SECURE, Security.INSECURE, Security.BOGUS

_CA = trustme.CA()


def leaf_der(host: str) -> bytes:
    cert = _CA.issue_cert(host)
    pem = cert.cert_chain_pems[0].bytes()
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


_LEAVES: dict[str, bytes] = {}


def leaf(host: str) -> bytes:
    if host not in _LEAVES:
        _LEAVES[host] = leaf_der(host)
    return _LEAVES[host]


def tlsa_311(host: str) -> TLSARecord:
    return tlsa_from_cert(leaf(host))


def probe(host: str, address: str = "192.0.2.1", *, starttls: bool = True,
          version: str | None = "TLSv1.3", cipher: str | None = "TLS_AES_256_GCM_SHA384",
          pkix: bool | None = True, pkix_type: str | None = None, stage: str | None = None,
          error: str | None = None, not_after: dt.datetime | None = None) -> ProbeFacts:
    chain = (leaf(host),) if version else ()
    cert = cert_facts(chain[0]) if chain else None
    if cert is not None and not_after is not None:
        cert = replace(cert, not_after=not_after)
    if cert is not None:
        cert = replace(cert, not_before=NOW - dt.timedelta(days=30),
                       not_after=not_after or NOW + dt.timedelta(days=90))
    if not version:
        pkix = None
    elif pkix is False and pkix_type is None:
        pkix_type = "certificate-not-trusted"
    return ProbeFacts(address, host, starttls, version, cipher if version else None, chain,
                      stage, error, pkix, None if pkix is None else ("ok" if pkix else
                                                                     "not trusted"),
                      pkix_type, cert)


def host(name: str, pref: int | None = 10, *, sec: Security = S, tlsa: tuple = (),
         tlsa_sec: Security = S, probes: tuple = (), probed: bool | None = None,
         addresses: tuple[str, ...] = ("192.0.2.1",), cname: tuple[str, ...] = ()) -> MxFacts:
    tl = ()
    if tlsa or tlsa_sec is not S or sec is S:
        tl = (TlsaFacts(name, f"_25._tcp.{name}", tlsa_sec, tuple(tlsa)),)
    err = "SERVFAIL" if sec in (Security.BOGUS, Security.INDETERMINATE) else None
    return MxFacts(name, pref, LookupFacts(name, sec, addresses, err),
                   LookupFacts(name, sec, (), err),
                   cname, None, tl, tuple(probes), bool(probes) if probed is None else probed)


def policy_body(mode: str = "enforce", mx: tuple[str, ...] = ("mx1.example.com",),
                max_age: int = 604800, extra: str = "") -> str:
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx]
    return "\n".join(lines + [f"max_age: {max_age}"]) + "\n" + extra


def facts(domain: str = "example.com", *, mx_sec: Security = S,
          hosts: tuple[MxFacts, ...] | None = None, sts: tuple[str, ...] | None = None,
          policy: str | FetchFacts | None = None, tlsrpt: tuple[str, ...] | None = None,
          rua: tuple[RuaFacts, ...] = (), mx_records: tuple[str, ...] | None = None,
          mx_error: str | None = None, nxdomain: bool = False,
          smtp: bool = True) -> DomainFacts:
    if hosts is None:
        hosts = (host("mx1.example.com", probes=(probe("mx1.example.com"),)),)
    if mx_records is None:
        mx_records = tuple(f"{h.preference} {h.host}." for h in hosts if h.preference is not None)
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    if isinstance(policy, str):
        policy = FetchFacts(url, policy, 200, "text/plain")
    if sts is not None and policy is None:
        policy = FetchFacts(url, policy_body(mx=tuple(h.host for h in hosts)), 200,
                            "text/plain")
    return DomainFacts(
        domain=domain, checked_at=NOW,
        mx=LookupFacts(domain, mx_sec, mx_records, mx_error, nxdomain), hosts=hosts,
        sts_txt=LookupFacts(f"_mta-sts.{domain}", mx_sec, sts or ()),
        policy=policy if sts else None,
        tlsrpt_txt=LookupFacts(f"_smtp._tls.{domain}", mx_sec, tlsrpt or ()),
        rua=rua, smtp_probed=smtp)
