"""TLS result store for senders: counters per day and policy, and report deliveries.

A sending MTA produces one result per SMTP session; a report (RFC 8460 §4) only needs,
per UTC day and applied policy, the number of successful and failed sessions and a count
per distinct failure detail. The store keeps exactly that — counters, at the report's
own granularity — so one day of ten million sessions is a few thousand rows and the
daily aggregation reads counters instead of sessions:

* ``tlsrpt_policy``: each distinct applied policy once (type, domain, policy strings,
  ``mx-host``), keyed by a digest of its canonical JSON;
* ``tlsrpt_session_count``: (day, policy) -> successful, failed;
* ``tlsrpt_failure_count``: (day, policy, failure detail) -> count, the detail being
  the §4.4 grouping key (result type, sending IP, MX, HELO, receiving IP,
  additional-information, failure-reason-code) as canonical JSON;
* ``tlsrpt_delivery``: one row per (report-id, rua URI): what the sender did with it;
* ``tlsrpt_log_position``: per followed log file, how far it has been read
  (:class:`LogPosition`), written in the transaction of the results those lines gave,
  so a restart — clean or ``kill -9`` — resumes exactly after the last counted line;
* ``tlsrpt_batch_key``: the client batch ids (``Idempotency-Key``) already counted, so
  a retried batch is counted once.

Writes come in batches (:func:`fold`: identical results collapse into one counter
increment) and each batch is one transaction; :meth:`ResultStore.add_results` returns
only after the commit, which is what lets the collector acknowledge a result
(RFC 8460 has no acknowledgement of its own; ours is "stored").

Backends: :mod:`~smtptls.store.results_sqlite` (default, WAL, ``synchronous=FULL``) and
:mod:`~smtptls.store.results_postgres`; :func:`smtptls.store.open.open_result_store`
picks one (this module imports no backend).
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, Protocol, runtime_checkable

from smtptls.errors import ResultError, SmtpTlsError, StoreError
from smtptls.tlsrptsend.aggregate import DayTally, DetailKey
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

__all__ = [
    "Batch",
    "BatchOutcome",
    "DeliveryRecord",
    "DeliveryStatus",
    "LogPosition",
    "ResultStore",
    "ResultSummary",
    "SqlResultReads",
    "detail_from_json",
    "detail_json",
    "fold",
    "policy_digest",
    "policy_from_json",
    "policy_json",
]

MAX_ERROR = 500  # characters of a delivery error kept
MAX_BATCH = 100_000  # results in one transaction
MAX_BATCH_ID = 128  # characters of a client batch id (Idempotency-Key)


# --- canonical forms ---------------------------------------------------------------------------


def policy_json(policy: AppliedPolicy) -> str:
    """Canonical JSON of an applied policy (stable key order, no spaces)."""
    return json.dumps(policy.to_dict(), separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False)


_DIGESTS: dict[AppliedPolicy, str] = {}
_DETAILS: dict[DetailKey, str] = {}
_MEMO_SIZE = 50_000


def policy_digest(policy: AppliedPolicy) -> str:
    """The key under which a policy is stored once (SHA-256 of its canonical JSON)."""
    digest = _DIGESTS.get(policy)
    if digest is None:
        digest = hashlib.sha256(policy_json(policy).encode("utf-8")).hexdigest()[:32]
        if len(_DIGESTS) >= _MEMO_SIZE:
            _DIGESTS.clear()
        _DIGESTS[policy] = digest
    return digest


def policy_from_json(text: str) -> AppliedPolicy:
    try:
        return AppliedPolicy.from_dict(json.loads(text))
    except (ValueError, SmtpTlsError) as exc:
        raise StoreError(f"stored policy does not decode: {exc}") from exc


def detail_json(key: DetailKey) -> str:
    text = _DETAILS.get(key)
    if text is None:
        text = json.dumps(list(key), separators=(",", ":"), ensure_ascii=False)
        if len(_DETAILS) >= _MEMO_SIZE:
            _DETAILS.clear()
        _DETAILS[key] = text
    return text


def detail_from_json(text: str) -> DetailKey:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise StoreError("stored failure detail does not decode") from exc
    if not isinstance(value, list) or len(value) != 7 or not isinstance(value[0], str) \
            or not all(v is None or isinstance(v, str) for v in value):
        raise StoreError("stored failure detail has the wrong shape")
    return tuple(value)  # type: ignore[return-value]


# --- batches -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogPosition:
    """How far a followed log file has been read: the file (``device``, ``inode``),
    ``offset`` just past the last complete line read, and ``line_digest`` (SHA-256, hex)
    of that line's last bytes — how a resumed reader tells the same file, grown, from
    one truncated and written again (``""`` at offset 0)."""

    device: int
    inode: int
    offset: int
    line_digest: str = ""

    def __post_init__(self) -> None:
        if self.offset < 0 or self.device < 0 or self.inode < 0:
            raise StoreError("a log position is never negative")


class BatchOutcome(enum.StrEnum):
    """What became of results sent under a client batch id."""

    STORED = "stored"  # counted now
    DUPLICATE = "duplicate"  # the same results under this id were counted before
    CONFLICT = "conflict"  # this id was counted before, with other results: not counted


@dataclass(slots=True)
class Batch:
    """Results folded into counter increments, ready for one transaction.

    ``positions``: log read positions to write in the same transaction (by log name).
    ``keyed``: results sent under a client batch id, each counted only if the id is new;
    after the commit the store sets ``outcomes``, what became of each (same order)."""

    policies: dict[str, AppliedPolicy] = field(default_factory=dict)
    sessions: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    details: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    results: int = 0
    positions: dict[str, LogPosition] = field(default_factory=dict)
    keyed: list[tuple[str, Batch]] = field(default_factory=list)
    outcomes: list[BatchOutcome] = field(default_factory=list)

    def add(self, result: SessionResult, count: int = 1, *,
            default_sending_ip: str | None = None) -> None:
        digest = policy_digest(result.policy)
        self.policies.setdefault(digest, result.policy)
        day = result.day
        entry = self.sessions.setdefault((day, digest), [0, 0])
        entry[1 if result.failed else 0] += count
        for key in result.detail_keys(default_sending_ip):
            d = self.details.setdefault((day, digest, detail_json(key)), [key[0], 0])
            d[1] += count
        self.results += count

    def merge(self, other: Batch) -> None:
        """Add another batch's counters to this one's."""
        self.policies.update(other.policies)
        for key, (ok, bad) in other.sessions.items():
            entry = self.sessions.setdefault(key, [0, 0])
            entry[0] += ok
            entry[1] += bad
        for key, (rtype, count) in other.details.items():
            self.details.setdefault(key, [rtype, 0])[1] += count
        self.results += other.results

    @property
    def days(self) -> set[str]:
        return {day for day, _ in self.sessions}

    @property
    def empty(self) -> bool:
        """Nothing to write at all (no counters, positions or keyed results)."""
        return not (self.results or self.positions or self.keyed)

    def digest(self) -> str:
        """SHA-256 of the counters (how a retried batch id is told from a reused one)."""
        canon = json.dumps([sorted([d, p, v] for (d, p), v in self.sessions.items()),
                            sorted([d, p, k, v[1]] for (d, p, k), v in self.details.items())],
                           separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canon.encode("utf-8")).hexdigest()

    def unkeyed(self) -> Batch:
        """A batch of this one's own counters, to which accepted keyed parts are added
        (this one itself when it has no keyed parts)."""
        if not self.keyed:
            return self
        out = Batch()
        out.merge(self)
        return out


def check_batch_id(batch_id: str) -> str:
    """A client batch id: 1 to ``MAX_BATCH_ID`` visible ASCII characters."""
    if not isinstance(batch_id, str) or not 0 < len(batch_id) <= MAX_BATCH_ID \
            or not all("!" <= c <= "~" for c in batch_id):
        raise ResultError(f"a batch id is 1 to {MAX_BATCH_ID} visible ASCII characters")
    return batch_id


def keyed_outcome(stored_digest: str | None, digest: str) -> BatchOutcome:
    """What a keyed part becomes: stored when its id is new (``stored_digest`` is
    ``None``: the id was inserted now), else a duplicate of the same counters or a
    conflict with other ones."""
    if stored_digest is None:
        return BatchOutcome.STORED
    return BatchOutcome.DUPLICATE if stored_digest == digest else BatchOutcome.CONFLICT


def fold(results: Iterable[SessionResult], *, default_sending_ip: str | None = None) -> Batch:
    """Fold results into one :class:`Batch` (identical results add up)."""
    batch = Batch()
    for r in results:
        batch.add(r, default_sending_ip=default_sending_ip)
    return batch


# --- deliveries -----------------------------------------------------------------------------------


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # not yet sent, or a temporary failure waiting for its retry
    DELIVERED = "delivered"  # RFC 8460 §5.3: 2xx / mail accepted by the relay
    FAILED = "failed"  # permanent failure, or gave up after the retry period (§5.3)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """What happened to one report for one ``rua`` URI. ``created_at`` is when it was
    planned, and from the first attempt on, that attempt's time (the retry period
    counts from it)."""

    report_id: str
    uri: str
    day: str
    policy_domain: str
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    next_attempt: datetime | None = None
    last_attempt: datetime | None = None
    last_error: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", DeliveryStatus(self.status))
        object.__setattr__(self, "last_error", (self.last_error or "")[:MAX_ERROR])

    def attempted(self, at: datetime, *, status: DeliveryStatus, error: str = "",
                  next_attempt: datetime | None = None) -> DeliveryRecord:
        return replace(self, status=status, attempts=self.attempts + 1, last_attempt=at,
                       last_error=error, next_attempt=next_attempt)

    def to_dict(self) -> dict[str, Any]:
        def ts(v: datetime | None) -> str | None:
            return None if v is None else v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"report_id": self.report_id, "uri": self.uri, "day": self.day,
                "policy_domain": self.policy_domain, "status": str(self.status),
                "attempts": self.attempts, "created_at": ts(self.created_at),
                "next_attempt": ts(self.next_attempt), "last_attempt": ts(self.last_attempt),
                "last_error": self.last_error}


def ts_text(value: datetime | None) -> str | None:
    """Timestamps as sortable RFC 3339 UTC text (the same in SQLite and PostgreSQL)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def ts_value(text: str | None) -> datetime | None:
    if text is None or text == "":
        return None
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise StoreError(f"stored timestamp {str(text)[:40]!r} does not decode") from exc


