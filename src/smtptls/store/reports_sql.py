"""SQL shared by the SQLite and PostgreSQL report stores.

Both backends run the same schema shape and the same queries (written with ``?``
placeholders; the PostgreSQL backend rewrites them to ``%s``). Timestamps are stored as
RFC 3339 UTC text (``2024-05-01T00:00:00Z``) and days as ``YYYY-MM-DD``, which sort
and compare the same way in both databases. ``policies`` and ``failures`` carry the
report's day, organization and policy domain so that the summaries are single-table
aggregates over an index.
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from smtptls.store.reports_base import (
    DomainOverview,
    FailureRow,
    Intake,
    PolicyRow,
    QuarantineEntry,
    ReportRecord,
    StoredReport,
    Summary,
    build_summary,
)

SCHEMA_VERSION = 1

# {pk} is the dialect's auto-increment primary key, {blob} its binary type.
SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    id {pk},
    report_id TEXT NOT NULL,
    organization TEXT NOT NULL,
    contact_info TEXT NOT NULL,
    start_ts TEXT NOT NULL,
    end_ts TEXT NOT NULL,
    day TEXT NOT NULL,
    received_at TEXT NOT NULL,
    channel TEXT NOT NULL,
    remote TEXT NOT NULL,
    submitter TEXT NOT NULL,
    dkim TEXT NOT NULL,
    dkim_domain TEXT NOT NULL,
    policy_domains TEXT NOT NULL,
    successful BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    warnings TEXT NOT NULL,
    raw_json TEXT NOT NULL,
    UNIQUE (report_id, organization)
);
CREATE INDEX IF NOT EXISTS reports_day ON reports (day);
CREATE TABLE IF NOT EXISTS policies (
    id {pk},
    report_pk BIGINT NOT NULL REFERENCES reports (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    day TEXT NOT NULL,
    organization TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    policy_strings TEXT NOT NULL,
    mx_hosts TEXT NOT NULL,
    successful BIGINT NOT NULL,
    failed BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS policies_domain_day ON policies (policy_domain, day);
CREATE INDEX IF NOT EXISTS policies_report ON policies (report_pk);
CREATE TABLE IF NOT EXISTS failures (
    id {pk},
    policy_pk BIGINT NOT NULL REFERENCES policies (id) ON DELETE CASCADE,
    report_pk BIGINT NOT NULL,
    idx INTEGER NOT NULL,
    day TEXT NOT NULL,
    organization TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    result_type TEXT NOT NULL,
    sending_mta_ip TEXT NOT NULL,
    receiving_mx_hostname TEXT NOT NULL,
    receiving_mx_helo TEXT NOT NULL,
    receiving_ip TEXT NOT NULL,
    failed_session_count BIGINT NOT NULL,
    additional_information TEXT NOT NULL,
    failure_reason_code TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_domain_day ON failures (policy_domain, day);
CREATE INDEX IF NOT EXISTS failures_policy ON failures (policy_pk);
CREATE TABLE IF NOT EXISTS quarantine (
    id {pk},
    received_at TEXT NOT NULL,
    channel TEXT NOT NULL,
    remote TEXT NOT NULL,
    reason TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    raw {blob} NOT NULL
);
"""

