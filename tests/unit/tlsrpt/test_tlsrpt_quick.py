"""The quick reading of reports: orjson's tree, used only where it equals the reference.

``parse_report`` first reads the tree orjson decodes and falls back to the standard
decoder's tree (``_read_reference``: duplicate member names recorded, number literals
bounded as they are read, nesting checked first) whenever the two might differ or the
report has an error. These tests prove the two readings give the same report, the same
warnings and the same errors, with duplicate members at every level, floats, huge
numbers, deep nesting and surrogates; and that the memos behind the checks stay bounded.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tlsrpt_samples import corpus_files, dumps, own_files, rfc8460_example

from smtptls.errors import ReportError, ReportParseError
from smtptls.tlsrpt import FailureDetail, PolicyResult, PolicyType, ResultType, parse_report
from smtptls.tlsrpt import decode as dec
from smtptls.tlsrpt import reader as rd
from smtptls.tlsrpt import report as rp
from smtptls.tlsrpt import values as vals

# --- helpers ------------------------------------------------------------------------------


def reference(data: bytes | str, *, strict: bool = False) -> rp.Report:
    """parse_report with the standard decoder's tree only."""
    reader = rd._Reader(strict)
    text = dec.decode_text(data, reader, dec.DEFAULT_MAX_SIZE, dec.DEFAULT_MAX_DECOMPRESSED)
    return rd._read_reference(reader, text, from_str=isinstance(data, str))


def quick(text: str, *, strict: bool = False) -> rp.Report | None:
    """The quick reading alone; None where it leaves the answer to the reference."""
    read = rd._read_quick(rd._Reader(strict), text)
    return None if read is None else read[0]


def outcome(parse: Any, data: bytes | str, strict: bool) -> tuple[Any, ...]:
    try:
        report = parse(data, strict=strict)
    except ReportError as exc:
        return ("error", type(exc).__name__, str(exc), getattr(exc, "path", None))
    return ("report", report, report.warnings, report.start_datetime.tzinfo)


def assert_same_as_reference(data: bytes | str) -> None:
    for strict in (False, True):
        assert outcome(parse_report, data, strict) == outcome(reference, data, strict)


_DUPLICATE_AT = {
    # level: (path to the object in the example, member to repeat, the repeated value)
    "report": ((), "report-id", "dup:licate:id"),
    "date-range": (("date-range",), "end-datetime", "2016-04-01T23:59:59Z"),
    "policies-entry": (("policies", 0), "summary", {
        "total-successful-session-count": 1, "total-failure-session-count": 303}),
    "policy": (("policies", 0, "policy"), "policy-domain", "company-y.example"),
    "summary": (("policies", 0, "summary"), "total-failure-session-count", 303),
    "failure-detail": (("policies", 0, "failure-details", 0), "sending-mta-ip",
                       "2001:db8::1"),
}
_PATHS = {
    "report": "$.report-id",
    "date-range": "$.date-range.end-datetime",
    "policies-entry": "$.policies[0].summary",
    "policy": "$.policies[0].policy.policy-domain",
    "summary": "$.policies[0].summary.total-failure-session-count",
    "failure-detail": "$.policies[0].failure-details[0].sending-mta-ip",
}
_LAYOUTS = {
    "compact": {"separators": (",", ":")},
    "spaced": {},
    "pretty": {"indent": 2},
    "space-before-colon": {"separators": (", ", " : ")},
}


def _with_duplicate(level: str, layout: str) -> str:
    """The §4.5 example with one member given twice at *level* (the second one last)."""
    doc = rfc8460_example()
    steps, name, value = _DUPLICATE_AT[level]
    target: Any = doc
    for step in steps:
        target = target[step]
    target["\x00placeholder"] = value
    text = json.dumps(doc, **_LAYOUTS[layout])
    return text.replace('"\\u0000placeholder"', json.dumps(name))


