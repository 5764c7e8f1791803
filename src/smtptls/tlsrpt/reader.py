"""TLSRPT aggregate reports (RFC 8460 §4): read and validate, for receivers.

:func:`parse_report` takes the bytes as received (JSON, or gzip-compressed JSON as
§5.3/§5.4 send it; decoded within its bounds by :mod:`smtptls.tlsrpt.decode`) or a
``str``, and returns a frozen :class:`~smtptls.tlsrpt.report.Report`. Only
:class:`~smtptls.errors.ReportError` subclasses escape.

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

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from smtptls.errors import ReportError, ReportParseError
from smtptls.tlsrpt.decode import (
    DEFAULT_MAX_DECOMPRESSED,
    DEFAULT_MAX_SIZE,
    MAX_COUNT,
    MAX_DEPTH,
    MAX_FAILURE_DETAILS,
    MAX_POLICIES,
    MAX_STRINGS,
    MAX_TEXT,
    MAX_WARNINGS,
    decode_text,
    loads_quick,
    loads_reference,
)
from smtptls.tlsrpt.record import check_uri
from smtptls.tlsrpt.report import (
    FailureDetail,
    PolicyResult,
    PolicyType,
    Report,
    ResultType,
    _json_array_in_string,
)
from smtptls.tlsrpt.values import (
    DATE_READINGS,
    domain_ok,
    excerpt,
    ip_ok,
    mx_pattern_ok,
    read_datetime,
    remember,
    value_kind,
)

__all__ = ["parse_report", "report_from_tree"]

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

# RFC 8460 §4.4 contact-info: an addr-spec (RFC 5322 §3.4.1), checked loosely
_ADDR_SPEC_RE = re.compile(r"[^@\s]+@[^@\s]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# a JSON escape that can decode to an unpaired surrogate (RFC 8259 §7)
_SURROGATE_ESCAPE_RE = re.compile(r"\\u[dD][89a-fA-F]")
_COUNT_TEXT_RE = re.compile(r"[ \t]*[0-9]{1,16}[ \t]*")
class _Redo(Exception):  # a control-flow signal inside parse_report, never raised to callers
    """The quickly decoded tree may differ from what :func:`loads_reference` returns: start over."""



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



# --- reading the JSON object --------------------------------------------------------------


class _Missing:
    __slots__ = ()


_MISSING: Any = _Missing()


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
        # True while reading a tree from loads_quick: a value that decoder may have read
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
                self.fail(path, f"expected an object, got {value_kind(obj)}")
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
            self.fail(path, f"expected a string, got {excerpt(value)}")
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
            self.fail(path, f"expected an array of strings, got {excerpt(value)}")
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
            self.fail(path, f"expected a non-negative integer, got {excerpt(value)}")
        if not 0 <= number <= MAX_COUNT:
            self.fail(path, f"count {number} out of range (0 to 2^53-1)")
        return number

    def date_time(self, value: Any, path: str, *, end: bool) -> datetime:
        text = self.text(value, path)
        # the same days come report after report: their readings are kept
        memo = DATE_READINGS[end]
        reading = memo.get(text)
        if reading is None:
            reading = remember(memo, text, read_datetime(text, end=end))
        moment, findings = reading
        for kind, message in findings:
            if kind == "fail":
                self.fail(path, message)
            elif kind == "deviation":
                self.deviation(path, message)
            else:
                self.note(path, message)
        return moment  # type: ignore[no-any-return]


def _check_domain(reader: _Reader, value: str, path: str, name: str | None = None) -> None:
    if not domain_ok(value):
        where = path if name is None else f"{path}.{name}"
        reader.deviation(where, f"{excerpt(value)} is not a domain name in A-labels")


def _check_ip(reader: _Reader, value: str, path: str, name: str) -> None:
    if not ip_ok(value):
        reader.deviation(f"{path}.{name}", f"{excerpt(value)} is not an IP address")


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
    reader.note(f"{path}.result-type", f"unregistered result type {excerpt(rt_text)}; kept")
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
    if sending_ip is not None and not ip_ok(sending_ip):
        _check_ip(reader, sending_ip, path, "sending-mta-ip")
    mx_hostname = get("receiving-mx-hostname")
    if not (plain and type(mx_hostname) is str and len(mx_hostname) <= MAX_TEXT):
        mx_hostname = _optional_text(reader, m, "receiving-mx-hostname", path, required=True)
    if mx_hostname is not None and not domain_ok(mx_hostname):
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
    if receiving_ip is not None and not ip_ok(receiving_ip):
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
    return FailureDetail(
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
        f"{ppath}.policy-type", f"unknown policy type {excerpt(pt_text)}; kept as given"
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
    if policy_domain is not None and not domain_ok(policy_domain):
        _check_domain(reader, policy_domain, ppath, "policy-domain")

    # RFC 8460 §4.4: "in the case where policy-type is sts", the MX patterns (an array;
    # the §4.5 example's string is erratum 6241)
    value = m.get("mx-host", _MISSING)
    if value is None or (value is _MISSING and policy_type is _STS):
        value = reader.get(m, "mx-host", ppath, required=policy_type is _STS, default="[]")
    mx_host = () if value is _MISSING else reader.strings(value, ppath, "mx-host")
    for i, pattern in enumerate(mx_host):
        if not mx_pattern_ok(pattern):
            reader.deviation(
                f"{ppath}.mx-host[{i}]", f"{excerpt(pattern)} is not an MX host pattern"
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
        reader.fail(dpath, f"expected an array, got {excerpt(value)}")
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
    return PolicyResult(
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
            reader.deviation("$.contact-info", f"{excerpt(contact)} is not an e-mail address")

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
        reader.fail("$.policies", f"expected an array, got {excerpt(value)}")
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
    return parse_report_body(data, strict=strict, max_size=max_size,
                             max_decompressed=max_decompressed).report


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A report with the JSON text it was read from (decompressed, any byte order mark
    dropped: what :func:`~smtptls.tlsrpt.decode.decompress_report` gives) and, where the
    quick reading answered, orjson's tree of that text (equal to the standard
    decoder's: no float, no integer beyond 64 bits, no name given twice), else None."""

    report: Report
    text: str
    tree: Any = None


