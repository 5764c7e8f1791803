"""The libtlsrpt datagram protocol (Postfix >= 3.10): decoder against our encoder."""

from __future__ import annotations

import json
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from send_helpers import SENDING_IP, STS, T0, bad, ok, results

from smtptls.errors import DatagramError
from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate
from smtptls.tlsrptsend.libtlsrpt import (
    Datagram,
    DatagramFailure,
    DatagramPolicy,
    FailureCode,
    LibPolicyType,
    datagram_for,
    decode_datagram,
    encode_datagram,
)

PR = "v=TLSRPTv1; rua=mailto:tlsrpt@company-y.example"
IDENTITY = ReportIdentity.with_defaults("mta.sender.example")

# Datagrams in libtlsrpt's own layout (first member of an object written as `"k": "v"`,
# empty arrays left out, "t" and "f" last), for the library's documented examples.
EXAMPLE_NO_POLICY = ('{"dpv":"1","d": "company-y.example","pr": "' + PR + '",'
                     '"policies":[{"policy-type":9,"t":0,"f":0}]}')
EXAMPLE_TLSA_FAILURE = (
    '{"dpv":"1","d": "company-y.example","pr": "' + PR + '","policies":[{"policy-type":1,'
    '"policy-domain": "company-y.example","policy-string":["3 0 1 1F850A337E6DB9C609C522D136A'
    '475638CC43E1ED424F8EEC8513D747D1D085D","3 0 1 12350A337E6DB9C6123522D136A475638CC43E1ED4'
    '24F8EEC8513D747D1D1234"],"failure-details":[{"c":204,"s": "1.2.3.4","n": "mailin.example'
    '.com","h": "tes-ehlo.example.com","r": "11.22.33.55","a": "This is additional information'
    '","f": "999 TEST ERROR"}],"t":1,"f":1}]}')
EXAMPLE_STS_TWO_FAILURES = (
    '{"d": "company-y.example","pr": "' + PR + '","policies":[{"policy-type":2,'
    '"policy-domain": "company-y.example","policy-string":["version: STSv1","mode: testing",'
    '"mx: *.mail.company-y.example","max_age: 86400"],"mx-host":["*.mail.company-y.example",'
    '"*.mail2.company-y.example"],"failure-details":[{"c":302,"s": "1.2.3.4","n": "mailin.'
    'example.com","h": "test-ehlo.example.com","r": "11.22.33.44"},{"c":303,"s": "1.2.3.5",'
    '"n": "mailin.example.com","r": "11.22.33.55"}],"t":2,"f":1}]}')
EXAMPLE_MIXED = (
    '{"dpv":"1","d": "company-y.example","pr": "' + PR + '","policies":[{"policy-type":2,'
    '"policy-domain": "company-y.example","policy-string":["version: STSv1"],"mx-host":'
    '["*.mail.company-y.example"],"failure-details":[{"c":302,"n": "mailin.example.com"}],'
    '"t":1,"f":1},{"policy-type":1,"policy-domain": "company-y.example","policy-string":'
    '["3 0 1 1F85"],"t":0,"f":0}]}')
EXAMPLE_FAILED_WITHOUT_DETAILS = ('{"d": "company-y.example","pr": "' + PR + '",'
                                  '"policies":[{"policy-type":9,"t":0,"f":1}]}')


@pytest.mark.parametrize(("datagram", "expected"), [
    pytest.param(EXAMPLE_NO_POLICY, [("no-policy-found", False, [])], id="no-policy-success"),
    pytest.param(EXAMPLE_TLSA_FAILURE, [("tlsa", True, ["certificate-expired"])],
                 id="tlsa-expired"),
    pytest.param(EXAMPLE_STS_TWO_FAILURES,
                 [("sts", True, ["sts-policy-invalid", "sts-webpki-invalid"])],
                 id="sts-two-failures-no-dpv"),
    pytest.param(EXAMPLE_MIXED, [("sts", True, ["sts-policy-invalid"]), ("tlsa", False, [])],
                 id="two-policies-mixed"),
    pytest.param(EXAMPLE_FAILED_WITHOUT_DETAILS, [("no-policy-found", True, [])],
                 id="failed-without-details"),
])
def test_libtlsrpt_documented_examples_decode(datagram, expected):
    d = decode_datagram(datagram.encode())
    assert d.domain == "company-y.example" and d.tlsrpt_record == PR
    got = [(str(r.policy.policy_type), r.failed, [str(f.result_type) for f in r.failures])
           for r in d.to_results(T0)]
    assert got == expected
    assert all(r.policy.policy_domain == "company-y.example" for r in d.to_results(T0))


