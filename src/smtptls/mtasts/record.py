"""The ``_mta-sts`` TXT record (RFC 8461 §3.1).

ABNF (RFC 8461 §3.1)::

    sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim]
    sts-field       = sts-id / sts-extension
    sts-field-delim = *WSP ";" *WSP
    sts-version     = %s"v=STSv1"
    sts-id          = %s"id=" 1*32(ALPHA / DIGIT)
    sts-extension   = sts-ext-name "=" sts-ext-value
    sts-ext-name    = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    sts-ext-value   = 1*(%x21-3A / %x3C / %x3E-7E)   ; no "=", ";", SP, controls

Choices where the RFC is silent or sources disagree (see docs/conformance.md):

- a duplicated ``id`` is accepted and the first one wins (the §3.2 rule "only the first
  instance is used" applied to the record too); the duplicate is noted in ``warnings``;
- white space after the last field is tolerated; an empty field (``id=x;;``) is not:
  the ABNF allows one trailing delimiter, no more;
- extension fields are kept in order but carry no meaning (§3.1: ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from smtptls.errors import MultipleRecordsError, StsRecordError

VERSION = "STSv1"
_VERSION_FIELD = "v=" + VERSION

#: A record longer than this is refused outright (bounded work on attacker data).
MAX_RECORD_LENGTH = 4096
#: At most this many fields in one record.
MAX_FIELDS = 64
#: At most this many TXT records are looked at in one answer.
MAX_RECORDS = 256

_WSP = " \t"
# RFC 8461 §3.1: sts-id = "id=" 1*32(ALPHA / DIGIT)
_ID_RE = re.compile(r"[A-Za-z0-9]{1,32}")
# RFC 8461 §3.1: sts-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
_EXT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
# RFC 8461 §3.1: sts-ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
_EXT_VALUE_RE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")


def _check_id(value: str, record: str | None) -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        # RFC 8461 §3.1: id is 1 to 32 alphanumeric characters
        raise StsRecordError(f"invalid id {value!r}: must be 1-32 letters or digits", record=record)
    return value


def _check_extension(name: str, value: str, record: str | None) -> None:
    if not isinstance(name, str) or not _EXT_NAME_RE.fullmatch(name):
        # RFC 8461 §3.1: sts-ext-name
        raise StsRecordError(
            f"invalid extension name {name!r}: a letter or digit, then up to 31 of "
            "letters, digits, '_', '-', '.'",
            record=record,
        )
    if not isinstance(value, str) or not _EXT_VALUE_RE.fullmatch(value):
        # RFC 8461 §3.1: sts-ext-value, printable without '=', ';' and space
        raise StsRecordError(
            f"invalid value {value!r} for extension {name!r}: one or more printable "
            "characters other than '=', ';' and space",
            record=record,
        )


@dataclass(frozen=True, slots=True)
class StsRecord:
    """A parsed ``v=STSv1`` TXT record.

    ``extensions`` holds the ``(name, value)`` pairs of unknown fields in record order;
    RFC 8461 §3.1 says they are ignored, they are kept for reporting. ``warnings``
    lists tolerated oddities (a duplicated ``id``) and is not part of equality.
    """

    id: str
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        _check_id(self.id, None)
        try:
            exts = tuple(tuple(pair) for pair in self.extensions)
        except TypeError:
            raise StsRecordError("extensions must be (name, value) pairs") from None
        for pair in exts:
            if len(pair) != 2:
                raise StsRecordError(f"extension {pair!r} is not a (name, value) pair")
            _check_extension(pair[0], pair[1], None)
        object.__setattr__(self, "extensions", exts)
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @property
    def version(self) -> str:
        return VERSION

    @classmethod
    def parse(cls, text: str) -> StsRecord:
        """Parse one TXT record (its strings already concatenated without spaces).

        Raises :class:`~smtptls.errors.StsRecordError` when the text is not a valid
        ``v=STSv1`` record, including when it is some other kind of record.
        """
        if not isinstance(text, str):
            raise StsRecordError("TXT record must be text")
        if len(text) > MAX_RECORD_LENGTH:
            raise StsRecordError(
                f"record longer than {MAX_RECORD_LENGTH} characters", record=text[:80]
            )
        # RFC 8461 §3.1: sts-version = %s"v=STSv1" comes first (case-sensitive)
        if not text.startswith(_VERSION_FIELD):
            raise StsRecordError("record does not start with v=STSv1", record=text)
        parts = text[len(_VERSION_FIELD) :].split(";", MAX_FIELDS + 1)
        if parts[0].strip(_WSP):
            raise StsRecordError(
                f"bad version: unexpected {parts[0].strip(_WSP)!r} after v=STSv1", record=text
            )
        fields = parts[1:]
        if len(fields) > MAX_FIELDS:
            raise StsRecordError(f"more than {MAX_FIELDS} fields", record=text)
        # RFC 8461 §3.1: [sts-field-delim] - one trailing ";" is allowed (trailing WSP
        # after the last field is tolerated)
        if fields and not fields[-1].strip(_WSP):
            fields = fields[:-1]
        record_id: str | None = None
        extensions: list[tuple[str, str]] = []
        warnings: list[str] = []
        for raw in fields:
            item = raw.strip(_WSP)
            if not item:
                # RFC 8461 §3.1: sts-field-delim separates non-empty fields ("id=x;;")
                raise StsRecordError("empty field (extra ';')", record=text)
            name, eq, value = item.partition("=")
            if not eq:
                raise StsRecordError(f"field {item!r} is not name=value", record=text)
            if name == "id":
                if record_id is None:
                    record_id = _check_id(value, text)
                else:
                    # RFC 8461 §3.2 (applied to §3.1): only the first instance is used
                    _check_extension(name, value, text)
                    warnings.append(f"duplicate id {value!r} ignored; the first one is used")
            else:
                _check_extension(name, value, text)
                extensions.append((name, value))
        if record_id is None:
            # RFC 8461 §3.1: sts-id is required
            raise StsRecordError("missing id field", record=text)
        return cls(record_id, tuple(extensions), tuple(warnings))

    from_text = parse

    def to_text(self) -> str:
        """Canonical form: ``v=STSv1; id=...; name=value;``."""
        fields = [_VERSION_FIELD, f"id={self.id}"]
        fields.extend(f"{name}={value}" for name, value in self.extensions)
        return "; ".join(fields) + ";"

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "id": self.id,
            "extensions": [list(pair) for pair in self.extensions],
        }


def is_sts_candidate(text: str) -> bool:
    """True if this TXT record claims to be an MTA-STS record.

    RFC 8461 §3.1: records that do not begin with ``v=STSv1;`` are discarded. White
    space before the ``;`` (allowed by sts-field-delim) and a bare ``v=STSv1`` still
    count as candidates, so they are reported as invalid rather than silently dropped;
    ``v=STSv10`` and ``v=STSv12;...`` are other versions and are discarded.
    """
    if not isinstance(text, str) or not text.startswith(_VERSION_FIELD):
        return False
    rest = text[len(_VERSION_FIELD) :]
    return not rest or rest[0] in ";" + _WSP


def parse_txt_records(records: Iterable[str]) -> StsRecord | None:
    """Choose and parse the MTA-STS record among a TXT answer (RFC 8461 §3.1).

    ``records`` are the TXT records at ``_mta-sts.<domain>``, each the concatenation
    of its character-strings without added spaces (§3.1).

    - records not beginning with ``v=STSv1`` are discarded;
    - none left: returns ``None`` (the domain publishes no MTA-STS record);
    - more than one left: :class:`~smtptls.errors.MultipleRecordsError`;
    - the one left is invalid: :class:`~smtptls.errors.StsRecordError`.

    Both errors mean "no available policy" (§3.1). Neither removes a cached policy by
    itself: a sender keeps applying an unexpired cached policy (§3.1, §3.3; see
    :func:`smtptls.mtasts.cache_logic.decide_refresh`).
    """
    if isinstance(records, str | bytes):
        raise StsRecordError("records must be a list of TXT record texts, not one text")
    try:
        answer = iter(records)
    except TypeError:
        raise StsRecordError("records must be a list of TXT record texts") from None
    candidates: list[str] = []
    for count, text in enumerate(answer, start=1):
        if count > MAX_RECORDS:
            raise StsRecordError(f"more than {MAX_RECORDS} TXT records in the answer")
        if not isinstance(text, str):
            raise StsRecordError("TXT record must be text")
        if is_sts_candidate(text):
            candidates.append(text)
    if not candidates:
        return None
    if len(candidates) > 1:
        # RFC 8461 §3.1: if the number of resulting records is not one, no policy
        raise MultipleRecordsError(
            f"{len(candidates)} TXT records start with v=STSv1; exactly one is required",
            record=candidates[0],
        )
    return StsRecord.parse(candidates[0])
