"""Alerts for domain owners: one value, a few delivery channels, deduplication.

An :class:`Alert` says what is wrong (``code``), for which domain, how bad
(``severity``), in plain words (``message``) and what to do (``fix``), with the time
the condition was first and last seen. Whoever evaluates conditions (the report
console, ``smtptls monitor``) builds alerts and hands the ones active *now* to an
:class:`AlertDispatcher`, which decides what to send and sends it through every
configured :class:`AlertChannel`:

* :class:`LogChannel`: one structured log line per alert;
* :class:`WebhookChannel`: an HTTP(S) POST with a JSON body whose ``text`` field makes it
  a Slack or Mattermost incoming-webhook message, the alert itself under ``alert``;
* :class:`MailChannel`: a plain-text mail through an SMTP relay, STARTTLS verified
  against the system trust store or ``ca_file``;
* :class:`MemoryChannel`: the in-memory twin that records what it was given.

Deduplication (:func:`plan_dispatch`, pure): an alert is sent when its condition
becomes active; while it stays active it is not sent again; once it clears and
returns it is sent again, but never twice within ``quiet_period`` seconds. The
memory of what was sent is an :class:`AlertState` (in memory, or a JSON file so a
restart does not repeat every alert).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from smtptls.config import AlertsConfig, parse_hostport
from smtptls.errors import AlertDeliveryError, ConfigError
from smtptls.logs import get_logger
from smtptls.services.statefile import read_state, write_state

_log = get_logger("alerts")

#: Bytes of a webhook's answer read (only for the error message); the rest is dropped.
MAX_WEBHOOK_ANSWER = 4096
#: Characters of a message or fix kept in an alert (a mail line, a chat message).
MAX_ALERT_TEXT = 2000
#: Entries kept in the dedup state; the oldest cleared ones go first beyond it.
MAX_STATE_ENTRIES = 10000
#: Size of a state file read back; a larger one is ignored (and rewritten).
MAX_STATE_FILE = 8 * 1024 * 1024


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Alert:
    """One condition that needs the owner's attention.

    ``key`` identifies the condition for deduplication: the domain, the code and an
    optional ``subject`` (a reporter, a result type, an MX host) so that two reporters
    crossing a threshold are two alerts.
    """

    severity: Severity
    domain: str
    code: str
    message: str
    fix: str = ""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    subject: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.severity, Severity):
            object.__setattr__(self, "severity", Severity(self.severity))
        if not self.code:
            raise ValueError("an alert needs a code")
        object.__setattr__(self, "domain", self.domain.lower().rstrip("."))
        object.__setattr__(self, "message", self.message[:MAX_ALERT_TEXT])
        object.__setattr__(self, "fix", self.fix[:MAX_ALERT_TEXT])

    @property
    def key(self) -> str:
        return "|".join((self.domain, self.code, self.subject))

    @property
    def title(self) -> str:
        return f"[{self.severity.value}] {self.domain}: {self.message}"

    def to_text(self) -> str:
        lines = [self.title]
        if self.fix:
            lines.append(f"Fix: {self.fix}")
        if self.first_seen:
            lines.append(f"First seen: {_iso(self.first_seen)}")
        if self.last_seen:
            lines.append(f"Last seen: {_iso(self.last_seen)}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"severity": self.severity.value, "domain": self.domain, "code": self.code,
                "subject": self.subject, "message": self.message, "fix": self.fix,
                "first_seen": _iso(self.first_seen), "last_seen": _iso(self.last_seen)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(severity=Severity(data["severity"]), domain=str(data["domain"]),
                   code=str(data["code"]), message=str(data.get("message", "")),
                   fix=str(data.get("fix", "")), subject=str(data.get("subject", "")),
                   first_seen=_parse_iso(data.get("first_seen")),
                   last_seen=_parse_iso(data.get("last_seen")))


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# --- channels -----------------------------------------------------------------------------


class AlertChannel(Protocol):
    """Where alerts go. ``send`` raises :class:`AlertDeliveryError` on failure."""

    name: str

    async def send(self, alert: Alert) -> None: ...


class MemoryChannel:
    """The in-memory twin: keeps every alert it is given, fails on demand."""

    def __init__(self, name: str = "memory", *, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.sent: list[Alert] = []

    async def send(self, alert: Alert) -> None:
        if self.fail:
            raise AlertDeliveryError("memory channel set to fail", channel=self.name)
        self.sent.append(alert)


class LogChannel:
    """One log line per alert, at warning level (info alerts at info)."""

    name = "log"

    async def send(self, alert: Alert) -> None:
        emit = _log.info if alert.severity is Severity.INFO else _log.warning
        emit("alert", severity=alert.severity.value, domain=alert.domain, code=alert.code,
             subject=alert.subject, message=alert.message, fix=alert.fix,
             first_seen=_iso(alert.first_seen), last_seen=_iso(alert.last_seen))


def webhook_body(alert: Alert) -> dict[str, Any]:
    """The JSON POSTed: ``text`` for Slack/Mattermost incoming webhooks, ``alert`` for
    programs."""
    return {"text": alert.to_text(), "alert": alert.to_dict()}


class WebhookChannel:
    """POST the alert as JSON; any 2xx answer is a delivery."""

    name = "webhook"

    def __init__(self, url: str, *, timeout: float = 10.0, ca_file: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("webhook URL must be http:// or https:// with a host",
                              key="alerts.webhook_url")
        self.url = url
        self.timeout = timeout
        self.headers = dict(headers or {})
        # certificate verification always on for https (system store or ca_file)
        self._ssl = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" \
            else None

    def _where(self) -> str:
        parts = urlsplit(self.url)  # never the path: it is often the webhook's secret
        return f"{parts.scheme}://{parts.netloc}"

    async def send(self, alert: Alert) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(
                    self.url, json=webhook_body(alert), headers=self.headers,
                    ssl=self._ssl if self._ssl is not None else True,
                    allow_redirects=False) as resp:
                answer = await resp.content.read(MAX_WEBHOOK_ANSWER)
                if not 200 <= resp.status < 300:
                    raise AlertDeliveryError(
                        f"webhook {self._where()} answered {resp.status} "
                        f"{answer[:200].decode('utf-8', 'replace')!r}", channel=self.name)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise AlertDeliveryError(f"webhook {self._where()}: {type(exc).__name__}: "
                                     f"{str(exc)[:200]}", channel=self.name) from exc


def compose_alert_mail(alert: Alert, *, mail_from: str, rcpt_to: Sequence[str],
                       now: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = ", ".join(rcpt_to)
    msg["Subject"] = f"smtptls alert: {alert.title}"[:200]
    msg["Date"] = format_datetime(now if now.tzinfo else now.replace(tzinfo=UTC))
    domain = mail_from.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = make_msgid(domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
    msg.set_content(alert.to_text() + "\n")
    return msg


class MailChannel:
    """Mail the alert through an SMTP relay; STARTTLS (verified) unless turned off."""

    name = "mail"

    def __init__(self, *, relay: str, mail_from: str, rcpt_to: Sequence[str],
                 starttls: bool = True, ca_file: str | None = None, timeout: float = 30.0,
                 helo: str = "localhost", clock: Callable[[], datetime] | None = None) -> None:
        if not rcpt_to:
            raise ConfigError("no recipients", key="alerts.mail_to")
        if "@" not in mail_from:
            raise ConfigError("not a mail address", key="alerts.mail_from")
        self.relay = parse_hostport(relay, 25)
        self.mail_from = mail_from
        self.rcpt_to = list(rcpt_to)
        self.starttls = starttls
        self.ca_file = ca_file
        self.timeout = timeout
        self.helo = helo
        self._clock = clock or (lambda: datetime.now(UTC))

    def _submit(self, message: bytes) -> None:
        host, port = self.relay
        try:
            with smtplib.SMTP(host, port, timeout=self.timeout,
                              local_hostname=self.helo) as smtp:
                smtp.ehlo()
                if self.starttls:
                    if not smtp.has_extn("starttls"):
                        raise AlertDeliveryError(
                            f"relay {host}:{port} does not offer STARTTLS "
                            "(set alerts.smtp_starttls = false only for a local relay)",
                            channel=self.name)
                    smtp.starttls(context=ssl.create_default_context(cafile=self.ca_file))
                    smtp.ehlo()
                smtp.sendmail(self.mail_from, self.rcpt_to, message)
        except AlertDeliveryError:
            raise
        except smtplib.SMTPResponseException as exc:
            raise AlertDeliveryError(f"relay {host}:{port} answered {exc.smtp_code}",
                                     channel=self.name) from exc
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise AlertDeliveryError(f"relay {host}:{port}: {type(exc).__name__}: "
                                     f"{str(exc)[:200]}", channel=self.name) from exc

    async def send(self, alert: Alert) -> None:
        msg = compose_alert_mail(alert, mail_from=self.mail_from, rcpt_to=self.rcpt_to,
                                 now=self._clock())
        await asyncio.to_thread(self._submit, msg.as_bytes())


def channels_from_config(cfg: AlertsConfig) -> list[AlertChannel]:
    """The channels the ``[alerts]`` section configures (the log line when ``log``)."""
    out: list[AlertChannel] = []
    if cfg.log:
        out.append(LogChannel())
    if cfg.webhook_url:
        out.append(WebhookChannel(cfg.webhook_url, timeout=cfg.timeout, ca_file=cfg.ca_file))
    if cfg.mail_to:
        out.append(MailChannel(relay=cfg.smtp_relay, mail_from=cfg.mail_from or
                               "smtptls-alerts@localhost", rcpt_to=cfg.mail_to,
                               starttls=cfg.smtp_starttls, ca_file=cfg.ca_file,
                               timeout=cfg.timeout))
    return out


# --- deduplication --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SentRecord:
    """What the dispatcher remembers about one alert key."""

    last_sent: datetime
    active: bool = True


@dataclass(frozen=True, slots=True)
class DispatchPlan:
    send: tuple[Alert, ...]
    state: dict[str, SentRecord] = field(default_factory=dict)
    cleared: tuple[str, ...] = ()


def plan_dispatch(current: Iterable[Alert], state: Mapping[str, SentRecord], *,
                  now: datetime, quiet_period: float) -> DispatchPlan:
    """Decide which of the alerts active now to send, and the state after sending.

    Sent: a key not active before, unless it was sent less than ``quiet_period``
    seconds ago (it cleared and came back too soon). Keys no longer present are marked
    cleared. Pure: the caller sends and then keeps the new state (see
    :meth:`AlertDispatcher.dispatch` for what happens when a send fails).
    """
    new_state = dict(state)
    to_send: list[Alert] = []
    seen: set[str] = set()
    for alert in current:
        if alert.key in seen:
            continue
        seen.add(alert.key)
        rec = state.get(alert.key)
        if rec is not None and rec.active:
            continue
        if rec is not None and (now - rec.last_sent).total_seconds() < quiet_period:
            new_state[alert.key] = replace(rec, active=True)  # back, but quiet
            continue
        to_send.append(alert)
        new_state[alert.key] = SentRecord(last_sent=now, active=True)
    cleared = tuple(k for k, rec in state.items() if rec.active and k not in seen)
    for key in cleared:
        new_state[key] = replace(new_state[key], active=False)
    if len(new_state) > MAX_STATE_ENTRIES:
        old = sorted((k for k, r in new_state.items() if not r.active),
                     key=lambda k: new_state[k].last_sent)
        for key in old[:len(new_state) - MAX_STATE_ENTRIES]:
            del new_state[key]
    return DispatchPlan(send=tuple(to_send), state=new_state, cleared=cleared)


class AlertState(Protocol):
    def load(self) -> dict[str, SentRecord]: ...

    def save(self, state: Mapping[str, SentRecord]) -> None: ...


class MemoryAlertState:
    def __init__(self) -> None:
        self.state: dict[str, SentRecord] = {}

    def load(self) -> dict[str, SentRecord]:
        return dict(self.state)

    def save(self, state: Mapping[str, SentRecord]) -> None:
        self.state = dict(state)


class FileAlertState:
    """The dedup memory in a JSON file, replaced atomically on every save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, SentRecord]:
        data = read_state(self.path, MAX_STATE_FILE, "alert state")
        if data is None:
            return {}
        try:
            out: dict[str, SentRecord] = {}
            for key, value in data.items():
                when = _parse_iso(value.get("last_sent"))
                if when is not None:
                    out[str(key)] = SentRecord(last_sent=when, active=bool(value.get("active")))
            return out
        except (ValueError, AttributeError, TypeError):
            _log.warning("alert state not valid, starting empty", path=str(self.path))
            return {}

    def save(self, state: Mapping[str, SentRecord]) -> None:
        """Write the state; an unwritable file is logged (alerts may then repeat after a
        restart), never fatal."""
        write_state(self.path, {k: {"last_sent": _iso(r.last_sent), "active": r.active}
                                for k, r in state.items()}, "alert state", ".alerts-")


