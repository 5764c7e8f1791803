"""MX host and certificate name matching (RFC 8461 §4.1, §4.2).

Names are compared in lower-case A-label form with one trailing dot removed. A host
given with U-labels is converted with IDNA (UTS #46 mapping); a name that cannot be
converted matches nothing. None of these functions raises.
"""

from __future__ import annotations

from collections.abc import Iterable

import idna

#: RFC 1035 §2.3.4: at most 253 characters in text form (without the trailing dot).
MAX_NAME_LENGTH = 253
#: At most this many SAN entries are looked at in one certificate.
MAX_SAN_NAMES = 1000


def normalize_host(name: str) -> str | None:
    """Lower-case A-label form of ``name`` without a trailing dot, or None if unusable.

    Unusable: not text, empty, an empty label, a label over 63 or a name over 253
    characters, a ``*`` anywhere, or U-labels that IDNA refuses.
    """
    if not isinstance(name, str) or not name or len(name) > 4 * MAX_NAME_LENGTH:
        return None
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():
        # RFC 8461 §4.1: internationalized names are compared as A-labels
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    name = name.lower()
    if not name or len(name) > MAX_NAME_LENGTH or "*" in name:
        return None
    for label in name.split("."):
        if not label or len(label) > 63:
            return None
    return name


def _wildcard_matches(base: str | None, host: str) -> bool:
    # RFC 8461 §4.1 / RFC 6125 §6.4.3: "*" stands for exactly one whole left-most label
    if base is None:
        return False
    _, dot, rest = host.partition(".")
    return bool(dot) and rest == base


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: does MX ``host`` match the policy ``mx`` ``pattern``?

    ``mail.example.com`` matches itself only; ``*.example.com`` matches a host with
    exactly one more label on the left (``a.example.com``), neither ``example.com``
    nor ``a.b.example.com``. Case-insensitive, trailing dots ignored, A-labels compared.
    """
    normalized = normalize_host(host)
    if normalized is None or not isinstance(pattern, str):
        return False
    if pattern.startswith("*."):
        return _wildcard_matches(normalize_host(pattern[2:]), normalized)
    return normalize_host(pattern) == normalized


def _san_matches(san: str, host: str) -> bool:
    if not isinstance(san, str) or not san.isascii():
        # a dNSName is an IA5String holding A-labels (RFC 5280 §4.2.1.6)
        return False
    if san.startswith("*."):
        return _wildcard_matches(normalize_host(san[2:]), host)
    # a "*" anywhere else (partial-label or inner wildcards) never matches
    return normalize_host(san) == host


def cert_matches(mx_host: str, san_dns_names: Iterable[str]) -> bool:
    """RFC 8461 §4.2: is a certificate with these SAN dNSNames valid for ``mx_host``?

    Only subjectAltName dNSName entries count (no fallback to the subject CN). A
    wildcard is honoured only as the whole left-most label and covers exactly one
    label. Case-insensitive, trailing dots ignored, ``mx_host`` compared as A-labels.
    Chain validity and dates are the caller's business (the TLS layer).
    """
    host = normalize_host(mx_host)
    if host is None:
        return False
    if isinstance(san_dns_names, str):
        san_dns_names = (san_dns_names,)
    try:
        for count, san in enumerate(san_dns_names, start=1):
            if count > MAX_SAN_NAMES:
                return False
            if _san_matches(san, host):
                return True
    except TypeError:
        return False
    return False
