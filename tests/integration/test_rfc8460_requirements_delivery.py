"""RFC 8460 §3 (G2): a report goes to every ``rua`` destination, each counted on its own.

Two HTTPS intakes on loopback (trustme certificates): one answers 500, the other 200.
The report is delivered where it was accepted, and stays pending — retried with
back-off — where it was not; nothing counts as delivered before a destination accepts.
"""

from __future__ import annotations

import random
import socket
import ssl
from datetime import UTC, date, datetime, timedelta

import pytest
import trustme
from aiohttp import web

from smtptls.config import Config, TlsrptConfig
from smtptls.dnssec import Security
from smtptls.net.dns import Answer
from smtptls.net.report_delivery import HttpsDelivery
from smtptls.services.sender import ReportSender
from smtptls.store.results_base import DeliveryStatus
from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

DAY = date(2024, 5, 1)
T_RESULT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
NEXT_DAY = datetime(2024, 5, 2, 0, 0, 5, tzinfo=UTC)
STS = AppliedPolicy(PolicyType.STS, "example.com",
                    ("version: STSv1", "mode: enforce", "mx: mx1.example.com",
                     "max_age: 86400"), ("mx1.example.com",))


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class TxtAnswers:
    """The ``_smtp._tls`` TXT answers of the in-memory DNS."""

    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records

    async def txt(self, name: str) -> Answer:
        recs = tuple(self.records.get(name, ()))
        return Answer(name, "TXT", recs, Security.INSECURE, ttl=300 if recs else 60)


class Intake:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses, self.bodies = list(statuses), []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def intakes():
    ca = trustme.CA()
    runners = []

    async def start(statuses: list[int]) -> tuple[Intake, str]:
        intake = Intake(statuses)
        app = web.Application()
        app.router.add_post("/tlsrpt", intake.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(ctx)
        port = _free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        runners.append(runner)
        return intake, f"https://localhost:{port}/tlsrpt"

    https = HttpsDelivery(timeout=10)
    ca.configure_trust(https.ssl)
    yield start, https
    for runner in runners:
        await runner.cleanup()


@pytest.mark.rfc("8460 3")
async def test_rfc8460_3_each_rua_counted_delivered_only_when_it_accepts(tmp_path, intakes):
    start, https = intakes
    refusing, refusing_uri = await start([500])
    accepting, accepting_uri = await start([])
    store = SqliteResultStore(tmp_path / "results.sqlite3")
    await store.open()
    try:
        await store.add_results([SessionResult.success(T_RESULT, STS) for _ in range(3)])
        dns = TxtAnswers({"_smtp._tls.example.com":
                          [f"v=TLSRPTv1; rua={refusing_uri},{accepting_uri}"]})
        cfg = Config(tlsrpt=TlsrptConfig(
            submitter="mta.sender.example", organization_name="Sender Inc.",
            contact_info="tlsrpt@mta.sender.example", send_window=3600.0,
            retry_initial=300.0, retry_max=3600.0, give_up_after=86400.0,
            retention_days=0))
        clock = Clock(NEXT_DAY + timedelta(hours=1))
        sender = ReportSender(cfg, store, dns=dns, clock=clock, https=https,
                              rng=random.Random(1))
        first = {o.uri: o for o in (await sender.run_day(DAY)).outcomes}
        assert set(first) == {refusing_uri, accepting_uri}  # every rua gets the report
        assert first[accepting_uri].status is DeliveryStatus.DELIVERED
        assert first[refusing_uri].status is DeliveryStatus.PENDING  # not delivered there
        assert len(accepting.bodies) == len(refusing.bodies) == 1
        assert accepting.bodies == refusing.bodies  # the same report to both
        clock.now = first[refusing_uri].next_attempt
        again = {o.uri: o for o in (await sender.run_day(DAY)).outcomes}
        assert again[refusing_uri].status is DeliveryStatus.DELIVERED
        assert not again[accepting_uri].attempted  # delivered once, never re-sent
        assert len(accepting.bodies) == 1 and len(refusing.bodies) == 2
    finally:
        await store.close()
