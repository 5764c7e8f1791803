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
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import orjson

from smtptls.store.reports_base import (
    PROVENANCE_RANK,
    AddResult,
    AddStatus,
    Channel,
    DomainOverview,
    FailureRow,
    Intake,
    PolicyRow,
    PreparedReport,
    QuarantineEntry,
    ReportRecord,
    StoredReport,
    StoreLimits,
    Summary,
    build_summary,
    counted_report,
    report_digest,
    utc_text,
)
from smtptls.store.reports_console import ConsoleQueries

T = TypeVar("T")

SCHEMA_VERSION = 2

# Version 2: a report is identified by (report-id, organization, report_digest), so
# a different body under a known key is kept beside the first (a conflict) instead of
# being dropped; ``provenance`` says how each arrived and ``counted`` which one of a key
# the summaries use (carried by its policies and failures rows too, so the summaries
# stay single-table aggregates). Quarantine rows say whether only an excerpt is kept,
# and ``quarantine_usage`` keeps the bytes of whole quarantined submissions.

# {pk} is the dialect's auto-increment primary key, {blob} its binary type.
REPORTS_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
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
    body_sha256 TEXT NOT NULL DEFAULT '',
    provenance TEXT NOT NULL DEFAULT '',
    conflict INTEGER NOT NULL DEFAULT 0,
    counted INTEGER NOT NULL DEFAULT 1
)
"""
# Version-1 columns, in order (what a migration copies).
V1_REPORT_COLUMNS = (
    "id, report_id, organization, contact_info, start_ts, end_ts, day, received_at, "
    "channel, remote, submitter, dkim, dkim_domain, policy_domains, successful, failed, "
    "warnings, raw_json"
)
# How a version-1 report arrived, read from its channel and DKIM result.
V1_PROVENANCE = (
    "CASE WHEN dkim = 'pass' THEN 'dkim' WHEN channel = 'https' THEN 'https' "
    "WHEN channel = 'import' THEN 'import' ELSE 'unsigned-mail' END"
)

TABLES = REPORTS_TABLE.replace("{name}", "reports") + """;
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
    failed BIGINT NOT NULL,
    counted INTEGER NOT NULL DEFAULT 1
);
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
    failure_reason_code TEXT NOT NULL,
    counted INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS quarantine (
    id {pk},
    received_at TEXT NOT NULL,
    channel TEXT NOT NULL,
    remote TEXT NOT NULL,
    reason TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    raw {blob} NOT NULL,
    excerpt INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS quarantine_usage (
    id INTEGER PRIMARY KEY,
    kept BIGINT NOT NULL
)
"""

# After the tables (and, for an older database, after its migration).
INDEXES = """
CREATE UNIQUE INDEX IF NOT EXISTS reports_identity
    ON reports (report_id, organization, body_sha256);
CREATE INDEX IF NOT EXISTS reports_day ON reports (day);
CREATE INDEX IF NOT EXISTS policies_domain_day ON policies (policy_domain, day);
CREATE INDEX IF NOT EXISTS policies_report ON policies (report_pk);
CREATE INDEX IF NOT EXISTS failures_domain_day ON failures (policy_domain, day);
CREATE INDEX IF NOT EXISTS failures_policy ON failures (policy_pk);
CREATE INDEX IF NOT EXISTS failures_report ON failures (report_pk);
CREATE INDEX IF NOT EXISTS quarantine_whole ON quarantine (excerpt, received_at);
CREATE INDEX IF NOT EXISTS quarantine_sha256 ON quarantine (sha256);
INSERT INTO quarantine_usage (id, kept)
    SELECT 1, COALESCE(SUM(LENGTH(raw)), 0) FROM quarantine WHERE excerpt = 0
    ON CONFLICT (id) DO NOTHING
"""

# Reports of a migrated database still without their digest (filled in batches).
MISSING_DIGESTS = "SELECT id, raw_json FROM reports WHERE body_sha256 = '' ORDER BY id LIMIT ?"
SET_DIGEST = "UPDATE reports SET body_sha256 = ? WHERE id = ?"

# Columns a version-1 database lacks beside the reports ones (added in place).
V2_ADDED_COLUMNS = (
    ("policies", "counted INTEGER NOT NULL DEFAULT 1"),
    ("failures", "counted INTEGER NOT NULL DEFAULT 1"),
    ("quarantine", "excerpt INTEGER NOT NULL DEFAULT 0"),
)

INSERT_REPORT = """
INSERT INTO reports (report_id, organization, contact_info, start_ts, end_ts, day,
    received_at, channel, remote, submitter, dkim, dkim_domain, policy_domains,
    successful, failed, warnings, raw_json, body_sha256, provenance, conflict, counted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1)
ON CONFLICT (report_id, organization, body_sha256) DO NOTHING
RETURNING id
"""
# The keys already stored among a batch's report ids (one query for many reports).
KNOWN_KEYS = "SELECT DISTINCT report_id, organization FROM reports WHERE report_id IN ({marks})"
KNOWN_KEYS_STEP = 500  # report ids per query: under every SQLite's limit of 999 parameters
SELECT_SAME_KEY = ("SELECT id, provenance, counted FROM reports "
                   "WHERE report_id = ? AND organization = ? ORDER BY id")
SELECT_SAME_BODY = ("SELECT id, provenance FROM reports "
                    "WHERE report_id = ? AND organization = ? AND body_sha256 = ?")
UPDATE_ARRIVAL = ("UPDATE reports SET provenance = ?, channel = ?, remote = ?, submitter = ?, "
                  "dkim = ?, dkim_domain = ? WHERE id = ?")
MARK_CONFLICT = ("UPDATE reports SET conflict = 1 "
                 "WHERE report_id = ? AND organization = ? AND conflict = 0")
SET_COUNTED = (
    "UPDATE reports SET counted = ? WHERE id = ?",
    "UPDATE policies SET counted = ? WHERE report_pk = ?",
    "UPDATE failures SET counted = ? WHERE report_pk = ?",
)
INSERT_POLICY = """
INSERT INTO policies (report_pk, idx, day, organization, policy_type, policy_domain,
    policy_strings, mx_hosts, successful, failed, counted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id
"""
INSERT_FAILURE = """
INSERT INTO failures (policy_pk, report_pk, idx, day, organization, policy_domain,
    result_type, sending_mta_ip, receiving_mx_hostname, receiving_mx_helo, receiving_ip,
    failed_session_count, additional_information, failure_reason_code, counted)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
INSERT_QUARANTINE = """
INSERT INTO quarantine (received_at, channel, remote, reason, size, sha256, raw, excerpt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id
"""
# Bytes freed when whole entries older than a cut-off keep only an excerpt of ? bytes.
AGED_QUARANTINE_BYTES = (
    "SELECT COALESCE(SUM(CASE WHEN LENGTH(raw) > ? THEN LENGTH(raw) - ? ELSE 0 END), 0) "
    "FROM quarantine WHERE excerpt = 0 AND received_at < ?")
AGE_QUARANTINE = ("UPDATE quarantine SET raw = SUBSTR(raw, 1, ?), excerpt = 1 "
                  "WHERE excerpt = 0 AND received_at < ?")
# An import run again finds what it quarantined the first time (same bytes, same source,
# same reason) instead of keeping it twice.
SELECT_SAME_QUARANTINE = ("SELECT id FROM quarantine WHERE sha256 = ? AND channel = ? "
                          "AND remote = ? AND reason = ? ORDER BY id LIMIT 1")
# Row-locking in PostgreSQL: concurrent receivers take turns on the quarantine total.
ADD_QUARANTINE_USAGE = "UPDATE quarantine_usage SET kept = kept + ? WHERE id = 1 RETURNING kept"


@dataclass(frozen=True, slots=True)
class Query:
    """One statement of a write plan: ``many`` runs it once per parameter tuple."""

    sql: str
    params: Sequence[Any] = ()
    many: bool = False


#: A write plan: yields queries, receives each one's rows, returns its result.
Plan = Generator[Query, list[tuple[Any, ...]], T]


def prepare_report(record: ReportRecord, limits: StoreLimits) -> PreparedReport:
    """The rows :func:`add_report_plan` inserts for ``record`` (pure: no I/O)."""
    day = record.day.isoformat()
    domains = sorted({p.policy_domain for p in record.policies})
    head = (record.report_id, record.organization, record.contact_info,
            utc_text(record.start), utc_text(record.end), day)
    tail = (_json_list(domains), record.successful, record.failed,
            _json_list(record.warnings), record.raw_json)
    bounded = record.bounded(limits.max_failure_rows)
    org = bounded.organization
    policies = tuple(
        ((day, org, p.policy_type, p.policy_domain, _json_list(p.policy_strings),
          _json_list(p.mx_hosts), p.successful, p.failed),
         tuple((j, day, org, p.policy_domain, f.result_type, f.sending_mta_ip,
                f.receiving_mx_hostname, f.receiving_mx_helo, f.receiving_ip,
                f.failed_session_count, f.additional_information, f.failure_reason_code)
               for j, f in enumerate(p.failures)))
        for p in bounded.policies)
    return PreparedReport(record.report_id, record.organization,
                          record.digest or report_digest(record.raw_json), day, head, tail,
                          policies, limits.max_failure_rows)


def add_report_plan(record: ReportRecord | PreparedReport, intake: Intake,
                    limits: StoreLimits, *, new_key: bool = False) -> Plan[AddResult]:
    """Store one report inside the caller's transaction (the backend commits).

    A byte-identical report under a known key is a duplicate (a better provenance is
    noted on the stored one); a different body under a known key is stored too and every
    report of the key is marked as a conflict. One report per key is counted:
    :func:`counted_report` decides, and the policies and failures rows follow.
    ``new_key``: the caller has found, in this transaction and under the key's lock, that
    no report has this key; the report is then the key's only one (stored, counted) and
    the key's other reports are not read.
    """
    if isinstance(record, PreparedReport):
        rows_of = record
        if rows_of.max_failure_rows != limits.max_failure_rows:
            raise ValueError("report rows prepared under other store limits")
    else:
        rows_of = prepare_report(record, limits)
    digest = rows_of.digest
    key = (rows_of.report_id, rows_of.organization)
    provenance = intake.provenance
    rows = yield Query(INSERT_REPORT, rows_of.head + (utc_text(intake.received_at),)
                       + _arrival(intake) + rows_of.tail + (digest, str(provenance)))
    if not rows:
        same = yield Query(SELECT_SAME_BODY, (*key, digest))
        pk = int(same[0][0])
        if PROVENANCE_RANK.get(provenance, 0) > PROVENANCE_RANK.get(same[0][1], 0):
            # The same report again, better authenticated (e.g. DKIM-signed mail after
            # a POST): say so, and let it count if its key is in conflict.
            yield Query(UPDATE_ARRIVAL, (str(provenance), *_arrival(intake), pk))
        group = yield Query(SELECT_SAME_KEY, key)
        winner = yield from _recount(group, pk, None)
        others = tuple(int(g[0]) for g in group if int(g[0]) != pk)
        return AddResult(pk, AddStatus.DUPLICATE, counted=winner == pk, conflicts_with=others)
    pk = int(rows[0][0])
    if new_key:
        group: list[tuple[Any, ...]] = [(pk, str(provenance), 1)]
        winner = pk
    else:
        group = yield Query(SELECT_SAME_KEY, key)
        winner = yield from _recount(group, pk, pk)
    counted = int(winner == pk)
    for i, (policy, failures) in enumerate(rows_of.policies):
        prow = yield Query(INSERT_POLICY, (pk, i, *policy, counted))
        if failures:
            ids = (int(prow[0][0]), pk)
            yield Query(INSERT_FAILURE, [(*ids, *f, counted) for f in failures], many=True)
    others = tuple(int(g[0]) for g in group if int(g[0]) != pk)
    if not others:
        return AddResult(pk, AddStatus.STORED, counted=True)
    yield Query(MARK_CONFLICT, key)
    return AddResult(pk, AddStatus.CONFLICT, counted=winner == pk, conflicts_with=others)


def add_reports_plan(items: Sequence[tuple[ReportRecord | PreparedReport, Intake]],
                     limits: StoreLimits) -> Plan[list[AddResult]]:
    """Store many reports inside one transaction, each exactly as :func:`add_report_plan`.

    Items are stored in order, so a later item sees the earlier ones of the same batch
    (two bodies under one key in one batch are a conflict, the same body twice a
    duplicate), and the results come back in item order.
    """
    known = yield from _known_keys([record.report_id for record, _ in items])
    results: list[AddResult] = []
    for record, intake in items:
        key = (record.report_id, record.organization)
        results.append((yield from add_report_plan(record, intake, limits,
                                                   new_key=key not in known)))
        known.add(key)
    return results


def _known_keys(report_ids: Sequence[str]) -> Generator[Query, list[tuple[Any, ...]],
                                                         set[tuple[str, str]]]:
    """The (report-id, organization) keys already stored among these report ids.

    Read inside the batch's transaction, after its key locks (PostgreSQL) or its write
    lock (SQLite), so no other writer adds one of these keys before the batch commits.
    """
    known: set[tuple[str, str]] = set()
    wanted = sorted(set(report_ids))
    for i in range(0, len(wanted), KNOWN_KEYS_STEP):
        step = wanted[i:i + KNOWN_KEYS_STEP]
        rows = yield Query(KNOWN_KEYS.format(marks=", ".join("?" * len(step))), step)
        known.update((str(r[0]), str(r[1])) for r in rows)
    return known


def add_quarantines_plan(items: Sequence[tuple[bytes, str, Intake]], limits: StoreLimits
                         ) -> Plan[list[int]]:
    """Keep many submissions inside one transaction, each as :func:`add_quarantine_plan`."""
    pks: list[int] = []
    for raw, reason, intake in items:
        pks.append((yield from add_quarantine_plan(raw, reason, intake, limits)))
    return pks


def report_lock_key(record: ReportRecord | PreparedReport) -> str:
    """The text a backend serializes one report key's writes on."""
    return f"{record.report_id}\n{record.organization}"


def _recount(group: list[tuple[Any, ...]], pk: int, new_pk: int | None
             ) -> Generator[Query, list[tuple[Any, ...]], int]:
    """Make the counted report of a key the one :func:`counted_report` picks.

    ``group`` is (id, provenance, counted) of every report of the key, read after the
    change; ``new_pk`` is a report whose child rows are not written yet (their counted
    flag is written with them).
    """
    winner = counted_report((int(g[0]), str(g[1])) for g in group)
    for g in group:
        gpk, was = int(g[0]), bool(int(g[2]))
        now = gpk == winner
        if gpk == new_pk:
            if not now:  # inserted as counted, the common case of a new key
                yield Query(SET_COUNTED[0], (0, gpk))
            continue
        if was != now:
            for statement in SET_COUNTED:
                yield Query(statement, (int(now), gpk))
    return winner


def add_quarantine_plan(raw: bytes, reason: str, intake: Intake, limits: StoreLimits
                        ) -> Plan[int]:
    """Keep a submission that is not a report; beyond the limits a digest and an excerpt.

    Entries older than ``quarantine_max_age_days`` (before this one's arrival) keep only
    their excerpt; this one is kept whole while the whole entries stay within
    ``quarantine_max_bytes``. Entries no longer than the excerpt are always whole and
    not counted against the total. An import's entry already kept (the same bytes from
    the same source for the same reason) is found again, not kept twice.
    """
    params = quarantine_params(raw, reason, intake)
    if intake.channel is Channel.IMPORT:
        # the bytes' digest, the source and the reason, as quarantine_params writes them
        same = yield Query(SELECT_SAME_QUARANTINE, (params[5], params[1], params[2], params[3]))
        if same:
            return int(same[0][0])
    cap = limits.quarantine_excerpt
    freed = 0
    if limits.quarantine_max_age_days > 0:
        cutoff = utc_text(intake.received_at - timedelta(days=limits.quarantine_max_age_days))
        rows = yield Query(AGED_QUARANTINE_BYTES, (cap, cap, cutoff))
        freed = int(rows[0][0] or 0)
        if freed:
            yield Query(AGE_QUARANTINE, (cap, cutoff))
    # Read (and, in PostgreSQL, lock) the total of whole entries, less what just aged.
    rows = yield Query(ADD_QUARANTINE_USAGE, (-freed,))
    kept = int(rows[0][0]) if rows else 0
    counts = len(raw) > cap
    whole = (not counts or limits.quarantine_max_bytes <= 0
             or kept + len(raw) <= limits.quarantine_max_bytes)
    stored = raw if whole else raw[:cap]
    if whole and counts:
        yield Query(ADD_QUARANTINE_USAGE, (len(raw),))
    rows = yield Query(INSERT_QUARANTINE, params[:-1] + (stored, int(not whole)))
    return int(rows[0][0])


def _arrival(intake: Intake) -> tuple[str, ...]:
    return (str(intake.channel), (intake.remote or "")[:1000], (intake.submitter or "")[:1000],
            str(intake.dkim), (intake.dkim_domain or "")[:255])


_REPORT_COLUMNS = (
    "id, report_id, organization, start_ts, end_ts, received_at, channel, dkim, "
    "dkim_domain, submitter, remote, contact_info, policy_domains, successful, failed, "
    "warnings, provenance, conflict, counted"
)



def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _json_list(values: Sequence[str]) -> str:
    # A JSON array of strings in one column, read back with json.loads.
    try:
        return orjson.dumps(list(values)).decode()
    except orjson.JSONEncodeError:  # an unpaired surrogate: the standard encoder escapes it
        return json.dumps(list(values))


def quarantine_params(raw: bytes, reason: str, intake: Intake) -> tuple:
    return (
        utc_text(intake.received_at), str(intake.channel), (intake.remote or "")[:1000],
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
        provenance=row[16],
        conflict=bool(int(row[17])),
        counted=bool(int(row[18])),
    )


def _quarantined(row: Sequence[Any], raw: bytes | None = None) -> QuarantineEntry:
    return QuarantineEntry(
        pk=int(row[0]), received_at=_ts(row[1]), channel=row[2], remote=row[3],
        reason=row[4], size=int(row[5]), sha256=row[6], excerpt=bool(int(row[7])), raw=raw,
    )


def _bounded(limit: int, offset: int) -> tuple[int, int]:
    return max(0, min(int(limit), 10_000)), max(0, int(offset))


class SqlReportStore(ConsoleQueries, abc.ABC):
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

    async def get_report(self, key: str | int, *, failures_offset: int = 0,
                         failures_limit: int | None = None) -> StoredReport | None:
        """One report by pk or report-id (of a conflict, the counted one, else the newest).

        ``failures_offset`` / ``failures_limit`` pick one page of its failure details,
        in report order; ``failure_rows`` says how many there are.
        """
        if isinstance(key, int):
            rows = await self._read(
                f"SELECT {_REPORT_COLUMNS}, raw_json FROM reports WHERE id = ?", (key,))  # noqa: S608 - constant SQL
        else:
            rows = await self._read(
                f"SELECT {_REPORT_COLUMNS}, raw_json FROM reports WHERE report_id = ? "  # noqa: S608 - constant SQL
                "ORDER BY counted DESC, id DESC LIMIT 1", (key,))
        if not rows:
            return None
        row = rows[0]
        pk = int(row[0])
        prow = await self._read(
            "SELECT id, policy_type, policy_domain, policy_strings, mx_hosts, successful, "
            "failed FROM policies WHERE report_pk = ? ORDER BY idx", (pk,))
        limit, offset = (2**62, 0) if failures_limit is None else _bounded(failures_limit,
                                                                        failures_offset)
        frows = await self._read(
            "SELECT policy_pk, result_type, failed_session_count, sending_mta_ip, "
            "receiving_mx_hostname, receiving_mx_helo, receiving_ip, additional_information, "
            "failure_reason_code FROM failures WHERE report_pk = ? ORDER BY policy_pk, idx "
            "LIMIT ? OFFSET ?", (pk, limit, offset)) if limit else []
        total = await self._read("SELECT COUNT(*) FROM failures WHERE report_pk = ?", (pk,))
        same = await self._read("SELECT id FROM reports WHERE report_id = ? AND "
                                "organization = ? AND id <> ? ORDER BY id",
                                (row[1], row[2], pk))
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
            "raw_json": row[-1], "policies": policies, "failure_rows": int(total[0][0]),
            "conflicts_with": tuple(int(r[0]) for r in same),
        })

    async def domains(self) -> list[DomainOverview]:
        rows = await self._read(
            "SELECT policy_domain, COUNT(DISTINCT report_pk), SUM(successful), SUM(failed), "
            "MIN(day), MAX(day) FROM policies WHERE counted = 1 GROUP BY policy_domain "
            "ORDER BY policy_domain")
        return [
            DomainOverview(policy_domain=r[0], reports=int(r[1]), successful=int(r[2] or 0),
                           failed=int(r[3] or 0), first_day=date.fromisoformat(r[4]),
                           last_day=date.fromisoformat(r[5]))
            for r in rows
        ]

    async def summary(self, *, domain: str | None = None, since: date | None = None,
                      until: date | None = None) -> Summary:
        # Of reports in conflict, only the counted one (best provenance) is summed.
        where, params = ["counted = 1"], []
        if until is not None:
            where.append("day <= ?")
            params.append(until.isoformat())
        if domain is not None:
            where.append("policy_domain = ?")
            params.append(_domain(domain))
        if since is not None:
            where.append("day >= ?")
            params.append(since.isoformat())
        clause = " WHERE " + " AND ".join(where)
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
            "SELECT id, received_at, channel, remote, reason, size, sha256, excerpt "
            "FROM quarantine ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset))
        return [_quarantined(r) for r in rows]

    async def get_quarantine(self, pk: int) -> QuarantineEntry | None:
        rows = await self._read(
            "SELECT id, received_at, channel, remote, reason, size, sha256, excerpt, raw "
            "FROM quarantine WHERE id = ?", (int(pk),))
        if not rows:
            return None
        return _quarantined(rows[0], bytes(rows[0][8]))

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for table in ("reports", "policies", "failures", "quarantine"):
            rows = await self._read(f"SELECT COUNT(*) FROM {table}")  # noqa: S608 - fixed names
            out[table] = int(rows[0][0])
        return out


def _domain(domain: str) -> str:
    return domain.strip().lower().rstrip(".")
