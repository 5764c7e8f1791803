"""The libtlsrpt datagram protocol: what Postfix >= 3.10 sends about each delivery attempt.

sys4's libtlsrpt (the C library Postfix links for ``smtp_tlsrpt_enable``) writes one JSON
object per delivery request and sends it, fire and forget, as one datagram to a UNIX
domain socket (``AF_UNIX``/``SOCK_DGRAM``; ``MSG_DONTWAIT``, so a full socket drops it).
The object, as documented by libtlsrpt::

    {"dpv": "1",                    datagram protocol version (absent in early releases)
     "d": "example.com",            the recipient domain of the delivery request
     "pr": "v=TLSRPTv1; rua=...",   the TLSRPT policy record the MTA found
     "policies": [{
        "policy-type": 1 | 2 | 9,   TLSA, STS, no policy found
        "policy-domain": "...",     may be absent (no-policy-found)
        "policy-string": [...],     absent when empty
        "mx-host": [...],           absent when empty
        "failure-details": [{       absent when empty
            "c": 201..306,          failure code (below)
            "s": sending MTA IP, "n": receiving MX host name, "h": receiving MX HELO,
            "r": receiving IP, "a": additional information, "f": failure reason code
            (each optional)}],
        "t": 0..,                   number of failure details
        "f": 0 | 1                  final result of the policy: success / failure
     }]}

Failure codes (libtlsrpt ``tlsrpt_failure_t``) and the RFC 8460 §4.3 result types::

    201 starttls-not-supported      301 sts-policy-fetch-error   304 tlsa-invalid
    202 certificate-host-mismatch   302 sts-policy-invalid       305 dnssec-invalid
    203 certificate-not-trusted     303 sts-webpki-invalid       306 dane-required
    204 certificate-expired
    205 validation-failure

:func:`decode_datagram` reads one datagram into a :class:`Datagram` and
:meth:`Datagram.to_results` turns it into :class:`~smtptls.tlsrptsend.results.SessionResult`
values (one per policy: each policy block is one session's outcome under that policy).
:func:`encode_datagram` writes the same JSON, written from the description above; the
tests use it to play an MTA. Pure: no sockets here.

Tolerance, as libtlsrpt's own collector shows: a missing ``dpv`` is accepted; a ``dpv``
other than ``"1"`` is refused (the format may have changed); ``t`` disagreeing with
the number of failure details is accepted (the details count); unknown failure codes
become ``validation-failure`` with ``failure-reason-code`` ``libtlsrpt-<code>``, so
the session is still counted.

What Postfix 3.10 (libtlsrpt 0.5) really sends, as captured in the lab, and how it is read:

* ``dpv`` is absent;
* ``h`` is the receiving MX's whole multi-line EHLO reply
  (``"250-mx1.example\r\n250-SIZE ...\r\n250 HELP"``); RFC 8460 §4.4's
  ``receiving-mx-helo`` is the name the server greeted with (its example is a host
  name, and a report field holds no control characters), so the first line's name is
  kept (:func:`helo_name`);
* for a TLSA policy, ``policy-domain`` is the TLSA base domain (the MX host name,
  ``"mx1.example"``), while the report goes to the recipient domain ``d`` whose TLSRPT
  record ``pr`` is: the result's policy domain is ``d``, as the Postfix log reader
  (:mod:`smtptls.tlsrptsend.postfix_log`) decides for DANE too, so both sources give one
  report per recipient domain; the MX host is in the failure details
  (``receiving-mx-hostname``).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from smtptls.errors import DatagramError, ResultError
from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.results import AppliedPolicy, Failure, SessionResult

__all__ = [
    "MAX_DATAGRAM",
    "CachedDecoder",
    "PROTOCOL_VERSION",
    "Datagram",
    "DatagramFailure",
    "DatagramPolicy",
    "FailureCode",
    "LibPolicyType",
    "datagram_for",
    "decode_datagram",
    "encode_datagram",
    "helo_name",
]

#: Largest datagram read (libtlsrpt composes in memory; 64 KiB covers its buffers).
MAX_DATAGRAM = 256 * 1024
#: The datagram protocol version this decoder understands.
PROTOCOL_VERSION = "1"
MAX_POLICIES = 16
MAX_DETAILS = 64
MAX_STRINGS = 256


class LibPolicyType(enum.IntEnum):
    """libtlsrpt ``tlsrpt_policy_type_t``."""

    TLSA = 1
    STS = 2
    NO_POLICY_FOUND = 9

    @property
    def policy_type(self) -> PolicyType:
        return {1: PolicyType.TLSA, 2: PolicyType.STS, 9: PolicyType.NO_POLICY_FOUND}[self.value]

    @classmethod
    def from_policy_type(cls, policy_type: PolicyType) -> LibPolicyType:
        return {PolicyType.TLSA: cls.TLSA, PolicyType.STS: cls.STS,
                PolicyType.NO_POLICY_FOUND: cls.NO_POLICY_FOUND}[policy_type]


class FailureCode(enum.IntEnum):
    """libtlsrpt ``tlsrpt_failure_t``: one code per RFC 8460 §4.3 result type."""

    STARTTLS_NOT_SUPPORTED = 201
    CERTIFICATE_HOST_MISMATCH = 202
    CERTIFICATE_NOT_TRUSTED = 203
    CERTIFICATE_EXPIRED = 204
    VALIDATION_FAILURE = 205
    STS_POLICY_FETCH_ERROR = 301
    STS_POLICY_INVALID = 302
    STS_WEBPKI_INVALID = 303
    TLSA_INVALID = 304
    DNSSEC_INVALID = 305
    DANE_REQUIRED = 306

    @property
    def result_type(self) -> ResultType:
        return ResultType(self.name.lower().replace("_", "-"))

    @classmethod
    def from_result_type(cls, result_type: ResultType) -> FailureCode:
        return cls[str(result_type).upper().replace("-", "_")]


# --- the values -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatagramFailure:
    """One ``failure-details`` entry of a datagram; ``code`` may be unknown (an int)."""

    code: FailureCode | int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    additional_information: str | None = None
    failure_reason_code: str | None = None

    def to_failure(self) -> Failure:
        """The RFC 8460 failure; an unknown code is kept in ``failure-reason-code``;
        an EHLO reply in ``h`` becomes the name it greets with (:func:`helo_name`)."""
        if isinstance(self.code, FailureCode):
            result_type: ResultType | str = self.code.result_type
            reason = self.failure_reason_code
        else:
            result_type = ResultType.VALIDATION_FAILURE
            reason = self.failure_reason_code or f"libtlsrpt-{self.code}"
        return Failure(
            result_type,
            receiving_mx_hostname=self.receiving_mx_hostname or None,
            receiving_ip=self.receiving_ip or None,
            sending_mta_ip=self.sending_mta_ip or None,
            receiving_mx_helo=helo_name(self.receiving_mx_helo),
            additional_information=self.additional_information or None,
            failure_reason_code=reason or None,
        )


def helo_name(reply: str | None) -> str | None:
    """RFC 8460 §4.4 ``receiving-mx-helo`` from what libtlsrpt sends as ``h``.

    Postfix 3.10 passes the server's whole EHLO reply (``250-name greeting\r\n250-SIZE
    ...``); the field is the name the server greets with: the first word of the first
    line after its reply code. A bare name passes unchanged; nothing left is ``None``.
    """
    if not reply:
        return None
    first = reply.splitlines()[0] if reply.splitlines() else ""
    if len(first) >= 4 and first[:3].isdigit() and first[3] in " -":
        first = first[4:]
    words = first.split()
    return words[0] if words else None


@dataclass(frozen=True, slots=True)
class DatagramPolicy:
    """One ``policies`` entry: a policy and the outcome of the session under it."""

    policy_type: LibPolicyType
    policy_domain: str | None = None
    policy_strings: tuple[str, ...] = ()
    mx_patterns: tuple[str, ...] = ()
    failures: tuple[DatagramFailure, ...] = ()
    failed: bool = False
    failure_count: int | None = field(default=None, compare=False)  # "t" as sent


@dataclass(frozen=True, slots=True)
class Datagram:
    """One delivery attempt as reported through libtlsrpt."""

    domain: str
    tlsrpt_record: str
    policies: tuple[DatagramPolicy, ...]
    version: str | None = PROTOCOL_VERSION

    def to_results(self, now: datetime) -> list[SessionResult]:
        """One :class:`SessionResult` per policy block, timed ``now`` (receipt time).

        The policy domain is the block's ``policy-domain`` (for TLSA: the datagram's
        domain, see the module docstring), else the datagram's domain
        (libtlsrpt leaves it out for ``no-policy-found``; RFC 8460 §1.3: the recipient
        domain). Raises :class:`DatagramError` when a value does not make a result.
        """
        out = []
        for i, p in enumerate(self.policies):
            try:
                ptype = p.policy_type.policy_type
                keep = ptype is not PolicyType.NO_POLICY_FOUND
                # Postfix names the TLSA base domain (the MX host); the report is the
                # recipient domain's (module docstring)
                domain = self.domain if ptype is PolicyType.TLSA else p.policy_domain
                policy = AppliedPolicy(
                    ptype, domain or self.domain,
                    policy_strings=p.policy_strings if keep else (),
                    mx_patterns=p.mx_patterns if keep else (),
                )
                failures = tuple(f.to_failure() for f in p.failures)
                out.append(SessionResult(now, policy, failures=failures,
                                         failed=p.failed or bool(failures)))
            except ResultError as exc:
                raise DatagramError(f"policies[{i}]: {exc}") from exc
        return out


# --- decoding -------------------------------------------------------------------------------


def _str(value: Any, where: str, *, limit: int = 8192) -> str:
    if not isinstance(value, str):
        raise DatagramError(f"{where}: expected a string, got {type(value).__name__}")
    if len(value) > limit:
        raise DatagramError(f"{where}: longer than {limit} characters")
    return value


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return _str(value, f"{where}.{key}", limit=1024)


def _strings(obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = obj.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DatagramError(f"{where}.{key}: expected an array")
    if len(value) > MAX_STRINGS:
        raise DatagramError(f"{where}.{key}: more than {MAX_STRINGS} entries")
    return tuple(_str(v, f"{where}.{key}[{i}]") for i, v in enumerate(value))


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatagramError(f"{where}: expected an integer, got {str(value)[:20]!r}")
    if not -(2**31) <= value < 2**31:
        raise DatagramError(f"{where}: out of range")
    return value


def _failure(obj: Any, where: str) -> DatagramFailure:
    if not isinstance(obj, Mapping):
        raise DatagramError(f"{where}: expected an object")
    if "c" not in obj:
        raise DatagramError(f"{where}: no failure code 'c'")
    code_value = _int(obj["c"], f"{where}.c")
    try:
        code: FailureCode | int = FailureCode(code_value)
    except ValueError:
        code = code_value
    return DatagramFailure(
        code=code,
        sending_mta_ip=_opt_str(obj, "s", where),
        receiving_mx_hostname=_opt_str(obj, "n", where),
        receiving_mx_helo=_opt_str(obj, "h", where),
        receiving_ip=_opt_str(obj, "r", where),
        additional_information=_opt_str(obj, "a", where),
        failure_reason_code=_opt_str(obj, "f", where),
    )


def _policy(obj: Any, where: str) -> DatagramPolicy:
    if not isinstance(obj, Mapping):
        raise DatagramError(f"{where}: expected an object")
    if "policy-type" not in obj:
        raise DatagramError(f"{where}: no policy-type")
    ptype_value = _int(obj["policy-type"], f"{where}.policy-type")
    try:
        ptype = LibPolicyType(ptype_value)
    except ValueError as exc:
        raise DatagramError(f"{where}.policy-type: unknown value {ptype_value}") from exc
    details = obj.get("failure-details")
    if details is None:
        details = []
    if not isinstance(details, list):
        raise DatagramError(f"{where}.failure-details: expected an array")
    if len(details) > MAX_DETAILS:
        raise DatagramError(f"{where}.failure-details: more than {MAX_DETAILS} entries")
    failures = tuple(_failure(d, f"{where}.failure-details[{i}]") for i, d in enumerate(details))
    final = obj.get("f")
    if final is None:
        failed = bool(failures)
    else:
        # libtlsrpt: 0 TLSRPT_FINAL_SUCCESS, 1 TLSRPT_FINAL_FAILURE
        failed = _int(final, f"{where}.f") != 0
    count = obj.get("t")
    domain = obj.get("policy-domain")
    return DatagramPolicy(
        policy_type=ptype,
        policy_domain=None if domain is None
        else _str(domain, f"{where}.policy-domain", limit=1024),
        policy_strings=_strings(obj, "policy-string", where),
        mx_patterns=_strings(obj, "mx-host", where),
        failures=failures,
        failed=failed,
        failure_count=None if count is None else _int(count, f"{where}.t"),
    )


def decode_datagram(data: bytes | str) -> Datagram:
    """Decode one libtlsrpt datagram; raises :class:`DatagramError` saying where it is bad."""
    if isinstance(data, bytes | bytearray | memoryview):
        raw = bytes(data)
        if len(raw) > MAX_DATAGRAM:
            raise DatagramError(f"datagram longer than {MAX_DATAGRAM} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DatagramError("datagram is not UTF-8") from error
    elif isinstance(data, str):
        text = data
        if len(text) > MAX_DATAGRAM:
            raise DatagramError(f"datagram longer than {MAX_DATAGRAM} characters")
    else:
        raise DatagramError(f"a datagram is bytes, not {type(data).__name__}")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise DatagramError(f"datagram is not JSON: {str(exc)[:80]}") from exc
    if not isinstance(obj, dict):
        raise DatagramError("datagram is not a JSON object")
    version = obj.get("dpv")
    if version is not None:
        version = _str(version, "dpv", limit=16)
        if version != PROTOCOL_VERSION:
            raise DatagramError(f"datagram protocol version {version!r} is not "
                                f"{PROTOCOL_VERSION!r}")
    for key in ("d", "policies"):
        if key not in obj:
            raise DatagramError(f"datagram has no {key!r}")
    domain = _str(obj["d"], "d", limit=1024)
    record = obj.get("pr")
    record = "" if record is None else _str(record, "pr", limit=4096)
    policies = obj["policies"]
    if not isinstance(policies, list) or not policies:
        raise DatagramError("policies: expected a non-empty array")
    if len(policies) > MAX_POLICIES:
        raise DatagramError(f"policies: more than {MAX_POLICIES} entries")
    return Datagram(
        domain=domain,
        tlsrpt_record=record,
        policies=tuple(_policy(p, f"policies[{i}]") for i, p in enumerate(policies)),
        version=version,
    )


class CachedDecoder:
    """:func:`decode_datagram` + :meth:`Datagram.to_results` with a bounded memory.

    An MTA sends the same bytes again and again (same domain, same policy, same
    outcome). Identical datagrams of one UTC day give the same results, which only
    differ in their time stamp, and a report only counts per day; so a repeated
    datagram reuses the results decoded the first time that day (the time of the first
    one). Decoding errors are not cached.
    """

    def __init__(self, size: int = 4096) -> None:
        self.size = max(1, size)
        self._cache: dict[tuple[bytes, Any], list[SessionResult]] = {}
        self.hits = 0
        self.misses = 0

    def results(self, data: bytes, now: datetime) -> list[SessionResult]:
        key = (data, now.date())
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        results = decode_datagram(data).to_results(now)
        if len(self._cache) >= self.size:
            self._cache.clear()  # cheap and bounded; a steady MTA refills it at once
        self._cache[key] = results
        return results


# --- encoding (an MTA's side, for tests and tools) ------------------------------------------------


def _encode_failure(f: DatagramFailure) -> dict[str, Any]:
    out: dict[str, Any] = {"c": int(f.code)}
    for key, value in (("s", f.sending_mta_ip), ("n", f.receiving_mx_hostname),
                       ("h", f.receiving_mx_helo), ("r", f.receiving_ip),
                       ("a", f.additional_information), ("f", f.failure_reason_code)):
        if value is not None:
            out[key] = value
    return out


def encode_datagram(datagram: Datagram) -> bytes:
    """The JSON datagram for ``datagram`` as libtlsrpt lays it out (empty arrays left
    out, ``t`` the number of failure details, ``f`` 0 or 1)."""
    if not isinstance(datagram, Datagram):
        raise DatagramError("encode_datagram needs a Datagram")
    obj: dict[str, Any] = {}
    if datagram.version is not None:
        obj["dpv"] = datagram.version
    obj["d"] = datagram.domain
    obj["pr"] = datagram.tlsrpt_record
    policies = []
    for p in datagram.policies:
        entry: dict[str, Any] = {"policy-type": int(p.policy_type)}
        if p.policy_domain is not None:
            entry["policy-domain"] = p.policy_domain
        if p.policy_strings:
            entry["policy-string"] = list(p.policy_strings)
        if p.mx_patterns:
            entry["mx-host"] = list(p.mx_patterns)
        if p.failures:
            entry["failure-details"] = [_encode_failure(f) for f in p.failures]
        entry["t"] = len(p.failures) if p.failure_count is None else p.failure_count
        entry["f"] = 1 if p.failed else 0
        policies.append(entry)
    obj["policies"] = policies
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def datagram_for(result: SessionResult, *, tlsrpt_record: str = "") -> Datagram:
    """The datagram an MTA would send for ``result`` (one policy block)."""
    p = result.policy
    failures = tuple(
        DatagramFailure(
            code=FailureCode.from_result_type(f.result_type)
            if isinstance(f.result_type, ResultType) else FailureCode.VALIDATION_FAILURE,
            sending_mta_ip=f.sending_mta_ip or result.sending_mta_ip,
            receiving_mx_hostname=f.receiving_mx_hostname or result.mx_host,
            receiving_mx_helo=f.receiving_mx_helo,
            receiving_ip=f.receiving_ip or result.receiving_ip,
            additional_information=f.additional_information,
            failure_reason_code=f.failure_reason_code,
        )
        for f in result.failures
    )
    block = DatagramPolicy(
        policy_type=LibPolicyType.from_policy_type(p.policy_type),
        policy_domain=p.policy_domain,
        policy_strings=p.policy_strings,
        mx_patterns=p.mx_patterns,
        failures=failures,
        failed=bool(result.failed),
    )
    return Datagram(p.policy_domain, tlsrpt_record, (block,))
