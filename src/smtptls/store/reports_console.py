"""Read queries of the report console: activity per reporter in a window, failure groups
with first and last seen, count checks, overlapping reports, filtered report lists.

Every aggregate reads only *counted* rows: of reports sharing a (report-id,
organization) key exactly one is counted (``reports_sql.add_report_plan``), and the
summaries here sum that one, like :meth:`SqlReportStore.summary`. Days are UTC days
(``YYYY-MM-DD``); windows are inclusive of both ends. Shared by the SQLite and
PostgreSQL backends (``?`` placeholders, rewritten to ``%s`` by the latter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol, runtime_checkable

from smtptls.tlsrpt.report import POLICY_FETCH_TYPES

__all__ = ["ConsoleQueries", "ConsoleStore", "CountCheck", "FailureGroup", "RangeOverlap",
           "ReportFilter", "ReporterActivity", "ReporterLastSeen"]

#: Rows any one console query returns at most (the page renders a bounded table).
MAX_ROWS = 10_000
#: Pairs of overlapping reports listed at most per domain.
MAX_OVERLAPS = 100
#: Length of a report-id search string.
MAX_SEARCH = 200


@dataclass(frozen=True, slots=True)
class ReporterActivity:
    """Counted sessions of one reporter for one policy domain within a window."""

    policy_domain: str
    organization: str
    reports: int
    successful: int
    failed: int
    first_day: date
    last_day: date


@dataclass(frozen=True, slots=True)
class ReporterLastSeen:
    """All time: when a reporter last reported on a domain, and how often it did."""

    policy_domain: str
    organization: str
    last_day: date
    last_received: datetime
    days_reported: int
    first_day: date


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failure details grouped by (result type, receiving MX, reporter, policy type)."""

    result_type: str
    receiving_mx: str
    organization: str
    policy_type: str
    first_day: date
    last_day: date
    sessions: int
    reports: int


@dataclass(frozen=True, slots=True)
class CountCheck:
    """One policy whose failure details add up to more than its failed-session total.

    Legal (RFC 8460 §4.3: a session may fail for several reasons); ``inconsistent`` when
    one result type alone counts more sessions than the total, which no overlap explains.
    The policy-fetch types (:data:`~smtptls.tlsrpt.report.POLICY_FETCH_TYPES`) are left
    out: a failed refresh under a cached policy is reported for sessions that succeeded.
    """

    report_pk: int
    report_id: str
    organization: str
    day: date
    failed: int
    detail_sum: int
    largest_type: str
    largest_type_sum: int

    @property
    def inconsistent(self) -> bool:
        return self.largest_type not in POLICY_FETCH_TYPES \
            and self.largest_type_sum > self.failed


@dataclass(frozen=True, slots=True)
class RangeOverlap:
    """Two counted reports from one reporter whose date ranges overlap for one domain:
    their sessions may be counted twice."""

    organization: str
    first_pk: int
    first_report_id: str
    second_pk: int
    second_report_id: str


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """What the "all reports" list is narrowed to; empty fields do not narrow."""

    domain: str = ""
    organization: str = ""
    result_type: str = ""
    conflict: bool = False  # only reports in conflict
    search: str = ""  # part of a report-id
    start: date | None = None
    end: date | None = None


