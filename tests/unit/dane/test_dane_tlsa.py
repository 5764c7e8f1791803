"""TLSA record model: presentation and wire forms (RFC 6698 §2), usability for SMTP
(RFC 7672 §3.1.3) and digest algorithm agility (RFC 7671 §9)."""

from __future__ import annotations

import hashlib

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtptls.dane import (
    MatchingType,
    Selector,
    TLSARecord,
    Usage,
    parse_records,
    select_usable,
    unusable_reason,
    usable_for_smtp,
)
from smtptls.errors import SmtpTlsError, TlsaRecordError

H32 = "ab" * 32
H64 = "cd" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(f"3 1 1 {H32}", (3, 1, 1, bytes.fromhex(H32)), id="plain"),
        pytest.param(f"3 1 1 {H32.upper()}", (3, 1, 1, bytes.fromhex(H32)), id="upper-hex"),
        pytest.param(f"  2 0 2\t{H64}  ", (2, 0, 2, bytes.fromhex(H64)), id="tabs-and-edges"),
        pytest.param(f"3 1 1 {H32[:20]} {H32[20:40]}\n {H32[40:]}", (3, 1, 1, bytes.fromhex(H32)),
                     id="whitespace-inside-hex"),
        pytest.param(f"DANE-EE SPKI SHA2-256 {H32}", (3, 1, 1, bytes.fromhex(H32)),
                     id="rfc7218-mnemonics"),
        pytest.param(f"dane-ta cert sha2-512 {H64}", (2, 0, 2, bytes.fromhex(H64)),
                     id="mnemonics-lower"),
        pytest.param("3 1 0 3059", (3, 1, 0, b"\x30\x59"), id="full-short"),
        pytest.param(f"10 1 1 {H32}", (10, 1, 1, bytes.fromhex(H32)), id="unknown-usage-parses"),
        pytest.param("255 255 255 00", (255, 255, 255, b"\x00"), id="max-octets"),
        pytest.param("3 1 1 0b", (3, 1, 1, b"\x0b"), id="short-digest-parses"),
    ],
)
def test_rfc6698_2_2_from_text(text: str, expected: tuple) -> None:
    rec = TLSARecord.from_text(text)
    assert (rec.usage, rec.selector, rec.mtype, rec.data) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("3 1 1", id="no-data"),
        pytest.param("3 1", id="two-fields"),
        pytest.param(f"256 1 1 {H32}", id="usage-over-255"),
        pytest.param(f"3 -1 1 {H32}", id="negative-selector"),
        pytest.param(f"3 1 x {H32}", id="mtype-not-number"),
        pytest.param(f"3 1 1 {H32}z", id="non-hex"),
        pytest.param(f"3 1 1 {H32}a", id="odd-hex"),
        pytest.param("3 1 1 0x00", id="hex-prefix"),
        pytest.param(f"3 1 1 {'٣' * 4}", id="unicode-digits-in-data"),
        pytest.param(f"٣ 1 1 {H32}", id="unicode-digit-usage"),
        pytest.param(f"0003 1 1 {H32}", id="four-digit-parameter"),
        pytest.param("3 1 0 " + "00" * (65533), id="data-over-rdata-limit"),
    ],
)
def test_rfc6698_2_2_from_text_rejects(text: str) -> None:
    with pytest.raises(TlsaRecordError):
        TLSARecord.from_text(text)


def test_rfc6698_2_2_from_text_rejects_non_string() -> None:
    with pytest.raises(TlsaRecordError):
        TLSARecord.from_text(b"3 1 1 00")  # type: ignore[arg-type]


def test_rfc6698_2_2_to_text_round_trip_and_enums() -> None:
    rec = TLSARecord.from_text(f"DANE-EE SPKI SHA2-256 {H32.upper()}")
    assert rec.to_text() == f"3 1 1 {H32}"
    assert TLSARecord.from_text(rec.to_text()) == rec
    assert rec.usage is Usage.DANE_EE and rec.selector is Selector.SPKI
    assert rec.mtype is MatchingType.SHA256
    assert rec.describe() == "DANE-EE(3) SPKI(1) SHA2-256(1)"
    assert str(rec) == rec.to_text()


def test_rfc6698_2_1_wire_round_trip() -> None:
    rec = TLSARecord(2, 0, 1, bytes(32))
    assert rec.to_wire() == b"\x02\x00\x01" + bytes(32)
    assert TLSARecord.from_wire(rec.to_wire()) == rec
    with pytest.raises(TlsaRecordError):
        TLSARecord.from_wire(b"\x03\x01")
    with pytest.raises(TlsaRecordError):
        TLSARecord.from_wire("030101")  # type: ignore[arg-type]


