"""TLSRPT aggregate reports (RFC 8460 §4): parse, validate and serialise, for receivers.

A report is an I-JSON object (RFC 8460 §4.4, RFC 7493)::

    {"organization-name": ..., "date-range": {"start-datetime": ..., "end-datetime": ...},
     "contact-info": ..., "report-id": ...,
     "policies": [{"policy": {"policy-type": ..., "policy-string": [...],
                              "policy-domain": ..., "mx-host": [...]},
                   "summary": {"total-successful-session-count": ...,
                               "total-failure-session-count": ...},
                   "failure-details": [{"result-type": ..., "sending-mta-ip": ...,
                                        "receiving-mx-hostname": ..., "receiving-mx-helo": ...,
                                        "receiving-ip": ..., "failed-session-count": ...,
                                        "additional-information": ...,
                                        "failure-reason-code": ...}]}]}

:func:`parse_report` takes the bytes as received (JSON, or gzip-compressed JSON as
§5.3/§5.4 send it; detected by magic bytes) or a ``str``, and returns a frozen
:class:`Report`. Every bound is explicit: input size, decompressed size (streamed, so a
gzip bomb costs no more than the cap), JSON nesting depth, number length, list lengths,
string lengths. Only :class:`~smtptls.errors.ReportError` subclasses escape.

Two modes:

- **strict** (``strict=True``) accepts exactly RFC 8460 §4.4: every member the schema
  lists and does not mark "(optional)" is present with its type (``receiving-ip`` is
  optional because the RFC's own §4.5 example omits it; ``mx-host`` is required for
  ``sts`` policies only, §4.4 "in the case where policy-type is sts"; ``policy-string``
  for ``sts`` and ``tlsa``), member names exact, no unknown members, dates in RFC 3339
  with a time zone, counts as JSON integers, I-JSON (UTF-8, no duplicate names). The
  first deviation raises :class:`~smtptls.errors.ReportParseError` whose ``path`` says
  where (``$.policies[0].policy.policy-domain``).
- **tolerant** (the default) accepts what real senders send (see
  ``../shared/corpus/tlsrpt-reports/QUIRKS.md``) and records every deviation strict mode
  would reject as a warning in :attr:`Report.warnings`, so a tolerant parse has
  warnings whenever a strict parse fails. A few things stay fatal in both modes:
  not JSON, not an object, wrong JSON types, a missing or unreadable ``date-range``,
  an empty ``report-id``, a policy without ``policy-type`` or a failure detail without
  ``result-type``, anything over a bound.

Both modes also add *notes* to ``warnings`` for things RFC 8460 allows but an operator
may want to see: a date range that is not one UTC day (§4.1 SHOULD), failure-detail
counts that add up to more than the failure total (allowed: §4.3 result types overlap),
result types outside the IANA registry (§6.6; accepted and kept, never an error), a
``policy-string`` that holds one JSON-encoded array (Microsoft's TLSA reports).

:meth:`Report.to_json` writes the canonical form: RFC 8460 member names in the order
of the §4.4 figure, dates as ``YYYY-MM-DDTHH:MM:SSZ``, ``mx-host`` always an array (the
§4.5 example's string form is erratum 6241), ``additional-information`` (never the
schema's value name ``additional-info-uri``), every array present. For every strictly
valid report ``parse_report(r.to_json(), strict=True) == r``.

Speed. The JSON text is first decoded by orjson and read from that tree (the *quick*
reading); whenever that tree could differ from the standard decoder's (a member name
given twice, a float, an integer beyond 64 bits, nesting past the bound, an escaped
``:``) or the report has an error, the report is read again from the standard
decoder's tree (the *reference* reading), which records duplicate names, bounds number
literals as it reads them and checks the nesting first. Both give the same report, the
same warnings and the same errors (``tests/unit/tlsrpt/test_tlsrpt_quick.py``). The
checks of host names, addresses and dates keep bounded memos of their answers, since
the same values come report after report.
"""

from __future__ import annotations

import enum
import io
import ipaddress
import json
import re
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson

from smtptls.errors import ReportError, ReportParseError, ReportTooLargeError
from smtptls.tlsrpt.record import check_uri

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED",
    "DEFAULT_MAX_SIZE",
    "FailureDetail",
    "PolicyResult",
    "PolicyType",
    "Report",
    "ResultType",
    "decompress_report",
    "format_datetime",
    "parse_report",
]

# --- bounds ----------------------------------------------------------------------------

#: Input cap (compressed or not), the same default as ``[reports] max_body``.
DEFAULT_MAX_SIZE = 5 * 1024 * 1024
#: Decompressed JSON cap, the same default as ``[reports] max_decompressed``.
DEFAULT_MAX_DECOMPRESSED = 50 * 1024 * 1024
#: JSON nesting depth; a report needs 5.
MAX_DEPTH = 32
#: Characters in one JSON number literal.
MAX_NUMBER_CHARS = 32
#: Session counts: non-negative integers exact in an IEEE 754 double (I-JSON, RFC 7493 §2.2).
MAX_COUNT = 2**53 - 1
MAX_POLICIES = 10_000
MAX_FAILURE_DETAILS = 10_000  # per policy
MAX_STRINGS = 1_000  # policy-string and mx-host entries
MAX_TEXT = 16_384  # characters in one string value
MAX_WARNINGS = 200
MAX_GZIP_MEMBERS = 16
MAX_ZIP_MEMBERS = 16

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


# --- closed sets -------------------------------------------------------------------------


class PolicyType(enum.StrEnum):
    """RFC 8460 §4.4 ``policy-type``: "the only three valid choices"."""

    STS = "sts"
    TLSA = "tlsa"
    NO_POLICY_FOUND = "no-policy-found"


class ResultType(enum.StrEnum):
    """RFC 8460 §4.3 result types, as registered by §6.6 (IANA "STARTTLS Validation
    Result Types"). Receivers accept values outside this set and keep them as strings."""

    # §4.3.1 negotiation failures
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
    CERTIFICATE_HOST_MISMATCH = "certificate-host-mismatch"
    CERTIFICATE_NOT_TRUSTED = "certificate-not-trusted"
    CERTIFICATE_EXPIRED = "certificate-expired"
    VALIDATION_FAILURE = "validation-failure"
    # §4.3.2.1 DANE-specific policy failures
    TLSA_INVALID = "tlsa-invalid"
    DNSSEC_INVALID = "dnssec-invalid"
    DANE_REQUIRED = "dane-required"
    # §4.3.2.2 MTA-STS-specific policy failures
    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"


_POLICY_TYPES = {t.value: t for t in PolicyType}
_STS, _TLSA = PolicyType.STS, PolicyType.TLSA  # (a member lookup on an enum class is slow)
_RESULT_TYPES = {t.value: t for t in ResultType}

