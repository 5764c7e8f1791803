"""DANE-TA(2) reference identifier matching (RFC 7672 §3.2.2, §3.2.3; RFC 6125 §6.4)."""

from __future__ import annotations

import pytest
from dane_certs import key, make_cert
from hypothesis import given
from hypothesis import strategies as st

from smtptls.dane.names import cert_matches, match_reference, normalize_name, presented_names


@pytest.mark.parametrize(
    ("presented", "reference", "ok"),
    [
        pytest.param("mx.example.com", "mx.example.com", True, id="exact"),
        pytest.param("MX.Example.COM", "mx.example.com", True, id="case-insensitive"),
        pytest.param("mx.example.com.", "mx.example.com", True, id="presented-trailing-dot"),
        pytest.param("*.example.com", "mx.example.com", True, id="wildcard-one-label"),
        pytest.param("*.example.com", "a.b.example.com", False, id="wildcard-not-two-labels"),
        pytest.param("*.example.com", "example.com", False, id="wildcard-not-parent"),
        pytest.param("*.com", "example.com", False, id="wildcard-public-suffix-alone"),
        pytest.param("m*.example.com", "mx.example.com", False, id="partial-wildcard-prefix"),
        pytest.param("*x.example.com", "mx.example.com", False, id="partial-wildcard-suffix"),
        pytest.param("mx.*.com", "mx.example.com", False, id="wildcard-not-leftmost"),
        pytest.param("*.*.example.com", "a.b.example.com", False, id="double-wildcard"),
        pytest.param("mx.example.com", "*.example.com", False, id="wildcard-reference"),
        pytest.param("mx.example.org", "mx.example.com", False, id="other-domain"),
        pytest.param("mx.example.com", ".example.com", True, id="parent-domain-policy"),
        pytest.param("example.com", ".example.com", False, id="parent-domain-not-itself"),
        pytest.param("*.example.com", ".example.com", True, id="parent-domain-wildcard"),
        pytest.param("mx.badexample.com", ".example.com", False, id="parent-domain-label-edge"),
        pytest.param("xn--bcher-kva.example", "xn--bcher-kva.example", True, id="a-label"),
        pytest.param("bücher.example", "xn--bcher-kva.example", False, id="presented-u-label"),
    ],
)
def test_rfc7672_3_2_3_reference_identifier_matching(presented: str, reference: str,
                                                      ok: bool) -> None:
    assert match_reference(presented, normalize_name(reference) or reference) is ok


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        pytest.param("MX.Example.com.", "mx.example.com", id="case-and-dot"),
        pytest.param("bücher.example", "xn--bcher-kva.example", id="u-label-to-a-label"),
        pytest.param(".Example.com", ".example.com", id="parent-form"),
        pytest.param("a..b", None, id="empty-label"),
        pytest.param("", None, id="empty"),
        pytest.param("a" * 64 + ".com", None, id="label-too-long"),
        pytest.param("x" * 254, None, id="name-too-long"),
    ],
)
def test_rfc6125_6_4_2_normalize(name: str, normal: str | None) -> None:
    assert normalize_name(name) == normal


def test_rfc7672_3_2_3_san_dns_ids_only_when_present() -> None:
    # A certificate with a DNS-ID: the CN is not used, even if it would match.
    cert = make_cert("mx.example.com", key(), san=["other.example.com"]).cert
    assert presented_names(cert) == (("other.example.com",), "san")
    ok, detail = cert_matches(cert, ["mx.example.com"])
    assert not ok and "other.example.com" in detail
    assert cert_matches(cert, ["other.example.com"])[0]


def test_rfc7672_3_2_3_cn_id_when_no_san() -> None:
    cert = make_cert("mx.example.com", key()).cert
    assert presented_names(cert) == (("mx.example.com",), "cn")
    assert cert_matches(cert, ["MX.example.com."])[0]
    assert not cert_matches(cert, ["example.com"])[0]


def test_rfc7672_3_2_3_wildcard_cn_id() -> None:
    cert = make_cert("*.example.com", key()).cert
    assert cert_matches(cert, ["mx.example.com"])[0]


def test_rfc7672_3_2_3_no_names_at_all() -> None:
    cert = make_cert(None, key()).cert
    ok, detail = cert_matches(cert, ["mx.example.com"])
    assert not ok and "no DNS name" in detail


@given(st.text(max_size=80), st.text(max_size=80))
def test_property_name_matching_never_raises(presented: str, reference: str) -> None:
    norm = normalize_name(reference)
    assert norm is None or isinstance(norm, str)
    assert match_reference(presented, norm or "") in (True, False)
