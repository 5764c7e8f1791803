"""Log sessions to results: the policy that applied, our own address, folded per kind."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from smtptls.errors import (
    ResultError,
    SmtpTlsError,
)
from smtptls.logs import get_logger
from smtptls.services.collector.limits import BACKLOG_WAIT, MAX_CONTEXTS, MAX_RESULTS
from smtptls.services.collector.policy import PolicyLookup, _CachedLookup
from smtptls.services.collector.writer import Collector
from smtptls.store.results_base import (
    LogPosition,
)
from smtptls.tlsrptsend.exim_log import EximLogParser
from smtptls.tlsrptsend.postfix_log import LogSession, PostfixLogParser, fold_key, fold_sessions
from smtptls.tlsrptsend.postfix_results import PolicyContext, session_result
from smtptls.tlsrptsend.results import SessionResult, normalize_ip

_log = get_logger("tlsrpt.collect")

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
                 source: str = "log", log_format: str = "postfix",
                 max_results: int = MAX_RESULTS) -> None:
        self.collector = collector
        self.max_results = max_results  # kinds of sessions whose result is remembered
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
                if len(memo) >= self.max_results:
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
