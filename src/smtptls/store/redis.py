"""Redis policy cache: a shared cache for a fleet of MTAs.

Values are the JSON documents of :mod:`smtptls.store.codec` under ``<prefix><domain>``.
Each key expires with the policy (``EXPIREAT`` = the policy's expiry, RFC 8461 §3.2
``max_age``), so Redis never holds a policy past the time it may be applied.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from smtptls.errors import StoreError
from smtptls.store.base import JsonBackend

DEFAULT_PREFIX = "smtptls:mtasts:"
_SCAN_COUNT = 500


class RedisPolicyCache(JsonBackend):
    name = "redis"

    def __init__(self, client: aioredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self.prefix = prefix

    @classmethod
    async def open(cls, url: str, *, prefix: str = DEFAULT_PREFIX,
                   socket_timeout: float = 5.0) -> RedisPolicyCache:
        client = aioredis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            decode_responses=True,
        )
        store = cls(client, prefix)
        try:
            await store._guard(client.ping(), "connect")
        except BaseException:
            await client.aclose()
            raise
        return store

    async def _get_raw(self, key: str) -> str | None:
        value = await self._client.get(self.prefix + key)
        return None if value is None else str(value)

    async def _put_raw(self, key: str, value: str, expires_at: float | None) -> None:
        if expires_at is None:
            await self._client.set(self.prefix + key, value)
        else:
            # EXAT takes whole seconds; round up so the key never outlives the policy by
            # less than it should, and never expires before it.
            await self._client.set(self.prefix + key, value,
                                   exat=max(1, math.ceil(expires_at)))

    async def _delete_raw(self, key: str) -> bool:
        return bool(await self._client.delete(self.prefix + key))

    async def _keys_after(self, after: str, limit: int) -> list[str]:
        # SCAN has no order; collect the keys (bounded by the cache's own size) and page
        # through them sorted so the JsonBackend iteration contract holds.
        keys: list[str] = []
        async for full in self._client.scan_iter(match=_glob_escape(self.prefix) + "*",
                                                 count=_SCAN_COUNT):
            key = str(full)[len(self.prefix):]
            if key > after:
                keys.append(key)
        keys.sort()
        return keys[:limit]

    async def _iter_keys(self) -> AsyncIterator[str]:
        # One SCAN pass (not one per page): SCAN may repeat keys, so de-duplicate.
        keys: set[str] = set()
        async for full in self._guard_iter():
            keys.add(full)
        for key in sorted(keys):
            yield key

    async def _guard_iter(self) -> AsyncIterator[str]:
        try:
            async for full in self._client.scan_iter(match=_glob_escape(self.prefix) + "*",
                                                     count=_SCAN_COUNT):
                yield str(full)[len(self.prefix):]
        except Exception as exc:
            raise StoreError(f"redis list failed: {type(exc).__name__}: {exc}") from exc

    async def drop(self) -> None:
        """Delete every key under the prefix (tests only)."""
        async def q() -> None:
            async for full in self._client.scan_iter(match=_glob_escape(self.prefix) + "*",
                                                     count=_SCAN_COUNT):
                await self._client.delete(full)
        await self._guard(q(), "drop")

    async def _close(self) -> None:
        await self._client.aclose()


def _glob_escape(text: str) -> str:
    out = []
    for ch in text:
        if ch in "*?[]\\":
            out.append("\\")
        out.append(ch)
    return "".join(out)
