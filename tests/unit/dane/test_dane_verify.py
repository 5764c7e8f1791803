"""verify_chain with generated certificates (RSA, ECDSA, Ed25519): DANE-EE (RFC 7672
§3.1.1), DANE-TA (§3.1.2, RFC 7671 §5.2), name checks (§3.2), digest agility (RFC 7671
§9), unusable records (§3.1.3) and hostile input."""

from __future__ import annotations

import datetime as dt

import pytest
from dane_certs import DAY, NOW, Issued, key, make_cert, pki, rec, zeros
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtptls.dane import DaneVerdict, TLSARecord, verify_chain
from smtptls.dane.verify import MAX_CERT_DER, RESULT_TYPES
from smtptls.errors import DaneError

HOST = ["mx.example.com"]
KINDS = ["ec", "rsa", "ed25519"]


def verdict(records: list[TLSARecord], chain: list[bytes], names: list[str] = HOST,
            now: dt.datetime = NOW) -> DaneVerdict:
    return verify_chain(records, chain, names, now)


# --- DANE-EE(3) ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"),
                         [(s, m) for s in (0, 1) for m in (0, 1, 2)],
                         ids=lambda v: str(v))
def test_rfc7672_3_1_1_dane_ee_matches_leaf(kind: str, selector: int, mtype: int) -> None:
    p = pki(kind)
    v = verdict([rec(3, selector, mtype, p.leaf)], p.chain)
    assert v.ok and v.reason == "dane-ee-match" and v.depth == 0
    assert v.matched == rec(3, selector, mtype, p.leaf)
    assert v.result_type is None


@pytest.mark.parametrize(
    ("case", "record_of"),
    [
        pytest.param("intermediate", "inter", id="ee-record-of-intermediate"),
        pytest.param("root", "root", id="ee-record-of-root"),
    ],
)
def test_rfc7672_3_1_1_dane_ee_only_matches_the_leaf(case: str, record_of: str) -> None:
    p = pki()
    v = verdict([rec(3, 1, 1, getattr(p, record_of))], p.chain)
    assert not v.ok and v.reason == "no-match"


def test_rfc7672_3_1_1_dane_ee_mismatch() -> None:
    p = pki()
    v = verdict([zeros(3, 1, 1), zeros(3, 0, 1)], p.chain)
    assert not v.ok and v.reason == "no-match" and v.result_type == "validation-failure"


def test_rfc7672_3_2_1_dane_ee_ignores_names() -> None:
    p = pki()
    assert verdict([rec(3, 1, 1, p.leaf)], p.chain, names=["other.example.net"]).ok
    assert verdict([rec(3, 1, 1, p.leaf)], p.chain, names=[]).ok


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        pytest.param(NOW - 400 * DAY, NOW - 30 * DAY, id="expired"),
        pytest.param(NOW + 30 * DAY, NOW + 400 * DAY, id="not-yet-valid"),
    ],
)
def test_rfc7672_3_1_1_dane_ee_ignores_validity_dates(not_before: dt.datetime,
                                                      not_after: dt.datetime) -> None:
    leaf = make_cert(None, key("ec", 7), not_before=not_before, not_after=not_after)
    v = verify_chain([rec(3, 1, 1, leaf)], [leaf.der], ["whatever"], now=None)
    assert v.ok and v.reason == "dane-ee-match"


def test_rfc7672_3_1_1_dane_ee_needs_no_clock() -> None:
    p = pki()
    assert verify_chain([rec(3, 1, 1, p.leaf)], p.chain, HOST).ok


# --- DANE-TA(2) ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("anchor", "depth"), [("inter", 1), ("root", 2)], ids=["intermediate-ta", "root-ta"])
@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (1, 2), (0, 0)],
                         ids=["2-0-1", "2-1-1", "2-1-2", "2-0-0"])
def test_rfc7672_3_1_2_dane_ta_in_chain(kind: str, anchor: str, depth: int, selector: int,
                                        mtype: int) -> None:
    p = pki(kind)
    v = verdict([rec(2, selector, mtype, getattr(p, anchor))], p.chain)
    assert v.ok and v.reason == "dane-ta-match" and v.depth == depth


