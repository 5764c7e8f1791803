"""Report delivery against our own receiver on loopback (RFC 8460 §5.3, §5.4).

HTTPS POST to ``reports serve`` with a lab (trustme) certificate; mail through an SMTP
relay to the receiver's SMTP intake, DKIM verified there; retries against a server
answering 500 then 200; permanent failures; giving up after the retry period; the
spreading schedule; dry runs; rua discovery cached per TTL.
"""

from __future__ import annotations

import asyncio
import base64
import random
import smtplib
import socket
import ssl
from datetime import UTC, date, datetime, timedelta

import pytest
import trustme
from aiohttp import web
from aiosmtpd.smtp import SMTP as SMTPServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtptls.config import Config, TlsrptConfig
from smtptls.dnssec import Security
from smtptls.errors import DnsTimeout, ReportDeliveryError
from smtptls.net.memory import MemoryResolver
from smtptls.net.report_delivery import HttpsDelivery, MemoryTransport
from smtptls.services.reports_server.intake import ReportIntake
from smtptls.services.reports_server.mail import start_mail_listener
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.services.sender import (
    ReportSender,
    RuaResolver,
    backoff_delay,
    first_attempt_at,
    run_loop,
)
from smtptls.store.reports_base import DkimStatus
from smtptls.store.reports_sqlite import SqliteReportStore
from smtptls.store.results_base import DeliveryStatus
from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

DAY = date(2024, 5, 1)
T_RESULT = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
NEXT_DAY = datetime(2024, 5, 2, 0, 0, 5, tzinfo=UTC)
SUBMITTER = "mta.sender.example"
IDENTITY = ReportIdentity("Sender Inc.", "tlsrpt@mta.sender.example", SUBMITTER)
STS = AppliedPolicy(PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce",
                                                    "mx: *.mail.example.com", "max_age: 86400"),
                    ("*.mail.example.com",))


def sample() -> list[SessionResult]:
    ok = [SessionResult.success(T_RESULT, STS) for _ in range(7)]
    bad = [SessionResult.failure(T_RESULT, STS, "certificate-expired",
                                 mx_host="mx1.mail.example.com", receiving_ip="192.0.2.10",
                                 sending_mta_ip="198.51.100.1") for _ in range(3)]
    return ok + bad


def dkim_key() -> tuple[bytes, str]:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM,
                          serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rua_dns(records: dict[str, list[str] | Exception], *, ttl: int = 300) -> MemoryResolver:
    """The package's in-memory resolver with TXT records for ``_smtp._tls`` names (an
    exception value is raised); lookups are counted."""
    dns = MemoryResolver()
    for name, value in records.items():
        dns.records[(name, "TXT")] = (
            value if isinstance(value, Exception) else (tuple(value), Security.INSECURE, ttl))
    return dns


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
async def results_store(tmp_path):
    store = SqliteResultStore(tmp_path / "results.sqlite3")
    await store.open()
    await store.add_results(sample())
    yield store
    await store.close()


def sender_config(**kw) -> Config:
    base = {"submitter": SUBMITTER, "organization_name": "Sender Inc.",
            "contact_info": "tlsrpt@mta.sender.example", "send_window": 3600.0,
            "retry_initial": 300.0, "retry_max": 3600.0, "give_up_after": 86400.0,
            "retention_days": 0}
    return Config(tlsrpt=TlsrptConfig(**(base | kw)))


def https_for(ca) -> HttpsDelivery:
    https = HttpsDelivery(timeout=10)
    ca.configure_trust(https.ssl)
    return https


# --- HTTPS to our own receiver --------------------------------------------------------------------


