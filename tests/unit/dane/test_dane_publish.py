"""Publishing: records from certificates and keys, and key rollover advice (RFC 7671 §8,
RFC 7672 §3.1)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from dane_certs import NOW, key, make_cert, pki, rec, zeros
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.dane import (
    TLSARecord,
    load_certificates,
    rollover_advice,
    tlsa_from_cert,
    verify_chain,
)
from smtptls.dane.publish import Advice
from smtptls.errors import DaneError


def _pem_public(k) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.PEM,
                                       serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_private(k, password: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


# --- tlsa_from_cert --------------------------------------------------------------------------


def test_rfc7671_5_1_default_is_3_1_1() -> None:
    p = pki()
    assert tlsa_from_cert(p.leaf.cert) == rec(3, 1, 1, p.leaf)
    assert tlsa_from_cert(p.leaf.cert).to_text().startswith("3 1 1 ")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda p: p.leaf.cert, id="certificate"),
        pytest.param(lambda p: p.leaf.pem, id="pem-bytes"),
        pytest.param(lambda p: p.leaf.pem.decode(), id="pem-str"),
        pytest.param(lambda p: p.leaf.der, id="der"),
        pytest.param(lambda p: p.leaf.pem + p.inter.pem, id="pem-bundle-first-cert"),
        pytest.param(lambda p: p.leaf.cert.public_key(), id="public-key"),
        pytest.param(lambda p: p.leaf.key, id="private-key"),
        pytest.param(lambda p: _pem_public(p.leaf.key), id="pem-public-key"),
        pytest.param(lambda p: _pem_private(p.leaf.key), id="pem-private-key"),
        pytest.param(lambda p: p.leaf.spki, id="der-public-key"),
    ],
)
@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_rfc6698_2_1_tlsa_from_cert_inputs(source, kind: str) -> None:
    p = pki(kind)
    assert tlsa_from_cert(source(p)) == rec(3, 1, 1, p.leaf)


@pytest.mark.parametrize(("usage", "selector", "mtype"),
                         [(u, s, m) for u in (2, 3) for s in (0, 1) for m in (0, 1, 2)])
def test_rfc6698_2_1_generated_records_verify(usage: int, selector: int, mtype: int) -> None:
    p = pki()
    source = p.leaf if usage == 3 else p.inter
    record = tlsa_from_cert(source.cert, usage, selector, mtype)
    assert record == rec(usage, selector, mtype, source)
    assert verify_chain([record], p.chain, ["mx.example.com"], NOW).ok


@pytest.mark.parametrize(
    ("source", "args"),
    [
        pytest.param(lambda p: p.leaf.cert.public_key(), (3, 0, 1), id="key-with-cert-selector"),
        pytest.param(lambda p: p.leaf.cert, (7, 1, 1), id="unknown-usage"),
        pytest.param(lambda p: p.leaf.cert, (3, 1, 5), id="unknown-mtype"),
        pytest.param(lambda p: b"not a certificate", (3, 1, 1), id="garbage-bytes"),
        pytest.param(lambda p: b"-----BEGIN NOTHING-----\n", (3, 1, 1), id="pem-without-cert"),
        pytest.param(lambda p: _pem_private(p.leaf.key, b"secret"), (3, 1, 1),
                     id="encrypted-private-key"),
        pytest.param(lambda p: 42, (3, 1, 1), id="wrong-type"),
        pytest.param(lambda p: b"x" * (1024 * 1024 + 1), (3, 1, 1), id="oversized"),
    ],
)
def test_tlsa_from_cert_errors_are_typed(source, args: tuple) -> None:
    with pytest.raises(DaneError):
        tlsa_from_cert(source(pki()), *args)


def test_load_certificates_bundle_order_and_der() -> None:
    p = pki()
    certs = load_certificates(p.leaf.pem + b"junk\n" + p.inter.pem + p.root.pem)
    assert [c.subject for c in certs] == [p.leaf.cert.subject, p.inter.cert.subject,
                                          p.root.cert.subject]
    assert load_certificates(p.root.der) == [p.root.cert]
    assert load_certificates(b"garbage") == []


# --- rollover advice ---------------------------------------------------------------------------


def codes(advice: Advice) -> set[str]:
    return {f.code for f in advice.findings}


def test_rfc7671_8_1_current_only_is_not_ready_for_rollover() -> None:
    p = pki()
    a = rollover_advice([rec(3, 1, 1, p.leaf)], p.leaf.pem + p.inter.pem)
    assert not a.safe and {"current-covered", "no-next-key"} <= codes(a)
    assert a.current_matches == (rec(3, 1, 1, p.leaf),)


def test_rfc7671_8_1_current_plus_next_key_is_safe() -> None:
    p = pki()
    nxt = key("ec", 70)
    nxt_rec = tlsa_from_cert(nxt)
    a = rollover_advice([rec(3, 1, 1, p.leaf), nxt_rec], [p.leaf.cert, p.inter.cert], nxt)
    assert a.safe and "next-covered" in codes(a) and a.next_matches == (nxt_rec,)
    # Without saying which key is next, a spare DANE-EE record counts as prepared.
    b = rollover_advice([rec(3, 1, 1, p.leaf), nxt_rec], [p.leaf.cert, p.inter.cert])
    assert b.safe and "spare-ee-record" in codes(b)


def test_rfc7671_8_1_next_key_not_published_suggests_record() -> None:
    p = pki()
    nxt = key("ec", 71)
    a = rollover_advice([rec(3, 1, 1, p.leaf)], [p.leaf.cert, p.inter.cert],
                        _pem_private(nxt))
    assert not a.safe and "next-not-published" in codes(a)
    suggestion = tlsa_from_cert(nxt).to_text()
    assert any(suggestion in f.message for f in a.findings)
    # The private key's bytes never appear in the advice.
    assert all("PRIVATE" not in f.message for f in a.findings)


def test_rfc7671_8_issuer_record_covers_next_certificate() -> None:
    p = pki()
    new_leaf = make_cert("mx.example.com", key("ec", 72), p.inter, san=["mx.example.com"])
    published = [rec(3, 1, 1, p.leaf), rec(2, 1, 1, p.inter)]
    a = rollover_advice(published, [p.leaf.cert, p.inter.cert], new_leaf.cert)
    assert a.safe and a.next_matches == (rec(2, 1, 1, p.inter),)
    b = rollover_advice([rec(2, 1, 1, p.inter)], [p.leaf.cert, p.inter.cert])
    assert b.safe and "issuer-covers-renewal" in codes(b)


def test_rfc7671_8_next_from_other_issuer_not_covered() -> None:
    p = pki()
    other = pki("rsa")
    a = rollover_advice([rec(2, 1, 1, p.inter)], [p.leaf.cert, p.inter.cert],
                        [other.leaf.cert, other.inter.cert])
    assert not a.safe and "next-not-published" in codes(a)


def test_rfc7672_3_1_2_ta_record_but_chain_without_issuer() -> None:
    p = pki()
    a = rollover_advice([rec(2, 1, 1, p.inter)], p.leaf.cert)
    assert not a.safe and {"ta-not-sent", "current-not-covered"} <= codes(a)


def test_rfc7671_9_inconsistent_digests_flagged() -> None:
    p = pki()
    a = rollover_advice([rec(3, 1, 1, p.leaf), zeros(3, 1, 2)], [p.leaf.cert])
    assert not a.safe and "digest-agility-mismatch" in codes(a)
    assert "current-not-covered" in codes(a)


@pytest.mark.parametrize(
    ("published", "code"),
    [
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), rec(1, 1, 1, p.leaf)], "unusable-record",
                     id="pkix-record"),
        pytest.param(lambda p: [rec(3, 1, 0, p.leaf)], "full-record", id="full-record"),
        pytest.param(lambda p: [rec(3, 1, 2, p.leaf)], "no-sha256", id="sha512-only"),
        pytest.param(lambda p: [rec(3, 0, 1, p.leaf)], "ee-cert-selector", id="3-0-1"),
        pytest.param(lambda p: [rec(3, 0, 1, p.leaf)], "prefer-3-1-1", id="prefer-3-1-1"),
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf)], "keep-old-records", id="keep-old"),
    ],
)
def test_rfc7671_8_findings(published, code: str) -> None:
    p = pki()
    assert code in codes(rollover_advice(published(p), [p.leaf.cert, p.inter.cert]))


def test_rfc7671_8_nothing_matches_current() -> None:
    p = pki()
    a = rollover_advice([zeros(3, 1, 1)], p.leaf.pem)
    assert not a.safe and a.errors and a.errors[0].code == "current-not-covered"


@pytest.mark.parametrize(
    ("published", "current"),
    [
        pytest.param(["3 1 1 00"], lambda p: p.leaf.cert, id="records-not-typed"),
        pytest.param([], lambda p: b"no certificate", id="current-garbage"),
        pytest.param([], lambda p: [], id="current-empty"),
        pytest.param([], lambda p: [1, 2], id="current-wrong-items"),
    ],
)
def test_rollover_advice_errors_are_typed(published: list, current) -> None:
    with pytest.raises(DaneError):
        rollover_advice(published, current(pki()))


def test_records_are_tlsa_records() -> None:
    assert isinstance(tlsa_from_cert(pki().leaf.cert), TLSARecord)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400), st.sampled_from([b"", b"-----BEGIN CERTIFICATE-----\n",
                                                 b"-----BEGIN PUBLIC KEY-----\n",
                                                 b"-----BEGIN PRIVATE KEY-----\n"]))
def test_property_publish_inputs_only_typed_errors(raw: bytes, prefix: bytes) -> None:
    data = prefix + raw
    try:
        record = tlsa_from_cert(data)
    except DaneError:
        record = None
    assert record is None or isinstance(record, TLSARecord)
    try:
        certs = load_certificates(data)
    except DaneError:
        certs = []
    assert isinstance(certs, list)
