"""Policy cache and sender decisions as pure functions (RFC 8461 §3.3, §5, §5.1, §8).

Nothing here reads a clock, a store or the network. Every time is a ``float`` of
seconds since the UNIX epoch (what ``time.time()`` returns), passed in as ``now``.
A daemon drives it like this::

    cached = store.get(domain)                       # CachedPolicy | None
    record = lookup_txt(domain)                      # StsRecord | None (None also on
                                                     # no/invalid/several records, errors)
    action = decide_refresh(cached, record, now)
    if action is Action.FETCH:
        fetched = fetch_policy(domain)               # Policy, or the SmtpTlsError raised
        cached, outcome = apply_fetch_result(cached, fetched, record.id, now)
        store.put_or_delete(domain, cached)
    policy = effective_policy(cached, now)           # Policy | None
    for mx in mx_hosts:
        delivery = sender_action(policy, mx, cert_ok=...)

and, in the background, for every cached entry where :func:`needs_proactive_refresh`
says so, looks up the TXT record and calls ``decide_refresh(..., proactive=True)``.

Requirements covered (docs/requirements.md): A2, B6, B7, B8, C4, D1-D6, F1-F3.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

from smtptls.errors import PolicyError, SmtpTlsError
from smtptls.mtasts.policy import Mode, Policy
from smtptls.mtasts.record import StsRecord, _check_id

#: RFC 8461 §3.3: "a suggested refresh frequency is once per day".
DEFAULT_REFRESH_INTERVAL = 86400.0
#: Start a proactive refresh this long before expiry at the latest (policyd default).
DEFAULT_REFRESH_BEFORE_EXPIRY = 3600.0
#: RFC 8461 §3.3: after a failed fetch, wait "five minutes or longer" per policy id.
DEFAULT_RETRY_AFTER = 300.0


def _check_time(now: float, name: str = "now") -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise PolicyError(f"{name} must be a finite number of seconds since the epoch")
    return float(now)


@dataclass(frozen=True, slots=True)
class CachedPolicy:
    """A policy as a sender caches it.

    - ``policy_id``: the TXT record ``id`` under which the policy was fetched (§3.1);
    - ``fetched_at``: when the policy body was fetched;
    - ``expires_at``: ``fetched_at + max_age`` (RFC 8461 §3.2: cache "up to this value
      from the last policy fetch time");
    - ``last_checked``: when the policy was last confirmed current or a refresh was
      last attempted (drives the TXT re-check interval and the retry rate limit).
    """

    policy: Policy
    policy_id: str
    fetched_at: float
    expires_at: float
    last_checked: float

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise PolicyError("CachedPolicy.policy must be a Policy")
        _check_id(self.policy_id, None)
        for name in ("fetched_at", "expires_at", "last_checked"):
            object.__setattr__(self, name, _check_time(getattr(self, name), name))
        if self.expires_at < self.fetched_at:
            raise PolicyError("CachedPolicy.expires_at is before fetched_at")

    @classmethod
    def from_fetch(cls, policy: Policy, policy_id: str, now: float) -> CachedPolicy:
        """A freshly fetched policy: valid for ``max_age`` seconds from ``now`` (C4)."""
        if not isinstance(policy, Policy):
            raise PolicyError("CachedPolicy.policy must be a Policy")
        now = _check_time(now)
        return cls(policy, policy_id, now, now + policy.max_age, now)

    def is_expired(self, now: float) -> bool:
        """RFC 8461 §3.2, §5.1: expired once ``max_age`` seconds have passed since fetch."""
        return _check_time(now) >= self.expires_at

    def checked(self, now: float) -> CachedPolicy:
        """The same entry, noted as confirmed (or a refresh attempted) at ``now``."""
        return replace(self, last_checked=_check_time(now))


def live(cached: CachedPolicy | None, now: float) -> CachedPolicy | None:
    """``cached`` if it has not expired, else None: an expired policy is dropped."""
    if cached is not None and not isinstance(cached, CachedPolicy):
        raise PolicyError("cached must be a CachedPolicy or None")
    if cached is None or cached.is_expired(now):
        return None
    return cached


def effective_policy(cached: CachedPolicy | None, now: float) -> Policy | None:
    """The policy to apply now, or None to deliver as without MTA-STS.

    An unexpired cached policy applies even when the TXT record has gone or broken
    (A2, B8). A ``mode: none`` policy is returned as is; :func:`sender_action` treats
    it as no active policy (F3).
    """
    entry = live(cached, now)
    return None if entry is None else entry.policy


class Action(StrEnum):
    """What to do after looking up the ``_mta-sts`` TXT record."""

    NO_POLICY = "no-policy"  # deliver as without MTA-STS (drop any expired cache entry)
    USE_CACHED = "use-cached"  # apply the unexpired cached policy
    FETCH = "fetch"  # fetch the policy over HTTPS, then apply_fetch_result()


def decide_refresh(
    cached: CachedPolicy | None,
    record: StsRecord | None,
    now: float,
    *,
    proactive: bool = False,
) -> Action:
    """Decide from the cache entry and the TXT lookup result (RFC 8461 §3.1, §3.3, §5.1).

    ``record`` is None when no usable record was found: none published, several
    ``v=STSv1`` records, an invalid one, or a failed lookup — all mean "no available
    policy" (§3.1), which by itself never removes an unexpired cached policy.

    With ``proactive=True`` (a background refresh, D3) a valid record leads to a fetch
    even when its id is unchanged, since only a fetch extends a policy's lifetime.
    """
    if record is not None and not isinstance(record, StsRecord):
        raise PolicyError("record must be an StsRecord or None")
    entry = live(cached, now)
    if record is None:
        # RFC 8461 §3.1: absence of a usable TXT record does not remove a cached
        # policy; §3.3: with no live policy, apply the unexpired cached one (A2, B8)
        return Action.NO_POLICY if entry is None else Action.USE_CACHED
    if entry is None:
        # RFC 8461 §3.3 / §5.1 step 1: nothing valid cached - fetch (D1)
        return Action.FETCH
    if record.id != entry.policy_id:
        # RFC 8461 §3.1: a changed id means the policy was updated - fetch (D1)
        return Action.FETCH
    return Action.FETCH if proactive else Action.USE_CACHED


class FetchOutcome(StrEnum):
    STORED = "stored"  # the fetched policy is now the cached one (also mode none, D4)
    KEPT_CACHED = "kept-cached"  # fetch failed; the unexpired cached policy stays (D2, B8)
    NO_POLICY = "no-policy"  # fetch failed, nothing valid cached: no MTA-STS (B7)


class FetchResult(NamedTuple):
    """``cached``: what the store should hold now (None: delete); ``outcome``: why."""

    cached: CachedPolicy | None
    outcome: FetchOutcome

    @property
    def policy(self) -> Policy | None:
        """The policy to apply to the delivery at hand (even one with max_age 0)."""
        return None if self.cached is None else self.cached.policy


def apply_fetch_result(
    cached: CachedPolicy | None,
    fetched: Policy | SmtpTlsError,
    txt_id: str,
    now: float,
) -> FetchResult:
    """Fold the result of a policy fetch into the cache (RFC 8461 §3.3, §5.1, §8).

    ``fetched`` is the parsed :class:`Policy`, or the error the fetch or the parse
    raised (an invalid policy counts as a failed fetch, §3.2).

    - a fetched policy replaces the cached one, ``mode: none`` included (D4, §8.3);
    - a failure never replaces or weakens an unexpired cached policy: it stays in use
      until it expires, and the attempt is noted in ``last_checked`` (D2, B8);
    - a failure with nothing valid cached means delivery as without MTA-STS (B7).
    """
    now = _check_time(now)
    if isinstance(fetched, Policy):
        # RFC 8461 §3.2: the policy applies for max_age seconds from this fetch (C4)
        return FetchResult(CachedPolicy.from_fetch(fetched, txt_id, now), FetchOutcome.STORED)
    if not isinstance(fetched, SmtpTlsError):
        raise PolicyError("fetched must be a Policy or the SmtpTlsError of the failed fetch")
    entry = live(cached, now)
    if entry is None:
        # RFC 8461 §3.3: no policy fetched and none valid cached - as if no MTA-STS
        return FetchResult(None, FetchOutcome.NO_POLICY)
    # RFC 8461 §3.3: no live policy, but a valid cached one - keep applying it
    return FetchResult(entry.checked(now), FetchOutcome.KEPT_CACHED)


def refetch_allowed(failed: tuple[str, float] | None, record_id: str, now: float,
                    retry_after: float = DEFAULT_RETRY_AFTER) -> bool:
    """May the policy for ``record_id`` be fetched again? ``failed`` is the id whose
    fetch last failed and when (None: no failure remembered).

    RFC 8461 §3.3: after a failed fetch, senders SHOULD wait at least five minutes
    before trying again for the same policy id (B6); a new id may be fetched at once.
    """
    if failed is None:
        return True
    failed_id, failed_at = failed
    return failed_id != record_id or not 0 <= now - failed_at < retry_after


def needs_proactive_refresh(
    cached: CachedPolicy | None,
    now: float,
    before_expiry: float = DEFAULT_REFRESH_BEFORE_EXPIRY,
    *,
    interval: float = DEFAULT_REFRESH_INTERVAL,
    retry_after: float = DEFAULT_RETRY_AFTER,
) -> bool:
    """RFC 8461 §3.3: should this cache entry be refreshed in the background now? (D3)

    Due once ``interval`` seconds (daily by default) have passed since the fetch, or
    when expiry is ``before_expiry`` seconds away — but at most once per
    ``retry_after`` seconds since the last attempt (§3.3: after a failure, wait five
    minutes or longer). An expired entry is not refreshed: it is dropped.
    """
    now = _check_time(now)
    if live(cached, now) is None:
        return False
    if now - cached.last_checked < retry_after:
        return False
    return now - cached.fetched_at >= interval or cached.expires_at - now <= before_expiry


def alert_on_refresh_failure(policy: Policy | None) -> bool:
    """RFC 8461 §3.3, §10.2: should a failed refresh of this cached policy reach the
    administrator (a warning, not only a counter)? (D6)

    Yes, unless the policy in force is ``mode: none`` (nothing is enforced or tested,
    so the failure changes nothing). ``None`` — the cached policy expired meanwhile —
    is alerted: the domain has just lost its policy.
    """
    if policy is not None and not isinstance(policy, Policy):
        raise PolicyError("policy must be a Policy or None")
    return policy is None or policy.mode is not Mode.NONE


class Verdict(StrEnum):
    DELIVER = "deliver"  # deliver to this MX
    TRY_NEXT_MX = "try-next-mx"  # enforce: do not deliver to this MX; try the next one
    DEFER = "defer"  # no MX left: temporary failure (RFC 5321 §4.5.4.1 rules apply)


class Failure(StrEnum):
    """Why an MX failed policy validation (RFC 8461 §4)."""

    MX_MISMATCH = "mx-mismatch"  # §4.1: host matches no policy mx pattern
    STARTTLS_NOT_SUPPORTED = "starttls-not-supported"  # §4: no STARTTLS / TLS < 1.2
    CERTIFICATE_INVALID = "certificate-invalid"  # §4.2: PKIX or name check failed


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a sender does with one MX under the policy in effect (RFC 8461 §5).

    - ``mode``: the policy mode applied, None when there is no policy;
    - ``failure``: why the MX failed validation, if it did;
    - ``require_tls``: deliver only over validated TLS (enforce);
    - ``report``: record a TLSRPT failure for this attempt (RFC 8460; §5 "testing");
    - ``recheck_policy``: before failing the message permanently, look for an updated
      policy via the TXT ``id`` (§5.1 step 3, D5).
    """

    verdict: Verdict
    mode: Mode | None
    failure: Failure | None = None
    require_tls: bool = False
    report: bool = False
    recheck_policy: bool = False


def _failure(policy: Policy, mx_host: str, cert_ok: bool, starttls_ok: bool) -> Failure | None:
    if not policy.matches_mx(mx_host):
        return Failure.MX_MISMATCH
    if not starttls_ok:
        return Failure.STARTTLS_NOT_SUPPORTED
    if not cert_ok:
        return Failure.CERTIFICATE_INVALID
    return None


def sender_action(
    policy: Policy | None,
    mx_host: str,
    cert_ok: bool,
    *,
    starttls_ok: bool = True,
) -> Delivery:
    """Per-MX decision under the policy in effect (RFC 8461 §5; F1-F3, D5).

    ``cert_ok``: the MX presented a PKIX-valid certificate valid for ``mx_host`` (§4.2,
    see :func:`~smtptls.mtasts.match.cert_matches`); ``starttls_ok``: STARTTLS was
    offered and TLS 1.2 or later negotiated (§4). Both are the TLS layer's findings.

    - no policy, or ``mode: none``: deliver as without MTA-STS (§5, F3; B7);
    - ``testing``: deliver regardless, report a failure (§5, F2);
    - ``enforce``: deliver only if the MX matches and TLS validated; otherwise do not
      deliver to it and try the next MX (§5, F1), after which :func:`no_mx_left` says
      to defer and to re-check the policy before any permanent failure (§5.1, D5).
    """
    if policy is not None and not isinstance(policy, Policy):
        raise PolicyError("policy must be a Policy or None")
    if policy is None or policy.mode is Mode.NONE:
        # RFC 8461 §5: "none" - treat as if no active policy
        return Delivery(Verdict.DELIVER, None if policy is None else policy.mode)
    failure = _failure(policy, mx_host, bool(cert_ok), bool(starttls_ok))
    if policy.mode is Mode.TESTING:
        # RFC 8461 §5: "testing" - deliver as usual, report the failure (TLSRPT)
        return Delivery(Verdict.DELIVER, Mode.TESTING, failure, report=failure is not None)
    if failure is None:
        return Delivery(Verdict.DELIVER, Mode.ENFORCE, None, require_tls=True)
    # RFC 8461 §5: "enforce" - MUST NOT deliver to an MX failing validation; §5.1 step
    # 2: continue with the next candidate MX; step 3: re-check before a permanent failure
    return Delivery(
        Verdict.TRY_NEXT_MX,
        Mode.ENFORCE,
        failure,
        require_tls=True,
        report=True,
        recheck_policy=True,
    )


def no_mx_left(policy: Policy | None) -> Delivery:
    """Every candidate MX failed: defer the message (RFC 8461 §5.1 step 3).

    Under ``enforce`` the message MUST NOT be failed permanently before checking for an
    updated policy (D5): ``recheck_policy`` is set; if the TXT ``id`` is unchanged, the
    usual temporary-failure rules of RFC 5321 §4.5.4.1 apply.
    """
    if policy is not None and not isinstance(policy, Policy):
        raise PolicyError("policy must be a Policy or None")
    mode = None if policy is None else policy.mode
    enforced = mode is Mode.ENFORCE
    return Delivery(Verdict.DEFER, mode, require_tls=enforced, recheck_policy=enforced)