def test_rfc6698_2_1_from_dnspython_rdata() -> None:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TLSA, f"3 1 1 {H32}")
    rec = TLSARecord.from_rdata(rdata)
    assert rec == TLSARecord(3, 1, 1, bytes.fromhex(H32))
    with pytest.raises(TlsaRecordError):
        TLSARecord.from_rdata(object())


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param((3, 1, 1, "00"), id="data-not-bytes"),
        pytest.param((True, 1, 1, b"x"), id="bool-usage"),
        pytest.param((3, 1, 300, b"x"), id="mtype-out-of-range"),
        pytest.param(("3", 1, 1, b"x"), id="usage-string"),
    ],
)
def test_rfc6698_2_1_constructor_validates(fields: tuple) -> None:
    with pytest.raises(TlsaRecordError):
        TLSARecord(*fields)


# --- usability for SMTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "usable"),
    [
        pytest.param(f"3 1 1 {H32}", True, id="dane-ee-sha256"),
        pytest.param(f"2 0 2 {H64}", True, id="dane-ta-sha512"),
        pytest.param("3 1 0 300a300506032b6570030100", True, id="dane-ee-full"),
        pytest.param("3 1 0 3059", False, id="dane-ee-full-truncated-spki"),
        pytest.param("2 0 0 300a300506032b6570030100", False, id="dane-ta-full-not-a-cert"),
        pytest.param(f"0 0 1 {H32}", False, id="pkix-ta"),
        pytest.param(f"1 1 1 {H32}", False, id="pkix-ee"),
        pytest.param(f"4 1 1 {H32}", False, id="unknown-usage-4"),
        pytest.param(f"255 1 1 {H32}", False, id="private-usage"),
        pytest.param(f"3 2 1 {H32}", False, id="unknown-selector"),
        pytest.param(f"3 1 3 {H32}", False, id="unknown-mtype"),
        pytest.param(f"3 1 1 {H32[:32]}", False, id="sha256-16-octets"),
        pytest.param(f"3 1 1 {H64}", False, id="sha256-64-octets"),
        pytest.param(f"3 1 2 {H32}", False, id="sha512-32-octets"),
    ],
)
def test_rfc7672_3_1_3_usable_for_smtp(text: str, usable: bool) -> None:
    rec = TLSARecord.from_text(text)
    assert usable_for_smtp(rec) is usable
    assert (unusable_reason(rec) is None) is usable


def test_rfc7672_3_1_3_pkix_usages_reason_cites_rfc() -> None:
    reason = unusable_reason(TLSARecord.from_text(f"1 1 1 {H32}"))
    assert reason is not None and "RFC 7672 §3.1.3" in reason


def test_rfc6698_2_1_4_empty_data_rejected() -> None:
    with pytest.raises(TlsaRecordError):
        TLSARecord(3, 1, 0, b"")
    with pytest.raises(TlsaRecordError):
        TLSARecord.from_wire(b"\x03\x01\x00")


# --- digest algorithm agility ------------------------------------------------------------

A256 = hashlib.sha256(b"a").hexdigest()
B256 = hashlib.sha256(b"b").hexdigest()
A512 = hashlib.sha512(b"a").hexdigest()
# A well-formed (Ed25519-shaped) SubjectPublicKeyInfo for Full(0) records.
SPKI = "300a300506032b6570030100"