def _day(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _like(text: str) -> str:
    escaped = text[:MAX_SEARCH].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _domain(domain: str) -> str:
    return domain.strip().lower().rstrip(".")


class ConsoleQueries:
    """Mixed into :class:`~smtptls.store.reports_sql.SqlReportStore` (which has ``_read``)."""

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError  # pragma: no cover - supplied by the backend

    async def reporter_activity(self, *, start: date, end: date, domain: str | None = None
                                ) -> list[ReporterActivity]:
        where, params = "counted = 1 AND day >= ? AND day <= ?", [start.isoformat(),
                                                                   end.isoformat()]
        if domain is not None:
            where += " AND policy_domain = ?"
            params.append(_domain(domain))
        rows = await self._read(
            "SELECT policy_domain, organization, COUNT(DISTINCT report_pk), SUM(successful), "  # noqa: S608 - constant SQL
            f"SUM(failed), MIN(day), MAX(day) FROM policies WHERE {where} "
            "GROUP BY policy_domain, organization ORDER BY policy_domain, organization "
            f"LIMIT {MAX_ROWS}", params)
        return [ReporterActivity(r[0], r[1], int(r[2]), int(r[3] or 0), int(r[4] or 0),
                                 _day(r[5]), _day(r[6])) for r in rows]

    async def reporter_last_seen(self, *, domain: str | None = None) -> list[ReporterLastSeen]:
        where, params = "p.counted = 1", []
        if domain is not None:
            where += " AND p.policy_domain = ?"
            params.append(_domain(domain))
        rows = await self._read(
            "SELECT p.policy_domain, p.organization, MAX(p.day), MAX(r.received_at), "  # noqa: S608 - constant SQL
            "COUNT(DISTINCT p.day), MIN(p.day) FROM policies p JOIN reports r "
            f"ON r.id = p.report_pk WHERE {where} GROUP BY p.policy_domain, p.organization "
            f"ORDER BY p.policy_domain, p.organization LIMIT {MAX_ROWS}", params)
        return [ReporterLastSeen(r[0], r[1], _day(r[2]), datetime.fromisoformat(r[3]),
                                 int(r[4]), _day(r[5])) for r in rows]

    async def failure_groups(self, *, domain: str, start: date, end: date
                             ) -> list[FailureGroup]:
        rows = await self._read(
            "SELECT f.result_type, f.receiving_mx_hostname, f.organization, p.policy_type, "
            "MIN(f.day), MAX(f.day), SUM(f.failed_session_count), COUNT(DISTINCT f.report_pk) "
            "FROM failures f JOIN policies p ON p.id = f.policy_pk "
            "WHERE f.counted = 1 AND f.policy_domain = ? AND f.day >= ? AND f.day <= ? "
            "GROUP BY f.result_type, f.receiving_mx_hostname, f.organization, p.policy_type "
            "ORDER BY SUM(f.failed_session_count) DESC, MAX(f.day) DESC LIMIT ?",
            (_domain(domain), start.isoformat(), end.isoformat(), MAX_ROWS))
        return [FailureGroup(r[0], r[1], r[2], r[3], _day(r[4]), _day(r[5]), int(r[6]),
                             int(r[7])) for r in rows]

    async def failure_types(self, *, domain: str, start: date, end: date) -> dict[str, int]:
        """Counted failed sessions per result type in a window (for new-type alerts)."""
        rows = await self._read(
            "SELECT result_type, SUM(failed_session_count) FROM failures WHERE counted = 1 "
            "AND policy_domain = ? AND day >= ? AND day <= ? GROUP BY result_type",
            (_domain(domain), start.isoformat(), end.isoformat()))
        return {r[0]: int(r[1]) for r in rows}

    async def count_checks(self, *, domain: str, start: date, end: date) -> list[CountCheck]:
        """Policies whose failure details sum past their failed-session total."""
        rows = await self._read(
            "SELECT p.report_pk, r.report_id, p.organization, p.day, p.failed, t.result_type, "
            "t.n FROM policies p JOIN reports r ON r.id = p.report_pk JOIN "
            "(SELECT policy_pk, result_type, SUM(failed_session_count) AS n FROM failures "
            " WHERE counted = 1 AND policy_domain = ? AND day >= ? AND day <= ? "
            " GROUP BY policy_pk, result_type) t ON t.policy_pk = p.id "
            "WHERE p.counted = 1 ORDER BY p.day DESC, p.report_pk, t.result_type",
            (_domain(domain), start.isoformat(), end.isoformat()))
        by_policy: dict[tuple[int, str, str, str, int], dict[str, int]] = {}
        for pk, rid, org, day, failed, rt, n in rows:
            by_policy.setdefault((int(pk), rid, org, str(day), int(failed)), {})[rt] = int(n)
        out = []
        for (pk, rid, org, day, failed), types in by_policy.items():
            total = sum(types.values())
            if total > failed:
                # the largest session type decides; a fetch type only when alone
                sessions = {t: k for t, k in types.items() if t not in POLICY_FETCH_TYPES}
                rt, n = max((sessions or types).items(), key=lambda kv: (kv[1], kv[0]))
                out.append(CountCheck(pk, rid, org, _day(day), failed, total, rt, n))
        return out[:MAX_ROWS]

    async def range_overlaps(self, *, domain: str, start: date, end: date
                             ) -> list[RangeOverlap]:
        """Counted reports of one reporter for ``domain`` whose date ranges overlap."""
        rows = await self._read(
            "SELECT a.organization, a.id, a.report_id, b.id, b.report_id FROM reports a "
            "JOIN reports b ON b.organization = a.organization AND b.id > a.id "
            "AND a.start_ts < b.end_ts AND b.start_ts < a.end_ts "
            "WHERE a.counted = 1 AND b.counted = 1 AND a.day >= ? AND a.day <= ? "
            "AND EXISTS (SELECT 1 FROM policies pa WHERE pa.report_pk = a.id "
            "            AND pa.policy_domain = ?) "
            "AND EXISTS (SELECT 1 FROM policies pb WHERE pb.report_pk = b.id "
            "            AND pb.policy_domain = ?) "
            "ORDER BY a.id, b.id LIMIT ?",
            (start.isoformat(), end.isoformat(), _domain(domain), _domain(domain), MAX_OVERLAPS))
        return [RangeOverlap(r[0], int(r[1]), r[2], int(r[3]), r[4]) for r in rows]

    async def search_reports(self, where: ReportFilter, *, limit: int = 50, offset: int = 0
                             ) -> tuple[list[Any], int]:
        """One page of reports matching ``where`` (newest first) and how many match."""
        from smtptls.store.reports_sql import _REPORT_COLUMNS, _stored

        clauses, params = [], []
        if where.domain:
            clauses.append("id IN (SELECT report_pk FROM policies WHERE policy_domain = ?)")
            params.append(_domain(where.domain))
        if where.organization:
            clauses.append("organization = ?")
            params.append(where.organization[:MAX_SEARCH])
        if where.result_type:
            clauses.append("id IN (SELECT report_pk FROM failures WHERE result_type = ?)")
            params.append(where.result_type[:MAX_SEARCH])
        if where.conflict:
            clauses.append("conflict = 1")
        if where.search:
            clauses.append("report_id LIKE ? ESCAPE '\\'")
            params.append(_like(where.search))
        if where.start is not None:
            clauses.append("day >= ?")
            params.append(where.start.isoformat())
        if where.end is not None:
            clauses.append("day <= ?")
            params.append(where.end.isoformat())
        clause = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        total = await self._read(f"SELECT COUNT(*) FROM reports{clause}", params)  # noqa: S608 - constant SQL
        limit = max(0, min(int(limit), 1000))
        offset = max(0, int(offset))
        rows = await self._read(
            f"SELECT {_REPORT_COLUMNS} FROM reports{clause} "  # noqa: S608 - constant SQL
            "ORDER BY day DESC, id DESC LIMIT ? OFFSET ?", [*params, limit, offset])
        return [_stored(r) for r in rows], int(total[0][0])

    async def organizations(self) -> list[str]:
        rows = await self._read("SELECT DISTINCT organization FROM reports ORDER BY organization "
                                "LIMIT ?", (MAX_ROWS,))
        return [r[0] for r in rows]



@runtime_checkable
class ConsoleStore(Protocol):
    """A report store with the console's read queries (every SQL backend is one)."""

    async def reporter_activity(self, *, start: date, end: date, domain: str | None = None
                                ) -> list[ReporterActivity]: ...

    async def reporter_last_seen(self, *, domain: str | None = None
                                 ) -> list[ReporterLastSeen]: ...

    async def failure_groups(self, *, domain: str, start: date, end: date
                             ) -> list[FailureGroup]: ...

    async def failure_types(self, *, domain: str, start: date, end: date
                            ) -> dict[str, int]: ...

    async def count_checks(self, *, domain: str, start: date, end: date
                           ) -> list[CountCheck]: ...

    async def range_overlaps(self, *, domain: str, start: date, end: date
                             ) -> list[RangeOverlap]: ...

    async def search_reports(self, where: ReportFilter, *, limit: int = 50, offset: int = 0
                             ) -> tuple[list[Any], int]: ...

    async def organizations(self) -> list[str]: ...