@pytest.mark.rfc("8460 5.4")
async def test_rfc8460_5_4_https_post_to_our_own_receiver(tmp_path, ca, results_store):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    port = free_port()
    receiver_store = SqliteReportStore(tmp_path / "received.sqlite3")
    await receiver_store.open()
    svc = ReportsService(Config(), ServeOptions(
        listen=f"127.0.0.1:{port}", tls_cert=str(tmp_path / "cert.pem"),
        tls_key=str(tmp_path / "key.pem"), verify_dkim=False), store=receiver_store)
    await svc.start()
    uri = f"https://localhost:{port}/v1/tlsrpt"
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={uri}"]})
    clock = Clock(NEXT_DAY + timedelta(hours=2))  # past the 1 h spreading window
    sender = ReportSender(sender_config(), results_store, dns=dns, clock=clock,
                          https=https_for(ca))
    try:
        summary = await sender.run_day(DAY)
        (outcome,) = summary.outcomes
        assert outcome.status is DeliveryStatus.DELIVERED, outcome.detail
        assert outcome.detail == "HTTP 201"
        (expected,) = aggregate(sample(), DAY, IDENTITY)
        stored = await receiver_store.get_report(expected.report_id)
        assert (stored.successful, stored.failed) == (7, 3)
        assert stored.policy_domains == ("example.com",)
        assert stored.channel == "https"
        # a second run does not send again
        again = await sender.run_day(DAY)
        assert again.outcomes[0].attempted is False
        # without the lab CA the certificate is refused (verification never disabled)
        with pytest.raises(ReportDeliveryError, match="certificate"):
            await HttpsDelivery(timeout=5).deliver(expected, uri)
    finally:
        await svc.stop()
        await receiver_store.close()


# --- mail through a relay to our own SMTP intake --------------------------------------------------


class Relay:
    """A minimal relaying MTA: accepts mail and hands it on to the next hop."""

    def __init__(self, next_hop: tuple[str, int]) -> None:
        self.next_hop = next_hop
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)

        def forward() -> None:
            with smtplib.SMTP(*self.next_hop, timeout=10) as s:
                s.sendmail(envelope.mail_from, envelope.rcpt_tos, envelope.original_content)

        await asyncio.to_thread(forward)
        return "250 2.0.0 Ok: queued as 4F2A1C0B3D"


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_mail_through_relay_to_our_intake_with_dkim(tmp_path, results_store):
    pem, pub = dkim_key()
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(pem)

    async def lookup(name: str) -> list[str]:
        return [f"v=DKIM1; k=rsa; s=tlsrpt; p={pub}"] if name == f"rpt._domainkey.{SUBMITTER}" \
            else []

    receiver_store = SqliteReportStore(tmp_path / "received.sqlite3")
    await receiver_store.open()
    intake = ReportIntake(receiver_store, dkim_lookup=lookup, require_dkim=True)
    intake_port, relay_port = free_port(), free_port()
    intake_server = await start_mail_listener(intake, "127.0.0.1", intake_port, lmtp=False,
                                              max_message=10 * 1024 * 1024)
    relay = Relay(("127.0.0.1", intake_port))
    loop = asyncio.get_running_loop()
    relay_server = await loop.create_server(
        lambda: SMTPServer(relay, decode_data=False, loop=loop), "127.0.0.1", relay_port)
    dns = rua_dns({"_smtp._tls.example.com": ["v=TLSRPTv1; rua=mailto:tlsrpt@example.com"]})
    cfg = sender_config(smtp_relay=f"127.0.0.1:{relay_port}", dkim_selector="rpt",
                        dkim_key_file=str(key_file))
    sender = ReportSender(cfg, results_store, dns=dns, clock=Clock(NEXT_DAY))
    try:
        summary = await sender.run_day(DAY, force=True)
        (outcome,) = summary.outcomes
        assert outcome.status is DeliveryStatus.DELIVERED, outcome.detail
        assert outcome.detail.startswith("250 2.0.0 Ok: queued as")
        (expected,) = aggregate(sample(), DAY, IDENTITY)
        stored = await receiver_store.get_report(expected.report_id)
        assert stored is not None, await receiver_store.list_quarantine()
        assert stored.dkim == str(DkimStatus.PASS) and stored.dkim_domain == SUBMITTER
        assert stored.submitter == SUBMITTER and stored.channel == "smtp"
        assert (stored.successful, stored.failed) == (7, 3)
        raw = relay.messages[0]
        assert b"TLS-Required: No" in raw and b"DKIM-Signature:" in raw
        assert b"Message-ID: <tlsrpt." in raw
    finally:
        relay_server.close()
        intake_server.close()
        await relay_server.wait_closed()
        await intake_server.wait_closed()
        await receiver_store.close()