# RFC 8460 §4.4 member names, in the order of the schema figure.
_REPORT_FIELDS = ("organization-name", "date-range", "contact-info", "report-id", "policies")
_DATE_FIELDS = ("start-datetime", "end-datetime")
_ENTRY_FIELDS = ("policy", "summary", "failure-details")
_POLICY_FIELDS = ("policy-type", "policy-string", "policy-domain", "mx-host")
_SUMMARY_FIELDS = ("total-successful-session-count", "total-failure-session-count")
_DETAIL_FIELDS = (
    "result-type",
    "sending-mta-ip",
    "receiving-mx-hostname",
    "receiving-mx-helo",
    "receiving-ip",
    "failed-session-count",
    "additional-information",
    "failure-reason-code",
)
_NAME_SETS = {
    names: frozenset(names)
    for names in (_REPORT_FIELDS, _DATE_FIELDS, _ENTRY_FIELDS, _POLICY_FIELDS, _SUMMARY_FIELDS,
                  _DETAIL_FIELDS)
}
_REPORT_NAMES = _NAME_SETS[_REPORT_FIELDS]
_DATE_NAMES = _NAME_SETS[_DATE_FIELDS]
_ENTRY_NAMES = _NAME_SETS[_ENTRY_FIELDS]
_POLICY_NAMES = _NAME_SETS[_POLICY_FIELDS]
_SUMMARY_NAMES = _NAME_SETS[_SUMMARY_FIELDS]
_DETAIL_NAMES = _NAME_SETS[_DETAIL_FIELDS]
# Nesting depth of the objects each name set belongs to (the report object is 1).
_DEPTHS = {
    _REPORT_FIELDS: 1, _DATE_FIELDS: 2, _ENTRY_FIELDS: 3, _POLICY_FIELDS: 4,
    _SUMMARY_FIELDS: 4, _DETAIL_FIELDS: 5,
}
# Names seen in the wild for a schema member: the §4.4 figure names the *values*
# mx-host-pattern and additional-info-uri; some senders used those as member names.
_ALIASES = {
    "mx-host-pattern": "mx-host",
    "additional-info-uri": "additional-information",
}

_DOMAIN_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?=.{{1,254}}$)(?:{_DOMAIN_LABEL}\.)*{_DOMAIN_LABEL}\.?")
# RFC 8460 §4.4 mx-host: patterns as in RFC 8461 §4.1, "*." only as the whole left label
_MX_PATTERN_RE = re.compile(rf"(?:\*\.)?(?=.{{1,254}}$)(?:{_DOMAIN_LABEL}\.)*{_DOMAIN_LABEL}\.?")
# RFC 8460 §4.4 contact-info: an addr-spec (RFC 5322 §3.4.1), checked loosely
_ADDR_SPEC_RE = re.compile(r"[^@\s]+@[^@\s]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# a JSON escape that can decode to an unpaired surrogate (RFC 8259 §7)
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_IPV4_RE = re.compile(
    r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
    r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
)
# RFC 4291 §2.2 text forms of an IPv6 address made of hex groups only (no embedded IPv4,
# no zone): every string it matches is an address. Anything else is asked of ipaddress.
_IPV6_GROUPS_RE = re.compile(
    "|".join((
        "(?:H:){7}H",  # eight groups
        "::(?:H:){0,6}H",  # "::" then one to seven groups
        "H::(?:H:){0,5}H",  # one group, "::", one to six
        "(?:H:){1}H::(?:H:){0,4}H",
        "(?:H:){2}H::(?:H:){0,3}H",
        "(?:H:){3}H::(?:H:){0,2}H",
        "(?:H:){4}H::(?:H:){0,1}H",
        "(?:H:){5}H::H",  # six groups, "::", one
        "(?:(?:H:){0,6}H)?::",  # up to seven groups, then "::"
    )).replace("H", "[0-9A-Fa-f]{1,4}")
)
_COUNT_TEXT_RE = re.compile(r"[ \t]*[0-9]{1,16}[ \t]*")
# RFC 3339 §5.6 date-time, plus the variants real senders wrote (checked below)
_DATETIME_RE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:(?P<sep>[Tt ])(?P<h>[0-9]{2}):(?P<mi>[0-9]{2})"
    r"(?::(?P<s>[0-9]{2})(?P<frac>\.[0-9]{1,32})?)?"
    r"[ ]?(?P<tz>[Zz]|UTC|GMT|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)
_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
# a JSON escape that decodes to ':' (RFC 8259 §7), which the member count must not miss
_COLON_ESCAPE_RE = re.compile(r"\\u003[aA]")
_BRACKET_RE = re.compile(r"[\[\]{}]")


# --- the model ---------------------------------------------------------------------------


def format_datetime(value: datetime) -> str:
    """An aware datetime as RFC 3339 UTC: ``2016-04-01T00:00:00Z`` (fraction if any)."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ReportParseError("date-time must be a timezone-aware datetime")
    dt = value.astimezone(UTC)
    text = (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}"
        f"T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    )
    if dt.microsecond:
        text += f".{dt.microsecond:06d}".rstrip("0")
    return text + "Z"


@dataclass(frozen=True, slots=True)
class FailureDetail:
    """One ``failure-details`` entry (RFC 8460 §4.4).

    ``result_type`` is a :class:`ResultType` when registered, else the string sent
    (§4.3: the list grows; receivers keep unknown types).
    """

    result_type: ResultType | str
    failed_session_count: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None

    @property
    def is_registered(self) -> bool:
        """Whether ``result_type`` is one of the registered result types (§6.6)."""
        return isinstance(self.result_type, ResultType)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result-type": str(self.result_type)}
        for name, value in (
            ("sending-mta-ip", self.sending_mta_ip),
            ("receiving-mx-hostname", self.receiving_mx_hostname),
            ("receiving-mx-helo", self.receiving_mx_helo),
            ("receiving-ip", self.receiving_ip),
        ):
            if value is not None:
                out[name] = value
        out["failed-session-count"] = self.failed_session_count
        if self.additional_information is not None:
            out["additional-information"] = self.additional_information
        if self.failure_reason_code is not None:
            out["failure-reason-code"] = self.failure_reason_code
        return out


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """One ``policies`` entry: the policy applied, its summary and failure details."""

    policy_type: PolicyType | str
    policy_domain: str | None
    total_successful_session_count: int
    total_failure_session_count: int
    policy_string: tuple[str, ...] = ()
    mx_host: tuple[str, ...] = ()
    failure_details: tuple[FailureDetail, ...] = ()

    @property
    def policy_lines(self) -> tuple[str, ...]:
        """``policy_string`` with a single JSON-encoded array unpacked (Microsoft TLSA)."""
        unpacked = _json_array_in_string(self.policy_string)
        return self.policy_string if unpacked is None else unpacked

    @property
    def failed_in_details(self) -> int:
        """Sum of ``failed-session-count`` over the failure details (they may overlap)."""
        return sum(d.failed_session_count for d in self.failure_details)

    def to_dict(self) -> dict[str, Any]:
        policy: dict[str, Any] = {
            "policy-type": str(self.policy_type),
            "policy-string": list(self.policy_string),
        }
        if self.policy_domain is not None:
            policy["policy-domain"] = self.policy_domain
        policy["mx-host"] = list(self.mx_host)
        return {
            "policy": policy,
            "summary": {
                "total-successful-session-count": self.total_successful_session_count,
                "total-failure-session-count": self.total_failure_session_count,
            },
            "failure-details": [d.to_dict() for d in self.failure_details],
        }


@dataclass(frozen=True, slots=True)
class Report:
    """A TLSRPT aggregate report (RFC 8460 §4.4).

    Dates are timezone-aware UTC datetimes. ``contact_info`` is None when a sender
    left it out or sent null (tolerant mode only). ``warnings`` lists deviations and
    notes found while parsing; it takes no part in equality.
    """

    organization_name: str
    start_datetime: datetime
    end_datetime: datetime
    contact_info: str | None
    report_id: str
    policies: tuple[PolicyResult, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if (
            type(self.start_datetime) is datetime
            and self.start_datetime.tzinfo is UTC
            and type(self.end_datetime) is datetime
            and self.end_datetime.tzinfo is UTC
            and type(self.policies) is tuple
            and type(self.warnings) is tuple
        ):
            return  # already as kept: what the parser builds
        for name in ("start_datetime", "end_datetime"):
            value = getattr(self, name)
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ReportParseError(f"{name} must be a timezone-aware datetime")
            if value.utcoffset() != timedelta(0):
                object.__setattr__(self, name, value.astimezone(UTC))
        if not isinstance(self.policies, tuple):
            object.__setattr__(self, "policies", tuple(self.policies))
        if not isinstance(self.warnings, tuple):
            object.__setattr__(self, "warnings", tuple(self.warnings))

    # -- parsing and serialising --------------------------------------------------------

    @classmethod
    def parse(
        cls,
        data: bytes | str,
        *,
        strict: bool = False,
        max_size: int = DEFAULT_MAX_SIZE,
        max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
    ) -> Report:
        """Parse JSON or gzip-compressed JSON; see :func:`parse_report`."""
        return parse_report(
            data, strict=strict, max_size=max_size, max_decompressed=max_decompressed
        )

    @classmethod
    def from_dict(cls, data: Any, *, strict: bool = False) -> Report:
        """Build a report from an already decoded JSON object (same rules as parsing)."""
        reader = _Reader(strict)
        return _build_report(reader, data)

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict with RFC 8460 §4.4 names and order."""
        out: dict[str, Any] = {
            "organization-name": self.organization_name,
            "date-range": {
                "start-datetime": format_datetime(self.start_datetime),
                "end-datetime": format_datetime(self.end_datetime),
            },
        }
        if self.contact_info is not None:
            out["contact-info"] = self.contact_info
        out["report-id"] = self.report_id
        out["policies"] = [p.to_dict() for p in self.policies]
        return out

    def to_json(self, *, indent: int | None = None) -> str:
        """Canonical I-JSON text (UTF-8 when encoded; stable member order)."""
        separators = (",", ":") if indent is None else (",", ": ")
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, separators=separators)

    # -- convenience --------------------------------------------------------------------

    @property
    def total_successful(self) -> int:
        """Successful sessions over all policies (§4.4 total-successful-session-count)."""
        return sum(p.total_successful_session_count for p in self.policies)

    @property
    def total_failed(self) -> int:
        """Failed sessions over all policies (§4.4 total-failure-session-count)."""
        return sum(p.total_failure_session_count for p in self.policies)

    @property
    def policy_domains(self) -> tuple[str, ...]:
        """The distinct policy domains in report order (lower case, no trailing dot)."""
        seen: dict[str, None] = {}
        for p in self.policies:
            if p.policy_domain:
                seen.setdefault(p.policy_domain.lower().rstrip("."), None)
        return tuple(seen)

    @property
    def date_range(self) -> tuple[datetime, datetime]:
        return (self.start_datetime, self.end_datetime)


