"""Publishing TLSA records and judging key rollovers (RFC 7671 §8, RFC 7672 §3.1).

Pure: certificates and keys in (objects or PEM/DER bytes), records and advice out.

- :func:`tlsa_from_cert` builds the record for a certificate or key.
- :func:`rollover_advice` looks at a published TLSA RRset, the chain the server
  sends now and, optionally, the next certificate or key, and says whether a
  rollover is safe, with one :class:`Finding` per observation.

What a safe rollover needs (RFC 7671 §8.1, §8.4; RFC 7672 §3.1): some usable record
matches the current chain, so nothing breaks today; and the next certificate is
covered before it is deployed, either by a DANE-EE record for the next key published
next to the current one (``3 1 1`` current + ``3 1 1`` next: the recommended form,
RFC 7671 §5.1), or by a DANE-TA record for the issuing CA that also issued the next
certificate (``2 0 1`` or ``2 1 1`` + the full chain sent). Old records stay until the
switch is done and their TTL has passed.

Rules the server side must keep at all times, each reported as a finding:

- every (usage, selector, matching type) combination published has a record that
  matches the live chain (RFC 7672 §4, RFC 7671 §8): a client may support only some
  combinations, and digest agility ignores weaker digests (``combination-not-covered``,
  ``digest-agility-mismatch``, RFC 7671 §9);
- a server whose DANE authentication rests on DANE-TA(2) sends the trust anchor
  certificate in its chain, even a self-signed root, unless the records are all
  ``2 0 0`` and so carry it (RFC 7672 §3.1.2, RFC 7671 §5.2; ``ta-not-sent``);
- some usable record matches the live chain (RFC 7672 §2.2; ``current-not-covered``).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x448,
    x25519,
)

from smtptls.dane.der import spki_from_tbs as _spki_from_tbs
from smtptls.dane.tlsa import (
    MatchingType,
    Selector,
    TLSARecord,
    Usage,
    select_usable,
    unusable_reason,
)
from smtptls.dane.verify import _Cert, _match_data, _record_anchor, _signed_by
from smtptls.errors import DaneError

__all__ = [
    "Advice",
    "Finding",
    "load_certificates",
    "rollover_advice",
    "tlsa_from_cert",
]

MAX_INPUT = 1024 * 1024  # octets of PEM/DER accepted
MAX_CERTS = 16

_PUBLIC = (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey,
           ed448.Ed448PublicKey, dsa.DSAPublicKey, x25519.X25519PublicKey,
           x448.X448PublicKey)
_PRIVATE = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey, dsa.DSAPrivateKey, x25519.X25519PrivateKey,
            x448.X448PrivateKey)
_PEM_CERT = re.compile(
    rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


def _as_bytes(data: bytes | str) -> bytes:
    raw = data.encode("ascii", "replace") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_INPUT:
        raise DaneError(f"certificate input larger than {MAX_INPUT} octets")
    return raw


def load_certificates(data: bytes | str) -> list[x509.Certificate]:
    """All certificates of a PEM bundle (in order), or the one certificate of DER."""
    raw = _as_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if b"-----BEGIN" in raw:
            blocks = _PEM_CERT.findall(raw)
            if len(blocks) > MAX_CERTS:
                raise DaneError(f"more than {MAX_CERTS} certificates")
            certs = []
            for i, block in enumerate(blocks):
                try:
                    certs.append(x509.load_pem_x509_certificate(block))
                except ValueError as exc:
                    raise DaneError(f"PEM certificate {i + 1} is invalid: {exc}") from None
            return certs
        try:
            return [x509.load_der_x509_certificate(raw)]
        except ValueError:
            return []


def _load_key_or_cert(data: bytes | str) -> x509.Certificate | Any:
    raw = _as_bytes(data)
    certs = load_certificates(raw)
    if certs:
        return certs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if b"-----BEGIN" in raw:
            if b"PRIVATE KEY-----" in raw:
                try:
                    return serialization.load_pem_private_key(raw, password=None).public_key()
                except TypeError:
                    raise DaneError("the private key is encrypted; give the certificate "
                                    "or the public key instead") from None
                except ValueError:
                    raise DaneError("not a readable PEM private key") from None
            try:
                return serialization.load_pem_public_key(raw)
            except ValueError:
                raise DaneError("no certificate or public key in the PEM input") from None
        try:
            return serialization.load_der_public_key(raw)
        except ValueError:
            raise DaneError("input is neither a certificate nor a public key "
                            "(PEM or DER)") from None


def _spki(obj: x509.Certificate | Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        exact = _spki_from_tbs(obj.tbs_certificate_bytes)
        if exact is not None:
            return exact
        obj = obj.public_key()
    return obj.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _digest(data: bytes, mtype: MatchingType) -> bytes:
    if mtype == MatchingType.SHA256:
        return hashlib.sha256(data).digest()
    if mtype == MatchingType.SHA512:
        return hashlib.sha512(data).digest()
    return data


def tlsa_from_cert(
    cert_or_key: x509.Certificate | Any | bytes | str,
    usage: int = Usage.DANE_EE,
    selector: int = Selector.SPKI,
    mtype: int = MatchingType.SHA256,
) -> TLSARecord:
    """The TLSA record for a certificate or a key (RFC 6698 §2.1).

    ``cert_or_key``: a ``cryptography`` Certificate, a public key, a private key (its
    public half is used; nothing secret enters the record), or PEM/DER bytes of any of
    those (the first certificate of a PEM bundle). A key allows only selector SPKI(1).
    Defaults give the recommended ``3 1 1`` (RFC 7671 §5.1, RFC 7672 §3.1.1).
    """
    try:
        usage_v, selector_v, mtype_v = Usage(usage), Selector(selector), MatchingType(mtype)
    except ValueError as exc:
        raise DaneError(f"unsupported TLSA parameter: {exc}") from None
    obj = cert_or_key
    if isinstance(obj, bytes | bytearray | memoryview | str):
        obj = _load_key_or_cert(obj if isinstance(obj, str) else bytes(obj))
    if isinstance(obj, _PRIVATE):
        obj = obj.public_key()
    if not isinstance(obj, (x509.Certificate, *_PUBLIC)):
        raise DaneError(f"not a certificate or key: {type(cert_or_key).__name__}")
    if selector_v == Selector.CERT:
        if not isinstance(obj, x509.Certificate):
            raise DaneError("selector Cert(0) needs a certificate, not a bare key")
        selected = obj.public_bytes(serialization.Encoding.DER)
    else:
        try:
            selected = _spki(obj)
        except Exception as exc:  # unsupported key types in odd certificates
            raise DaneError(f"cannot encode the public key: {exc}") from None
    return TLSARecord(usage_v, selector_v, mtype_v, _digest(selected, mtype_v))


# --- rollover advice ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation: ``level`` is ok, info, warning or error; ``code`` is stable."""

    level: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Advice:
    """``safe``: the RRset works now and covers the next certificate or key."""

    safe: bool
    findings: tuple[Finding, ...]
    current_matches: tuple[TLSARecord, ...] = ()
    next_matches: tuple[TLSARecord, ...] = ()
    # What to publish before the next certificate or key is deployed (empty when it is
    # covered or not given): its ``3 1 1`` record (RFC 7671 §5.1, §8.1).
    to_publish: tuple[TLSARecord, ...] = ()
    # A ``2 1 1`` record for an issuer that is in both the current and the next chain:
    # it covers both, and later renewals from that CA too (RFC 7671 §5.2, §8.1).
    issuer_option: TLSARecord | None = None

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == "error")


