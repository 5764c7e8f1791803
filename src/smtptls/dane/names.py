"""Server name checks for DANE-TA(2) (RFC 7672 §3.2.2, §3.2.3; RFC 6125 §6.4).

Only DANE-TA(2) matches are name-checked; DANE-EE(3) matches ignore names
(RFC 7672 §3.2.1).

- Presented identifiers (RFC 7672 §3.2.3): the subjectAltName dNSNames when the
  certificate has at least one; only when it has none, the subject common name
  (the most specific one, the last CN in the subject, RFC 6125 §2.3.1).
- Comparison is case-insensitive, ignores a trailing dot, and compares A-labels
  (reference names given as U-labels are converted with IDNA, RFC 6125 §6.4.2).
- Wildcards (RFC 7672 §3.2.3, RFC 6125 §6.4.3): ``*`` only as the whole left-most
  label, matching exactly one label of the reference name, never a public suffix
  alone (``*.com`` is ignored). Partial wildcards (``f*.example.com``) never match.
- An address literal (``192.0.2.1``, ``[192.0.2.1]``, ``[IPv6:2001:db8::1]``, RFC 5321
  §4.1.3) is not a domain name: :func:`is_address_literal` tells it apart, so that no
  TLSA base domain is built from it (RFC 7672 §2.2).
- A reference name starting with a dot (``.example.com``) is a local-policy parent
  domain: it matches any name strictly below ``example.com``, as Postfix's
  ``match=.example.com`` does. Callers build this form only on purpose.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING

import idna

if TYPE_CHECKING:  # cryptography loads when a certificate is read, not with this module
    from cryptography import x509

__all__ = ["cert_matches", "is_address_literal", "match_reference", "normalize_name",
           "presented_names"]

MAX_NAME = 253
MAX_PRESENTED = 256  # presented identifiers examined per certificate


def normalize_name(name: str) -> str | None:
    """Lower-case A-label form without the trailing dot, or None when not a name."""
    if not isinstance(name, str):
        return None
    parent = name.startswith(".")
    body = name[1:] if parent else name
    body = body.rstrip(".") if body.endswith(".") and not body.endswith("..") else body
    if not body or len(body) > MAX_NAME:
        return None
    if body.isascii():
        out = body.lower()
    else:
        try:
            out = idna.encode(body, uts46=True).decode("ascii").lower()
        except (idna.IDNAError, UnicodeError, ValueError):
            return None
    labels = out.split(".")
    if any(not label or len(label) > 63 for label in labels):
        return None
    return "." + out if parent else out


def is_address_literal(name: str) -> bool:
    """Is ``name`` an IP address, bare or as an RFC 5321 §4.1.3 address literal?"""
    if not isinstance(name, str) or len(name) > MAX_NAME:
        return False
    text = name.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if text[:5].lower() == "ipv6:":
            text = text[5:]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def presented_names(cert: x509.Certificate) -> tuple[tuple[str, ...], str]:
    """``(names, source)``: SAN dNSNames (``"san"``), else the last CN (``"cn"``)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    dns_names: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns_names = [n for n in san.get_values_for_type(x509.DNSName)][:MAX_PRESENTED]
        except x509.ExtensionNotFound:
            pass
        except Exception:  # malformed extensions: no usable names
            return (), "none"
        if dns_names:
            # RFC 7672 §3.2.3: with at least one DNS-ID, only DNS-IDs are matched.
            return tuple(dns_names), "san"
        try:
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        except Exception:
            return (), "none"
    if not cns:
        return (), "none"
    value = cns[-1].value
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return (), "none"
    # RFC 7672 §3.2.3: the CN-ID is used only when no DNS-IDs are present.
    return (value,), "cn"


def _presented_form(name: str) -> str | None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME + 2:
        return None
    name = name.rstrip(".") if name.endswith(".") else name
    if not name.isascii():
        return None  # presented DNS-IDs are A-labels (RFC 6125 §6.4.2)
    return name.lower()


def match_reference(presented: str, reference: str) -> bool:
    """Does one presented identifier match one (normalized) reference identifier?"""
    pres = _presented_form(presented)
    ref = reference
    if pres is None or not ref or "*" in ref:
        return False
    if ref.startswith("."):
        # Local policy: parent-domain reference, any name strictly below it.
        parent = ref[1:]
        if pres.startswith("*."):
            rest = pres[2:]
            return _wildcard_ok(pres) and (rest == parent or rest.endswith(ref))
        return "*" not in pres and pres.endswith(ref) and len(pres) > len(ref)
    if "*" not in pres:
        return pres == ref
    if not _wildcard_ok(pres):
        return False
    # RFC 7672 §3.2.3: the wildcard matches exactly the first label of the reference.
    first, _, rest = ref.partition(".")
    return bool(first) and rest == pres[2:]


def _wildcard_ok(pres: str) -> bool:
    # RFC 6125 §6.4.3 / RFC 7672 §3.2.3: "*" is the whole left-most label, once, and
    # at least two labels follow it.
    if not pres.startswith("*.") or "*" in pres[2:]:
        return False
    return pres[2:].count(".") >= 1


def cert_matches(cert: x509.Certificate, references: Iterable[str]) -> tuple[bool, str]:
    """``(ok, detail)``: does ``cert`` match any reference identifier?"""
    refs = [r for r in (normalize_name(n) for n in references) if r is not None]
    names, source = presented_names(cert)
    if not names:
        return False, "certificate presents no DNS name (no SAN dNSName, no CN)"
    for ref in refs:
        for name in names:
            if match_reference(name, ref):
                return True, f"{source} {name!r} matches {ref!r}"
    shown = ", ".join(repr(n) for n in names[:5])
    wanted = ", ".join(repr(r) for r in refs[:5]) or "(none)"
    return False, f"certificate names {shown} ({source}) match none of {wanted}"
