"""TLSRPT aggregate reports (RFC 8460 §4): the model, for receivers and senders.

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

Frozen values (:class:`Report`, :class:`PolicyResult`, :class:`FailureDetail`) and the
closed sets (:class:`PolicyType`, :class:`ResultType`). Reading a report's bytes is
:func:`smtptls.tlsrpt.reader.parse_report` (its bounds and the decompression are in
:mod:`smtptls.tlsrpt.decode`); :meth:`Report.parse` and :meth:`Report.from_dict` call it.

:meth:`Report.to_json` writes the canonical form: RFC 8460 member names in the order
of the §4.4 figure, dates as ``YYYY-MM-DDTHH:MM:SSZ``, ``mx-host`` always an array (the
§4.5 example's string form is erratum 6241), ``additional-information`` (never the
schema's value name ``additional-info-uri``), every array present. For every strictly
valid report ``parse_report(r.to_json(), strict=True) == r``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from smtptls.errors import ReportParseError
from smtptls.tlsrpt.decode import DEFAULT_MAX_DECOMPRESSED, DEFAULT_MAX_SIZE, MAX_STRINGS

__all__ = [
    "POLICY_FETCH_TYPES",
    "FailureDetail",
    "PolicyResult",
    "PolicyType",
    "Report",
    "ResultType",
    "format_datetime",
]

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


#: §4.3.2.2 types that describe the policy fetch rather than the sessions: a sender that
#: keeps delivering under its cached policy while the refresh fails (RFC 8461 §6) counts
#: the sessions it sent meanwhile under them, though none of those sessions failed.
POLICY_FETCH_TYPES = frozenset({ResultType.STS_POLICY_FETCH_ERROR,
                                ResultType.STS_POLICY_INVALID,
                                ResultType.STS_WEBPKI_INVALID})




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
        """Parse JSON or gzip-compressed JSON; see :func:`~smtptls.tlsrpt.reader.parse_report`."""
        from smtptls.tlsrpt.reader import parse_report  # the reader builds this model

        return parse_report(
            data, strict=strict, max_size=max_size, max_decompressed=max_decompressed
        )

    @classmethod
    def from_dict(cls, data: Any, *, strict: bool = False) -> Report:
        """Build a report from an already decoded JSON object (same rules as parsing)."""
        from smtptls.tlsrpt.reader import report_from_tree  # the reader builds this model

        return report_from_tree(data, strict=strict)

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
