"""The monitor store on SQLite and PostgreSQL: state, bounded history, the sent-set.

PostgreSQL: 127.0.0.1:5432, user postgres, database ``test`` (trust auth); each test
uses its own schema and drops it. Skipped, not failed, when the server is unreachable.
The runs use check's engine over the in-memory resolver twin (the lab runs are in
test_monitor_schedule.py and test_monitor_alert_delivery.py).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.config import AlertsConfig, Config, MonitorConfig
from smtptls.errors import StoreError
from smtptls.monitor.rules import DomainState
from smtptls.monitor.runner import run_once
from smtptls.monitor.state import import_legacy
from smtptls.net.memory import MemoryResolver
from smtptls.services.alerts import (
    Alert,
    AlertDispatcher,
    MemoryAlertState,
    MemoryChannel,
    SentRecord,
    Severity,
)
from smtptls.store.monitor_base import MemoryMonitorStore, RunRecord
from smtptls.store.monitor_open import monitor_store_location, open_monitor_store

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
D = "store.example.org"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _opener(kind: str, tmp_path, schema: str):
    if kind == "sqlite":
        return lambda: open_monitor_store(MonitorConfig(store=str(tmp_path / "m.sqlite3")))
    return lambda: open_monitor_store(MonitorConfig(store=PG_DSN), schema=schema)


async def _drop(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def opener(request, tmp_path):
    """Makes a new store object on the same location each call (a restart)."""
    schema = f"t_monitor_{uuid.uuid4().hex[:12]}"
    make = _opener(request.param, tmp_path, schema)
    probe = make()
    try:
        await probe.open()
    except StoreError as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    await probe.close()
    yield make
    if request.param == "postgres":
        await _drop(schema)


def _alert(code: str, severity: Severity = Severity.WARNING, subject: str = "") -> Alert:
    return Alert(severity, D, code, f"{code} message", fix=f"fix for {code}", subject=subject,
                 last_seen=NOW)


async def test_state_round_trip_and_history_is_bounded_per_domain(opener):
    store = opener()
    await store.open()
    try:
        assert await store.is_empty()
        state = DomainState(policy_id="20261201", policy_digest="abc",
                            findings={"mx.x|": "error"}, alerts=(_alert("monitor.worse"),))
        for i in range(7):
            run = RunRecord(domain=D, run_at=NOW + dt.timedelta(hours=i),
                            alerts=(_alert("monitor.worse"),
                                    _alert("monitor.cert-expired", Severity.CRITICAL)),
                            raised=(f"{D}|monitor.worse|",) if i == 0 else (),
                            findings={"mx.x|": "error"})
            other = RunRecord(domain="other.example", run_at=NOW + dt.timedelta(hours=i))
            await store.save_run({D: state}, [run, other],
                                 {f"{D}|monitor.worse|": SentRecord(NOW)}, keep_runs=3)
    finally:
        await store.close()
    again = opener()  # another process on the same store
    await again.open()
    try:
        assert (await again.load())[D] == state
        runs = await again.runs(D, limit=10)
        assert [r.run_at for r in runs] == [NOW + dt.timedelta(hours=i) for i in (6, 5, 4)]
        assert runs[0].worst is Severity.CRITICAL and runs[0].findings == {"mx.x|": "error"}
        assert runs[0].alerts[0].fix == "fix for monitor.worse"
        assert {s.domain: s.runs for s in await again.domains()} == {D: 3, "other.example": 3}
        assert await again.load_sent() == {f"{D}|monitor.worse|": SentRecord(NOW)}
        assert not await again.is_empty()
    finally:
        await again.close()


def _world() -> MemoryResolver:
    dns = MemoryResolver()
    dns.mx(D, f"mx1.{D}")
    dns.host(f"mx1.{D}")
    return dns


def _cfg() -> Config:
    return Config(monitor=MonitorConfig(domains=(D,), smtp=False, retry_delay=0.0,
                                        keep_runs=50))


async def _run(opener, dns: MemoryResolver, channel: MemoryChannel):
    """One run as the service does it: a new dispatcher (in-memory sent-set) and a new
    store object, as after a restart."""
    store = opener()
    await store.open()
    try:
        dispatcher = AlertDispatcher([channel], state=MemoryAlertState(), clock=lambda: NOW)
        async with Gatherer(CheckOptions(smtp=False, rua_probe=False, timeout=5.0),
                            resolver=dns, clock=lambda: NOW) as g:
            return await run_once(_cfg(), dispatcher, store, gatherer=g, clock=lambda: NOW)
    finally:
        await store.close()


async def _sent(opener) -> dict[str, SentRecord]:
    store = opener()
    await store.open()
    try:
        return await store.load_sent()
    finally:
        await store.close()


async def test_sent_set_survives_restart_and_is_cleared_in_the_history(opener):
    dns = _world()
    channel = MemoryChannel()
    first = await _run(opener, dns, channel)
    assert first.alerts == () and channel.sent == []
    dns.records.pop((f"mx1.{D}", "A"))  # check's mx.host-no-address, new: monitor.worse
    second = await _run(opener, dns, channel)
    worse = {a.key for a in second.alerts if a.code == "monitor.worse"}
    assert worse and {a.key for a in channel.sent} == worse
    sent = await _sent(opener)  # what a restarted dispatcher starts from
    assert {k for k, r in sent.items() if r.active} == worse
    # restarted, same finding: no longer "worse" than the last run, so cleared, not re-sent
    third = await _run(opener, dns, channel)
    assert set(third.dispatch.cleared) == worse and len(channel.sent) == len(worse)
    assert not any(r.active for r in (await _sent(opener)).values())
    store = opener()
    await store.open()
    try:
        runs = await store.runs(D)
        assert [len(r.raised) for r in runs] == [0, len(worse), 0]
        assert set(runs[0].cleared) == worse and runs[0].worst is None
        assert runs[1].worst is Severity.CRITICAL
        assert all(r.judged and not r.retried for r in runs)
    finally:
        await store.close()


async def test_json_state_of_earlier_versions_is_imported_once(opener, tmp_path):
    old_state = {D: DomainState(policy_id="7", findings={"mx.x|": "error"}).to_dict()}
    (tmp_path / "monitor.json").write_text(json.dumps(old_state))
    (tmp_path / "alerts.json").write_text(json.dumps(
        {f"{D}|monitor.worse|": {"last_sent": "2026-11-30T00:00:00Z", "active": True}}))
    cfg = Config(monitor=MonitorConfig(domains=(D,), state_path=str(tmp_path / "monitor.json")),
                 alerts=AlertsConfig(state_path=str(tmp_path / "alerts.json")))
    store = opener()
    await store.open()
    try:
        assert await import_legacy(store, cfg) is True
        assert (await store.load())[D].policy_id == "7"
        assert (await store.load_sent())[f"{D}|monitor.worse|"].active is True
        (tmp_path / "monitor.json").write_text(json.dumps({"x.example": old_state[D]}))
        assert await import_legacy(store, cfg) is False  # not empty any more: never again
        assert set(await store.load()) == {D}
    finally:
        await store.close()


def test_default_store_is_sqlite_beside_the_state_path(tmp_path):
    cfg = MonitorConfig(state_path=str(tmp_path / "monitor.json"))
    assert monitor_store_location(cfg) == str(tmp_path / "smtptls-monitor.sqlite3")
    assert type(open_monitor_store(cfg)).__name__ == "SqliteMonitorStore"
    assert monitor_store_location(MonitorConfig(store="postgresql://h/db")) == "postgresql://h/db"


async def test_keep_runs_below_one_is_refused():
    with pytest.raises(StoreError, match="keep_runs"):
        await MemoryMonitorStore().save_run({}, [], {}, keep_runs=0)


async def test_unreachable_postgres_is_a_store_error():
    store = open_monitor_store(MonitorConfig(store="postgresql://postgres@127.0.0.1:1/test"))
    store.timeout = 2.0
    with pytest.raises(StoreError, match="cannot connect"):
        await store.open()
