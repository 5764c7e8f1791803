"""``smtptls tlsrpt send``: yesterday's counters -> one report per policy domain -> every rua.

For each policy domain with results on the reported UTC day (RFC 8460 §4.1):

1. **Discovery** (§3): the TXT record at ``_smtp._tls.<domain>`` through the configured
   resolver, cached for its TTL (negative answers too). No record, several records or an
   invalid one: the domain does not take reports, nothing is sent.
2. **The report** (§4): built from the store's counters, validated with our own strict
   parser before it leaves (a failure is logged and the report still goes: receivers
   are tolerant, the data is ours), gzip-compressed (§5.3).
3. **Delivery** to every ``rua`` URI, each tracked on its own (``tlsrpt_delivery``):

   - ``https:`` — POST with ``Content-Type: application/tlsrpt+gzip`` (§5.4); only a 2xx
     answer is success; other 4xx are permanent, 5xx, 408, 429 and network errors
     temporary. Certificate verification is always on; redirects are not followed.
   - ``mailto:`` — a §5.3 ``multipart/report`` mail, DKIM-signed without ``l=``, handed
     to ``smtp_relay``; 5xx is permanent, 4xx and connection errors temporary.

   **Spreading** (§5.3 "MAY"): the first attempt of each (report, URI) is at a moment
   within ``send_window`` seconds after 00:00 UTC, fixed by a hash of the report-id and
   URI, so thousands of senders do not all knock at 00:00 and a rerun keeps the
   schedule. **Retries**: exponential back-off from ``retry_initial`` doubling up to
   ``retry_max``, with jitter, until ``give_up_after`` seconds after the first attempt;
   then, like a permanent failure, the delivery is recorded as failed. A retry sends the
   same report-id (the receiver de-duplicates).

Run it from cron every few minutes (each run sends what is due and exits), or with
``--loop`` as a daemon. ``--dry-run`` shows what would be sent and changes nothing.
The clock is injectable (tests, replays).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import random
import smtplib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp

from smtptls.config import Config, TlsrptConfig, parse_hostport
from smtptls.errors import (
    ConfigError,
    DnsError,
    ReportDeliveryError,
    ReportError,
    SmtpTlsError,
    StoreError,
    TlsrptRecordError,
)
from smtptls.logs import get_logger
from smtptls.store.results_base import DeliveryRecord, DeliveryStatus, ResultStore
from smtptls.tlsrpt.reader import parse_report
from smtptls.tlsrpt.record import TlsrptRecord, parse_txt_records, record_name
from smtptls.tlsrpt.report import Report
from smtptls.tlsrptsend.aggregate import ReportIdentity, build_reports, day_range, previous_day
from smtptls.tlsrptsend.outgoing import (
    compose_report_mail,
    dkim_sign,
    gzip_report,
    https_post,
    mailto_addresses,
    report_filename,
    report_subject,
)

__all__ = [
    "DeliveryOutcome",
    "HttpsDelivery",
    "MailDelivery",
    "PlannedReport",
    "ReportSender",
    "RuaResolver",
    "backoff_delay",
    "first_attempt_at",
    "identity_from_config",
]

_log = get_logger("tlsrpt.send")

MAX_KEY_FILE = 64 * 1024
MAX_RESPONSE = 64 * 1024  # bytes of an HTTP answer read (and ignored)
MIN_TTL, MAX_TTL = 60, 86400  # bounds on how long a _smtp._tls answer is cached
NEGATIVE_TTL = 3600
DNS_RETRY_URI = "dns:"  # the delivery row of a report whose rua lookup failed
USER_AGENT = "smtptls-tlsrpt/0.1"


# --- schedule ---------------------------------------------------------------------------------


def _fraction(*parts: str) -> float:
    digest = hashlib.sha256("\n".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def first_attempt_at(day: date, report_id: str, uri: str, window: float) -> datetime:
    """The first attempt for (report, URI): 00:00 UTC of the next day plus a stable
    share of ``window`` (RFC 8460 §5.3: spread the sending over time)."""
    _, end = day_range(day)
    return end + timedelta(seconds=1) + timedelta(seconds=window * _fraction(report_id, uri))


def backoff_delay(attempts: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Exponential back-off with jitter: ``initial * 2**(n-1)`` capped at ``maximum``,
    times a random factor in [0.5, 1.5)."""
    base = min(maximum, initial * 2 ** max(0, min(attempts - 1, 30)))
    return base * (0.5 + rng.random())


