"""TLSRPT report store: the values it keeps and the interface every backend offers.

(Over 800 lines: the stored values, their JSON forms and the one interface are kept
together so every backend reads its contract in one place.)

A domain owner receives RFC 8460 aggregate reports over HTTPS and mail (§5.3) and wants
to read them back: per policy domain, per day, successful and failed sessions and what
went wrong where. The store keeps, for every accepted report:

* one ``reports`` row (report-id, organization, date range, intake channel, DKIM
  result, parser warnings, the report JSON as received after decompression),
* one ``policies`` row per ``policies[]`` entry with its two summary counts (§4.4),
* one ``failures`` row per ``failure-details[]`` entry (§4.4),

and a ``quarantine`` row, with the reason and the raw bytes, for anything that arrived
but could not be parsed, so nothing received is ever lost.

RFC 8460 §4.4 makes the report-id unique per sender, but HTTPS intake is
unauthenticated (§5.4), so anyone may post a report under a real reporter's
*(report-id, organization-name)*. The key alone therefore never decides which report
wins: a resubmission of the same report (same key, same JSON value: member order and
whitespace aside, :func:`report_digest`) is a **duplicate**,
acknowledged and not stored twice; a different body under the same key is a
**conflict**: both are kept and marked, and exactly one of them is *counted* in the
summaries, chosen by how each arrived (:class:`Provenance`: a DKIM-verified mail
over an import over an unauthenticated POST or unsigned mail; the earliest among
equals). Failure details beyond ``max_failure_rows`` per report are folded into one
row per policy and result type with the exact session count (:meth:`ReportRecord.bounded`).

Everything here is pure (no I/O): :class:`ReportRecord` flattens a parsed report into
rows, :func:`build_summary` assembles aggregate query results, :func:`parse_since`
reads ``--since``. Backends: :mod:`smtptls.store.reports_sqlite` (the default) and
:mod:`smtptls.store.reports_postgres`; :func:`smtptls.store.open.open_report_store`
picks one from the configuration (this module imports no backend).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple, Protocol, runtime_checkable

import orjson

from smtptls.config import ReportsConfig
from smtptls.errors import ConfigError, ReportParseError

__all__ = [
    "AddResult",
    "AddStatus",
    "Channel",
    "DayBreakdown",
    "DkimStatus",
    "DomainOverview",
    "FailureRow",
    "Intake",
    "PolicyRow",
    "PreparedReport",
    "Provenance",
    "QuarantineEntry",
    "ReportRecord",
    "ReportStore",
    "StoreLimits",
    "StoredReport",
    "Summary",
    "build_summary",
    "counted_report",
    "parse_since",
    "report_digest",
]

# Bounds on what one report may contribute to the store (attacker-controlled data).
MAX_POLICIES = 10_000
MAX_FAILURES_PER_POLICY = 10_000
MAX_STRINGS = 1_000
MAX_TEXT = 4_096  # one stored string field
MAX_COUNT = 2**40  # one day's sessions; keeps every SUM() far from 64-bit overflow
MAX_REASON = 1_000
#: Distinct result types kept apart when the failure details of one policy beyond the
#: per-report row limit are folded together; further types go to AGGREGATE_OTHER.
MAX_AGGREGATE_TYPES = 32
AGGREGATE_OTHER = "other"

_DEFAULTS = ReportsConfig()  # the storage limits' defaults live in the config


class Channel(enum.StrEnum):
    """How a report reached us."""

    HTTPS = "https"  # RFC 8460 §5.4 POST (plain HTTP behind a proxy counts too)
    SMTP = "smtp"  # RFC 8460 §5.3 mail over SMTP
    LMTP = "lmtp"  # the same mail handed over by a local MTA
    IMPORT = "import"  # files, directories, maildir, mbox
    IMAP = "imap"  # report mail fetched from a mailbox (``reports fetch``)


class DkimStatus(enum.StrEnum):
    """Result of verifying the report mail's DKIM signature (RFC 8460 §3, RFC 6376)."""

    PASS = "pass"  # noqa: S105 - a DKIM result, not a password
    FAIL = "fail"  # signature present, does not verify (forged or altered)
    NONE = "none"  # mail without a DKIM-Signature
    TEMPERROR = "temperror"  # key lookup failed transiently
    PERMERROR = "permerror"  # malformed signature or key record
    NOT_CHECKED = "not-checked"  # not mail (HTTPS) or verification switched off


class Provenance(enum.StrEnum):
    """How far the origin of a report is established (decides conflicts)."""

    DKIM = "dkim"  # mail whose DKIM signature verified (RFC 8460 §5.3, RFC 6376)
    IMPORT = "import"  # a file an operator chose to import
    UNSIGNED_MAIL = "unsigned-mail"  # mail without a passing signature: anyone could send it
    HTTPS = "https"  # RFC 8460 §5.4 POST: unauthenticated by design


