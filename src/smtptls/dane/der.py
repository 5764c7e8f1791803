"""The few DER shapes DANE needs, read without a full ASN.1 parser (X.690 §8.1, §10.1).

- :func:`header`: one element's tag and content bounds, bounded and never raising;
- :func:`spki_from_tbs`: the exact SubjectPublicKeyInfo inside a TBSCertificate
  (RFC 5280 §4.1), the bytes a selector SPKI(1) record matches (RFC 6698 §2.1.2);
- :func:`is_certificate`, :func:`is_spki`: whether Full(0) association data has the
  outer shape of a Certificate or a SubjectPublicKeyInfo (RFC 5280 §4.1). RFC 6698
  §4.1 makes a record with malformed data unusable; only the outer structure is
  judged, so certificates a strict parser rejects (odd serials, BER inside) still
  count as well-formed, as they do for matching.
"""

from __future__ import annotations

__all__ = ["header", "is_certificate", "is_spki", "spki_from_tbs"]

SEQUENCE = 0x30
BIT_STRING = 0x03
EXPLICIT_0 = 0xA0
MAX_LENGTH_OCTETS = 4  # a DER length of up to 2**32 - 1 octets; TLSA data is < 64 KiB


def header(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """``(tag, content start, content end)`` of the DER element at ``pos``, or None."""
    if pos + 2 > len(buf):
        return None
    tag = buf[pos]
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        # X.690 §10.1: DER has definite lengths only (count 0 is BER's indefinite form).
        if count == 0 or count > MAX_LENGTH_OCTETS or pos + count > len(buf):
            return None
        length = int.from_bytes(buf[pos:pos + count], "big")
        pos += count
    if pos + length > len(buf):
        return None
    return tag, pos, pos + length


def _children(buf: bytes, tags: tuple[int, ...]) -> bool:
    """Is ``buf`` exactly one SEQUENCE whose elements have ``tags``, in order?"""
    outer = header(buf, 0)
    if outer is None or outer[0] != SEQUENCE or outer[2] != len(buf):
        return False
    pos = outer[1]
    for tag in tags:
        element = header(buf, pos)
        if element is None or element[0] != tag or element[2] > outer[2]:
            return False
        pos = element[2]
    return pos == outer[2]


def is_certificate(data: bytes) -> bool:
    """``Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signature }``."""
    return _children(data, (SEQUENCE, SEQUENCE, BIT_STRING))


def is_spki(data: bytes) -> bool:
    """``SubjectPublicKeyInfo ::= SEQUENCE { algorithm, subjectPublicKey BIT STRING }``."""
    return _children(data, (SEQUENCE, BIT_STRING))


def spki_from_tbs(tbs: bytes) -> bytes | None:
    """The exact SubjectPublicKeyInfo DER inside a TBSCertificate (RFC 5280 §4.1)."""
    outer = header(tbs, 0)
    if outer is None or outer[0] != SEQUENCE:
        return None
    pos = outer[1]
    element = header(tbs, pos)
    if element is None:
        return None
    if element[0] == EXPLICIT_0:  # [0] EXPLICIT version
        pos = element[2]
    # serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for _ in range(5):
        element = header(tbs, pos)
        if element is None:
            return None
        pos = element[2]
    element = header(tbs, pos)
    if element is None or element[0] != SEQUENCE:
        return None
    return tbs[pos:element[2]]
