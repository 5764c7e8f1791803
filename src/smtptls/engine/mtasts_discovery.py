"""MTA-STS discovery: TXT lookup -> cache decision -> fetch -> cache update.

The orchestration the policy daemon and the CLI share. The decisions are those of the
pure state machine in :mod:`smtptls.mtasts.cache_logic`; this module only does the
I/O around them and reports what happened, errors included, as data::

    d = await discover("example.com", dns=resolver, cache=cache,
                       fetch_config=config.fetch, now=time.time())
    d.policy        # the Policy in force, or None (deliver as without MTA-STS)
    d.outcome       # fetched / cached / fetch-failed-kept-cached / fetch-failed / no-policy

RFC 8461 rules applied here (the state machine decides, this module acts):

- §3.1 (A1, A2, A4): TXT at ``_mta-sts.<domain>``, CNAMEs followed by the resolver;
  no, several or an invalid ``v=STSv1`` record means no available policy, which alone
  never removes an unexpired cached policy.
- §3.3 (D1): fetch when nothing valid is cached or the record ``id`` changed.
- §3.3 (B7, B8, D2): a failed fetch keeps an unexpired cached policy; with nothing
  cached the domain is treated as having no MTA-STS.
- §8.3 (D4): a fetched ``mode: none`` policy replaces the cached one.
- Expired entries are dropped from the store when they are found (§3.2 ``max_age``).

Concurrent calls for the same domain and cache share one discovery (single-flight), so
a burst of messages to one domain causes one TXT lookup and at most one fetch.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from smtptls.config import FetchConfig
from smtptls.dnssec import Security
from smtptls.errors import DnsBogus, DnsError, PolicyError, SmtpTlsError, StoreError
from smtptls.mtasts.cache_logic import (
    DEFAULT_RETRY_AFTER,
    Action,
    CachedPolicy,
    FetchOutcome,
    apply_fetch_result,
    decide_refresh,
    live,
    needs_proactive_refresh,
    refetch_allowed,
)
from smtptls.mtasts.policy import Policy, parse_policy
from smtptls.mtasts.record import StsRecord, parse_txt_records
from smtptls.net.dns import normalize_domain
from smtptls.net.https import FetchResult, fetch_policy
from smtptls.net.protocols import PolicyFetcher, Resolver
from smtptls.store.base import PolicyCache

__all__ = ["Discovery", "Outcome", "discover", "discover_within", "refresh_due"]

log = logging.getLogger("smtptls.mtasts")


class Outcome(StrEnum):
    """What a discovery did."""

    FETCHED = "fetched"  # a policy was fetched and is now cached (mode none too, D4)
    CACHED = "cached"  # the unexpired cached policy applies (no fetch needed)
    FETCH_FAILED_KEPT_CACHED = "fetch-failed-kept-cached"  # D2 / B8
    FETCH_FAILED = "fetch-failed"  # valid record, fetch failed, nothing cached (B7)
    NO_POLICY = "no-policy"  # no usable record and nothing cached
    FETCH_PENDING = "fetch-pending"  # a fetch outlived the caller's wait (it goes on)


@dataclass(frozen=True, slots=True)
class Discovery:
    """The result of :func:`discover`: the policy in force and how it was reached.

    ``policy`` is what applies to the delivery at hand (None: no MTA-STS; a ``mode:
    none`` policy is returned as is). ``policy_id`` is the id of that policy;
    ``record_id`` the id currently published in DNS (None when no usable record).
    Errors are data: ``txt_error`` (lookup or record syntax), ``fetch_error`` (HTTPS,
    media type, size, policy syntax) and ``store_error`` (cache backend).
    """

    domain: str
    outcome: Outcome
    action: Action
    policy: Policy | None = None
    policy_id: str | None = None
    record: StsRecord | None = None
    txt_records: tuple[str, ...] = ()
    txt_security: Security | None = None
    cached: CachedPolicy | None = None
    fetch: FetchResult | None = None
    txt_error: SmtpTlsError | None = None
    fetch_error: SmtpTlsError | None = None
    store_error: SmtpTlsError | None = None
    rate_limited: bool = False  # a refetch was due but the last one failed too recently

    @property
    def from_cache(self) -> bool:
        return self.outcome in (Outcome.CACHED, Outcome.FETCH_FAILED_KEPT_CACHED)

    @property
    def record_id(self) -> str | None:
        return None if self.record is None else self.record.id

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape (``smtptls mta-sts --json``)."""
        cached = self.cached
        return {
            "domain": self.domain,
            "outcome": self.outcome.value,
            "action": self.action.value,
            "from_cache": self.from_cache,
            "rate_limited": self.rate_limited,
            "record": None if self.record is None else self.record.to_text(),
            "record_id": self.record_id,
            "txt_records": list(self.txt_records),
            "txt_security": None if self.txt_security is None else self.txt_security.value,
            "policy_id": self.policy_id,
            "policy": None if self.policy is None else self.policy.to_dict(),
            "cache": None if cached is None else {
                "policy_id": cached.policy_id,
                "fetched_at": cached.fetched_at,
                "expires_at": cached.expires_at,
                "last_checked": cached.last_checked,
            },
            "fetch": None if self.fetch is None else {
                "url": self.fetch.url,
                "status": self.fetch.status,
                "content_type": self.fetch.content_type,
                "elapsed": round(self.fetch.elapsed, 4),
            },
            "errors": {
                name: _error_dict(err)
                for name, err in (("txt", self.txt_error), ("fetch", self.fetch_error),
                                  ("store", self.store_error))
                if err is not None
            },
        }


