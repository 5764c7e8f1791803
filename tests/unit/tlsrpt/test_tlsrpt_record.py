"""The TLSRPT policy record (RFC 8460 §3): corpus vectors, ABNF rules, record selection."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import MultipleTlsrptRecordsError, ReportError, TlsrptRecordError
from smtptls.tlsrpt import TlsrptRecord, parse_record, parse_txt_records, record_name
from smtptls.tlsrpt.record import MAX_RECORD_LENGTH, check_uri, is_tlsrpt_record
from tests.conftest import corpus_params

VECTORS = "vectors/mtasts_tlsrpt_conformance.json"  # below the corpus folder


def _vectors() -> list:
    """The corpus' TLSRPT TXT vectors (a placeholder the ``corpus`` fixture skips if absent)."""
    return corpus_params(_vector_params)


def _vector_params(corpus) -> list:
    data = json.loads((corpus / VECTORS).read_text(encoding="utf-8"))["tlsrpt_txt"]
    params = []
    for i, v in enumerate(data):
        label = v.get("reason") or ("valid" if v.get("valid") else "invalid")
        if v.get("disputed"):
            label = "disputed " + label
        label = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")[:40]
        params.append(pytest.param(v, id=f"{i:02d}-{label}"))
    return params


def test_corpus_has_tlsrpt_vectors(corpus):
    data = json.loads((corpus / VECTORS).read_text())
    assert len(data["tlsrpt_txt"]) == data["meta"]["counts"]["tlsrpt_txt"] == 30


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize("vector", _vectors())
def test_rfc8460_3_corpus_tlsrpt_txt(corpus, vector):
    """Each transcribed vector; a disputed one follows its consensus (valid, auditor warn)."""
    valid = vector["consensus"]["valid"] if vector.get("disputed") else vector["valid"]
    if not valid:
        with pytest.raises(TlsrptRecordError):
            parse_record(vector["input"])
        return
    record = parse_record(vector["input"])
    expected = vector.get("expected")
    if expected:
        assert list(record.rua) == [u for group in expected["rua"] for u in group]
        assert [list(e) for e in record.extensions] == expected.get("extensions", [])
    if vector.get("disputed"):
        # consensus: duplicate rua accepted, both kept, and flagged for the auditor
        assert vector["consensus"]["auditor"] == "warn"
        assert any("rua given 2 times" in w for w in record.warnings)
    # whatever was accepted writes back to a record that parses to the same value
    assert parse_record(record.to_text()) == record


# --- §3 ABNF, rule by rule -------------------------------------------------------------


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "txt, rua",
    [
        ("v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/tlsrpt",
         ("mailto:a@example.com", "https://r.example.com/tlsrpt")),
        ("v=TLSRPTv1;rua=mailto:a@example.com , mailto:b@example.com",
         ("mailto:a@example.com", "mailto:b@example.com")),
        ("v=TLSRPTv1; rua=mailto:a@example.com,\thttps://r.example.com/x?d=1",
         ("mailto:a@example.com", "https://r.example.com/x?d=1")),
    ],
    ids=["mailto-and-https", "wsp-around-comma", "tab-and-query"],
)
def test_rfc8460_3_rua_multiple_uris(txt, rua):
    record = parse_record(txt)
    assert record.rua == rua
    assert record.report_uris == rua


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "txt",
    ["V=TLSRPTv1; rua=mailto:a@example.com", "v=tlsrptv1; rua=mailto:a@example.com",
     " v=TLSRPTv1; rua=mailto:a@example.com", "rua=mailto:a@example.com; v=TLSRPTv1",
     "v = TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1x; rua=mailto:a@example.com"],
    ids=["upper-v", "lower-version", "leading-space", "version-not-first", "spaces-around-eq",
         "version-suffix"],
)
def test_rfc8460_3_version_first_and_exact(txt):
    with pytest.raises(TlsrptRecordError, match="v=TLSRPTv1"):
        parse_record(txt)


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "txt, reason",
    [
        ("v=TLSRPTv1; RUA=mailto:a@example.com", "no rua"),  # %s"rua=": case-sensitive
        ("v=TLSRPTv1; rua =mailto:a@example.com", "extension name"),
        ("v=TLSRPTv1; rua=mailto:a@example.com,", "empty URI"),
        ("v=TLSRPTv1; rua=mailto:a@example.com;; x=1", "empty field"),
        ("v=TLSRPTv1; rua=mailto:a!b@example.com", "not allowed"),  # "!" MUST be encoded
        ("v=TLSRPTv1; rua=mailto:", "empty after its scheme"),
        ("v=TLSRPTv1; rua=mailto:example.com", "no mail address"),
        ("v=TLSRPTv1; rua=https:/path-only", "no host"),
        ("v=TLSRPTv1; rua=https://", "no host"),
        ("v=TLSRPTv1; rua=https://a.example:99999/", "bad authority"),
        ("v=TLSRPTv1; rua=https://bad_host!.example/", "not allowed"),
        ("v=TLSRPTv1; rua=1http://a.example/", "no scheme"),
        ("v=TLSRPTv1; rua=mailto:a@example.com; x", "not name=value"),
        ("v=TLSRPTv1; rua=mailto:a@example.com\x00", "control"),
        ("v=TLSRPTv1; rua=mailto:ä@example.com", "non-ASCII"),
    ],
    ids=["upper-rua", "space-before-eq", "trailing-comma", "double-semicolon", "raw-bang",
         "empty-mailto", "mailto-no-at", "https-no-authority", "https-empty", "https-bad-port",
         "https-bang-host", "scheme-digit", "bare-word", "nul", "non-ascii"],
)
def test_rfc8460_3_invalid_records(txt, reason):
    with pytest.raises(TlsrptRecordError, match=reason):
        parse_record(txt)


