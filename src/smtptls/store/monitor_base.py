"""The monitor's store: the last state of each domain, its run history, the alerts sent.

``smtptls monitor`` keeps three things between runs (docs/monitor.md):

* the latest :class:`~smtptls.monitor.rules.DomainState` per domain (what the next run
  compares with);
* a history: one :class:`RunRecord` per domain and run, with the alerts active after
  it, the keys raised (sent) and cleared, and the findings; ``keep_runs`` per domain;
* the dispatcher's sent-set (:class:`~smtptls.services.alerts.SentRecord` per alert
  key), so that a restarted monitor does not send an alert again.

A run's three writes are one transaction. This module holds the interface, the pure
row codecs, the SQL and the reads the backends share (:mod:`.monitor_sqlite`,
:mod:`.monitor_postgres`); :class:`MemoryMonitorStore` is the in-memory twin.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from smtptls.errors import SmtpTlsError, StoreError
from smtptls.monitor.rules import DomainState
from smtptls.services.alerts import Alert, SentRecord, Severity

__all__ = ["DEFAULT_KEEP_RUNS", "DomainSummary", "MAX_RUNS_READ", "MemoryMonitorStore",
           "MonitorStore", "RunRecord", "worst_severity"]

#: Runs kept per domain unless ``monitor.keep_runs`` says otherwise (hourly: 3 weeks).
DEFAULT_KEEP_RUNS = 500
#: Runs one history read returns at most (a console page).
MAX_RUNS_READ = 1000
#: Size of one stored JSON value read back; a larger one is a store error.
MAX_ROW_TEXT = 4 * 1024 * 1024
_RANK = {Severity.INFO: 1, Severity.WARNING: 2, Severity.CRITICAL: 3}


def worst_severity(alerts: Sequence[Alert]) -> Severity | None:
    """The most severe of ``alerts``; None when there is none."""
    return max((a.severity for a in alerts), key=_RANK.__getitem__, default=None)


def _iso(when: datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _loads(text: str) -> Any:
    if len(text) > MAX_ROW_TEXT:
        raise StoreError("monitor store row larger than expected")
    return json.loads(text)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One domain in one run: what it left active, what it raised and cleared."""

    domain: str
    run_at: datetime
    judged: bool = True  # False: lookups failed twice, the last state stands
    retried: bool = False  # judged (or not) at the retry after a failed lookup
    alerts: tuple[Alert, ...] = ()  # active after this run
    raised: tuple[str, ...] = ()  # alert keys sent in this run
    cleared: tuple[str, ...] = ()  # alert keys no longer active after this run
    findings: Mapping[str, str] = field(default_factory=dict)  # "code|subject" -> severity

    @property
    def worst(self) -> Severity | None:
        return worst_severity(self.alerts)

    def row(self) -> tuple[Any, ...]:
        """Parameters of :data:`INSERT_RUN`."""
        worst = self.worst
        return (self.domain, _iso(self.run_at), int(self.judged), int(self.retried),
                worst.value if worst else "", len(self.raised), len(self.cleared),
                json.dumps({"alerts": [a.to_dict() for a in self.alerts],
                            "raised": list(self.raised), "cleared": list(self.cleared),
                            "findings": dict(self.findings)}, separators=(",", ":")))

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RunRecord:
        """Inverse of :meth:`row` (columns of :data:`SELECT_RUNS`)."""
        domain, run_at, judged, retried, body = row
        try:
            data = _loads(body)
            return cls(domain=str(domain), run_at=_parse_time(str(run_at)),
                       judged=bool(judged), retried=bool(retried),
                       alerts=tuple(Alert.from_dict(a) for a in data.get("alerts", ())),
                       raised=tuple(str(k) for k in data.get("raised", ())),
                       cleared=tuple(str(k) for k in data.get("cleared", ())),
                       findings={str(k): str(v) for k, v in
                                 dict(data.get("findings") or {}).items()})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StoreError(f"malformed monitor run row: {exc}") from None


@dataclass(frozen=True, slots=True)
class DomainSummary:
    """A domain of the history: runs kept, the last one's time."""

    domain: str
    runs: int
    last_run: datetime