def test_rfc7672_3_1_2_dane_ta_chain_sent_out_of_order() -> None:
    p = pki()
    v = verdict([rec(2, 1, 1, p.root)], [p.leaf.der, p.root.der, p.inter.der])
    assert v.ok and v.depth == 2


def test_rfc7672_3_2_2_dane_ta_wrong_name() -> None:
    p = pki()
    v = verdict([rec(2, 1, 1, p.inter)], p.chain, names=["mx.example.net"])
    assert not v.ok and v.reason == "name-mismatch"
    assert v.result_type == "certificate-host-mismatch"
    assert v.matched == rec(2, 1, 1, p.inter) and v.depth == 1


def test_rfc7672_3_2_2_dane_ta_any_reference_name() -> None:
    p = pki()
    v = verdict([rec(2, 1, 1, p.inter)], p.chain, names=["example.com", "MX.EXAMPLE.COM."])
    assert v.ok


def test_rfc7672_3_2_3_dane_ta_wildcard_leaf() -> None:
    p = pki()
    leaf = make_cert("mail", key("ec", 8), p.inter, san=["*.example.com"])
    assert verdict([rec(2, 1, 1, p.inter)], [leaf.der, p.inter.der]).ok
    v = verdict([rec(2, 1, 1, p.inter)], [leaf.der, p.inter.der], names=["a.mx.example.com"])
    assert v.reason == "name-mismatch"


@pytest.mark.parametrize(
    ("cn", "ok"), [("mx.example.com", True), ("other.example.com", False)],
    ids=["cn-matches", "cn-mismatch"])
def test_rfc7672_3_2_3_dane_ta_leaf_without_san_uses_cn(cn: str, ok: bool) -> None:
    p = pki()
    leaf = make_cert(cn, key("ec", 9), p.inter)
    v = verdict([rec(2, 1, 1, p.inter)], [leaf.der, p.inter.der])
    assert v.ok is ok
    assert v.reason == ("dane-ta-match" if ok else "name-mismatch")


def test_rfc7672_3_1_2_dane_ta_expired_intermediate() -> None:
    p = pki()
    inter = make_cert("old CA", key("ec", 2), p.root, ca=True, not_after=NOW - DAY)
    leaf = make_cert("mx", key("ec", 3), inter, san=HOST)
    v = verdict([rec(2, 1, 1, p.root)], [leaf.der, inter.der, p.root.der])
    assert not v.ok and v.reason == "expired" and v.result_type == "certificate-expired"


def test_rfc7672_3_1_2_dane_ta_expired_anchor_certificate() -> None:
    p = pki()
    inter = make_cert("old CA", key("ec", 2), p.root, ca=True, not_after=NOW - DAY)
    leaf = make_cert("mx", key("ec", 3), inter, san=HOST)
    v = verdict([rec(2, 0, 1, inter)], [leaf.der, inter.der])
    assert not v.ok and v.reason == "expired"


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(NOW - 400 * DAY, NOW - DAY), (NOW + DAY, NOW + 400 * DAY)],
    ids=["leaf-expired", "leaf-not-yet-valid"])
def test_rfc7672_3_1_2_dane_ta_leaf_validity(not_before: dt.datetime,
                                             not_after: dt.datetime) -> None:
    p = pki()
    leaf = make_cert("mx", key("ec", 3), p.inter, san=HOST, not_before=not_before,
                     not_after=not_after)
    v = verdict([rec(2, 1, 1, p.inter)], [leaf.der, p.inter.der])
    assert not v.ok and v.reason == "expired"
    # The same chain is fine with a DANE-EE record (dates ignored).
    assert verdict([rec(3, 1, 1, leaf), rec(2, 1, 1, p.inter)], [leaf.der, p.inter.der]).ok


def test_rfc7672_3_1_2_dane_ta_requires_now() -> None:
    p = pki()
    with pytest.raises(DaneError):
        verify_chain([rec(2, 1, 1, p.inter)], p.chain, HOST)