#: Higher wins when reports conflict; equals are decided by arrival order.
PROVENANCE_RANK = {Provenance.DKIM: 3, Provenance.IMPORT: 2, Provenance.UNSIGNED_MAIL: 1,
                   Provenance.HTTPS: 1}


def counted_report(candidates: Iterable[tuple[int, str]]) -> int:
    """Of the reports sharing one (report-id, organization), the pk counted in summaries.

    ``candidates`` are (pk, provenance); the best provenance wins, then the earliest.
    """
    return min(candidates, key=lambda c: (-PROVENANCE_RANK.get(c[1], 0), c[0]))[0]  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class Intake:
    """Where and when a report arrived; stored beside it."""

    channel: Channel
    received_at: datetime
    remote: str | None = None  # peer address, file path, ...
    submitter: str | None = None  # TLS-Report-Submitter header (RFC 8460 §5.3)
    dkim: DkimStatus = DkimStatus.NOT_CHECKED
    dkim_domain: str | None = None

    @property
    def provenance(self) -> Provenance:
        if self.dkim is DkimStatus.PASS:
            return Provenance.DKIM
        if self.channel is Channel.IMPORT:
            return Provenance.IMPORT
        if self.channel is Channel.HTTPS:
            return Provenance.HTTPS
        return Provenance.UNSIGNED_MAIL


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """What one report or the quarantine may take of the store (0: no limit)."""

    max_failure_rows: int = _DEFAULTS.max_failure_rows
    quarantine_max_bytes: int = _DEFAULTS.quarantine_max_bytes
    quarantine_max_age_days: int = _DEFAULTS.quarantine_max_age_days
    quarantine_excerpt: int = _DEFAULTS.quarantine_excerpt

    @classmethod
    def from_config(cls, config: ReportsConfig) -> StoreLimits:
        return cls(max_failure_rows=config.max_failure_rows,
                   quarantine_max_bytes=config.quarantine_max_bytes,
                   quarantine_max_age_days=config.quarantine_max_age_days,
                   quarantine_excerpt=config.quarantine_excerpt)


@dataclass(frozen=True, slots=True)
class FailureRow:
    """One ``failure-details`` entry (RFC 8460 §4.4)."""

    result_type: str
    failed_session_count: int
    sending_mta_ip: str = ""
    receiving_mx_hostname: str = ""
    receiving_mx_helo: str = ""
    receiving_ip: str = ""
    additional_information: str = ""
    failure_reason_code: str = ""

    def __reduce__(self) -> tuple[Any, ...]:
        # By position: cheaper to hand from a parser process than field by field.
        return (FailureRow, (self.result_type, self.failed_session_count, self.sending_mta_ip,
                             self.receiving_mx_hostname, self.receiving_mx_helo,
                             self.receiving_ip, self.additional_information,
                             self.failure_reason_code))


@dataclass(frozen=True, slots=True)
class PolicyRow:
    """One ``policies`` entry: the policy and its summary (RFC 8460 §4.3, §4.4)."""

    policy_type: str
    policy_domain: str
    successful: int
    failed: int
    policy_strings: tuple[str, ...] = ()
    mx_hosts: tuple[str, ...] = ()
    failures: tuple[FailureRow, ...] = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return (PolicyRow, (self.policy_type, self.policy_domain, self.successful, self.failed,
                            self.policy_strings, self.mx_hosts, self.failures))


def _text(value: Any, where: str, *, required: bool = False) -> str:
    if type(value) is str:  # the common case first: every report has dozens
        text = value if len(value) <= MAX_TEXT else value[:MAX_TEXT]
        return text if text.isascii() else _encodable(text)
    if value is None:
        if required:
            raise ReportParseError("missing", path=where)
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ReportParseError(f"expected a string, got {type(value).__name__}", path=where)
    return _encodable(str(value)[:MAX_TEXT])


_SURROGATE = re.compile("[\ud800-\udfff]")


def _encodable(text: str) -> str:
    # JSON may escape lone surrogates ("\ud800"), which no database can store as text:
    # they become U+FFFD, so one hostile report cannot fail the batch it arrives in.
    if text.isascii():
        return text
    return _SURROGATE.sub("\ufffd", text)