@dataclass(frozen=True, slots=True)
class ResultSummary:
    """One line of ``smtptls tlsrpt results``: a day, domain and policy type."""

    day: str
    policy_domain: str
    policy_type: str
    successful: int
    failed: int
    failures: dict[str, int] = field(default_factory=dict)  # result-type -> count

    def to_dict(self) -> dict[str, Any]:
        return {"day": self.day, "policy_domain": self.policy_domain,
                "policy_type": self.policy_type, "successful": self.successful,
                "failed": self.failed, "failures": dict(self.failures)}


def summaries_from_rows(session_rows: Iterable[Sequence[Any]],
                        failure_rows: Iterable[Sequence[Any]]) -> list[ResultSummary]:
    """Rows (day, domain, type, ok, failed) and (day, domain, type, result-type, count)."""
    acc: dict[tuple[str, str, str], list[Any]] = {}
    for day, domain, ptype, ok, bad in session_rows:
        entry = acc.setdefault((str(day), str(domain), str(ptype)), [0, 0, {}])
        entry[0] += int(ok)
        entry[1] += int(bad)
    for day, domain, ptype, rtype, count in failure_rows:
        entry = acc.setdefault((str(day), str(domain), str(ptype)), [0, 0, {}])
        entry[2][str(rtype)] = entry[2].get(str(rtype), 0) + int(count)
    return [ResultSummary(d, dom, pt, v[0], v[1], dict(sorted(v[2].items(),
                                                           key=lambda kv: -kv[1])))
            for (d, dom, pt), v in sorted(acc.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                       kv[0][2]))]