def test_rfc7672_3_1_2_naive_now_is_utc() -> None:
    p = pki()
    assert verify_chain([rec(2, 1, 1, p.inter)], p.chain, HOST, NOW.replace(tzinfo=None)).ok


# --- anchors carried in the record (RFC 7671 §5.2) ------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_rfc7671_5_2_key_only_ta_not_sent(kind: str) -> None:
    p = pki(kind)
    # "2 1 0" with the intermediate's key: the server sends only the leaf.
    v = verdict([rec(2, 1, 0, p.inter)], [p.leaf.der])
    assert v.ok and v.reason == "dane-ta-match" and v.depth == 0
    # "2 1 0" with the root's key: the server sends leaf and intermediate.
    v = verdict([rec(2, 1, 0, p.root)], [p.leaf.der, p.inter.der])
    assert v.ok and v.depth == 1


def test_rfc7671_5_2_full_cert_ta_not_sent() -> None:
    p = pki()
    v = verdict([rec(2, 0, 0, p.inter)], [p.leaf.der])
    assert v.ok and v.depth == 1
    v = verdict([rec(2, 0, 0, p.root)], [p.leaf.der, p.inter.der])
    assert v.ok and v.depth == 2


def test_rfc7671_5_2_key_only_ta_of_unrelated_key() -> None:
    p = pki()
    other = make_cert("x", key("ec", 20))
    v = verdict([rec(2, 1, 0, other)], [p.leaf.der, p.inter.der])
    assert not v.ok and v.reason == "no-match"


def test_rfc7671_5_2_full_ta_with_other_subject_is_not_issuer() -> None:
    p = pki()
    # Same key as the intermediate, but a different subject: not the leaf's issuer.
    impostor = make_cert("Someone Else", key("ec", 2), ca=True)
    v = verdict([rec(2, 0, 0, impostor)], [p.leaf.der])
    assert not v.ok


def test_rfc7671_5_2_digest_ta_not_sent_fails() -> None:
    p = pki()
    v = verdict([rec(2, 1, 1, p.root)], [p.leaf.der, p.inter.der])
    assert not v.ok and v.reason == "no-match"


def test_rfc7671_5_2_malformed_full_ta() -> None:
    p = pki()
    broken = TLSARecord(2, 0, 0, p.inter.der[1:])
    assert not verdict([broken], [p.leaf.der]).ok
    assert not verdict([TLSARecord(2, 1, 0, b"\x30\x03\x02\x01\x00")], [p.leaf.der]).ok


# --- depth-0 anchors and non-anchors -------------------------------------------------------


def test_rfc7672_3_1_2_self_signed_leaf_as_its_own_anchor() -> None:
    ss = make_cert("mx.example.com", key("ec", 11), ca=True, san=HOST)
    assert verdict([rec(2, 0, 1, ss)], [ss.der]).ok
    v = verdict([rec(2, 0, 1, ss)], [ss.der], names=["whatever.example"])
    assert v.reason == "name-mismatch"


def test_rfc7672_3_1_2_ta_record_matching_issued_leaf_is_not_an_anchor() -> None:
    p = pki()
    v = verdict([rec(2, 1, 1, p.leaf)], p.chain)
    assert not v.ok and v.reason == "no-match" and "not self-signed" in v.detail


@pytest.mark.parametrize(
    ("ca", "key_usage", "path_len"),
    [
        pytest.param(False, "ca", None, id="ca-false"),
        pytest.param(None, None, None, id="no-basic-constraints"),
        pytest.param(True, "ee", None, id="key-usage-without-cert-sign"),
    ],
)
def test_rfc5280_6_1_4_intermediate_must_be_ca(ca: bool | None, key_usage: str | None,
                                                 path_len: int | None) -> None:
    p = pki()
    inter = make_cert("Not A CA", key("ec", 2), p.root, ca=ca, key_usage=key_usage)
    leaf = make_cert("mx", key("ec", 3), inter, san=HOST)
    v = verdict([rec(2, 1, 1, p.root)], [leaf.der, inter.der, p.root.der])
    assert not v.ok and v.reason == "chain-invalid"
    assert v.result_type == "certificate-not-trusted"


