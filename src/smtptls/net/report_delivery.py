"""Report delivery, RFC 8460 §5.3 and §5.4: the HTTPS POST and the mail, one Protocol.

:class:`ReportTransport` is what the sender (:mod:`smtptls.services.sender`, scheduling
and bookkeeping only) hands a report and a ``rua`` URI to, as httpx hands a request to
its transport:

- :class:`HttpsDelivery` — ``https:``: POST with ``Content-Type:
  application/tlsrpt+gzip`` (§5.4); only a 2xx answer is success; other 4xx are
  permanent, 5xx, 408, 425, 429 and network errors temporary. Certificate verification
  is always on; redirects are not followed.
- :class:`MailDelivery` — ``mailto:``: the §5.3 ``multipart/report`` mail, DKIM-signed
  without ``l=``, handed to ``smtp_relay``; 5xx is permanent, 4xx and connection errors
  temporary.
- :class:`MemoryTransport` — the in-memory twin (like httpx's ``MockTransport``): it
  records what it is given and answers what its handler says, for tests and for
  library users who deliver reports their own way.

Every failure is a :class:`~smtptls.errors.ReportDeliveryError` saying whether retrying
can help (``permanent``).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp

from smtptls.config import TlsrptConfig, parse_hostport
from smtptls.errors import ConfigError, ReportDeliveryError
from smtptls.logs import get_logger
from smtptls.net.https import DnsAiohttpResolver
from smtptls.net.protocols import Resolver
from smtptls.tlsrpt.report import Report
from smtptls.tlsrptsend.aggregate import ReportIdentity
from smtptls.tlsrptsend.outgoing import compose_report_mail, dkim_sign, https_post, mailto_addresses

__all__ = [
    "Delivered",
    "HttpsDelivery",
    "MailDelivery",
    "MemoryTransport",
    "ReportTransport",
]

_log = get_logger("tlsrpt.send")

MAX_KEY_FILE = 64 * 1024  # a DKIM private key in PEM is a few KiB
MAX_RESPONSE = 64 * 1024  # bytes of an HTTP answer read (and ignored)
USER_AGENT = "smtptls-tlsrpt/0.1"


class ReportTransport(Protocol):
    """Delivers one report to one ``rua`` URI: the receiver's answer on success, else
    :class:`~smtptls.errors.ReportDeliveryError` (``permanent`` when retrying cannot
    help). *unique* tells the deliveries of one report apart (the index of its URI);
    *now* is the moment of the attempt (a mail's ``Date``)."""

    async def deliver(self, report: Report, uri: str, *, unique: str = "",
                      now: datetime | None = None) -> str: ...


class HttpsDelivery:
    """RFC 8460 §5.4: POST the gzip report; only a 2xx answer counts as delivered."""

    def __init__(self, *, dns: Resolver | None = None, ca_file: str | None = None,
                 timeout: float = 60.0) -> None:
        self.dns = dns
        self.timeout = timeout
        try:
            self.ssl = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA file {ca_file}: {exc}",
                              key="tlsrpt.ca_file") from exc
        # never disabled: a report is only given to the host the URI names
        self.ssl.check_hostname = True
        self.ssl.verify_mode = ssl.CERT_REQUIRED
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2

    async def deliver(self, report: Report, uri: str, *, unique: str = "",
                      now: datetime | None = None) -> str:
        """POST *report* to the ``https:`` *uri*; the answer's status line on success."""
        post = https_post(report, uri, user_agent=USER_AGENT)
        resolver = None
        if self.dns is not None:
            resolver = DnsAiohttpResolver(self.dns)
        connector = aiohttp.TCPConnector(ssl=self.ssl, resolver=resolver, use_dns_cache=False,
                                         force_close=True, limit=1)
        timeout = aiohttp.ClientTimeout(total=self.timeout, connect=min(30.0, self.timeout))
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                             cookie_jar=aiohttp.DummyCookieJar(),
                                             trust_env=False) as session, \
                    session.post(post.url, data=post.body, headers=dict(post.headers),
                                 allow_redirects=False) as resp:
                await resp.content.read(MAX_RESPONSE)
                status = resp.status
        except aiohttp.ClientConnectorCertificateError as exc:
            raise ReportDeliveryError(f"TLS certificate of {uri[:100]} not valid: "
                                      f"{str(exc)[:200]}", uri=uri) from exc
        except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
            raise ReportDeliveryError(f"HTTPS POST failed: {type(exc).__name__}: "
                                      f"{str(exc)[:200]}", uri=uri) from exc
        if 200 <= status < 300:
            return f"HTTP {status}"
        # RFC 8460 §5.4: anything but 2xx is a failure; 4xx will not change by retrying,
        # except request timeout and rate limiting
        permanent = 300 <= status < 500 and status not in (408, 425, 429)
        raise ReportDeliveryError(f"HTTP {status}", uri=uri, permanent=permanent)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return " ".join(str(value).split())[:200]


