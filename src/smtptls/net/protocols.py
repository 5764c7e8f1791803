"""The network seams, as Protocols: what the engine, policyd, the checker and the TLSRPT
sender need of DNS and of the MTA-STS policy fetch.

:class:`~smtptls.net.dns.DnsResolver` and :func:`~smtptls.net.https.fetch_policy` are
the real ones; :class:`~smtptls.net.memory.MemoryResolver` and
:class:`~smtptls.net.memory.MemoryFetcher` the in-memory twins that tests, benchmarks
and library users share (as httpx ships ``MockTransport``), so nothing is monkeypatched.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from smtptls.config import FetchConfig
    from smtptls.net.dns import Answer
    from smtptls.net.https import FetchResult

__all__ = ["PolicyFetcher", "Resolver"]


class Resolver(Protocol):
    """One DNS lookup with its DNSSEC status (RFC 7672 §2.1.1): ``query`` raises
    :class:`~smtptls.errors.DnsError` subclasses, ``try_query`` returns the failure as
    data (SERVFAIL ``bogus``, anything else ``indeterminate``); ``txt``, ``a`` and
    ``aaaa`` are ``query`` of that type."""

    async def query(self, name: str, rdtype: str) -> Answer: ...

    async def try_query(self, name: str, rdtype: str) -> Answer: ...

    async def txt(self, name: str) -> Answer: ...

    async def a(self, name: str) -> Answer: ...

    async def aaaa(self, name: str) -> Answer: ...


class PolicyFetcher(Protocol):
    """The MTA-STS policy fetch (RFC 8461 §3.3), as
    :func:`~smtptls.net.https.fetch_policy`: the body and how it came, or a
    :class:`~smtptls.errors.FetchError` subclass."""

    def __call__(self, domain: str, *, config: FetchConfig,
                 resolver: Resolver) -> Awaitable[FetchResult]: ...
