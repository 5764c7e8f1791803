"""TLSA records (RFC 6698 §2), their usability for SMTP (RFC 7672 §3.1) and digest
algorithm agility (RFC 7671 §9, RFC 7672 §5).

Pure: strings, bytes and dnspython-like objects in, frozen values out.

:class:`TLSARecord` keeps the three parameters as integers so that records with
unknown values (a usage of 10, a private matching type 255) can still be parsed,
shown and then judged *unusable*, as RFC 7672 §3.1 and RFC 7671 §9 require, rather
than rejected at parse time. Known values are returned as the enums :class:`Usage`,
:class:`Selector` and :class:`MatchingType`.

Which records are used, in order:

1. :func:`usable_for_smtp` drops records an SMTP client must not use: PKIX-TA(0) and
   PKIX-EE(1) (RFC 7672 §3.1.3), unknown usages, selectors and matching types
   (RFC 6698 §4.1), digests of the wrong length and Full(0) data that is not the DER
   of a certificate or SubjectPublicKeyInfo (RFC 6698 §4.1, RFC 7671 §9:
   "malformed"). No supported matching type is considered too weak (RFC 6698 §4.1
   leaves that to local policy): SHA2-256 and SHA2-512 are both accepted.
2. :func:`select_usable` then applies digest algorithm agility per (usage, selector):
   Full(0) records are always kept (Full is not a digest, RFC 7671 §9), and among the
   digest matching types only the strongest one present is kept (SHA2-512 over
   SHA2-256). So ``{3 1 1 <match>, 3 1 2 <other>}`` does not authenticate a server
   whose key matches only the SHA2-256 record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from smtptls.dane import der
from smtptls.errors import TlsaRecordError

__all__ = [
    "MAX_DATA",
    "MAX_TEXT",
    "MatchingType",
    "Selector",
    "TLSARecord",
    "Usage",
    "parse_records",
    "select_usable",
    "unusable_reason",
    "usable_for_smtp",
]

# RFC 6698 §2.1 / RFC 1035 §3.2.1: RDATA is at most 65535 octets, 3 of them parameters.
MAX_DATA = 65535 - 3
# Presentation form: parameters, hex (two characters an octet) and some whitespace.
MAX_TEXT = 2 * MAX_DATA + 4096
# parse_records(): bounds on a zone-file fragment.
MAX_ZONE_TEXT = 1024 * 1024
MAX_RECORDS = 1000


class Usage(IntEnum):
    """Certificate usage (RFC 6698 §2.1.1, acronyms from RFC 7218 §2.1)."""

    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(IntEnum):
    """Which part of the certificate is matched (RFC 6698 §2.1.2)."""

    CERT = 0
    SPKI = 1


class MatchingType(IntEnum):
    """How the association data is compared (RFC 6698 §2.1.3)."""

    FULL = 0
    SHA256 = 1
    SHA512 = 2


# RFC 7218 §2: mnemonics accepted in the presentation form, case-insensitively.
_USAGE_NAMES = {"pkix-ta": 0, "pkix-ee": 1, "dane-ta": 2, "dane-ee": 3, "privcert": 255}
_SELECTOR_NAMES = {"cert": 0, "spki": 1, "privsel": 255}
_MTYPE_NAMES = {"full": 0, "sha2-256": 1, "sha2-512": 2, "privmatch": 255}
_USAGE_LABEL = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}
_SELECTOR_LABEL = {0: "Cert", 1: "SPKI"}
_MTYPE_LABEL = {0: "Full", 1: "SHA2-256", 2: "SHA2-512"}

# RFC 6698 §2.1.3: the digest lengths of the defined matching types.
DIGEST_LENGTH = {MatchingType.SHA256: 32, MatchingType.SHA512: 64}
# RFC 7671 §9: clients order the digest algorithms they support by strength.
_DIGEST_STRENGTH = {MatchingType.SHA256: 1, MatchingType.SHA512: 2}

_HEX = re.compile(r"[0-9A-Fa-f]*")


def _as_enum(enum: type[IntEnum], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


def _parameter(token: str, names: dict[str, int], field: str, text: str) -> int:
    low = token.lower()
    if low in names:
        return names[low]
    # RFC 6698 §2.2: each parameter is an unsigned decimal integer (one octet, §2.1).
    if not token.isascii() or not token.isdigit() or len(token) > 3:
        raise TlsaRecordError(f"{field} {token!r} is not a number 0-255", record=text[:100])
    value = int(token)
    if value > 255:
        raise TlsaRecordError(f"{field} {value} is larger than 255", record=text[:100])
    return value


@dataclass(frozen=True, slots=True)
class TLSARecord:
    """One TLSA record: ``usage selector mtype data`` (RFC 6698 §2.1).

    The parameters are enum members when known and plain ints otherwise (0-255).
    """

    usage: int
    selector: int
    mtype: int
    data: bytes

    def __post_init__(self) -> None:
        for name in ("usage", "selector", "mtype"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255:
                raise TlsaRecordError(f"{name} must be an integer 0-255, not {value!r}")
        if not isinstance(self.data, bytes | bytearray | memoryview):
            raise TlsaRecordError("certificate association data must be bytes")
        data = bytes(self.data)
        if not data:
            # RFC 6698 §2.1.4 / §2.2: the association data is present (at least one
            # hex octet in the presentation form).
            raise TlsaRecordError("certificate association data is empty")
        if len(data) > MAX_DATA:
            # RFC 6698 §2.1 / RFC 1035 §3.2.1: RDATA is at most 65535 octets.
            raise TlsaRecordError(f"certificate association data over {MAX_DATA} octets")
        object.__setattr__(self, "usage", _as_enum(Usage, self.usage))
        object.__setattr__(self, "selector", _as_enum(Selector, self.selector))
        object.__setattr__(self, "mtype", _as_enum(MatchingType, self.mtype))
        object.__setattr__(self, "data", data)

    # --- parsing -------------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str) -> TLSARecord:
        """Parse the presentation form ``"3 1 1 <hex>"`` (RFC 6698 §2.2).

        Whitespace inside the hex string is allowed, as in zone files (RFC 6698 §2.2),
        and so are RFC 7218 mnemonics (``DANE-EE SPKI SHA2-256 <hex>``). Raises
        :class:`~smtptls.errors.TlsaRecordError`.
        """
        if not isinstance(text, str):
            raise TlsaRecordError("TLSA record text must be a string")
        if len(text) > MAX_TEXT:
            raise TlsaRecordError(f"TLSA record text longer than {MAX_TEXT} characters")
        parts = text.split(None, 3)
        if len(parts) < 4:
            raise TlsaRecordError(
                "expected 'usage selector matching-type data'", record=text[:100])
        usage = _parameter(parts[0], _USAGE_NAMES, "usage", text)
        selector = _parameter(parts[1], _SELECTOR_NAMES, "selector", text)
        mtype = _parameter(parts[2], _MTYPE_NAMES, "matching type", text)
        # RFC 6698 §2.2: the data is hex; whitespace may appear within it.
        hexdata = "".join(parts[3].split())
        if not hexdata.isascii() or not _HEX.fullmatch(hexdata):
            raise TlsaRecordError("certificate association data is not hexadecimal",
                                  record=text[:100])
        if len(hexdata) % 2:
            raise TlsaRecordError("certificate association data has an odd number of hex "
                                  "digits", record=text[:100])
        return cls(usage, selector, mtype, bytes.fromhex(hexdata))

    @classmethod
    def from_wire(cls, rdata: bytes) -> TLSARecord:
        """Parse wire-format RDATA: three octets then the data (RFC 6698 §2.1)."""
        if not isinstance(rdata, bytes | bytearray | memoryview):
            raise TlsaRecordError("TLSA RDATA must be bytes")
        raw = bytes(rdata)
        if len(raw) < 4:
            raise TlsaRecordError("TLSA RDATA shorter than 4 octets")
        if len(raw) > MAX_DATA + 3:
            raise TlsaRecordError("TLSA RDATA longer than 65535 octets")
        return cls(raw[0], raw[1], raw[2], raw[3:])

    @classmethod
    def from_rdata(cls, rdata: Any) -> TLSARecord:
        """From an object with ``usage``, ``selector``, ``mtype`` and ``cert`` (dnspython's
        TLSA rdata) or ``data`` (:class:`smtptls.net.dns.TlsaRdata`)."""
        try:
            data = rdata.cert if hasattr(rdata, "cert") else rdata.data
            return cls(rdata.usage, rdata.selector, rdata.mtype, data)
        except AttributeError as exc:
            raise TlsaRecordError(f"not a TLSA rdata object: {exc}") from None

    # --- output --------------------------------------------------------------------

    def to_text(self) -> str:
        """Presentation form with numeric parameters and lower-case hex."""
        return f"{int(self.usage)} {int(self.selector)} {int(self.mtype)} {self.data.hex()}"

    def to_wire(self) -> bytes:
        return bytes((self.usage, self.selector, self.mtype)) + self.data

    def describe(self) -> str:
        """``DANE-EE(3) SPKI(1) SHA2-256(1)`` (RFC 7218 acronyms)."""
        u = _USAGE_LABEL.get(self.usage, "unknown")
        s = _SELECTOR_LABEL.get(self.selector, "unknown")
        m = _MTYPE_LABEL.get(self.mtype, "unknown")
        return f"{u}({int(self.usage)}) {s}({int(self.selector)}) {m}({int(self.mtype)})"

    def __str__(self) -> str:
        return self.to_text()


def unusable_reason(rec: TLSARecord) -> str | None:
    """Why an SMTP client must not use ``rec``, or None when it is usable."""
    # RFC 7672 §3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP.
    if rec.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
        return f"usage {int(rec.usage)} (PKIX) is unusable for SMTP (RFC 7672 §3.1.3)"
    # RFC 7672 §3.1 / RFC 6698 §4.1: records with unknown parameters are unusable.
    if not isinstance(rec.usage, Usage):
        return f"unknown certificate usage {rec.usage}"
    if not isinstance(rec.selector, Selector):
        return f"unknown selector {rec.selector}"
    if not isinstance(rec.mtype, MatchingType):
        return f"unknown matching type {rec.mtype}"
    # RFC 7671 §9: records with a digest of the wrong length are malformed, discarded.
    want = DIGEST_LENGTH.get(rec.mtype)  # type: ignore[call-overload]
    if want is not None and len(rec.data) != want:
        return f"{_MTYPE_LABEL[rec.mtype]} data is {len(rec.data)} octets, not {want}"
    # RFC 6698 §4.1: malformed association data makes the record unusable; Full(0)
    # data is the DER of a certificate (Cert) or a SubjectPublicKeyInfo (SPKI).
    if rec.mtype == MatchingType.FULL:
        if rec.selector == Selector.CERT and not der.is_certificate(rec.data):
            return "Full(0) data is not a DER certificate"
        if rec.selector == Selector.SPKI and not der.is_spki(rec.data):
            return "Full(0) data is not a DER SubjectPublicKeyInfo"
    return None


def usable_for_smtp(rec: TLSARecord) -> bool:
    """True when an SMTP client may use ``rec`` at all (before digest agility)."""
    return unusable_reason(rec) is None


def select_usable(records: Iterable[TLSARecord]) -> tuple[TLSARecord, ...]:
    """The records an SMTP client actually matches, in their original order.

    RFC 7671 §9 (applied by RFC 7672 §5): first discard unusable and malformed
    records; then, for each (usage, selector), keep Full(0) records and the records of
    the strongest digest algorithm present; weaker digests are ignored.
    """
    usable = [r for r in records if usable_for_smtp(r)]
    strongest: dict[tuple[int, int], int] = {}
    for r in usable:
        strength = _DIGEST_STRENGTH.get(r.mtype, 0)  # type: ignore[call-overload]
        key = (int(r.usage), int(r.selector))
        strongest[key] = max(strongest.get(key, 0), strength)
    kept = []
    for r in usable:
        strength = _DIGEST_STRENGTH.get(r.mtype, 0)  # type: ignore[call-overload]
        # RFC 7671 §9: Full(0) is not a digest and is always processed.
        if r.mtype == MatchingType.FULL or strength == strongest[(int(r.usage), int(r.selector))]:
            kept.append(r)
    return tuple(kept)


def _strip_comment(line: str) -> str:
    # RFC 1035 §5.1: ';' starts a comment (TLSA presentation data holds no quotes).
    return line.split(";", 1)[0]


def parse_records(text: str) -> list[tuple[str | None, TLSARecord]]:
    """Parse TLSA records from a zone-file fragment, one record per line.

    Each line is either bare RDATA (``3 1 1 <hex>``) or a resource record
    ``[owner] [ttl] [class] TLSA <rdata>``; ``;`` comments, blank lines and
    parenthesised multi-line RDATA (RFC 1035 §5.1) are handled. Returns
    ``(owner or None, record)`` pairs; raises :class:`~smtptls.errors.TlsaRecordError`
    naming the line.
    """
    if len(text) > MAX_ZONE_TEXT:
        raise TlsaRecordError(f"TLSA text longer than {MAX_ZONE_TEXT} characters")
    logical: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not pending and not line.strip():
            continue
        if not pending:
            start = number
        pending.append(line)
        joined = " ".join(pending)
        if joined.count("(") > joined.count(")"):
            continue
        logical.append((start, joined.replace("(", " ").replace(")", " ")))
        pending = []
        if len(logical) > MAX_RECORDS:
            raise TlsaRecordError(f"more than {MAX_RECORDS} TLSA records")
    if pending:
        raise TlsaRecordError(f"line {start}: unbalanced parenthesis")
    out: list[tuple[str | None, TLSARecord]] = []
    for number, line in logical:
        tokens = line.split()
        owner: str | None = None
        upper = [t.upper() for t in tokens]
        if "TLSA" in upper:
            index = upper.index("TLSA")
            head = tokens[:index]
            # RFC 1035 §5.1: owner, TTL and class may precede the type, in any order
            # of TTL and class; the owner is the first token when it is neither.
            if head and not head[0].isdigit() and head[0].upper() not in ("IN", "CH", "HS"):
                owner = head[0]
            rdata = " ".join(tokens[index + 1:])
        else:
            rdata = " ".join(tokens)
        try:
            out.append((owner, TLSARecord.from_text(rdata)))
        except TlsaRecordError as exc:
            raise TlsaRecordError(f"line {number}: {exc.message}", record=rdata[:100]) from None
    return out