# --- identity ---------------------------------------------------------------------------------


def identity_from_config(cfg: TlsrptConfig) -> ReportIdentity:
    submitter = cfg.submitter or socket.getfqdn()
    try:
        return ReportIdentity.with_defaults(submitter, cfg.organization_name, cfg.contact_info)
    except ReportError as exc:
        raise ConfigError(str(exc), key="tlsrpt.submitter") from None


# --- rua discovery ----------------------------------------------------------------------------


class RuaResolver:
    """``_smtp._tls.<domain>`` (RFC 8460 §3) through the configured resolver, cached for
    the answer's TTL (bounded), negative answers for their SOA TTL."""

    def __init__(self, dns: Any, *, size: int = 10000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.dns = dns
        self.size = max(1, size)
        self.clock = clock
        self._cache: collections.OrderedDict[str, tuple[float, TlsrptRecord | None, str]] = \
            collections.OrderedDict()
        self.lookups = 0

    async def lookup(self, domain: str) -> tuple[TlsrptRecord | None, str]:
        """The record, or None and why there is none. Raises :class:`DnsError` when DNS
        cannot say (temporary: the caller retries)."""
        now = self.clock()
        hit = self._cache.get(domain)
        if hit is not None and hit[0] > now:
            self._cache.move_to_end(domain)
            return hit[1], hit[2]
        self.lookups += 1
        answer = await self.dns.txt(record_name(domain))
        ttl = answer.ttl if answer.records else (answer.ttl or NEGATIVE_TTL)
        why = ""
        try:
            record = parse_txt_records(answer.records)
            if record is None:
                why = "no TLSRPT record"
        except TlsrptRecordError as exc:
            # RFC 8460 §3: several records, or an invalid one: no TLSRPT for the domain
            record, why = None, f"unusable TLSRPT record: {exc}"
        if record is not None and not record.report_uris:
            record, why = None, "TLSRPT record has no mailto: or https: rua"
        self._cache[domain] = (now + max(MIN_TTL, min(MAX_TTL, ttl)), record, why)
        self._cache.move_to_end(domain)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return record, why


# --- delivery transports ----------------------------------------------------------------------


class HttpsDelivery:
    """RFC 8460 §5.4: POST the gzip report; only a 2xx answer counts as delivered."""

    def __init__(self, *, dns: Any = None, ca_file: str | None = None,
                 timeout: float = 60.0) -> None:
        self.dns = dns
        self.timeout = timeout
        try:
            self.ssl = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load CA file {ca_file}: {exc}",
                              key="tlsrpt.ca_file") from None
        # never disabled: a report is only given to the host the URI names
        self.ssl.check_hostname = True
        self.ssl.verify_mode = ssl.CERT_REQUIRED
        self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2

    async def deliver(self, report: Report, uri: str) -> str:
        post = https_post(report, uri, user_agent=USER_AGENT)
        resolver = None
        if self.dns is not None:
            from smtptls.net.https import DnsAiohttpResolver

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
                                      f"{str(exc)[:200]}", uri=uri) from None
        except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
            raise ReportDeliveryError(f"HTTPS POST failed: {type(exc).__name__}: "
                                      f"{str(exc)[:200]}", uri=uri) from None
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
                                  key="tlsrpt.dkim_key_file") from None
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
                                      permanent=all(c >= 500 for c in codes)) from None
        except smtplib.SMTPResponseException as exc:
            raise ReportDeliveryError(f"relay answered {exc.smtp_code} {_text(exc.smtp_error)}",
                                      permanent=exc.smtp_code >= 500) from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise ReportDeliveryError(f"SMTP relay {host}:{port}: {type(exc).__name__}: "
                                      f"{str(exc)[:200]}") from None
        if refused:
            # some addresses of the URI took it; the others are reported, not retried
            _log.warning("relay refused some recipients", refused=sorted(refused))
        return f"{code} {_text(text)}"

    async def deliver(self, report: Report, uri: str, *, unique: str, now: datetime) -> str:
        rcpts, message, _ = self.compose(report, uri, unique=unique, now=now)
        return await asyncio.to_thread(self._submit, rcpts, message)