def _chain_of(value: Any, what: str) -> list[x509.Certificate]:
    if isinstance(value, x509.Certificate):
        return [value]
    if isinstance(value, bytes | bytearray | memoryview | str):
        certs = load_certificates(value if isinstance(value, str) else bytes(value))
        if not certs:
            raise DaneError(f"{what}: no certificate found")
        return certs
    if isinstance(value, Sequence):
        out = []
        for item in list(value)[:MAX_CERTS]:
            if isinstance(item, x509.Certificate):
                out.append(item)
            elif isinstance(item, bytes | bytearray | memoryview):
                out.extend(load_certificates(bytes(item)))
            else:
                raise DaneError(f"{what}: not a certificate: {type(item).__name__}")
        if not out:
            raise DaneError(f"{what}: empty chain")
        return out
    raise DaneError(f"{what}: not a certificate or chain: {type(value).__name__}")


def _entries(certs: Sequence[x509.Certificate]) -> list[_Cert]:
    return [_Cert.load(i, c.public_bytes(serialization.Encoding.DER))
            for i, c in enumerate(certs)]


def _covering(records: Iterable[TLSARecord], chain: list[_Cert]) -> list[TLSARecord]:
    """Records that match this chain: DANE-EE the leaf, DANE-TA an issuer or an anchor
    carried in the record that signed the topmost certificate."""
    out = []
    for rec in records:
        if rec.usage == Usage.DANE_EE:
            if chain and chain[0].matches(rec):
                out.append(rec)
        elif rec.usage == Usage.DANE_TA:
            if any(c.matches(rec) for c in chain[1:]):
                out.append(rec)
            elif rec.mtype == MatchingType.FULL and chain and chain[-1].cert is not None:
                anchor = _record_anchor(rec)
                if anchor is not None and _signed_by(chain[-1].cert, anchor.key):
                    out.append(rec)
    return out


