"""MTA-STS, RFC 8461: pure parsing, matching and cache logic (no I/O).

- :mod:`.record`: the ``_mta-sts`` TXT record (§3.1) — :func:`parse_txt_records`,
  :class:`StsRecord`;
- :mod:`.policy`: the policy file (§3.2) and its media type (§3.3) — :func:`parse_policy`,
  :class:`Policy`, :class:`Mode`, :func:`is_text_plain`;
- :mod:`.match`: MX and certificate name matching (§4.1, §4.2) — :func:`mx_matches`,
  :func:`cert_matches`;
- :mod:`.cache_logic`: caching, refresh and the sender's per-MX decision (§3.3, §5,
  §5.1, §8) — :class:`CachedPolicy`, :func:`decide_refresh`, :func:`apply_fetch_result`,
  :func:`needs_proactive_refresh`, :func:`alert_on_refresh_failure`,
  :func:`sender_action`, :func:`no_mx_left`;
- :mod:`.change`: whether publishing a new policy keeps mail flowing for senders that
  hold the live one (§8.1) — :func:`~smtptls.mtasts.change.compare`.

Every public function raises only :class:`smtptls.errors.PolicyError` subclasses; the
matching functions never raise.
"""

from __future__ import annotations

from smtptls.lazy import lazy_exports
from smtptls.mtasts.match import cert_matches, mx_matches, normalize_host
from smtptls.mtasts.policy import (
    MAX_AGE_LIMIT,
    Mode,
    Policy,
    check_mx_pattern,
    is_text_plain,
    parse_policy,
)
from smtptls.mtasts.record import StsRecord, is_sts_candidate, parse_txt_records

# The cache and refresh logic loads on first use, not with the package: record, policy
# and matching are what a checker or a publisher reads.
_LAZY = {name: "cache_logic" for name in (
    "Action", "CachedPolicy", "Delivery", "Failure", "FetchOutcome", "FetchResult",
    "Verdict", "alert_on_refresh_failure", "apply_fetch_result", "decide_refresh",
    "effective_policy", "live", "needs_proactive_refresh", "no_mx_left", "sender_action")}

__all__ = [
    "MAX_AGE_LIMIT",
    "Action",
    "CachedPolicy",
    "Delivery",
    "Failure",
    "FetchOutcome",
    "FetchResult",
    "Mode",
    "Policy",
    "StsRecord",
    "Verdict",
    "alert_on_refresh_failure",
    "apply_fetch_result",
    "cert_matches",
    "check_mx_pattern",
    "decide_refresh",
    "effective_policy",
    "is_sts_candidate",
    "is_text_plain",
    "live",
    "mx_matches",
    "needs_proactive_refresh",
    "no_mx_left",
    "normalize_host",
    "parse_policy",
    "parse_txt_records",
    "sender_action",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