@pytest.mark.parametrize(
    ("rrset", "kept"),
    [
        pytest.param([f"3 1 1 {A256}", f"3 1 2 {A512}"], [f"3 1 2 {A512}"],
                     id="sha512-beats-sha256-same-usage-selector"),
        pytest.param([f"3 1 1 {A256}", f"3 1 1 {B256}"], [f"3 1 1 {A256}", f"3 1 1 {B256}"],
                     id="same-digest-all-kept"),
        pytest.param([f"3 1 1 {A256}", f"2 1 2 {A512}"], [f"3 1 1 {A256}", f"2 1 2 {A512}"],
                     id="different-usage-independent"),
        pytest.param([f"3 1 1 {A256}", f"3 0 2 {A512}"], [f"3 1 1 {A256}", f"3 0 2 {A512}"],
                     id="different-selector-independent"),
        pytest.param([f"3 1 0 {SPKI}", f"3 1 1 {A256}", f"3 1 2 {A512}"],
                     [f"3 1 0 {SPKI}", f"3 1 2 {A512}"], id="full-always-kept"),
        pytest.param([f"3 1 0 {SPKI}", f"3 1 1 {A256}"], [f"3 1 0 {SPKI}", f"3 1 1 {A256}"],
                     id="full-does-not-suppress-sha256"),
        pytest.param(["3 1 0 3059", f"3 1 1 {A256}"], [f"3 1 1 {A256}"],
                     id="malformed-full-discarded-first"),
        pytest.param([f"3 1 1 {A256}", f"3 1 2 {A256}"], [f"3 1 1 {A256}"],
                     id="malformed-sha512-discarded-first"),
        pytest.param([f"3 1 1 {A256}", f"3 1 9 {A512}"], [f"3 1 1 {A256}"],
                     id="unknown-mtype-does-not-win"),
        pytest.param([f"1 1 2 {A512}", f"3 1 1 {A256}"], [f"3 1 1 {A256}"],
                     id="pkix-dropped"),
    ],
)
def test_rfc7671_9_digest_agility(rrset: list[str], kept: list[str]) -> None:
    records = [TLSARecord.from_text(t) for t in rrset]
    assert [r.to_text() for r in select_usable(records)] == kept


# --- zone-file fragments -----------------------------------------------------------------


def test_rfc1035_5_1_parse_records_zone_lines() -> None:
    text = (
        "; TLSA for the MX\n"
        f"_25._tcp.mx.example.com. 3600 IN TLSA 3 1 1 {A256} ; current key\n"
        f"_25._tcp.mx.example.com. IN TLSA ( 3 1 1\n  {B256[:32]}\n  {B256[32:]} )\n"
        f"\n2 1 2 {A512}\n"
        f"                     IN TLSA 3 1 1 {A256}\n"
    )
    parsed = parse_records(text)
    assert [o for o, _ in parsed] == ["_25._tcp.mx.example.com."] * 2 + [None, None]
    assert [r.to_text() for _, r in parsed] == [f"3 1 1 {A256}", f"3 1 1 {B256}",
                                                f"2 1 2 {A512}", f"3 1 1 {A256}"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param(f"3 1 1 {A256}\nx TLSA 3 1 z\n", "line 2", id="bad-second-line"),
        pytest.param("x IN TLSA ( 3 1 1\n", "line 1", id="unbalanced-paren"),
    ],
)
def test_rfc1035_5_1_parse_records_errors_name_line(text: str, where: str) -> None:
    with pytest.raises(TlsaRecordError, match=where):
        parse_records(text)


def test_parse_records_bounded() -> None:
    with pytest.raises(TlsaRecordError):
        parse_records("3 1 0 00\n" * 1001)
    with pytest.raises(TlsaRecordError):
        parse_records("x" * (1024 * 1024 + 1))


# --- properties ---------------------------------------------------------------------------

records = st.builds(TLSARecord, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255),
                    st.binary(min_size=1, max_size=100))


@given(records)
def test_property_text_and_wire_round_trip(rec: TLSARecord) -> None:
    assert TLSARecord.from_text(rec.to_text()) == rec
    assert TLSARecord.from_wire(rec.to_wire()) == rec


@given(st.text(max_size=200))
def test_property_from_text_only_typed_errors(text: str) -> None:
    try:
        rec = TLSARecord.from_text(text)
    except TlsaRecordError:
        return
    assert TLSARecord.from_text(rec.to_text()) == rec


@given(st.text(alphabet=st.sampled_from(list("0123 abcdefTLSAIN;()\n._x")), max_size=300))
def test_property_parse_records_only_typed_errors(text: str) -> None:
    try:
        parsed = parse_records(text)
    except SmtpTlsError:
        return
    assert all(isinstance(r, TLSARecord) for _, r in parsed)


@given(st.lists(records, max_size=8))
def test_property_select_usable_subset_and_agile(rrset: list[TLSARecord]) -> None:
    kept = select_usable(rrset)
    assert all(usable_for_smtp(r) and r in rrset for r in kept)
    for r in kept:
        if r.mtype == MatchingType.SHA256:
            assert not any(o.usage == r.usage and o.selector == r.selector
                           and o.mtype == MatchingType.SHA512 for o in kept)


@given(st.binary(max_size=120))
def test_property_from_wire_only_typed_errors(raw: bytes) -> None:
    try:
        rec = TLSARecord.from_wire(raw)
    except TlsaRecordError:
        assert len(raw) < 4
        return
    assert rec.to_wire() == raw