def _error_dict(err: SmtpTlsError) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(err).__name__, "message": str(err)}
    for attr in ("kind", "status", "line", "url", "reason"):
        value = getattr(err, attr, None)
        if value is not None:
            out[attr] = str(value) if attr == "reason" else value
    return out


_inflight: dict[tuple[int, str, bool], asyncio.Task[Discovery]] = {}


async def discover(
    domain: str,
    *,
    dns: Resolver,
    cache: PolicyCache,
    fetch_config: FetchConfig | None = None,
    now: float,
    proactive: bool = False,
    fetcher: PolicyFetcher | None = None,
    retry_after: float = DEFAULT_RETRY_AFTER,
) -> Discovery:
    """Discover the MTA-STS policy of ``domain`` (RFC 8461 §3, §5.1). Never raises
    an :class:`~smtptls.errors.SmtpTlsError`: failures are fields of the result.

    ``now`` is the current time in seconds since the epoch. ``proactive=True`` is the
    background refresh (D3): a valid record leads to a fetch even with an unchanged id.
    ``fetcher`` replaces :func:`~smtptls.net.https.fetch_policy` (same signature), e.g.
    to fetch through a proxy-aware transport. ``retry_after``: after a failed refresh,
    the unexpired cached policy is used without a new fetch for this many seconds
    (RFC 8461 §3.3 allows rate-limiting refetches; B6).
    """
    fetch_config = fetch_config or FetchConfig()
    try:
        name = normalize_domain(domain)
    except SmtpTlsError as exc:
        # Corpus ".good.loc": not a valid policy domain -> no policy, no I/O.
        return Discovery(str(domain), Outcome.NO_POLICY, Action.NO_POLICY, txt_error=exc)
    key = (id(cache), name, proactive)  # the task keeps cache alive while in flight
    task = _inflight.get(key)
    if task is None or task.done():
        task = asyncio.ensure_future(
            _discover(name, dns=dns, cache=cache, fetch_config=fetch_config, now=now,
                      proactive=proactive, fetcher=fetcher or fetch_policy,
                      retry_after=retry_after))
        _inflight[key] = task

        def _forget(t: asyncio.Task[Discovery], key: Any = key) -> None:
            if _inflight.get(key) is t:
                del _inflight[key]

        task.add_done_callback(_forget)
    # shield: one caller giving up does not cancel the discovery the others await
    return await asyncio.shield(task)