# --- duplicate member names ---------------------------------------------------------------


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("layout", list(_LAYOUTS))
@pytest.mark.parametrize("level", list(_DUPLICATE_AT))
def test_rfc7493_2_3_duplicate_members_found_at_every_level(level, layout):
    """I-JSON (RFC 7493 §2.3, required by RFC 8460 §4.4): member names are unique."""
    text = _with_duplicate(level, layout)
    path = _PATHS[level]
    assert dec.loads_quick(text) is None  # orjson's tree would hide it: not used
    with pytest.raises(ReportParseError) as info:
        parse_report(text, strict=True)
    assert info.value.path == path
    report = parse_report(text)
    assert f"{path}: member appears more than once; the last is used" in report.warnings
    assert_same_as_reference(text)


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "member",
    ['"x:y": 1, "x:y": 2', '"k": "a:b:c:d:e", "k": "f"', '"k": {"a": ":"}, "k": [":"]'],
    ids=["name-with-colon", "dropped-value-with-colons", "dropped-object"],
)
def test_rfc7493_2_3_duplicate_with_colons_in_names_and_values(member):
    text = dumps(rfc8460_example()).decode()[:-1] + ", " + member + "}"
    assert dec.loads_quick(text) is None
    report = parse_report(text)
    assert any("member appears more than once" in w for w in report.warnings)
    assert_same_as_reference(text)


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize("duplicate", [True, False], ids=["duplicate", "no-duplicate"])
def test_rfc7493_2_3_escaped_colon_cannot_hide_a_duplicate(duplicate):
    """``\\u003a`` decodes to ':' with no ':' in the text; the colon count must not be
    fooled into missing a duplicate name, so such text goes to the reference decoder."""
    doc = rfc8460_example()
    doc["organization-name"] = "Company:X"
    text = json.dumps(doc).replace("Company:X", "Company\\u003aX")
    if duplicate:
        text = text[:-1] + ', "report-id": "other"}'
    assert dec.loads_quick(text) is None
    report = parse_report(text)
    assert report.organization_name == "Company:X"
    assert any("appears more than once" in w for w in report.warnings) is duplicate
    assert_same_as_reference(text)


def test_quick_decoding_equals_the_reference_tree_without_duplicates():
    text = json.dumps(rfc8460_example(), indent=1).replace("/", "\\/")
    assert dec.loads_quick(text) == dec.loads_reference(text)


# --- numbers, nesting and surrogates --------------------------------------------------------


def _member(raw: str) -> str:
    """The §4.5 example with *raw* (``"name": value``) added to the report object."""
    return dumps(rfc8460_example()).decode()[:-1] + ", " + raw + "}"


def _count(raw: str) -> str:
    """The example with the first failure detail's count written as *raw*."""
    return dumps(rfc8460_example()).decode().replace(
        '"failed-session-count": 100', f'"failed-session-count": {raw}', 1
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        (_count("100.0"), "count written as 100.0"),
        (_count("1" * 40), "number with 40 digits"),
        (_count("18446744073709551616"), "count 18446744073709551616 out of range"),
        (_member('"x": 1.' + "0" * 40), "number of 42 characters"),
        (_member('"x": 1e400'), "out of range"),
        (_member('"x": ' + "[" * 40 + "]" * 40), f"nested deeper than {dec.MAX_DEPTH}"),
        (_member('"x": ' + "[" * 30 + "0.5" + "]" * 30), "unknown member ignored"),
        (_member('"Report-ID": 1.' + "0" * 40), "number of 42 characters"),
        (_member('"x": NaN'), "NaN is not a JSON value"),
    ],
    ids=["float-count", "long-integer", "integer-beyond-64-bits", "long-float-ignored",
         "infinite-float-ignored", "deep-ignored", "float-deep-ignored",
         "long-float-in-ignored-twin", "nan-ignored"],
)
def test_numbers_and_nesting_read_as_the_reference_reads_them(text, expected):
    """orjson reads floats and integers beyond 64 bits differently, and nests deeper: the
    quick reading leaves every such report to the reference decoder."""
    assert quick(text) is None
    try:
        found = list(parse_report(text).warnings)
    except ReportParseError as exc:
        found = [str(exc)]
    assert any(expected in item for item in found), found
    assert_same_as_reference(text)


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "data, warned",
    [
        (_member('"organization-name": "\\ud83d\\ude00"').replace(
            '"organization-name": "Company-X", ', ""), False),
        (_member('"organization-name": "\\ud800x"').replace(
            '"organization-name": "Company-X", ', ""), True),
        (_member('"organization-name": "\ud800x"').replace(
            '"organization-name": "Company-X", ', ""), True),
    ],
    ids=["escaped-pair", "escaped-lone", "lone-in-str"],
)
def test_rfc7493_2_1_surrogates_read_as_the_reference_reads_them(data, warned):
    report = parse_report(data)
    assert any("surrogate" in w for w in report.warnings) is warned
    if warned:
        assert quick(data) is None
    assert_same_as_reference(data)