# --- building checked values ------------------------------------------------------------

# The parser builds many small frozen values from members it has already checked; these
# fill their slots directly, in field order, as the dataclass __init__ would (no
# __post_init__ runs for these two classes). tests/unit/tlsrpt compares both ways.
_new = object.__new__
(_fd_type, _fd_count, _fd_sending_ip, _fd_mx_hostname, _fd_helo, _fd_receiving_ip,
 _fd_info, _fd_reason) = (getattr(FailureDetail, f.name).__set__ for f in fields(FailureDetail))
(_pr_type, _pr_domain, _pr_successful, _pr_failed, _pr_string, _pr_mx_host,
 _pr_details) = (getattr(PolicyResult, f.name).__set__ for f in fields(PolicyResult))


def _failure_detail(
    result_type: ResultType | str, count: int, sending_ip: str | None,
    mx_hostname: str | None, helo: str | None, receiving_ip: str | None,
    info: str | None, reason: str | None,
) -> FailureDetail:
    detail = _new(FailureDetail)
    _fd_type(detail, result_type)
    _fd_count(detail, count)
    _fd_sending_ip(detail, sending_ip)
    _fd_mx_hostname(detail, mx_hostname)
    _fd_helo(detail, helo)
    _fd_receiving_ip(detail, receiving_ip)
    _fd_info(detail, info)
    _fd_reason(detail, reason)
    return detail  # type: ignore[no-any-return]


def _policy_result(
    policy_type: PolicyType | str, domain: str | None, successful: int, failed: int,
    policy_string: tuple[str, ...], mx_host: tuple[str, ...],
    details: tuple[FailureDetail, ...],
) -> PolicyResult:
    result = _new(PolicyResult)
    _pr_type(result, policy_type)
    _pr_domain(result, domain)
    _pr_successful(result, successful)
    _pr_failed(result, failed)
    _pr_string(result, policy_string)
    _pr_mx_host(result, mx_host)
    _pr_details(result, details)
    return result  # type: ignore[no-any-return]


# --- decoding: bytes -> text -> JSON ---------------------------------------------------------


class _Obj(dict):  # type: ignore[type-arg]
    """A JSON object that remembers member names it saw more than once."""

    __slots__ = ("duplicates",)


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dups: dict[str, None] = {}  # ordered, O(1) membership: linear in the object size
        for key, _ in pairs:
            if key in seen:
                dups[key] = None
            seen.add(key)
        obj.duplicates = tuple(dups)
    else:
        obj.duplicates = ()
    return obj


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ReportParseError(
            f"number with {len(text)} digits (at most {MAX_NUMBER_CHARS})", path="$"
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ReportParseError(
            f"number of {len(text)} characters (at most {MAX_NUMBER_CHARS})", path="$"
        )
    value = float(text)
    if value in (float("inf"), float("-inf")):
        # I-JSON, RFC 7493 §2.2: numbers beyond IEEE 754 double range are not interoperable
        raise ReportParseError(f"number {text} is out of range", path="$")
    return value


def _parse_constant(text: str) -> Any:
    # RFC 8259 §6: NaN and Infinity are not JSON
    raise ReportParseError(f"{text} is not a JSON value", path="$")


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before the JSON decoder recurses into it."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for bracket in _BRACKET_RE.findall(_STRING_RE.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ReportParseError(f"JSON nested deeper than {MAX_DEPTH} levels", path="$")
        else:
            depth -= 1


def _loads(text: str) -> Any:
    if not text.strip():
        raise ReportParseError("empty input, not a JSON report", path="$")
    _check_depth(text)
    try:
        # the number hooks bound literal length before int()/float() see them
        return json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except ReportParseError:
        raise
    except RecursionError:
        raise ReportParseError("JSON nested too deeply", path="$") from None
    except json.JSONDecodeError as exc:
        raise ReportParseError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path="$"
        ) from None
    except (ValueError, OverflowError) as exc:
        raise ReportParseError(f"not valid JSON: {str(exc)[:100]}", path="$") from None


class _Redo(Exception):  # a control-flow signal inside parse_report, never raised to callers
    """The quickly decoded tree may differ from what :func:`_loads` returns: start over."""


