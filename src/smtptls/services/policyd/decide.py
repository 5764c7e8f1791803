"""The policy engine: DNS + MTA-STS discovery -> destination decision -> socketmap reply.

:class:`PolicyEngine` is the socketmap :class:`~.socketmap.Handler`. It keeps the final
answer for each next-hop key in memory, already encoded as a netstring, so the hot path
is one dict lookup. Each answer carries the moment it must be rechecked: the smallest of
the ``_mta-sts`` TXT TTL and ``txt_recheck_interval`` (RFC 8461 §3.3, D1: notice a
changed policy ``id``), the MX and TLSA TTLs and the cached policy's expiry (§3.2).
The refresher (:mod:`.refresh`) recomputes due answers in the background, so requests
never wait for a recheck; a recheck that fails keeps the previous answer (§5.1, D2: a
failed refresh never replaces a good cached policy, and an MX lookup that fails keeps
the last answer).

Concurrent requests for the same uncomputed key share one computation (and
:func:`~smtptls.engine.mtasts_discovery.discover` shares one fetch per domain).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from smtptls.config import Config, PolicydConfig
from smtptls.dnssec import Security
from smtptls.engine.destination import (
    Decision,
    DecisionKind,
    DestinationFacts,
    NextHop,
    NextHopKind,
    Options,
    decide,
    pre_decide,
)
from smtptls.engine.gather import DestinationDns, lookup_destination, to_facts
from smtptls.engine.mtasts_discovery import (
    Discovery,
    Outcome,
    discover_within,
)
from smtptls.errors import InvalidDomainError, PolicyError
from smtptls.logs import get_logger
from smtptls.mtasts.policy import Mode
from smtptls.net.dns import Answer
from smtptls.net.protocols import PolicyFetcher, Resolver
from smtptls.services.policyd.metrics import PolicydMetrics
from smtptls.services.policyd.postfix310 import (
    AnswerSyntaxError,
    secure_answer,
    sts_answer,
)
from smtptls.services.policyd.socketmap import Reply
from smtptls.store.base import PolicyCache

__all__ = ["CachedAnswer", "Explanation", "PolicyEngine", "decision_reply", "max_answers_for"]

log = get_logger("policyd")

#: Never recheck more often than this, whatever the TTLs say (TTL 0 records).
MIN_RECHECK = 2.0
#: A TEMP answer (lookup failed) is retried after this many seconds.
TEMP_RETRY = 15.0
#: Answers for keys that are not next hops (IP literals, ".parent") live this long.
STATIC_TTL = 3600.0
#: At most this many answers are computed at once (DNS and HTTPS work); more wait.
MAX_CONCURRENT = 256
#: Replies up to this long are shared between next hops (most answers are one of a
#: few texts); at most this many distinct ones.
MAX_INTERNED_LEN = 64
MAX_INTERNED = 4096
#: What one cached answer costs (measured by benchmarks/bench_policyd_memory.py: key,
#: dict slot, entry, its floats, the reply and the refresh heap entry), for sizing the
#: answer cap from ``[policyd] answer_memory_mib``.
BYTES_PER_ANSWER = 512


def _second(at: float) -> int:
    # a recheck time rounded up to its whole second: never rechecked early
    return math.ceil(at)


def max_answers_for(memory_mib: float) -> int:
    """How many answers fit in ``memory_mib`` MiB (at least one)."""
    return max(int(memory_mib * 1024 * 1024 // BYTES_PER_ANSWER), 1)


def decision_reply(decision: Decision) -> Reply:
    """The socketmap reply for a decision."""
    if decision.kind is DecisionKind.TEMP:
        return Reply.temp(decision.reason)
    if decision.policy is None:
        return Reply.notfound()
    return Reply.ok(decision.policy)


@dataclass(slots=True)
class CachedAnswer:
    """One computed answer, as small as it can be (one per cached next hop): the
    encoded reply and the times the refresher needs. ``recheck_at``: when the refresher
    recomputes it; ``expires_at``: past this a request recomputes it itself (refresher
    behind); ``last_used``: for dropping idle entries. The reasoning behind an answer
    is computed again on demand (:meth:`PolicyEngine.explain`, ``policyd query``)."""

    wire: bytes
    recheck_at: float
    expires_at: float
    last_used: float


@dataclass(frozen=True, slots=True)
class Explanation:
    """Everything behind one answer (``smtptls policyd query``)."""

    key: str
    decision: Decision
    reply: Reply
    facts: DestinationFacts | None = None
    discovery: Discovery | None = None
    ttl: float | None = None
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "reply": self.reply.to_text(),
            "decision": self.decision.to_dict(),
            "facts": None if self.facts is None else self.facts.to_dict(),
            "mta_sts": None if self.discovery is None else self.discovery.to_dict(),
            "recheck_after": None if self.ttl is None else round(self.ttl, 1),
            "notes": list(self.notes),
        }


class _TtlRecorder:
    """Wraps the resolver given to :func:`discover` to learn the ``_mta-sts`` TXT TTL."""

    def __init__(self, dns: Resolver) -> None:
        self._dns = dns
        self.txt_ttl: int | None = None

    async def txt(self, name: str) -> Answer:
        answer = await self._dns.txt(name)
        self.txt_ttl = answer.ttl
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dns, name)


def _options(cfg: PolicydConfig) -> Options:
    return Options(testing_answer=cfg.testing_answer, strict_testing=cfg.strict_testing,
                   overrides=dict(cfg.overrides))


class PolicyEngine:
    """Computes, caches and refreshes socketmap answers.

    ``dns`` is a :class:`~smtptls.net.protocols.Resolver` (the real
    :class:`~smtptls.net.dns.DnsResolver` or the in-memory
    :class:`~smtptls.net.memory.MemoryResolver`); ``cache`` the MTA-STS policy cache;
    ``clock`` returns seconds since the epoch; ``fetcher`` replaces the HTTPS fetch.
    """

    def __init__(
        self,
        config: Config,
        *,
        dns: Resolver,
        cache: PolicyCache,
        clock: Callable[[], float] = time.time,
        metrics: PolicydMetrics | None = None,
        fetcher: PolicyFetcher | None = None,
        compute_timeout: float | None = None,
        max_answers: int | None = None,
    ) -> None:
        self.config = config
        self.dns = dns
        self.cache = cache
        self.clock = clock
        self.metrics = metrics
        self.fetcher = fetcher
        # Postfix waits 100 s for a socketmap reply; answer well before (config)
        self.compute_timeout = (config.policyd.answer_timeout if compute_timeout is None
                                else compute_timeout)
        # sized by memory, independently of the policy cache's own LRU (cache.lru_size)
        self.max_answers = max_answers or max_answers_for(config.policyd.answer_memory_mib)
        self.options = _options(config.policyd)
        self._answers: dict[str, CachedAnswer] = {}
        # recheck schedule: whole seconds -> keys due then (a timer wheel: one list slot
        # per answer instead of a heap tuple), and a heap of the seconds in use
        self._wheel: dict[int, list[str]] = {}
        self._seconds: list[int] = []
        self._scheduled = 0
        self._inflight: dict[str, asyncio.Task[CachedAnswer]] = {}
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._shared: dict[bytes, bytes] = {}
        self._late: set[asyncio.Future[Any]] = set()
        self.computations = 0  # how many answers were computed (tests, metrics)

    # --- configuration ------------------------------------------------------------

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration (SIGHUP): new options, answers recomputed."""
        self.config = config
        self.options = _options(config.policyd)
        self._answers.clear()
        self._wheel.clear()
        self._seconds.clear()
        self._scheduled = 0
        self._gauge()

    # --- the socketmap handler ------------------------------------------------------

    def lookup_cached(self, key: str) -> bytes | None:
        """The encoded answer for ``key`` if it is in memory and not expired (hot path:
        no I/O, no await)."""
        entry = self._answers.get(key)
        if entry is None:
            entry = self._answers.get(key.lower())
        metrics = self.metrics
        if entry is not None:
            now = self.clock()
            if now < entry.expires_at:
                entry.last_used = now
                if metrics is not None:
                    metrics.hits += 1
                return entry.wire
        if metrics is not None:
            metrics.misses += 1
        return None

    async def lookup(self, key: str) -> bytes:
        norm = key.lower()
        task = self._inflight.get(norm)
        if task is None:
            task = asyncio.ensure_future(self._compute_and_store(norm))
            self._inflight[norm] = task
            task.add_done_callback(lambda t, k=norm: self._forget(k, t))
        try:
            # shield: a timed-out request leaves the computation running for the next
            entry = await asyncio.wait_for(asyncio.shield(task), self.compute_timeout)
        except TimeoutError:
            # DNS itself took longer than answer_timeout (an MTA-STS fetch never does:
            # it is cut at sts_wait): Postfix defers and asks again
            return Reply.temp("policy lookup still in progress").to_bytes()
        entry.last_used = self.clock()
        return entry.wire

    def _forget(self, key: str, task: asyncio.Task[CachedAnswer]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("answer computation failed", key=key[:100],
                      error=repr(task.exception()))

    # --- background refresh (driven by refresh.Refresher) ---------------------------

    def due_keys(self, now: float, limit: int = 1000) -> list[str]:
        """Keys whose recheck time has come (each returned once per scheduling)."""
        out: dict[str, None] = {}
        seconds, wheel, answers = self._seconds, self._wheel, self._answers
        while seconds and seconds[0] <= now and len(out) < limit:
            second = seconds[0]
            keys = wheel.get(second)
            while keys and len(out) < limit:
                key = keys.pop()
                self._scheduled -= 1
                entry = answers.get(key)
                if entry is not None and _second(entry.recheck_at) == second:
                    out[key] = None
            if not keys:
                wheel.pop(second, None)
                heapq.heappop(seconds)
        return list(out)

    def next_due(self) -> float | None:
        return float(self._seconds[0]) if self._seconds else None

    def _schedule(self, key: str, at: float) -> None:
        second = _second(at)
        keys = self._wheel.get(second)
        if keys is None:
            self._wheel[second] = keys = []
            heapq.heappush(self._seconds, second)
        keys.append(key)
        self._scheduled += 1

    def idle_since(self, key: str) -> float | None:
        entry = self._answers.get(key)
        return None if entry is None else entry.last_used

    def drop(self, key: str) -> None:
        self._answers.pop(key, None)
        self._gauge()

    async def refresh(self, key: str) -> CachedAnswer | None:
        """Recompute ``key`` now (shares a computation already running)."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._compute_and_store(key))
            self._inflight[key] = task
            task.add_done_callback(lambda t, k=key: self._forget(k, t))
        return await asyncio.shield(task)

    # --- computing -----------------------------------------------------------------

    async def _compute_and_store(self, key: str) -> CachedAnswer:
        previous = self._answers.get(key)
        try:
            async with self._slots:
                explanation = await self.explain(key)
            facts = explanation.facts
            if (previous is not None and facts is not None and facts.mx_error is not None
                    and facts.mx_security is Security.INDETERMINATE):
                # a failed MX recheck keeps the last good answer (RFC 8461 §5.1, D2
                # spirit: a refresh failure never weakens a good answer); retry soon
                log.info("MX recheck failed, previous answer kept", key=key[:100],
                         error=facts.mx_error)
                return self._keep(key, previous)
        except Exception as exc:  # a bug or an unexpected library error: never crash
            log.error("policy computation crashed", key=key[:100],
                      error=f"{type(exc).__name__}: {exc}")
            if previous is not None:
                return self._keep(key, previous)  # keep the previous answer, retry soon
            decision = Decision(DecisionKind.TEMP, None, "internal error")
            explanation = Explanation(key, decision, decision_reply(decision), ttl=TEMP_RETRY)
        now = self.clock()
        ttl = explanation.ttl if explanation.ttl is not None else TEMP_RETRY
        entry = CachedAnswer(
            wire=self._intern(explanation.reply.to_bytes()),
            recheck_at=now + ttl,
            # serve a due answer for a while longer if the refresher is late: requests
            # never wait for a recheck (but never past twice the recheck period)
            expires_at=now + ttl + max(ttl, MIN_RECHECK),
            last_used=previous.last_used if previous is not None else now,
        )
        self._store(key, entry)
        if previous is not None and previous.wire != entry.wire:
            log.info("answer changed", key=key[:100], before=previous.wire[:200].decode(
                "utf-8", "replace"), after=entry.wire[:200].decode("utf-8", "replace"))
        return entry

    def _keep(self, key: str, previous: CachedAnswer) -> CachedAnswer:
        previous.recheck_at = self.clock() + TEMP_RETRY
        previous.expires_at = max(previous.expires_at, previous.recheck_at)
        self._schedule(key, previous.recheck_at)
        return previous

    def _intern(self, wire: bytes) -> bytes:
        """One bytes object per distinct short reply (``OK dane-only``, ``NOTFOUND``,
        ...), shared by every next hop that has it."""
        if len(wire) > MAX_INTERNED_LEN:
            return wire
        shared = self._shared.get(wire)
        if shared is None:
            if len(self._shared) >= MAX_INTERNED:
                return wire
            self._shared[wire] = shared = wire
        return shared

    def _store(self, key: str, entry: CachedAnswer) -> None:
        answers = self._answers
        if key not in answers and len(answers) >= self.max_answers:
            # evict the oldest insertion (bounded memory; it is recomputed on demand)
            answers.pop(next(iter(answers)))
        answers[key] = entry
        self._schedule(key, entry.recheck_at)
        if self._scheduled > 4 * len(answers) + 1000:
            # stale schedule entries of rescheduled or evicted keys: rebuild it
            self._wheel.clear()
            self._seconds.clear()
            self._scheduled = 0
            for k, e in answers.items():
                self._schedule(k, e.recheck_at)
        self.computations += 1
        self._gauge()

    def _gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.cached_answers.set(len(self._answers))

    async def explain(self, key: str) -> Explanation:
        """Compute the answer for ``key`` with its reasoning (no answer caching)."""
        try:
            nexthop = NextHop.parse(key)
        except InvalidDomainError as exc:
            decision = Decision(DecisionKind.NOTFOUND, None, f"not a next-hop domain: {exc}")
            return Explanation(key, decision, decision_reply(decision), ttl=STATIC_TTL)
        pre = pre_decide(nexthop, self.options)
        if pre is not None:
            return Explanation(key, pre, decision_reply(pre), ttl=STATIC_TTL)
        assert nexthop.policy_domain is not None
        now = self.clock()
        recorder = _TtlRecorder(self.dns)
        is_domain = nexthop.kind is NextHopKind.DOMAIN
        discovery, found = await asyncio.gather(
            self._discover(nexthop.policy_domain, recorder, now, key),
            lookup_destination(self.dns, nexthop.name or "", port=nexthop.tlsa_port,
                               mx=is_domain))
        facts, ttls, notes = self._facts(nexthop, found, discovery)
        decision = self._for_postfix(decide(facts, self.options), facts)
        interval = self.config.policyd.txt_recheck_interval or 300.0
        ttl_candidates = [interval, *ttls]
        if recorder.txt_ttl is not None:
            # RFC 8461 §3.3: notice a new id once the TXT record's TTL has run out
            ttl_candidates.append(float(recorder.txt_ttl))
        cached = discovery.cached
        if cached is not None and cached.expires_at > now:
            ttl_candidates.append(cached.expires_at - now)  # RFC 8461 §3.2: max_age
        ttl = max(MIN_RECHECK, min(ttl_candidates))
        transient = facts.mx_security is Security.INDETERMINATE or any(
            h.dane is not None and h.dane.reason in ("tlsa-bogus", "address-bogus")
            for h in facts.hosts)
        if (decision.kind is DecisionKind.TEMP or transient
                or discovery.outcome is Outcome.FETCH_PENDING):
            # a failed lookup may be transient, a pending fetch will finish: decide
            # again soon
            ttl = min(ttl, TEMP_RETRY)
        self._count(discovery)
        return Explanation(key, decision, decision_reply(decision), facts, discovery, ttl,
                           tuple(notes))

    async def _discover(self, domain: str, recorder: _TtlRecorder, now: float,
                        key: str) -> Discovery:
        # RFC 8461 §3.3, §5: senders SHOULD not hold mail waiting for a slow policy
        # host; past sts_wait the answer goes out as without MTA-STS (or with the
        # unexpired cached policy) and the fetch finishes for the next lookup
        return await discover_within(
            self.config.policyd.sts_wait, domain, dns=recorder,  # type: ignore[arg-type]
            cache=self.cache, fetch_config=self.config.fetch, now=now,
            fetcher=self.fetcher, on_late=lambda: self._late_policy(key))

    def _late_policy(self, key: str) -> None:
        """A policy fetch that outlived ``sts_wait`` has finished: recompute the answer
        given without it now, not at its next recheck (only if it is still cached)."""
        if key in self._answers:
            task = asyncio.ensure_future(self.refresh(key))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    def _count(self, discovery: Discovery) -> None:
        m = self.metrics
        if m is None:
            return
        m.policy_lookups.labels(discovery.outcome.value).inc()
        err = discovery.fetch_error
        if err is not None:
            kind = "syntax" if isinstance(err, PolicyError) else getattr(err, "kind", "other")
            m.fetch_errors.labels(str(kind)).inc()

    def _for_postfix(self, decision: Decision, facts: DestinationFacts) -> Decision:
        """The decision in the syntax of the configured Postfix version: on 3.10 an
        MTA-STS answer names its policy (policy type, domain, MX patterns, policy
        lines), so Postfix reports it through TLSRPT and, with
        ``smtp_tls_enforce_sts_mx_patterns``, matches MX names against the patterns
        itself (docs/postfix.md, "Postfix 3.10")."""
        policy, domain = facts.policy, facts.nexthop.policy_domain
        if self.config.policyd.postfix_version != "3.10" or policy is None or domain is None:
            return decision
        try:
            if decision.kind is DecisionKind.SECURE and decision.policy is not None:
                return replace(decision, policy=secure_answer(decision.policy, policy, domain))
            if (decision.kind in (DecisionKind.TESTING, DecisionKind.NOTFOUND)
                    and policy.mode is Mode.TESTING and self.config.policyd.testing_reports):
                # Postfix 3.10 cannot verify without enforcing: "may" with the policy's
                # attributes gets the domain reports naming its testing policy, every
                # TLS session counted a success (docs/postfix.md); off by default
                base = decision.policy or "may"
                return replace(decision, kind=DecisionKind.TESTING,
                               policy=sts_answer(base, policy, domain),
                               reason=decision.reason + "; reported through Postfix's "
                               "TLSRPT client (testing_reports)")
        except AnswerSyntaxError as exc:
            log.warning("MTA-STS attributes not expressible; 3.7 answer used",
                        domain=domain, error=str(exc))
        return decision

    def _facts(self, nexthop: NextHop, found: DestinationDns, discovery: Discovery,
               ) -> tuple[DestinationFacts, list[float], list[str]]:
        facts = to_facts(found, nexthop, policy=discovery.policy,
                         sts_note=_sts_note(discovery))
        return facts, [float(t) for t in found.ttls], []


def _sts_note(discovery: Discovery) -> str:
    outcome = discovery.outcome
    if outcome is Outcome.FETCHED:
        return f"policy id {discovery.policy_id} fetched"
    if outcome is Outcome.CACHED:
        return f"policy id {discovery.policy_id} from the cache"
    if outcome is Outcome.FETCH_FAILED_KEPT_CACHED:
        return (f"fetch failed ({discovery.fetch_error}); cached policy id "
                f"{discovery.policy_id} still applies")
    if outcome is Outcome.FETCH_FAILED:
        return f"fetch failed ({discovery.fetch_error}) and nothing cached"
    if outcome is Outcome.FETCH_PENDING:
        held = (f"cached policy id {discovery.policy_id} applies" if discovery.policy
                else "nothing cached: as without MTA-STS")
        return f"policy fetch still running; {held}"
    if discovery.txt_error is not None:
        return f"no usable _mta-sts record: {discovery.txt_error}"
    return "no _mta-sts record"
