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


# --- the console's rules, over a real store, delivered by a running `reports serve` -------


#: The rule sample's days count back from here; the rules are evaluated on this day too, so a
#: run that passes midnight UTC judges the sample it wrote.
RULE_TODAY = datetime.now(UTC).date()


def _report(rid: str, org: str, domain: str, days_ago: int, ok: int, failed: int,
            details: tuple[tuple[str, int], ...] = ()) -> dict:
    on = RULE_TODAY - timedelta(days=days_ago)
    start = datetime.combine(on, datetime.min.time(), tzinfo=UTC)
    return {"organization-name": org, "report-id": rid, "contact-info": "tlsrpt@reporter.example",
            "date-range": {"start-datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "end-datetime": (start + timedelta(hours=23, minutes=59, seconds=59))
                           .strftime("%Y-%m-%dT%H:%M:%SZ")},
            "policies": [{"policy": {"policy-type": "sts", "policy-domain": domain,
                                     "mx-host": [f"mx1.{domain}"]},
                          "summary": {"total-successful-session-count": ok,
                                      "total-failure-session-count": failed},
                          "failure-details": [{"result-type": rt, "receiving-mx-hostname": f"mx1.{domain}",
                                               "failed-session-count": n} for rt, n in details]}]}


RULE_SAMPLE = [
    # failure rate 10 % from Google, certificate-expired new this week
    _report("g1", "Google", "rate.example", 1, 90, 10, (("certificate-expired", 10),)),
    # old failure type seen the week before too: not new
    _report("g2", "Google", "old-type.example", 2, 1000, 1, (("starttls-not-supported", 1),)),
    _report("g3", "Google", "old-type.example", 9, 1000, 1, (("starttls-not-supported", 1),)),
    # one critical session: an MTA-STS policy host down
    _report("m1", "Microsoft", "critical.example", 1, 5000, 1, (("sts-policy-fetch-error", 1),)),
    # few sessions: 50 % but under min_sessions
    _report("t1", "Tiny", "tiny.example", 1, 1, 1, (("validation-failure", 1),)),
] + [_report(f"s{i}", "Yahoo", "silent.example", i, 10, 0) for i in range(5, 9)]


async def _store_with(tmp_path, reports):
    from smtptls.services.reports_server.intake import ReportIntake
    from smtptls.store.reports_sqlite import SqliteReportStore

    store = SqliteReportStore(tmp_path / "rules.sqlite3")
    await store.open()
    intake = ReportIntake(store)
    for r in reports:
        assert (await intake.submit_body(json.dumps(r).encode())).pk
    return store


async def test_console_rules_over_a_real_store(tmp_path):
    from smtptls.services.reports_server.alert_rules import evaluate

    store = await _store_with(tmp_path, RULE_SAMPLE)
    try:
        alerts = await evaluate(store, AlertsConfig(), today=RULE_TODAY)
    finally:
        await store.close()
    got = {(a.domain, a.code, a.subject): a for a in alerts}
    assert set(got) == {
        ("rate.example", "failure-rate", "Google"),
        ("rate.example", "new-failure-type", "certificate-expired"),
        ("critical.example", "critical-failure", "sts-policy-fetch-error"),
        ("tiny.example", "new-failure-type", "validation-failure"),
        ("silent.example", "reports-stopped", "Yahoo"),
    }
    rate = got[("rate.example", "failure-rate", "Google")]
    assert rate.message.startswith("10.0 % of 100 sessions failed as reported by Google")
    assert "Renew the certificate" in rate.fix
    assert got[("critical.example", "critical-failure", "sts-policy-fetch-error")].severity is Severity.CRITICAL
    assert "no report from Yahoo for 5 days" in got[("silent.example", "reports-stopped", "Yahoo")].message


@pytest.mark.parametrize(("override", "absent"), [
    ({"failure_rate_percent": 20.0}, ("rate.example", "failure-rate")),
    ({"new_failure_type": False}, ("rate.example", "new-failure-type")),
    ({"critical_result_types": ()}, ("critical.example", "critical-failure")),
    ({"stale_days": 0}, ("silent.example", "reports-stopped")),
])
async def test_each_rule_follows_its_setting(tmp_path, override, absent):
    from smtptls.services.reports_server.alert_rules import evaluate

    store = await _store_with(tmp_path, RULE_SAMPLE)
    try:
        alerts = await evaluate(store, AlertsConfig(**override), today=RULE_TODAY)
    finally:
        await store.close()
    assert absent not in {(a.domain, a.code) for a in alerts}


async def test_serve_sends_alerts_by_webhook_and_mail_once(tmp_path, webhook, smtp_relay, ca_file):
    import gzip

    from smtptls.config import Config, ReportsConfig
    from smtptls.services.reports_server.server import ReportsService, ServeOptions

    received, _, url = webhook
    handler, relay = smtp_relay
    cfg = Config(reports=ReportsConfig(sqlite_path=str(tmp_path / "serve.sqlite3"), rate_limit_per_minute=0),
                 alerts=AlertsConfig(webhook_url=url, mail_to=("owner@example.org",),
                                     mail_from="smtptls@example.org", smtp_relay=relay, ca_file=ca_file,
                                     interval=1.0, state_path=str(tmp_path / "alerts.json")))
    svc = ReportsService(cfg, ServeOptions(listen="127.0.0.1:0", verify_dkim=False))
    await svc.start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as client:
            body = gzip.compress(json.dumps(RULE_SAMPLE[3]).encode())  # the critical one
            async with client.post(f"http://127.0.0.1:{svc.http_port}/v1/tlsrpt", data=body,
                                   headers={"Content-Type": "application/tlsrpt+gzip"}) as r:
                assert r.status == 201
        for _ in range(100):
            if received and handler.messages:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.5)  # two more evaluations: nothing is sent again
    finally:
        await svc.stop()
    assert [b["body"]["alert"]["code"] for b in received] == ["critical-failure"]
    assert received[0]["body"]["alert"]["domain"] == "critical.example"
    assert len(handler.messages) == 1
    mail_from, rcpts, content, tls = handler.messages[0]
    assert tls and rcpts == ["owner@example.org"]
    assert b"critical.example" in content and b"sts-policy-fetch-error" in content


def test_cli_alerts_dry_run_json(tmp_path, capsys):
    from smtptls.cli.main import main

    store = asyncio.run(_store_with(tmp_path, RULE_SAMPLE[:1]))
    asyncio.run(store.close())
    code = main(["reports", "alerts", "--db", str(tmp_path / "rules.sqlite3"), "--dry-run", "--json",
                 "--window", "30d"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["window"] == "30d"
    assert {(a["domain"], a["code"]) for a in out["alerts"]} == {
        ("rate.example", "failure-rate"), ("rate.example", "new-failure-type")}
