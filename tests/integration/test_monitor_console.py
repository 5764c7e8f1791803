"""The console's monitor timeline over real HTTP: ``smtptls reports serve``'s service
reads ``[monitor] store`` (the SQLite file two monitor runs wrote) behind its token."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape

import aiohttp
import pytest

from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.config import Config, MonitorConfig, ReportsConfig
from smtptls.monitor.runner import run_once
from smtptls.net.memory import MemoryResolver
from smtptls.services.alerts import AlertDispatcher, MemoryAlertState, MemoryChannel
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.monitor_open import open_monitor_store
from smtptls.store.reports_sqlite import SqliteReportStore

D = "console.example.org"
TOKEN = "monitor-console-token"
T1 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)
T2 = dt.datetime(2026, 12, 1, 11, 0, tzinfo=dt.UTC)


async def _two_runs(mon: MonitorConfig) -> None:
    dns = MemoryResolver()
    dns.mx(D, f"mx1.{D}")
    dns.host(f"mx1.{D}")
    store = open_monitor_store(mon)
    await store.open()
    dispatcher = AlertDispatcher([MemoryChannel()], state=MemoryAlertState())
    try:
        for when in (T1, T2):
            async with Gatherer(CheckOptions(smtp=False, rua_probe=False, timeout=5.0),
                                resolver=dns, clock=lambda w=when: w) as g:
                await run_once(Config(monitor=mon), dispatcher, store, gatherer=g,
                               clock=lambda w=when: w)
            dns.records.pop((f"mx1.{D}", "A"), None)  # the second run finds an error
    finally:
        await store.close()


@pytest.fixture
async def console(tmp_path):
    mon = MonitorConfig(domains=(D,), smtp=False, retry_delay=0.0,
                        store=str(tmp_path / "monitor.sqlite3"))
    await _two_runs(mon)
    reports = SqliteReportStore(tmp_path / "reports.sqlite3")
    await reports.open()
    svc = ReportsService(Config(reports=ReportsConfig(), monitor=mon),
                         ServeOptions(listen="127.0.0.1:0", token=TOKEN, verify_dkim=False),
                         store=reports)
    await svc.start()
    try:
        async with aiohttp.ClientSession() as client:
            yield f"http://127.0.0.1:{svc.http_port}", client
    finally:
        await svc.stop()
        await reports.close()


def _text(cell: str) -> str:
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", cell)).split())


def _rows(html: str) -> list[list[str]]:
    table = html.split('id="timeline"', 1)[1]
    rows = ([_text(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S))
    return [r for r in rows if r]


async def test_timeline_lists_each_run_with_raised_and_worst(console):
    url, client = console
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with client.get(f"{url}/monitor?domain={D}") as resp:
        assert resp.status == 401  # token-protected like every console page
    async with client.get(f"{url}/monitor", headers=auth) as resp:
        assert resp.status == 200
        index = await resp.text()
    assert f'href="/monitor?domain={D}"' in index
    async with client.get(f"{url}/monitor?domain={D}", headers=auth) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        rows = _rows(await resp.text())
    assert [r[0] for r in rows] == ["2026-12-01 11:00:00 UTC", "2026-12-01 10:00:00 UTC"]
    newest, oldest = rows
    assert newest[1] == "judged" and "monitor.worse mx.host-no-address" in newest[2]
    assert newest[5] == "critical" and int(newest[4]) >= 1
    assert oldest[2:] == ["—", "—", "0", "none"]


async def test_timeline_of_an_unknown_domain_is_empty_not_an_error(console):
    url, client = console
    async with client.get(f"{url}/monitor?domain=nothing.example",
                          headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 200
        assert "no run of this domain stored" in await resp.text()


async def test_no_monitor_store_yet_is_an_empty_timeline_and_creates_nothing(tmp_path):
    missing = tmp_path / "never-written.sqlite3"
    reports = SqliteReportStore(tmp_path / "reports.sqlite3")
    await reports.open()
    svc = ReportsService(Config(monitor=MonitorConfig(store=str(missing))),
                         ServeOptions(listen="127.0.0.1:0", token=TOKEN, verify_dkim=False),
                         store=reports)
    await svc.start()
    try:
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {TOKEN}"}) as client, client.get(
                f"http://127.0.0.1:{svc.http_port}/monitor") as resp:
            assert resp.status == 200
            assert "no monitor run stored yet" in await resp.text()
    finally:
        await svc.stop()
        await reports.close()
    assert not missing.exists()