def _loads_quick(text: str) -> Any:
    """The JSON value of *text* decoded by orjson, or None where that may differ from
    :func:`_loads` (which then decides, errors included).

    orjson and the standard decoder accept the same RFC 8259 text and give the same
    dicts, lists, strings, booleans and integers up to 64 bits. What is left to check:

    - duplicate member names, which both decoders fold silently (last one wins) while
      :func:`_loads` reports them (I-JSON, RFC 7493 §2.3). Every ``:`` in JSON text is
      a name separator or a character inside a string; orjson re-encodes strings as
      they were and never writes ``:`` as an escape, so re-encoding the decoded value
      gives as many ``:`` as the input exactly when no member was folded away. The one
      way a decoded ``:`` has no ``:`` in the input is the escape ``\\u003a``: such text
      is left to :func:`_loads`.
    - floats (orjson also turns integers beyond 64 bits into floats) and nesting deeper
      than MAX_DEPTH: :class:`_Reader` in quick mode raises :class:`_Redo` wherever it
      would keep or skip such a value (see ``_Reader.quick``).
    - unpaired surrogates: orjson refuses them, so its strings have none.
    """
    if "\\" in text and _COLON_ESCAPE_RE.search(text):
        return None
    try:
        value = orjson.loads(text)
        # bounded: the input is at most max_decompressed characters
        again = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if again.count(b":") != text.count(":"):
        return None  # a member name given twice
    return value


def _plain_tree(value: Any, depth: int) -> bool:
    """Whether *value* (at nesting *depth*) holds no float and nests at most MAX_DEPTH."""
    if type(value) is float:
        return False
    if type(value) is dict:
        value = list(value.values())
    elif type(value) is not list:
        return True
    if depth > MAX_DEPTH:
        return False
    return all(_plain_tree(v, depth + 1) for v in value)


def _gunzip(data: bytes, cap: int, reader: _Reader) -> bytes:
    """Stream-decompress gzip (RFC 1952) to at most *cap* bytes; members concatenated."""
    out = bytearray()
    rest = data
    for member in range(MAX_GZIP_MEMBERS):
        decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        chunk_in = rest
        try:
            while not decomp.eof:
                # never ask for more than one byte past the cap: a bomb stops here
                chunk = decomp.decompress(chunk_in, cap + 1 - len(out))
                out += chunk
                if len(out) > cap:
                    raise ReportTooLargeError(
                        f"report decompresses to more than {cap} bytes (gzip bomb?)"
                    )
                chunk_in = decomp.unconsumed_tail
                if not chunk and not chunk_in:
                    break
        except zlib.error as exc:
            raise ReportParseError(f"not valid gzip: {exc}", path="$") from None
        if not decomp.eof:
            raise ReportParseError("gzip stream is truncated", path="$")
        rest = decomp.unused_data
        if not rest:
            return bytes(out)
        if rest[:2] != GZIP_MAGIC:
            reader.deviation("$", f"{len(rest)} bytes of trailing data after the gzip stream")
            return bytes(out)
        if member + 1 == MAX_GZIP_MEMBERS:
            break
    raise ReportParseError(f"more than {MAX_GZIP_MEMBERS} gzip members", path="$")


