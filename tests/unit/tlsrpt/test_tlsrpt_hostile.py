"""Hostile report input: every bound holds and only typed errors come out.

Malformed JSON, deep nesting, huge numbers, gzip bombs (built by streaming, never
allocated whole), truncated or corrupt gzip, zip tricks, wrong input types, empty input.
"""

from __future__ import annotations

import gzip
import io
import json
import time
import tracemalloc
import zipfile
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tlsrpt_samples import dumps, rfc8460_example

from smtptls.errors import ReportError, ReportParseError, ReportTooLargeError
from smtptls.tlsrpt import Report, parse_report
from smtptls.tlsrpt.decode import DEFAULT_MAX_DECOMPRESSED, MAX_DEPTH, MAX_WARNINGS

MIB = 1024 * 1024


def _bomb(expanded: int, chunk: int = MIB) -> bytes:
    """A gzip stream of *expanded* zero bytes, compressed chunk by chunk (small memory)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(chunk)
    parts = [comp.compress(zeros) for _ in range(expanded // chunk)]
    parts.append(comp.flush())
    return b"".join(parts)


@pytest.mark.parametrize(
    "text, words",
    [
        ("{", "not valid JSON"),
        ('{"a": 1,}', "not valid JSON"),
        ("[1, 2", "not valid JSON"),
        ("{'report-id': 'x'}", "not valid JSON"),
        ('{"a": 1} trailing', "not valid JSON"),
        ("nul", "not valid JSON"),
        ('{"a": NaN}', "NaN is not a JSON value"),
        ('{"a": -Infinity}', "-Infinity is not a JSON value"),
        ('"just a string"', "expected an object"),
        ("42", "expected an object"),
        ("null", "expected an object"),
        ('{"a": "\x01"}', "not valid JSON"),
    ],
    ids=["open-brace", "trailing-comma", "open-array", "single-quotes", "trailing-text",
         "bad-literal", "nan", "infinity", "string", "number", "null", "control-char"],
)
def test_malformed_json(text, words):
    for strict in (True, False):
        with pytest.raises(ReportParseError, match=words) as info:
            parse_report(text, strict=strict)
        assert info.value.path == "$"


@pytest.mark.parametrize("data", [b"", "", b"   \n", "\t"], ids=["bytes", "str", "ws-bytes", "ws"])
def test_empty_input(data):
    with pytest.raises(ReportParseError, match="empty input"):
        parse_report(data)


@pytest.mark.parametrize("data", [None, 42, {"report-id": "x"}, ["x"]],
                         ids=["none", "int", "dict", "list"])
def test_wrong_input_type(data):
    with pytest.raises(ReportParseError, match="bytes or str"):
        parse_report(data)


def test_not_utf8():
    raw = dumps(rfc8460_example()).replace(b"Company-X", b"Company-\xff")
    with pytest.raises(ReportParseError, match="not UTF-8"):
        parse_report(raw)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000,
     '{"policies": [' + "[" * 100_000],
    ids=["arrays", "objects", "unterminated"],
)
def test_deep_nesting_is_refused_before_decoding(text):
    started = time.monotonic()
    with pytest.raises(ReportParseError, match=f"deeper than {MAX_DEPTH}"):
        parse_report(text)
    assert time.monotonic() - started < 5


def test_brackets_inside_strings_do_not_count_as_nesting():
    doc = rfc8460_example()
    doc["organization-name"] = "[{" * 5000 + '\\"quoted\\"'
    report = parse_report(json.dumps(doc), strict=True)
    assert report.organization_name.startswith("[{[{")


def test_nesting_just_under_the_bound_is_decoded():
    doc = rfc8460_example()
    doc["x-deep"] = json.loads("[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2))
    assert parse_report(json.dumps(doc)).report_id  # decoded; the member is ignored


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "literal, words",
    [("1e400", "out of range"), ("-1e400", "out of range"), ("1" * 5000, "5000 digits"),
     ("9" * (10**5), "100000 digits"), ("1." + "0" * 100, "characters")],
    ids=["1e400", "minus-1e400", "5000-digits", "100000-digits", "long-fraction"],
)
def test_huge_numbers(literal, words):
    doc = dumps(rfc8460_example()).decode().replace('"failed-session-count": 100',
                                                    f'"failed-session-count": {literal}')
    started = time.monotonic()
    with pytest.raises(ReportParseError, match=words):
        parse_report(doc)
    assert time.monotonic() - started < 5


def test_tiny_float_count_is_a_typed_error():
    doc = dumps(rfc8460_example()).decode().replace('"failed-session-count": 100',
                                                    '"failed-session-count": 1e-400')
    report = parse_report(doc)  # underflows to 0.0: an integral value, written oddly
    assert report.policies[0].failure_details[0].failed_session_count == 0
    with pytest.raises(ReportParseError, match="integers"):
        parse_report(doc, strict=True)


# --- sizes and compression -------------------------------------------------------------------


def test_input_over_max_size():
    raw = dumps(rfc8460_example())
    with pytest.raises(ReportTooLargeError, match="cap"):
        parse_report(raw, max_size=len(raw) - 1)
    assert parse_report(raw, max_size=len(raw)).report_id


def test_uncompressed_input_over_max_decompressed():
    raw = dumps(rfc8460_example())
    with pytest.raises(ReportTooLargeError):
        parse_report(raw, max_decompressed=100)
    with pytest.raises(ReportTooLargeError):
        parse_report(raw.decode(), max_decompressed=100)


@pytest.mark.timeout(60)
def test_gzip_bomb_stops_at_the_default_cap():
    bomb = _bomb(DEFAULT_MAX_DECOMPRESSED + 14 * MIB)
    assert len(bomb) < 200 * 1024
    started = time.monotonic()
    with pytest.raises(ReportTooLargeError, match="gzip bomb"):
        parse_report(bomb)
    assert time.monotonic() - started < 10


def test_gzip_bomb_memory_stays_near_the_cap():
    bomb = _bomb(64 * MIB)
    cap = 1 * MIB
    tracemalloc.start()
    try:
        with pytest.raises(ReportTooLargeError):
            parse_report(bomb, max_decompressed=cap)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * cap


def test_gzip_exactly_at_the_cap_is_decoded():
    raw = dumps(rfc8460_example())
    assert parse_report(gzip.compress(raw), max_decompressed=len(raw)).report_id
    with pytest.raises(ReportTooLargeError):
        parse_report(gzip.compress(raw), max_decompressed=len(raw) - 1)


@pytest.mark.parametrize("cut", [-4, -9, 0.5, 11, 2], ids=["crc", "size-field", "half",
                                                           "after-header", "magic-only"])
def test_truncated_gzip(cut):
    data = gzip.compress(dumps(rfc8460_example()))
    end = int(len(data) * cut) if isinstance(cut, float) else cut
    with pytest.raises(ReportParseError, match="truncated|not valid gzip") as info:
        parse_report(data[:end])
    assert info.value.path == "$"


def test_corrupt_gzip_checksum():
    data = bytearray(gzip.compress(dumps(rfc8460_example())))
    data[-8] ^= 0xFF  # CRC32
    with pytest.raises(ReportParseError, match="not valid gzip"):
        parse_report(bytes(data))


def test_gzip_members_are_concatenated():
    raw = dumps(rfc8460_example())
    data = gzip.compress(raw[:100]) + gzip.compress(raw[100:])
    assert parse_report(data, strict=True).report_id.startswith("5065427c")


def test_gzip_member_count_is_bounded():
    data = b"".join(gzip.compress(b" ") for _ in range(40))
    with pytest.raises(ReportParseError, match="gzip members"):
        parse_report(data)


def test_trailing_garbage_after_gzip():
    data = gzip.compress(dumps(rfc8460_example())) + b"garbage"
    with pytest.raises(ReportParseError, match="trailing data"):
        parse_report(data, strict=True)
    report = parse_report(data)
    assert "$: 7 bytes of trailing data after the gzip stream" in report.warnings


def _zip(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return out.getvalue()


def test_zip_accepted_tolerant_only():
    data = _zip({"report.json": dumps(rfc8460_example())})
    with pytest.raises(ReportParseError, match="zip archive"):
        parse_report(data, strict=True)
    assert parse_report(data).total_failed == 303


def test_zip_holding_gzip_is_unpacked():
    data = _zip({"r.json.gz": gzip.compress(dumps(rfc8460_example()))})
    assert parse_report(data).total_successful == 5326


@pytest.mark.parametrize(
    "files, error, words",
    [({"a.json": b"{}", "b.json": b"{}"}, ReportParseError, "2 candidate files"),
     ({f"{i}.txt": b"x" for i in range(20)}, ReportParseError, "more than 16 files"),
     ({"bomb.json": bytes(4 * MIB)}, ReportTooLargeError, "more than")],
    ids=["two-reports", "too-many-files", "zip-bomb"],
)
def test_zip_bounds(files, error, words):
    with pytest.raises(error, match=words):
        parse_report(_zip(files), max_decompressed=MIB)


def test_broken_zip():
    with pytest.raises(ReportParseError, match="not a valid zip"):
        parse_report(b"PK\x03\x04" + b"\x00" * 40)


# --- properties: only typed errors, whatever comes in ------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_KEYS = st.sampled_from([
    "organization-name", "date-range", "start-datetime", "end-datetime", "contact-info",
    "report-id", "policies", "policy", "policy-type", "policy-string", "policy-domain",
    "mx-host", "summary", "total-successful-session-count", "total-failure-session-count",
    "failure-details", "result-type", "failed-session-count", "sending-mta-ip",
])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_property_arbitrary_bytes_raise_only_report_errors(data):
    for candidate in (data, b"\x1f\x8b" + data, b"PK\x03\x04" + data):
        try:
            parse_report(candidate)
        except ReportError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_property_arbitrary_text_raises_only_report_errors(text):
    try:
        parse_report(text)
    except ReportError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_mutated_reports_raise_only_report_errors(data):
    """Replace or delete a random member anywhere in a valid report, then parse."""
    doc = rfc8460_example()
    for _ in range(data.draw(st.integers(1, 3))):
        node = doc
        for _depth in range(data.draw(st.integers(0, 4))):
            if isinstance(node, dict) and node:
                key = data.draw(st.sampled_from(sorted(node)))
                if not isinstance(node[key], dict | list):
                    break
                node = node[key]
            elif isinstance(node, list) and node:
                child = node[data.draw(st.integers(0, len(node) - 1))]
                if not isinstance(child, dict | list):
                    break
                node = child
        if isinstance(node, dict):
            key = data.draw(_KEYS | st.sampled_from(sorted(node) or ["x"]))
            if data.draw(st.booleans()):
                node.pop(key, None)
            else:
                node[key] = data.draw(_JSON)
        elif isinstance(node, list):
            node.append(data.draw(_JSON))
    for strict in (True, False):
        try:
            report = parse_report(json.dumps(doc), strict=strict)
        except ReportError:
            continue
        # whatever parses serialises, and its canonical form parses again
        assert Report.from_dict(json.loads(report.to_json())) == report


@pytest.mark.timeout(20)
def test_many_duplicate_members_cost_linear_time():
    members = ",".join(f'"k{i}": 1, "k{i}": 2' for i in range(50_000))
    text = dumps(rfc8460_example()).decode()[:-1] + "," + members + "}"
    started = time.monotonic()
    report = parse_report(text)
    assert time.monotonic() - started < 5
    assert len(report.warnings) == MAX_WARNINGS + 1
