"""DANE verification of a server certificate chain (RFC 7672 §3, RFC 7671 §5, RFC 6698).

:func:`verify_chain` takes the TLSA records of the TLSA base domain, the chain the
server sent (DER, leaf first, as sent) and the reference identifiers, and returns a
:class:`DaneVerdict`. It never raises for anything the server sent: unparsable or
hostile certificates end in a verdict. Only caller errors raise (typed).

Rules, in the order they are applied:

1. Only usable records count, after digest algorithm agility
   (:func:`smtptls.dane.tlsa.select_usable`; RFC 7672 §3.1.3, §5; RFC 7671 §9).
   Any usable record that matches authenticates the server: an RRset holding a
   non-matching ``3 1 1`` and a matching ``2 1 1`` succeeds.
2. DANE-EE(3) (RFC 7672 §3.1.1, RFC 7671 §5.1): the record matches the leaf, its
   full DER (selector Cert) or its SubjectPublicKeyInfo DER (selector SPKI); names
   (RFC 7672 §3.2.1) and validity dates are ignored. Nothing else about the leaf is
   looked at, so even certificates this library cannot parse match ``3 0 x``.
3. DANE-TA(2) (RFC 7672 §3.1.2, RFC 7671 §5.2): the trust anchor is
   - a certificate of the chain, above the leaf, whose Cert or SPKI matches; or the
     leaf itself when it is self-signed (a self-issued "depth 0" anchor); or
   - a full certificate ``2 0 0`` or a bare public key ``2 1 0`` carried in the record
     itself, absent from the chain (RFC 7671 §5.2): the topmost certificate used
     must then be signed by that key (and, for a certificate, name it as issuer).
   From the anchor down to the leaf, every link is checked explicitly: issuer name
   equals the subject above it, the signature verifies with the key above it (RSA
   PKCS#1 v1.5, RSA-PSS, ECDSA, Ed25519, Ed448, DSA), every issuing certificate is a
   CA (RFC 5280 §6.1.4 (k): basicConstraints cA for v3 certificates; (n): keyCertSign
   when keyUsage is present; (l)/(m): pathLenConstraint), and every certificate in
   the path, the anchor certificate included, is within its validity period at
   ``now``. The path is built from the certificates the server sent, in any order,
   bounded in depth and work. Then the leaf must match one of the reference
   identifiers (:mod:`smtptls.dane.names`; RFC 7672 §3.2.2, §3.2.3).

``cryptography.x509.verification`` is not used: it rejects SAN-less leaves (which
RFC 7672 §3.2.3 accepts through the CN-ID) and cannot take a bare public key as
anchor. Name constraints in issuing certificates are not enforced (DANE-TA anchors
are chosen by the domain owner; OpenSSL's DANE also ignores them for DANE-TA).

Reasons (``DaneVerdict.reason``, stable, machine-readable): ``dane-ee-match``,
``dane-ta-match``, ``no-usable-records``, ``no-match``, ``name-mismatch``,
``chain-invalid``, ``expired``, ``bad-certificate``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa

from smtptls.dane import names
from smtptls.dane.der import spki_from_tbs as _spki_from_tbs
from smtptls.dane.tlsa import MatchingType, Selector, TLSARecord, Usage, select_usable
from smtptls.errors import DaneError

__all__ = ["DaneVerdict", "verify_chain", "RESULT_TYPES"]

MAX_CHAIN = 16  # certificates examined from the chain as sent
MAX_CERT_DER = 64 * 1024  # octets; larger entries are treated as garbage
MAX_RECORDS = 64  # usable TLSA records examined
MAX_PATH = 8  # certificates in a DANE-TA path, leaf included
MAX_STEPS = 512  # path-building work bound (nodes visited)
MAX_REFERENCE_NAMES = 32

# RFC 8460 §4.3: the TLSRPT result type a failed verdict is reported as.
RESULT_TYPES: dict[str, str | None] = {
    "dane-ee-match": None,
    "dane-ta-match": None,
    "no-usable-records": "tlsa-invalid",
    "no-match": "validation-failure",
    "name-mismatch": "certificate-host-mismatch",
    "chain-invalid": "certificate-not-trusted",
    "expired": "certificate-expired",
    "bad-certificate": "validation-failure",
}
# When several DANE-TA paths fail, the verdict explains the one that got furthest.
_FAILURE_RANK = {"chain-invalid": 1, "expired": 2, "name-mismatch": 3}


@dataclass(frozen=True, slots=True)
class DaneVerdict:
    """The outcome of :func:`verify_chain`.

    ``ok`` and a machine-readable ``reason``; ``matched`` is the record that
    authenticated the server (or, for a failed DANE-TA path, the record of the anchor
    that was found); ``depth`` is the chain depth of the match in OpenSSL's sense
    (0 for the leaf; for an anchor carried in the record, one above the topmost
    certificate, or that certificate's own depth for a bare public key); ``detail``
    is for humans.
    """

    ok: bool
    reason: str
    detail: str
    matched: TLSARecord | None = None
    depth: int | None = None

    @property
    def result_type(self) -> str | None:
        """RFC 8460 §4.3 result type for a failure, None on success."""
        return RESULT_TYPES.get(self.reason, "validation-failure")

    def __bool__(self) -> bool:
        return self.ok


# --- certificates as sent -------------------------------------------------------------


@dataclass(slots=True)
class _Cert:
    """One chain entry: raw DER always, the parsed certificate when it parses."""

    index: int
    der: bytes
    cert: x509.Certificate | None = None
    spki: bytes | None = None
    problem: str | None = None
    _key: object = field(default=None, repr=False)
    _key_done: bool = False
    _digests: dict[tuple[int, int], bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, index: int, raw: object) -> _Cert:
        if not isinstance(raw, bytes | bytearray | memoryview):
            return cls(index, b"", problem="not bytes")
        der = bytes(raw)
        if len(der) > MAX_CERT_DER:
            return cls(index, der, problem=f"larger than {MAX_CERT_DER} octets")
        entry = cls(index, der)
        with warnings.catch_warnings():
            # Real chains hold oddities (a zero serial, ...) cryptography warns about.
            warnings.simplefilter("ignore")
            try:
                entry.cert = x509.load_der_x509_certificate(der)
                entry.spki = _spki_from_tbs(entry.cert.tbs_certificate_bytes)
            except Exception as exc:  # garbage from the peer is data
                entry.cert = None
                entry.problem = f"not a DER certificate ({type(exc).__name__})"
        return entry

    def selected(self, selector: int) -> bytes | None:
        # RFC 6698 §2.1.2: Cert(0) is the certificate DER, SPKI(1) its
        # SubjectPublicKeyInfo DER.
        if selector == Selector.CERT:
            return self.der if self.der else None
        return self.spki

    def matches(self, rec: TLSARecord) -> bool:
        return _match_data(rec, self.selected(rec.selector), self._digests)

    def public_key(self) -> object:
        if not self._key_done:
            self._key_done = True
            if self.cert is not None:
                try:
                    self._key = self.cert.public_key()
                except Exception:  # unsupported or broken key
                    self._key = None
        return self._key


def _match_data(rec: TLSARecord, selected: bytes | None,
                cache: dict[tuple[int, int], bytes] | None = None) -> bool:
    if selected is None:
        return False
    # RFC 6698 §2.1.3: Full(0) compares the bytes, 1 and 2 their SHA2-256/512 digest.
    if rec.mtype == MatchingType.FULL:
        return selected == rec.data
    key = (int(rec.selector), int(rec.mtype))
    if cache is not None and key in cache:
        digest = cache[key]
    else:
        if rec.mtype == MatchingType.SHA256:
            digest = hashlib.sha256(selected).digest()
        elif rec.mtype == MatchingType.SHA512:
            digest = hashlib.sha512(selected).digest()
        else:
            return False
        if cache is not None:
            cache[key] = digest
    return digest == rec.data


# --- signatures and constraints -------------------------------------------------------


def _signed_by(cert: x509.Certificate, key: object) -> bool:
    """Does ``key`` verify the signature on ``cert``? Never raises."""
    try:
        params = cert.signature_algorithm_parameters
        sig = cert.signature
        tbs = cert.tbs_certificate_bytes
        if isinstance(key, rsa.RSAPublicKey):
            if not isinstance(params, padding.PKCS1v15 | padding.PSS):
                return False
            algorithm = cert.signature_hash_algorithm
            if algorithm is None:
                return False
            key.verify(sig, tbs, params, algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            if not isinstance(params, ec.ECDSA):
                return False
            key.verify(sig, tbs, params)
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            if cert.signature_hash_algorithm is not None:
                return False
            key.verify(sig, tbs)
        elif isinstance(key, dsa.DSAPublicKey):
            algorithm = cert.signature_hash_algorithm
            if not isinstance(algorithm, hashes.HashAlgorithm):
                return False
            key.verify(sig, tbs, algorithm)
        else:
            return False
    except InvalidSignature:
        return False
    except Exception:  # unsupported algorithm, malformed signature
        return False
    return True


def _self_issued(cert: x509.Certificate) -> bool:
    try:
        return cert.issuer == cert.subject
    except Exception:
        return False


def _ca_problem(cert: x509.Certificate, below: int) -> str | None:
    """RFC 5280 §6.1.4 checks on an issuing certificate; ``below`` counts the
    non-self-issued intermediates between it and the leaf."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exts = cert.extensions
            try:
                bc = exts.get_extension_for_class(x509.BasicConstraints).value
            except x509.ExtensionNotFound:
                bc = None
            try:
                ku = exts.get_extension_for_class(x509.KeyUsage).value
            except x509.ExtensionNotFound:
                ku = None
    except Exception as exc:  # duplicate or malformed extensions
        return f"malformed extensions ({type(exc).__name__})"
    # RFC 5280 §6.1.4 (k): a v3 issuing certificate has basicConstraints with cA TRUE.
    if cert.version == x509.Version.v3 and (bc is None or not bc.ca):
        return "is not a CA certificate (basicConstraints cA is not set)"
    # RFC 5280 §6.1.4 (n): when keyUsage is present, keyCertSign must be set.
    if ku is not None and not ku.key_cert_sign:
        return "keyUsage does not allow certificate signing"
    # RFC 5280 §6.1.4 (l), (m): pathLenConstraint bounds the intermediates below.
    if bc is not None and bc.path_length is not None and below > bc.path_length:
        return f"pathLenConstraint {bc.path_length} exceeded"
    return None


def _validity_problem(cert: x509.Certificate, now: dt.datetime) -> str | None:
    try:
        before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
    except Exception:
        return "unreadable validity period"
    if now < before:
        return f"not valid before {before:%Y-%m-%d %H:%M}Z"
    if now > after:
        return f"expired {after:%Y-%m-%d %H:%M}Z"
    return None


def _label(cert: x509.Certificate | None) -> str:
    if cert is None:
        return "?"
    try:
        text = cert.subject.rfc4514_string()
    except Exception:
        return "?"
    return (text or "<empty subject>")[:120]


# --- DANE-TA anchors and paths ---------------------------------------------------------


@dataclass(slots=True)
class _Anchor:
    """A trust anchor carried in a record (not in the chain): a cert, or a bare key."""

    record: TLSARecord
    key: object
    cert: x509.Certificate | None


@dataclass(slots=True)
class _Path:
    certs: list[_Cert]  # leaf first; the last one is either the in-chain anchor or
    record: TLSARecord  # is signed by ``anchor``
    depth: int
    anchor: _Anchor | None = None  # None: the last certificate of ``certs`` is the anchor


@dataclass(slots=True)
class _Outcome:
    reason: str
    detail: str
    record: TLSARecord
    depth: int


def _record_anchor(rec: TLSARecord) -> _Anchor | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if rec.selector == Selector.CERT:
                cert = x509.load_der_x509_certificate(rec.data)
                return _Anchor(rec, cert.public_key(), cert)
            return _Anchor(rec, serialization.load_der_public_key(rec.data), None)
        except Exception:  # malformed anchor: the record cannot match anything
            return None


def _record_anchors(records: Sequence[TLSARecord]) -> list[_Anchor]:
    # RFC 7671 §5.2: "2 0 0" and "2 1 0" carry the anchor itself, so the server need
    # not send it; the key (and the certificate's subject) is taken from the record.
    found = (_record_anchor(r) for r in records
             if r.usage == Usage.DANE_TA and r.mtype == MatchingType.FULL)
    return [a for a in found if a is not None]


class _PathFinder:
    """Bounded depth-first search for anchor-to-leaf paths through the sent chain."""

    def __init__(self, chain: list[_Cert], ta_records: list[TLSARecord],
                 anchors: list[_Anchor]) -> None:
        self.pool = [c for c in chain[1:] if c.cert is not None]
        self.ta_records = ta_records
        self.anchors = anchors
        self.steps = 0
        self._sig: dict[tuple[int, int], bool] = {}
        self.leaf_rejected: TLSARecord | None = None

    def _verifies(self, issuer_key_owner: object, key: object, cert: _Cert) -> bool:
        memo = (id(issuer_key_owner), cert.index)
        if memo not in self._sig:
            assert cert.cert is not None
            self._sig[memo] = _signed_by(cert.cert, key)
        return self._sig[memo]

    def _chain_anchor(self, node: _Cert, depth: int) -> TLSARecord | None:
        for rec in self.ta_records:
            if node.matches(rec):
                if depth == 0:
                    # A DANE-TA record matching the leaf makes it an anchor only when
                    # the leaf is self-signed (a self-issued root serving as its own
                    # end entity); otherwise it is not a trust anchor at all.
                    assert node.cert is not None
                    if not (_self_issued(node.cert)
                            and self._verifies(node, node.public_key(), node)):
                        self.leaf_rejected = rec
                        continue
                return rec
        return None

    def paths(self, leaf: _Cert) -> Iterable[_Path]:
        stack: list[list[_Cert]] = [[leaf]]
        while stack and self.steps < MAX_STEPS:
            path = stack.pop()
            self.steps += 1
            node = path[-1]
            depth = len(path) - 1
            assert node.cert is not None
            rec = self._chain_anchor(node, depth)
            if rec is not None:
                yield _Path(list(path), rec, depth)
            for anchor in self.anchors:
                if anchor.cert is not None:
                    try:
                        named = node.cert.issuer == anchor.cert.subject
                    except Exception:
                        named = False
                    if named and self._verifies(anchor, anchor.key, node):
                        yield _Path(list(path), anchor.record, depth + 1, anchor)
                elif self._verifies(anchor, anchor.key, node):
                    yield _Path(list(path), anchor.record, depth, anchor)
            if len(path) >= MAX_PATH:
                continue
            children = []
            for cand in self.pool:
                if any(cand is p for p in path):
                    continue
                assert cand.cert is not None
                try:
                    named = cand.cert.subject == node.cert.issuer
                except Exception:
                    named = False
                if named and self._verifies(cand, cand.public_key(), node):
                    children.append(path + [cand])
            # Depth-first, in the order the server sent the issuers.
            stack.extend(reversed(children))


def _check_path(path: _Path, references: list[str], now: dt.datetime) -> _Outcome:
    certs = [c.cert for c in path.certs if c.cert is not None]
    # The certificates from the leaf up to the anchor certificate (in the chain, or
    # carried in the record); a bare-key anchor has no certificate to check.
    full = list(certs)
    if path.anchor is not None and path.anchor.cert is not None:
        full.append(path.anchor.cert)
    for j in range(1, len(full)):
        below = sum(1 for k in range(1, j) if not _self_issued(full[k]))
        problem = _ca_problem(full[j], below)
        if problem is not None:
            return _Outcome("chain-invalid", f"issuer {_label(full[j])} {problem}",
                            path.record, path.depth)
    for cert in full:
        problem = _validity_problem(cert, now)
        if problem is not None:
            # RFC 7672 §3.1.2: with DANE-TA(2) the certificates' validity dates apply.
            return _Outcome("expired", f"{_label(cert)}: {problem}", path.record, path.depth)
    leaf = certs[0]
    assert leaf is not None
    ok, detail = names.cert_matches(leaf, references)
    if not ok:
        # RFC 7672 §3.2.2: a DANE-TA(2) chain must also match a reference identifier.
        return _Outcome("name-mismatch", detail, path.record, path.depth)
    return _Outcome("dane-ta-match", detail, path.record, path.depth)


# --- the verifier ------------------------------------------------------------------------


def _as_utc(now: dt.datetime) -> dt.datetime:
    if not isinstance(now, dt.datetime):
        raise DaneError(f"now must be a datetime, not {type(now).__name__}")
    return now.replace(tzinfo=dt.UTC) if now.tzinfo is None else now.astimezone(dt.UTC)


def verify_chain(
    records: Iterable[TLSARecord],
    chain: Sequence[bytes],
    reference_names: Sequence[str],
    now: dt.datetime | None = None,
) -> DaneVerdict:
    """Authenticate a server's chain against its TLSA RRset (RFC 7672 §3).

    ``records``: the TLSA RRset of the TLSA base domain (unusable records allowed).
    ``chain``: DER certificates, leaf first, as sent by the server.
    ``reference_names``: the names a DANE-TA(2) leaf must match (RFC 7672 §3.2.2),
    e.g. :attr:`smtptls.dane.decide.MxDecision.reference_names`.
    ``now``: the time DANE-TA(2) validity dates are checked against. This is pure
    code and reads no clock: ``now`` is required when the RRset holds usable DANE-TA
    records, else :class:`~smtptls.errors.DaneError` is raised (DANE-EE ignores dates).

    Never raises for what the server sent; see the module text for the rules.
    """
    recs: list[TLSARecord] = []
    for rec in records:
        if not isinstance(rec, TLSARecord):
            raise DaneError(f"records must be TLSARecord values, not {type(rec).__name__}")
        recs.append(rec)
        if len(recs) > 4 * MAX_RECORDS:
            break
    usable = list(select_usable(recs))[:MAX_RECORDS]
    ee = [r for r in usable if r.usage == Usage.DANE_EE]
    ta = [r for r in usable if r.usage == Usage.DANE_TA]
    if ta and now is None:
        raise DaneError("verify_chain needs 'now' to check DANE-TA(2) validity dates")
    when = _as_utc(now) if now is not None else None
    if isinstance(chain, bytes | bytearray | str):
        raise DaneError("chain must be a sequence of DER certificates, not one value")
    if isinstance(reference_names, str):
        reference_names = [reference_names]
    try:
        names_given = list(itertools.islice(iter(reference_names), MAX_REFERENCE_NAMES))
    except TypeError:
        raise DaneError("reference_names must be a sequence of names") from None
    refs = [n for n in names_given if isinstance(n, str)]

    if not usable:
        why = "the TLSA RRset is empty" if not recs else (
            f"none of the {len(recs)} TLSA record(s) is usable for SMTP "
            "(RFC 7672 §3.1.3, RFC 7671 §9)")
        return DaneVerdict(False, "no-usable-records", why)
    try:
        sent = list(itertools.islice(iter(chain), MAX_CHAIN))
    except TypeError:
        raise DaneError("chain must be a sequence of DER certificates") from None
    if not sent:
        return DaneVerdict(False, "bad-certificate", "the server sent no certificate")
    # The leaf first: a DANE-EE match needs nothing else parsed.
    leaf = _Cert.load(0, sent[0])

    # RFC 7672 §3.1.1: DANE-EE(3) matches the leaf; no name or date checks.
    for rec in ee:
        if leaf.matches(rec):
            return DaneVerdict(True, "dane-ee-match",
                               f"leaf matches {rec.describe()} record", rec, 0)

    if leaf.cert is None:
        return DaneVerdict(False, "bad-certificate",
                           f"the leaf certificate is unusable: {leaf.problem}")
    if not ta:
        return DaneVerdict(False, "no-match",
                           f"the leaf {_label(leaf.cert)} matches none of the {len(ee)} "
                           "usable DANE-EE(3) record(s)")

    # RFC 7672 §3.1.2: DANE-TA(2), the anchor in the chain or in the record.
    assert when is not None
    entries = [leaf] + [_Cert.load(i, raw) for i, raw in enumerate(sent) if i > 0]
    finder = _PathFinder(entries, ta, _record_anchors(ta))
    best: _Outcome | None = None
    for path in finder.paths(leaf):
        outcome = _check_path(path, refs, when)
        if outcome.reason == "dane-ta-match":
            where = (f"anchor {_label(path.certs[-1].cert)} in the chain"
                     if path.anchor is None else "anchor carried in the record")
            return DaneVerdict(True, "dane-ta-match",
                               f"{path.record.describe()} {where}, depth {path.depth}; "
                               f"{outcome.detail}", path.record, path.depth)
        if best is None or _FAILURE_RANK[outcome.reason] > _FAILURE_RANK[best.reason]:
            best = outcome
    if best is not None:
        return DaneVerdict(False, best.reason, best.detail, best.record, best.depth)
    # No path: did any DANE-TA record match a certificate at all?
    matched = next(((rec, c) for c in entries[1:] for rec in ta if c.matches(rec)), None)
    if matched is not None:
        rec, cert = matched
        return DaneVerdict(False, "chain-invalid",
                           f"{rec.describe()} matches chain certificate {cert.index} "
                           f"({_label(cert.cert)}) but it does not issue the leaf's chain",
                           rec, cert.index)
    if finder.leaf_rejected is not None:
        return DaneVerdict(False, "no-match",
                           f"{finder.leaf_rejected.describe()} matches the leaf, which is "
                           "not self-signed and so cannot be its own trust anchor",
                           finder.leaf_rejected)
    shown = f"{len(ee)} DANE-EE and {len(ta)} DANE-TA"
    return DaneVerdict(False, "no-match",
                       f"no certificate of the chain matches the {shown} usable record(s)")