async def test_mail_without_dkim_key_is_a_permanent_failure(results_store):
    dns = rua_dns({"_smtp._tls.example.com": ["v=TLSRPTv1; rua=mailto:tlsrpt@example.com"]})
    sender = ReportSender(sender_config(smtp_relay="127.0.0.1:9"), results_store, dns=dns,
                          clock=Clock(NEXT_DAY))
    (outcome,) = (await sender.run_day(DAY, force=True)).outcomes
    assert outcome.status is DeliveryStatus.FAILED
    assert "DKIM" in outcome.detail


# --- retries, permanent failures, giving up ---------------------------------------------------------


class Flaky:
    """An HTTPS intake answering the given statuses in turn (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[bytes] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        assert request.content_type == "application/tlsrpt+gzip"
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="x")


@pytest.fixture
async def flaky_server(tmp_path, ca):
    servers = []

    async def start(statuses: list[int]):
        flaky = Flaky(statuses)
        app = web.Application()
        app.router.add_post("/tlsrpt", flaky.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(ctx)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        servers.append(runner)
        return flaky, f"https://localhost:{port}/tlsrpt"

    yield start
    for r in servers:
        await r.cleanup()


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_retry_after_500_then_delivered(results_store, flaky_server, ca):
    flaky, uri = await flaky_server([500, 503])
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={uri}"]})
    clock = Clock(NEXT_DAY + timedelta(hours=1))
    sender = ReportSender(sender_config(), results_store, dns=dns, clock=clock,
                          https=https_for(ca), rng=random.Random(1))
    (first,) = (await sender.run_day(DAY)).outcomes
    assert first.status is DeliveryStatus.PENDING and first.detail == "HTTP 500"
    assert first.attempts == 1
    delay = (first.next_attempt - clock.now).total_seconds()
    assert 150 <= delay < 450  # retry_initial 300 s with jitter
    # before the back-off has passed nothing happens
    clock.now += timedelta(seconds=100)
    (waiting,) = (await sender.run_day(DAY)).outcomes
    assert not waiting.attempted and len(flaky.bodies) == 1
    clock.now = first.next_attempt
    (second,) = (await sender.run_day(DAY)).outcomes
    assert second.status is DeliveryStatus.PENDING and second.attempts == 2
    assert (second.next_attempt - clock.now).total_seconds() >= 300  # doubled (with jitter)
    clock.now = second.next_attempt
    (third,) = (await sender.run_day(DAY)).outcomes
    assert third.status is DeliveryStatus.DELIVERED and third.attempts == 3
    # every attempt carried the same report (same report-id, same bytes)
    assert len(set(flaky.bodies)) == 1 and len(flaky.bodies) == 3


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_gives_up_after_the_retry_period(results_store, flaky_server, ca):
    flaky, uri = await flaky_server([500] * 1000)
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={uri}"]})
    clock = Clock(NEXT_DAY + timedelta(hours=1))
    sender = ReportSender(sender_config(retry_max=7200.0), results_store, dns=dns, clock=clock,
                          https=https_for(ca))
    started = clock.now
    outcome = None
    for _ in range(100):
        (outcome,) = (await sender.run_day(DAY)).outcomes
        # the retry period counts from the first attempt, also as stored
        stored = await results_store.get_delivery(outcome.report_id, uri)
        assert stored.created_at == started
        if outcome.status is not DeliveryStatus.PENDING:
            break
        clock.now = outcome.next_attempt
    assert outcome.status is DeliveryStatus.FAILED
    assert outcome.detail.startswith("gave up after 86400 s")
    assert timedelta(hours=24) <= clock.now - started < timedelta(hours=27)
    assert 12 <= len(flaky.bodies) <= 30  # exponential, capped at 2 h
    (record,) = await results_store.deliveries(status=DeliveryStatus.FAILED)
    assert record.uri == uri


async def test_4xx_is_permanent_and_recorded(results_store, flaky_server, ca):
    flaky, uri = await flaky_server([404])
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={uri},mailto:x@example.com"]})
    clock = Clock(NEXT_DAY + timedelta(hours=2))
    sender = ReportSender(sender_config(), results_store, dns=dns, clock=clock,
                          https=https_for(ca))
    outcomes = {o.uri: o for o in (await sender.run_day(DAY)).outcomes}
    assert outcomes[uri].status is DeliveryStatus.FAILED and outcomes[uri].detail == "HTTP 404"
    # each rua on its own: the mailto one failed for its own reason
    assert outcomes["mailto:x@example.com"].status is DeliveryStatus.FAILED
    clock.now += timedelta(days=1)
    assert all(not o.attempted for o in (await sender.run_day(DAY)).outcomes)


# --- schedule, dry run, discovery --------------------------------------------------------------------


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_first_send_spread_over_the_window(results_store, flaky_server, ca):
    flaky, uri = await flaky_server([])
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={uri}"]})
    clock = Clock(datetime(2024, 5, 2, 0, 0, 0, tzinfo=UTC))
    sender = ReportSender(sender_config(send_window=14400.0), results_store, dns=dns,
                          clock=clock, https=https_for(ca))
    (o,) = (await sender.run_day(DAY)).outcomes
    rid = o.report_id
    scheduled = first_attempt_at(DAY, rid, uri, 14400.0)
    assert o.next_attempt == scheduled.replace(microsecond=scheduled.microsecond)
    assert datetime(2024, 5, 2, tzinfo=UTC) <= scheduled < datetime(2024, 5, 2, 4, tzinfo=UTC)
    assert not o.attempted and o.detail == "scheduled"
    clock.now = scheduled
    (o,) = (await sender.run_day(DAY)).outcomes
    assert o.status is DeliveryStatus.DELIVERED
    # different report/URI pairs land at different moments of the window
    moments = {first_attempt_at(DAY, f"r{i}@x", uri, 14400.0) for i in range(200)}
    spread = max(moments) - min(moments)
    assert len(moments) == 200 and spread > timedelta(hours=3)


async def test_dry_run_changes_nothing(results_store, flaky_server, ca):
    flaky, uri = await flaky_server([])
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={uri}"],
                   "_smtp._tls.example.net": ["v=spf1 -all"]})
    await results_store.add_results([SessionResult.success(
        T_RESULT, AppliedPolicy.none_found("example.net"))])
    sender = ReportSender(sender_config(), results_store, dns=dns,
                          clock=Clock(NEXT_DAY + timedelta(hours=5)), https=https_for(ca))
    summary = await sender.run_day(DAY, dry_run=True)
    data = summary.to_dict(dry_run=True, submitter=SUBMITTER, with_report=True)
    reports = {r["policy_domain"]: r for r in data["reports"]}
    assert reports["example.net"]["skipped"] == "no TLSRPT record"
    com = reports["example.com"]
    assert (com["successful"], com["failed"], com["rua"]) == (7, 3, [uri])
    assert com["subject"].startswith("Report Domain: example.com Submitter: mta.sender.example")
    assert com["report"]["policies"][0]["summary"]["total-failure-session-count"] == 3
    assert data["deliveries"][0]["detail"] == "would send now"
    assert flaky.bodies == [] and await results_store.deliveries() == []


async def test_rua_lookup_failure_is_retried(results_store):
    dns = rua_dns({"_smtp._tls.example.com": DnsTimeout("no answer", name="_smtp._tls.example.com",
                                                        rdtype="TXT")})
    clock = Clock(NEXT_DAY)
    sender = ReportSender(sender_config(), results_store, dns=dns, clock=clock)
    (o,) = (await sender.run_day(DAY)).outcomes
    assert o.status is DeliveryStatus.PENDING and "rua lookup" in o.detail


async def test_rua_resolver_caches_per_ttl():
    dns = rua_dns({"_smtp._tls.a.example": ["v=TLSRPTv1; rua=mailto:r@a.example"],
                   "_smtp._tls.b.example": ["v=TLSRPTv1; rua=mailto:x@b.example",
                                            "v=TLSRPTv1; rua=mailto:y@b.example"]}, ttl=120)
    now = [1000.0]
    resolver = RuaResolver(dns, clock=lambda: now[0])
    record, _ = await resolver.lookup("a.example")
    assert record.report_uris == ("mailto:r@a.example",)
    await resolver.lookup("a.example")
    assert dns.queries.total() == 1
    now[0] += 121
    await resolver.lookup("a.example")
    assert dns.queries.total() == 2
    # RFC 8460 §3: more than one record: no TLSRPT
    record, why = await resolver.lookup("b.example")
    assert record is None and "unusable" in why
    record, why = await resolver.lookup("c.example")
    assert record is None and why == "no TLSRPT record"
    await resolver.lookup("c.example")
    assert dns.queries.total() == 4  # the negative answer is cached too


def test_backoff_doubles_with_jitter_and_caps():
    rng = random.Random(7)
    delays = [backoff_delay(n, 300, 3600, rng) for n in range(1, 10)]
    assert 150 <= delays[0] < 450 and 300 <= delays[1] < 900
    assert all(d < 5400 for d in delays) and delays[-1] >= 1800


async def test_loop_mode_runs_and_stops(results_store):
    uri = "https://r.example/tlsrpt"
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={uri}"]})
    https = MemoryTransport()
    sender = ReportSender(sender_config(), results_store, dns=dns,
                          clock=Clock(NEXT_DAY + timedelta(hours=3)), https=https)
    stop = asyncio.Event()
    task = asyncio.ensure_future(run_loop(sender, stop=stop, max_sleep=0.05))
    for _ in range(200):
        if https.delivered:
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(https.delivered) == 1


async def test_each_rua_scheme_goes_to_its_transport(results_store):
    uris = ["mailto:tlsrpt@example.com", "https://r.example/tlsrpt"]
    dns = rua_dns({"_smtp._tls.example.com": [f"v=TLSRPTv1; rua={','.join(uris)}"]})

    def refuse(report, uri):
        raise ReportDeliveryError("HTTP 404", uri=uri, permanent=True)

    https, mail = MemoryTransport(refuse), MemoryTransport()
    now = NEXT_DAY + timedelta(hours=1)
    sender = ReportSender(sender_config(), results_store, dns=dns, clock=Clock(now),
                          https=https, mail=mail)
    outcomes = {o.uri: o for o in (await sender.run_day(DAY, force=True)).outcomes}
    assert [(d.uri, d.unique, d.now) for d in mail.delivered] == [(uris[0], "0", now)]
    assert [(d.uri, d.unique) for d in https.delivered] == [(uris[1], "1")]
    assert mail.delivered[0].report is https.delivered[0].report
    assert outcomes[uris[0]].status is DeliveryStatus.DELIVERED
    assert outcomes[uris[0]].detail == "delivered"
    assert outcomes[uris[1]].status is DeliveryStatus.FAILED
    assert outcomes[uris[1]].detail == "HTTP 404"


async def test_run_pending_covers_yesterday_and_the_day_before(results_store):
    await results_store.add_results([SessionResult.success(T_RESULT - timedelta(days=1), STS)])
    dns = rua_dns({"_smtp._tls.example.com": ["v=TLSRPTv1; rua=https://r.example/x"]})
    sender = ReportSender(sender_config(), results_store, dns=dns,
                          clock=Clock(NEXT_DAY + timedelta(hours=1)))
    runs = await sender.run_pending(days=2, dry_run=True)
    assert [r.day for r in runs] == [DAY, DAY - timedelta(days=1)]
    assert [r.planned[0].report.total_successful for r in runs] == [7, 1]
    assert dns.queries.total() == 1  # the rua record was cached for its TTL