def _unzip(data: bytes, cap: int, reader: _Reader) -> bytes:
    """The one JSON report inside a zip archive (seen as application/tlsrpt+zip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if len(infos) > MAX_ZIP_MEMBERS:
                raise ReportParseError(f"zip archive has more than {MAX_ZIP_MEMBERS} files")
            named = [i for i in infos if i.filename.lower().endswith((".json", ".json.gz"))]
            chosen = named or infos
            if len(chosen) != 1:
                raise ReportParseError(
                    f"zip archive holds {len(chosen)} candidate files; expected one report",
                    path="$",
                )
            with archive.open(chosen[0]) as handle:
                out = handle.read(cap + 1)
    except ReportError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
            EOFError, OSError, ValueError, zlib.error) as exc:
        raise ReportParseError(f"not a valid zip archive: {str(exc)[:100]}", path="$") from None
    if len(out) > cap:
        raise ReportTooLargeError(f"report decompresses to more than {cap} bytes")
    if out[:2] == GZIP_MAGIC:
        out = _gunzip(out, cap, reader)
    return out


def _decode(data: Any, reader: _Reader, max_size: int, max_decompressed: int) -> str:
    if isinstance(data, str):
        if len(data) > max_decompressed:
            raise ReportTooLargeError(f"report text over the {max_decompressed}-character cap")
        if data.startswith("\ufeff"):
            # RFC 8259 §8.1: implementations MUST NOT add a byte order mark
            reader.deviation("$", "byte order mark before the JSON text")
            data = data[1:]
        return data
    raw = _json_bytes(data, reader, max_size, max_decompressed)
    try:
        # I-JSON, RFC 7493 §2.1: MUST be encoded using UTF-8
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportParseError(
            f"not UTF-8 (I-JSON): bad byte at offset {exc.start}", path="$"
        ) from None


def decompress_report(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> bytes:
    """The JSON text of a report as received, exactly as :func:`parse_report` reads it.

    The one bounded decompressor of TLSRPT bodies: gzip (every member of a multi-member
    stream, RFC 1952 §2.2), a zip archive, or plain JSON; a byte order mark is dropped.
    A receiver stores this beside the parsed report. Raises as :func:`parse_report` does
    for the input and decompressed size caps and for broken compression.
    """
    return _json_bytes(data, _Reader(False), max_size, max_decompressed)


def _json_bytes(data: Any, reader: _Reader, max_size: int, max_decompressed: int) -> bytes:
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ReportParseError(f"a report is bytes or str, not {type(data).__name__}", path="$")
    if len(data) > max_size:
        raise ReportTooLargeError(f"report of {len(data)} bytes is over the {max_size}-byte cap")
    if data[:2] == GZIP_MAGIC:
        # RFC 8460 §5.3/§5.4: application/tlsrpt+gzip carries the gzip-compressed JSON
        raw = _gunzip(data, max_decompressed, reader)
    elif data[:4] == ZIP_MAGIC:
        reader.deviation("$", "report is a zip archive; RFC 8460 §5 uses gzip")
        raw = _unzip(data, max_decompressed, reader)
    else:
        if len(data) > max_decompressed:
            raise ReportTooLargeError(f"report over the {max_decompressed}-byte cap")
        raw = data
    if raw.startswith(b"\xef\xbb\xbf"):
        reader.deviation("$", "byte order mark before the JSON text")
        raw = raw[3:]
    return raw


# --- reading the JSON object --------------------------------------------------------------


class _Missing:
    __slots__ = ()


_MISSING: Any = _Missing()


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _excerpt(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list | tuple) else _kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


_PLAIN_KEY_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")


def _member_path(path: str, key: str) -> str:
    if _PLAIN_KEY_RE.fullmatch(key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key[:64])}]"


class _Reader:
    """Walks one decoded report; strict raises at the first deviation, tolerant notes it."""

    __slots__ = ("strict", "warnings", "dropped", "surrogates", "quick")

    def __init__(self, strict: bool, *, surrogates: bool = True) -> None:
        self.strict = bool(strict)
        self.warnings: list[str] = []
        self.dropped = 0
        # False when the input cannot hold an unpaired surrogate (checked once, up front)
        self.surrogates = surrogates
        # True while reading a tree from _loads_quick: a value that decoder may have read
        # differently from _loads (a float, deep nesting) raises _Redo where it would be
        # kept or skipped unseen; errors are rerun on _loads' tree as well
        self.quick = False

    # what to do with a finding

    def fail(self, path: str, message: str) -> Any:
        raise ReportParseError(message, path=path)

    def deviation(self, path: str, message: str) -> None:
        """Not RFC 8460: an error in strict mode, a warning in tolerant mode."""
        if self.strict:
            raise ReportParseError(message, path=path)
        self.note(path, message)

    def note(self, path: str, message: str) -> None:
        """Allowed by RFC 8460 but worth telling: a warning in both modes."""
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{path}: {message}")
        else:
            self.dropped += 1

    def final_warnings(self) -> tuple[str, ...]:
        if self.dropped:
            return (*self.warnings, f"$: {self.dropped} more warnings not shown")
        return tuple(self.warnings)

    # structure

    def members(self, obj: Any, path: str, names: tuple[str, ...]) -> dict[str, Any]:
        """The object's members under their RFC 8460 names (tolerant: case, aliases)."""
        if type(obj) is dict:
            # a plain dict: quickly decoded (duplicates already ruled out) or from_dict
            if obj.keys() <= _NAME_SETS[names]:
                return obj  # the common case: exact names, nothing to report
            duplicates: tuple[str, ...] = ()
        else:
            if not isinstance(obj, dict):
                self.fail(path, f"expected an object, got {_kind(obj)}")
            duplicates = getattr(obj, "duplicates", ())
            if not duplicates and obj.keys() <= _NAME_SETS[names]:
                return obj
        if self.quick and not _plain_tree(obj, _DEPTHS[names]):
            raise _Redo  # members may be skipped below: they must read the same either way
        for key in duplicates:
            # I-JSON, RFC 7493 §2.3: member names MUST be unique
            self.deviation(
                _member_path(path, key), "member appears more than once; the last is used"
            )
        out: dict[str, Any] = {}
        exact: set[str] = set()
        for key, value in obj.items():
            if key in names:
                out[key] = value
                exact.add(key)
                continue
            where = _member_path(path, str(key))
            folded = str(key).strip().lower().replace("_", "-")
            canonical = _ALIASES.get(folded, folded)
            if canonical not in names:
                self.deviation(where, "unknown member ignored")
                continue
            if folded in _ALIASES:
                self.deviation(
                    where,
                    f"member name {key!r} read as {canonical!r} ({key!r} names the value "
                    "in the RFC 8460 §4.4 schema, not the member)",
                )
            else:
                self.deviation(where, f"member name {key!r} read as {canonical!r}")
            if canonical in exact or canonical in out:
                self.deviation(where, f"{canonical!r} given twice; this one is ignored")
                continue
            out[canonical] = value
        return out

    def get(
        self, m: dict[str, Any], name: str, path: str, *, required: bool, default: str = ""
    ) -> Any:
        """A member's value or _MISSING; a missing required member is a deviation.

        *default* says, for the warning, what a missing value is read as.
        """
        value = m.get(name, _MISSING)
        if value is None:
            # RFC 8460 §4.4 gives every member a type; null is none of them
            self.deviation(f"{path}.{name}", f"null; read as {default or 'absent'}")
            return _MISSING
        if value is _MISSING and required:
            read_as = f"; read as {default}" if default else ""
            self.deviation(f"{path}.{name}", f"required member missing{read_as}")
        return value

    def text(self, value: Any, path: str, name: str | None = None) -> str:
        """A string member (*path*.*name*; the path is built only for a finding)."""
        if type(value) is str and len(value) <= MAX_TEXT and not self.surrogates:
            return value
        if name is not None:
            path = f"{path}.{name}"
        if not isinstance(value, str):
            self.fail(path, f"expected a string, got {_excerpt(value)}")
        if len(value) > MAX_TEXT:
            self.fail(path, f"string of {len(value)} characters (at most {MAX_TEXT})")
        if self.surrogates and _SURROGATE_RE.search(value):
            # I-JSON, RFC 7493 §2.1: no unpaired surrogates
            self.deviation(path, "unpaired UTF-16 surrogate; replaced with U+FFFD")
            value = _SURROGATE_RE.sub("\ufffd", value)
        return value

    def strings(self, value: Any, path: str, name: str | None = None) -> tuple[str, ...]:
        """An array of strings (*path*.*name*; the path is built only for a finding)."""
        if type(value) is list and len(value) <= MAX_STRINGS and not self.surrogates:
            for v in value:
                if type(v) is not str or len(v) > MAX_TEXT:
                    break
            else:
                return tuple(value)
        if name is not None:
            path = f"{path}.{name}"
        if isinstance(value, str):
            self.deviation(path, "a string where RFC 8460 §4.4 has an array of strings")
            return (self.text(value, path),)
        if not isinstance(value, list | tuple):
            self.fail(path, f"expected an array of strings, got {_excerpt(value)}")
        if len(value) > MAX_STRINGS:
            self.fail(path, f"more than {MAX_STRINGS} entries")
        return tuple(self.text(v, f"{path}[{i}]") for i, v in enumerate(value))

    def count(self, value: Any, path: str, name: str | None = None) -> int:
        if type(value) is int and 0 <= value <= MAX_COUNT:
            return value
        if self.quick and type(value) is float:
            raise _Redo  # _loads bounds the literal's length first
        if name is not None:
            path = f"{path}.{name}"
        if isinstance(value, bool):
            self.fail(path, "expected a non-negative integer, got a boolean")
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            self.deviation(path, f"count written as {value!r}; RFC 8460 §4.4 counts are integers")
            number = int(value)
        elif isinstance(value, str) and _COUNT_TEXT_RE.fullmatch(value):
            self.deviation(path, f"count given as the string {value!r}; read as a number")
            number = int(value.strip())
        else:
            self.fail(path, f"expected a non-negative integer, got {_excerpt(value)}")
        if not 0 <= number <= MAX_COUNT:
            self.fail(path, f"count {number} out of range (0 to 2^53-1)")
        return number

    def date_time(self, value: Any, path: str, *, end: bool) -> datetime:
        text = self.text(value, path)
        # the same days come report after report: their readings are kept
        memo = _DATE_READINGS[end]
        reading = memo.get(text)
        if reading is None:
            reading = _remember(memo, text, _read_datetime(text, end=end))
        moment, findings = reading
        for kind, message in findings:
            if kind == "fail":
                self.fail(path, message)
            elif kind == "deviation":
                self.deviation(path, message)
            else:
                self.note(path, message)
        return moment  # type: ignore[no-any-return]


# Readings of date-time texts, for the start (False) and the end (True) of a range.
_DATE_READINGS: dict[bool, dict[str, Any]] = {False: {}, True: {}}
_Findings = tuple[tuple[str, str], ...]