def rollover_advice(
    published: Iterable[TLSARecord],
    current: Any,
    next_cert_or_key: Any | None = None,
) -> Advice:
    """Is ``published`` safe for a certificate or key rollover (RFC 7671 §8)?

    ``current``: the chain the server sends now (leaf first): a Certificate, a list of
    them, or PEM/DER bytes. ``next_cert_or_key``: the next certificate (or chain, leaf
    first), or the next key (public or private; only its public half is used), or None
    when not known yet.
    """
    records = list(published)
    if not all(isinstance(r, TLSARecord) for r in records):
        raise DaneError("published must hold TLSARecord values")
    findings: list[Finding] = []
    chain = _entries(_chain_of(current, "current"))
    usable_all = [r for r in records if unusable_reason(r) is None]
    usable = list(select_usable(records))

    for rec in records:
        why = unusable_reason(rec)
        if why is not None:
            findings.append(Finding("warning", "unusable-record",
                                    f"{rec.to_text()[:40]}…: {why}; SMTP clients ignore it"))
        if rec.mtype == MatchingType.FULL and why is None:
            findings.append(Finding("warning", "full-record",
                                    f"{rec.describe()} publishes a whole certificate or key; "
                                    "prefer a SHA2-256 digest (RFC 7671 §10.1.2)"))

    # RFC 7671 §9: digest agility drops weaker digests; a record that matches but is
    # dropped means the RRset is inconsistent (RFC 7671 §8.4: publish every digest
    # for every certificate or key).
    now_matching = _covering(usable_all, chain)
    current_matches = _covering(usable, chain)
    agility: set[tuple[int, int]] = set()
    for rec in now_matching:
        if rec not in current_matches:
            agility.add((int(rec.usage), int(rec.selector)))
            findings.append(Finding(
                "error", "digest-agility-mismatch",
                f"{rec.describe()} matches the current chain but clients ignore it: the "
                "same usage and selector also has a stronger digest record that does not "
                "match (RFC 7671 §9)"))
    if current_matches:  # else "current-not-covered" below says it all
        findings.extend(_uncovered_combinations(usable_all, now_matching, agility))
    groups: dict[tuple[int, int], set[int]] = {}
    for rec in usable_all:
        groups.setdefault((int(rec.usage), int(rec.selector)), set()).add(int(rec.mtype))
    for (u, s), mtypes in sorted(groups.items()):
        if MatchingType.SHA512 in mtypes and MatchingType.SHA256 not in mtypes:
            findings.append(Finding(
                "warning", "no-sha256",
                f"usage {u} selector {s} has SHA2-512 records but no SHA2-256 one; SHA2-256 "
                "is the digest every client supports (RFC 6698 §6, RFC 7671 §9)"))

    if current_matches:
        shown = ", ".join(r.describe() for r in current_matches[:4])
        findings.append(Finding("ok", "current-covered", f"the current chain matches: {shown}"))
    else:
        findings.append(Finding("error", "current-not-covered",
                                "no usable record matches the current chain: DANE clients "
                                "cannot deliver now"))
    ta_sent = _ta_not_sent(usable, chain, current_matches)
    if ta_sent is not None:
        findings.append(ta_sent)
    if not any(r.usage == Usage.DANE_EE and r.selector == Selector.SPKI for r in usable):
        findings.append(Finding("info", "prefer-3-1-1",
                                "a 3 1 1 record (DANE-EE, SPKI, SHA2-256) is the recommended "
                                "form: it survives renewals with the same key "
                                "(RFC 7671 §5.1)"))
    if any(r.usage == Usage.DANE_EE and r.selector == Selector.CERT for r in usable):
        findings.append(Finding("info", "ee-cert-selector",
                                "3 0 x records change with every certificate, even with the "
                                "same key; publish the new one before each renewal"))

    ta_current = [r for r in current_matches if r.usage == Usage.DANE_TA]
    next_matches: list[TLSARecord] = []
    to_publish: list[TLSARecord] = []
    issuer_option: TLSARecord | None = None
    if next_cert_or_key is None:
        spare = [r for r in usable if r.usage == Usage.DANE_EE and r not in current_matches]
        if ta_current:
            findings.append(Finding("ok", "issuer-covers-renewal",
                                    "a DANE-TA record covers the issuer: a new certificate "
                                    "from the same CA is covered if the full chain is sent"))
        elif spare:
            findings.append(Finding("info", "spare-ee-record",
                                    f"{len(spare)} DANE-EE record(s) match nothing sent now; "
                                    "if they are for the next key, the rollover is prepared"))
        else:
            findings.append(Finding("warning", "no-next-key",
                                    "only the current key is published: before a key change, "
                                    "publish the next key's 3 1 1 record next to the current "
                                    "one and wait at least twice the TTL (RFC 7671 §8.1)"))
        safe = bool(current_matches) and bool(ta_current or spare)
    else:
        nxt = next_cert_or_key
        if isinstance(nxt, bytes | bytearray | memoryview | str):
            nxt = _load_key_or_cert(nxt if isinstance(nxt, str) else bytes(nxt))
        if isinstance(nxt, _PRIVATE):
            nxt = nxt.public_key()
        if isinstance(nxt, _PUBLIC):
            key_rec = tlsa_from_cert(nxt, Usage.DANE_EE, Selector.SPKI, MatchingType.FULL)
            next_matches = [r for r in usable if r.usage == Usage.DANE_EE
                            and r.selector == Selector.SPKI
                            and _matches_spki(r, key_rec.data)]
            next_chain: list[_Cert] = []
        else:
            next_chain = _entries(_chain_of(nxt, "next"))
            next_matches = _covering(usable, next_chain)
            if not next_matches and next_chain[0].cert is not None:
                # The next leaf alone: covered by a DANE-TA record whose certificate in
                # the current chain issued it (the same CA, chain sent as today).
                for rec in ta_current:
                    issuers = [c for c in chain[1:] if c.matches(rec) and c.cert is not None]
                    if any(_signed_by(next_chain[0].cert, c.public_key()) for c in issuers):
                        next_matches.append(rec)
        suggestion = tlsa_from_cert(next_chain[0].cert if next_chain else nxt)
        if not next_matches:
            to_publish.append(suggestion)
            issuer_option = _shared_issuer(chain, next_chain)
        if next_matches:
            shown = ", ".join(r.describe() for r in next_matches[:4])
            findings.append(Finding("ok", "next-covered", f"the next certificate/key matches: "
                                    f"{shown}"))
        else:
            findings.append(Finding("error", "next-not-published",
                                    "no usable record matches the next certificate or key: "
                                    f"publish '{suggestion.to_text()}' next to the current "
                                    "record(s) and wait at least twice the TTL before the "
                                    "switch (RFC 7671 §8.1)"))
        safe = bool(current_matches) and bool(next_matches)
    if any(f.level == "error" for f in findings):
        safe = False
    findings.append(Finding("info", "keep-old-records",
                            "after the switch, keep the old record until the TTL of the "
                            "RRset has passed, then remove it (RFC 7671 §8.1)"))
    return Advice(safe, tuple(findings), tuple(current_matches), tuple(next_matches),
                  tuple(to_publish), issuer_option)