class MailDelivery:
    """RFC 8460 §5.3: the DKIM-signed report mail through the configured SMTP relay."""

    def __init__(self, cfg: TlsrptConfig, identity: ReportIdentity) -> None:
        self.identity = identity
        self.relay = parse_hostport(cfg.smtp_relay, 25)
        self.starttls = cfg.smtp_starttls
        self.timeout = cfg.smtp_timeout
        self.ca_file = cfg.ca_file
        self.mail_from = cfg.mail_from or f"noreply-tlsrpt@{identity.submitter}"
        self.selector = cfg.dkim_selector
        self.dkim_domain = (cfg.dkim_domain or identity.submitter).lower().rstrip(".")
        self.key: bytes | None = None
        if cfg.dkim_key_file:
            try:
                with open(cfg.dkim_key_file, "rb") as f:
                    self.key = f.read(MAX_KEY_FILE + 1)
            except OSError as exc:
                raise ConfigError(f"cannot read {cfg.dkim_key_file}: {exc.strerror}",
                                  key="tlsrpt.dkim_key_file") from exc
            if len(self.key) > MAX_KEY_FILE:
                raise ConfigError("DKIM key file too large", key="tlsrpt.dkim_key_file")

    @property
    def ready(self) -> str | None:
        """None when mail can be sent, else why not."""
        if not self.key or not self.selector:
            # RFC 8460 §5.3: report mail MUST be DKIM-signed
            return "report mail must be DKIM-signed: set tlsrpt.dkim_selector and dkim_key_file"
        return None

    def compose(self, report: Report, uri: str, *, unique: str, now: datetime) -> tuple[
            list[str], bytes, str]:
        rcpts = mailto_addresses(uri)
        mail = compose_report_mail(report, submitter=self.identity.submitter,
                                   mail_from=self.mail_from, rcpt_to=rcpts, date=now,
                                   unique=unique)
        if self.ready is not None:
            raise ReportDeliveryError(self.ready, uri=uri, permanent=True)
        assert self.key is not None
        signed = dkim_sign(mail.message, selector=self.selector, domain=self.dkim_domain,
                           private_key=self.key)
        return rcpts, signed, mail.message_id

    def _submit(self, rcpts: list[str], message: bytes) -> str:
        host, port = self.relay
        try:
            with smtplib.SMTP(host, port, timeout=self.timeout,
                              local_hostname=self.identity.submitter) as smtp:
                smtp.ehlo()
                if self.starttls:
                    ctx = ssl.create_default_context(cafile=self.ca_file)
                    smtp.starttls(context=ctx)
                    smtp.ehlo()
                code, text = smtp.mail(self.mail_from)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, text, self.mail_from)
                refused = {}
                for rcpt in rcpts:
                    code, text = smtp.rcpt(rcpt)
                    if code not in (250, 251):
                        refused[rcpt] = (code, text)
                if len(refused) == len(rcpts):
                    raise smtplib.SMTPRecipientsRefused(refused)
                code, text = smtp.data(message)
                if code != 250:
                    raise smtplib.SMTPDataError(code, text)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [c for c, _ in exc.recipients.values()]
            raise ReportDeliveryError(f"relay refused the recipients: {codes}",
                                      permanent=all(c >= 500 for c in codes)) from exc
        except smtplib.SMTPResponseException as exc:
            raise ReportDeliveryError(f"relay answered {exc.smtp_code} {_text(exc.smtp_error)}",
                                      permanent=exc.smtp_code >= 500) from exc
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise ReportDeliveryError(f"SMTP relay {host}:{port}: {type(exc).__name__}: "
                                      f"{str(exc)[:200]}") from exc
        if refused:
            # some addresses of the URI took it; the others are reported, not retried
            _log.warning("relay refused some recipients", refused=sorted(refused))
        return f"{code} {_text(text)}"

    async def deliver(self, report: Report, uri: str, *, unique: str = "",
                      now: datetime | None = None) -> str:
        """Mail *report* to the ``mailto:`` *uri* through the relay; its final reply."""
        rcpts, message, _ = self.compose(report, uri, unique=unique,
                                         now=now or datetime.now(UTC))
        return await asyncio.to_thread(self._submit, rcpts, message)


@dataclass(frozen=True, slots=True)
class Delivered:
    """One delivery a :class:`MemoryTransport` was given."""

    report: Report
    uri: str
    unique: str
    now: datetime | None


class MemoryTransport:
    """The in-memory :class:`ReportTransport`: records every delivery in
    :attr:`delivered` and answers with *handler* (``handler(report, uri)`` returns the
    answer or raises :class:`~smtptls.errors.ReportDeliveryError`); without a handler
    every delivery succeeds with the answer ``"delivered"``."""

    def __init__(self, handler: Callable[[Report, str], str] | None = None) -> None:
        self.handler = handler
        self.delivered: list[Delivered] = []

    async def deliver(self, report: Report, uri: str, *, unique: str = "",
                      now: datetime | None = None) -> str:
        self.delivered.append(Delivered(report, uri, unique, now))
        return "delivered" if self.handler is None else self.handler(report, uri)