def _read_datetime(text: str, *, end: bool) -> tuple[datetime | None, _Findings]:
    """A date-time as UTC, with the findings in order: ``("deviation" | "note" | "fail",
    message)``; after a "fail" there is no datetime."""
    found: list[tuple[str, str]] = []
    stripped = text.strip()
    m = _DATETIME_RE.fullmatch(stripped)
    if m is None:
        return None, (("fail", f"not an RFC 3339 date-time: {_excerpt(text)}"),)
    if stripped != text:
        found.append(("deviation", "white space around the date-time"))
    if m["h"] is None:
        # date only: the whole day; the end of a range means the end of that day
        found.append((
            "deviation",
            "date without a time; read as "
            + ("23:59:59Z, the end of that day" if end else "00:00:00Z"),
        ))
        hour, minute, second = (23, 59, 59) if end else (0, 0, 0)
    else:
        hour, minute = int(m["h"]), int(m["mi"])
        second = int(m["s"]) if m["s"] is not None else 0
        if m["sep"] == " ":
            found.append(("deviation", "space between date and time; RFC 3339 §5.6 uses 'T'"))
        if m["s"] is None:
            found.append(("deviation", "time without seconds; RFC 3339 §5.6 requires them"))
    micro = int((m["frac"][1:] + "000000")[:6]) if m["frac"] else 0
    tz = m["tz"]
    offset = timedelta(0)
    if m["h"] is not None and tz is None:
        # RFC 3339 §5.6: time-offset is required; Microsoft 2023 reports omit it
        found.append(("deviation", "no time zone; read as UTC"))
    elif tz is not None and tz not in ("Z", "z"):
        if tz in ("UTC", "GMT"):
            found.append(("deviation", f"time zone written as {tz!r}; RFC 3339 uses 'Z'"))
        else:
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            if len(digits) != 4 or ":" not in tz:
                found.append(("deviation", f"time offset {tz!r} is not RFC 3339 ±hh:mm"))
            hours, minutes = int(digits[:2]), int(digits[2:] or "0")
            if hours > 23 or minutes > 59:
                found.append(("fail", f"time offset {tz!r} out of range"))
                return None, tuple(found)
            offset = sign * timedelta(hours=hours, minutes=minutes)
            if offset:
                found.append(
                    ("note", f"offset {tz}; converted to UTC (RFC 8460 §4.1 uses UTC days)")
                )
    if second == 60:
        # RFC 3339 §5.6 allows a leap second; Python datetimes do not
        found.append(("note", "leap second :60 read as :59"))
        second = 59
    try:
        local = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]), hour, minute, second, micro,
            tzinfo=timezone(offset),
        )
        return local.astimezone(UTC), tuple(found)
    except (ValueError, OverflowError):
        found.append(("fail", f"not a valid date-time: {_excerpt(text)}"))
        return None, tuple(found)


def _json_array_in_string(lines: tuple[str, ...]) -> tuple[str, ...] | None:
    """Microsoft's TLSA policy-string: ["[\\"3 1 1 ...\\",\\"3 1 1 ...\\"]"] -> the array."""
    if len(lines) != 1 or not lines[0].lstrip().startswith("["):
        return None
    try:
        value = json.loads(lines[0])
    except (ValueError, RecursionError):
        return None
    if isinstance(value, list) and len(value) <= MAX_STRINGS and all(
        isinstance(v, str) for v in value
    ):
        return tuple(value)
    return None


# Answers of the pure checks below, for short strings: host names, addresses and dates
# repeat within a report and from report to report. Bounded: a full memo starts over.
_MEMO_SIZE = 4096
_MEMO_KEY_CHARS = 255
_DOMAIN_OK: dict[str, bool] = {}
_MX_PATTERN_OK: dict[str, bool] = {}
_IP_OK: dict[str, bool] = {}


def _remember(memo: dict[str, Any], key: str, value: Any) -> Any:
    if len(key) <= _MEMO_KEY_CHARS:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = value
    return value


def _domain_ok(value: str) -> bool:
    # RFC 8460 §4.4: domain names as A-labels (an IDN in Punycode)
    ok = _DOMAIN_OK.get(value)
    if ok is None:
        ok = _remember(_DOMAIN_OK, value, _DOMAIN_RE.fullmatch(value) is not None)
    return ok


def _mx_pattern_ok(value: str) -> bool:
    # RFC 8460 §4.4: patterns as in RFC 8461 §4.1, "*." only as the whole left label
    ok = _MX_PATTERN_OK.get(value)
    if ok is None:
        ok = _remember(_MX_PATTERN_OK, value, _MX_PATTERN_RE.fullmatch(value) is not None)
    return ok


def _ip_ok(value: str) -> bool:
    # RFC 8460 §4.4: an IPv4 (dot-decimal) or IPv6 (RFC 5952) address
    ok = _IP_OK.get(value)
    if ok is not None:
        return ok
    if _IPV4_RE.fullmatch(value) or _IPV6_GROUPS_RE.fullmatch(value):
        ok = True
    elif len(value) > 64:
        return False
    else:
        try:
            ipaddress.ip_address(value)
            ok = True
        except ValueError:
            ok = False
    if len(_IP_OK) >= _MEMO_SIZE:
        _IP_OK.clear()
    _IP_OK[value] = ok  # at most 64 characters here
    return ok


def _check_domain(reader: _Reader, value: str, path: str, name: str | None = None) -> None:
    if not _domain_ok(value):
        where = path if name is None else f"{path}.{name}"
        reader.deviation(where, f"{_excerpt(value)} is not a domain name in A-labels")


def _check_ip(reader: _Reader, value: str, path: str, name: str) -> None:
    if not _ip_ok(value):
        reader.deviation(f"{path}.{name}", f"{_excerpt(value)} is not an IP address")


def _optional_text(reader: _Reader, m: dict[str, Any], name: str, path: str,
                   *, required: bool = False) -> str | None:
    value = m.get(name, _MISSING)
    if type(value) is str and len(value) <= MAX_TEXT and not reader.surrogates:
        return value  # the common case, in one call
    value = reader.get(m, name, path, required=required)
    return None if value is _MISSING else reader.text(value, path, name)


def _result_type(reader: _Reader, raw_type: Any, path: str) -> ResultType | str:
    if raw_type is None:
        # without a result type a failure detail says nothing: fatal in both modes
        reader.fail(f"{path}.result-type", "required member missing")
    rt_text = reader.text(raw_type, path, "result-type")
    if rt_text in _RESULT_TYPES:
        return _RESULT_TYPES[rt_text]
    if rt_text.strip().lower() in _RESULT_TYPES:
        reader.deviation(f"{path}.result-type", f"result type {rt_text!r} read as lower case")
        return _RESULT_TYPES[rt_text.strip().lower()]
    # RFC 8460 §4.3/§6.6: the list grows; receivers keep unknown types
    reader.note(f"{path}.result-type", f"unregistered result type {_excerpt(rt_text)}; kept")
    return rt_text