def _count(value: Any, where: str) -> int:
    # RFC 8460 §4.4: the counts are non-negative integers; a missing count (seen in the
    # wild, corpus QUIRKS 11) reads as 0 so the rest of the report is kept.
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReportParseError("expected an integer", path=where)
    if not 0 <= value <= MAX_COUNT:
        raise ReportParseError(f"count {value} out of range", path=where)
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):  # RFC 8460 erratum 6241: mx-host seen as a bare string
        return (value[:MAX_TEXT],)
    if not isinstance(value, list):
        raise ReportParseError("expected a list of strings", path=where)
    if len(value) > MAX_STRINGS:
        raise ReportParseError(f"more than {MAX_STRINGS} entries", path=where)
    out = tuple(value)
    for v in out:  # the common case: short ASCII strings, kept as they are
        if type(v) is not str or len(v) > MAX_TEXT or not v.isascii():
            return tuple(_text(v, f"{where}[{i}]") for i, v in enumerate(value))
    return out


def _parse_datetime(value: Any, where: str) -> datetime:
    text = _text(value, where, required=True).strip()
    try:
        # RFC 8460 §4.4: date-time per RFC 3339; Python 3.11 reads "Z" and offsets.
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ReportParseError(f"not an RFC 3339 date-time: {text[:64]!r}", path=where) from exc
    if parsed.tzinfo is None:  # corpus QUIRKS 1: no zone given; UTC is what was meant
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def utc_text(value: datetime) -> str:
    """``2024-05-01T00:00:00Z``: a time as the report store keeps it (RFC 3339, UTC)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year >= 1000:  # what strftime writes, read off isoformat (much cheaper)
        return value.isoformat(timespec="seconds")[:19] + "Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")  # strftime does not pad such years


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """A parsed report flattened into the rows the store keeps.

    Built from the RFC 8460 §4 JSON form (:meth:`from_dict`) or from a parsed
    :class:`smtptls.tlsrpt` report (:meth:`from_report`). ``raw_json`` is what is kept
    verbatim and what ``reports show --json`` prints back.
    """

    report_id: str
    organization: str
    start: datetime
    end: datetime
    contact_info: str
    policies: tuple[PolicyRow, ...]
    raw_json: str
    warnings: tuple[str, ...] = ()
    digest: str = ""  # report_digest(raw_json); filled by from_dict

    def __reduce__(self) -> tuple[Any, ...]:
        return (ReportRecord, (self.report_id, self.organization, self.start, self.end,
                               self.contact_info, self.policies, self.raw_json,
                               self.warnings, self.digest))

    @property
    def day(self) -> date:
        """The UTC day a report is filed under: the day its date range starts (§4.4)."""
        return self.start.date()

    @property
    def successful(self) -> int:
        return sum(p.successful for p in self.policies)

    @property
    def failed(self) -> int:
        return sum(p.failed for p in self.policies)

    def bounded(self, max_rows: int) -> ReportRecord:
        """This record with at most ``max_rows`` failure-detail rows kept as given.

        Entries beyond the limit (in report order) are folded, per policy, into one row
        per result type (at most MAX_AGGREGATE_TYPES, then AGGREGATE_OTHER) carrying the
        sum of their session counts, so every total stays exact. ``raw_json`` keeps the
        report as received. ``max_rows`` 0: no limit.
        """
        if max_rows <= 0 or sum(len(p.failures) for p in self.policies) <= max_rows:
            return self
        budget = max_rows
        policies = []
        for p in self.policies:
            kept, rest = p.failures[:budget], p.failures[budget:]
            budget -= len(kept)
            if rest:
                kept = kept + _fold(rest, max_rows)
            policies.append(PolicyRow(
                policy_type=p.policy_type, policy_domain=p.policy_domain,
                successful=p.successful, failed=p.failed, policy_strings=p.policy_strings,
                mx_hosts=p.mx_hosts, failures=kept))
        return ReportRecord(
            report_id=self.report_id, organization=self.organization, start=self.start,
            end=self.end, contact_info=self.contact_info, policies=tuple(policies),
            raw_json=self.raw_json, warnings=self.warnings, digest=self.digest)

    @classmethod
    def from_report(cls, report: Any, *, raw_json: str | None = None,
                    tree: Any = None) -> ReportRecord:
        """Flatten a report object of :mod:`smtptls.tlsrpt` (anything with ``to_dict``);
        ``tree``: see :func:`report_digest`.

        A :class:`~smtptls.tlsrpt.report.Report` is read member by member, with the rules
        :meth:`from_dict` applies to its JSON form (the same functions; a test compares
        both readings); anything else through its ``to_dict``.
        """
        from smtptls.tlsrpt.report import Report

        if type(report) is Report and raw_json is not None:
            return cls._from_model(report, raw_json, tree)
        try:
            data = report.to_dict()
        except Exception as exc:  # a model bug must not crash intake
            raise ReportParseError(f"report could not be serialized: {exc}") from exc
        warnings = _warning_texts(getattr(report, "warnings", ()) or ())
        return cls.from_dict(data, raw_json=raw_json, warnings=warnings, tree=tree)

    @classmethod
    def _from_model(cls, report: Any, raw_json: str, tree: Any) -> ReportRecord:
        _bound_policies(len(report.policies))
        report_id = _nonempty_id(_text(report.report_id, "$.report-id", required=True))
        policies = tuple(
            _policy_row_of(
                f"$.policies[{i}]", str(p.policy_type), p.policy_domain,
                p.total_successful_session_count, p.total_failure_session_count,
                list(p.policy_string), list(p.mx_host),
                [(str(d.result_type), d.failed_session_count, d.sending_mta_ip,
                  d.receiving_mx_hostname, d.receiving_mx_helo, d.receiving_ip,
                  d.additional_information, d.failure_reason_code)
                 for d in p.failure_details])
            for i, p in enumerate(report.policies))
        return cls._built(report_id, _text(report.organization_name, "$.organization-name"),
                          report.start_datetime.astimezone(UTC),
                          report.end_datetime.astimezone(UTC),
                          _text(report.contact_info, "$.contact-info"), policies, raw_json,
                          _warning_texts(report.warnings), tree)

    @classmethod
    def _built(cls, report_id: str, organization: str, start: datetime, end: datetime,
               contact_info: str, policies: tuple[PolicyRow, ...], raw_json: str,
               warnings: tuple[str, ...], tree: Any) -> ReportRecord:
        """The record of both readings: the JSON kept storable, and its digest."""
        raw_json = _encodable(raw_json)
        return cls(report_id=report_id, organization=organization, start=start, end=end,
                   contact_info=contact_info, policies=policies, raw_json=raw_json,
                   warnings=warnings, digest=report_digest(raw_json, tree=tree))

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        raw_json: str | None = None,
        warnings: Sequence[str] = (),
        tree: Any = None,
    ) -> ReportRecord:
        """Flatten the RFC 8460 §4 JSON object; raise :class:`ReportParseError`.

        ``tree``: ``raw_json`` already decoded (see :func:`report_digest`)."""
        if not isinstance(data, Mapping):
            raise ReportParseError("report is not a JSON object", path="$")
        # RFC 8460 §4.4: report-id and organization-name identify a report.
        report_id = _text(data.get("report-id"), "$.report-id", required=True)
        organization = _text(data.get("organization-name"), "$.organization-name")
        _nonempty_id(report_id)
        date_range = data.get("date-range")
        if not isinstance(date_range, Mapping):
            raise ReportParseError("missing or not an object", path="$.date-range")
        start = _parse_datetime(date_range.get("start-datetime"), "$.date-range.start-datetime")
        end = _parse_datetime(date_range.get("end-datetime"), "$.date-range.end-datetime")
        policies_raw = data.get("policies")
        if policies_raw is None:
            policies_raw = []
        if not isinstance(policies_raw, list):
            raise ReportParseError("expected a list", path="$.policies")
        _bound_policies(len(policies_raw))
        policies = tuple(_policy_row(p, f"$.policies[{i}]") for i, p in enumerate(policies_raw))
        if raw_json is None:
            try:
                raw_json = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise ReportParseError(f"report not serializable: {exc}") from exc
        return cls._built(report_id, organization, start, end,
                          _text(data.get("contact-info"), "$.contact-info"), policies,
                          raw_json, tuple(warnings), tree)


def _nonempty_id(report_id: str) -> str:
    # RFC 8460 §4.4: report-id (with organization-name) identifies a report.
    if not report_id:
        raise ReportParseError("empty report-id", path="$.report-id")
    return report_id


def _bound_policies(count: int) -> None:
    if count > MAX_POLICIES:
        raise ReportParseError(f"more than {MAX_POLICIES} policies", path="$.policies")


def _warning_texts(warnings: Iterable[Any]) -> tuple[str, ...]:
    return tuple(str(w)[:MAX_REASON] for w in warnings)


def _fold(rows: Sequence[FailureRow], max_rows: int) -> tuple[FailureRow, ...]:
    sums: dict[str, list[int]] = {}
    for f in rows:
        key = f.result_type
        if key not in sums and len(sums) >= MAX_AGGREGATE_TYPES:
            key = AGGREGATE_OTHER
        entry = sums.setdefault(key, [0, 0])
        entry[0] += f.failed_session_count
        entry[1] += 1
    return tuple(
        FailureRow(result_type=rt, failed_session_count=n,
                   additional_information=f"{k} failure-detail entries folded into one "
                   f"(more than {max_rows} in this report)")
        for rt, (n, k) in sums.items())


def report_digest(raw_json: str, *, tree: Any = None) -> str:
    """What makes two reports under one key the same report: their JSON value.

    The SHA-256 of the JSON re-encoded with sorted member names and no whitespace, so a
    byte-identical resubmission, or the same report pretty-printed by another channel,
    is a duplicate; any other difference is not. Text that does not decode as JSON is
    hashed as it is.

    ``tree``: ``raw_json`` as orjson decoded it with no member name given twice (the
    quick reading of :func:`smtptls.tlsrpt.reader.parse_report_body`). Without a float
    it equals the standard decoder's value (orjson reads integers beyond 64 bits as
    floats and refuses unpaired surrogates), and orjson then writes the bytes
    ``json.dumps`` would: that encoding is used, else the standard one.
    """
    if tree is not None and _float_free(tree):
        try:
            return hashlib.sha256(orjson.dumps(tree, option=orjson.OPT_SORT_KEYS)).hexdigest()
        except orjson.JSONEncodeError:  # nested past orjson's bound: the standard way
            pass
    try:
        text = json.dumps(json.loads(raw_json), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)
    except (ValueError, RecursionError):
        text = raw_json
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _float_free(tree: Any) -> bool:
    if type(tree) is float:
        return False
    stack = [tree] if type(tree) in (dict, list) else []
    while stack:  # only the containers are stacked
        container = stack.pop()
        for value in (container.values() if type(container) is dict else container):
            kind = type(value)
            if kind is float:
                return False
            if kind is dict or kind is list:
                stack.append(value)
    return True


def _policy_row(entry: Any, where: str) -> PolicyRow:
    if not isinstance(entry, Mapping):
        raise ReportParseError("expected an object", path=where)
    policy = entry.get("policy")
    if not isinstance(policy, Mapping):
        raise ReportParseError("missing or not an object", path=f"{where}.policy")
    summary = entry.get("summary")
    if summary is None:
        summary = {}
    if not isinstance(summary, Mapping):
        raise ReportParseError("not an object", path=f"{where}.summary")
    details = entry.get("failure-details")
    if details is None:
        details = []
    if not isinstance(details, list):
        raise ReportParseError("expected a list", path=f"{where}.failure-details")
    _bound_details(len(details), where)  # before the entries are read: bounded cost
    for i, d in enumerate(details):
        if not isinstance(d, Mapping):
            raise ReportParseError("expected an object", path=f"{where}.failure-details[{i}]")
    return _policy_row_of(
        where, policy.get("policy-type"), policy.get("policy-domain"),
        summary.get("total-successful-session-count"),
        summary.get("total-failure-session-count"),
        policy.get("policy-string"), policy.get("mx-host"),
        [(d.get("result-type"), d.get("failed-session-count"), d.get("sending-mta-ip"),
          d.get("receiving-mx-hostname"), d.get("receiving-mx-helo"), d.get("receiving-ip"),
          d.get("additional-information"), d.get("failure-reason-code")) for d in details])


def _policy_row_of(where: str, policy_type: Any, policy_domain: Any, successful: Any,
                   failed: Any, policy_strings: Any, mx_hosts: Any,
                   details: Sequence[tuple[Any, ...]]) -> PolicyRow:
    """One policy's row from its members' values (JSON form or report model alike):
    every rule of the row is here; ``where`` is its path, written only for an error."""
    _bound_details(len(details), where)
    return PolicyRow(
        # RFC 8460 §4.3: policy-type tlsa | sts | no-policy-found; unknown values kept.
        policy_type=_value_text(policy_type, where, ".policy.policy-type"),
        # Names are case-insensitive; trailing dots carry no meaning here.
        policy_domain=_value_text(policy_domain, where, ".policy.policy-domain")
        .strip()
        .lower()
        .rstrip("."),
        successful=_value_count(successful, where, ".summary.total-successful-session-count"),
        failed=_value_count(failed, where, ".summary.total-failure-session-count"),
        policy_strings=_strings(policy_strings, f"{where}.policy.policy-string"),
        mx_hosts=_strings(mx_hosts, f"{where}.policy.mx-host"),
        failures=tuple(_failure_row_of(where, i, *d) for i, d in enumerate(details)),
    )


def _bound_details(count: int, where: str) -> None:
    if count > MAX_FAILURES_PER_POLICY:
        raise ReportParseError(
            f"more than {MAX_FAILURES_PER_POLICY} entries", path=f"{where}.failure-details"
        )


def _value_text(value: Any, where: str, suffix: str) -> str:
    """``_text`` of a member's value; its path (``where + suffix``) is written only for
    an error, since nearly every value is a short ASCII string or absent."""
    if type(value) is str and len(value) <= MAX_TEXT and value.isascii():
        return value
    if value is None:
        return ""
    return _text(value, f"{where}{suffix}")


def _value_count(value: Any, where: str, suffix: str) -> int:
    """``_count`` of a member's value, the path written only for an error."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    return _count(value, f"{where}{suffix}")


