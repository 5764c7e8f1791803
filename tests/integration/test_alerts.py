"""Alert channels against real receivers on loopback: an aiosmtpd relay with STARTTLS
(a trustme CA), an aiohttp webhook receiver; deduplication and the state file."""

from __future__ import annotations

import asyncio
import email
import json
import socket
import ssl
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from aiohttp import web
from aiosmtpd.controller import Controller

from smtptls.config import AlertsConfig
from smtptls.errors import AlertDeliveryError, ConfigError
from smtptls.services.alerts import (
    Alert,
    AlertDispatcher,
    FileAlertState,
    LogChannel,
    MailChannel,
    MemoryChannel,
    SentRecord,
    Severity,
    WebhookChannel,
    channels_from_config,
    plan_dispatch,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def alert(code: str = "failure-rate", domain: str = "example.org", subject: str = "") -> Alert:
    return Alert(Severity.WARNING, domain, code, f"{code} on {domain}", fix="renew the certificate",
                 first_seen=NOW - timedelta(days=1), last_seen=NOW, subject=subject)


# --- real receivers ----------------------------------------------------------------------------


class _Handler:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes, bool]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd API)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                              session.ssl is not None))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def smtp_relay(ca):
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    handler = _Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=ctx,
                            require_starttls=True)
    controller.start()
    try:
        yield handler, f"127.0.0.1:{port}"
    finally:
        controller.stop()


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
async def webhook():
    received: list[dict] = []
    status = {"code": 200}

    async def hook(request: web.Request) -> web.Response:
        received.append({"path": request.path, "type": request.content_type,
                         "body": await request.json()})
        return web.Response(status=status["code"], text="ok")

    app = web.Application()
    app.router.add_post("/hooks/{secret}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield received, status, f"http://{host}:{port}/hooks/s3cret"
    finally:
        await runner.cleanup()


# --- channels ----------------------------------------------------------------------------------


async def test_mail_channel_starttls_verified_delivers(smtp_relay, ca_file):
    handler, relay = smtp_relay
    channel = MailChannel(relay=relay, mail_from="alerts@example.org", rcpt_to=["owner@example.org"],
                          ca_file=ca_file, clock=lambda: NOW)
    await channel.send(alert())
    assert len(handler.messages) == 1
    mail_from, rcpts, content, tls = handler.messages[0]
    assert (mail_from, rcpts, tls) == ("alerts@example.org", ["owner@example.org"], True)
    msg = email.message_from_bytes(content)
    assert "failure-rate on example.org" in msg["Subject"]
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_payload(decode=True).decode()
    assert "Fix: renew the certificate" in body and "First seen: 2026-03-09T12:00:00Z" in body


async def test_mail_channel_refuses_unverified_relay(smtp_relay):
    _, relay = smtp_relay
    channel = MailChannel(relay=relay, mail_from="alerts@example.org", rcpt_to=["owner@example.org"],
                          ca_file=None)  # system store: the test CA is unknown, no silent fallback
    with pytest.raises(AlertDeliveryError) as exc:
        await channel.send(alert())
    assert exc.value.channel == "mail"


async def test_mail_channel_requires_starttls_offer():
    handler = _Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        channel = MailChannel(relay=f"127.0.0.1:{port}", mail_from="a@example.org", rcpt_to=["b@example.org"])
        with pytest.raises(AlertDeliveryError, match="does not offer STARTTLS"):
            await channel.send(alert())
        assert handler.messages == []
        plain = MailChannel(relay=f"127.0.0.1:{port}", mail_from="a@example.org", rcpt_to=["b@example.org"],
                            starttls=False)
        await plain.send(alert())
        assert len(handler.messages) == 1 and handler.messages[0][3] is False
    finally:
        controller.stop()


async def test_webhook_channel_posts_slack_compatible_json(webhook):
    received, _, url = webhook
    await WebhookChannel(url).send(alert(subject="google.com"))
    assert len(received) == 1
    body = received[0]["body"]
    assert received[0]["type"] == "application/json"
    assert body["text"].startswith("[warning] example.org: failure-rate on example.org")
    assert body["alert"]["subject"] == "google.com" and body["alert"]["last_seen"] == "2026-03-10T12:00:00Z"
    assert Alert.from_dict(body["alert"]) == alert(subject="google.com")


async def test_webhook_error_names_host_not_secret_path(webhook):
    _, status, url = webhook
    status["code"] = 500
    with pytest.raises(AlertDeliveryError) as exc:
        await WebhookChannel(url).send(alert())
    assert "500" in str(exc.value) and "s3cret" not in str(exc.value)


def test_webhook_url_must_be_http():
    with pytest.raises(ConfigError):
        WebhookChannel("file:///etc/passwd")


async def test_log_channel_writes_one_line(caplog):
    caplog.set_level("INFO", logger="smtptls.alerts")
    await LogChannel().send(alert())
    assert [r.getMessage() for r in caplog.records] == ["alert"]
    assert caplog.records[0].fields["code"] == "failure-rate"


def test_channels_from_config():
    names = [c.name for c in channels_from_config(AlertsConfig(
        webhook_url="https://hooks.example/x", mail_to=("o@example.org",), mail_from="a@example.org"))]
    assert names == ["log", "webhook", "mail"]
    assert [c.name for c in channels_from_config(AlertsConfig(log=False))] == []


# --- deduplication -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "state", "expect_sent"), [
    ("new", {}, True),
    ("still active", {"example.org|failure-rate|": SentRecord(NOW - timedelta(days=5), True)}, False),
    ("cleared, back after quiet", {"example.org|failure-rate|": SentRecord(NOW - timedelta(days=2), False)}, True),
    ("cleared, back within quiet", {"example.org|failure-rate|": SentRecord(NOW - timedelta(hours=2), False)},
     False),
])
def test_plan_dispatch_table(name, state, expect_sent):
    plan = plan_dispatch([alert()], state, now=NOW, quiet_period=86400)
    assert bool(plan.send) is expect_sent, name
    assert plan.state["example.org|failure-rate|"].active is True