def _build_detail(reader: _Reader, obj: Any, path: str) -> FailureDetail:
    # Each member first takes the common case inline (a short string, or an optional
    # member left out); anything else goes through the reader, which tells.
    if type(obj) is dict and obj.keys() <= _DETAIL_NAMES:
        m = obj  # the common case of members(): a plain dict with exact names
    else:
        m = reader.members(obj, path, _DETAIL_FIELDS)
    get = m.get
    plain = not reader.surrogates
    raw_type = get("result-type")
    result_type = _RESULT_TYPES.get(raw_type) if type(raw_type) is str else None
    if result_type is None:
        result_type = _result_type(reader, raw_type, path)
    count = get("failed-session-count")
    if type(count) is not int or not 0 <= count <= MAX_COUNT:
        count_value = reader.get(m, "failed-session-count", path, required=True, default="0")
        count = 0 if count_value is _MISSING else reader.count(
            count_value, path, "failed-session-count"
        )
    sending_ip = get("sending-mta-ip")
    if not (plain and type(sending_ip) is str and len(sending_ip) <= MAX_TEXT):
        sending_ip = _optional_text(reader, m, "sending-mta-ip", path, required=True)
    if sending_ip is not None and not _ip_ok(sending_ip):
        _check_ip(reader, sending_ip, path, "sending-mta-ip")
    mx_hostname = get("receiving-mx-hostname")
    if not (plain and type(mx_hostname) is str and len(mx_hostname) <= MAX_TEXT):
        mx_hostname = _optional_text(reader, m, "receiving-mx-hostname", path, required=True)
    if mx_hostname is not None and not _domain_ok(mx_hostname):
        _check_domain(reader, mx_hostname, path, "receiving-mx-hostname")
    helo = get("receiving-mx-helo", _MISSING)
    if helo is _MISSING:
        helo = None
    elif not (plain and type(helo) is str and len(helo) <= MAX_TEXT):
        helo = _optional_text(reader, m, "receiving-mx-helo", path)
    receiving_ip = get("receiving-ip", _MISSING)
    if receiving_ip is _MISSING:
        receiving_ip = None
    elif not (plain and type(receiving_ip) is str and len(receiving_ip) <= MAX_TEXT):
        receiving_ip = _optional_text(reader, m, "receiving-ip", path)
    if receiving_ip is not None and not _ip_ok(receiving_ip):
        _check_ip(reader, receiving_ip, path, "receiving-ip")
    info = get("additional-information", _MISSING)
    if info is _MISSING:
        info = None
    elif not (plain and type(info) is str and len(info) <= MAX_TEXT):
        info = _optional_text(reader, m, "additional-information", path)
    if info is not None:
        try:
            # RFC 8460 §4.4: additional-information is a URI (RFC 3986)
            check_uri(info)
        except ReportError:
            reader.deviation(f"{path}.additional-information", "not a valid URI; kept as sent")
    reason = get("failure-reason-code", _MISSING)
    if reason is _MISSING:
        reason = None
    elif not (plain and type(reason) is str and len(reason) <= MAX_TEXT):
        reason = _optional_text(reader, m, "failure-reason-code", path)
    return _failure_detail(
        result_type, count, sending_ip, mx_hostname, helo, receiving_ip, info, reason
    )


def _policy_type(reader: _Reader, raw_type: Any, ppath: str) -> PolicyType | str:
    if raw_type is None:
        reader.fail(f"{ppath}.policy-type", "required member missing")
    pt_text = reader.text(raw_type, ppath, "policy-type")
    if pt_text in _POLICY_TYPES:
        return _POLICY_TYPES[pt_text]
    if pt_text.strip().lower() in _POLICY_TYPES:
        reader.deviation(f"{ppath}.policy-type", f"policy type {pt_text!r} read as lower case")
        return _POLICY_TYPES[pt_text.strip().lower()]
    # RFC 8460 §4.4: "the only three valid choices are tlsa, sts, no-policy-found"
    reader.deviation(
        f"{ppath}.policy-type", f"unknown policy type {_excerpt(pt_text)}; kept as given"
    )
    return pt_text


def _build_policy(reader: _Reader, obj: Any, path: str) -> PolicyResult:
    if type(obj) is dict and obj.keys() <= _ENTRY_NAMES:
        entry = obj  # the common case of members(), as below
    else:
        entry = reader.members(obj, path, _ENTRY_FIELDS)
    ppath = f"{path}.policy"
    m = entry.get("policy")
    if m is None:
        reader.fail(ppath, "required member missing")
    if type(m) is not dict or not m.keys() <= _POLICY_NAMES:
        m = reader.members(m, ppath, _POLICY_FIELDS)
    plain = not reader.surrogates

    raw_type = m.get("policy-type")
    policy_type = _POLICY_TYPES.get(raw_type) if type(raw_type) is str else None
    if policy_type is None:
        policy_type = _policy_type(reader, raw_type, ppath)

    applied = policy_type is _STS or policy_type is _TLSA
    # RFC 8460 §4.4: policy-string encodes the applied policy (none for no-policy-found)
    value = m.get("policy-string", _MISSING)
    if value is None or (value is _MISSING and applied):
        value = reader.get(m, "policy-string", ppath, required=applied, default="[]")
    policy_string = () if value is _MISSING else reader.strings(value, ppath, "policy-string")
    if (
        len(policy_string) == 1
        and policy_string[0].lstrip().startswith("[")
        and _json_array_in_string(policy_string) is not None
    ):
        reader.note(
            f"{ppath}.policy-string",
            "one string holding a JSON-encoded array; kept as sent (see policy_lines)",
        )

    # RFC 8460 §4.4: the Policy Domain, also for no-policy-found
    policy_domain = m.get("policy-domain")
    if not (plain and type(policy_domain) is str and len(policy_domain) <= MAX_TEXT):
        value = reader.get(m, "policy-domain", ppath, required=True)
        policy_domain = None
        if value is not _MISSING:
            policy_domain = reader.text(value, ppath, "policy-domain")
    if policy_domain is not None and not _domain_ok(policy_domain):
        _check_domain(reader, policy_domain, ppath, "policy-domain")

    # RFC 8460 §4.4: "in the case where policy-type is sts", the MX patterns (an array;
    # the §4.5 example's string is erratum 6241)
    value = m.get("mx-host", _MISSING)
    if value is None or (value is _MISSING and policy_type is _STS):
        value = reader.get(m, "mx-host", ppath, required=policy_type is _STS, default="[]")
    mx_host = () if value is _MISSING else reader.strings(value, ppath, "mx-host")
    for i, pattern in enumerate(mx_host):
        if not _mx_pattern_ok(pattern):
            reader.deviation(
                f"{ppath}.mx-host[{i}]", f"{_excerpt(pattern)} is not an MX host pattern"
            )

    # RFC 8460 §4.4: both totals, integers
    value = entry.get("summary")
    if value is None:
        value = reader.get(entry, "summary", path, required=True, default="zero counts")
    if value is _MISSING:
        successful = failed = 0
    else:
        summary = value
        if type(summary) is not dict or not summary.keys() <= _SUMMARY_NAMES:
            summary = reader.members(value, f"{path}.summary", _SUMMARY_FIELDS)
        successful = summary.get("total-successful-session-count")
        if type(successful) is not int or not 0 <= successful <= MAX_COUNT:
            successful = _summary_count(reader, summary, path, _SUMMARY_FIELDS[0])
        failed = summary.get("total-failure-session-count")
        if type(failed) is not int or not 0 <= failed <= MAX_COUNT:
            failed = _summary_count(reader, summary, path, _SUMMARY_FIELDS[1])

    dpath = f"{path}.failure-details"
    value = entry.get("failure-details", _MISSING)
    if value is None or value is _MISSING:
        value = reader.get(entry, "failure-details", path, required=True, default="[]")
    if value is _MISSING:
        raw_details: list[Any] | tuple[Any, ...] = ()
    elif not isinstance(value, list | tuple):
        reader.fail(dpath, f"expected an array, got {_excerpt(value)}")
    else:
        raw_details = value
    if len(raw_details) > MAX_FAILURE_DETAILS:
        reader.fail(dpath, f"more than {MAX_FAILURE_DETAILS} entries")
    details = []
    in_details = 0
    for i, raw in enumerate(raw_details):
        detail = _build_detail(reader, raw, f"{dpath}[{i}]")
        in_details += detail.failed_session_count
        details.append(detail)

    if in_details > failed:
        # RFC 8460 §4.3 result types are not exclusive, so this is allowed; worth a look
        reader.note(
            dpath,
            f"failed-session-count adds up to {in_details}, more than "
            f"total-failure-session-count {failed}",
        )
    return _policy_result(
        policy_type, policy_domain, successful, failed, policy_string, mx_host, tuple(details)
    )