def parse_report_body(
    data: bytes | str,
    *,
    strict: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> ParsedBody:
    """:func:`parse_report`, keeping the text and tree a receiver stores and digests
    (decompressed once); the same arguments, the same errors."""
    reader = _Reader(strict)
    text = decode_text(data, reader, max_size, max_decompressed)
    decoded = len(reader.warnings)  # deviations found while decoding (BOM, zip, ...)
    quick = _read_quick(reader, text)
    if quick is not None:
        return ParsedBody(quick[0], text, quick[1])
    # the reference decoder's tree decides, and names any error as it always has
    del reader.warnings[decoded:]
    reader.dropped = 0
    return ParsedBody(_read_reference(reader, text, from_str=isinstance(data, str)), text)


# Fast path kept: on bench_tlsrpt_parse.py's corpus ~17,000-18,000 reports/s, ~12,000 read
# the reference way only.
def _read_quick(reader: _Reader, text: str) -> tuple[Report, Any] | None:
    """The report read from orjson's tree, and the tree; None where
    :func:`_read_reference` must decide: the tree may differ from the reference one, or
    something is wrong with it. The two give the same report and warnings wherever this
    one answers."""
    obj = loads_quick(text)
    if obj is None:
        return None
    reader.quick = True
    reader.surrogates = False  # orjson refuses unpaired surrogates
    try:
        return _build_report(reader, obj), obj
    except (_Redo, ReportParseError):
        return None
    finally:
        reader.quick = False


def _read_reference(reader: _Reader, text: str, *, from_str: bool) -> Report:
    """The report read from the standard decoder's tree (duplicate names recorded, number
    literals bounded as they are read, nesting checked first)."""
    obj = loads_reference(text)
    # an unpaired surrogate can only come from a \uD8xx escape (or a str passed in)
    reader.surrogates = bool(
        ("\\u" in text and _SURROGATE_ESCAPE_RE.search(text))
        or (from_str and _SURROGATE_RE.search(text))
    )
    return _build_report(reader, obj)


def report_from_tree(data: Any, *, strict: bool = False) -> Report:
    """A report from an already decoded JSON object (the rules of :func:`parse_report`)."""
    return _build_report(_Reader(strict), data)
