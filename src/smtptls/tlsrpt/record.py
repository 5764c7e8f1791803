"""The TLSRPT policy record, a TXT record at ``_smtp._tls.<policy-domain>`` (RFC 8460 §3).

ABNF (RFC 8460 §3)::

    tlsrpt-record     = tlsrpt-version 1*(field-delim tlsrpt-field) [field-delim]
    field-delim       = *WSP ";" *WSP
    tlsrpt-field      = tlsrpt-rua /        ; Note that the tlsrpt-rua
                        tlsrpt-extension    ; field is required.
    tlsrpt-version    = %s"v=TLSRPTv1"
    tlsrpt-rua        = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
    tlsrpt-uri        = URI                 ; RFC 3986; "," and "!" MUST be encoded
    tlsrpt-extension  = tlsrpt-ext-name "=" tlsrpt-ext-value
    tlsrpt-ext-name   = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    tlsrpt-ext-value  = 1*(%x21-3A / %x3C / %x3E-7E)   ; no "=", ";", SP, controls

Choices where the RFC is silent or sources disagree (see docs/conformance.md, G1):

- **Which records count.** §3 discards records "that do not begin with v=TLSRPTv1;",
  but its own ABNF allows white space before the ``;``. A record counts when it starts
  with ``v=TLSRPTv1`` followed by ``;``, white space or its end; ``v=TLSRPTv10`` does not.
- **URI schemes.** §3 defines two schemes, ``mailto`` and ``https``; the ABNF accepts
  any RFC 3986 URI. A syntactically valid URI of another scheme keeps the record valid
  (a future scheme must not void the record); :attr:`TlsrptRecord.report_uris` lists the
  usable ones and :attr:`TlsrptRecord.unsupported_rua` the others. A record whose
  ``rua`` has no usable URI is still parsed; a sender has nowhere to send.
- **Duplicate ``rua``.** Accepted and every URI kept in order (the consensus of mox and
  checkdmarc >= 6); the duplicate is noted in ``warnings`` so an auditor can warn.
- **Trailing white space** after the last field is tolerated; an empty field
  (``rua=x;;``) is not: the ABNF allows one trailing delimiter, no more.
- **Extensions** are kept in order; §3 says unknown fields are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from smtptls.errors import MultipleTlsrptRecordsError, TlsrptRecordError

__all__ = [
    "MAX_RECORD_LENGTH",
    "RECORD_PREFIX",
    "TlsrptRecord",
    "check_uri",
    "is_tlsrpt_record",
    "parse_record",
    "parse_txt_records",
    "record_name",
]

VERSION = "TLSRPTv1"
_VERSION_FIELD = "v=" + VERSION
#: RFC 8460 §3: the record lives at ``_smtp._tls.<policy-domain>``.
RECORD_PREFIX = "_smtp._tls."

#: A record longer than this is refused outright (bounded work on attacker data).
MAX_RECORD_LENGTH = 4096
#: At most this many fields in one record.
MAX_FIELDS = 64
#: At most this many URIs in all ``rua`` fields together.
MAX_URIS = 32
#: At most this many TXT records are looked at in one answer.
MAX_RECORDS = 256
#: At most this many TXT strings make up one record.
MAX_STRINGS = 256

_WSP = " \t"
# RFC 8460 §3: the record is US-ASCII; printable characters and WSP only.
_RECORD_CHARS_RE = re.compile(r"[\x20-\x7e\t]*")
# RFC 8460 §3: tlsrpt-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
_EXT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
# RFC 8460 §3: tlsrpt-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
_EXT_VALUE_RE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
# RFC 3986 §3.1: scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
# RFC 3986 §2: unreserved / reserved / "%". RFC 8460 §3 removes "," and "!" (they MUST
# be percent-encoded in a tlsrpt-uri), and ";" ends the field anyway.
_URI_REST_RE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@$&'()*+=%]+")
# RFC 3986 §2.1: pct-encoded = "%" HEXDIG HEXDIG
_BAD_PCT_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST_RE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.?"
)

#: The URI schemes RFC 8460 §3 defines for ``rua``.
SUPPORTED_SCHEMES = ("mailto", "https")


def record_name(domain: str) -> str:
    """The owner name of *domain*'s TLSRPT record (RFC 8460 §3): ``_smtp._tls.<domain>``."""
    if not isinstance(domain, str) or not domain.strip(" .") or len(domain) > 253:
        raise TlsrptRecordError(f"invalid policy domain {str(domain)[:80]!r}")
    return RECORD_PREFIX + domain.strip().rstrip(".")


def _scheme_of(uri: str) -> str:
    return uri.partition(":")[0].lower()