def _shared_issuer(chain: list[_Cert], next_chain: list[_Cert]) -> TLSARecord | None:
    """The ``2 1 1`` record of the nearest issuer of the next chain that the current
    chain sends too (same CA key): publishing it covers both chains."""
    for entry in next_chain[1:]:
        if entry.cert is None:
            continue
        try:
            rec = tlsa_from_cert(entry.cert, Usage.DANE_TA, Selector.SPKI, MatchingType.SHA256)
        except DaneError:
            continue
        if any(c.matches(rec) for c in chain[1:]):
            return rec
    return None


def _carries_anchor(rec: TLSARecord) -> bool:
    # RFC 7671 §5.2.2: "2 0 0" holds the whole trust anchor certificate.
    return (rec.usage == Usage.DANE_TA and rec.selector == Selector.CERT
            and rec.mtype == MatchingType.FULL)


def _ta_not_sent(usable: Sequence[TLSARecord], chain: list[_Cert],
                 current: Sequence[TLSARecord]) -> Finding | None:
    """RFC 7672 §3.1.2, RFC 7671 §5.2: with DANE-TA(2), the server sends the anchor."""
    ta = [r for r in usable if r.usage == Usage.DANE_TA]
    if not ta or all(_carries_anchor(r) for r in ta):
        return None
    if any(r.usage == Usage.DANE_EE for r in current):
        return None  # authentication does not rest on DANE-TA today
    sent = chain[1:] + ([chain[0]] if chain and _is_self_signed(chain[0]) else [])
    if any(c.matches(r) for r in ta if not _carries_anchor(r) for c in sent):
        return None
    top = chain[-1].cert if chain else None
    issuer = "?"
    if top is not None:
        try:
            issuer = top.issuer.rfc4514_string() or "<empty name>"
        except Exception:  # an unreadable name is only shown
            issuer = "?"
    return Finding("warning", "ta-not-sent",
                   "no DANE-TA record matches a certificate the server sends: the server "
                   "must send the trust anchor certificate, even a self-signed root "
                   f"(the chain ends below {issuer[:80]}), unless every DANE-TA record is "
                   "2 0 0 (RFC 7672 §3.1.2, RFC 7671 §5.2)")