def test_rfc5280_6_1_4_path_length_constraint() -> None:
    root = make_cert("Root", key("ec", 1), ca=True, path_len=0)
    inter1 = make_cert("CA 1", key("ec", 2), root, ca=True)
    inter2 = make_cert("CA 2", key("ec", 4), inter1, ca=True)
    leaf = make_cert("mx", key("ec", 3), inter2, san=HOST)
    chain = [leaf.der, inter2.der, inter1.der, root.der]
    assert verdict([rec(2, 1, 1, root)], chain).reason == "chain-invalid"
    # Anchored lower, the constrained root is not in the path.
    assert verdict([rec(2, 1, 1, inter1)], chain).ok


def test_rfc7672_3_1_2_bad_signature_breaks_the_chain() -> None:
    p = pki()
    # Names the intermediate as issuer, but is signed by another key.
    fake_issuer = Issued(p.inter.cert, key("ec", 30))
    leaf = make_cert("mx", key("ec", 3), fake_issuer, san=HOST)
    v = verdict([rec(2, 1, 1, p.inter)], [leaf.der, p.inter.der])
    assert not v.ok and v.reason == "chain-invalid"


@pytest.mark.parametrize(
    "signer",
    [
        pytest.param("rsa-pss", id="rsa-pss"),
        pytest.param("ec384", id="ecdsa-p384"),
        pytest.param("mixed", id="rsa-root-ec-leaf"),
    ],
)
def test_rfc7672_3_1_2_signature_algorithms(signer: str) -> None:
    if signer == "rsa-pss":
        root = make_cert("Root", key("rsa", 1), ca=True)
        leaf = make_cert("mx", key("rsa", 3), root, san=HOST, pss=True)
    elif signer == "ec384":
        root = make_cert("Root", key("ec384", 1), ca=True)
        leaf = make_cert("mx", key("ec384", 3), root, san=HOST)
    else:
        root = make_cert("Root", key("rsa", 1), ca=True)
        leaf = make_cert("mx", key("ec", 3), root, san=HOST)
    v = verdict([rec(2, 1, 1, root)], [leaf.der, root.der])
    assert v.ok and v.depth == 1


# --- RRsets with several records ------------------------------------------------------------


def test_rfc7672_3_1_ee_mismatch_with_ta_match_succeeds() -> None:
    """An RRset {3 1 1 (not matching), 2 1 1 (matching)} authenticates: any usable
    record that matches is enough."""
    p = pki()
    v = verdict([zeros(3, 1, 1), rec(2, 1, 1, p.inter)], p.chain)
    assert v.ok and v.reason == "dane-ta-match"


def test_rfc7672_3_1_ee_match_with_ta_mismatch_succeeds() -> None:
    p = pki()
    v = verdict([rec(3, 1, 1, p.leaf), zeros(2, 1, 1)], p.chain)
    assert v.ok and v.reason == "dane-ee-match"


@pytest.mark.parametrize(
    ("build", "ok"),
    [
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), zeros(3, 1, 2)], False,
                     id="3-1-1-match+3-1-2-mismatch-fails"),
        pytest.param(lambda p: [zeros(3, 1, 1), rec(3, 1, 2, p.leaf)], True,
                     id="3-1-1-mismatch+3-1-2-match-ok"),
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), zeros(2, 1, 2)], True,
                     id="3-1-1-match+2-1-2-other-usage-ok"),
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), zeros(3, 0, 2)], True,
                     id="3-1-1-match+3-0-2-other-selector-ok"),
        pytest.param(lambda p: [rec(3, 1, 0, p.leaf), zeros(3, 1, 2)], True,
                     id="3-1-0-match+3-1-2-mismatch-full-exempt"),
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), TLSARecord(3, 1, 2, bytes(32))], True,
                     id="3-1-1-match+malformed-3-1-2-ok"),
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), TLSARecord(3, 1, 7, bytes(64))], True,
                     id="3-1-1-match+unknown-mtype-ok"),
        pytest.param(lambda p: [rec(2, 1, 1, p.inter), zeros(2, 1, 2)], False,
                     id="2-1-1-match+2-1-2-mismatch-fails"),
        pytest.param(lambda p: [rec(2, 1, 1, p.inter), zeros(2, 0, 2)], True,
                     id="2-1-1-match+2-0-2-other-selector-ok"),
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), zeros(3, 1, 2), rec(2, 1, 1, p.inter)],
                     True, id="ee-suppressed-but-ta-matches"),
    ],
)
def test_rfc7671_9_digest_agility_vectors(build, ok: bool) -> None:
    p = pki()
    assert verdict(build(p), p.chain).ok is ok


