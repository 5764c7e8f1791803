"""``reports serve`` with ``[reports] parse_workers``: reports parsed in worker processes
answer exactly as reports parsed in the server, a worker killed mid-flight loses no
report and is replaced, and the server ends its workers when it stops.

Everything goes over real HTTP to a running service with real worker processes; the
failures no real worker shows on demand (one that cannot start, a body that kills every
worker) use stand-in worker programs, run as processes too.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from smtptls.config import Config, ReportsConfig
from smtptls.services.reports_server.intake import INLINE_PARSE_MAX, Outcome, ReportIntake
from smtptls.services.reports_server.parse_pool import (
    MAX_FAILED_STARTS,
    ParsePool,
    ParsePoolUnavailable,
)
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore
from tests.integration.tlsrpt_reports import one_policy_report

JSON = {"Content-Type": "application/tlsrpt+json"}
GZIP = {"Content-Type": "application/tlsrpt+gzip"}


def report(report_id: str, domain: str = "pool.example") -> dict:
    return one_policy_report(report_id, domain=domain, org="Pool Org", ok=5)


def large_report(report_id: str) -> dict:
    """A report of more than INLINE_PARSE_MAX bytes of JSON: many failure details."""
    rep = report(report_id)
    detail = rep["policies"][0]["failure-details"][0]
    rep["policies"][0]["failure-details"] = [
        {**detail, "sending-mta-ip": f"192.0.2.{i % 250}",
         "receiving-ip": f"198.51.100.{i % 250}", "failed-session-count": 1}
        for i in range(1000)]
    rep["policies"][0]["summary"]["total-failure-session-count"] = 1000
    assert len(json.dumps(rep)) > INLINE_PARSE_MAX
    return rep


def body(rep: dict) -> bytes:
    return json.dumps(rep).encode()


def _without_id(rep: dict, key: str) -> dict:
    return {k: v for k, v in rep.items() if k != key}


#: (name, body, headers): every kind of refusal the intake gives, and one of each answer
SUBMISSIONS = [
    ("stored", body(report("pool-1")), JSON),
    ("stored gzip", gzip.compress(body(report("pool-2"))), GZIP),
    ("duplicate", body(report("pool-1")), JSON),
    ("conflict", body({**report("pool-1"), "contact-info": "other@sender.example"}), JSON),
    ("not json", b"{not json", JSON),
    ("not gzip", b"plain bytes, said to be gzip", GZIP),
    ("truncated gzip", gzip.compress(body(report("pool-3")))[:-9], GZIP),
    ("no report-id", body(_without_id(report("x"), "report-id")), JSON),
    ("bad date", body({**report("pool-4"), "date-range": {"start-datetime": "yesterday",
                                                          "end-datetime": "today"}}), JSON),
    ("bad count", body({**report("pool-5"), "policies": [
        {**report("pool-5")["policies"][0],
         "summary": {"total-successful-session-count": -1,
                     "total-failure-session-count": 0}}]}), JSON),
    ("array", b"[1, 2, 3]", JSON),
    ("not utf-8", b'{"organization-name": "\xff\xfe"}', JSON),
    # small on the wire, over the 64 KiB a worker takes once decompressed: the server's
    # bounded thread path decompresses it, against max_decompressed (a bomb: 413)
    ("bomb", gzip.compress(b" " * (2 * 1024 * 1024)), GZIP),
    ("large report", gzip.compress(body(large_report("pool-6"))), GZIP),
    ("media type", body(report("pool-7")), {"Content-Type": "application/json"}),
    ("too large", b"{" + b" " * (300 * 1024) + b"}", JSON),
]


def config(parse_workers: int) -> Config:
    return Config(reports=ReportsConfig(rate_limit_per_minute=0, parse_workers=parse_workers,
                                        max_body=256 * 1024, max_decompressed=1024 * 1024))


async def answers(tmp: Path, parse_workers: int) -> list[tuple[str, int, dict]]:
    store = SqliteReportStore(tmp / f"workers-{parse_workers}.sqlite3")
    await store.open()
    svc = ReportsService(config(parse_workers), ServeOptions(listen="127.0.0.1:0",
                                                             verify_dkim=False), store=store)
    await svc.start()
    try:
        assert len(svc.parse_pool.pids if svc.parse_pool else []) == parse_workers
        out = []
        async with aiohttp.ClientSession() as session:
            for name, data, headers in SUBMISSIONS:
                async with session.post(f"http://127.0.0.1:{svc.http_port}/v1/tlsrpt",
                                        data=data, headers=headers) as r:
                    answer = await r.json()
                    out.append((name, r.status, answer))
        quarantined = await store.list_quarantine()
        assert len(quarantined) == sum(a["status"] in ("quarantined", "refused")
                                       and "quarantine_id" in a for _, _, a in out)
        return out
    finally:
        await svc.stop()
        await store.close()


async def test_parse_workers_answer_every_submission_as_the_server_does(tmp_path):
    in_process = await answers(tmp_path, 0)
    pooled = await answers(tmp_path, 2)
    assert pooled == in_process  # status, reason, ids: the same, submission by submission
    statuses = {name: status for name, status, _ in pooled}
    assert statuses["stored"] == statuses["stored gzip"] == statuses["large report"] == 201
    assert statuses["duplicate"] == 200 and statuses["conflict"] == 202
    assert statuses["bomb"] == statuses["too large"] == 413
    assert statuses["media type"] == 415
    for name, status, answer in pooled:
        if status == 400:  # a typed reason, never a traceback
            assert answer["status"] == "quarantined" and answer["reason"], name
            assert "Traceback" not in answer["reason"] and "parser failure" not in answer["reason"]


def held_by_workers(svc: ReportsService) -> int:
    assert svc.parse_pool is not None
    return svc.parse_pool.waiting


async def wait_for(condition, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached: {what}")
        await asyncio.sleep(0.01)


async def test_a_killed_worker_loses_no_report_and_is_replaced(tmp_path):
    store = SqliteReportStore(tmp_path / "r.sqlite3")
    await store.open()
    svc = ReportsService(config(1), ServeOptions(listen="127.0.0.1:0", verify_dkim=False),
                         store=store)
    await svc.start()
    try:
        assert svc.parse_pool is not None
        [pid] = svc.parse_pool.pids
        url = f"http://127.0.0.1:{svc.http_port}/v1/tlsrpt"
        os.kill(pid, signal.SIGSTOP)  # the worker holds whatever is sent to it now
        async with aiohttp.ClientSession() as session:
            async def post(rid: str, data: bytes | None = None) -> tuple[int, dict]:
                async with session.post(url, data=data or body(report(rid)),
                                        headers=JSON) as r:
                    return r.status, await r.json()

            posts = [asyncio.create_task(post(f"killed-{i}")) for i in range(20)]
            await wait_for(lambda: held_by_workers(svc) == 20, "20 reports held by the worker")
            os.kill(pid, signal.SIGKILL)  # mid-flight: none of the 20 was answered
            results = await asyncio.gather(*posts)
            assert [status for status, _ in results] == [201] * 20
            for i, (_, answer) in enumerate(results):
                assert answer["report_id"] == f"killed-{i}"
                assert await store.get_report(f"killed-{i}") is not None
            # a worker took the dead one's place, and the server goes on with it
            assert svc.parse_pool.deaths == 1 and svc.parse_pool.started == 2
            [replacement] = svc.parse_pool.pids
            assert replacement != pid
            status, answer = await post("after-the-kill")
            assert (status, answer["status"]) == (201, "stored")
            # /metrics says so (the service has no token here)
            async with session.get(f"http://127.0.0.1:{svc.http_port}/metrics") as r:
                text = await r.text()
            assert "smtptls_reports_parse_worker_deaths_total 1.0" in text
            assert "smtptls_reports_parse_workers_ready 1.0" in text
            status, answer = await post("", b"{not json")
            assert (status, answer["status"]) == (400, "quarantined")  # the same answer
    finally:
        await svc.stop()
        await store.close()


async def test_stop_ends_the_workers(tmp_path):
    store = SqliteReportStore(tmp_path / "r.sqlite3")
    await store.open()
    svc = ReportsService(config(2), ServeOptions(listen="127.0.0.1:0", verify_dkim=False),
                         store=store)
    await svc.start()
    pool = svc.parse_pool
    assert pool is not None
    workers = pool.processes
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{svc.http_port}/v1/tlsrpt", data=body(report("stop-1")),
            headers=JSON) as r:
        assert r.status == 201
    await svc.stop()
    await store.close()
    assert [proc.returncode for proc in workers] == [0, 0]  # ended when asked, not killed
    assert pool.deaths == 0


#: A worker that says it is ready, then dies on the first request it gets.
DIES_ON_A_REQUEST = ("import os, struct, sys\n"
                     "sys.stdout.buffer.write(struct.pack('>I', 0)); sys.stdout.buffer.flush()\n"
                     "os.read(0, 12)\n"
                     "os._exit(1)\n")


async def test_a_report_two_workers_die_on_is_quarantined_and_the_pool_goes_on(tmp_path):
    store = SqliteReportStore(tmp_path / "r.sqlite3")
    await store.open()
    pool = ParsePool(1, command=(sys.executable, "-c", DIES_ON_A_REQUEST))
    await pool.start()
    try:
        intake = ReportIntake(store, pool=pool)
        raw = body(report("killer-1"))
        outcome = await intake.submit_body(raw)
        assert outcome.outcome is Outcome.QUARANTINED
        assert outcome.reason == "parser failure: ParseWorkerDied"
        entry = await store.get_quarantine(outcome.pk)
        assert entry is not None and entry.raw == raw  # nothing received is lost
        assert pool.deaths == 2
        await wait_for(lambda: pool.ready == 1, "a third worker ready")
        assert pool.started == 3
    finally:
        await pool.close()
        await store.close()


async def test_workers_that_cannot_start_leave_the_parse_to_the_server(tmp_path):
    store = SqliteReportStore(tmp_path / "r.sqlite3")
    await store.open()
    pool = ParsePool(1, command=(sys.executable, "-c", "raise SystemExit(3)"))
    await pool.start()
    try:
        await wait_for(lambda: pool.deaths == MAX_FAILED_STARTS and not pool.processes,
                       "the pool gives up")
        assert pool.started == MAX_FAILED_STARTS  # then no more are started
        with pytest.raises(ParsePoolUnavailable):
            await pool.parse(b"{}", max_body=1024, max_decompressed=1024)
        outcome = await ReportIntake(store, pool=pool).submit_body(body(report("inline-1")))
        assert (outcome.outcome, outcome.report_id) == (Outcome.STORED, "inline-1")
    finally:
        await pool.close()
        await store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(proc.name))
    return found


def post_when_up(port: int, proc: subprocess.Popen[bytes], data: bytes) -> int:
    deadline = time.monotonic() + 60
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("POST", "/v1/tlsrpt", body=data, headers=JSON)
            return conn.getresponse().status
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        finally:
            conn.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_reports_serve_stops_cleanly_with_its_workers(tmp_path, sig):
    port = free_port()
    cfg = tmp_path / "serve.toml"
    cfg.write_text("[reports]\nparse_workers = 2\n")
    argv = [sys.executable, "-m", "smtptls", "reports", "serve", "--config", str(cfg),
            "--db", str(tmp_path / "r.sqlite3"), "--listen", f"127.0.0.1:{port}",
            "--no-dkim"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        assert post_when_up(port, proc, body(report("cli-1"))) == 201
        workers = children(proc.pid)
        assert len(workers) == 2
        if sig == signal.SIGINT:  # a terminal's Ctrl-C: the server's process group
            os.killpg(proc.pid, sig)
        else:  # systemd's stop: every process of the service
            for pid in (proc.pid, *workers):
                os.kill(pid, sig)
        assert proc.wait(60) == 0
        stderr = proc.stderr.read().decode()  # type: ignore[union-attr]
        assert "Traceback" not in stderr, stderr
        for pid in workers:  # waited for by the server, not left behind
            assert not Path(f"/proc/{pid}").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
