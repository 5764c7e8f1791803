"""The policy cache interface and what every backend shares.

One small async interface, :class:`PolicyCache`, stores the MTA-STS policy in force for
each policy domain (RFC 8461 §3.3, §5.1: policies are cached for up to ``max_age`` and
refreshed proactively). Implementations: :mod:`~smtptls.store.sqlite` (default),
:mod:`~smtptls.store.postgres`, :mod:`~smtptls.store.redis`, and
:class:`~smtptls.store.lru.CachedStore` as an in-memory LRU in front of any of them.

Backends store one JSON document per domain (see :mod:`smtptls.store.codec`); they only
implement the five ``_raw`` methods of :class:`JsonBackend`. Keys are the normalized
policy domain (lower case, no trailing dot). A stored document that no longer decodes is
logged and treated as absent, so a damaged row never stops mail.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from smtptls.errors import SmtpTlsError, StoreError
from smtptls.store import codec

if TYPE_CHECKING:
    from smtptls.mtasts.cache_logic import CachedPolicy

log = logging.getLogger("smtptls.store")

MAX_DOMAIN = 253  # RFC 1035: a key longer than a domain name is a caller bug
PAGE = 500  # rows per page when iterating the whole cache


def cache_key(domain: str) -> str:
    """Normalize a policy domain into a cache key (lower case, no trailing dot)."""
    key = domain.strip().lower().rstrip(".")
    if not key or len(key) > MAX_DOMAIN:
        raise StoreError(f"invalid cache key {domain[:80]!r}")
    return key


@runtime_checkable
class PolicyCache(Protocol):
    """The MTA-STS policy cache as policyd and the CLI use it."""

    async def get(self, domain: str) -> CachedPolicy | None: ...

    async def put(self, domain: str, cached: CachedPolicy) -> None: ...

    async def delete(self, domain: str) -> bool: ...

    async def list_domains(self) -> list[str]: ...

    def iter_all(self) -> AsyncIterator[tuple[str, CachedPolicy]]: ...

    async def close(self) -> None: ...


class JsonBackend(ABC):
    """A :class:`PolicyCache` over a key -> JSON text store.

    Subclasses implement the raw methods; this class does the (de)serialization, key
    normalization and error wrapping (every failure is a :class:`StoreError`).
    """

    name = "backend"

    # --- raw operations, implemented per backend ------------------------------------

    @abstractmethod
    async def _get_raw(self, key: str) -> str | None: ...

    @abstractmethod
    async def _put_raw(self, key: str, value: str, expires_at: float | None) -> None: ...

    @abstractmethod
    async def _delete_raw(self, key: str) -> bool: ...

    @abstractmethod
    async def _keys_after(self, after: str, limit: int) -> list[str]:
        """Up to ``limit`` keys greater than ``after``, sorted."""

    async def _close(self) -> None:  # noqa: B027 - optional hook
        return None

    # --- the PolicyCache interface ----------------------------------------------------

    async def get(self, domain: str) -> CachedPolicy | None:
        key = cache_key(domain)
        raw = await self._guard(self._get_raw(key), "read")
        if raw is None:
            return None
        try:
            return codec.decode(raw)
        except SmtpTlsError as exc:
            log.warning("%s: ignoring undecodable cache entry for %s: %s", self.name, key, exc)
            return None

    async def put(self, domain: str, cached: CachedPolicy) -> None:
        key = cache_key(domain)
        value = codec.encode(cached)
        await self._guard(self._put_raw(key, value, codec.expires_at(cached)), "write")

    async def delete(self, domain: str) -> bool:
        return bool(await self._guard(self._delete_raw(cache_key(domain)), "delete"))

    async def list_domains(self) -> list[str]:
        out: list[str] = []
        async for key in self._iter_keys():
            out.append(key)
        return out

    async def iter_all(self) -> AsyncIterator[tuple[str, CachedPolicy]]:
        """Every cached policy, page by page (for proactive refresh, RFC 8461 §5.1)."""
        async for key in self._iter_keys():
            cached = await self.get(key)
            if cached is not None:
                yield key, cached

    async def close(self) -> None:
        await self._guard(self._close(), "close")

    async def _iter_keys(self) -> AsyncIterator[str]:
        after = ""
        while True:
            keys = await self._guard(self._keys_after(after, PAGE), "list")
            for key in keys:
                yield key
            if len(keys) < PAGE:
                return
            after = keys[-1]

    async def _guard(self, aw, what: str):  # type: ignore[no-untyped-def]
        try:
            return await aw
        except SmtpTlsError:
            raise
        except Exception as exc:  # backend libraries raise their own trees
            raise StoreError(f"{self.name} {what} failed: {type(exc).__name__}: {exc}") from exc