async def discover_within(wait: float, domain: str, *, cache: PolicyCache, now: float,
                          on_late: Callable[[], None] | None = None,
                          **kwargs: Any) -> Discovery:
    """:func:`discover`, but waiting at most ``wait`` seconds for it.

    When the discovery (in practice, a policy fetch from a slow host) takes longer, the
    answer is what applies without it: the unexpired cached policy if there is one
    (RFC 8461 §3.3, B8), else no MTA-STS (B7: a fetch that does not succeed with
    nothing cached is treated as no policy; §5: mail SHOULD not wait for it). The
    discovery itself goes on (single-flight, shielded) and caches what it finds, so
    the next lookup has the policy; ``on_late`` is called when it has finished (e.g. to
    recompute an answer given without it).
    """
    task = asyncio.ensure_future(discover(domain, cache=cache, now=now, **kwargs))
    done, _ = await asyncio.wait({task}, timeout=wait)
    if task in done:
        return task.result()
    _pending.add(task)  # keep a reference until it finishes
    task.add_done_callback(_finished)
    if on_late is not None:
        task.add_done_callback(lambda _t: on_late())
    try:
        stored = await cache.get(normalize_domain(domain))
    except SmtpTlsError:
        stored = None
    entry = live(stored, now)
    if entry is not None:
        return Discovery(domain, Outcome.FETCH_PENDING, Action.USE_CACHED, entry.policy,
                         entry.policy_id, cached=entry)
    return Discovery(domain, Outcome.FETCH_PENDING, Action.NO_POLICY)


_pending: set[asyncio.Future[Discovery]] = set()

#: per cache: domain -> (policy id whose fetch failed, when): RFC 8461 §3.3's per-id
#: retry wait (B6), kept for at most MAX_REMEMBERED_FAILURES domains (oldest dropped)
#: and gone with its cache.
_failed_fetches: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, float]]] = \
    weakref.WeakKeyDictionary()
MAX_REMEMBERED_FAILURES = 100_000


def _failures(cache: PolicyCache) -> dict[str, tuple[str, float]]:
    memo = _failed_fetches.get(cache)
    if memo is None:
        _failed_fetches[cache] = memo = {}
    return memo


def _remember_failure(memo: dict[str, tuple[str, float]], domain: str, record_id: str,
                      now: float) -> None:
    memo.pop(domain, None)
    if len(memo) >= MAX_REMEMBERED_FAILURES:
        memo.pop(next(iter(memo)))
    memo[domain] = (record_id, now)


def _finished(task: asyncio.Future[Discovery]) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background MTA-STS discovery failed: %r", task.exception())


async def _lookup_record(
    dns: Resolver, domain: str
) -> tuple[StsRecord | None, tuple[str, ...], Security | None, SmtpTlsError | None]:
    try:
        # RFC 8461 §3.1: the record lives at _mta-sts.<policy domain>; the resolver
        # follows CNAMEs (A4) and the strings of each record come concatenated (A1).
        answer = await dns.txt(f"_mta-sts.{domain}")
    except DnsBogus as exc:
        return None, (), Security.BOGUS, exc
    except DnsError as exc:
        return None, (), Security.INDETERMINATE, exc
    records = tuple(answer.records)
    try:
        # RFC 8461 §3.1: discard non-STSv1 records; not exactly one valid -> no policy
        return parse_txt_records(records), records, answer.security, None
    except PolicyError as exc:
        return None, records, answer.security, exc