# --- the same answers on real and generated reports ---------------------------------------------


@pytest.mark.parametrize("path", corpus_files(".json"), ids=lambda p: Path(p).stem[:40])
def test_real_reports_read_the_same_both_ways(corpus, path):
    data = Path(path).read_bytes()
    assert quick(data.decode()) is not None  # real reports take the quick reading
    assert_same_as_reference(data)


@pytest.mark.parametrize("path", own_files(".json"))
def test_own_quirky_reports_read_the_same_both_ways(path):
    data = Path(path).read_bytes()
    assert quick(data.decode()) is not None  # the quirks of real reports: the quick reading
    assert_same_as_reference(data)


_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
    st.sampled_from(["2016-04-01", "2016-04-01T00:00:00+02:00", "::1", "1.2.3.4", "sts",
                     "Certificate-Expired", "mailto:a@b", "*.example.com", " 7 "]),
)
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=8,
)
_NAMES = st.sampled_from([
    "organization-name", "date-range", "contact-info", "report-id", "policies", "policy",
    "summary", "failure-details", "policy-type", "policy-string", "policy-domain",
    "mx-host", "mx-host-pattern", "Policy-Type", "result-type", "failed-session-count",
    "sending-mta-ip", "receiving-ip", "additional-info-uri", "start-datetime", "unknown",
])


def _objects(doc: Any) -> list[dict[str, Any]]:
    found = [doc] if isinstance(doc, dict) else []
    values = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else ()
    for value in values:
        found.extend(_objects(value))
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_quick_reading_equals_the_reference(data):
    """Any change to the example (a member set to any JSON value, dropped, renamed or
    given twice, in any layout) is read the same way by both readings."""
    doc = rfc8460_example()
    duplicate = None
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(_objects(doc)))
        name = data.draw(_NAMES | st.sampled_from(sorted(target) or ["x"]))
        action = data.draw(st.sampled_from(["set", "drop", "twice"]))
        if action == "drop":
            target.pop(name, None)
        elif action == "twice" and duplicate is None:
            target["\x00placeholder"] = data.draw(_JSON)
            duplicate = name
        else:
            target[name] = data.draw(_JSON)
    text = json.dumps(doc, indent=data.draw(st.sampled_from([None, 2])),
                      ensure_ascii=data.draw(st.booleans()))
    if duplicate is not None:
        text = text.replace('"\\u0000placeholder"', json.dumps(duplicate))
    assert_same_as_reference(text)
    assert_same_as_reference(text.encode("utf-8", "surrogatepass"))


# --- the checks behind the quick reading ----------------------------------------------------


@pytest.mark.rfc("8460 4.4")
@settings(max_examples=300, deadline=None)
@given(st.from_regex(vals._IPV6_GROUPS_RE, fullmatch=True))
def test_rfc4291_2_2_every_hex_group_form_is_an_ipv6_address(text):
    """The fast IPv6 pattern only ever accepts what ipaddress accepts."""
    assert ipaddress.ip_address(text).version == 6
    assert vals.ip_ok(text)


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(
    "text, valid",
    [
        ("2001:db8::1", True), ("::", True), ("::1", True), ("1::", True),
        ("1:2:3:4:5:6:7:8", True), ("1:2:3:4:5:6:7::", True), ("::2:3:4:5:6:7:8", True),
        ("::ffff:192.0.2.1", True), ("fe80::1%eth0", True), ("192.0.2.1", True),
        ("1:2:3:4:5:6:7:8:9", False), ("1::2::3", False), ("12345::", False),
        (":1::", False), ("1:2:3:4:5:6:7", False), ("192.0.2.01", False),
        ("2001:db8::g", False), ("", False), ("x" * 70, False),
    ],
)
def test_rfc8460_4_4_ip_addresses_as_ipaddress_reads_them(text, valid):
    try:
        ipaddress.ip_address(text)
        truth = True
    except ValueError:
        truth = False
    assert truth is valid
    vals.forget()
    assert vals.ip_ok(text) is valid
    assert vals.ip_ok(text) is valid  # and again from the memo


