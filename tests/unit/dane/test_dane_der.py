"""The DER shapes of Full(0) association data (RFC 6698 §4.1, RFC 5280 §4.1)."""

from __future__ import annotations

import pytest
from dane_certs import pki
from hypothesis import given
from hypothesis import strategies as st

from smtptls.dane.der import header, is_certificate, is_spki, spki_from_tbs


@pytest.mark.parametrize("kind", ["ec", "rsa", "ed25519"])
def test_rfc6698_4_1_generated_certificates_and_keys_are_well_formed(kind: str) -> None:
    p = pki(kind)
    for issued in (p.leaf, p.inter, p.root):
        assert is_certificate(issued.der) and not is_spki(issued.der)
        assert is_spki(issued.spki) and not is_certificate(issued.spki)
        assert spki_from_tbs(issued.cert.tbs_certificate_bytes) == issued.spki


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x30", id="tag-only"),
        pytest.param(b"\x30\x80\x00\x00", id="indefinite-length"),
        pytest.param(b"\x30\x85" + bytes(5), id="length-of-five-octets"),
        pytest.param(b"\x30\x05\x30\x00\x03\x01", id="content-shorter-than-length"),
        pytest.param(b"\x30\x05\x30\x00\x03\x01\x00\x00", id="trailing-octet"),
        pytest.param(b"\x31\x05\x30\x00\x03\x01\x00", id="set-not-sequence"),
        pytest.param(b"\x30\x05\x30\x00\x04\x01\x00", id="octet-string-not-bit-string"),
    ],
)
def test_rfc6698_4_1_malformed_spki_shapes(data: bytes) -> None:
    assert not is_spki(data)


def test_rfc6698_4_1_truncated_certificate_is_malformed() -> None:
    der = pki().leaf.der
    assert not is_certificate(der[:-1]) and not is_certificate(der + b"\x00")


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=300))
def test_property_der_readers_never_raise(data: bytes, pos: int) -> None:
    element = header(data, pos)
    assert element is None or (element[1] <= element[2] <= len(data))
    assert is_certificate(data) in (True, False)
    assert is_spki(data) in (True, False)
    spki = spki_from_tbs(data)
    assert spki is None or isinstance(spki, bytes)