def tally_from_rows(day: date, policies: dict[int, str], session_rows: Iterable[Sequence[Any]],
                    failure_rows: Iterable[Sequence[Any]]) -> DayTally:
    """Rebuild a :class:`DayTally` from ``(policy_id, ok, failed)`` and
    ``(policy_id, detail_json, count)`` rows; ``policies`` maps ids to policy JSON."""
    tally = DayTally(day)
    decoded: dict[int, AppliedPolicy] = {}

    def policy(pid: int) -> AppliedPolicy:
        if pid not in decoded:
            if pid not in policies:
                raise StoreError(f"counter row refers to unknown policy {pid}")
            decoded[pid] = policy_from_json(policies[pid])
        return decoded[pid]

    for pid, ok, bad in session_rows:
        tally.add_sessions(policy(int(pid)), int(ok), int(bad))
    for pid, detail, count in failure_rows:
        tally.add_detail(policy(int(pid)), detail_from_json(str(detail)), int(count))
    return tally


# --- the interface ------------------------------------------------------------------------------


@runtime_checkable
class ResultStore(Protocol):
    """The sender's store. Every method raises :class:`StoreError` on backend failure."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_batch(self, batch: Batch) -> int:
        """Write one folded batch in one transaction — its counters, the keyed parts
        whose batch id is new, and its log positions — and return, after the commit, the
        number of results counted (setting ``batch.outcomes``)."""
        ...

    async def add_results(self, results: Sequence[SessionResult], *,
                          default_sending_ip: str | None = None) -> int: ...

    async def log_position(self, name: str) -> LogPosition | None:
        """The read position last committed for a followed log (``None``: never)."""
        ...

    async def days(self) -> list[str]: ...

    async def domains(self, day: date) -> list[str]: ...

    async def tally(self, day: date, domains: Iterable[str] | None = None) -> DayTally: ...

    async def summaries(self, *, day: date | None = None, domain: str | None = None,
                        limit: int = 1000) -> list[ResultSummary]: ...

    async def get_delivery(self, report_id: str, uri: str) -> DeliveryRecord | None: ...

    async def put_delivery(self, record: DeliveryRecord) -> None: ...

    async def deliveries(self, *, day: str | None = None, status: DeliveryStatus | None = None,
                         limit: int = 1000) -> list[DeliveryRecord]: ...

    async def prune(self, before: date) -> int: ...


# --- SQL shared by both backends ("?" placeholders; PostgreSQL rewrites them) ---------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS tlsrpt_policy (
    id {pk},
    digest TEXT NOT NULL UNIQUE,
    policy_domain TEXT NOT NULL,
    policy_type TEXT NOT NULL,
    policy_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tlsrpt_session_count (
    day TEXT NOT NULL,
    policy_id BIGINT NOT NULL,
    policy_domain TEXT NOT NULL,
    successful BIGINT NOT NULL DEFAULT 0,
    failed BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, policy_id)
);
CREATE INDEX IF NOT EXISTS tlsrpt_session_count_domain
    ON tlsrpt_session_count (day, policy_domain);
CREATE TABLE IF NOT EXISTS tlsrpt_failure_count (
    day TEXT NOT NULL,
    policy_id BIGINT NOT NULL,
    detail TEXT NOT NULL,
    result_type TEXT NOT NULL,
    count BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, policy_id, detail)
);
CREATE TABLE IF NOT EXISTS tlsrpt_delivery (
    report_id TEXT NOT NULL,
    uri TEXT NOT NULL,
    day TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    next_attempt TEXT,
    last_attempt TEXT,
    last_error TEXT NOT NULL,
    PRIMARY KEY (report_id, uri)
);
CREATE INDEX IF NOT EXISTS tlsrpt_delivery_day ON tlsrpt_delivery (day, status);
CREATE TABLE IF NOT EXISTS tlsrpt_log_position (
    name TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    inode TEXT NOT NULL,
    read_offset BIGINT NOT NULL,
    line_digest TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tlsrpt_batch_key (
    batch_id TEXT PRIMARY KEY,
    day TEXT NOT NULL,
    digest TEXT NOT NULL,
    results BIGINT NOT NULL
)
"""

