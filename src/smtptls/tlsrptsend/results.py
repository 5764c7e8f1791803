"""TLS session results: what a sending MTA saw, the raw material of a report (RFC 8460).

One :class:`SessionResult` is one attempt to negotiate TLS for one SMTP session with one
receiving MX, under the policy that applied to it (RFC 8460 §4.3: "the total number of
successful and failed sessions"). It names:

- the applied policy (:class:`AppliedPolicy`): ``policy-type`` ``sts``, ``tlsa`` or
  ``no-policy-found``, the policy domain (the recipient domain, §1.3 "Policy Domain"),
  the ``policy-string`` lines and, for ``sts``, the ``mx-host`` patterns (§4.4);
- the receiving MX host name, its IP address and the sending MTA's IP address;
- success, or failure with one or more :class:`Failure` values carrying a §4.3 result
  type and the optional details of §4.4 (``receiving-mx-helo``,
  ``additional-information``, ``failure-reason-code``; a failure may also name its own
  MX host and addresses, as libtlsrpt datagrams do).

Pure: values in, values out; the clock is an argument. Every error is a
:class:`~smtptls.errors.ResultError`. :meth:`SessionResult.to_dict` /
:meth:`SessionResult.from_dict` define the JSON form the collector's HTTP endpoint
accepts (documented in docs/tlsrpt-sending.md)::

    {"time": "2024-05-01T10:00:00Z",
     "policy": {"policy-type": "sts", "policy-domain": "example.com",
                "policy-string": ["version: STSv1", "mode: testing", ...],
                "mx-host": ["*.mail.example.com"]},
     "receiving-mx-hostname": "mx1.mail.example.com", "receiving-ip": "192.0.2.10",
     "sending-mta-ip": "198.51.100.7",
     "failures": [{"result-type": "certificate-expired",
                   "failure-reason-code": "X509_V_ERR_CERT_HAS_EXPIRED"}]}

An absent or empty ``failures`` list is a successful session. ``"failed"`` overrides
what the list says: ``true`` without failures is a failed session with no details (as a
libtlsrpt datagram may say), ``false`` with failures a successful session that still
reports them as failure details, e.g. an MTA-STS policy refresh that failed while the
cached policy applied (RFC 8461 §6; docs/tlsrpt-sending.md).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import idna

from smtptls.errors import ResultError
from smtptls.tlsrpt.report import PolicyType, ResultType, format_datetime

__all__ = [
    "MAX_FAILURES",
    "MAX_POLICY_STRINGS",
    "AppliedPolicy",
    "Failure",
    "SessionResult",
    "normalize_domain_name",
    "normalize_ip",
    "parse_result_type",
]

#: Bounds on one result (data from other programs and from the network).
MAX_POLICY_STRINGS = 256  # an MTA-STS policy is a few lines; a TLSA RRset a few records
MAX_STRING = 8192  # a "3 0 0" TLSA record of a large certificate in hex fits
MAX_TEXT = 1024  # helo, additional-information, failure-reason-code
MAX_FAILURES = 16  # failure details of one session
MAX_JSON = 256 * 1024  # one result as JSON text

# RFC 8460 §4.3 / §6.6: result types are registered tokens; new ones may appear.
_RESULT_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_PATTERN_RE = re.compile(r"(?:\*\.)?[a-z0-9_.-]{1,253}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_RESULT_TYPES = {t.value: t for t in ResultType}
_POLICY_TYPES = {t.value: t for t in PolicyType}


# --- small checked values -------------------------------------------------------------------


# Collectors normalize the same few thousand names and addresses millions of times a day:
# remember the good ones (bounded; emptied when full).
_MEMO_SIZE = 100_000
_NAMES: dict[str, str] = {}
_IPS: dict[str, str] = {}


def _remember(memo: dict[str, str], key: str, value: str) -> str:
    if len(memo) >= _MEMO_SIZE:
        memo.clear()
    memo[key] = value
    return value


def normalize_domain_name(value: Any, what: str = "domain") -> str:
    """Lower-case A-label form of a DNS name, no trailing dot (RFC 8460 §4.4: domains as
    A-labels). Raises :class:`ResultError` for anything that is not a host name."""
    if isinstance(value, str):
        hit = _NAMES.get(value)
        if hit is not None:
            return hit
        return _remember(_NAMES, value, _normalize_domain_name(value, what))
    return _normalize_domain_name(value, what)


def _normalize_domain_name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ResultError(f"{what} must be a string, not {type(value).__name__}")
    text = value.strip().rstrip(".")
    if not text or len(text) > 1024:
        raise ResultError(f"{what} {value[:80]!r} is not a domain name")
    if not text.isascii():
        try:
            # RFC 8460 §4.4: internationalized names as A-labels (RFC 5891)
            text = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ResultError(f"{what} {value[:80]!r} is not a valid IDN") from exc
    text = text.lower()
    if len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in text.split(".")):
        raise ResultError(f"{what} {value[:80]!r} is not a domain name")
    return text


def normalize_ip(value: Any, what: str = "IP address") -> str:
    """An IPv4 or IPv6 address in canonical text form (RFC 8460 §4.4; RFC 5952 for IPv6)."""
    if isinstance(value, str):
        hit = _IPS.get(value)
        if hit is not None:
            return hit
        return _remember(_IPS, value, _normalize_ip(value, what))
    return _normalize_ip(value, what)


def _normalize_ip(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ResultError(f"{what} must be a string, not {type(value).__name__}")
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text.lower().startswith("ipv6:"):  # Postfix writes [IPv6:2001:db8::1] in relay=
        text = text[5:]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError as exc:
        raise ResultError(f"{what} {value[:80]!r} is not an IP address") from exc


def _text(value: Any, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise ResultError(f"{what} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise ResultError(f"{what} longer than {limit} characters")
    if _CONTROL_RE.search(value):
        raise ResultError(f"{what} contains a control character")
    return value


def _optional(value: Any, what: str, check: Any = None) -> str | None:
    if value is None:
        return None
    if check is not None:
        return check(value, what)  # type: ignore[no-any-return]
    text = _text(value, what)
    return text or None


def parse_result_type(value: Any) -> ResultType | str:
    """A §4.3 result type: the registered :class:`ResultType`, or an unregistered token
    (RFC 8460 §6.6: the registry grows) kept as a lower-case string."""
    if isinstance(value, ResultType):
        return value
    if not isinstance(value, str):
        raise ResultError(f"result-type must be a string, not {type(value).__name__}")
    text = value.strip().lower()
    if text in _RESULT_TYPES:
        return _RESULT_TYPES[text]
    if not _RESULT_TOKEN_RE.fullmatch(text):
        raise ResultError(f"result-type {value[:80]!r} is not a result type token")
    return text


def _time(value: Any) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ResultError("time must be a timezone-aware datetime")
    return value.astimezone(UTC)


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise ResultError("time must be an RFC 3339 date-time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ResultError(f"time {value[:40]!r} is not an RFC 3339 date-time") from exc
    if parsed.tzinfo is None:
        raise ResultError(f"time {value[:40]!r} has no time zone")
    return parsed.astimezone(UTC)


# --- the applied policy ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppliedPolicy:
    """The policy one session was evaluated against (RFC 8460 §4.4 ``policy``).

    ``policy_domain`` is the recipient domain (§1.3), also for ``tlsa`` (the TLSA base
    domain is the MX host, which the failure details name). ``policy_strings``: the
    MTA-STS policy lines or the TLSA records in presentation form; ``mx_patterns``: the
    policy's ``mx`` patterns (``sts`` only). For ``no-policy-found`` both are empty.
    """

    policy_type: PolicyType
    policy_domain: str
    policy_strings: tuple[str, ...] = ()
    mx_patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ptype = self.policy_type
        if not isinstance(ptype, PolicyType):
            if not isinstance(ptype, str) or ptype not in _POLICY_TYPES:
                # RFC 8460 §4.4: "the only three valid choices are tlsa, sts, no-policy-found"
                raise ResultError(f"policy-type {str(ptype)[:40]!r} is not sts, tlsa or "
                                  "no-policy-found")
            object.__setattr__(self, "policy_type", _POLICY_TYPES[ptype])
        object.__setattr__(self, "policy_domain",
                           normalize_domain_name(self.policy_domain, "policy-domain"))
        for name in ("policy_strings", "mx_patterns"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, list | tuple):
                raise ResultError(f"{name.replace('_', '-')} must be a list of strings")
            if len(value) > MAX_POLICY_STRINGS:
                raise ResultError(f"more than {MAX_POLICY_STRINGS} {name.replace('_', '-')}")
            items = tuple(_text(v, name.replace("_", "-"), MAX_STRING) for v in value)
            object.__setattr__(self, name, items)
        patterns = tuple(p.strip().lower().rstrip(".") for p in self.mx_patterns)
        for p in patterns:
            # RFC 8460 §4.4 mx-host: the RFC 8461 §3.2 patterns, "*." only left-most
            if not _PATTERN_RE.fullmatch(p) or "*" in p[2:]:
                raise ResultError(f"mx-host pattern {p[:80]!r} is not a host name pattern")
        object.__setattr__(self, "mx_patterns", patterns)
        if self.policy_type is PolicyType.NO_POLICY_FOUND and (
                self.policy_strings or self.mx_patterns):
            # RFC 8460 §4.4: no policy, nothing to encode
            raise ResultError("no-policy-found has no policy-string or mx-host")

    @classmethod
    def none_found(cls, domain: str) -> AppliedPolicy:
        """No DANE or MTA-STS policy for ``domain`` (RFC 8460 §4.4 ``no-policy-found``)."""
        return cls(PolicyType.NO_POLICY_FOUND, domain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy-type": str(self.policy_type),
            "policy-domain": self.policy_domain,
            "policy-string": list(self.policy_strings),
            "mx-host": list(self.mx_patterns),
        }

    @classmethod
    def from_dict(cls, data: Any) -> AppliedPolicy:
        if not isinstance(data, Mapping):
            raise ResultError("policy must be an object")
        unknown = set(data) - {"policy-type", "policy-domain", "policy-string", "mx-host"}
        if unknown:
            raise ResultError(f"unknown policy member {sorted(unknown)[0][:40]!r}")
        if "policy-type" not in data or "policy-domain" not in data:
            raise ResultError("policy needs policy-type and policy-domain")
        return cls(
            policy_type=data["policy-type"],
            policy_domain=data["policy-domain"],
            policy_strings=tuple(data.get("policy-string") or ()),
            mx_patterns=tuple(data.get("mx-host") or ()),
        )


# --- failures and sessions -------------------------------------------------------------------

_FAILURE_FIELDS = {
    "result-type": "result_type",
    "receiving-mx-hostname": "receiving_mx_hostname",
    "receiving-ip": "receiving_ip",
    "sending-mta-ip": "sending_mta_ip",
    "receiving-mx-helo": "receiving_mx_helo",
    "additional-information": "additional_information",
    "failure-reason-code": "failure_reason_code",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure seen in a session (RFC 8460 §4.3 result type, §4.4 details).

    The host and address fields override the session's own when given (libtlsrpt
    datagrams carry them per failure); None means "as the session".
    """

    result_type: ResultType | str
    receiving_mx_hostname: str | None = None
    receiving_ip: str | None = None
    sending_mta_ip: str | None = None
    receiving_mx_helo: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "result_type", parse_result_type(self.result_type))
        object.__setattr__(self, "receiving_mx_hostname", _optional(
            self.receiving_mx_hostname, "receiving-mx-hostname", normalize_domain_name))
        object.__setattr__(self, "receiving_ip",
                           _optional(self.receiving_ip, "receiving-ip", normalize_ip))
        object.__setattr__(self, "sending_mta_ip",
                           _optional(self.sending_mta_ip, "sending-mta-ip", normalize_ip))
        for name in ("receiving_mx_helo", "additional_information", "failure_reason_code"):
            object.__setattr__(self, name,
                               _optional(getattr(self, name), name.replace("_", "-")))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, attr in _FAILURE_FIELDS.items():
            value = getattr(self, attr)
            if value is not None:
                out[key] = str(value)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> Failure:
        if not isinstance(data, Mapping):
            raise ResultError("a failure must be an object")
        unknown = set(data) - set(_FAILURE_FIELDS)
        if unknown:
            raise ResultError(f"unknown failure member {sorted(unknown)[0][:40]!r}")
        if "result-type" not in data:
            raise ResultError("a failure needs a result-type")
        return cls(**{attr: data.get(key) for key, attr in _FAILURE_FIELDS.items()})


