"""Every class of MTA-STS vector the shared corpus holds, as the project's own table.

test_mtasts_corpus.py runs the corpus' transcribed vectors (``txt_record``, ``policy``,
``mx_match``, ``content_type``) when the corpus is present; these cases, written here,
prove the same classes without it: each row names the class it stands for. Where peers
disagree, the choice docs/conformance.md records is the one asserted (duplicate fields:
first wins with a warning; more than one trailing ``;``: invalid; max_age above
31557600: invalid; unknown policy keys: extensions).
"""

from __future__ import annotations

import pytest

from smtptls.errors import PolicySyntaxError, StsRecordError
from smtptls.mtasts import (
    Mode,
    Policy,
    StsRecord,
    is_text_plain,
    mx_matches,
    parse_policy,
    parse_txt_records,
)

# --- §3.1 TXT record ------------------------------------------------------------------------

VALID_RECORDS = [
    pytest.param("v=STSv1; id=2025010203040506Z;", "2025010203040506Z", (), id="trailing-delim"),
    pytest.param("v=STSv1; \t id=abc123 \t ;", "abc123", (), id="tabs-and-spaces"),
    pytest.param("v=STSv1;id=Q", "Q", (), id="no-spaces"),
    pytest.param("v=STSv1;    id=20250101T000000   ", "20250101T000000", (),
                 id="trailing-spaces"),
    pytest.param("v=STSv1; id=x1; foo=bar; n2=3", "x1", (("foo", "bar"), ("n2", "3")),
                 id="extensions"),
]


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize(("text", "record_id", "extensions"), VALID_RECORDS)
def test_rfc8461_3_1_valid_record_classes(text, record_id, extensions):
    record = parse_txt_records([text])
    assert isinstance(record, StsRecord) and record == StsRecord.parse(text)
    assert (record.version, record.id, record.extensions) == ("STSv1", record_id, extensions)
    assert StsRecord.parse(record.to_text()) == record


INVALID_RECORDS = [
    # a v=STSv1 candidate that does not parse: "no available policy"
    pytest.param("v=STSv1", id="missing-id-bare"),
    pytest.param("v=STSv1;", id="missing-id-delim"),
    pytest.param("v=STSv1; foo=1", id="missing-id-extension-only"),
    pytest.param("v=STSv1; id=", id="empty-id"),
    pytest.param("v=STSv1; id=" + "7" * 33, id="id-33-chars"),
    pytest.param("v=STSv1; id=2025-01-01", id="id-hyphen"),
    pytest.param("v=STSv1; id=a; foo=", id="empty-extension-value"),
    pytest.param("v=STSv1; id=a; " + "k" * 33 + "=1", id="extension-name-33"),
    pytest.param("v=STSv1; id=a; b$=1", id="extension-name-char"),
    pytest.param("v=STSv1; id=a; k==v", id="extension-value-equals"),
    pytest.param("v=STSv1; id=a;;", id="additional-delim"),
    pytest.param("v=STSv1; id=a;;;", id="several-trailing-delims"),
    # not a candidate at all (does not begin with v=STSv1): "no MTA-STS record"
    pytest.param("v=STSv0; id=a", id="version-0"),
    pytest.param("v=STSv11; id=a", id="version-11"),
    pytest.param("v=STSv3", id="version-3"),
    pytest.param("id=a; v=STSv1", id="version-not-first"),
    pytest.param("v=DMARC1; p=none", id="other-record"),
    pytest.param("", id="empty"),
    pytest.param("    ", id="blank"),
    pytest.param(" ;  ; ", id="delims-only"),
    pytest.param("qwerty;uiop", id="garbage"),
]


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize("text", INVALID_RECORDS)
def test_rfc8461_3_1_invalid_record_classes(text):
    with pytest.raises(StsRecordError):
        StsRecord.parse(text)
    try:  # in a TXT answer: discarded (None), or a candidate that fails (no policy)
        result = parse_txt_records([text])
    except StsRecordError:
        result = None
    assert result is None


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_duplicate_id_class_first_wins():
    record = parse_txt_records(["v=STSv1; id=first1; id=second2"])
    assert record.id == "first1" and record.warnings


# --- §3.2 policy file -----------------------------------------------------------------------

VALID_POLICIES = [
    pytest.param("version: STSv1\nmode: testing\nmx: a.example.net\nmx: b.example.net\n"
                 "mx: backup.example.org\nmax_age: 2592000\n",
                 Mode.TESTING, 2592000, ["a.example.net", "b.example.net", "backup.example.org"],
                 (), id="several-mx"),
    pytest.param("version: STSv1\nmode: enforce \t\nmx: *.example.net  \nmax_age: 0 \n",
                 Mode.ENFORCE, 0, ["*.example.net"], (), id="trailing-whitespace"),
    pytest.param("version:STSv1\r\nmode:\tenforce\nmx: \t *.example.net\r\nmax_age: 7\n"
                 "note:two words  here", Mode.ENFORCE, 7, ["*.example.net"],
                 (("note", "two words  here"),), id="mixed-eol-no-final-eol-extension"),
    pytest.param("version: STSv1\r\nmode: enforce\r\nmax_age: 604800\r\nmx: mx.example.net\r\n",
                 Mode.ENFORCE, 604800, ["mx.example.net"], (), id="crlf"),
    pytest.param("version: STSv1\nmode: none\nmax_age: 3600", Mode.NONE, 3600, [], (),
                 id="mode-none-without-mx"),
    pytest.param("version: STSv1\nmode: enforce\nmx: mx.example.net\nmax_age: 86400\n"
                 "extra_key: value", Mode.ENFORCE, 86400, ["mx.example.net"],
                 (("extra_key", "value"),), id="unknown-key-is-extension"),
]


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(("text", "mode", "max_age", "mx", "extensions"), VALID_POLICIES)
def test_rfc8461_3_2_valid_policy_classes(text, mode, max_age, mx, extensions):
    policy = parse_policy(text)
    assert (policy.version, policy.mode, policy.max_age) == ("STSv1", mode, max_age)
    assert list(policy.mx) == mx and policy.extensions == extensions
    assert parse_policy(policy.to_text()) == policy


