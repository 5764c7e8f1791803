"""JSON form of a cached MTA-STS policy, shared by every backend.

One document per policy domain::

    {"format": 1, "policy": "<policy file text>", "policy_id": "20240101",
     "fetched_at": 1700000000.0, "expires_at": 1700086400.0, "last_checked": ...}

The policy is stored as its canonical text (``Policy.to_text``) and parsed again on
load, so a stored entry goes through the same RFC 8461 §3.2 checks as a fetched one.
Times are seconds since the UNIX epoch. Anything that does not decode raises
:class:`~smtptls.errors.StoreError`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from smtptls.errors import SmtpTlsError, StoreError
from smtptls.mtasts.cache_logic import CachedPolicy
from smtptls.mtasts.policy import Policy

FORMAT = 1
MAX_DOCUMENT = 256 * 1024  # a policy is at most 64 KiB; anything far larger is damage


def to_dict(cached: CachedPolicy) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "policy": cached.policy.to_text(),
        "policy_id": cached.policy_id,
        "fetched_at": cached.fetched_at,
        "expires_at": cached.expires_at,
        "last_checked": cached.last_checked,
    }


def encode(cached: CachedPolicy) -> str:
    if not isinstance(cached, CachedPolicy):
        raise StoreError(f"expected a CachedPolicy, got {type(cached).__name__}")
    return json.dumps(to_dict(cached), separators=(",", ":"), sort_keys=True)


def _number(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise StoreError(f"cache entry: {key} is not a finite number")
    return float(value)


def from_dict(data: Any) -> CachedPolicy:
    if not isinstance(data, dict):
        raise StoreError("cache entry is not a JSON object")
    if data.get("format") != FORMAT:
        raise StoreError(f"cache entry format {data.get('format')!r} is not {FORMAT}")
    text, policy_id = data.get("policy"), data.get("policy_id")
    if not isinstance(text, str) or not isinstance(policy_id, str):
        raise StoreError("cache entry: policy and policy_id must be strings")
    try:
        return CachedPolicy(
            policy=Policy.parse(text),
            policy_id=policy_id,
            fetched_at=_number(data, "fetched_at"),
            expires_at=_number(data, "expires_at"),
            last_checked=_number(data, "last_checked"),
        )
    except StoreError:
        raise
    except SmtpTlsError as exc:
        raise StoreError(f"cache entry is invalid: {exc}") from exc


def decode(raw: str | bytes) -> CachedPolicy:
    if len(raw) > MAX_DOCUMENT:
        raise StoreError("cache entry larger than 256 KiB")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise StoreError(f"cache entry is not JSON: {exc}") from exc
    return from_dict(data)


def expires_at(cached: CachedPolicy) -> float:
    return cached.expires_at