# --- planning and sending ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedReport:
    """One policy domain's report and where it goes (or why it goes nowhere)."""

    domain: str
    report: Report
    uris: tuple[str, ...] = ()
    skipped: str = ""  # why there is no rua (no record, ...)
    dns_error: str = ""  # the lookup failed: retried later
    validation: str = ""  # our strict parser's complaint, if any

    def to_dict(self, *, with_report: bool = False, submitter: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy_domain": self.domain,
            "report_id": self.report.report_id,
            "successful": self.report.total_successful,
            "failed": self.report.total_failed,
            "rua": list(self.uris),
            "skipped": self.skipped or None,
            "dns_error": self.dns_error or None,
            "gzip_bytes": len(gzip_report(self.report)),
        }
        if submitter:
            out["subject"] = report_subject(self.report, submitter)
            out["filename"] = report_filename(self.report, submitter)
        if self.validation:
            out["validation"] = self.validation
        if with_report:
            out["report"] = self.report.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """What one run did for one (report, URI)."""

    domain: str
    report_id: str
    uri: str
    status: DeliveryStatus
    attempted: bool
    detail: str = ""
    next_attempt: datetime | None = None
    attempts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"policy_domain": self.domain, "report_id": self.report_id, "uri": self.uri,
                "status": str(self.status), "attempted": self.attempted,
                "attempts": self.attempts, "detail": self.detail,
                "next_attempt": None if self.next_attempt is None else
                self.next_attempt.strftime("%Y-%m-%dT%H:%M:%SZ")}


@dataclass(slots=True)
class RunSummary:
    day: date
    planned: list[PlannedReport] = field(default_factory=list)
    outcomes: list[DeliveryOutcome] = field(default_factory=list)

    def to_dict(self, *, dry_run: bool = False, submitter: str = "",
                with_report: bool = False) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "dry_run": dry_run,
                "reports": [p.to_dict(with_report=with_report, submitter=submitter)
                            for p in self.planned],
                "deliveries": [o.to_dict() for o in self.outcomes]}