@pytest.mark.rfc("8460 3")
def test_rfc8460_3_rua_required():
    with pytest.raises(TlsrptRecordError, match="no rua"):
        parse_record("v=TLSRPTv1; ext=1; other=2")


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "txt, extensions",
    [
        ("v=TLSRPTv1; rua=mailto:a@example.com; a.b-c_d=x:y/z",
         (("a.b-c_d", "x:y/z"),)),
        ("v=TLSRPTv1; z=1; rua=mailto:a@example.com; y=2;", (("z", "1"), ("y", "2"))),
        ("v=TLSRPTv1; rua=mailto:a@example.com; v=TLSRPTv2", (("v", "TLSRPTv2"),)),
        ("v=TLSRPTv1; rua=mailto:a@example.com; " + "a" * 32 + "=1", (("a" * 32, "1"),)),
    ],
    ids=["name-chars", "before-and-after-rua", "second-v-is-an-extension", "32-char-name"],
)
def test_rfc8460_3_extensions_kept_and_ignored(txt, extensions):
    record = parse_record(txt)
    assert record.extensions == extensions
    assert record.rua == ("mailto:a@example.com",)
    assert parse_record(record.to_text()) == record


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "txt",
    ["v=TLSRPTv1; rua=mailto:a@example.com;", "v=TLSRPTv1; rua=mailto:a@example.com ; ",
     "v=TLSRPTv1 ;rua=mailto:a@example.com", "v=TLSRPTv1\t;\trua=mailto:a@example.com\t"],
    ids=["one-trailing-semicolon", "trailing-delim-with-wsp", "wsp-before-delim", "tabs"],
)
def test_rfc8460_3_field_delimiter_whitespace(txt):
    assert parse_record(txt).rua == ("mailto:a@example.com",)


@pytest.mark.rfc("8460 3")
def test_rfc8460_3_duplicate_rua_consensus_keeps_all_and_warns():
    record = parse_record("v=TLSRPTv1; rua=mailto:a@example.com; rua=https://r.example/")
    assert record.rua == ("mailto:a@example.com", "https://r.example/")
    assert record.mailto == ("mailto:a@example.com",)
    assert record.https == ("https://r.example/",)
    assert record.warnings == ("rua given 2 times; all URIs are kept (the ABNF names one rua field)",)


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "txt, usable, unsupported",
    [
        ("v=TLSRPTv1; rua=http://r.example/,mailto:a@example.com",
         ("mailto:a@example.com",), ("http://r.example/",)),
        ("v=TLSRPTv1; rua=ftp://r.example/x", (), ("ftp://r.example/x",)),
        ("v=TLSRPTv1; rua=MAILTO:a@example.com", ("MAILTO:a@example.com",), ()),
    ],
    ids=["http-beside-mailto", "only-ftp", "scheme-case-insensitive"],
)
def test_rfc8460_3_only_mailto_and_https_are_usable(txt, usable, unsupported):
    record = parse_record(txt)
    assert record.report_uris == usable
    assert record.unsupported_rua == unsupported
    if unsupported:
        assert any("not defined by RFC 8460" in w for w in record.warnings)
    if not usable:
        assert any("cannot be delivered" in w for w in record.warnings)


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "uri, scheme",
    [("mailto:tlsrpt@example.com?subject=x", "mailto"), ("https://[2001:db8::1]/r", "https"),
     ("https://r.example:8443/a%2Cb", "https"), ("urn:ietf:rfc:8460", "urn")],
    ids=["mailto-query", "ipv6-literal", "port-and-encoded-comma", "urn"],
)
def test_rfc8460_3_uri_syntax_accepted(uri, scheme):
    assert check_uri(uri) == scheme


def test_rfc8460_3_record_name_is_smtp_tls():
    # RFC 8460 §3: "_smtp._tls.example.com" (the draft's _smtp-tlsrpt is obsolete)
    assert record_name("example.com.") == "_smtp._tls.example.com"
    with pytest.raises(TlsrptRecordError):
        record_name("")


