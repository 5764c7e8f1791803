"""Background work of the policy daemon: rechecks on schedule, proactive policy refresh.

Two loops, both bounded in the work they do per pass:

- **Recheck** (RFC 8461 §3.3, D1): every answer in memory has a ``recheck_at`` no later
  than its ``_mta-sts`` TXT TTL and ``txt_recheck_interval`` allow (and its MX/TLSA TTLs
  and the policy's expiry). When it comes, the answer is recomputed in the background —
  TXT lookup, fetch if the ``id`` changed — while requests keep getting the current
  answer. Answers nobody asked for in ``idle_drop`` seconds are dropped instead.
- **Proactive refresh** (RFC 8461 §3.3, §5.1, D3): every ``scan_interval`` seconds the
  policy cache is walked, and each policy that
  :func:`~smtptls.mtasts.cache_logic.needs_proactive_refresh` says is due (about daily,
  and at the latest ``refresh_before_expiry`` seconds before it expires) is refetched
  with ``discover(..., proactive=True)``. A failed refetch keeps the cached policy (D2).
"""

from __future__ import annotations

import asyncio
import contextlib

from smtptls.engine.mtasts_discovery import Outcome, discover
from smtptls.errors import SmtpTlsError
from smtptls.logs import get_logger
from smtptls.mtasts.cache_logic import alert_on_refresh_failure, needs_proactive_refresh
from smtptls.services.policyd.decide import PolicyEngine

__all__ = ["Refresher"]

log = get_logger("policyd")


class Refresher:
    """Drives :class:`PolicyEngine` rechecks and the proactive policy refresh."""

    def __init__(
        self,
        engine: PolicyEngine,
        *,
        tick: float = 0.25,
        concurrency: int = 16,
        idle_drop: float = 3600.0,
        scan_interval: float = 300.0,
        scan_limit: int = 10000,
    ) -> None:
        self.engine = engine
        self.tick = tick
        self.idle_drop = idle_drop
        self.scan_interval = scan_interval
        self.scan_limit = scan_limit
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self.rechecks = 0
        self.proactive = 0

    # --- recheck ----------------------------------------------------------------

    def run_due(self) -> int:
        """Start the rechecks that are due now; returns how many were started."""
        engine = self.engine
        now = engine.clock()
        started = 0
        for key in engine.due_keys(now):
            last = engine.idle_since(key)
            if last is not None and now - last > self.idle_drop:
                engine.drop(key)  # nobody asks any more: recompute on demand only
                continue
            task = asyncio.ensure_future(self._recheck(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def _recheck(self, key: str) -> None:
        async with self._sem:
            try:
                await self.engine.refresh(key)
                self.rechecks += 1
                self._metric("recheck", "ok")
            except Exception as exc:  # the engine keeps the old answer; log and go on
                self._metric("recheck", "error")
                log.warning("recheck failed", key=key[:100], error=repr(exc))

    async def _recheck_loop(self) -> None:
        while True:
            self.run_due()
            await asyncio.sleep(self.tick)

    # --- proactive refresh ------------------------------------------------------

    async def scan_once(self) -> int:
        """One pass over the policy cache; returns how many refreshes were attempted."""
        engine = self.engine
        cfg = engine.config.policyd
        now = engine.clock()
        due: list[str] = []
        try:
            async for domain, cached in engine.cache.iter_all():
                if len(due) >= self.scan_limit:
                    break
                if needs_proactive_refresh(cached, now,
                                           before_expiry=cfg.refresh_before_expiry):
                    due.append(domain)
        except SmtpTlsError as exc:
            log.warning("policy cache scan failed", error=str(exc))
            return 0

        async def one(domain: str) -> None:
            async with self._sem:
                d = await discover(domain, dns=engine.dns, cache=engine.cache,
                                   fetch_config=engine.config.fetch, now=engine.clock(),
                                   proactive=True, fetcher=engine.fetcher)
                # a proactive discovery fetches whenever the record is usable, so only a
                # fetch (or a retry held back after a recent failure) is a success; a
                # vanished or broken TXT record is a failed refresh too
                ok = d.outcome is Outcome.FETCHED or d.rate_limited
                self._metric("proactive", "ok" if ok else "failed")
                if not ok:
                    # RFC 8461 §3.3, §10.2 (D6): alert unless the cached mode is none
                    emit = log.warning if alert_on_refresh_failure(d.policy) else log.info
                    emit("proactive refresh failed; cached policy kept",
                         domain=domain, outcome=d.outcome.value,
                         error=str(d.fetch_error or d.txt_error or ""))

        await asyncio.gather(*(one(d) for d in due))
        self.proactive += len(due)
        return len(due)

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.scan_interval)
            await self.scan_once()

    # --- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._loops = [asyncio.ensure_future(self._recheck_loop()),
                       asyncio.ensure_future(self._scan_loop())]

    async def stop(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loops = []

    def _metric(self, kind: str, result: str) -> None:
        if self.engine.metrics is not None:
            self.engine.metrics.refresh.labels(kind, result).inc()