def _policy(**fields: str | None) -> str:
    base = {"version": "STSv1", "mode": "enforce", "mx": "mx.example.net", "max_age": "86400"}
    base.update(fields)
    return "".join(f"{k}: {v}\n" for k, v in base.items() if v is not None)


INVALID_POLICIES = [
    pytest.param("", id="empty"),
    pytest.param("abcdef", id="garbage"),
    pytest.param("version: STSv1\nline without colon\n", id="not-key-value"),
    pytest.param(_policy(version=None), id="missing-version"),
    pytest.param(_policy(version="STSv0"), id="version-0"),
    pytest.param(_policy(version="STSv3"), id="version-3"),
    pytest.param(_policy(version="STSv10"), id="version-10"),
    pytest.param(_policy(mode=None), id="missing-mode"),
    pytest.param(_policy(mode="strict"), id="unknown-mode"),
    pytest.param(_policy(max_age=None), id="missing-max-age"),
    pytest.param(_policy(max_age=None, mx=None), id="missing-max-age-and-mx"),
    pytest.param(_policy(mx=None), id="enforce-without-mx"),
    pytest.param(_policy(mode="testing", mx=None), id="testing-without-mx"),
    pytest.param(_policy(max_age="12345678901"), id="max-age-11-digits"),
    pytest.param(_policy(max_age="seven"), id="max-age-word"),
    pytest.param(_policy(max_age="-60"), id="max-age-negative"),
    pytest.param(_policy(max_age="3600.5"), id="max-age-decimal"),
    pytest.param(_policy(max_age="31557601"), id="max-age-above-limit"),
    pytest.param(_policy(mx=""), id="empty-mx"),
    pytest.param(_policy(mx="*.*.example.net"), id="mx-two-wildcards"),
    pytest.param(_policy(mx="**.example.net"), id="mx-double-star"),
    pytest.param(_policy(mx="mx.example-"), id="mx-label-trailing-hyphen"),
    pytest.param(_policy(mx="mx.b\u00fccher.example"), id="mx-u-label"),
    pytest.param(_policy() + "ext:\n", id="empty-extension-value"),
    pytest.param(_policy() + "e" * 33 + ": 1\n", id="extension-name-33"),
    pytest.param(_policy() + "_ext: 1\n", id="extension-name-underscore"),
]


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize("text", INVALID_POLICIES)
def test_rfc8461_3_2_invalid_policy_classes(text):
    with pytest.raises(PolicySyntaxError):
        parse_policy(text)


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_duplicate_key_class_first_wins():
    policy = parse_policy(_policy() + "mode: testing\n")
    assert policy.mode is Mode.ENFORCE and policy.warnings


# --- §4.1 MX matching -----------------------------------------------------------------------

MX_CASES = [
    pytest.param(["mx.example.net", "*.pool.example.net"], "mx.example.net", True, id="exact"),
    pytest.param(["mx.example.net", "*.pool.example.net"], "a7.pool.example.net", True,
                 id="wildcard-one-label"),
    pytest.param(["mx.example.net", "*.pool.example.net"], "pool.example.net", False,
                 id="wildcard-not-apex"),
    pytest.param(["mx.example.net", "*.pool.example.net"], "x.a7.pool.example.net", False,
                 id="wildcard-not-two-labels"),
    pytest.param(["mx.example.net", "*.pool.example.net"], "localhost", False, id="unrelated"),
    pytest.param(["*.example.net"], "mx.example.org", False, id="other-domain"),
    pytest.param(["*.inbound.example.net", "mail.example.org"],
                 "tenant-one.eu-v2.inbound.example.net", False, id="hosted-mx-deeper-name"),
]


@pytest.mark.rfc("8461 4.1")
@pytest.mark.parametrize(("patterns", "host", "match"), MX_CASES)
def test_rfc8461_4_1_mx_match_classes(patterns, host, match):
    assert Policy("STSv1", Mode.ENFORCE, 86400, tuple(patterns)).matches_mx(host) is match
    assert any(mx_matches(p, host) for p in patterns) is match


# --- §3.3 media type ------------------------------------------------------------------------

CONTENT_TYPES = [
    pytest.param("TEXT/plain", True, id="upper-type"),
    pytest.param("tExT/PlAiN", True, id="mixed-case"),
    pytest.param("text/plain;charset=us-ascii", True, id="param-no-space"),
    pytest.param("text/plain; charset=utf-8", True, id="param-space"),
    pytest.param("text/plain ;charset=utf-8", True, id="space-before-semicolon"),
    pytest.param("application/octet-stream", False, id="octet-stream"),
    pytest.param("application/xml+text/plain", False, id="suffix-holding-text-plain"),
    pytest.param("text/plain+xml", False, id="text-plain-with-suffix"),
    pytest.param("text/plain+", False, id="trailing-plus"),
]


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(("content_type", "expected"), CONTENT_TYPES)
def test_rfc8461_3_3_content_type_classes(content_type, expected):
    assert is_text_plain(content_type) is expected