class MonitorStore(Protocol):
    """What ``smtptls monitor`` and the console need from the store."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self) -> dict[str, DomainState]: ...

    async def load_sent(self) -> dict[str, SentRecord]: ...

    async def is_empty(self) -> bool: ...

    async def save_run(self, states: Mapping[str, DomainState], records: Sequence[RunRecord],
                       sent: Mapping[str, SentRecord], *, keep_runs: int) -> None: ...

    async def runs(self, domain: str, *, limit: int = 100) -> list[RunRecord]: ...

    async def domains(self) -> list[DomainSummary]: ...


def state_text(state: DomainState) -> str:
    return json.dumps(state.to_dict(), separators=(",", ":"))


def state_from_text(text: str) -> DomainState:
    try:
        return DomainState.from_dict(_loads(text))
    except (ValueError, SmtpTlsError) as exc:
        raise StoreError(f"malformed monitor state row: {exc}") from None


def sent_row(key: str, rec: SentRecord) -> tuple[str, str, int]:
    return (key, _iso(rec.last_sent), int(rec.active))


def sent_from_row(row: Sequence[Any]) -> tuple[str, SentRecord]:
    key, last_sent, active = row
    return str(key), SentRecord(last_sent=_parse_time(str(last_sent)), active=bool(active))


def check_keep(keep_runs: int) -> int:
    if keep_runs < 1:
        raise StoreError("keep_runs must be at least 1")
    return keep_runs


def check_limit(limit: int) -> int:
    return max(1, min(int(limit), MAX_RUNS_READ))


# --- the SQL both backends run ("?" placeholders; PostgreSQL's adapter rewrites them) ----

#: ``{pk}``: the backend's auto-increment primary key column type.
SCHEMA = """
CREATE TABLE IF NOT EXISTS monitor_state (
    domain TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS monitor_runs (
    id {pk},
    domain TEXT NOT NULL,
    run_at TEXT NOT NULL,
    judged INTEGER NOT NULL,
    retried INTEGER NOT NULL,
    worst TEXT NOT NULL,
    raised INTEGER NOT NULL,
    cleared INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS monitor_runs_domain ON monitor_runs (domain, id);
CREATE TABLE IF NOT EXISTS monitor_sent (
    key TEXT PRIMARY KEY,
    last_sent TEXT NOT NULL,
    active INTEGER NOT NULL
)
"""

UPSERT_STATE = ("INSERT INTO monitor_state (domain, state, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (domain) DO UPDATE SET state = excluded.state, "
                "updated = excluded.updated")
SELECT_STATES = "SELECT domain, state FROM monitor_state ORDER BY domain"
INSERT_RUN = ("INSERT INTO monitor_runs (domain, run_at, judged, retried, worst, raised, "
              "cleared, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
# Everything older than the keep_runs-th newest run of the domain goes.
PRUNE_RUNS = ("DELETE FROM monitor_runs WHERE domain = ? AND id <= (SELECT id FROM "
              "monitor_runs WHERE domain = ? ORDER BY id DESC LIMIT 1 OFFSET ?)")
SELECT_RUNS = ("SELECT domain, run_at, judged, retried, body FROM monitor_runs "
               "WHERE domain = ? ORDER BY id DESC LIMIT ?")
SELECT_DOMAINS = ("SELECT domain, COUNT(*), MAX(run_at) FROM monitor_runs GROUP BY domain "
                  "ORDER BY domain")
DELETE_SENT = "DELETE FROM monitor_sent"
INSERT_SENT = "INSERT INTO monitor_sent (key, last_sent, active) VALUES (?, ?, ?)"
SELECT_SENT = "SELECT key, last_sent, active FROM monitor_sent"
COUNT_ANY = ("SELECT (SELECT COUNT(*) FROM monitor_state) + (SELECT COUNT(*) FROM "
             "monitor_sent) + (SELECT COUNT(*) FROM monitor_runs)")


def write_statements(states: Mapping[str, DomainState], records: Sequence[RunRecord],
                     sent: Mapping[str, SentRecord], *, keep_runs: int,
                     now: datetime) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements of one run's transaction, in order (pure)."""
    keep = check_keep(keep_runs)
    stamp = _iso(now)
    out: list[tuple[str, tuple[Any, ...]]] = [
        (UPSERT_STATE, (domain, state_text(st), stamp)) for domain, st in states.items()]
    out += [(INSERT_RUN, rec.row()) for rec in records]
    out += [(PRUNE_RUNS, (d, d, keep)) for d in dict.fromkeys(r.domain for r in records)]
    out.append((DELETE_SENT, ()))
    out += [(INSERT_SENT, sent_row(k, r)) for k, r in sent.items()]
    return out


def summary_from_row(row: Sequence[Any]) -> DomainSummary:
    domain, count, last = row
    return DomainSummary(str(domain), int(count), _parse_time(str(last)))


class SqlMonitorReads:
    """What the SQL backends share: the schema with their key column, and the reads.

    Mixed in before the backend's base, which provides ``_read(text, params)``.
    """

    name: ClassVar[str]
    pk: ClassVar[str]
    _read: Callable[..., Awaitable[list[tuple[Any, ...]]]]

    @classmethod
    def tables_sql(cls) -> str:
        return SCHEMA.format(pk=cls.pk)

    async def load(self) -> dict[str, DomainState]:
        rows = await self._read(SELECT_STATES)
        return {str(d): state_from_text(str(s)) for d, s in rows}

    async def load_sent(self) -> dict[str, SentRecord]:
        return dict(sent_from_row(r) for r in await self._read(SELECT_SENT))

    async def is_empty(self) -> bool:
        return int((await self._read(COUNT_ANY))[0][0]) == 0

    async def runs(self, domain: str, *, limit: int = 100) -> list[RunRecord]:
        rows = await self._read(SELECT_RUNS, (domain, check_limit(limit)))
        return [RunRecord.from_row(r) for r in rows]

    async def domains(self) -> list[DomainSummary]:
        return [summary_from_row(r) for r in await self._read(SELECT_DOMAINS)]


class MemoryMonitorStore:
    """The in-memory twin (tests, ``--once`` without a store)."""

    def __init__(self) -> None:
        self.states: dict[str, DomainState] = {}
        self.history: dict[str, list[RunRecord]] = {}
        self.sent: dict[str, SentRecord] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def load(self) -> dict[str, DomainState]:
        return dict(self.states)

    async def load_sent(self) -> dict[str, SentRecord]:
        return dict(self.sent)

    async def is_empty(self) -> bool:
        return not (self.states or self.sent or self.history)

    async def save_run(self, states: Mapping[str, DomainState], records: Sequence[RunRecord],
                       sent: Mapping[str, SentRecord], *, keep_runs: int) -> None:
        keep = check_keep(keep_runs)
        self.states.update(states)
        for rec in records:
            runs = self.history.setdefault(rec.domain, [])
            runs.append(rec)
            del runs[:-keep]
        self.sent = dict(sent)

    async def runs(self, domain: str, *, limit: int = 100) -> list[RunRecord]:
        return list(reversed(self.history.get(domain, [])))[:check_limit(limit)]

    async def domains(self) -> list[DomainSummary]:
        return [DomainSummary(d, len(r), r[-1].run_at)
                for d, r in sorted(self.history.items()) if r]