_SESSION_FIELDS = {
    "receiving-mx-hostname": "mx_host",
    "receiving-ip": "receiving_ip",
    "sending-mta-ip": "sending_mta_ip",
}


@dataclass(frozen=True, slots=True)
class SessionResult:
    """One SMTP session's TLS outcome under its applied policy.

    ``failed`` defaults to "there are failures"; a libtlsrpt datagram may say a policy
    failed without details, which ``failed=True`` with no ``failures`` records.
    ``failed=False`` with failures: the session succeeded and its failures are only
    failure details (a failed MTA-STS policy refresh under a cached policy).
    """

    time: datetime
    policy: AppliedPolicy
    mx_host: str | None = None
    receiving_ip: str | None = None
    sending_mta_ip: str | None = None
    failures: tuple[Failure, ...] = ()
    failed: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", _time(self.time))
        if not isinstance(self.policy, AppliedPolicy):
            raise ResultError("policy must be an AppliedPolicy")
        object.__setattr__(self, "mx_host", _optional(
            self.mx_host, "receiving-mx-hostname", normalize_domain_name))
        object.__setattr__(self, "receiving_ip",
                           _optional(self.receiving_ip, "receiving-ip", normalize_ip))
        object.__setattr__(self, "sending_mta_ip",
                           _optional(self.sending_mta_ip, "sending-mta-ip", normalize_ip))
        failures = self.failures
        if isinstance(failures, Failure):
            failures = (failures,)
        if not isinstance(failures, list | tuple):
            raise ResultError("failures must be a list of Failure values")
        if len(failures) > MAX_FAILURES:
            raise ResultError(f"more than {MAX_FAILURES} failures in one session")
        if not all(isinstance(f, Failure) for f in failures):
            raise ResultError("failures must be Failure values")
        object.__setattr__(self, "failures", tuple(failures))
        if self.failed is None:
            object.__setattr__(self, "failed", bool(failures))
        elif not isinstance(self.failed, bool):
            raise ResultError("failed must be true or false")

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def success(cls, time: datetime, policy: AppliedPolicy, **fields: Any) -> SessionResult:
        """A session that negotiated TLS as the policy requires (§4.3 successful session)."""
        return cls(time, policy, **fields)

    @classmethod
    def failure(cls, time: datetime, policy: AppliedPolicy, result_type: ResultType | str,
                *, mx_host: str | None = None, receiving_ip: str | None = None,
                sending_mta_ip: str | None = None, **details: Any) -> SessionResult:
        """A failed session with one failure of ``result_type`` (§4.3)."""
        return cls(time, policy, mx_host=mx_host, receiving_ip=receiving_ip,
                   sending_mta_ip=sending_mta_ip,
                   failures=(Failure(result_type, **details),))

    # -- what aggregation uses ------------------------------------------------------------------

    @property
    def succeeded(self) -> bool:
        return not self.failed

    @property
    def day(self) -> str:
        """The UTC day of the session, ``YYYY-MM-DD`` (RFC 8460 §4.1: UTC days)."""
        return self.time.date().isoformat()

    def detail_keys(self, default_sending_ip: str | None = None
                    ) -> list[tuple[str, str | None, str | None, str | None, str | None,
                                    str | None, str | None]]:
        """One grouping key per failure: (result-type, sending-mta-ip, mx host, helo,
        receiving-ip, additional-information, failure-reason-code), the session's host
        and addresses filled in where the failure gives none."""
        out = []
        for f in self.failures:
            out.append((
                str(f.result_type),
                f.sending_mta_ip or self.sending_mta_ip or default_sending_ip,
                f.receiving_mx_hostname or self.mx_host,
                f.receiving_mx_helo,
                f.receiving_ip or self.receiving_ip,
                f.additional_information,
                f.failure_reason_code,
            ))
        return out

    # -- JSON form ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": format_datetime(self.time),
                               "policy": self.policy.to_dict()}
        for key, attr in _SESSION_FIELDS.items():
            value = getattr(self, attr)
            if value is not None:
                out[key] = value
        out["failures"] = [f.to_dict() for f in self.failures]
        if self.failed != bool(self.failures):
            out["failed"] = self.failed
        return out

    @classmethod
    def from_dict(cls, data: Any, *, now: datetime | None = None) -> SessionResult:
        """Build a result from its JSON form; ``now`` stands in for a missing ``time``."""
        if not isinstance(data, Mapping):
            raise ResultError("a result must be a JSON object")
        allowed = {"time", "policy", "failures", "failed", *_SESSION_FIELDS}
        unknown = set(data) - allowed
        if unknown:
            raise ResultError(f"unknown result member {sorted(unknown)[0][:40]!r}")
        if "time" in data:
            time = _parse_time(data["time"])
        elif now is not None:
            time = now
        else:
            raise ResultError("result has no time")
        if "policy" not in data:
            raise ResultError("result has no policy")
        raw_failures = data.get("failures") or []
        if not isinstance(raw_failures, list):
            raise ResultError("failures must be a list")
        if len(raw_failures) > MAX_FAILURES:
            raise ResultError(f"more than {MAX_FAILURES} failures in one session")
        failed = data.get("failed")
        if failed is not None and not isinstance(failed, bool):
            raise ResultError("failed must be true or false")
        return cls(
            time=time,
            policy=AppliedPolicy.from_dict(data["policy"]),
            failures=tuple(Failure.from_dict(f) for f in raw_failures),
            failed=failed,
            **{attr: data.get(key) for key, attr in _SESSION_FIELDS.items()},
        )

    def to_text(self) -> str:
        """Compact JSON (one line)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def parse(cls, text: str | bytes, *, now: datetime | None = None) -> SessionResult:
        """Parse the JSON form; raises :class:`ResultError`."""
        return cls.from_dict(loads_bounded(text), now=now)

    from_text = parse


def loads_bounded(text: str | bytes, limit: int = MAX_JSON) -> Any:
    """``json.loads`` with a size cap; every failure is a :class:`ResultError`."""
    if isinstance(text, bytes | bytearray):
        if len(text) > limit:
            raise ResultError(f"JSON longer than {limit} bytes")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as error:
            raise ResultError("JSON is not UTF-8") from error
    if not isinstance(text, str):
        raise ResultError("JSON must be text")
    if len(text) > limit:
        raise ResultError(f"JSON longer than {limit} characters")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ResultError(f"not valid JSON: {str(exc)[:80]}") from exc
