"""``smtptls tlsrpt collect``: TLS session results in, counters in the result store out.

Sources (any combination, all feeding one :class:`Collector`):

- **libtlsrpt datagrams** (Postfix >= 3.10, ``smtp_tlsrpt_socket_name``): an
  ``AF_UNIX``/``SOCK_DGRAM`` socket; one JSON datagram per delivery attempt
  (:mod:`smtptls.tlsrptsend.libtlsrpt`). The protocol is fire and forget: the MTA never
  waits, so datagrams are batched and written every ``flush_interval`` seconds (or
  every ``batch_size`` results). A crash loses at most the last interval.
- **Postfix logs**, for any Postfix version: files followed like ``tail -F``
  (:class:`LogFollower`: a rotated file is read until it is quiet, then the new one
  from its start; a truncated file from its start, after the rest of its copy), or
  journald through ``journalctl -o json -f`` (an argument list, never a shell). Lines
  become sessions (:class:`~smtptls.tlsrptsend.postfix_log.PostfixLogParser`) and sessions
  results under the policy that applied (:class:`PolicyLookup`). Batched like
  datagrams; each file's read position is committed in the transaction of the results
  its lines gave, so a restart (clean or not) resumes after the last counted line:
  nothing lost, nothing counted twice.
- **Python API** for other MTAs: ``await collector.record(result)`` returns once the
  result is committed.
- **HTTP** ``POST /v1/results`` (JSON, the form of
  :meth:`~smtptls.tlsrptsend.results.SessionResult.to_dict`; one object, a list, or
  ``{"results": [...]}``): answered ``200`` only after the commit, ``400`` with the
  reason for a bad result, ``503`` when the store is down. A ``Bearer`` token is
  required when one is configured (and when listening beyond loopback). With an
  ``Idempotency-Key`` (the client's batch id) a retried batch is counted once
  (``duplicate``; ``409`` when the key comes back with other results); without one a
  retry after a lost answer counts twice (at-least-once).
  :func:`smtptls.net.results_client.post_results` is the client.

Report mails of our own are never counted (their Message-ID is recognised in
Postfix's log; API and HTTP callers may pass ``message-id``), so reports never loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from smtptls.config import Config, parse_hostport
from smtptls.errors import (
    ConfigError,
    DatagramError,
    ResultError,
    SmtpTlsError,
    StoreError,
)
from smtptls.logs import get_logger
from smtptls.net.results_client import IDEMPOTENCY_HEADER
from smtptls.store.open import open_result_store
from smtptls.store.results_base import (
    Batch,
    BatchOutcome,
    LogPosition,
    ResultStore,
    check_batch_id,
)
from smtptls.tlsrpt.report import ResultType
from smtptls.tlsrptsend.exim_log import EximLogParser
from smtptls.tlsrptsend.libtlsrpt import MAX_DATAGRAM, CachedDecoder
from smtptls.tlsrptsend.postfix_lines import is_report_message_id
from smtptls.tlsrptsend.postfix_log import LogSession, PostfixLogParser, fold_key, fold_sessions
from smtptls.tlsrptsend.postfix_results import PolicyContext, session_result
from smtptls.tlsrptsend.results import SessionResult, loads_bounded, normalize_ip

__all__ = [
    "CachePolicyLookup",
    "Collector",
    "CollectorMetrics",
    "CollectorService",
    "DatagramListener",
    "EnginePolicyLookup",
    "JournalFollower",
    "LogFollower",
    "NoPolicyLookup",
    "PolicyLookup",
    "StaticPolicyLookup",
    "context_from_explanation",
    "position_name",
    "run_collector",
]

_log = get_logger("tlsrpt.collect")

MAX_HTTP_BODY = 4 * 1024 * 1024
MAX_HTTP_RESULTS = 10_000
MAX_READ = 1024 * 1024  # bytes of a log file read at once
MAX_CHUNKS = 8  # reads per poll: a backlog is handed on in steps of at most 8 MiB
MAX_PARTIAL = 64 * 1024  # an unterminated line longer than this is dropped
# A rotated log is read until it has had no new data for this long, then the new file:
# a syslog daemon writes to the old file until it reopens (on SIGHUP), and a line it
# wrote there after the rename must not be lost (tail -F closes it at once).
ROTATED_QUIET = 2.0
TAIL_BYTES = 1024  # bytes before a read position whose digest identifies it
RESUME_REPLAY = 1024 * 1024  # bytes before a resumed position read again (open sessions)
MAX_SIBLINGS = 64  # rotated files next to a log looked at for a position or a copy
MAX_DIR_ENTRIES = 10_000  # directory entries looked at for them
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".Z")  # not read
BACKLOG_WAIT = 30.0  # seconds log results wait for room in a full collector, then drop
SOCKET_RCVBUF = 4 * 1024 * 1024
CONTEXT_TTL = 300.0  # seconds a domain's policy context is reused
MAX_CONTEXTS = 10_000
MAX_RESULTS = 10_000  # kinds of log sessions whose result is remembered
SOURCES = ("datagram", "log", "journal", "api", "http")


# --- metrics ----------------------------------------------------------------------------------


class CollectorMetrics:
    """Prometheus counters of one collector (own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.results = Counter("smtptls_tlsrpt_results", "TLS session results accepted, by "
                               "source", ["source"], registry=self.registry)
        self.stored = Counter("smtptls_tlsrpt_results_stored", "Results committed to the "
                              "store", registry=self.registry)
        self.dropped = Counter("smtptls_tlsrpt_results_dropped", "Results dropped, by reason",
                               ["reason"], registry=self.registry)
        self.bad_input = Counter("smtptls_tlsrpt_bad_input", "Datagrams or requests that did "
                                 "not decode, by source", ["source"], registry=self.registry)
        self.batches = Counter("smtptls_tlsrpt_batches", "Store transactions",
                               registry=self.registry)
        self.store_errors = Counter("smtptls_tlsrpt_store_errors", "Failed store "
                                    "transactions", registry=self.registry)
        self.pending = Gauge("smtptls_tlsrpt_pending", "Results waiting to be written",
                             registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# --- the collector ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    results: Sequence[SessionResult]
    future: asyncio.Future[tuple[int, BatchOutcome]] | None
    counts: Sequence[int] | None = None  # how many sessions each result stands for
    n: int = 0  # sessions in this item
    position: tuple[str, LogPosition] | None = None  # the log read up to here
    batch_id: str | None = None  # client batch id: counted once


class Collector:
    """Batches results into store transactions.

    :meth:`record` / :meth:`record_many` wait for the commit of the batch holding their
    results (group commit: concurrent callers share one transaction); :meth:`submit`
    queues without waiting (datagrams, logs). ``max_pending`` bounds memory: beyond it
    :meth:`submit` drops (counted) and :meth:`record` raises :class:`StoreError`.
    :meth:`submit_counted` queues results that each stand for several sessions (the log
    path folds sessions that differ only in their time of day before handing them over).
    """

    def __init__(self, store: ResultStore, *, batch_size: int = 2000,
                 flush_interval: float = 1.0, max_pending: int = 100_000,
                 default_sending_ip: str | None = None,
                 metrics: CollectorMetrics | None = None) -> None:
        self.store = store
        self.batch_size = max(1, batch_size)
        self.flush_interval = max(0.0, flush_interval)
        self.max_pending = max(1, max_pending)
        self.default_sending_ip = default_sending_ip
        self.metrics = metrics or CollectorMetrics()
        self._items: collections.deque[_Item] = collections.deque()
        self._pending = 0
        self._waiters = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._first_pending_at: float | None = None
        self.stored = 0

    # -- intake --------------------------------------------------------------------------------

    def _enqueue(self, results: Sequence[SessionResult],
                 future: asyncio.Future[tuple[int, BatchOutcome]] | None,
                 source: str, counts: Sequence[int] | None = None, n: int | None = None,
                 position: tuple[str, LogPosition] | None = None,
                 batch_id: str | None = None) -> None:
        n = len(results) if n is None else n
        self._items.append(_Item(results, future, counts, n, position, batch_id))
        self._pending += n
        if future is not None:
            self._waiters += 1
        if self._first_pending_at is None:
            self._first_pending_at = time.monotonic()
        self._idle.clear()
        self._wakeup.set()
        self.metrics.results.labels(source if source in SOURCES else "api").inc(n)
        self.metrics.pending.set(self._pending)

    def submit(self, results: Sequence[SessionResult], *, source: str = "datagram") -> int:
        """Queue results without waiting for the commit (fire and forget)."""
        if not results:
            return 0
        if self._pending + len(results) > self.max_pending:
            self.metrics.dropped.labels("backlog").inc(len(results))
            return 0
        self._enqueue(list(results), None, source)
        return len(results)

    def submit_counted(self, counted: Sequence[tuple[SessionResult, int]], *,
                       source: str = "log") -> int:
        """Queue results each standing for ``count`` sessions (fire and forget), as if
        each had been submitted ``count`` times: the store keeps counters per UTC day,
        so sessions that differ only in their time of that day are one result with a
        count. Returns the number of sessions queued (0 when the backlog is full)."""
        results = [r for r, c in counted if c > 0]
        counts = [c for _, c in counted if c > 0]
        n = sum(counts)
        if not n:
            return 0
        if self._pending + n > self.max_pending:
            self.metrics.dropped.labels("backlog").inc(n)
            return 0
        self._enqueue(results, None, source, counts, n)
        return n

    def submit_log(self, counted: Sequence[tuple[SessionResult, int]],
                   position: tuple[str, LogPosition], *, source: str = "log") -> int:
        """Queue a log's results (as :meth:`submit_counted`) with the read position they
        end at, committed in their transaction. Never dropped: the caller waits for
        room first (:meth:`room_for`) — the file keeps what is not read yet. With no
        results the position alone is queued (lines that gave nothing are read once)."""
        results = [r for r, c in counted if c > 0]
        counts = [c for _, c in counted if c > 0]
        n = sum(counts)
        self._enqueue(results, None, source, counts, n, position=position)
        return n

    async def record_many(self, results: Sequence[SessionResult], *, source: str = "api",
                          message_id: str | None = None, batch_id: str | None = None
                          ) -> int:
        """Store results; returns after they are committed, the number counted. Results
        of one of our own report mails (``message_id``) are dropped, never reported (no
        report loops). With a ``batch_id`` (a client's name for these results, the same
        on every retry) they are counted at most once: a retry after a lost answer
        returns 0 (see :meth:`record_batch` for why)."""
        return (await self.record_batch(results, source=source, message_id=message_id,
                                        batch_id=batch_id))[0]

    async def record_batch(self, results: Sequence[SessionResult], *, source: str = "api",
                           message_id: str | None = None, batch_id: str | None = None
                           ) -> tuple[int, BatchOutcome]:
        """:meth:`record_many`, and what became of the batch: ``stored`` (counted now),
        ``duplicate`` (this ``batch_id`` was counted before with the same results) or
        ``conflict`` (it was counted before with other results; these are not)."""
        if batch_id is not None:
            batch_id = check_batch_id(batch_id)
        if message_id and is_report_message_id(message_id):
            self.metrics.dropped.labels("own-report").inc(len(results))
            return 0, BatchOutcome.STORED
        for r in results:
            if not isinstance(r, SessionResult):
                raise ResultError("record needs SessionResult values")
        if not results:
            return 0, BatchOutcome.STORED
        if self._task is None:
            raise StoreError("collector is not running")
        if self._pending + len(results) > self.max_pending:
            self.metrics.dropped.labels("backlog").inc(len(results))
            raise StoreError("collector backlog full, try again later")
        future: asyncio.Future[tuple[int, BatchOutcome]] = \
            asyncio.get_running_loop().create_future()
        self._enqueue(list(results), future, source, batch_id=batch_id)
        return await future

    async def record(self, result: SessionResult, *, message_id: str | None = None) -> None:
        """Store one result (the Python API for MTAs); returns after the commit."""
        await self.record_many([result], message_id=message_id)

    # -- the writer ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Write everything pending, then stop."""
        if self._task is None:
            return
        self._stopping = True
        self._wakeup.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        self._wakeup.set()
        await self._idle.wait()

    def _take(self) -> tuple[list[_Item], int]:
        """Items for one transaction, at most ``batch_size`` results in all (a result
        with a count is one counter increment, however many sessions it stands for),
        and the number of sessions they hold."""
        items, rows, n = [], 0, 0
        while self._items and (rows < self.batch_size or not items):
            item = self._items.popleft()
            items.append(item)
            rows += len(item.results)
            n += item.n
        return items, n

    async def room_for(self, n: int) -> None:
        """Wait until ``n`` more sessions fit under ``max_pending`` (or nothing is
        pending, or the writer is not running): for a source that can wait — a log file
        keeps what is not read yet — where the datagram socket, which cannot, drops.
        Callers bound the wait (``asyncio.timeout``)."""
        while self._pending and self._pending + n > self.max_pending \
                and self._task is not None:
            self._wakeup.set()
            await self._idle.wait()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            if not self._items:
                self._idle.set()
                if self._stopping:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            # A caller waits: write now. Only fire-and-forget results: gather them for up
            # to flush_interval (or until a batch is full), fewer transactions.
            if not self._waiters and not self._stopping and self._pending < self.batch_size:
                started = self._first_pending_at or time.monotonic()
                remaining = self.flush_interval - (time.monotonic() - started)
                if remaining > 0:
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    continue
            items, n = self._take()
            batch = Batch()
            default_ip = self.default_sending_ip
            for item in items:
                target = batch
                if item.batch_id is not None:
                    target = Batch()
                    batch.keyed.append((item.batch_id, target))
                if item.counts is None:
                    for r in item.results:
                        target.add(r, default_sending_ip=default_ip)
                else:
                    for r, count in zip(item.results, item.counts, strict=True):
                        target.add(r, count, default_sending_ip=default_ip)
                if item.position is not None:
                    # items of one log are queued in order: the last one read wins
                    batch.positions[item.position[0]] = item.position[1]
            try:
                await self.store.add_batch(batch)
            except (StoreError, OSError) as exc:
                self.metrics.store_errors.inc()
                _log.error("store write failed", results=n, error=str(exc))
                keep = [i for i in items if i.future is None]
                for item in items:
                    if item.future is not None:
                        self._waiters -= 1
                        self._pending -= item.n
                        if not item.future.done():
                            item.future.set_exception(StoreError(f"not stored: {exc}"))
                if self._stopping:
                    if any(i.position is not None for i in keep):
                        # log lines not written are read again at the next start, from
                        # the last position committed: no later position may pass them
                        keep += [i for i in self._items if i.position is not None]
                        self._items = collections.deque(i for i in self._items
                                                        if i.position is None)
                    dropped = sum(i.n for i in keep)
                    self.metrics.dropped.labels("store-down").inc(dropped)
                    self._pending -= dropped
                    continue
                # fire-and-forget results go back to the front and are retried
                self._items.extendleft(reversed(keep))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.1
            outcomes = iter(batch.outcomes)
            counted = n
            for item in items:
                outcome = BatchOutcome.STORED
                if item.batch_id is not None:
                    outcome = next(outcomes, BatchOutcome.STORED)
                    if outcome is not BatchOutcome.STORED:
                        counted -= item.n
                        self.metrics.dropped.labels(str(outcome)).inc(item.n)
                if item.future is not None:
                    self._waiters -= 1
                    if not item.future.done():
                        stored = item.n if outcome is BatchOutcome.STORED else 0
                        item.future.set_result((stored, outcome))
            self.stored += counted
            self.metrics.batches.inc()
            self.metrics.stored.inc(counted)
            self._pending -= n
            self._first_pending_at = time.monotonic() if self._items else None
            self.metrics.pending.set(self._pending)


# --- which policy applied (for log-derived results) -------------------------------------------


class PolicyLookup(Protocol):
    async def context(self, domain: str) -> PolicyContext: ...


class NoPolicyLookup:
    """Every domain: ``no-policy-found`` (``policy_source = "none"``)."""

    async def context(self, domain: str) -> PolicyContext:
        return PolicyContext(domain)


class StaticPolicyLookup:
    """Fixed contexts per domain (tests, and MTAs that know their policies)."""

    def __init__(self, contexts: Iterable[PolicyContext]) -> None:
        self.contexts = {c.domain: c for c in contexts}

    async def context(self, domain: str) -> PolicyContext:
        return self.contexts.get(domain) or PolicyContext(domain)


def _sts_strings(policy: Any) -> tuple[str, ...]:
    # RFC 8460 §4.4: policy-string holds the MTA-STS policy, one line per string
    return tuple(policy.lines())


def _sts_failure(error: SmtpTlsError | None) -> ResultType | None:
    """RFC 8460 §4.3.2.2: why no MTA-STS policy could be had."""
    from smtptls.errors import FetchContentTypeError, FetchTlsError, PolicyError

    if error is None:
        return None
    if isinstance(error, FetchTlsError):
        return ResultType.STS_WEBPKI_INVALID  # the policy host's PKIX validation failed
    if isinstance(error, PolicyError | FetchContentTypeError):
        return ResultType.STS_POLICY_INVALID  # fetched, but not a valid policy
    return ResultType.STS_POLICY_FETCH_ERROR  # unreachable, HTTP status, timeout, ...


class CachePolicyLookup:
    """MTA-STS from the policy cache policyd fills (``policy_source = "cache"``): no DNS,
    no DANE; a domain with a live cached policy is ``sts``, any other ``no-policy-found``."""

    def __init__(self, cache: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.cache = cache
        self.clock = clock

    async def context(self, domain: str) -> PolicyContext:
        from smtptls.mtasts.cache_logic import effective_policy
        from smtptls.mtasts.policy import Mode

        try:
            cached = await self.cache.get(domain)
        except SmtpTlsError:
            return PolicyContext(domain)
        policy = effective_policy(cached, self.clock())
        if policy is None or policy.mode is Mode.NONE:
            return PolicyContext(domain)
        return PolicyContext(domain, "sts", policy.mode.value, _sts_strings(policy),
                             tuple(p.lower() for p in policy.mx))


def context_from_explanation(domain: str, explanation: Any) -> PolicyContext:
    """The policy context of a policy daemon decision (:class:`~smtptls.services.policyd.
    decide.Explanation`): DANE hosts and their TLSA records, else the MTA-STS policy,
    else why MTA-STS discovery failed, else no policy."""
    from smtptls.dane.decide import Requirement
    from smtptls.engine.destination import DecisionKind
    from smtptls.mtasts.policy import Mode

    decision = explanation.decision
    facts = explanation.facts
    if decision.kind in (DecisionKind.DANE, DecisionKind.DANE_ONLY) and facts is not None:
        tls = (Requirement.DANE_REQUIRED, Requirement.ENCRYPT_ONLY)
        tlsa = {h.host: h.tlsa_records for h in facts.hosts
                if h.requirement in tls and h.tlsa_records}
        return PolicyContext(domain, "tlsa", tlsa_records=tlsa,
                             dane_required=decision.kind is DecisionKind.DANE_ONLY)
    discovery = explanation.discovery
    policy = None if discovery is None else discovery.policy
    if policy is not None and policy.mode is not Mode.NONE:
        return PolicyContext(domain, "sts", policy.mode.value, _sts_strings(policy),
                             tuple(p.lower() for p in policy.mx))
    if discovery is not None and policy is None and discovery.record is not None:
        failure = _sts_failure(discovery.fetch_error)
        if failure is not None:
            return PolicyContext(domain, sts_failure=failure)
    return PolicyContext(domain)


class EnginePolicyLookup:
    """The policy daemon's own decision (``policy_source = "policyd"``): the same DNS,
    DANE and MTA-STS logic Postfix was answered with, computed in this process."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    async def context(self, domain: str) -> PolicyContext:
        try:
            explanation = await self.engine.explain(domain)
        except SmtpTlsError as exc:
            _log.warning("policy lookup failed", domain=domain, error=str(exc))
            return PolicyContext(domain)
        return context_from_explanation(domain, explanation)


class _CachedLookup:
    """A TTL/LRU cache in front of a lookup: one policy computation per domain per
    ``ttl`` seconds, whatever the log volume."""

    def __init__(self, inner: PolicyLookup, ttl: float = CONTEXT_TTL,
                 size: int = MAX_CONTEXTS) -> None:
        self.inner = inner
        self.ttl = ttl
        self.size = size
        self._entries: collections.OrderedDict[str, tuple[float, PolicyContext]] = \
            collections.OrderedDict()

    async def context(self, domain: str) -> PolicyContext:
        now = time.monotonic()
        hit = self._entries.get(domain)
        if hit is not None and hit[0] > now:
            self._entries.move_to_end(domain)
            return hit[1]
        ctx = await self.inner.context(domain)
        self._entries[domain] = (now + self.ttl, ctx)
        self._entries.move_to_end(domain)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return ctx


class SendingAddress:
    """``sending-mta-ip`` for log-derived results (Postfix does not log its own
    address): the configured one, else the source address the kernel picks for the
    receiving IP (a UDP ``connect``: no packet is sent)."""

    def __init__(self, configured: str | None) -> None:
        self.configured = None if not configured else normalize_ip(configured)
        self._cache: dict[str, str | None] = {}

    def for_destination(self, ip: str | None) -> str | None:
        if self.configured or ip is None:
            return self.configured
        if ip not in self._cache:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            try:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.connect((ip, 25))
                    self._cache[ip] = normalize_ip(s.getsockname()[0])
            except (OSError, ResultError):
                self._cache[ip] = None
            if len(self._cache) > MAX_CONTEXTS:
                self._cache.clear()
        return self._cache[ip]


class LogIngest:
    """Postfix log lines -> results -> the collector (shared by the file and journald
    followers).

    A result depends on a session's recipient domain, MX host, addresses, TLS level,
    problems and outcome, and on the policy of the domain — not on its time, which the
    store only keeps as the UTC day. So the sessions of one read are folded by all of
    that plus the day (:func:`~smtptls.tlsrptsend.postfix_log.fold_sessions`), each kind is
    mapped once (one policy lookup, one
    :func:`~smtptls.tlsrptsend.postfix_log.session_result`) and handed over as one result
    with a count (:meth:`Collector.submit_counted`): the same counters as one result
    per session, without building one.
    """

    def __init__(self, collector: Collector, lookup: PolicyLookup, *,
                 sending: SendingAddress | None = None, tz: tzinfo | None = None,
                 source: str = "log", log_format: str = "postfix") -> None:
        self.collector = collector
        self.lookup = lookup if isinstance(lookup, _CachedLookup) else _CachedLookup(lookup)
        self.sending = sending or SendingAddress(None)
        self.parser: PostfixLogParser | EximLogParser = (
            EximLogParser(tz=tz or _local_tz()) if log_format == "exim"
            else PostfixLogParser(tz=tz or _local_tz()))
        self.source = source
        self.sessions = 0
        self._results: dict[tuple[Any, ...], tuple[PolicyContext, str | None,
                                                   SessionResult | None]] = {}

    async def sessions_to_results(self, sessions: list[LogSession]) -> None:
        await self._submit(fold_sessions(sessions))

    async def _submit(self, folded: list[tuple[LogSession, int]],
                      position: tuple[str, LogPosition] | None = None) -> None:
        counted = []
        memo = self._results
        for s, count in folded:
            ctx = await self.lookup.context(s.domain)
            sending_ip = self.sending.for_destination(s.receiving_ip)
            # the same kind of session, the same day, the same policy: the same result
            # (but for the time within that day) as in an earlier read
            key = fold_key(s)
            hit = memo.get(key)
            if hit is not None and hit[0] is ctx and hit[1] == sending_ip:
                r = hit[2]
            else:
                try:
                    r = session_result(s, ctx, sending_ip=sending_ip)
                except SmtpTlsError as exc:
                    _log.debug("session not mapped", domain=s.domain, error=str(exc))
                    continue
                if len(memo) >= MAX_RESULTS:
                    memo.clear()
                memo[key] = (ctx, sending_ip, r)
            if r is not None:
                counted.append((r, count))
        self.sessions += sum(count for _, count in folded)
        if position is not None:
            # a file's results, with the position they end at: never dropped; a backlog
            # read faster than the store commits waits for the writer (the file keeps
            # what is not read yet), however long the store is down
            n = sum(c for _, c in counted)
            while True:
                try:
                    async with asyncio.timeout(BACKLOG_WAIT):
                        await self.collector.room_for(n)
                    break
                except TimeoutError:
                    _log.warning("log reading waits for the result store", path=position[0])
            self.collector.submit_log(counted, position, source=self.source)
        elif counted:
            # a backlog read faster than the store commits waits for the writer rather
            # than being dropped
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BACKLOG_WAIT):
                    await self.collector.room_for(sum(c for _, c in counted))
            self.collector.submit_counted(counted, source=self.source)

    async def lines(self, lines: Iterable[str],
                    position: tuple[str, LogPosition] | None = None) -> None:
        """Lines of a log, in order; ``position`` (the log's name and where these lines
        end) is committed with the results they give, or alone when they give none."""
        folded = self.parser.feed_counted(lines, datetime.now(UTC))
        if folded or position is not None:
            await self._submit(folded, position)

    def replay(self, lines: Iterable[str]) -> None:
        """Lines read and counted before a restart, fed again only to rebuild the
        sessions still open where reading resumes: what they complete was counted then,
        and is not counted again."""
        self.parser.feed_counted(lines, datetime.now(UTC))

    async def journal_entries(self, entries: Iterable[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        sessions: list[LogSession] = []
        for entry in entries:
            sessions += self.parser.feed_journal(entry, now)
        if sessions:
            await self.sessions_to_results(sessions)


def _local_tz() -> tzinfo:
    tz = datetime.now().astimezone().tzinfo
    return tz if tz is not None else UTC


# --- sources ----------------------------------------------------------------------------------


class DatagramListener:
    """The libtlsrpt UNIX datagram socket (what Postfix's ``smtp_tlsrpt_socket_name``
    names). A stale socket file is replaced; anything else at the path is refused.

    Each time the socket is readable, up to ``DRAIN`` queued datagrams are read in one go
    (into one buffer) and handed to the collector together: the per-datagram cost is a
    ``recv_into`` and a dictionary lookup for the (usually repeated) datagram.
    """

    DRAIN = 2000

    def __init__(self, collector: Collector, path: str | Path, *, mode: int = 0o660,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.collector = collector
        self.path = Path(path)
        self.mode = mode
        self.clock = clock
        self.datagrams = 0
        self.bad = 0
        self.decoder = CachedDecoder()
        self._sock: socket.socket | None = None
        self._buffer = bytearray(MAX_DATAGRAM + 1)

    def received(self, data: bytes) -> None:
        """One datagram (also the entry point for tests and other transports)."""
        results = self._decode(data, self.clock())
        if results:
            self.collector.submit(results, source="datagram")

    def _decode(self, data: bytes, now: datetime) -> list[SessionResult]:
        self.datagrams += 1
        try:
            return self.decoder.results(data, now)
        except DatagramError as exc:
            self.bad += 1
            self.collector.metrics.bad_input.labels("datagram").inc()
            if self.bad <= 10 or self.bad % 1000 == 0:
                _log.warning("bad datagram", error=str(exc), count=self.bad)
            return []

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        now = self.clock()
        view = memoryview(self._buffer)
        results: list[SessionResult] = []
        for _ in range(self.DRAIN):
            try:
                n = sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # pragma: no cover - kernel trouble
                _log.warning("datagram socket error", error=str(exc))
                break
            if n > MAX_DATAGRAM:
                self.datagrams += 1
                self.bad += 1
                continue
            results.extend(self._decode(bytes(view[:n]), now))
        if results:
            self.collector.submit(results, source="datagram")

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ConfigError(f"{self.path} exists and is not a socket",
                                  key="tlsrpt.socket_path")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF)
            sock.bind(str(self.path))
            os.chmod(self.path, self.mode)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot bind {self.path}: {exc.strerror or exc}",
                              key="tlsrpt.socket_path") from None
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        _log.info("listening", kind="libtlsrpt", path=str(self.path))

    async def stop(self) -> None:
        if self._sock is not None:
            self._readable()  # what is queued already is taken
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError):
            self.path.unlink()


def position_name(path: str | Path) -> str:
    """The name a followed log's read position is stored under: this host and the file's
    absolute path (several MTAs may write to one PostgreSQL store)."""
    return f"{socket.gethostname()}:{os.path.abspath(path)}"


def tail_digest(tail: bytes) -> str:
    """What identifies a read position's place in a file: SHA-256 of the bytes just
    before it (the end of the last line read, at most ``TAIL_BYTES``)."""
    return hashlib.sha256(tail).hexdigest() if tail else ""


def _tail_at(fd: int, offset: int) -> bytes:
    """The ``TAIL_BYTES`` bytes of a file just before ``offset`` (fewer near its start)."""
    n = min(offset, TAIL_BYTES)
    if n <= 0:
        return b""
    try:
        return os.pread(fd, n, offset - n)
    except OSError:
        return b""


class LogFollower:
    """Follows one log file like ``tail -F``, and remembers how far it read.

    - New lines as they are written, in steps of at most ``MAX_CHUNKS`` reads.
    - **Rotation** (another inode at the path): the old file is still read — a syslog
      daemon may go on writing to it for a while — until it has been quiet for
      ``rotate_quiet`` seconds (:data:`ROTATED_QUIET`); then the new file, from its start.
    - **Truncation** (``copytruncate``: the file is shorter than our position, or the
      bytes before our position changed): the rest of what was not read yet is taken
      from the copy, when a file next to it (``mail.log.1``, ``mail.log-20240501``, not
      compressed) holds the same bytes before our position; then the file from its start.
    - **Positions** (:meth:`resume`, with a store): each step's lines are handed over
      with the position they end at (device, inode, offset, :func:`tail_digest`), which
      the collector commits in the transaction of the results those lines gave. On
      start the stored position is found again — in the file at the path, or in the
      rotated file that has its inode — and up to :data:`RESUME_REPLAY` bytes before it
      are read again, only to rebuild the sessions still open there (what they complete
      was counted before the restart). Without a stored position reading starts at the
      end (``from_start``: at the start), and that position is stored at once.
    """

    def __init__(self, ingest: LogIngest, path: str | Path, *, poll: float = 0.25,
                 from_start: bool = False, name: str | None = None,
                 rotate_quiet: float = ROTATED_QUIET) -> None:
        self.ingest = ingest
        self.path = Path(path)
        self.poll = poll
        self.from_start = from_start
        self.name = name or str(self.path)
        self.rotate_quiet = rotate_quiet
        self._file: Any = None
        self._dev: int | None = None
        self._inode: int | None = None
        self._offset = 0  # just past the last complete line read
        self._tail = b""  # the bytes of the file just before _offset
        self._seen: tuple[int, int] | None = None  # (size, mtime) when last checked
        self._partial = b""
        self._leaving: float | None = None  # not the path's file: last time it gave data
        self._quiet = 0.0
        self._fresh = False  # a file appearing at the path is read from its start
        self._resumed = False
        self._handed: LogPosition | None = None
        self._task: asyncio.Task[None] | None = None
        self.lines = 0
        self.rotations = 0
        self.truncations = 0
        self.replayed = 0  # lines read again on resume

    # -- files ---------------------------------------------------------------------------------

    def _adopt(self, f: Any, offset: int | None) -> None:
        """Read ``f`` from ``offset`` (``None``: its end)."""
        if self._file is not None and self._file is not f:
            self._file.close()
        st = os.fstat(f.fileno())
        if offset is None:
            offset = st.st_size
        f.seek(offset)
        self._file, self._dev, self._inode = f, st.st_dev, st.st_ino
        self._offset = offset
        self._tail = _tail_at(f.fileno(), offset)
        self._seen = None
        self._partial = b""
        self._leaving = None

    def _open(self, at_end: bool) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except OSError:
            return False
        self._adopt(f, None if at_end else 0)
        self._fresh = False
        return True

    def _find(self, match: Callable[[int, os.stat_result], bool]) -> Any:
        """An open file next to ours (its name starts with ours: what logrotate names a
        rotated file, not compressed) for which ``match(fd, stat)`` holds; newest first,
        at most ``MAX_SIBLINGS`` looked at."""
        base = self.path.name
        found: list[tuple[float, str]] = []
        try:
            with os.scandir(self.path.parent) as entries:
                for i, entry in enumerate(entries):
                    if i >= MAX_DIR_ENTRIES:
                        break
                    if entry.name != base and entry.name.startswith(base) \
                            and not entry.name.endswith(COMPRESSED) \
                            and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            found.append((entry.stat().st_mtime, entry.path))
        except OSError:
            return None
        for _, name in sorted(found, reverse=True)[:MAX_SIBLINGS]:
            try:
                f = open(name, "rb")  # noqa: SIM115 - handed to _adopt
            except OSError:
                continue
            try:
                if match(f.fileno(), os.fstat(f.fileno())):
                    return f
            except OSError:
                pass
            f.close()
        return None

    def _holds(self, offset: int, digest: str, *, inode: tuple[int, int] | None = None
               ) -> Callable[[int, os.stat_result], bool]:
        """A :meth:`_find` test: the file has ``digest`` just before ``offset`` (and,
        with ``inode``, is that file; a position at 0 has only its inode to go by)."""
        def match(fd: int, st: os.stat_result) -> bool:
            if inode is not None and (st.st_dev, st.st_ino) != inode:
                return False
            if inode is None and not digest:
                return False
            return st.st_size >= offset and tail_digest(_tail_at(fd, offset)) == digest
        return match

    def _switch(self) -> None:
        """The old file is done: the path's file, from its start."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._leaving = None
        if not self._open(at_end=False):
            self._fresh = True  # not there yet: read from its start when it is

    def _truncated(self) -> None:
        self.truncations += 1
        here = (self._dev, self._inode)
        copy = None
        if self._tail:
            digest = tail_digest(self._tail)
            holds = self._holds(self._offset, digest)
            copy = self._find(lambda fd, st: (st.st_dev, st.st_ino) != here and holds(fd, st))
        if copy is not None:
            # copytruncate: what was not read yet is in the copy; then the file from 0
            _log.info("log truncated, reading the rest of its copy", path=str(self.path))
            self._adopt(copy, self._offset)
            self._leaving, self._quiet = time.monotonic(), 0.0
        else:
            _log.info("log truncated, reading it from its start", path=str(self.path))
            self._adopt(self._file, 0)

    def _check_truncated(self) -> bool:
        """Whether the file we read at the path is shorter than our position, or holds
        other bytes before it (truncated, and written again past it)."""
        if self._file is None:
            return False
        try:
            st = os.fstat(self._file.fileno())
        except OSError:
            return False
        if st.st_size < self._offset:
            return True
        seen = (st.st_size, st.st_mtime_ns)
        if seen == self._seen:
            return False
        self._seen = seen
        return bool(self._tail) and _tail_at(self._file.fileno(), self._offset) != self._tail

    # -- positions -----------------------------------------------------------------------------

    @property
    def position(self) -> LogPosition | None:
        """Where reading stands: just past the last complete line read."""
        if self._file is None or self._inode is None or self._dev is None:
            return None
        return LogPosition(self._dev, self._inode, self._offset, tail_digest(self._tail))

    async def resume(self, store: ResultStore) -> str:
        """Find the stored position again (see the class); returns how it was found:
        ``new`` (none stored), ``resumed``, ``rotated`` (in the rotated file),
        ``copy`` (truncated: in its copy), ``truncated`` or ``replaced`` (read from the
        start) or ``missing`` (no file yet)."""
        self._resumed = True
        stored = await store.log_position(self.name)
        if stored is None:
            if not self._open(at_end=not self.from_start):
                self._fresh = True
                return "missing"
            pos = self.position
            if pos is not None:
                await store.add_batch(Batch(positions={self.name: pos}))
                self._handed = pos
            return "new"
        how = self._locate(stored)
        self._handed = stored
        if how in ("resumed", "rotated", "copy"):
            self._replay()
        _log.info("log position", path=str(self.path), found=how, offset=self._offset,
                  replayed=self.replayed)
        return how

    def _locate(self, stored: LogPosition) -> str:
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        inode = (stored.device, stored.inode)
        if st is not None and (st.st_dev, st.st_ino) == inode:
            try:
                f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
            except OSError:
                f = None
            if f is not None:
                if self._holds(stored.offset, stored.line_digest, inode=inode)(
                        f.fileno(), os.fstat(f.fileno())):
                    self._adopt(f, stored.offset)
                    return "resumed"
                # truncated while we were down: the rest may be in its copy
                self.truncations += 1
                holds = self._holds(stored.offset, stored.line_digest)
                copy = self._find(lambda fd, s: (s.st_dev, s.st_ino) != inode and holds(fd, s))
                if copy is not None:
                    f.close()
                    self._adopt(copy, stored.offset)
                    self._leaving, self._quiet = time.monotonic(), 0.0
                    return "copy"
                self._adopt(f, 0)
                return "truncated"
        # another file at the path, or none: ours was rotated away (or copied)
        old = self._find(self._holds(stored.offset, stored.line_digest, inode=inode)) \
            or self._find(self._holds(stored.offset, stored.line_digest))
        if old is not None:
            self._adopt(old, stored.offset)
            self.rotations += 1
            self._leaving, self._quiet = time.monotonic(), self.rotate_quiet
            return "rotated"
        if stored.offset:
            _log.warning("the log file read before is gone: what was written to it after "
                         "the stored position is not counted", path=str(self.path))
        if self._open(at_end=False):
            return "replaced"
        self._fresh = True
        return "missing"

    def _replay(self) -> None:
        """Read the lines before the position again (at most ``RESUME_REPLAY`` bytes),
        to rebuild the sessions open there; their results are not counted again."""
        if self._file is None or self.ingest is None:
            return
        start = max(0, self._offset - RESUME_REPLAY)
        try:
            data = os.pread(self._file.fileno(), self._offset - start, start)
        except OSError:
            return
        if start:
            cut = data.find(b"\n")
            data = data[cut + 1:] if cut >= 0 else b""
        lines = data.decode("utf-8", "replace").split("\n")[:-1]
        self.replayed = len(lines)
        if lines:
            self.ingest.replay(lines)

    # -- reading -------------------------------------------------------------------------------

    def _read(self) -> tuple[list[str], bool]:
        """Complete lines of the next chunk, and whether the end of the file was hit."""
        if self._file is None:
            return [], True
        chunk = self._file.read(MAX_READ)
        if not chunk:
            return [], True
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n")
        if end < 0:
            complete: list[str] = []
            self._partial = data
        else:
            # one decode and one split for the whole chunk: the same lines as decoding
            # each line (a newline byte is never part of a UTF-8 sequence)
            complete = data[:end].decode("utf-8", "replace").split("\n")
            self._partial = data[end + 1:]
        if len(self._partial) > MAX_PARTIAL:
            self._partial = b""  # a line this long is not Postfix's
        consumed = len(data) - len(self._partial)
        if consumed:
            self._offset += consumed
            piece = data[max(0, consumed - TAIL_BYTES):consumed]
            self._tail = piece if len(piece) == TAIL_BYTES else \
                (self._tail + piece)[-TAIL_BYTES:]
        self.lines += len(complete)
        return complete, False

    def poll_once(self) -> list[str]:
        """Lines available now (at most ``MAX_CHUNKS`` reads, so a long backlog is taken
        in bounded steps), handling rotation and truncation once the end is reached."""
        if self._file is None:
            if not self._open(at_end=not (self.from_start or self._fresh)
                              and self._inode is None):
                return []
        if self._leaving is None and self._check_truncated():
            self._truncated()
        lines: list[str] = []
        got = False
        for _ in range(MAX_CHUNKS):
            more, eof = self._read()
            lines += more
            if eof:
                break
            got = True
        else:
            return lines  # more to read: the caller comes back at once
        now = time.monotonic()
        if self._leaving is not None:
            # a rotated file: read while it is written to, then the path's new file
            if got:
                self._leaving = now
            elif now - self._leaving >= self._quiet:
                self._switch()
                lines += self._read()[0]
            return lines
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # rotated away, the new file not there yet: keep the old one
        if (st.st_dev, st.st_ino) != (self._dev, self._inode):
            # rotated: go on reading the old file until it is quiet
            self.rotations += 1
            self._leaving, self._quiet = now, self.rotate_quiet
            if self._quiet <= 0:
                self._switch()
                lines += self._read()[0]
        return lines

    async def step(self) -> bool:
        """One :meth:`poll_once`, its lines handed to the ingest (with the position they
        end at, once :meth:`resume` has run); then the event loop runs once, so the
        collector commits what this step gave while the next one is read (a backlog
        keeps both CPUs busy). False when there was nothing to read."""
        lines = self.poll_once()
        position = self.position if self._resumed else None
        if not lines and (position is None or position == self._handed):
            return False
        if position is not None:
            await self.ingest.lines(lines, (self.name, position))
            self._handed = position
        else:
            await self.ingest.lines(lines)
        await asyncio.sleep(0)
        return True

    async def run(self) -> None:
        while True:
            if not await self.step():
                await asyncio.sleep(self.poll)

    def start(self) -> None:
        if self._task is None:
            # position at the end now, so lines written after start() are read
            if self._file is None and not self.from_start and not self._resumed \
                    and not self._open(at_end=True):
                self._fresh = True
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._file is not None:
            self._file.close()
            self._file = None


class JournalFollower:
    """journald through ``journalctl --output=json --follow`` (mail facility), started
    with an argument list; restarted with back-off when it exits."""

    def __init__(self, ingest: LogIngest, *, argv: Sequence[str] | None = None) -> None:
        self.ingest = ingest
        self.argv = list(argv) if argv is not None else [
            "journalctl", "--output=json", "--follow", "--lines=0", "--no-pager",
            "SYSLOG_FACILITY=2"]
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.entries = 0

    async def _once(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            limit=MAX_PARTIAL)
        assert self._proc.stdout is not None
        batch: list[dict[str, Any]] = []
        while True:
            try:
                # with entries waiting, do not sit on them: hand them over after 0.2 s
                line = await asyncio.wait_for(self._proc.stdout.readline(),
                                              0.2 if batch else None)
            except TimeoutError:
                await self.ingest.journal_entries(batch)
                batch = []
                continue
            except (asyncio.LimitOverrunError, ValueError):
                continue  # an entry longer than the limit: skipped
            if not line:
                break
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                batch.append(entry)
                self.entries += 1
            if len(batch) >= 500:
                await self.ingest.journal_entries(batch)
                batch = []
        if batch:
            await self.ingest.journal_entries(batch)
        await self._proc.wait()

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._once()
                _log.warning("journalctl exited", code=self._proc.returncode if self._proc
                             else None)
            except OSError as exc:
                _log.error("cannot run journalctl", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 5)


# --- HTTP -------------------------------------------------------------------------------------

COLLECTOR_KEY = web.AppKey("collector", Collector)
TOKEN_KEY = web.AppKey("token", object)


def _authorized(request: web.Request) -> bool:
    token = request.app[TOKEN_KEY]
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                             str(token).encode())


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data) + "\n", status=status,
                        content_type="application/json")


