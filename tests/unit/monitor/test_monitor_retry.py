"""The retry after a failed lookup and the history rows, over the in-memory twins."""

from __future__ import annotations

import datetime as dt

import pytest

from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.config import Config, MonitorConfig
from smtptls.errors import ConfigError, DnsTimeout
from smtptls.monitor.runner import run_once
from smtptls.net.memory import MemoryResolver
from smtptls.services.alerts import (
    Alert,
    AlertDispatcher,
    MemoryAlertState,
    MemoryChannel,
    Severity,
)
from smtptls.store.monitor_base import MemoryMonitorStore, RunRecord, worst_severity

D = "retry.example.org"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _cfg(**kw) -> Config:
    return Config(monitor=MonitorConfig(domains=(D,), smtp=False, retry_delay=5.0, **kw))


def _world() -> MemoryResolver:
    dns = MemoryResolver()
    dns.mx(D, f"mx1.{D}")
    dns.host(f"mx1.{D}")
    return dns


async def _run(dns, store, channel, sleep):
    dispatcher = AlertDispatcher([channel], state=MemoryAlertState(), clock=lambda: NOW)
    async with Gatherer(CheckOptions(smtp=False, rua_probe=False, timeout=5.0), resolver=dns,
                        clock=lambda: NOW) as g:
        return await run_once(_cfg(), dispatcher, store, gatherer=g, clock=lambda: NOW,
                              sleep=sleep)


async def test_failed_mx_lookup_is_retried_after_retry_delay_and_then_judged():
    dns, store, channel = _world(), MemoryMonitorStore(), MemoryChannel()
    mx = dns.records[(D, "MX")]
    dns.records[(D, "MX")] = DnsTimeout("timeout", name=D, rdtype="MX")
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)
        dns.records[(D, "MX")] = mx  # the resolver is back

    run = await _run(dns, store, channel, sleep)
    assert slept == [5.0] and run.judgements[D].judged
    (rec,) = await store.runs(D)
    assert rec.judged and rec.retried and D in store.states


async def test_domain_never_judged_keeps_no_state_so_its_next_run_is_a_first_run():
    dns, store, channel = _world(), MemoryMonitorStore(), MemoryChannel()
    dns.records[(D, "MX")] = DnsTimeout("timeout", name=D, rdtype="MX")
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    run = await _run(dns, store, channel, sleep)
    assert slept == [5.0] and not run.judgements[D].judged
    assert store.states == {} and channel.sent == []
    (rec,) = await store.runs(D)
    assert not rec.judged and rec.retried and rec.alerts == ()
    # healthy again, but the host has no address: an error finding, yet no "worse" alert,
    # because nothing was known before
    dns.records[(D, "MX")] = _world().records[(D, "MX")]
    dns.records.pop((f"mx1.{D}", "A"))
    second = await _run(dns, store, channel, sleep)
    assert second.judgements[D].judged and not any(
        a.code == "monitor.worse" for a in second.alerts)


async def test_healthy_run_does_not_sleep():
    async def sleep(delay: float) -> None:
        raise AssertionError("no retry expected")

    run = await _run(_world(), MemoryMonitorStore(), MemoryChannel(), sleep)
    assert run.judgements[D].judged


@pytest.mark.parametrize(("key", "value"), [("keep_runs", 0), ("retry_delay", -1.0)])
async def test_bad_store_settings_are_config_errors(key, value):
    dispatcher = AlertDispatcher([MemoryChannel()])
    cfg = Config(monitor=MonitorConfig(domains=(D,), **{key: value}))
    with pytest.raises(ConfigError) as info:
        await run_once(cfg, dispatcher, MemoryMonitorStore())
    assert info.value.key == f"monitor.{key}"


def test_run_record_row_round_trip_and_worst_severity():
    alerts = (Alert(Severity.WARNING, D, "monitor.cert-expiring", "m", fix="renew"),
              Alert(Severity.CRITICAL, D, "monitor.cert-expired", "m", fix="renew now"))
    rec = RunRecord(domain=D, run_at=NOW, judged=False, retried=True, alerts=alerts,
                    raised=(alerts[1].key,), cleared=(f"{D}|monitor.worse|x",),
                    findings={"mx.x|": "error"})
    domain, run_at, judged, retried, worst, raised, cleared, body = rec.row()
    assert (worst, raised, cleared) == ("critical", 1, 1)
    assert RunRecord.from_row((domain, run_at, judged, retried, body)) == rec
    assert worst_severity(()) is None and worst_severity(alerts[:1]) is Severity.WARNING
