"""Daily aggregation of session results into RFC 8460 §4 reports (pure).

RFC 8460 §4.1: a report covers one UTC day, 00:00:00Z to 23:59:59Z (the §4.5 example's
``date-range``), and §4 asks for one report per policy domain per period (H3) whose
``report-id`` is unique. We derive the report-id from (day, policy domain, submitter)
with a name-based UUID (RFC 4122 §4.3, version 5), so a retried delivery carries the
same id and the receiver de-duplicates it, while another day, domain or submitter never
collides.

Counting (§4.3, §4.4): every session counts once in ``summary``, as successful or
failed, under the policy it was evaluated against (``policies[]`` is keyed by policy
type, domain, policy strings and ``mx-host``). Each failure of a session counts once in
``failure-details``, grouped by (result-type, sending-mta-ip, receiving-mx-hostname,
receiving-mx-helo, receiving-ip, additional-information, failure-reason-code). A session
with several failures adds to several details; §4.3 allows result types to overlap.

:class:`DayTally` accumulates counts for one day (from results, or from pre-aggregated
counter rows a store keeps); :func:`build_reports` turns it into :class:`Report`
values, ordered deterministically so the same data always gives the same JSON.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from smtptls.errors import ReportError, ResultError
from smtptls.tlsrpt.report import FailureDetail, PolicyResult, PolicyType, Report, ResultType
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult, normalize_domain_name

__all__ = [
    "ContactDomainError",
    "DetailKey",
    "DayTally",
    "ReportIdentity",
    "aggregate",
    "build_reports",
    "day_range",
    "parse_day",
    "previous_day",
    "report_id",
    "report_uuid",
]

#: The namespace of our report-id UUIDs (a fixed, random UUID; never change it).
REPORT_ID_NAMESPACE = uuid.UUID("4f0f3cc2-8a5e-4c2b-9b7e-2e6e3b1f8460")
MAX_COUNT = 2**53 - 1  # I-JSON (RFC 7493 §2.2): integers exact in a double

# (result-type, sending-mta-ip, receiving-mx-hostname, receiving-mx-helo, receiving-ip,
#  additional-information, failure-reason-code)
DetailKey = tuple[str, str | None, str | None, str | None, str | None, str | None, str | None]

_ADDR_RE = re.compile(r"[^@\s]+@[^@\s]+")
_RESULT_TYPES = {t.value: t for t in ResultType}


class ContactDomainError(ReportError):
    """``contact-info`` is not in the submitter's domain (RFC 8460 §5.3)."""


@dataclass(frozen=True, slots=True)
class ReportIdentity:
    """Who sends the reports (RFC 8460 §4.4 ``organization-name``, ``contact-info``;
    §5.3 the submitter, the domain named in the Subject and ``TLS-Report-Submitter``).

    RFC 8460 §5.3: the ``TLS-Report-Submitter`` value MUST match the domain of the
    ``contact-info`` of the report body. We send the submitter as that header (and in
    the Subject, the file name and the report-id), so a contact address in any other
    domain, a parent or a subdomain of the submitter included, is refused.
    """

    organization_name: str
    contact_info: str
    submitter: str

    def __post_init__(self) -> None:
        try:
            submitter = normalize_domain_name(self.submitter, "submitter")
        except ResultError as exc:
            raise ReportError(str(exc)) from exc
        object.__setattr__(self, "submitter", submitter)
        if not isinstance(self.organization_name, str) or not self.organization_name.strip():
            # RFC 8460 §4.4: organization-name is required
            raise ReportError("organization-name must not be empty")
        if not isinstance(self.contact_info, str) or not _ADDR_RE.fullmatch(self.contact_info):
            # RFC 8460 §4.4: contact-info, an e-mail address (RFC 5322 addr-spec)
            raise ReportError(f"contact-info {str(self.contact_info)[:80]!r} is not an "
                              "e-mail address")
        contact_domain = self.contact_info.rpartition("@")[2].rstrip(".").lower()
        if contact_domain != submitter:
            # RFC 8460 §5.3: TLS-Report-Submitter MUST match the contact-info domain
            raise ContactDomainError(
                f"contact-info {self.contact_info[:80]!r} is not in the submitter's domain "
                f"{submitter!r}: RFC 8460 §5.3 requires TLS-Report-Submitter (the "
                "submitter) to match the contact-info domain; use an address "
                f"@{submitter} or set submitter = {contact_domain[:80]!r}")

    @classmethod
    def with_defaults(cls, submitter: str, organization_name: str = "",
                      contact_info: str = "") -> ReportIdentity:
        """Empty organization-name: the submitter; empty contact-info:
        ``postmaster@<submitter>`` (RFC 5321 §4.5.1 guarantees that address)."""
        domain = submitter.strip().rstrip(".").lower()
        return cls(organization_name or domain, contact_info or f"postmaster@{domain}", domain)


# --- days --------------------------------------------------------------------------------------


def parse_day(text: str) -> date:
    """``YYYY-MM-DD`` -> date; raises :class:`ReportError`."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d\d-\d\d", text.strip()):
        raise ReportError(f"{str(text)[:20]!r} is not a day (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ReportError(f"{text!r} is not a valid day") from exc


def day_range(day: date) -> tuple[datetime, datetime]:
    """RFC 8460 §4.1 / §4.5: the UTC day, ``00:00:00Z`` to ``23:59:59Z``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1, seconds=-1)


def previous_day(now: datetime) -> date:
    """The last complete UTC day before ``now`` (what a daily run reports on)."""
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ReportError("now must be a timezone-aware datetime")
    return (now.astimezone(UTC) - timedelta(days=1)).date()


