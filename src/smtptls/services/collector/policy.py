"""Which policy applied to a domain, for results derived from logs (policyd, the cache,
or a fixed table)."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from smtptls.config import Config
from smtptls.errors import (
    SmtpTlsError,
)
from smtptls.logs import get_logger
from smtptls.services.collector.limits import CONTEXT_TTL, MAX_CONTEXTS
from smtptls.tlsrpt.report import ResultType
from smtptls.tlsrptsend.postfix_results import PolicyContext

_log = get_logger("tlsrpt.collect")

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


#: ``failure-reason-code`` of a refetch skipped because the last one failed recently
#: (RFC 8461 §3.3 allows rate-limiting refetches; the failure still stands).
RETRY_PENDING = "policy fetch failed recently; retry pending"
CACHED_APPLIED = "cached policy applied"


def _discovery_failure(discovery: Any) -> tuple[ResultType | None, str | None]:
    """The §4.3.2.2 result type and reason of a discovery whose policy fetch failed
    (fetched now, or skipped because it failed moments ago), else (None, None)."""
    from smtptls.engine.mtasts_discovery import Outcome

    if discovery.fetch_error is not None:
        return _sts_failure(discovery.fetch_error), str(discovery.fetch_error)
    if discovery.rate_limited and discovery.outcome in (Outcome.CACHED, Outcome.FETCH_FAILED):
        return ResultType.STS_POLICY_FETCH_ERROR, RETRY_PENDING
    return None, None


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
    if discovery is None:
        return PolicyContext(domain)
    policy = discovery.policy
    failure, reason = _discovery_failure(discovery)
    if policy is not None and policy.mode is not Mode.NONE:
        # RFC 8461 §3.3 / §6: a refresh that failed while an unexpired cached policy
        # stays in force is reported, and the sessions are judged under that policy.
        # Which count carries it: RFC 8460 §4.4 counts sessions, "successfully
        # negotiated TLS-enabled connections" and "failures to negotiate" one; the
        # failed refresh is no mail session and made none of them fail, so the summary
        # stays as the sessions went, and each session under the cached policy adds one
        # failure-details entry of the §4.3.2.2 type ("failed-session-count": the
        # sessions that "match the relevant result-type": those that went out while
        # the policy could not be refreshed). See docs/tlsrpt-sending.md.
        if failure is not None:
            reason = f"{reason}; {CACHED_APPLIED}"
        return PolicyContext(domain, "sts", policy.mode.value, _sts_strings(policy),
                             tuple(p.lower() for p in policy.mx), sts_failure=failure,
                             sts_failure_reason=reason)
    if policy is None and discovery.record is not None and failure is not None:
        # RFC 8461 §6: a valid TXT record, no policy fetched, nothing cached (B7)
        return PolicyContext(domain, sts_failure=failure, sts_failure_reason=reason)
    # no MTA-STS, or a cached or fetched mode "none" policy: nothing to report (§6)
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