def check_uri(uri: str, *, record: str | None = None) -> str:
    """Check one ``rua`` URI (RFC 8460 §3, RFC 3986); return its lower-cased scheme.

    Raises :class:`TlsrptRecordError` naming what is wrong. ``mailto:`` needs an address
    with ``@`` (RFC 6068), ``https:`` an authority with a host (RFC 9110 §4.2.2).
    """
    if not isinstance(uri, str) or not uri:
        raise TlsrptRecordError("empty URI in rua", record=record)
    shown = uri[:100]
    scheme, colon, rest = uri.partition(":")
    if not colon or not _SCHEME_RE.fullmatch(scheme):
        # RFC 3986 §3: URI = scheme ":" hier-part [ "?" query ] [ "#" fragment ]
        raise TlsrptRecordError(f"rua URI {shown!r} has no scheme", record=record)
    if not rest:
        raise TlsrptRecordError(f"rua URI {shown!r} is empty after its scheme", record=record)
    if not _URI_REST_RE.fullmatch(rest):
        # RFC 8460 §3: commas and exclamation points MUST be encoded; RFC 3986 §2
        raise TlsrptRecordError(
            f"rua URI {shown!r} has a character not allowed in a URI "
            "(',' and '!' must be percent-encoded)",
            record=record,
        )
    if _BAD_PCT_RE.search(rest):
        # RFC 3986 §2.1: "%" is followed by two hex digits
        raise TlsrptRecordError(f"rua URI {shown!r} has a bad percent-encoding", record=record)
    lower = scheme.lower()
    if lower == "mailto":
        # RFC 6068 §2: mailto:addr-spec; the local part and domain are both needed
        address = rest.partition("?")[0]
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            raise TlsrptRecordError(f"rua URI {shown!r} has no mail address", record=record)
    elif lower == "https":
        # RFC 8460 §3: reports are POSTed to the URI; it needs a host to connect to
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as exc:
            raise TlsrptRecordError(
                f"rua URI {shown!r} has a bad authority", record=record
            ) from exc
        host = parts.hostname or ""
        if not rest.startswith("//") or not host:
            raise TlsrptRecordError(f"rua URI {shown!r} has no host", record=record)
        if not host.startswith("[") and ":" not in host and not _HOST_RE.fullmatch(host):
            raise TlsrptRecordError(f"rua URI {shown!r} has a bad host name", record=record)
        if port == 0:
            raise TlsrptRecordError(f"rua URI {shown!r} has port 0", record=record)
    return lower


def _check_extension(name: str, value: str, record: str | None) -> None:
    if not _EXT_NAME_RE.fullmatch(name):
        # RFC 8460 §3: tlsrpt-ext-name
        raise TlsrptRecordError(
            f"invalid extension name {name[:40]!r}: a letter or digit, then up to 31 of "
            "letters, digits, '_', '-', '.'",
            record=record,
        )
    if not _EXT_VALUE_RE.fullmatch(value):
        # RFC 8460 §3: tlsrpt-ext-value, printable without '=', ';' and space
        raise TlsrptRecordError(
            f"invalid value {value[:40]!r} for extension {name!r}: one or more printable "
            "characters other than '=', ';' and space",
            record=record,
        )