async def _discover(
    domain: str,
    *,
    dns: Resolver,
    cache: PolicyCache,
    fetch_config: FetchConfig,
    now: float,
    proactive: bool,
    fetcher: PolicyFetcher,
    retry_after: float,
) -> Discovery:
    store_error: SmtpTlsError | None = None
    try:
        stored = await cache.get(domain)
    except StoreError as exc:
        log.warning("policy cache read failed for %s: %s", domain, exc)
        stored, store_error = None, exc

    record, txt_records, txt_security, txt_error = await _lookup_record(dns, domain)
    action = decide_refresh(stored, record, now, proactive=proactive)
    common: dict[str, Any] = {
        "record": record, "txt_records": txt_records, "txt_security": txt_security,
        "txt_error": txt_error,
    }

    if action is not Action.FETCH:
        entry = live(stored, now)
        if entry is None and stored is not None:
            # RFC 8461 §3.2: past max_age the cached policy no longer applies: drop it
            store_error = await _store(cache.delete(domain), domain) or store_error
        if action is Action.USE_CACHED and entry is not None:
            # RFC 8461 §3.3 (B8): keep applying the unexpired cached policy
            return Discovery(domain, Outcome.CACHED, action, entry.policy, entry.policy_id,
                             cached=entry, store_error=store_error, **common)
        return Discovery(domain, Outcome.NO_POLICY, Action.NO_POLICY,
                         store_error=store_error, **common)

    assert record is not None  # decide_refresh only fetches with a valid record
    entry = live(stored, now)
    memo = _failures(cache)
    failed = memo.get(domain)
    if failed is not None and not refetch_allowed(failed, record.id, now, retry_after):
        # RFC 8461 §3.3 (B6): this policy id failed less than retry_after ago: no new
        # fetch; the unexpired cached policy applies (B8), else no MTA-STS (B7)
        if entry is not None:
            return Discovery(domain, Outcome.CACHED, Action.USE_CACHED, entry.policy,
                             entry.policy_id, cached=entry, store_error=store_error,
                             rate_limited=True, **common)
        return Discovery(domain, Outcome.FETCH_FAILED, action, store_error=store_error,
                         rate_limited=True, **common)
    if (failed is None and entry is not None and entry.last_checked > entry.fetched_at
            and 0 <= now - entry.last_checked < retry_after):
        # RFC 8461 §3.3: senders MAY rate-limit refetches after a failure; the last
        # attempt failed (last_checked moved past fetched_at) less than retry_after ago,
        # so keep applying the unexpired cached policy without fetching again (B6, B8).
        # (Only when this process does not know which id failed, e.g. after a restart.)
        return Discovery(domain, Outcome.CACHED, Action.USE_CACHED, entry.policy,
                         entry.policy_id, cached=entry, store_error=store_error,
                         rate_limited=True, **common)
    fetched: Policy | SmtpTlsError
    fetch: FetchResult | None = None
    fetch_error: SmtpTlsError | None = None
    try:
        fetch = await fetcher(domain, config=fetch_config, resolver=dns)
        # RFC 8461 §3.2: an invalid policy is treated as a failed fetch
        fetched = parse_policy(fetch.text)
    except SmtpTlsError as exc:
        fetched, fetch_error = exc, exc
        log.info("MTA-STS policy fetch for %s failed: %s", domain, exc)

    if fetch_error is None:
        memo.pop(domain, None)
    else:
        _remember_failure(memo, domain, record.id, now)
    result = apply_fetch_result(stored, fetched, record.id, now)
    if result.cached is None:
        if stored is not None:
            store_error = await _store(cache.delete(domain), domain) or store_error
    else:
        store_error = await _store(cache.put(domain, result.cached), domain) or store_error

    outcome = {
        FetchOutcome.STORED: Outcome.FETCHED,
        FetchOutcome.KEPT_CACHED: Outcome.FETCH_FAILED_KEPT_CACHED,
        FetchOutcome.NO_POLICY: Outcome.FETCH_FAILED,
    }[result.outcome]
    cached = result.cached
    return Discovery(
        domain, outcome, action,
        policy=result.policy,  # applies to this delivery even with max_age 0
        policy_id=None if cached is None else cached.policy_id,
        cached=cached, fetch=fetch, fetch_error=fetch_error, store_error=store_error,
        **common,
    )


async def _store(aw: Any, domain: str) -> SmtpTlsError | None:
    try:
        await aw
    except StoreError as exc:
        log.warning("policy cache write failed for %s: %s", domain, exc)
        return exc
    return None


async def refresh_due(
    *,
    dns: Resolver,
    cache: PolicyCache,
    fetch_config: FetchConfig | None = None,
    now: float,
    before_expiry: float = 3600.0,
    max_domains: int = 1000,
    concurrency: int = 8,
    fetcher: PolicyFetcher | None = None,
) -> list[Discovery]:
    """Proactively refresh the cached policies that are due (RFC 8461 §3.3, §5.1; D3).

    Walks the cache, picks at most ``max_domains`` entries for which
    :func:`~smtptls.mtasts.cache_logic.needs_proactive_refresh` says so (daily, or
    ``before_expiry`` seconds before expiry, rate-limited after failures) and runs
    :func:`discover` with ``proactive=True`` on them, ``concurrency`` at a time. A policy
    daemon calls this periodically; the results say what each refresh did.
    """
    due: list[str] = []
    async for domain, cached in cache.iter_all():
        if needs_proactive_refresh(cached, now, before_expiry):
            due.append(domain)
            if len(due) >= max_domains:
                break
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(domain: str) -> Discovery:
        async with gate:
            return await discover(domain, dns=dns, cache=cache, fetch_config=fetch_config,
                                  now=now, proactive=True, fetcher=fetcher)

    return list(await asyncio.gather(*(one(d) for d in due)))