def parse_http_results(body: bytes, now: datetime) -> tuple[list[SessionResult], int]:
    """The results of a ``POST /v1/results`` body, and how many were our own report
    mails (dropped). Raises :class:`ResultError` naming the bad item."""
    data = loads_bounded(body, MAX_HTTP_BODY)
    if isinstance(data, dict) and "results" in data:
        data = data["results"]
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_HTTP_RESULTS:
        raise ResultError(f"more than {MAX_HTTP_RESULTS} results in one request")
    out, own = [], 0
    for i, item in enumerate(items):
        if isinstance(item, dict) and "message-id" in item:
            item = dict(item)
            mid = item.pop("message-id")
            if isinstance(mid, str) and is_report_message_id(mid):
                own += 1
                continue
        try:
            out.append(SessionResult.from_dict(item, now=now))
        except ResultError as exc:
            raise ResultError(f"results[{i}]: {exc}") from None
    return out, own


async def _post_results(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json_response({"status": "refused", "reason": "authentication required"}, 401)
    collector = request.app[COLLECTOR_KEY]
    if request.content_length is not None and request.content_length > MAX_HTTP_BODY:
        return _json_response({"status": "refused", "reason": "body too large"}, 413)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_HTTP_BODY:
            return _json_response({"status": "refused", "reason": "body too large"}, 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        results, own = parse_http_results(body, datetime.now(UTC))
    except ResultError as exc:
        collector.metrics.bad_input.labels("http").inc()
        return _json_response({"status": "refused", "reason": str(exc)}, 400)
    if own:
        collector.metrics.dropped.labels("own-report").inc(own)
    batch_id = request.headers.get(IDEMPOTENCY_HEADER)
    if batch_id is not None:
        try:
            batch_id = check_batch_id(batch_id.strip())
        except ResultError as exc:
            collector.metrics.bad_input.labels("http").inc()
            return _json_response({"status": "refused", "reason": str(exc)}, 400)
    try:
        stored, outcome = await collector.record_batch(results, source="http",
                                                       batch_id=batch_id)
    except StoreError as exc:
        return web.Response(text=json.dumps({"status": "unavailable", "reason": str(exc)}),
                            status=503, content_type="application/json",
                            headers={"Retry-After": "30"})
    if outcome is BatchOutcome.CONFLICT:
        return _json_response({"status": "conflict", "stored": 0, "reason":
                               f"{IDEMPOTENCY_HEADER} {batch_id} was used for other "
                               "results"}, 409)
    return _json_response({"status": str(outcome), "stored": stored, "dropped_own": own})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    if not _authorized(request):
        return web.Response(status=401, text="authentication required\n")
    body = request.app[COLLECTOR_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(collector: Collector, *, token: str | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_HTTP_BODY + 1024)
    app[COLLECTOR_KEY] = collector
    app[TOKEN_KEY] = token
    app.router.add_post("/v1/results", _post_results)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


def _listen_address(text: str) -> tuple[str, int]:
    """``host:port`` to listen on; port 0 (any free port) is allowed here."""
    stripped = text.strip()
    if stripped.endswith(":0") and not stripped.endswith("::0"):
        host, _ = parse_hostport(stripped[:-2], 8462)
        return host, 0
    return parse_hostport(stripped, 8462)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return normalize_ip(host) in ("::1",) or normalize_ip(host).startswith("127.")
    except ResultError:
        return False


# --- the service ------------------------------------------------------------------------------


async def make_policy_lookup(config: Config) -> tuple[PolicyLookup, list[Any]]:
    """The configured :class:`PolicyLookup` and what must be closed at the end."""
    source = config.tlsrpt.policy_source
    if source == "none":
        return NoPolicyLookup(), []
    from smtptls.store import open_policy_cache

    cache = await open_policy_cache(config.cache)
    if source == "cache":
        return CachePolicyLookup(cache), [cache]
    from smtptls.net.dns import DnsResolver
    from smtptls.services.policyd.decide import PolicyEngine

    engine = PolicyEngine(config, dns=DnsResolver(config.dns), cache=cache)
    return EnginePolicyLookup(engine), [cache]


def _socket_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f"{text!r} is not an octal mode", key="tlsrpt.socket_mode") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError("mode out of range", key="tlsrpt.socket_mode")
    return mode


class CollectorService:
    """Everything ``smtptls tlsrpt collect`` runs: store, collector, sources, HTTP."""

    def __init__(self, config: Config, *, store: ResultStore | None = None,
                 lookup: PolicyLookup | None = None, from_start: bool = False) -> None:
        self.config = config
        cfg = config.tlsrpt
        self.store = store or open_result_store(cfg)
        self._own_store = store is None
        self.lookup = lookup
        self.from_start = from_start
        self.collector = Collector(self.store, batch_size=cfg.batch_size,
                                   flush_interval=cfg.flush_interval,
                                   max_pending=cfg.max_pending,
                                   default_sending_ip=cfg.sending_ip)
        self.datagrams: DatagramListener | None = None
        self.followers: list[LogFollower] = []
        self.journal: JournalFollower | None = None
        self.ingest: LogIngest | None = None
        self._closers: list[Any] = []
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    def check(self) -> None:
        cfg = self.config.tlsrpt
        if cfg.http_listen:
            host, _ = _listen_address(cfg.http_listen)
            if not _is_loopback(host) and not cfg.http_token:
                raise ConfigError("refusing to accept results beyond loopback without a "
                                  "token", key="tlsrpt.http_token")
        if not (cfg.socket_path or cfg.log_files or cfg.journald or cfg.http_listen):
            raise ConfigError("nothing to collect from: set socket_path, log_files, "
                              "journald or http_listen", key="tlsrpt")

    async def start(self) -> None:
        self.check()
        cfg = self.config.tlsrpt
        if self._own_store:
            await self.store.open()
        self.collector.start()
        try:
            if cfg.socket_path:
                self.datagrams = DatagramListener(self.collector, cfg.socket_path,
                                                  mode=_socket_mode(cfg.socket_mode))
                await self.datagrams.start()
            if cfg.log_files or cfg.journald:
                if self.lookup is None:
                    self.lookup, self._closers = await make_policy_lookup(self.config)
                sending = SendingAddress(cfg.sending_ip)
                self.ingest = LogIngest(self.collector, self.lookup, sending=sending,
                                        log_format=cfg.log_format)
                for path in cfg.log_files:
                    follower = LogFollower(self.ingest, path, from_start=self.from_start,
                                           name=position_name(path))
                    # (appended first: stop() closes it whatever resume() did)
                    self.followers.append(follower)
                    await follower.resume(self.store)
                    follower.start()
                if cfg.journald:
                    journal_ingest = LogIngest(self.collector, self.lookup, sending=sending,
                                               source="journal")
                    self.journal = JournalFollower(journal_ingest)
                    self.journal.start()
            if cfg.http_listen:
                host, port = _listen_address(cfg.http_listen)
                self._runner = web.AppRunner(create_app(self.collector, token=cfg.http_token),
                                             access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, host, port)
                await site.start()
                server = site._server
                self.http_port = int(server.sockets[0].getsockname()[1]) if server else port
                _log.info("listening", kind="http", host=host, port=self.http_port)
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"cannot start the collector: {exc.strerror or exc}") from None
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.datagrams is not None:
            await self.datagrams.stop()
        for f in self.followers:
            await f.stop()
        self.followers.clear()
        if self.journal is not None:
            await self.journal.stop()
            self.journal = None
        await self.collector.stop()
        for c in self._closers:
            with contextlib.suppress(SmtpTlsError):
                await c.close()
        self._closers.clear()
        if self._own_store:
            await self.store.close()

    async def __aenter__(self) -> CollectorService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_collector(config: Config, *, from_start: bool = False,
                        on_started: Callable[[CollectorService], Awaitable[None]] | None = None
                        ) -> None:
    """Run until SIGINT/SIGTERM."""
    service = CollectorService(config, from_start=from_start)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_started is not None:
            await on_started(service)
        await stop.wait()
    finally:
        await service.stop()