@dataclass(frozen=True, slots=True)
class TlsrptRecord:
    """A parsed ``v=TLSRPTv1`` TXT record.

    ``rua`` holds every URI of every ``rua`` field, in record order, as written.
    ``extensions`` holds the ``(name, value)`` pairs of unknown fields in record order;
    RFC 8460 §3 says they are ignored, they are kept for reporting. ``warnings`` notes
    what an auditor may want to flag (a duplicated ``rua``, a URI of an undefined
    scheme); it does not take part in equality.
    """

    rua: tuple[str, ...]
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        rua = tuple(self.rua) if isinstance(self.rua, list | tuple) else None
        if not rua:
            # RFC 8460 §3: the tlsrpt-rua field is required
            raise TlsrptRecordError("a TLSRPT record needs at least one rua URI")
        if len(rua) > MAX_URIS:
            raise TlsrptRecordError(f"more than {MAX_URIS} rua URIs")
        for uri in rua:
            check_uri(uri)
        ext = tuple(self.extensions) if isinstance(self.extensions, list | tuple) else None
        if ext is None:
            raise TlsrptRecordError("extensions must be (name, value) pairs")
        for pair in ext:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)
            ):
                raise TlsrptRecordError("extensions must be (name, value) pairs")
            if pair[0] == "rua":
                raise TlsrptRecordError("rua is not an extension")
            _check_extension(pair[0], pair[1], None)
        object.__setattr__(self, "rua", rua)
        object.__setattr__(self, "extensions", ext)
        object.__setattr__(self, "warnings", tuple(self.warnings))

    # -- parsing and serialising --------------------------------------------------------

    @classmethod
    def parse(cls, txt: str) -> TlsrptRecord:
        """Parse one record's text; see :func:`parse_record`."""
        return parse_record(txt)

    from_text = parse

    def to_text(self) -> str:
        """The record in canonical form: ``v=TLSRPTv1; rua=a,b; name=value``."""
        parts = [_VERSION_FIELD, "rua=" + ",".join(self.rua)]
        parts.extend(f"{name}={value}" for name, value in self.extensions)
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.to_text()

    # -- what a sender uses ---------------------------------------------------------------

    @property
    def report_uris(self) -> tuple[str, ...]:
        """The ``rua`` URIs of the schemes RFC 8460 §3 defines (``mailto``, ``https``)."""
        return tuple(u for u in self.rua if _scheme_of(u) in SUPPORTED_SCHEMES)

    @property
    def mailto(self) -> tuple[str, ...]:
        """The ``mailto:`` URIs (RFC 8460 §5.3 delivery by mail)."""
        return tuple(u for u in self.rua if _scheme_of(u) == "mailto")

    @property
    def https(self) -> tuple[str, ...]:
        """The ``https:`` URIs (RFC 8460 §5.4 delivery by HTTPS POST)."""
        return tuple(u for u in self.rua if _scheme_of(u) == "https")

    @property
    def unsupported_rua(self) -> tuple[str, ...]:
        """Syntactically valid URIs of a scheme RFC 8460 does not define; unusable."""
        return tuple(u for u in self.rua if _scheme_of(u) not in SUPPORTED_SCHEMES)


def is_tlsrpt_record(txt: str) -> bool:
    """Whether *txt* counts as a TLSRPT record for RFC 8460 §3's "exactly one" rule.

    True when it starts with ``v=TLSRPTv1`` followed by ``;``, white space or its end
    (the ABNF's field-delim allows white space before ``;``).
    """
    if not isinstance(txt, str) or not txt.startswith(_VERSION_FIELD):
        return False
    rest = txt[len(_VERSION_FIELD) :]
    return not rest or rest[0] in ";" + _WSP


def parse_record(txt: str) -> TlsrptRecord:
    """Parse the text of one ``v=TLSRPTv1`` TXT record (RFC 8460 §3).

    Raises :class:`TlsrptRecordError` (with ``record``) if it does not follow the ABNF.
    The strings of a multi-string TXT record must already be joined without spaces
    (§3); :func:`parse_txt_records` does that.
    """
    if not isinstance(txt, str):
        raise TlsrptRecordError(f"a TLSRPT record is text, not {type(txt).__name__}")
    shown = txt[:200]
    if len(txt) > MAX_RECORD_LENGTH:
        raise TlsrptRecordError(
            f"record longer than {MAX_RECORD_LENGTH} characters", record=shown
        )
    if not _RECORD_CHARS_RE.fullmatch(txt):
        # RFC 8460 §3: the ABNF admits printable US-ASCII and WSP only
        raise TlsrptRecordError("record has a control or non-ASCII character", record=shown)
    if not is_tlsrpt_record(txt):
        # RFC 8460 §3: tlsrpt-version = %s"v=TLSRPTv1", first, case-sensitive
        raise TlsrptRecordError("record does not start with v=TLSRPTv1", record=shown)
    parts = txt.split(";")
    if len(parts) > MAX_FIELDS + 2:
        raise TlsrptRecordError(f"more than {MAX_FIELDS} fields", record=shown)
    if parts[0].rstrip(_WSP) != _VERSION_FIELD:
        raise TlsrptRecordError(
            f"unexpected text after v=TLSRPTv1: {parts[0][:60]!r}", record=shown
        )
    fields = parts[1:]
    # RFC 8460 §3: [field-delim] - one optional delimiter (and white space) at the end
    if fields and not fields[-1].strip(_WSP):
        fields.pop()
    if not fields:
        # RFC 8460 §3: 1*(field-delim tlsrpt-field), and tlsrpt-rua is required
        raise TlsrptRecordError("record has no rua field", record=shown)

    rua: list[str] = []
    rua_fields = 0
    extensions: list[tuple[str, str]] = []
    warnings: list[str] = []
    for raw in fields:
        item = raw.strip(_WSP)
        if not item:
            # RFC 8460 §3: field-delim separates fields; no empty field in between
            raise TlsrptRecordError("empty field (an extra ';')", record=shown)
        name, eq, value = item.partition("=")
        if not eq:
            raise TlsrptRecordError(f"field {item[:40]!r} is not name=value", record=shown)
        if name == "rua":
            # RFC 8460 §3: tlsrpt-rua = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
            rua_fields += 1
            for uri in value.split(","):
                uri = uri.strip(_WSP)
                if not uri:
                    raise TlsrptRecordError("empty URI in rua", record=shown)
                if any(c in _WSP for c in uri):
                    # RFC 8460 §3: only *WSP "," *WSP between URIs; a URI has no spaces
                    raise TlsrptRecordError(
                        f"unexpected text after white space in rua: {uri[:60]!r}", record=shown
                    )
                scheme = check_uri(uri, record=shown)
                if scheme not in SUPPORTED_SCHEMES:
                    warnings.append(
                        f"rua URI {uri[:60]!r}: scheme {scheme!r} is not defined by RFC 8460 "
                        "§3 (mailto, https); it cannot be used"
                    )
                rua.append(uri)
                if len(rua) > MAX_URIS:
                    raise TlsrptRecordError(f"more than {MAX_URIS} rua URIs", record=shown)
        else:
            # RFC 8460 §3: unknown fields are ignored (kept here, in order)
            _check_extension(name, value, shown)
            extensions.append((name, value))
    if not rua:
        raise TlsrptRecordError("record has no rua field", record=shown)
    if rua_fields > 1:
        warnings.append(
            f"rua given {rua_fields} times; all URIs are kept (the ABNF names one rua field)"
        )
    if not any(_scheme_of(u) in SUPPORTED_SCHEMES for u in rua):
        warnings.append("no rua URI uses mailto or https: reports cannot be delivered")
    return TlsrptRecord(rua=tuple(rua), extensions=tuple(extensions), warnings=tuple(warnings))