def test_record_length_is_bounded():
    txt = "v=TLSRPTv1; rua=mailto:a@example.com; x=" + "y" * MAX_RECORD_LENGTH
    with pytest.raises(TlsrptRecordError, match="longer than"):
        parse_record(txt)


def test_record_uri_count_is_bounded():
    txt = "v=TLSRPTv1; rua=" + ",".join(f"mailto:a{i}@example.com" for i in range(40))
    with pytest.raises(TlsrptRecordError, match="more than 32"):
        parse_record(txt)


@pytest.mark.parametrize(
    "kwargs",
    [{"rua": ()}, {"rua": ("nope",)}, {"rua": ("mailto:a@b.example",), "extensions": (("rua", "x"),)},
     {"rua": ("mailto:a@b.example",), "extensions": (("x", "a b"),)}],
    ids=["no-rua", "bad-uri", "rua-as-extension", "bad-extension-value"],
)
def test_record_constructor_validates(kwargs):
    with pytest.raises(TlsrptRecordError):
        TlsrptRecord(**kwargs)


# --- §3 which record: exactly one v=TLSRPTv1 ----------------------------------------------


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "records, expected",
    [
        ([], None),
        (["v=spf1 -all", "v=DMARC1; p=none"], None),
        (["v=TLSRPTv10; rua=mailto:a@example.com"], None),
        (["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@example.com"], ("mailto:a@example.com",)),
        ([("v=TLSRPTv1; rua=mailto:", "a@example.com")], ("mailto:a@example.com",)),
        ([[b"v=TLSRPTv1; ", b"rua=https://r.example/"]], ("https://r.example/",)),
        (["v=TLSRPTv1 ; rua=mailto:a@example.com"], ("mailto:a@example.com",)),
    ],
    ids=["no-records", "other-records-only", "v10-is-not-v1", "one-among-others",
         "strings-joined-without-space", "bytes-strings", "wsp-before-delim-counts"],
)
def test_rfc8460_3_record_selection(records, expected):
    record = parse_txt_records(records)
    assert (record.rua if record else None) == expected


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(
    "records",
    [["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"],
     ["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1"]],
    ids=["two-valid", "one-valid-one-invalid"],
)
def test_rfc8460_3_more_than_one_record_means_no_tlsrpt(records):
    # "If the number of resulting records is not one, senders MUST assume the recipient
    # domain does not implement TLSRPT" - counted before validity
    with pytest.raises(MultipleTlsrptRecordsError, match="exactly one"):
        parse_txt_records(records)


@pytest.mark.rfc("8460 3")
def test_rfc8460_3_single_invalid_record_is_an_error():
    with pytest.raises(TlsrptRecordError, match="no rua"):
        parse_txt_records(["v=TLSRPTv1; xyz=foo"])


@pytest.mark.parametrize(
    "txt, expected",
    [("v=TLSRPTv1", True), ("v=TLSRPTv1;", True), ("v=TLSRPTv1 ", True), ("v=TLSRPTv10", False),
     ("v=TLSRPTv1x", False), ("x v=TLSRPTv1;", False)],
    ids=["bare", "semicolon", "space", "v10", "suffix", "not-first"],
)
def test_is_tlsrpt_record(txt, expected):
    assert is_tlsrpt_record(txt) is expected


def test_parse_txt_records_rejects_a_plain_string():
    with pytest.raises(TlsrptRecordError, match="list of TXT records"):
        parse_txt_records("v=TLSRPTv1; rua=mailto:a@example.com")


# --- properties ----------------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_DOMAIN = st.builds(lambda a, b: f"{a}.{b}", _LABEL, st.sampled_from(["example", "com", "net"]))
_URI = st.one_of(
    st.builds(lambda lp, d: f"mailto:{lp}@{d}", _LABEL, _DOMAIN),
    st.builds(lambda d, p: f"https://{d}/{p}", _DOMAIN, _LABEL),
)
_EXT = st.tuples(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}", fullmatch=True).filter(lambda n: n != "rua"),
    st.from_regex(r"[\x21-\x3a\x3c\x3e-\x7e]{1,20}", fullmatch=True),
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_property_parse_record_raises_only_report_errors(txt):
    try:
        record = parse_record(txt)
    except ReportError:
        return
    assert record.rua


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"v=TLSRPTv1[ ;\t]{1,3}[\x20-\x7e\t]{0,80}", fullmatch=True))
def test_property_record_like_text_raises_only_report_errors(txt):
    try:
        record = parse_record(txt)
    except ReportError:
        return
    assert parse_record(record.to_text()) == record


@settings(max_examples=150, deadline=None)
@given(st.lists(_URI, min_size=1, max_size=5), st.lists(_EXT, max_size=4))
def test_property_record_round_trip(rua, extensions):
    record = TlsrptRecord(rua=tuple(rua), extensions=tuple(extensions))
    assert parse_record(record.to_text()) == record
    assert parse_txt_records(["v=spf1 -all", record.to_text()]) == record