INSERT_POLICY = ("INSERT INTO tlsrpt_policy (digest, policy_domain, policy_type, policy_json) "
                 "VALUES (?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING")
SELECT_POLICY_ID = "SELECT id FROM tlsrpt_policy WHERE digest = ?"
UPSERT_SESSIONS = (
    "INSERT INTO tlsrpt_session_count (day, policy_id, policy_domain, successful, failed) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (day, policy_id) DO UPDATE SET "
    "successful = tlsrpt_session_count.successful + excluded.successful, "
    "failed = tlsrpt_session_count.failed + excluded.failed")
UPSERT_DETAIL = (
    "INSERT INTO tlsrpt_failure_count (day, policy_id, detail, result_type, count) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (day, policy_id, detail) DO UPDATE SET "
    "count = tlsrpt_failure_count.count + excluded.count")
SELECT_DAYS = "SELECT DISTINCT day FROM tlsrpt_session_count ORDER BY day"
SELECT_DOMAINS = ("SELECT DISTINCT policy_domain FROM tlsrpt_session_count WHERE day = ? "
                  "ORDER BY policy_domain")
SELECT_DAY_POLICIES = (
    "SELECT DISTINCT p.id, p.policy_json FROM tlsrpt_policy p "
    "JOIN tlsrpt_session_count s ON s.policy_id = p.id WHERE s.day = ?")
