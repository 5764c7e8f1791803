"""Group commit of received reports: many submissions, one transaction, one fsync.

Every intake channel (HTTPS, SMTP, LMTP, IMAP) hands its parsed report to
:meth:`GroupCommitter.add` and waits. One task takes everything queued meanwhile (at
most ``max_batch`` reports, ``[reports] commit_batch``) and stores it with one
:meth:`ReportStore.add_reports` call, so the next batch gathers while one commit is on
its way to disk. Each caller gets the :class:`AddResult` of its own report once the
commit that holds it is done: a sender is still acknowledged (HTTP 2xx, SMTP 250) only
after its report is durable, and a thousand reports cost a handful of fsyncs.

* A batch the store refuses is retried one report at a time, so one report the store
  cannot take does not fail its neighbours; two failures in a row mean the store is
  down and the rest of the batch fails at once. A caller whose report failed gets the
  :class:`~smtptls.errors.StoreError` (HTTP 503, SMTP 451: the sender retries).
* At most ``max_queue`` reports wait; beyond it :class:`CommitQueueFull` (a
  StoreError) refuses at once, so parsed reports never pile up in memory faster than
  the store can take them.
* :meth:`close` stops taking reports and waits until the queued ones are committed.

``max_batch = 1`` is one commit per report (no grouping), as before group commits.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

from smtptls.errors import StoreError
from smtptls.logs import get_logger
from smtptls.store.reports_base import AddResult, Intake, ReportRecord, ReportStore

__all__ = ["CommitQueueFull", "GroupCommitter"]

#: Reports waiting for a commit at most: beyond it the sender is told to retry. Each
#: waiting sender also holds its body in the in-flight byte budget, which bounds the
#: memory first; this bounds the count (parsed reports, futures) whatever the budget.
MAX_WAITING = 4096

_log = get_logger("reports.commit")

_Item = tuple[ReportRecord, Intake, "asyncio.Future[AddResult]"]


class CommitQueueFull(StoreError):
    """More reports wait for the store than it keeps up with: retry later."""


class GroupCommitter:
    """Coalesces concurrent :meth:`add` calls into one ``add_reports`` per batch."""

    def __init__(self, store: ReportStore, *, max_batch: int,
                 max_queue: int = MAX_WAITING) -> None:
        self.store = store
        self.max_batch = max(1, int(max_batch))
        self.max_queue = max(self.max_batch, int(max_queue))
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0  # transactions run (for tests and metrics)
        self.committed = 0  # reports whose commit succeeded

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def add(self, record: ReportRecord, intake: Intake) -> AddResult:
        """Store one report; returns once the transaction holding it is committed."""
        if self._closing:
            raise StoreError("the report store is closing")
        if len(self._queue) >= self.max_queue:
            raise CommitQueueFull(f"{len(self._queue)} reports wait for the store")
        future: asyncio.Future[AddResult] = asyncio.get_running_loop().create_future()
        self._queue.append((record, intake, future))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="reports-group-commit")
        return await future

    async def close(self) -> None:
        """Take no more reports; return once every queued one is committed (or failed)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)
            self._task = None

    async def _run(self) -> None:
        batch: list[_Item] = []
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                n = min(self.max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
                await self._commit(batch)
                batch = []
        except BaseException:  # cancelled: nobody waits forever, nobody is told "stored"
            _fail([*batch, *self._queue], StoreError("the report store is closing"))
            self._queue.clear()
            raise

    async def _commit(self, batch: list[_Item]) -> None:
        try:
            results = await self.store.add_reports([(r, i) for r, i, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the callers, never lost
            if len(batch) == 1:
                _fail(batch, exc)
                return
            _log.warning("batch commit failed, storing one by one", reports=len(batch),
                         error=str(exc))
            await self._one_by_one(batch)
            return
        self.commits += 1
        self.committed += len(batch)
        _resolve(batch, results)

    async def _one_by_one(self, batch: list[_Item]) -> None:
        failed_in_a_row = 0
        for k, item in enumerate(batch):
            try:
                results = await self.store.add_reports([(item[0], item[1])])
            except Exception as exc:  # noqa: BLE001
                _fail([item], exc)
                failed_in_a_row += 1
                if failed_in_a_row >= 2:  # the store is down, not one report bad
                    _fail(batch[k + 1:], exc)
                    return
                continue
            failed_in_a_row = 0
            self.commits += 1
            self.committed += 1
            _resolve([item], results)


def _resolve(batch: Sequence[_Item], results: Sequence[AddResult]) -> None:
    if len(results) != len(batch):  # a backend defect: nobody may be told "stored"
        _fail(batch, StoreError(f"store answered {len(results)} results for "
                                f"{len(batch)} reports"))
        return
    for (_, _, future), result in zip(batch, results, strict=True):
        if not future.done():  # the caller may have gone (client disconnected)
            future.set_result(result)


def _fail(batch: Sequence[_Item], exc: BaseException) -> None:
    error = exc
    if not isinstance(exc, StoreError):
        error = StoreError(f"storing the report failed: {type(exc).__name__}: {exc}")
        error.__cause__ = exc
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)