def test_memos_stay_bounded_and_skip_long_keys():
    vals.forget()
    for i in range(vals._MEMO_SIZE + 50):
        assert vals.domain_ok(f"host{i}.example")
    assert 0 < len(vals._DOMAIN_OK) <= vals._MEMO_SIZE
    long_name = "a" * (vals._MEMO_KEY_CHARS + 1)
    assert vals.domain_ok(long_name) is False
    assert long_name not in vals._DOMAIN_OK
    vals.forget()
    assert not vals._DOMAIN_OK and not vals._IP_OK and not vals.DATE_READINGS[True]


@pytest.mark.rfc("8460 4.1")
def test_rfc3339_5_6_date_readings_are_kept_apart_for_start_and_end():
    """A date without a time means 00:00:00Z at the start of a range and 23:59:59Z at its
    end; the memo of readings never serves one for the other."""
    doc = rfc8460_example()
    doc["date-range"] = {"start-datetime": "2016-04-01", "end-datetime": "2016-04-01"}
    for _ in range(2):  # the second time from the memo
        report = parse_report(json.dumps(doc))
        assert (report.start_datetime.hour, report.end_datetime.hour) == (0, 23)
        assert report.warnings[:2] == (
            "$.date-range.start-datetime: date without a time; read as 00:00:00Z",
            "$.date-range.end-datetime: date without a time; read as 23:59:59Z, "
            "the end of that day",
        )
        with pytest.raises(ReportParseError) as info:
            parse_report(json.dumps(doc), strict=True)
        assert info.value.path == "$.date-range.start-datetime"


@pytest.mark.parametrize(
    "values",
    [
        (ResultType.TLSA_INVALID, 3, "192.0.2.1", "mx.example", "helo", "2001:db8::1",
         "https://x.example/", "CODE"),
        ("new-type", 0, None, None, None, None, None, None),
    ],
    ids=["full", "sparse"],
)
def test_checked_values_built_as_their_constructor_builds_them(values):
    names = ("result-type", "failed-session-count", "sending-mta-ip",
             "receiving-mx-hostname", "receiving-mx-helo", "receiving-ip",
             "additional-information", "failure-reason-code")
    member = {k: str(v) if k == "result-type" else v
              for k, v in zip(names, values, strict=True) if v is not None}
    policy = (PolicyType.STS, "example.com", 5, 3, ("version: STSv1",), ("mx.example",))
    data = {"organization-name": "o", "date-range": {
        "start-datetime": "2024-05-01T00:00:00Z", "end-datetime": "2024-05-01T23:59:59Z"},
        "contact-info": "a@o.example", "report-id": "r", "policies": [{
            "policy": {"policy-type": "sts", "policy-string": list(policy[4]),
                       "policy-domain": policy[1], "mx-host": list(policy[5])},
            "summary": {"total-successful-session-count": 5,
                        "total-failure-session-count": 3},
            "failure-details": [member]}]}
    for report in (parse_report(json.dumps(data)), rp.Report.from_dict(data)):
        result = report.policies[0]
        detail = result.failure_details[0]
        assert detail == FailureDetail(*values) and hash(detail) == hash(FailureDetail(*values))
        assert repr(detail) == repr(FailureDetail(*values))
        assert result == PolicyResult(*policy, (detail,))
        assert repr(result) == repr(PolicyResult(*policy, (detail,)))


# --- the body a receiver keeps: text and tree beside the report ----------------------------


@pytest.mark.parametrize("path", own_files(".json") + own_files(".gz"))
def test_parsed_body_keeps_the_decompressed_text_and_the_report(path):
    data = path.read_bytes()
    try:
        expected = parse_report(data)
    except ReportError as exc:
        with pytest.raises(type(exc)):
            rd.parse_report_body(data)
        return
    body = rd.parse_report_body(data)
    assert body.report == expected and body.report.warnings == expected.warnings
    assert body.text == dec.decompress_report(data).decode("utf-8")
    if body.tree is not None:  # the quick reading answered: its tree is the text's value
        assert body.tree == json.loads(body.text)


def test_parsed_body_has_no_tree_where_the_reference_decides():
    text = dumps(rfc8460_example()).decode().replace('"report-id"', '"report-id":"x","report-id"')
    body = rd.parse_report_body(text)
    assert body.tree is None and "more than once" in " ".join(body.report.warnings)