def report_uuid(day: date, policy_domain: str, submitter: str) -> uuid.UUID:
    """The name-based UUID behind a report-id: stable for (day, domain, submitter)."""
    name = f"{submitter.lower().rstrip('.')}\n{policy_domain.lower().rstrip('.')}\n" \
           f"{day.isoformat()}"
    return uuid.uuid5(REPORT_ID_NAMESPACE, name)


def report_id(day: date, policy_domain: str, submitter: str) -> str:
    """RFC 8460 §4.4 ``report-id``, unique per (day, policy domain, submitter) and the
    same on every retry: ``<uuid>@<submitter>`` (usable as the Subject's
    ``Report-ID: <...>`` of §5.3, which has the form of a msg-id)."""
    return f"{report_uuid(day, policy_domain, submitter)}@{submitter.lower().rstrip('.')}"


# --- counting ------------------------------------------------------------------------------------


class DayTally:
    """Session and failure counts of one UTC day, per applied policy."""

    __slots__ = ("day", "details", "sessions")

    def __init__(self, day: date) -> None:
        self.day = day
        # policy -> [successful, failed]
        self.sessions: dict[AppliedPolicy, list[int]] = {}
        self.details: dict[AppliedPolicy, dict[DetailKey, int]] = {}

    def add(self, result: SessionResult, count: int = 1, *,
            default_sending_ip: str | None = None) -> None:
        """Count ``result`` (``count`` times: identical sessions folded by a caller)."""
        if result.time.date() != self.day:
            raise ReportError(f"result of {result.day} added to the tally of {self.day}")
        self.add_sessions(result.policy, 0 if result.failed else count,
                          count if result.failed else 0)
        for key in result.detail_keys(default_sending_ip):
            self.add_detail(result.policy, key, count)

    def add_sessions(self, policy: AppliedPolicy, successful: int, failed: int) -> None:
        """Counter rows as a store keeps them (RFC 8460 §4.4 ``summary``)."""
        entry = self.sessions.get(policy)
        if entry is None:
            self.sessions[policy] = entry = [0, 0]
        entry[0] = min(MAX_COUNT, entry[0] + successful)
        entry[1] = min(MAX_COUNT, entry[1] + failed)

    def add_detail(self, policy: AppliedPolicy, key: DetailKey, count: int) -> None:
        """A ``failure-details`` counter (RFC 8460 §4.4)."""
        if policy not in self.sessions:
            self.sessions[policy] = [0, 0]
        per = self.details.setdefault(policy, {})
        per[key] = min(MAX_COUNT, per.get(key, 0) + count)

    @property
    def policy_domains(self) -> list[str]:
        return sorted({p.policy_domain for p in self.sessions})

    def total(self) -> tuple[int, int]:
        ok = sum(v[0] for v in self.sessions.values())
        bad = sum(v[1] for v in self.sessions.values())
        return ok, bad


def _policy_sort_key(p: AppliedPolicy) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
    return (p.policy_domain, str(p.policy_type), p.policy_strings, p.mx_patterns)


def _detail_sort_key(item: tuple[DetailKey, int]) -> tuple[object, ...]:
    key, count = item
    return (-count, *(v or "" for v in key))


def _detail(key: DetailKey, count: int) -> FailureDetail:
    rtype, sending_ip, mx, helo, rip, info, code = key
    return FailureDetail(
        result_type=_RESULT_TYPES.get(rtype, rtype),
        failed_session_count=count,
        sending_mta_ip=sending_ip,
        receiving_mx_hostname=mx,
        receiving_mx_helo=helo,
        receiving_ip=rip,
        additional_information=info,
        failure_reason_code=code,
    )


def build_reports(tally: DayTally, identity: ReportIdentity, *,
                  domains: Iterable[str] | None = None) -> list[Report]:
    """One :class:`Report` per policy domain of ``tally`` (or of ``domains`` only),
    sorted by domain; policies and failure details in a stable order."""
    start, end = day_range(tally.day)
    wanted = None if domains is None else {d.lower().rstrip(".") for d in domains}
    by_domain: dict[str, list[AppliedPolicy]] = {}
    for policy in sorted(tally.sessions, key=_policy_sort_key):
        if wanted is None or policy.policy_domain in wanted:
            by_domain.setdefault(policy.policy_domain, []).append(policy)
    reports = []
    for domain in sorted(by_domain):
        entries = []
        for policy in by_domain[domain]:
            ok, bad = tally.sessions[policy]
            details = sorted(tally.details.get(policy, {}).items(), key=_detail_sort_key)
            entries.append(PolicyResult(
                policy_type=policy.policy_type,
                policy_domain=policy.policy_domain,
                total_successful_session_count=ok,
                total_failure_session_count=bad,
                # RFC 8460 §4.4: policy-string and mx-host only describe sts/tlsa policies
                policy_string=policy.policy_strings,
                mx_host=policy.mx_patterns if policy.policy_type is PolicyType.STS else (),
                failure_details=tuple(_detail(k, c) for k, c in details),
            ))
        reports.append(Report(
            organization_name=identity.organization_name,
            start_datetime=start,
            end_datetime=end,
            contact_info=identity.contact_info,
            report_id=report_id(tally.day, domain, identity.submitter),
            policies=tuple(entries),
        ))
    return reports


def aggregate(results: Iterable[SessionResult], day: date, identity: ReportIdentity, *,
              default_sending_ip: str | None = None) -> list[Report]:
    """The reports for ``day`` from an iterable of results (others days are skipped)."""
    tally = DayTally(day)
    for r in results:
        if r.time.date() == day:
            tally.add(r, default_sending_ip=default_sending_ip)
    return build_reports(tally, identity)
