"""The sender's result model: one TLS session under its applied policy (RFC 8460 §4.3)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from send_helpers import STS, T0, bad, ok, results

from smtptls.errors import ResultError
from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.results import AppliedPolicy, Failure, SessionResult, parse_result_type


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(("ptype", "strings", "patterns"), [
    pytest.param("sts", ("version: STSv1", "mode: enforce"), ("*.mail.example.com",), id="sts"),
    pytest.param("tlsa", ("3 1 1 abcd",), (), id="tlsa"),
    pytest.param("no-policy-found", (), (), id="no-policy-found"),
])
def test_rfc8460_4_4_policy_types(ptype, strings, patterns):
    p = AppliedPolicy(ptype, "Example.COM.", strings, patterns)
    assert p.policy_type is PolicyType(ptype)
    assert p.policy_domain == "example.com"  # lower case, no trailing dot
    assert AppliedPolicy.from_dict(p.to_dict()) == p


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"policy_type": "dane"}, "not sts, tlsa", id="unknown-type"),
    pytest.param({"policy_domain": "exa mple.com"}, "not a domain", id="bad-domain"),
    pytest.param({"policy_domain": ""}, "not a domain", id="empty-domain"),
    pytest.param({"policy_type": "no-policy-found", "policy_strings": ("x",)},
                 "no-policy-found has no", id="no-policy-with-strings"),
    pytest.param({"mx_patterns": ("mx.*.example.com",)}, "not a host name pattern",
                 id="wildcard-not-leftmost"),
    pytest.param({"policy_strings": "version: STSv1"}, "list of strings", id="string-not-list"),
    pytest.param({"policy_strings": ("a\nb",)}, "control character", id="newline-in-string"),
])
def test_rfc8460_4_4_policy_rejected(kwargs, message):
    base = {"policy_type": "sts", "policy_domain": "example.com", "policy_strings": (),
            "mx_patterns": ()}
    with pytest.raises(ResultError, match=message):
        AppliedPolicy(**(base | kwargs))


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_idn_policy_domain_is_a_label():
    assert AppliedPolicy.none_found("bücher.example").policy_domain == "xn--bcher-kva.example"


@pytest.mark.rfc("8460 4.3")
@pytest.mark.parametrize("name", [t.value for t in ResultType])
def test_rfc8460_4_3_registered_result_types(name):
    assert parse_result_type(name) is ResultType(name)
    assert parse_result_type(name.upper()) is ResultType(name)


@pytest.mark.rfc("8460 6.6")
def test_rfc8460_6_6_unregistered_result_type_kept():
    assert parse_result_type("future-failure") == "future-failure"
    with pytest.raises(ResultError):
        parse_result_type("not a token!")


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(("field", "value", "expected"), [
    pytest.param("receiving_ip", "2001:0db8:0000::0001", "2001:db8::1", id="ipv6-rfc5952"),
    pytest.param("receiving_ip", "[192.0.2.1]", "192.0.2.1", id="bracketed"),
    pytest.param("receiving_ip", "IPv6:2001:db8::2", "2001:db8::2", id="postfix-ipv6-literal"),
    pytest.param("mx_host", "MX1.Example.COM.", "mx1.example.com", id="mx-normalized"),
])
def test_rfc8460_4_4_addresses_and_names_canonical(field, value, expected):
    r = SessionResult(T0, STS, **{field: value})
    assert getattr(r, field) == expected


@pytest.mark.parametrize(("kwargs", "message"), [
    pytest.param({"receiving_ip": "999.1.1.1"}, "not an IP", id="bad-ip"),
    pytest.param({"time": datetime(2024, 5, 1)}, "timezone-aware", id="naive-time"),
    pytest.param({"failures": (Failure("starttls-not-supported"),) * 17}, "more than 16",
                 id="too-many-failures"),
    pytest.param({"failed": "yes"}, "true or false", id="failed-not-bool"),
    pytest.param({"failures": ("starttls-not-supported",)}, "Failure values",
                 id="failure-not-value"),
])
def test_session_result_rejected(kwargs, message):
    base = {"time": T0, "policy": STS}
    with pytest.raises(ResultError, match=message):
        SessionResult(**(base | kwargs))


def test_session_time_converted_to_utc_and_day():
    r = SessionResult(datetime(2024, 5, 2, 1, 30, tzinfo=timezone(timedelta(hours=2))), STS)
    assert r.time.tzinfo is UTC
    assert r.day == "2024-05-01"  # RFC 8460 §4.1: UTC days


@pytest.mark.rfc("8460 4.3")
def test_rfc8460_4_3_success_and_failure_counting_flags():
    assert ok().succeeded and not ok().failed
    assert bad("certificate-expired").failed
    # libtlsrpt may say "failed" without a detail: still a failed session
    r = SessionResult(T0, STS, failed=True)
    assert r.failed and r.failures == ()
    assert SessionResult.from_dict(r.to_dict()) == r


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_detail_keys_take_session_values_and_default_ip():
    r = SessionResult(T0, STS, mx_host="mx1.mail.example.com", receiving_ip="192.0.2.1",
                      failures=(Failure("certificate-expired", receiving_mx_helo="mx1"),
                                Failure("validation-failure", receiving_ip="192.0.2.9")))
    keys = r.detail_keys(default_sending_ip="198.51.100.1")
    assert keys[0] == ("certificate-expired", "198.51.100.1", "mx1.mail.example.com", "mx1",
                       "192.0.2.1", None, None)
    assert keys[1][4] == "192.0.2.9"


def test_json_form_documented_example():
    doc = {
        "time": "2024-05-01T10:00:00Z",
        "policy": {"policy-type": "sts", "policy-domain": "example.com",
                   "policy-string": ["version: STSv1", "mode: testing"],
                   "mx-host": ["*.mail.example.com"]},
        "receiving-mx-hostname": "mx1.mail.example.com", "receiving-ip": "192.0.2.10",
        "sending-mta-ip": "198.51.100.7",
        "failures": [{"result-type": "certificate-expired",
                      "failure-reason-code": "X509_V_ERR_CERT_HAS_EXPIRED"}],
    }
    r = SessionResult.parse(json.dumps(doc))
    assert r.failures[0].result_type is ResultType.CERTIFICATE_EXPIRED
    assert r.to_dict() == doc
    assert SessionResult.parse(r.to_text()) == r


@pytest.mark.parametrize(("doc", "message"), [
    pytest.param("[]", "JSON object", id="not-object"),
    pytest.param("{", "not valid JSON", id="not-json"),
    pytest.param('{"policy": {"policy-type": "sts", "policy-domain": "a.b"}}', "no time",
                 id="no-time"),
    pytest.param('{"time": "2024-05-01T10:00:00Z"}', "no policy", id="no-policy"),
    pytest.param('{"time": "2024-05-01T10:00:00", "policy": {}}', "no time zone",
                 id="naive-time"),
    pytest.param('{"time": "yesterday", "policy": {}}', "not an RFC 3339", id="bad-time"),
    pytest.param('{"time": "2024-05-01T10:00:00Z", "policy": {"policy-type": "sts", '
                 '"policy-domain": "a.b"}, "extra": 1}', "unknown result member",
                 id="unknown-member"),
    pytest.param('{"time": "2024-05-01T10:00:00Z", "policy": {"policy-type": "sts", '
                 '"policy-domain": "a.b"}, "failures": [{"why": 1}]}', "unknown failure",
                 id="unknown-failure-member"),
    pytest.param('{"time": "2024-05-01T10:00:00Z", "policy": {"policy-type": "sts", '
                 '"policy-domain": "a.b"}, "failures": [{}]}', "needs a result-type",
                 id="failure-without-type"),
])
def test_json_form_rejected(doc, message):
    with pytest.raises(ResultError, match=message):
        SessionResult.parse(doc)


def test_json_time_defaults_to_now():
    r = SessionResult.parse('{"policy": {"policy-type": "no-policy-found", '
                            '"policy-domain": "example.org"}}', now=T0)
    assert r.time == T0 and r.succeeded


def test_json_size_bounded():
    with pytest.raises(ResultError, match="longer than"):
        SessionResult.parse(b"{" + b" " * (300 * 1024) + b"}")


@settings(max_examples=150, deadline=None)
@given(results())
def test_property_result_json_round_trip(result):
    assert SessionResult.parse(result.to_text()) == result


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda inner: st.lists(inner, max_size=4)
                              | st.dictionaries(st.sampled_from(
                                  ["time", "policy", "policy-type", "policy-domain",
                                   "failures", "result-type", "receiving-ip", "failed",
                                   "policy-string", "mx-host"]), inner, max_size=5),
                              max_leaves=20).map(json.dumps)))
def test_property_parse_raises_only_result_error(data):
    try:
        r = SessionResult.parse(data, now=T0)
    except ResultError as exc:
        assert str(exc)
    else:
        assert SessionResult.parse(r.to_text()) == r