SELECT_DAY_SESSIONS = ("SELECT policy_id, successful, failed FROM tlsrpt_session_count "
                       "WHERE day = ?")
SELECT_DAY_DETAILS = "SELECT policy_id, detail, count FROM tlsrpt_failure_count WHERE day = ?"
SELECT_SUMMARY_SESSIONS = (
    "SELECT s.day, s.policy_domain, p.policy_type, SUM(s.successful), SUM(s.failed) "
    "FROM tlsrpt_session_count s JOIN tlsrpt_policy p ON p.id = s.policy_id "
    "WHERE (? IS NULL OR s.day = ?) AND (? IS NULL OR s.policy_domain = ?) "
    "GROUP BY s.day, s.policy_domain, p.policy_type "
    "ORDER BY s.day DESC, s.policy_domain LIMIT ?")
SELECT_SUMMARY_FAILURES = (
    "SELECT f.day, p.policy_domain, p.policy_type, f.result_type, SUM(f.count) "
    "FROM tlsrpt_failure_count f JOIN tlsrpt_policy p ON p.id = f.policy_id "
    "WHERE (? IS NULL OR f.day = ?) AND (? IS NULL OR p.policy_domain = ?) "
    "GROUP BY f.day, p.policy_domain, p.policy_type, f.result_type")
SELECT_DELIVERY = ("SELECT report_id, uri, day, policy_domain, status, attempts, created_at, "
                   "next_attempt, last_attempt, last_error FROM tlsrpt_delivery "
                   "WHERE report_id = ? AND uri = ?")
UPSERT_DELIVERY = (
    "INSERT INTO tlsrpt_delivery (report_id, uri, day, policy_domain, status, attempts, "
    "created_at, next_attempt, last_attempt, last_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (report_id, uri) DO UPDATE SET status = excluded.status, "
    "attempts = excluded.attempts, created_at = excluded.created_at, "
    "next_attempt = excluded.next_attempt, "
    "last_attempt = excluded.last_attempt, last_error = excluded.last_error")
SELECT_DELIVERIES = (
    "SELECT report_id, uri, day, policy_domain, status, attempts, created_at, next_attempt, "
    "last_attempt, last_error FROM tlsrpt_delivery WHERE (? IS NULL OR day = ?) "
    "AND (? IS NULL OR status = ?) ORDER BY day DESC, policy_domain, uri LIMIT ?")
UPSERT_POSITION = (
    "INSERT INTO tlsrpt_log_position (name, device, inode, read_offset, line_digest, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
    "device = excluded.device, inode = excluded.inode, read_offset = excluded.read_offset, "
    "line_digest = excluded.line_digest, updated_at = excluded.updated_at")
SELECT_POSITION = ("SELECT device, inode, read_offset, line_digest FROM tlsrpt_log_position "
                   "WHERE name = ?")
INSERT_BATCH_KEY = ("INSERT INTO tlsrpt_batch_key (batch_id, day, digest, results) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (batch_id) DO NOTHING")
SELECT_BATCH_KEY = "SELECT digest FROM tlsrpt_batch_key WHERE batch_id = ?"
# (client batch ids are kept as long as the counters they added: a retry comes within
# minutes, and pruning them with their day keeps the table bounded)
PRUNE_BATCH_KEYS = "DELETE FROM tlsrpt_batch_key WHERE day < ?"
PRUNE = (
    "DELETE FROM tlsrpt_session_count WHERE day < ?",
    "DELETE FROM tlsrpt_failure_count WHERE day < ?",
    "DELETE FROM tlsrpt_delivery WHERE day < ?",
)
PRUNE_POLICIES = ("DELETE FROM tlsrpt_policy WHERE id NOT IN "
                  "(SELECT DISTINCT policy_id FROM tlsrpt_session_count)")


def policy_params(digest: str, policy: AppliedPolicy) -> tuple[Any, ...]:
    return (digest, policy.policy_domain, str(policy.policy_type), policy_json(policy))