def _is_self_signed(entry: _Cert) -> bool:
    cert = entry.cert
    if cert is None:
        return False
    try:
        return cert.issuer == cert.subject and _signed_by(cert, cert.public_key())
    except Exception:  # unsupported key: not a usable anchor
        return False


def _uncovered_combinations(usable: Sequence[TLSARecord], matching: Sequence[TLSARecord],
                            skip: set[tuple[int, int]]) -> list[Finding]:
    """RFC 7672 §4, RFC 7671 §8: each published (usage, selector, matching type)
    combination keeps a record that matches the live chain."""
    covered = {(int(r.usage), int(r.selector), int(r.mtype)) for r in matching}
    out = []
    for combo in sorted({(int(r.usage), int(r.selector), int(r.mtype)) for r in usable}):
        if combo in covered or combo[:2] in skip:
            continue
        u, s, m = combo
        out.append(Finding("error", "combination-not-covered",
                           f"no {u} {s} {m} record matches the current chain: clients that "
                           "use this combination cannot authenticate the server; publish a "
                           f"{u} {s} {m} record for the live chain or remove the others "
                           "(RFC 7672 §4, RFC 7671 §8)"))
    return out


def _matches_spki(rec: TLSARecord, spki: bytes) -> bool:
    return _match_data(rec, spki)