def _failure_row_of(policy_where: str, i: int, result_type: Any, count: Any, sending_ip: Any,
                    mx_hostname: Any, helo: Any, receiving_ip: Any, info: Any, code: Any
                    ) -> FailureRow:
    where = f"{policy_where}.failure-details[{i}]"
    return FailureRow(
        # RFC 8460 §4.3: unknown result types are accepted and kept as given.
        result_type=_value_text(result_type, where, ".result-type") or "unknown",
        failed_session_count=_value_count(count, where, ".failed-session-count"),
        sending_mta_ip=_value_text(sending_ip, where, ".sending-mta-ip"),
        receiving_mx_hostname=_value_text(mx_hostname, where, ".receiving-mx-hostname")
        .lower().rstrip("."),
        receiving_mx_helo=_value_text(helo, where, ".receiving-mx-helo"),
        receiving_ip=_value_text(receiving_ip, where, ".receiving-ip"),
        additional_information=_value_text(info, where, ".additional-information"),
        failure_reason_code=_value_text(code, where, ".failure-reason-code"),
    )


class PreparedReport(NamedTuple):
    """A report's store rows, all but what its arrival and its row ids add to them.

    Made by :func:`smtptls.store.reports_sql.prepare_report` where the report was parsed
    (a parser process of ``reports import``), so that the process holding the store only
    inserts rows and is handed plain tuples instead of the record's objects.
    """

    report_id: str
    organization: str
    digest: str
    day: str
    head: tuple[Any, ...]  # the reports row up to its day
    tail: tuple[Any, ...]  # the reports row after the arrival: domains, counts, JSON
    # per policy: its row after (report_pk, idx), and its failures rows after the two pks
    policies: tuple[tuple[tuple[Any, ...], tuple[tuple[Any, ...], ...]], ...]
    max_failure_rows: int  # the limit the failures rows were bounded by


