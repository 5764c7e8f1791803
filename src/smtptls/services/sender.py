"""``smtptls tlsrpt send``: yesterday's counters -> one report per policy domain -> every rua.

For each policy domain with results on the reported UTC day (RFC 8460 §4.1):

1. **Discovery** (§3): the TXT record at ``_smtp._tls.<domain>`` through the configured
   resolver, cached for its TTL (negative answers too). No record, several records or an
   invalid one: the domain does not take reports, nothing is sent.
2. **The report** (§4): built from the store's counters, validated with our own strict
   parser before it leaves (a failure is logged and the report still goes: receivers
   are tolerant, the data is ours), gzip-compressed (§5.3).
3. **Delivery** to every ``rua`` URI, each tracked on its own (``tlsrpt_delivery``),
   through a :class:`~smtptls.net.report_delivery.ReportTransport` (this module
   schedules and keeps the books; :mod:`smtptls.net.report_delivery` does the I/O):

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
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from smtptls.config import Config, TlsrptConfig
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
from smtptls.net.protocols import Resolver
from smtptls.net.report_delivery import HttpsDelivery, MailDelivery, ReportTransport
from smtptls.store.results_base import DeliveryRecord, DeliveryStatus, ResultStore
from smtptls.tlsrpt.reader import parse_report
from smtptls.tlsrpt.record import TlsrptRecord, parse_txt_records, record_name
from smtptls.tlsrpt.report import Report
from smtptls.tlsrptsend.aggregate import (
    ContactDomainError,
    ReportIdentity,
    build_reports,
    day_range,
    previous_day,
)
from smtptls.tlsrptsend.outgoing import (
    gzip_report,
    report_filename,
    report_subject,
)

__all__ = [
    "DeliveryOutcome",
    "PlannedReport",
    "ReportSender",
    "RuaResolver",
    "backoff_delay",
    "first_attempt_at",
    "identity_from_config",
]

_log = get_logger("tlsrpt.send")

MIN_TTL, MAX_TTL = 60, 86400  # bounds on how long a _smtp._tls answer is cached
NEGATIVE_TTL = 3600
DNS_RETRY_URI = "dns:"  # the delivery row of a report whose rua lookup failed


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
    """The report identity of ``[tlsrpt]``, checked (RFC 8460 §4.4, §5.3); a
    :class:`ConfigError` names the key at fault."""
    submitter = cfg.submitter or socket.getfqdn()
    try:
        return ReportIdentity.with_defaults(submitter, cfg.organization_name, cfg.contact_info)
    except ContactDomainError as exc:
        raise ConfigError(str(exc), key="tlsrpt.contact_info") from exc
    except ReportError as exc:
        raise ConfigError(str(exc), key="tlsrpt.submitter") from exc


# --- rua discovery ----------------------------------------------------------------------------


class RuaResolver:
    """``_smtp._tls.<domain>`` (RFC 8460 §3) through the configured resolver, cached for
    the answer's TTL (bounded), negative answers for their SOA TTL."""

    def __init__(self, dns: Resolver, *, size: int = 10000,
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

    def __init__(self, config: Config, store: ResultStore, *, dns: Resolver,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 https: ReportTransport | None = None, mail: ReportTransport | None = None,
                 rng: random.Random | None = None,
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
            return str(await self.https.deliver(report, uri, unique=str(index), now=now))
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
