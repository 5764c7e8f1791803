"""What one receiver lets all senders take at once: bytes in flight, posts per address.

:class:`InflightBudget` bounds the bytes of request bodies and mail held in memory over
every HTTPS request and SMTP/LMTP session together: each reserves before it reads and
releases when it is done, and is refused (HTTP 503, SMTP 452) when the budget is spent,
so a crowd of stalled uploads costs at most the budget, however many connect.
:class:`RateLimiter` is a token bucket per source address (an IPv6 address by its /64,
what one host is usually given) for the unauthenticated HTTPS intake (HTTP 429).
Both are pure: the caller passes the clock reading in.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["InflightBudget", "RateLimiter", "Reservation", "source_key"]

#: Source addresses remembered by the rate limiter; the least recently seen go first.
MAX_TRACKED_SOURCES = 100_000
#: IPv6 sources are limited per prefix of this length (one site's allocation).
IPV6_SOURCE_PREFIX = 64


class InflightBudget:
    """A byte budget shared by every request and session (``limit`` 0: unlimited)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, int(limit))
        self.used = 0
        self.refused = 0

    def reserve(self, size: int) -> Reservation | None:
        """A reservation of ``size`` bytes, or None (and one more refusal) if over budget."""
        size = max(0, int(size))
        if self.limit and self.used + size > self.limit:
            self.refused += 1
            return None
        self.used += size
        return Reservation(self, size)

    def hold(self) -> Reservation:
        """An empty reservation, to :meth:`Reservation.grow` as bytes arrive."""
        return Reservation(self, 0)


class Reservation:
    """Bytes held against an :class:`InflightBudget`; grows in steps, released once."""

    __slots__ = ("_budget", "size")

    def __init__(self, budget: InflightBudget, size: int) -> None:
        self._budget: InflightBudget | None = budget
        self.size = size

    def grow(self, size: int) -> bool:
        """Hold ``size`` bytes in all (never shrinks); False when the budget is spent."""
        budget = self._budget
        extra = int(size) - self.size
        if budget is None or extra <= 0:
            return budget is not None
        if budget.limit and budget.used + extra > budget.limit:
            budget.refused += 1
            return False
        budget.used += extra
        self.size += extra
        return True

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget.used -= self.size

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def source_key(remote: str) -> str:
    """The rate-limit key of a peer address: itself, or its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return remote[:64]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        net = ipaddress.IPv6Network((address, IPV6_SOURCE_PREFIX), strict=False)
        return str(net)
    return str(address)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """Token buckets: ``burst`` posts at once, refilled at ``per_minute`` (0: no limit)."""

    def __init__(self, per_minute: float, burst: int, *,
                 max_sources: int = MAX_TRACKED_SOURCES) -> None:
        self.rate = max(0.0, float(per_minute)) / 60.0
        self.burst = max(1, int(burst))
        self.max_sources = max_sources
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, remote: str, now: float) -> float:
        """0.0 when a post from ``remote`` may go ahead (it takes a token); else the
        seconds until it may (the Retry-After)."""
        if not self.enabled:
            return 0.0
        key = source_key(remote)
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        else:
            bucket.tokens = min(float(self.burst),
                                bucket.tokens + max(0.0, now - bucket.at) * self.rate)
            bucket.at = now
        self._buckets[key] = bucket  # most recently seen last
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return max(1.0, math.ceil((1.0 - bucket.tokens) / self.rate))