def test_plan_dispatch_marks_cleared_and_keeps_distinct_subjects():
    state = {"example.org|stale|": SentRecord(NOW - timedelta(days=1), True)}
    plan = plan_dispatch([alert(subject="a"), alert(subject="b"), alert(subject="a")], state,
                         now=NOW, quiet_period=0)
    assert [a.subject for a in plan.send] == ["a", "b"]
    assert plan.cleared == ("example.org|stale|",) and plan.state["example.org|stale|"].active is False


async def test_dispatcher_once_per_condition_and_again_after_clearing(tmp_path):
    clock = {"now": NOW}
    memory = MemoryChannel()
    state = FileAlertState(tmp_path / "alerts.json")
    d = AlertDispatcher([memory], state=state, quiet_period=3600, clock=lambda: clock["now"])
    assert len((await d.dispatch([alert()])).sent) == 1
    assert (await d.dispatch([alert()])).suppressed == 1
    # a restart reads the file: still no repeat
    d2 = AlertDispatcher([memory], state=FileAlertState(tmp_path / "alerts.json"), quiet_period=3600,
                         clock=lambda: clock["now"])
    assert (await d2.dispatch([alert()])).sent == ()
    assert (await d2.dispatch([])).cleared == ("example.org|failure-rate|",)
    clock["now"] = NOW + timedelta(minutes=10)
    assert (await d2.dispatch([alert()])).sent == ()  # back within the quiet period
    await d2.dispatch([])
    clock["now"] = NOW + timedelta(hours=2)
    assert len((await d2.dispatch([alert()])).sent) == 1
    assert len(memory.sent) == 2
    assert json.loads((tmp_path / "alerts.json").read_text())["example.org|failure-rate|"]["active"] is True


async def test_dispatcher_retries_when_every_channel_failed():
    failing = MemoryChannel(fail=True)
    d = AlertDispatcher([failing], quiet_period=3600, clock=lambda: NOW)
    result = await d.dispatch([alert()])
    assert result.sent == () and result.failed[0][1] == "memory"
    failing.fail = False
    assert len((await d.dispatch([alert()])).sent) == 1


async def test_dispatcher_one_failing_channel_does_not_stop_others(webhook):
    received, _, url = webhook
    d = AlertDispatcher([MemoryChannel(fail=True), WebhookChannel(url)], clock=lambda: NOW)
    result = await d.dispatch([alert(), alert(code="stale")])
    assert len(result.sent) == 2 and len(result.failed) == 2 and len(received) == 2


def test_state_file_garbage_is_ignored(tmp_path):
    path = tmp_path / "alerts.json"
    path.write_text("{not json")
    assert FileAlertState(path).load() == {}


def test_alert_value_checks_itself():
    with pytest.raises(ValueError):
        Alert(Severity.INFO, "example.org", "", "x")
    a = Alert("critical", "Example.ORG.", "tlsa-invalid", "x" * 5000)
    assert a.severity is Severity.CRITICAL and a.domain == "example.org" and len(a.message) == 2000


async def test_concurrent_dispatch_sends_once():
    memory = MemoryChannel()
    d = AlertDispatcher([memory], clock=lambda: NOW)
    await asyncio.gather(*(d.dispatch([alert()]) for _ in range(5)))
    assert len(memory.sent) == 1