# --- what the store gives back ----------------------------------------------------------


class AddStatus(enum.StrEnum):
    """What :meth:`ReportStore.add_report` did with a report."""

    STORED = "stored"  # a new report
    DUPLICATE = "duplicate"  # the same report JSON was already stored under its key
    CONFLICT = "conflict"  # another body under the same key: both kept, marked


@dataclass(frozen=True, slots=True)
class AddResult:
    """Outcome of :meth:`ReportStore.add_report`.

    ``counted``: this report is the one of its key used in summaries;
    ``conflicts_with``: the other reports stored under the same key.
    """

    pk: int
    status: AddStatus
    counted: bool = True
    conflicts_with: tuple[int, ...] = ()

    @property
    def created(self) -> bool:
        return self.status is not AddStatus.DUPLICATE


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A report as listed and shown (``reports list`` / ``show``)."""

    pk: int
    report_id: str
    organization: str
    start: datetime
    end: datetime
    received_at: datetime
    channel: str
    dkim: str
    dkim_domain: str
    submitter: str
    remote: str
    contact_info: str
    policy_domains: tuple[str, ...]
    successful: int
    failed: int
    warnings: tuple[str, ...] = ()
    provenance: str = ""
    conflict: bool = False  # another report has the same (report-id, organization)
    counted: bool = True  # the one of its key used in summaries
    raw_json: str | None = None  # only filled by get_report
    policies: tuple[PolicyRow, ...] = ()  # only filled by get_report (one page of failures)
    failure_rows: int = 0  # failure-detail rows stored for it; only filled by get_report
    conflicts_with: tuple[int, ...] = ()  # only filled by get_report

    def report_json(self) -> tuple[Any, str | None]:
        """The stored report JSON decoded, and None; or None and why it cannot be."""
        if not self.raw_json:
            return None, None
        try:
            return json.loads(self.raw_json), None
        except (ValueError, RecursionError) as exc:
            return None, f"stored report JSON does not decode: {str(exc)[:200]}"

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.pk,
            "report_id": self.report_id,
            "organization": self.organization,
            "start": utc_text(self.start),
            "end": utc_text(self.end),
            "received_at": utc_text(self.received_at),
            "channel": self.channel,
            "dkim": self.dkim,
            "dkim_domain": self.dkim_domain or None,
            "submitter": self.submitter or None,
            "policy_domains": list(self.policy_domains),
            "successful_sessions": self.successful,
            "failed_sessions": self.failed,
            "warnings": list(self.warnings),
            "provenance": self.provenance or None,
            "conflict": self.conflict,
            "counted": self.counted,
        }
        if full:
            out["conflicts_with"] = list(self.conflicts_with)
            report, error = self.report_json()
            out["report"] = report
            if error is not None:  # never raise on what is stored; show it as text
                out["report_error"] = error
                out["report_text"] = self.raw_json
        return out


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """Something received that could not be stored as a report, kept with the reason."""

    pk: int
    received_at: datetime
    channel: str
    remote: str
    reason: str
    size: int  # of the submission as received
    sha256: str  # of the submission as received
    excerpt: bool = False  # only the first bytes are kept (beyond the quarantine limits)
    raw: bytes | None = None  # only filled by get_quarantine

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "received_at": utc_text(self.received_at),
            "channel": self.channel,
            "remote": self.remote or None,
            "reason": self.reason,
            "size": self.size,
            "sha256": self.sha256,
            "excerpt_only": self.excerpt,
        }


@dataclass(frozen=True, slots=True)
class DomainOverview:
    """One line of the dashboard index."""

    policy_domain: str
    reports: int
    successful: int
    failed: int
    first_day: date
    last_day: date


@dataclass(frozen=True, slots=True)
class DayBreakdown:
    """Sessions of one UTC day, with the failures broken down four ways."""

    day: date
    reports: int
    successful: int
    failed: int
    by_result_type: dict[str, int] = field(default_factory=dict)
    by_receiving_mx: dict[str, int] = field(default_factory=dict)
    by_sending_ip: dict[str, int] = field(default_factory=dict)
    by_organization: dict[str, dict[str, int]] = field(default_factory=dict)
    # (result_type, receiving_mx, organization, sending_ip, sessions), largest first
    failures: tuple[tuple[str, str, str, str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "date": self.day.isoformat(),
            "reports": self.reports,
            "successful_sessions": self.successful,
            "failed_sessions": self.failed,
            "failures_by_result_type": dict(self.by_result_type),
            "failures_by_receiving_mx": dict(self.by_receiving_mx),
            "failures_by_sending_ip": dict(self.by_sending_ip),
            "by_organization": {k: dict(v) for k, v in self.by_organization.items()},
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """``reports summary``: per-day totals and breakdowns, plus the failure matrix."""

    domain: str | None
    since: date | None
    days: tuple[DayBreakdown, ...]
    # (result_type, receiving_mx, organization, sending_ip, sessions), largest first
    failures: tuple[tuple[str, str, str, str, int], ...]

    @property
    def successful(self) -> int:
        return sum(d.successful for d in self.days)

    @property
    def failed(self) -> int:
        return sum(d.failed for d in self.days)

    @property
    def reports(self) -> int:
        return sum(d.reports for d in self.days)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "since": self.since.isoformat() if self.since else None,
            "totals": {
                "reports": self.reports,
                "successful_sessions": self.successful,
                "failed_sessions": self.failed,
            },
            "days": [d.to_dict() for d in self.days],
            "failures": [
                {
                    "result_type": rt,
                    "receiving_mx_hostname": mx or None,
                    "organization": org,
                    "sending_mta_ip": ip or None,
                    "sessions": n,
                }
                for rt, mx, org, ip, n in self.failures
            ],
        }


CSV_COLUMNS = (
    "date",
    "record",
    "organization",
    "successful_sessions",
    "failed_sessions",
    "result_type",
    "receiving_mx_hostname",
    "sending_mta_ip",
    "sessions",
)


def summary_csv_rows(summary: Summary) -> list[tuple[str, ...]]:
    """Flat rows for ``reports summary --csv`` (schema in docs/reports.md).

    Per day: one ``summary`` row per reporting organisation (session totals from the
    reports' ``summary`` objects), then one ``failure`` row per (result type, receiving
    MX, organisation, sending IP) from the ``failure-details``.
    """
    rows: list[tuple[str, ...]] = []
    for day in summary.days:
        d = day.day.isoformat()
        for org, counts in day.by_organization.items():
            rows.append((d, "summary", org, str(counts.get("successful", 0)),
                         str(counts.get("failed", 0)), "", "", "", ""))
        for rt, mx, org, ip, n in day.failures:
            rows.append((d, "failure", org, "", "", rt, mx, ip, str(n)))
    return rows


def build_summary(
    *,
    domain: str | None,
    since: date | None,
    day_rows: Iterable[tuple[Any, str, int, int, int]],
    failure_rows: Iterable[tuple[Any, str, str, str, str, int]],
) -> Summary:
    """Assemble a :class:`Summary` from two aggregate queries.

    ``day_rows``: (day, organization, reports, successful, failed);
    ``failure_rows``: (day, organization, result_type, receiving_mx, sending_ip, sessions).
    """
    days: dict[date, dict[str, Any]] = {}

    def slot(day_value: Any) -> dict[str, Any]:
        d = _as_date(day_value)
        return days.setdefault(d, {"reports": 0, "successful": 0, "failed": 0, "rt": {},
                                   "mx": {}, "ip": {}, "org": {}, "matrix": {}})

    for day_value, org, reports, ok, bad in day_rows:
        s = slot(day_value)
        s["reports"] += int(reports)
        s["successful"] += int(ok)
        s["failed"] += int(bad)
        o = s["org"].setdefault(org, {"reports": 0, "successful": 0, "failed": 0})
        o["reports"] += int(reports)
        o["successful"] += int(ok)
        o["failed"] += int(bad)
    matrix: dict[tuple[str, str, str, str], int] = {}
    for day_value, org, rt, mx, ip, n in failure_rows:
        s = slot(day_value)
        n = int(n)
        for key, value in (("rt", rt), ("mx", mx), ("ip", ip)):
            s[key][value] = s[key].get(value, 0) + n
        o = s["org"].setdefault(org, {"reports": 0, "successful": 0, "failed": 0})
        o["failure_details"] = o.get("failure_details", 0) + n
        k = (rt, mx, org, ip)
        matrix[k] = matrix.get(k, 0) + n
        s["matrix"][k] = s["matrix"].get(k, 0) + n

    def ordered(counts: dict[str, int]) -> dict[str, int]:
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def flat(m: dict[tuple[str, str, str, str], int]) -> tuple[tuple[str, str, str, str, int], ...]:
        return tuple((rt, mx, org, ip, n) for (rt, mx, org, ip), n
                     in sorted(m.items(), key=lambda kv: (-kv[1], kv[0])))

    out = tuple(
        DayBreakdown(
            day=d,
            reports=s["reports"],
            successful=s["successful"],
            failed=s["failed"],
            by_result_type=ordered(s["rt"]),
            by_receiving_mx=ordered(s["mx"]),
            by_sending_ip=ordered(s["ip"]),
            by_organization=dict(sorted(s["org"].items())),
            failures=flat(s["matrix"]),
        )
        for d, s in sorted(days.items())
    )
    return Summary(domain=domain, since=since, days=out, failures=flat(matrix))


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


_SINCE = re.compile(r"^\s*(\d{1,5})\s*([dhw])\s*$", re.IGNORECASE)


def parse_since(text: str, *, now: datetime) -> date:
    """``30d``, ``12h``, ``2w`` before ``now``, or an ISO date ``2024-05-01``.

    Raises :class:`ConfigError` for anything else. ``now`` is passed in (no clock here).
    """
    if not isinstance(text, str) or len(text) > 32:
        raise ConfigError(f"bad --since value {str(text)[:32]!r}")
    m = _SINCE.match(text)
    if m:
        amount, unit = int(m.group(1)), m.group(2).lower()
        delta = {"h": timedelta(hours=amount), "d": timedelta(days=amount),
                 "w": timedelta(weeks=amount)}[unit]
        try:
            return (now.astimezone(UTC) - delta).date()
        except OverflowError as exc:
            raise ConfigError(f"--since {text!r} reaches before year 1") from exc
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ConfigError(
            f"bad --since value {text!r}: use e.g. 30d, 12h, 2w or 2024-05-01"
        ) from exc


# --- the interface -----------------------------------------------------------------------


@runtime_checkable
class ReportStore(Protocol):
    """What every report store backend offers (all methods are coroutines).

    Every method raises :class:`~smtptls.errors.StoreError` when the backend fails.
    :meth:`add_report`, :meth:`add_reports` (a batch, one commit) and the quarantine
    writes return only after the transaction is committed, so a caller may acknowledge
    the sender (or count the report as imported) right after.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_report(self, record: ReportRecord, intake: Intake) -> AddResult: ...

    async def add_reports(self, items: Sequence[tuple[ReportRecord | PreparedReport, Intake]]
                          ) -> list[AddResult]:
        """Store every item in ONE transaction (one commit, one fsync), each as
        :meth:`add_report` would, in order; the results in item order. All or nothing:
        on :class:`~smtptls.errors.StoreError` none of the batch is stored. An item may
        be a report's rows already prepared (:func:`~smtptls.store.reports_sql.prepare_report`
        under this store's limits)."""
        ...

    async def add_quarantine(self, raw: bytes, reason: str, intake: Intake) -> int: ...

    async def add_quarantines(self, items: Sequence[tuple[bytes, str, Intake]]) -> list[int]:
        """Quarantine every (raw, reason, intake) in one transaction; the pks in order."""
        ...

    async def list_reports(
        self, *, domain: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[StoredReport]: ...

    async def get_report(self, key: str | int, *, failures_offset: int = 0,
                         failures_limit: int | None = None) -> StoredReport | None: ...

    async def domains(self) -> list[DomainOverview]: ...

    async def summary(self, *, domain: str | None = None, since: date | None = None,
                      until: date | None = None) -> Summary: ...

    # The console's read queries: store/reports_console.py (ConsoleStore), in every
    # SQL backend.

    async def list_quarantine(
        self, *, limit: int = 100, offset: int = 0
    ) -> list[QuarantineEntry]: ...

    async def get_quarantine(self, pk: int) -> QuarantineEntry | None: ...

    async def counts(self) -> dict[str, int]: ...

