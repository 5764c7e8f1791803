"""DANE for SMTP, RFC 7672 (with RFC 7671 and RFC 6698): pure code, no I/O.

- :mod:`.tlsa`: TLSA records (RFC 6698 §2) — :class:`TLSARecord`, :class:`Usage`,
  :class:`Selector`, :class:`MatchingType`, :func:`usable_for_smtp` (RFC 7672 §3.1.3),
  :func:`select_usable` (digest algorithm agility, RFC 7671 §9), :func:`parse_records`;
- :mod:`.verify`: authenticating a server chain (RFC 7672 §3, RFC 7671 §5) —
  :func:`verify_chain`, :class:`DaneVerdict`;
- :mod:`.names`: DANE-TA(2) reference identifier matching (RFC 7672 §3.2);
- :mod:`.decide`: whether and how DANE applies, from DNSSEC statuses (RFC 7672 §2) —
  :func:`decide_destination`, :func:`decide_host`, :class:`Requirement`;
- :mod:`.publish`: records for certificates and key rollover advice (RFC 7671 §8) —
  :func:`tlsa_from_cert`, :func:`rollover_advice`;
- :mod:`.der`: the few DER shapes read without a full parser (SPKI inside a
  certificate, well-formed Full(0) data, RFC 6698 §4.1).

The DNSSEC status type is :class:`smtptls.dnssec.Security`, re-exported here. Parsers
raise :class:`smtptls.errors.TlsaRecordError`, other caller errors
:class:`smtptls.errors.DaneError`; nothing a server sends makes anything raise.
"""

from __future__ import annotations

from smtptls.dane.decide import (
    DestinationDecision,
    DestinationLookup,
    HostLookup,
    MxDecision,
    Requirement,
    TlsaLookup,
    decide_destination,
    decide_host,
    tlsa_candidates,
    tlsa_query_name,
)
from smtptls.dane.tlsa import (
    MatchingType,
    Selector,
    TLSARecord,
    Usage,
    parse_records,
    select_usable,
    unusable_reason,
    usable_for_smtp,
)
from smtptls.dnssec import Security
from smtptls.lazy import lazy_exports

# Certificate handling (cryptography) loads on first use, not with the package: the
# decision code above is what the policy daemon needs before its first answer.
_LAZY = {
    "Advice": "publish",
    "Finding": "publish",
    "load_certificates": "publish",
    "rollover_advice": "publish",
    "tlsa_from_cert": "publish",
    "DaneVerdict": "verify",
    "verify_chain": "verify",
}

__all__ = [
    "Advice",
    "DaneVerdict",
    "DestinationDecision",
    "DestinationLookup",
    "Finding",
    "HostLookup",
    "MatchingType",
    "MxDecision",
    "Requirement",
    "Security",
    "Selector",
    "TLSARecord",
    "TlsaLookup",
    "Usage",
    "decide_destination",
    "decide_host",
    "load_certificates",
    "parse_records",
    "rollover_advice",
    "select_usable",
    "tlsa_candidates",
    "tlsa_from_cert",
    "tlsa_query_name",
    "unusable_reason",
    "usable_for_smtp",
    "verify_chain",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