def _join(record: str | bytes | Sequence[str | bytes]) -> str:
    """One TXT record as text: its strings concatenated without spaces (RFC 8460 §3)."""
    if isinstance(record, str):
        return record
    chunks: Sequence[str | bytes]
    chunks = [record] if isinstance(record, bytes | bytearray) else record
    if not isinstance(chunks, Sequence) or len(chunks) > MAX_STRINGS:
        raise TlsrptRecordError("a TXT record is a string or a short sequence of strings")
    out: list[str] = []
    total = 0
    for chunk in chunks:
        if isinstance(chunk, bytes | bytearray):
            try:
                chunk = bytes(chunk).decode("ascii")
            except UnicodeDecodeError:
                chunk = bytes(chunk).decode("latin-1")  # rejected later as non-ASCII
        if not isinstance(chunk, str):
            raise TlsrptRecordError("a TXT record string must be str or bytes")
        total += len(chunk)
        if total > MAX_RECORD_LENGTH * 4:
            raise TlsrptRecordError(f"TXT record longer than {MAX_RECORD_LENGTH * 4} characters")
        out.append(chunk)
    return "".join(out)


def parse_txt_records(
    records: Iterable[str | bytes | Sequence[str | bytes]],
) -> TlsrptRecord | None:
    """Pick and parse the TLSRPT record from all TXT records at ``_smtp._tls.<domain>``.

    RFC 8460 §3: records that do not begin with ``v=TLSRPTv1`` are discarded; if the
    number left is not one, the domain does not implement TLSRPT. Returns None when no
    record is left; raises :class:`MultipleTlsrptRecordsError` when more than one is, and
    :class:`TlsrptRecordError` when the one left is invalid. For a sender all three mean
    "no TLSRPT"; the errors say why for an auditor.

    Each item is one record: a string, or the sequence of its TXT strings (joined
    without spaces, §3).
    """
    if isinstance(records, str | bytes):
        raise TlsrptRecordError("expected a list of TXT records, not one string")
    candidates: list[str] = []
    try:
        iterator = iter(records)
    except TypeError as exc:
        raise TlsrptRecordError("expected a list of TXT records") from exc
    for count, record in enumerate(iterator, start=1):
        if count > MAX_RECORDS:
            raise TlsrptRecordError(f"more than {MAX_RECORDS} TXT records")
        text = _join(record)
        # RFC 8460 §3: records not beginning with v=TLSRPTv1 are discarded
        if is_tlsrpt_record(text):
            candidates.append(text)
    if not candidates:
        return None
    if len(candidates) > 1:
        # RFC 8460 §3: if the number of resulting records is not one, no TLSRPT
        raise MultipleTlsrptRecordsError(
            f"{len(candidates)} TXT records start with v=TLSRPTv1; RFC 8460 §3 requires "
            "exactly one",
            record=" | ".join(c[:100] for c in candidates[:4]),
        )
    return parse_record(candidates[0])