def _summary_count(reader: _Reader, summary: dict[str, Any], path: str, name: str) -> int:
    count_value = reader.get(summary, name, f"{path}.summary", required=True, default="0")
    return 0 if count_value is _MISSING else reader.count(count_value, f"{path}.summary", name)


_ONE_DAY = timedelta(days=1)
_ONE_DAY_TO_2359 = timedelta(days=1, seconds=-1)


def _check_range(reader: _Reader, start: datetime, end: datetime) -> None:
    path = "$.date-range"
    if end < start:
        reader.deviation(path, "end-datetime is before start-datetime")
        return
    # RFC 8460 §4.1: the report SHOULD cover a full day, from 00:00-24:00 UTC
    if (start.hour, start.minute, start.second, start.microsecond) != (0, 0, 0, 0):
        reader.note(path, "start-datetime is not 00:00:00Z; §4.1 reports cover UTC days")
        return
    span = end - start
    if span == _ONE_DAY:
        reader.note(path, "end-datetime is the next day's 00:00:00Z (24:00); accepted")
    elif span != _ONE_DAY_TO_2359:
        reader.note(path, f"date-range spans {span}, not one UTC day (§4.1 SHOULD)")


def _build_report(reader: _Reader, data: Any) -> Report:
    if type(data) is dict and data.keys() <= _REPORT_NAMES:
        m = data  # the common case of members(), as in the builders above
    else:
        m = reader.members(data, "$", _REPORT_FIELDS)
    plain = not reader.surrogates

    organization = m.get("organization-name")
    if not (plain and type(organization) is str and len(organization) <= MAX_TEXT):
        value = reader.get(m, "organization-name", "$", required=True, default="''")
        organization = (
            None if value is _MISSING else reader.text(value, "$", "organization-name")
        )
    if organization is None:
        organization = ""
    elif not organization.strip():
        reader.deviation("$.organization-name", "empty")

    dates = m.get("date-range")
    if dates is None:
        # without its dates a report cannot be filed: fatal in both modes
        reader.fail("$.date-range", "required member missing")
    if type(dates) is not dict or not dates.keys() <= _DATE_NAMES:
        dates = reader.members(dates, "$.date-range", _DATE_FIELDS)
    for name in _DATE_FIELDS:
        if dates.get(name) is None:
            reader.fail(f"$.date-range.{name}", "required member missing")
    start = reader.date_time(dates["start-datetime"], "$.date-range.start-datetime", end=False)
    end = reader.date_time(dates["end-datetime"], "$.date-range.end-datetime", end=True)
    _check_range(reader, start, end)

    value = reader.get(m, "contact-info", "$", required=True)
    contact = None
    if value is not _MISSING:
        contact = reader.text(value, "$", "contact-info")
        if not _ADDR_SPEC_RE.fullmatch(contact):
            # RFC 8460 §4.4: an addr-spec (RFC 5322 §3.4.1)
            reader.deviation("$.contact-info", f"{_excerpt(contact)} is not an e-mail address")

    if m.get("report-id") is None:
        # RFC 8460 §4.4: the unique identifier; receivers de-duplicate on it (fatal)
        reader.fail("$.report-id", "required member missing")
    report_id = reader.text(m["report-id"], "$", "report-id")
    if not report_id.strip():
        reader.fail("$.report-id", "empty report-id")

    value = reader.get(m, "policies", "$", required=True, default="[]")
    if value is _MISSING:
        raw_policies: list[Any] | tuple[Any, ...] = ()
    elif not isinstance(value, list | tuple):
        reader.fail("$.policies", f"expected an array, got {_excerpt(value)}")
    else:
        raw_policies = value
    if len(raw_policies) > MAX_POLICIES:
        reader.fail("$.policies", f"more than {MAX_POLICIES} entries")
    policies = tuple(
        _build_policy(reader, p, f"$.policies[{i}]") for i, p in enumerate(raw_policies)
    )
    return Report(
        organization_name=organization,
        start_datetime=start,
        end_datetime=end,
        contact_info=contact,
        report_id=report_id,
        policies=policies,
        warnings=reader.final_warnings(),
    )


def parse_report(
    data: bytes | str,
    *,
    strict: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> Report:
    """Parse a TLSRPT aggregate report (RFC 8460 §4): JSON or gzip-compressed JSON.

    *data* is the body as received: ``bytes`` (gzip detected by its magic bytes; a zip
    archive is accepted in tolerant mode) or ``str`` (JSON text). *max_size* caps the
    input, *max_decompressed* the JSON text after decompression. ``strict`` accepts
    exactly RFC 8460; the default tolerant mode accepts real-sender quirks and records
    each as a warning (see the module docstring).

    Raises :class:`~smtptls.errors.ReportTooLargeError` over a cap and
    :class:`~smtptls.errors.ReportParseError` (with ``path``) for anything else.
    """
    reader = _Reader(strict)
    text = _decode(data, reader, max_size, max_decompressed)
    decoded = len(reader.warnings)  # deviations found while decoding (BOM, zip, ...)
    report = _read_quick(reader, text)
    if report is not None:
        return report
    # the reference decoder's tree decides, and names any error as it always has
    del reader.warnings[decoded:]
    reader.dropped = 0
    return _read_reference(reader, text, from_str=isinstance(data, str))


def _read_quick(reader: _Reader, text: str) -> Report | None:
    """The report read from orjson's tree, or None where :func:`_read_reference` must
    decide: the tree may differ from the reference one, or something is wrong with it.
    The two give the same report and warnings wherever this one answers."""
    obj = _loads_quick(text)
    if obj is None:
        return None
    reader.quick = True
    reader.surrogates = False  # orjson refuses unpaired surrogates
    try:
        return _build_report(reader, obj)
    except (_Redo, ReportParseError):
        return None
    finally:
        reader.quick = False


def _read_reference(reader: _Reader, text: str, *, from_str: bool) -> Report:
    """The report read from the standard decoder's tree (duplicate names recorded, number
    literals bounded as they are read, nesting checked first)."""
    obj = _loads(text)
    # an unpaired surrogate can only come from a \uD8xx escape (or a str passed in)
    reader.surrogates = bool(
        ("\\u" in text and _SURROGATE_ESCAPE_RE.search(text))
        or (from_str and _SURROGATE_RE.search(text))
    )
    return _build_report(reader, obj)


def _forget() -> None:
    """Empty the memos of checks and date readings (benchmarks time a cold parser)."""
    for memo in (_DOMAIN_OK, _MX_PATTERN_OK, _IP_OK, *_DATE_READINGS.values()):
        memo.clear()