def test_rfc7671_8_1_rollover_current_and_next_key() -> None:
    p = pki()
    nxt = make_cert("mx", key("ec", 40), p.inter, san=HOST)
    rrset = [rec(3, 1, 1, p.leaf), rec(3, 1, 1, nxt)]
    assert verdict(rrset, p.chain).ok
    assert verdict(rrset, [nxt.der, p.inter.der]).ok


def test_rfc7671_8_ee_plus_issuer_rollover_set() -> None:
    """The usual rollover set {3 1 1 current key, 2 1 1 issuer}: after a key change
    the 3 1 1 no longer matches, the 2 1 1 keeps the server authenticated."""
    p = pki()
    new_leaf = make_cert("mx", key("ec", 41), p.inter, san=HOST)
    rrset = [rec(3, 1, 1, p.leaf), rec(2, 1, 1, p.inter)]
    assert verdict(rrset, p.chain).reason == "dane-ee-match"
    assert verdict(rrset, [new_leaf.der, p.inter.der]).reason == "dane-ta-match"


@pytest.mark.parametrize(
    "rrset",
    [
        pytest.param(lambda p: [], id="empty"),
        pytest.param(lambda p: [rec(0, 0, 1, p.root), rec(1, 1, 1, p.leaf)], id="pkix-only"),
        pytest.param(lambda p: [TLSARecord(3, 1, 1, bytes(16))], id="malformed-only"),
        pytest.param(lambda p: [TLSARecord(10, 1, 1, bytes(32))], id="unknown-usage-only"),
    ],
)
def test_rfc7672_3_1_3_no_usable_records(rrset) -> None:
    p = pki()
    v = verify_chain(rrset(p), p.chain, HOST)
    assert not v.ok and v.reason == "no-usable-records" and v.result_type == "tlsa-invalid"


def test_rfc7672_3_1_3_pkix_records_never_authenticate() -> None:
    p = pki()
    assert not verdict([rec(1, 1, 1, p.leaf), rec(0, 0, 1, p.root)], p.chain).ok


# --- hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain", "reason"),
    [
        pytest.param([], "bad-certificate", id="empty-chain"),
        pytest.param([b"garbage"], "bad-certificate", id="garbage-leaf"),
        pytest.param([b"\x30\x82\xff\xff"], "bad-certificate", id="truncated-der"),
        pytest.param(["not bytes"], "bad-certificate", id="leaf-not-bytes"),
        pytest.param([b"\x30" * (MAX_CERT_DER + 1)], "bad-certificate", id="oversized-leaf"),
    ],
)
def test_garbage_leaf_is_a_verdict(chain: list, reason: str) -> None:
    v = verdict([zeros(3, 1, 1), zeros(2, 1, 1)], chain)
    assert not v.ok and v.reason == reason


def test_garbage_leaf_still_matches_cert_selector_ee() -> None:
    # DANE-EE Cert(0) compares the DER as sent, even when it does not parse.
    garbage = b"\x01\x02 not a certificate"
    assert verdict([rec(3, 0, 1, garbage)], [garbage]).ok


def test_garbage_intermediate_entries_are_skipped() -> None:
    p = pki()
    chain = [p.leaf.der, b"junk", p.inter.der[:-5], p.inter.der, p.root.der]
    assert verdict([rec(2, 1, 1, p.root)], chain).ok


