"""The monitor's driver over in-memory twins: resolver, alert channel, state store."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.config import Config, MonitorConfig
from smtptls.errors import ConfigError, DnsTimeout
from smtptls.monitor.runner import load_staged, run_forever, run_once
from smtptls.monitor.state import FileMonitorState, MemoryMonitorState
from smtptls.net.memory import MemoryResolver
from smtptls.services.alerts import AlertDispatcher, MemoryAlertState, MemoryChannel

D = "example.org"
NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def _cfg(**kw) -> Config:
    kw.setdefault("retry_delay", 0.0)
    return Config(monitor=MonitorConfig(domains=(D,), smtp=False, interval=0.01, **kw))


def _world() -> MemoryResolver:
    dns = MemoryResolver()
    dns.mx(D, f"mx1.{D}")
    dns.host(f"mx1.{D}")
    return dns


def _gatherer(dns: MemoryResolver) -> Gatherer:
    return Gatherer(CheckOptions(smtp=False, rua_probe=False, timeout=5.0), resolver=dns,
                    clock=lambda: NOW)


async def test_worse_finding_is_sent_once_and_an_outage_does_not_clear_it():
    dns = _world()
    channel = MemoryChannel()
    dispatcher = AlertDispatcher([channel], state=MemoryAlertState(), clock=lambda: NOW)
    store = MemoryMonitorState()
    async with _gatherer(dns) as g:
        first = await run_once(_cfg(), dispatcher, store, gatherer=g)
    assert first.alerts == () and channel.sent == []
    # the MX host loses its address: check's mx.host-no-address error, new since last run
    dns.records.pop((f"mx1.{D}", "A"))
    async with _gatherer(dns) as g:
        second = await run_once(_cfg(), dispatcher, store, gatherer=g)
    worse = [a for a in second.alerts if a.code == "monitor.worse"]
    assert any(a.subject.startswith("mx.host-no-address|") for a in worse)
    assert [a.code for a in channel.sent] == ["monitor.worse"] * len(worse)
    # a resolver outage: not judged, the alert stands (not cleared, not sent again)
    dns.records[(D, "MX")] = DnsTimeout("timeout", name=D, rdtype="MX")
    async with _gatherer(dns) as g:
        third = await run_once(_cfg(), dispatcher, store, gatherer=g)
    assert third.judgements[D].judged is False
    assert third.alerts == second.alerts and third.dispatch.cleared == ()
    assert len(channel.sent) == len(worse)


async def test_service_runs_on_its_interval():
    dns = _world()
    store = MemoryMonitorState()
    dispatcher = AlertDispatcher([MemoryChannel()], clock=lambda: NOW)
    async with _gatherer(dns) as g:
        assert await run_forever(_cfg(), dispatcher, store, gatherer=g, runs=3) == 3
    assert D in store.load()


async def test_no_domains_is_a_config_error():
    dispatcher = AlertDispatcher([MemoryChannel()])
    with pytest.raises(ConfigError, match="no domains"):
        await run_once(Config(), dispatcher, MemoryMonitorState())


def test_staged_file_missing_or_not_a_certificate_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_staged({"mx1.example.org": str(tmp_path / "missing.pem")})
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as info:
        load_staged({"mx1.example.org": str(bad)})
    assert info.value.key == "monitor.staged.mx1.example.org"


async def test_file_state_round_trip_and_corrupt_file_starts_empty(tmp_path):
    path = tmp_path / "monitor.json"
    store = FileMonitorState(path)
    dispatcher = AlertDispatcher([MemoryChannel()], clock=lambda: NOW)
    async with _gatherer(_world()) as g:
        await run_once(_cfg(), dispatcher, store, gatherer=g)
    assert D in json.loads(path.read_text())
    assert D in store.load()
    path.write_text("{not json")
    assert store.load() == {}
    path.write_text(json.dumps({D: {"findings": ["x"]}}))
    assert store.load() == {}
