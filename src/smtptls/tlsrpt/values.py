"""Checks of the values inside a TLSRPT report (RFC 8460 §4.4), with bounded memos.

Host names and MX patterns (A-labels, RFC 8461 §4.1 patterns), IP addresses (dot-decimal
IPv4, RFC 5952 IPv6) and RFC 3339 §5.6 date-times, plus the variants real senders
wrote. The same values come report after report, so each check keeps a bounded memo of
its answers (a full memo starts over); ``benchmarks/bench_tlsrpt_parse.py`` shows the
memos' worth as its "cold" row. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = ["domain_ok", "forget", "ip_ok", "mx_pattern_ok", "read_datetime"]

_DOMAIN_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_\-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"(?=.{{1,254}}$)(?:{_DOMAIN_LABEL}\.)*{_DOMAIN_LABEL}\.?")
# RFC 8460 §4.4 mx-host: patterns as in RFC 8461 §4.1, "*." only as the whole left label
_MX_PATTERN_RE = re.compile(rf"(?:\*\.)?(?=.{{1,254}}$)(?:{_DOMAIN_LABEL}\.)*{_DOMAIN_LABEL}\.?")
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
# RFC 3339 §5.6 date-time, plus the variants real senders wrote (checked below)
_DATETIME_RE = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})"
    r"(?:(?P<sep>[Tt ])(?P<h>[0-9]{2}):(?P<mi>[0-9]{2})"
    r"(?::(?P<s>[0-9]{2})(?P<frac>\.[0-9]{1,32})?)?"
    r"[ ]?(?P<tz>[Zz]|UTC|GMT|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
)



def value_kind(value: Any) -> str:
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


def excerpt(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list | tuple) else value_kind(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Readings of date-time texts, for the start (False) and the end (True) of a range.
DATE_READINGS: dict[bool, dict[str, Any]] = {False: {}, True: {}}
Findings = tuple[tuple[str, str], ...]


def read_datetime(text: str, *, end: bool) -> tuple[datetime | None, Findings]:
    """A date-time as UTC, with the findings in order: ``("deviation" | "note" | "fail",
    message)``; after a "fail" there is no datetime."""
    found: list[tuple[str, str]] = []
    stripped = text.strip()
    m = _DATETIME_RE.fullmatch(stripped)
    if m is None:
        return None, (("fail", f"not an RFC 3339 date-time: {excerpt(text)}"),)
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
        found.append(("fail", f"not a valid date-time: {excerpt(text)}"))
        return None, tuple(found)



# Fast path kept: bench_tlsrpt_parse.py ~27,600 reports/s with warm memos, ~19,800 cold.
# Answers of the pure checks below, for short strings: host names, addresses and dates
# repeat within a report and from report to report. Bounded: a full memo starts over.
_MEMO_SIZE = 4096
_MEMO_KEY_CHARS = 255
_DOMAIN_OK: dict[str, bool] = {}
_MX_PATTERN_OK: dict[str, bool] = {}
_IP_OK: dict[str, bool] = {}


def remember(memo: dict[str, Any], key: str, value: Any) -> Any:
    if len(key) <= _MEMO_KEY_CHARS:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[key] = value
    return value


def domain_ok(value: str) -> bool:
    # RFC 8460 §4.4: domain names as A-labels (an IDN in Punycode)
    ok = _DOMAIN_OK.get(value)
    if ok is None:
        ok = remember(_DOMAIN_OK, value, _DOMAIN_RE.fullmatch(value) is not None)
    return ok


def mx_pattern_ok(value: str) -> bool:
    # RFC 8460 §4.4: patterns as in RFC 8461 §4.1, "*." only as the whole left label
    ok = _MX_PATTERN_OK.get(value)
    if ok is None:
        ok = remember(_MX_PATTERN_OK, value, _MX_PATTERN_RE.fullmatch(value) is not None)
    return ok


def ip_ok(value: str) -> bool:
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


def forget() -> None:
    """Empty the memos of checks and date readings (benchmarks time a cold parser)."""
    for memo in (_DOMAIN_OK, _MX_PATTERN_OK, _IP_OK, *DATE_READINGS.values()):
        memo.clear()