def test_libtlsrpt_failure_detail_fields():
    (r,) = decode_datagram(EXAMPLE_TLSA_FAILURE).to_results(T0)
    (f,) = r.failures
    # s/n/h/r/a/f: sending IP, MX name, HELO, receiving IP, additional info, reason code
    assert (f.sending_mta_ip, f.receiving_mx_hostname, f.receiving_mx_helo, f.receiving_ip,
            f.additional_information, f.failure_reason_code) == (
        "1.2.3.4", "mailin.example.com", "tes-ehlo.example.com", "11.22.33.55",
        "This is additional information", "999 TEST ERROR")
    assert r.policy.policy_strings[0].startswith("3 0 1 1F85")


@pytest.mark.rfc("8460 4.3")
@pytest.mark.parametrize(("code", "result_type"), [
    (201, "starttls-not-supported"), (202, "certificate-host-mismatch"),
    (203, "certificate-not-trusted"), (204, "certificate-expired"),
    (205, "validation-failure"), (301, "sts-policy-fetch-error"),
    (302, "sts-policy-invalid"), (303, "sts-webpki-invalid"), (304, "tlsa-invalid"),
    (305, "dnssec-invalid"), (306, "dane-required"),
])
def test_rfc8460_4_3_libtlsrpt_failure_codes(code, result_type):
    assert FailureCode(code).result_type is ResultType(result_type)
    assert FailureCode.from_result_type(ResultType(result_type)) == code


@pytest.mark.rfc("8460 4.4")
@pytest.mark.parametrize(("value", "ptype"), [(1, "tlsa"), (2, "sts"), (9, "no-policy-found")])
def test_rfc8460_4_4_libtlsrpt_policy_types(value, ptype):
    assert LibPolicyType(value).policy_type is PolicyType(ptype)
    assert LibPolicyType.from_policy_type(PolicyType(ptype)) == value


def test_unknown_failure_code_still_counts_the_session():
    d = json.loads(EXAMPLE_NO_POLICY)
    d["policies"][0].update({"failure-details": [{"c": 777}], "t": 1, "f": 1})
    (r,) = decode_datagram(json.dumps(d)).to_results(T0)
    assert r.failed
    assert r.failures[0].result_type is ResultType.VALIDATION_FAILURE
    assert r.failures[0].failure_reason_code == "libtlsrpt-777"


def test_no_policy_found_ignores_strings_and_uses_datagram_domain():
    d = json.loads(EXAMPLE_NO_POLICY)
    d["policies"][0]["mx-host"] = ["*.ignored.example"]  # libtlsrpt does not check
    (r,) = decode_datagram(json.dumps(d)).to_results(T0)
    assert r.policy.policy_type is PolicyType.NO_POLICY_FOUND
    assert r.policy.mx_patterns == () and r.policy.policy_domain == "company-y.example"