INSERT_REPORT = """
INSERT INTO reports (report_id, organization, contact_info, start_ts, end_ts, day,
    received_at, channel, remote, submitter, dkim, dkim_domain, policy_domains,
    successful, failed, warnings, raw_json)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (report_id, organization) DO NOTHING
RETURNING id
"""
SELECT_REPORT_PK = "SELECT id FROM reports WHERE report_id = ? AND organization = ?"
INSERT_POLICY = """
INSERT INTO policies (report_pk, idx, day, organization, policy_type, policy_domain,
    policy_strings, mx_hosts, successful, failed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id
"""
INSERT_FAILURE = """
INSERT INTO failures (policy_pk, report_pk, idx, day, organization, policy_domain,
    result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip,
    failed_session_count, additional_information, failure_reason_code)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
INSERT_QUARANTINE = """
INSERT INTO quarantine (received_at, channel, remote, reason, size, sha256, raw)
VALUES (?, ?, ?, ?, ?, ?, ?)
RETURNING id
"""

_REPORT_COLUMNS = (
    "id, report_id, organization, start_ts, end_ts, received_at, channel, dkim, "
    "dkim_domain, submitter, remote, contact_info, policy_domains, successful, failed, "
    "warnings"
)


def ts_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def report_params(record: ReportRecord, intake: Intake) -> tuple[Any, ...]:
    domains = sorted({p.policy_domain for p in record.policies})
    return (
        record.report_id,
        record.organization,
        record.contact_info,
        ts_text(record.start),
        ts_text(record.end),
        record.day.isoformat(),
        ts_text(intake.received_at),
        str(intake.channel),
        (intake.remote or "")[:1000],
        (intake.submitter or "")[:1000],
        str(intake.dkim),
        (intake.dkim_domain or "")[:255],
        json.dumps(domains),
        record.successful,
        record.failed,
        json.dumps(list(record.warnings)),
        record.raw_json,
    )


def policy_params(record: ReportRecord, report_pk: int, idx: int, p: PolicyRow) -> tuple:
    return (
        report_pk, idx, record.day.isoformat(), record.organization, p.policy_type,
        p.policy_domain, json.dumps(list(p.policy_strings)), json.dumps(list(p.mx_hosts)),
        p.successful, p.failed,
    )


def failure_params(
    record: ReportRecord, report_pk: int, policy_pk: int, policy: PolicyRow, idx: int,
    f: FailureRow,
) -> tuple:
    return (
        policy_pk, report_pk, idx, record.day.isoformat(), record.organization,
        policy.policy_domain, f.result_type, f.sending_mta_ip, f.receiving_mx_hostname,
        f.receiving_mx_helo, f.receiving_ip, f.failed_session_count,
        f.additional_information, f.failure_reason_code,
    )


def quarantine_params(raw: bytes, reason: str, intake: Intake) -> tuple:
    return (
        ts_text(intake.received_at), str(intake.channel), (intake.remote or "")[:1000],
        reason[:1000], len(raw), hashlib.sha256(raw).hexdigest(), raw,
    )


def _stored(row: Sequence[Any]) -> StoredReport:
    return StoredReport(
        pk=int(row[0]),
        report_id=row[1],
        organization=row[2],
        start=_ts(row[3]),
        end=_ts(row[4]),
        received_at=_ts(row[5]),
        channel=row[6],
        dkim=row[7],
        dkim_domain=row[8],
        submitter=row[9],
        remote=row[10],
        contact_info=row[11],
        policy_domains=tuple(json.loads(row[12])),
        successful=int(row[13]),
        failed=int(row[14]),
        warnings=tuple(json.loads(row[15])),
    )


def _quarantined(row: Sequence[Any], raw: bytes | None = None) -> QuarantineEntry:
    return QuarantineEntry(
        pk=int(row[0]), received_at=_ts(row[1]), channel=row[2], remote=row[3],
        reason=row[4], size=int(row[5]), sha256=row[6], raw=raw,
    )


def _bounded(limit: int, offset: int) -> tuple[int, int]:
    return max(0, min(int(limit), 10_000)), max(0, int(offset))


class SqlReportStore(abc.ABC):
    """The queries of :class:`~smtptls.store.reports_base.ReportStore`, backend-neutral.

    A backend supplies :meth:`_read` (a read-only query returning rows) and the two
    committed writes.
    """

    @abc.abstractmethod
    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def list_reports(
        self, *, domain: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[StoredReport]:
        limit, offset = _bounded(limit, offset)
        if domain is None:
            rows = await self._read(
                f"SELECT {_REPORT_COLUMNS} FROM reports ORDER BY day DESC, id DESC "  # noqa: S608 - constant SQL
                "LIMIT ? OFFSET ?", (limit, offset))
        else:
            rows = await self._read(
                f"SELECT {_REPORT_COLUMNS} FROM reports WHERE id IN "  # noqa: S608 - constant SQL
                "(SELECT report_pk FROM policies WHERE policy_domain = ?) "
                "ORDER BY day DESC, id DESC LIMIT ? OFFSET ?",
                (_domain(domain), limit, offset))
        return [_stored(r) for r in rows]

    async def get_report(self, key: str | int) -> StoredReport | None:
        if isinstance(key, int):
            rows = await self._read(
                f"SELECT {_REPORT_COLUMNS}, raw_json FROM reports WHERE id = ?", (key,))  # noqa: S608 - constant SQL
        else:
            rows = await self._read(
                f"SELECT {_REPORT_COLUMNS}, raw_json FROM reports WHERE report_id = ? "  # noqa: S608 - constant SQL
                "ORDER BY id DESC LIMIT 1", (key,))
        if not rows:
            return None
        row = rows[0]
        pk = int(row[0])
        prow = await self._read(
            "SELECT id, policy_type, policy_domain, policy_strings, mx_hosts, successful, "
            "failed FROM policies WHERE report_pk = ? ORDER BY idx", (pk,))
        frows = await self._read(
            "SELECT policy_pk, result_type, failed_session_count, sending_mta_ip, "
            "receiving_mx_hostname, receiving_mx_helo, receiving_ip, additional_information, "
            "failure_reason_code FROM failures WHERE report_pk = ? ORDER BY policy_pk, idx",
            (pk,))
        by_policy: dict[int, list[FailureRow]] = {}
        for f in frows:
            by_policy.setdefault(int(f[0]), []).append(FailureRow(
                result_type=f[1], failed_session_count=int(f[2]), sending_mta_ip=f[3],
                receiving_mx_hostname=f[4], receiving_mx_helo=f[5], receiving_ip=f[6],
                additional_information=f[7], failure_reason_code=f[8]))
        policies = tuple(
            PolicyRow(policy_type=p[1], policy_domain=p[2],
                      policy_strings=tuple(json.loads(p[3])), mx_hosts=tuple(json.loads(p[4])),
                      successful=int(p[5]), failed=int(p[6]),
                      failures=tuple(by_policy.get(int(p[0]), ())))
            for p in prow
        )
        base = _stored(row)
        return StoredReport(**{
            **{f: getattr(base, f) for f in StoredReport.__dataclass_fields__},
            "raw_json": row[-1], "policies": policies,
        })

    async def domains(self) -> list[DomainOverview]:
        rows = await self._read(
            "SELECT policy_domain, COUNT(DISTINCT report_pk), SUM(successful), SUM(failed), "
            "MIN(day), MAX(day) FROM policies GROUP BY policy_domain ORDER BY policy_domain")
        return [
            DomainOverview(policy_domain=r[0], reports=int(r[1]), successful=int(r[2] or 0),
                           failed=int(r[3] or 0), first_day=date.fromisoformat(r[4]),
                           last_day=date.fromisoformat(r[5]))
            for r in rows
        ]

    async def summary(self, *, domain: str | None = None, since: date | None = None) -> Summary:
        where, params = [], []
        if domain is not None:
            where.append("policy_domain = ?")
            params.append(_domain(domain))
        if since is not None:
            where.append("day >= ?")
            params.append(since.isoformat())
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        day_rows = await self._read(
            "SELECT day, organization, COUNT(DISTINCT report_pk), SUM(successful), "  # noqa: S608 - constant SQL
            f"SUM(failed) FROM policies{clause} GROUP BY day, organization", params)
        failure_rows = await self._read(
            "SELECT day, organization, result_type, receiving_mx_hostname, sending_mta_ip, "  # noqa: S608 - constant SQL
            f"SUM(failed_session_count) FROM failures{clause} GROUP BY day, organization, "
            "result_type, receiving_mx_hostname, sending_mta_ip", params)
        return build_summary(domain=_domain(domain) if domain is not None else None,
                             since=since, day_rows=day_rows, failure_rows=failure_rows)

    async def list_quarantine(self, *, limit: int = 100, offset: int = 0) -> list[QuarantineEntry]:
        limit, offset = _bounded(limit, offset)
        rows = await self._read(
            "SELECT id, received_at, channel, remote, reason, size, sha256 FROM quarantine "
            "ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset))
        return [_quarantined(r) for r in rows]

    async def get_quarantine(self, pk: int) -> QuarantineEntry | None:
        rows = await self._read(
            "SELECT id, received_at, channel, remote, reason, size, sha256, raw FROM quarantine "
            "WHERE id = ?", (int(pk),))
        if not rows:
            return None
        return _quarantined(rows[0], bytes(rows[0][7]))

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for table in ("reports", "policies", "failures", "quarantine"):
            rows = await self._read(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
            out[table] = int(rows[0][0])
        return out


def _domain(domain: str) -> str:
    return domain.strip().lower().rstrip(".")
