"""RFC 8461 §4.1 (MX host matching) and §4.2 (certificate name matching)."""

from __future__ import annotations

import pytest

from smtptls.mtasts import Mode, Policy, cert_matches, mx_matches, normalize_host

pytestmark = pytest.mark.rfc("8461 4")


@pytest.mark.parametrize(
    "pattern, host, expected",
    [
        pytest.param("mail.example.com", "mail.example.com", True, id="exact"),
        pytest.param("mail.example.com", "MAIL.Example.COM", True, id="case-host"),
        pytest.param("MAIL.EXAMPLE.COM", "mail.example.com", True, id="case-pattern"),
        pytest.param("mail.example.com", "mail.example.com.", True, id="trailing-dot-host"),
        pytest.param("mail.example.com.", "mail.example.com", True, id="trailing-dot-pattern"),
        pytest.param("mail.example.com", "mail2.example.com", False, id="different"),
        pytest.param("mail.example.com", "a.mail.example.com", False, id="exact-not-subdomain"),
        pytest.param("*.example.com", "mail.example.com", True, id="wildcard-one-label"),
        pytest.param("*.example.com", "MAIL.EXAMPLE.COM.", True, id="wildcard-case-dot"),
        pytest.param("*.example.com", "example.com", False, id="wildcard-not-apex"),
        pytest.param("*.example.com", "a.b.example.com", False, id="wildcard-not-two-labels"),
        pytest.param("*.example.com", "mailexample.com", False, id="wildcard-label-boundary"),
        pytest.param("*.example.com", ".example.com", False, id="wildcard-empty-label"),
        pytest.param("*.example.com", "*.example.com", False, id="host-with-star"),
        pytest.param("*.*.example.com", "a.b.example.com", False, id="double-wildcard"),
        pytest.param("mx*.example.com", "mx1.example.com", False, id="partial-wildcard"),
        pytest.param("", "", False, id="empty"),
        pytest.param("a..example", "a..example", False, id="empty-labels"),
    ],
)
def test_rfc8461_4_1_mx_matching(pattern, host, expected):
    assert mx_matches(pattern, host) is expected


@pytest.mark.parametrize(
    "pattern, host, expected",
    [
        pytest.param("xn--mnchen-3ya.example", "m\u00fcnchen.example", True, id="u-label-host"),
        pytest.param(
            "xn--mnchen-3ya.example", "M\u00dcNCHEN.example", True, id="u-label-host-uppercase"
        ),
        pytest.param(
            "*.xn--mnchen-3ya.example", "mx.m\u00fcnchen.example", True, id="u-label-wildcard"
        ),
        pytest.param("xn--mnchen-3ya.example", "xn--mnchen-3ya.example", True, id="a-label-host"),
        pytest.param("m\u00fcnchen.example", "xn--mnchen-3ya.example", True, id="u-label-pattern"),
        pytest.param(
            "xn--mnchen-3ya.example", "m\u00fcnchen\u3002example", True, id="ideographic-dot"
        ),
        pytest.param("mail.example", "ma\u200dil.example", False, id="invalid-idna-joiner"),
        pytest.param("mail.example", "\ud800.example", False, id="surrogate"),
        pytest.param("mail.example", "\u2603" * 300, False, id="huge-u-label"),
    ],
)
def test_rfc8461_4_1_idna_a_labels_compared(pattern, host, expected):
    assert mx_matches(pattern, host) is expected


@pytest.mark.parametrize("host", [None, 5, b"mail.example", "a" * 2000, "a." * 130 + "a"])
def test_rfc8461_4_1_unusable_host_never_matches(host):
    assert mx_matches("*.example", host) is False
    assert Policy("STSv1", Mode.ENFORCE, 1, ("*.example",)).matches_mx(host) is False
    assert cert_matches(host, ["*.example"]) is False


def test_rfc8461_4_1_policy_matches_any_pattern():
    policy = Policy("STSv1", Mode.ENFORCE, 60, ("a.example", "*.b.example"))
    assert policy.matches_mx("a.example")
    assert policy.matches_mx("x.b.example")
    assert not policy.matches_mx("b.example")
    assert not Policy("STSv1", Mode.NONE, 60).matches_mx("a.example")


@pytest.mark.parametrize(
    "host, sans, expected",
    [
        pytest.param("mx.example.com", ["mx.example.com"], True, id="exact"),
        pytest.param("MX.example.com.", ["mx.EXAMPLE.com"], True, id="case-and-dot"),
        pytest.param("mx.example.com", ["mx.example.com."], True, id="san-trailing-dot"),
        pytest.param("mx.example.com", ["other.example", "mx.example.com"], True, id="second-san"),
        pytest.param("mx.example.com", ["*.example.com"], True, id="wildcard"),
        pytest.param("example.com", ["*.example.com"], False, id="wildcard-not-apex"),
        pytest.param("a.mx.example.com", ["*.example.com"], False, id="wildcard-one-label-only"),
        pytest.param("mx1.example.com", ["mx*.example.com"], False, id="partial-wildcard"),
        pytest.param("mx.example.com", ["*x.example.com"], False, id="partial-wildcard-prefix"),
        pytest.param("mx.example.com", ["mx.*.com"], False, id="inner-wildcard"),
        pytest.param("mx.example.com", ["*"], False, id="bare-star"),
        pytest.param("mx.example.com", ["*.*.com"], False, id="double-wildcard"),
        pytest.param("mx.example.com", [], False, id="no-san"),
        pytest.param("mx.example.com", ["example.com"], False, id="parent"),
        pytest.param("xn--mnchen-3ya.example", ["xn--mnchen-3ya.example"], True, id="a-label"),
        pytest.param("m\u00fcnchen.example", ["xn--mnchen-3ya.example"], True, id="u-label-host"),
        pytest.param(
            "m\u00fcnchen.example", ["m\u00fcnchen.example"], False, id="u-label-san-ignored"
        ),
        pytest.param(
            "mx.example.com", [None, 3, "mx.example.com"], True, id="junk-entries-skipped"
        ),
        pytest.param("mx.example.com", "mx.example.com", True, id="single-string"),
        pytest.param("mx.example.com", 42, False, id="not-iterable"),
    ],
)
def test_rfc8461_4_2_cert_san_matching(host, sans, expected):
    assert cert_matches(host, sans) is expected


def test_rfc8461_4_2_no_common_name_fallback():
    # only dNSName SANs are passed in: a certificate with the host only in its CN
    # presents no SAN and therefore does not match
    assert cert_matches("mx.example.com", []) is False


def test_rfc8461_4_2_san_list_bounded():
    sans = ["other.example"] * 5000 + ["mx.example.com"]
    assert cert_matches("mx.example.com", sans) is False
    assert cert_matches("mx.example.com", iter(["mx.example.com"])) is True


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Mail.Example.", "mail.example"),
        ("m\u00fcnchen.example", "xn--mnchen-3ya.example"),
        ("", None),
        (".", None),
        ("a..b", None),
        ("*.a", None),
        ("a" * 64 + ".b", None),
    ],
)
def test_normalize_host(name, expected):
    assert normalize_host(name) == expected