class ReportSender:
    """Plans and delivers the reports of one day (see the module docstring)."""

    def __init__(self, config: Config, store: ResultStore, *, dns: Any,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 https: Any = None, mail: Any = None, rng: random.Random | None = None,
                 identity: ReportIdentity | None = None) -> None:
        self.config = config
        self.cfg = config.tlsrpt
        self.store = store
        self.clock = clock
        self.identity = identity or identity_from_config(self.cfg)
        self.resolver = RuaResolver(dns, size=self.cfg.rua_cache_size)
        self.https = https or HttpsDelivery(dns=dns, ca_file=self.cfg.ca_file,
                                            timeout=self.cfg.http_timeout)
        self.mail = mail or MailDelivery(self.cfg, self.identity)
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrecy

    # -- planning ------------------------------------------------------------------------------

    async def plan(self, day: date) -> list[PlannedReport]:
        tally = await self.store.tally(day)
        planned = []
        for report in build_reports(tally, self.identity):
            domain = report.policy_domains[0]
            validation = ""
            try:
                # RFC 8460 §4: our own output must be a strictly valid report
                if parse_report(report.to_json(), strict=True) != report:
                    validation = "report does not read back identically"
            except ReportError as exc:
                validation = str(exc)
                _log.warning("own report not strictly valid", domain=domain, error=validation)
            try:
                record, why = await self.resolver.lookup(domain)
            except DnsError as exc:
                planned.append(PlannedReport(domain, report, dns_error=str(exc)[:300],
                                             validation=validation))
                continue
            if record is None:
                planned.append(PlannedReport(domain, report, skipped=why,
                                             validation=validation))
                continue
            planned.append(PlannedReport(domain, report, record.report_uris,
                                         validation=validation))
        return planned

    # -- one delivery --------------------------------------------------------------------------

    async def _attempt(self, planned: PlannedReport, uri: str, index: int, now: datetime
                       ) -> str:
        report = planned.report
        size = len(gzip_report(report))
        if size > self.cfg.max_report_size:
            raise ReportDeliveryError(f"report of {size} bytes is over max_report_size",
                                      uri=uri, permanent=True)
        scheme = uri.partition(":")[0].lower()
        if scheme == "https":
            return str(await self.https.deliver(report, uri))
        if scheme == "mailto":
            return str(await self.mail.deliver(report, uri, unique=str(index), now=now))
        raise ReportDeliveryError(f"unsupported rua scheme {scheme!r}", uri=uri, permanent=True)

    def _after_failure(self, record: DeliveryRecord, now: datetime, error: str,
                       permanent: bool) -> DeliveryRecord:
        """A failed attempt: permanent, given up (RFC 8460 §5.3: retry for about a day,
        counted from the first attempt, ``created_at``), or retried after a back-off."""
        given_up = (now - record.created_at).total_seconds() >= self.cfg.give_up_after
        if permanent or given_up:
            why = error if permanent else f"gave up after {self.cfg.give_up_after:g} s: {error}"
            return record.attempted(now, status=DeliveryStatus.FAILED, error=why)
        delay = backoff_delay(record.attempts + 1, self.cfg.retry_initial, self.cfg.retry_max,
                              self.rng)
        return record.attempted(now, status=DeliveryStatus.PENDING, error=error,
                                next_attempt=now + timedelta(seconds=delay))

    async def _deliver_one(self, planned: PlannedReport, uri: str, index: int, day: date,
                           *, dry_run: bool, force: bool) -> DeliveryOutcome:
        report = planned.report
        now = self.clock()
        record = await self.store.get_delivery(report.report_id, uri)
        if record is None:
            first = now if force else first_attempt_at(day, report.report_id, uri,
                                                       self.cfg.send_window)
            record = DeliveryRecord(report.report_id, uri, day.isoformat(), planned.domain,
                                    created_at=first, next_attempt=first)
            if not dry_run:
                await self.store.put_delivery(record)
        if record.status is not DeliveryStatus.PENDING:
            return DeliveryOutcome(planned.domain, report.report_id, uri, record.status, False,
                                   record.last_error, None, record.attempts)
        due = record.next_attempt is None or record.next_attempt <= now or force
        if not due or dry_run:
            return DeliveryOutcome(planned.domain, report.report_id, uri, record.status, False,
                                   "would send now" if due else "scheduled",
                                   record.next_attempt, record.attempts)
        if record.attempts == 0:
            # the retry period starts with the first attempt
            record = DeliveryRecord(record.report_id, record.uri, record.day,
                                    record.policy_domain, created_at=now,
                                    next_attempt=record.next_attempt)
        try:
            detail = await self._attempt(planned, uri, index, now)
        except ReportDeliveryError as exc:
            record = self._after_failure(record, now, str(exc), exc.permanent)
            _log.warning("report delivery failed", domain=planned.domain, uri=uri[:100],
                         error=str(exc)[:200], permanent=exc.permanent,
                         status=str(record.status))
        except SmtpTlsError as exc:
            record = self._after_failure(record, now, str(exc), False)
        else:
            record = record.attempted(now, status=DeliveryStatus.DELIVERED, error="")
            _log.info("report delivered", domain=planned.domain, uri=uri[:100],
                      report_id=report.report_id, detail=detail)
            await self.store.put_delivery(record)
            return DeliveryOutcome(planned.domain, report.report_id, uri, record.status, True,
                                   detail, None, record.attempts)
        await self.store.put_delivery(record)
        return DeliveryOutcome(planned.domain, report.report_id, uri, record.status, True,
                               record.last_error, record.next_attempt, record.attempts)

    async def _dns_retry(self, planned: PlannedReport, day: date, *, dry_run: bool
                         ) -> DeliveryOutcome:
        """The rua lookup failed: keep a pending row so the report is retried (and given
        up after the retry period like any delivery)."""
        now = self.clock()
        rid = planned.report.report_id
        record = await self.store.get_delivery(rid, DNS_RETRY_URI) or DeliveryRecord(
            rid, DNS_RETRY_URI, day.isoformat(), planned.domain, created_at=now)
        if record.status is not DeliveryStatus.PENDING or dry_run:
            return DeliveryOutcome(planned.domain, rid, DNS_RETRY_URI, record.status, False,
                                   planned.dns_error, record.next_attempt, record.attempts)
        if record.attempts == 0:
            record = DeliveryRecord(rid, DNS_RETRY_URI, day.isoformat(), planned.domain,
                                    created_at=now)
        record = self._after_failure(record, now, f"rua lookup: {planned.dns_error}", False)
        await self.store.put_delivery(record)
        return DeliveryOutcome(planned.domain, rid, DNS_RETRY_URI, record.status, True,
                               record.last_error, record.next_attempt, record.attempts)

    # -- a run ---------------------------------------------------------------------------------

    async def run_day(self, day: date | None = None, *, dry_run: bool = False,
                      force: bool = False) -> RunSummary:
        """Plan ``day`` (default: the previous UTC day) and deliver what is due.
        ``force`` sends at once, ignoring the spreading schedule and back-off."""
        day = day or previous_day(self.clock())
        summary = RunSummary(day, await self.plan(day))
        for planned in summary.planned:
            if planned.dns_error:
                summary.outcomes.append(await self._dns_retry(planned, day, dry_run=dry_run))
                continue
            for index, uri in enumerate(planned.uris):
                summary.outcomes.append(await self._deliver_one(
                    planned, uri, index, day, dry_run=dry_run, force=force))
        if not dry_run and self.cfg.retention_days:
            with contextlib.suppress(StoreError):
                await self.store.prune(day - timedelta(days=self.cfg.retention_days))
        return summary

    async def run_pending(self, *, days: int = 2, dry_run: bool = False,
                          force: bool = False) -> list[RunSummary]:
        """The previous UTC day and the ``days - 1`` before it (their retries), newest
        first."""
        last = previous_day(self.clock())
        out = []
        for back in range(days):
            out.append(await self.run_day(last - timedelta(days=back), dry_run=dry_run,
                                          force=force))
        return out

    async def next_due(self) -> datetime | None:
        """When the next pending delivery is due (for ``--loop``)."""
        pending = await self.store.deliveries(status=DeliveryStatus.PENDING, limit=10000)
        times = [d.next_attempt for d in pending if d.next_attempt is not None]
        return min(times) if times else None


async def run_loop(sender: ReportSender, *, stop: asyncio.Event,
                   sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
                   max_sleep: float = 300.0) -> None:
    """``--loop``: run, then sleep until the next due delivery (at most ``max_sleep``)."""
    while not stop.is_set():
        try:
            await sender.run_pending()
        except SmtpTlsError as exc:
            _log.error("send run failed", error=str(exc))
        due = await sender.next_due()
        now = sender.clock()
        wait = max_sleep if due is None else min(max_sleep, max(1.0, (due - now).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