def test_long_chain_is_bounded() -> None:
    p = pki()
    chain = [p.leaf.der] + [p.root.der] * 40 + [p.inter.der]
    v = verdict([rec(2, 1, 1, p.inter)], chain)
    assert not v.ok  # the issuer past the bound is not looked at
    assert verdict([rec(2, 1, 1, p.inter)], [p.leaf.der, p.inter.der] + [p.root.der] * 40).ok


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda p: verify_chain(["3 1 1 00"], p.chain, HOST, NOW), id="records-text"),
        pytest.param(lambda p: verify_chain([zeros(3, 1, 1)], p.leaf.der, HOST, NOW),
                     id="chain-single-bytes"),
        pytest.param(lambda p: verify_chain([zeros(2, 1, 1)], p.chain, HOST, "2025-01-01"),
                     id="now-string"),
        pytest.param(lambda p: verify_chain([zeros(3, 1, 1)], 42, HOST, NOW), id="chain-int"),
        pytest.param(lambda p: verify_chain([zeros(3, 1, 1)], p.chain, None, NOW),
                     id="names-none"),
    ],
)
def test_caller_errors_are_typed(call) -> None:
    with pytest.raises(DaneError):
        call(pki())


def test_result_types_cover_every_reason() -> None:
    assert set(RESULT_TYPES) == {"dane-ee-match", "dane-ta-match", "no-usable-records",
                                 "no-match", "name-mismatch", "chain-invalid", "expired",
                                 "bad-certificate"}


# --- properties -----------------------------------------------------------------------------


def _real_ders() -> list[bytes]:
    p = pki()
    return [p.leaf.der, p.inter.der, p.root.der]


def _mutate(der: bytes, data: st.DataObject) -> bytes:
    i = data.draw(st.integers(0, len(der) - 1))
    b = data.draw(st.integers(0, 255))
    return der[:i] + bytes([b]) + der[i + 1:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_verify_chain_only_verdicts(data: st.DataObject) -> None:
    ders = _real_ders()
    entries = data.draw(st.lists(st.one_of(
        st.binary(max_size=200),
        st.sampled_from(ders),
        st.sampled_from(ders).map(lambda d: _mutate(d, data)),
        st.sampled_from(ders).map(lambda d: d[: len(d) // 2]),
    ), max_size=5))
    usage = st.sampled_from([0, 1, 2, 3, 4, 255])
    selector = st.sampled_from([0, 1, 2])
    mtype = st.sampled_from([0, 1, 2, 3])
    plain = st.builds(TLSARecord, usage, selector, mtype, st.binary(min_size=1, max_size=80))
    derived = st.builds(lambda u, s, m, d: rec(u, s, m, d), st.sampled_from([2, 3]),
                        st.sampled_from([0, 1]), st.sampled_from([0, 1, 2]),
                        st.sampled_from(ders).map(lambda d: d))
    records = data.draw(st.lists(st.one_of(plain, derived), max_size=5))
    names = data.draw(st.lists(st.text(max_size=30), max_size=3))
    v = verify_chain(records, entries, names, NOW)
    assert isinstance(v, DaneVerdict)
    assert v.reason in RESULT_TYPES
    assert v.ok == (v.reason in ("dane-ee-match", "dane-ta-match"))


@pytest.mark.parametrize(
    ("records", "names", "reason"),
    [
        pytest.param(lambda k, other: [zeros(2, 1, 1)], HOST, "no-match", id="no-anchor"),
        pytest.param(lambda k, other: [rec(2, 1, 0, other)], HOST, "no-match",
                     id="unrelated-key-anchor"),
        pytest.param(lambda k, other: [rec(2, 1, 0, k)], ["wrong.example"], "name-mismatch",
                     id="every-path-fails-names"),
    ],
)
def test_adversarial_chain_work_is_bounded(records, names: list[str], reason: str) -> None:
    """Fifteen self-issued "CA" certificates signed by one key: every one verifies every
    other, so the paths are many; the search is bounded and still ends in a verdict."""
    k = key("ec", 90)
    cas = [make_cert("CA", k, ca=True) for _ in range(15)]
    leaf = make_cert("mx", key("ec", 91), cas[0], san=HOST)
    other = make_cert("x", key("ec", 92))
    ca_spki = cas[0].spki
    v = verdict(records(ca_spki, other), [leaf.der] + [c.der for c in cas], names)
    assert not v.ok and v.reason == reason
