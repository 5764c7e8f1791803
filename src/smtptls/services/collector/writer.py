"""The writer: results from every source batched into one store transaction at a time."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

from smtptls.errors import (
    ResultError,
    StoreError,
)
from smtptls.logs import get_logger
from smtptls.services.collector.limits import SOURCES
from smtptls.services.collector.metrics import CollectorMetrics
from smtptls.store.results_base import (
    Batch,
    BatchOutcome,
    LogPosition,
    ResultStore,
    check_batch_id,
)
from smtptls.tlsrptsend.postfix_lines import is_report_message_id
from smtptls.tlsrptsend.results import SessionResult

_log = get_logger("tlsrpt.collect")

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