@pytest.mark.parametrize(("datagram", "message"), [
    pytest.param(b"\xff\xfe", "not UTF-8", id="not-utf8"),
    pytest.param(b"{", "not JSON", id="not-json"),
    pytest.param(b"[]", "not a JSON object", id="not-object"),
    pytest.param(b'{"dpv":"2","d":"a.example","policies":[{"policy-type":9}]}',
                 "protocol version", id="future-version"),
    pytest.param(b'{"pr":"","policies":[{"policy-type":9}]}', "no 'd'", id="no-domain"),
    pytest.param(b'{"d":"a.example","policies":[]}', "non-empty array", id="no-policies"),
    pytest.param(b'{"d":"a.example","policies":[{"t":0}]}', "no policy-type",
                 id="no-policy-type"),
    pytest.param(b'{"d":"a.example","policies":[{"policy-type":3}]}', "unknown value 3",
                 id="bad-policy-type"),
    pytest.param(b'{"d":"a.example","policies":[{"policy-type":"2"}]}', "expected an integer",
                 id="string-policy-type"),
    pytest.param(b'{"d":"a.example","policies":[{"policy-type":9,"failure-details":[{}]}]}',
                 "no failure code", id="detail-without-code"),
    pytest.param(b'{"d":"a.example","policies":[{"policy-type":9,"failure-details":{}}]}',
                 "expected an array", id="details-not-array"),
    pytest.param(b'{"d":"a.example","policies":[{"policy-type":2,"policy-string":"x"}]}',
                 "expected an array", id="strings-not-array"),
    pytest.param(b'{"d":7,"policies":[{"policy-type":9}]}', "expected a string",
                 id="domain-not-string"),
    pytest.param(b'{"d":"a.example","policies":[{"policy-type":9,"f":true}]}',
                 "expected an integer", id="final-bool"),
])
def test_decode_rejects(datagram, message):
    with pytest.raises(DatagramError, match=message):
        decode_datagram(datagram)


def test_decode_size_bounded():
    with pytest.raises(DatagramError, match="longer than"):
        decode_datagram(b" " * (300 * 1024))


def test_bad_domain_in_datagram_is_a_datagram_error():
    d = decode_datagram(b'{"d":"not a domain","policies":[{"policy-type":9}]}')
    with pytest.raises(DatagramError, match="policies\\[0\\]"):
        d.to_results(T0)


def test_encoder_layout():
    dg = Datagram("example.com", PR, (DatagramPolicy(
        LibPolicyType.STS, "example.com", ("version: STSv1",), ("*.example.com",),
        (DatagramFailure(FailureCode.CERTIFICATE_EXPIRED, "1.2.3.4", "mx.example.com"),),
        failed=True),))
    obj = json.loads(encode_datagram(dg))
    assert obj == {"dpv": "1", "d": "example.com", "pr": PR, "policies": [{
        "policy-type": 2, "policy-domain": "example.com", "policy-string": ["version: STSv1"],
        "mx-host": ["*.example.com"], "failure-details": [{"c": 204, "s": "1.2.3.4",
                                                           "n": "mx.example.com"}],
        "t": 1, "f": 1}]}
    assert decode_datagram(encode_datagram(dg)) == dg


def test_datagram_for_result_reaggregates_identically():
    originals = [ok(), ok(), bad("certificate-expired", failure_reason_code="expired"), ok()]
    via = []
    for r in originals:
        via += decode_datagram(encode_datagram(datagram_for(r))).to_results(r.time)
    assert aggregate(via, date(2024, 5, 1), IDENTITY) == \
        aggregate(originals, date(2024, 5, 1), IDENTITY)
    assert via[2].failures[0].sending_mta_ip == SENDING_IP
    assert via[0].policy == STS


@settings(max_examples=200, deadline=None)
@given(st.lists(results(), min_size=1, max_size=8))
def test_property_encoder_decoder_round_trip(rs):
    via = []
    for r in rs:
        dg = datagram_for(r, tlsrpt_record=PR)
        assert decode_datagram(encode_datagram(dg)) == dg
        via += decode_datagram(encode_datagram(dg)).to_results(r.time)
    day = date(2024, 5, 1)
    assert aggregate(via, day, IDENTITY) == aggregate(rs, day, IDENTITY)


_DATAGRAM_KEYS = ["dpv", "d", "pr", "policies", "policy-type", "policy-domain",
                  "policy-string", "mx-host", "failure-details", "c", "s", "n", "h", "r",
                  "a", "f", "t"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 400) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(_DATAGRAM_KEYS), inner, max_size=6),
    max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_property_decoder_raises_only_datagram_error(data):
    try:
        d = decode_datagram(data)
        rs = d.to_results(T0)
    except DatagramError as exc:
        assert str(exc)
    else:
        assert len(rs) == len(d.policies) >= 1