@dataclass(frozen=True, slots=True)
class DispatchResult:
    sent: tuple[Alert, ...]
    failed: tuple[tuple[Alert, str, str], ...]  # alert, channel, error
    suppressed: int
    cleared: tuple[str, ...]


class AlertDispatcher:
    """Send the alerts active now through every channel, each condition once.

    An alert counts as sent when at least one channel took it; when every channel
    failed it is not remembered, so the next evaluation tries again.
    """

    def __init__(self, channels: Sequence[AlertChannel], *, state: AlertState | None = None,
                 quiet_period: float = 86400.0,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.channels = list(channels)
        self.state = state if state is not None else MemoryAlertState()
        self.quiet_period = quiet_period
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = asyncio.Lock()

    async def dispatch(self, current: Iterable[Alert]) -> DispatchResult:
        current = list(current)
        async with self._lock:
            before = self.state.load()
            now = self._clock()
            plan = plan_dispatch(current, before, now=now, quiet_period=self.quiet_period)
            new_state = dict(plan.state)
            sent: list[Alert] = []
            failed: list[tuple[Alert, str, str]] = []
            for alert in plan.send:
                delivered = not self.channels
                for channel in self.channels:
                    try:
                        await channel.send(alert)
                        delivered = True
                    except AlertDeliveryError as exc:
                        _log.error("alert not delivered", channel=channel.name,
                                   domain=alert.domain, code=alert.code, error=str(exc))
                        failed.append((alert, channel.name, str(exc)))
                if delivered:
                    sent.append(alert)
                elif alert.key in before:
                    new_state[alert.key] = before[alert.key]
                else:
                    new_state.pop(alert.key, None)
            self.state.save(new_state)
        suppressed = len({a.key for a in current}) - len(plan.send)
        return DispatchResult(sent=tuple(sent), failed=tuple(failed), suppressed=suppressed,
                              cleared=plan.cleared)


def dispatcher_from_config(cfg: AlertsConfig, *,
                           channels: Sequence[AlertChannel] | None = None) -> AlertDispatcher:
    state: AlertState = FileAlertState(cfg.state_path) if cfg.state_path else MemoryAlertState()
    return AlertDispatcher(channels_from_config(cfg) if channels is None else channels,
                           state=state, quiet_period=cfg.quiet_period)