def position_params(name: str, p: LogPosition) -> tuple[Any, ...]:
    return (name, str(p.device), str(p.inode), p.offset, p.line_digest,
            ts_text(datetime.now(UTC)))


def position_from_row(row: Sequence[Any]) -> LogPosition:
    try:
        return LogPosition(int(row[0]), int(row[1]), int(row[2]), str(row[3] or ""))
    except (TypeError, ValueError) as exc:
        raise StoreError(f"stored log position does not decode: {exc}") from exc


def batch_key_params(batch_id: str, part: Batch, digest: str) -> tuple[Any, ...]:
    return (batch_id, datetime.now(UTC).date().isoformat(), digest, part.results)


def delivery_params(r: DeliveryRecord) -> tuple[Any, ...]:
    return (r.report_id, r.uri, r.day, r.policy_domain, str(r.status), r.attempts,
            ts_text(r.created_at), ts_text(r.next_attempt), ts_text(r.last_attempt),
            r.last_error)


def delivery_from_row(row: Sequence[Any]) -> DeliveryRecord:
    try:
        return DeliveryRecord(
            report_id=str(row[0]), uri=str(row[1]), day=str(row[2]),
            policy_domain=str(row[3]), status=DeliveryStatus(str(row[4])),
            attempts=int(row[5]), created_at=ts_value(row[6]) or datetime.now(UTC),
            next_attempt=ts_value(row[7]), last_attempt=ts_value(row[8]),
            last_error=str(row[9] or ""))
    except ValueError as exc:
        raise StoreError(f"stored delivery does not decode: {exc}") from exc


def domain_filter(domains: Iterable[str] | None) -> set[str] | None:
    return None if domains is None else {d.lower().rstrip(".") for d in domains}


def filter_tally(tally: DayTally, wanted: set[str] | None) -> DayTally:
    if wanted is None:
        return tally
    out = DayTally(tally.day)
    for p, (ok, bad) in tally.sessions.items():
        if p.policy_domain in wanted:
            out.add_sessions(p, ok, bad)
    for p, details in tally.details.items():
        if p.policy_domain in wanted:
            for key, count in details.items():
                out.add_detail(p, key, count)
    return out


class SqlResultReads:
    """What the SQL backends share: the reads and the two writes built on others.

    Mixed in before the backend's base, which provides ``_read(text, params)``; the
    backend gives ``add_batch``, ``tally``, ``put_delivery`` and ``prune``.
    """

    _read: Callable[..., Awaitable[list[tuple[Any, ...]]]]
    add_batch: Callable[[Batch], Awaitable[int]]

    async def log_position(self, name: str) -> LogPosition | None:
        rows = await self._read(SELECT_POSITION, (name,))
        return None if not rows else position_from_row(rows[0])

    async def add_results(self, results: Sequence[SessionResult], *,
                          default_sending_ip: str | None = None) -> int:
        return await self.add_batch(fold(results, default_sending_ip=default_sending_ip))

    async def days(self) -> list[str]:
        return [str(r[0]) for r in await self._read(SELECT_DAYS)]

    async def domains(self, day: date) -> list[str]:
        return [str(r[0]) for r in await self._read(SELECT_DOMAINS, (day.isoformat(),))]

    async def summaries(self, *, day: date | None = None, domain: str | None = None,
                        limit: int = 1000) -> list[ResultSummary]:
        d = None if day is None else day.isoformat()
        dom = None if domain is None else domain.lower().rstrip(".")
        sessions = await self._read(SELECT_SUMMARY_SESSIONS, (d, d, dom, dom, limit))
        failures = await self._read(SELECT_SUMMARY_FAILURES, (d, d, dom, dom))
        keep = {(str(r[0]), str(r[1]), str(r[2])) for r in sessions}
        return summaries_from_rows(
            sessions, [r for r in failures if (str(r[0]), str(r[1]), str(r[2])) in keep])

    async def get_delivery(self, report_id: str, uri: str) -> DeliveryRecord | None:
        rows = await self._read(SELECT_DELIVERY, (report_id, uri))
        return None if not rows else delivery_from_row(rows[0])

    async def deliveries(self, *, day: str | None = None, status: DeliveryStatus | None = None,
                         limit: int = 1000) -> list[DeliveryRecord]:
        s = None if status is None else str(status)
        rows = await self._read(SELECT_DELIVERIES, (day, day, s, s, limit))
        return [delivery_from_row(r) for r in rows]
