"""One policy-cache test suite run against SQLite, PostgreSQL and Redis.

PostgreSQL: 127.0.0.1:5432, user postgres, database ``test`` (trust auth); each run uses
its own table and drops it. Redis: 127.0.0.1:6379; each run uses its own key prefix and
deletes its keys. Tests are skipped, not failed, when a server is not reachable.
"""

from __future__ import annotations

import sqlite3
import time
import uuid

import pytest

from smtptls.config import CacheConfig
from smtptls.errors import ConfigError, StoreError
from smtptls.mtasts import CachedPolicy, Mode, Policy
from smtptls.store import CachedStore, open_policy_backend, open_policy_cache
from smtptls.store.postgres import PostgresPolicyCache
from smtptls.store.redis import RedisPolicyCache
from smtptls.store.sqlite import SqlitePolicyCache

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
RUN = uuid.uuid4().hex[:10]

ENFORCE = Policy(version="STSv1", mode=Mode.ENFORCE, max_age=86400, mx=("mx.example.com",))
NONE = Policy(version="STSv1", mode=Mode.NONE, max_age=3600)


def entry(policy: Policy = ENFORCE, policy_id: str = "1", fetched: float | None = None):
    now = time.time() if fetched is None else fetched
    return CachedPolicy.from_fetch(policy, policy_id, now)


async def _open(kind: str, tmp_path):
    if kind == "sqlite":
        return await SqlitePolicyCache.open(tmp_path / "sub" / "cache.sqlite3")
    if kind == "postgres":
        try:
            return await PostgresPolicyCache.open(PG_DSN, table=f"t_policy_{RUN}",
                                                  connect_timeout=3)
        except StoreError as exc:
            pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        return await RedisPolicyCache.open(REDIS_URL, prefix=f"smtptls-test:{RUN}:")
    except StoreError as exc:
        pytest.skip(f"Redis not reachable: {exc}")


@pytest.fixture(params=[
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
])
async def backend(request, tmp_path):
    store = await _open(request.param, tmp_path)
    yield store
    if hasattr(store, "drop"):
        await store.drop()
    await store.close()


async def test_get_missing_is_none(backend):
    assert await backend.get("absent.example") is None
    assert await backend.delete("absent.example") is False


async def test_put_get_round_trip(backend):
    e = entry()
    await backend.put("Example.COM.", e)
    assert await backend.get("example.com") == e


async def test_rfc8461_3_3_put_replaces_existing_entry(backend):
    await backend.put("example.com", entry(policy_id="1"))
    newer = entry(policy_id="2")
    await backend.put("example.com", newer)
    assert await backend.get("example.com") == newer


async def test_rfc8461_8_3_mode_none_entry_stored(backend):
    e = entry(NONE, "gone")
    await backend.put("example.com", e)
    got = await backend.get("example.com")
    assert got is not None and got.policy.mode is Mode.NONE


async def test_delete(backend):
    await backend.put("example.com", entry())
    assert await backend.delete("EXAMPLE.com") is True
    assert await backend.get("example.com") is None


async def test_rfc8461_5_1_list_and_iterate_for_proactive_refresh(backend):
    names = [f"d{i:03d}.example" for i in range(12)]
    for name in reversed(names):
        await backend.put(name, entry(policy_id=name.split(".")[0]))
    assert await backend.list_domains() == names
    seen = {k: v.policy_id async for k, v in backend.iter_all()}
    assert seen == {n: n.split(".")[0] for n in names}


async def test_many_pages(backend, monkeypatch):
    from smtptls.store import base

    monkeypatch.setattr(base, "PAGE", 3)  # exercise paging with few rows
    names = [f"p{i}.example" for i in range(8)]
    for name in names:
        await backend.put(name, entry())
    assert await backend.list_domains() == sorted(names)


async def test_cached_store_in_front(backend):
    store = CachedStore(backend, lru_size=4)
    e = entry()
    await store.put("example.com", e)
    assert await backend.get("example.com") == e  # written through
    assert await store.get("example.com") == e


async def test_undecodable_entry_is_treated_as_absent(backend):
    await backend._put_raw("broken.example", '{"format": 1, "policy": "junk"}', None)
    assert await backend.get("broken.example") is None


@pytest.mark.redis
async def test_redis_key_expires_with_policy(tmp_path):
    store = await _open("redis", tmp_path)
    try:
        e = CachedPolicy.from_fetch(ENFORCE, "1", time.time())
        await store.put("ttl.example", e)
        ttl = await store._client.ttl(store.prefix + "ttl.example")
        assert 86300 <= ttl <= 86401
        past = CachedPolicy.from_fetch(
            Policy(version="STSv1", mode=Mode.ENFORCE, max_age=1, mx=("mx.example.com",)),
            "1", time.time() - 100)
        await store.put("old.example", past)
        assert await store.get("old.example") is None  # Redis expired it at once
    finally:
        await store.drop()
        await store.close()


async def test_sqlite_survives_restart_in_wal_mode(tmp_path):
    path = tmp_path / "var" / "cache.sqlite3"
    store = await SqlitePolicyCache.open(path)
    e = entry(policy_id="persist")
    await store.put("example.com", e)
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    again = await SqlitePolicyCache.open(path)
    try:
        assert await again.get("example.com") == e
    finally:
        await again.close()


async def test_sqlite_closed_store_raises_store_error(tmp_path):
    store = await SqlitePolicyCache.open(tmp_path / "c.sqlite3")
    await store.close()
    with pytest.raises(StoreError):
        await store.get("example.com")


async def test_sqlite_unopenable_path_is_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError):
        await SqlitePolicyCache.open(blocker / "cache.sqlite3")


@pytest.mark.parametrize("kind", [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
])
async def test_factory_builds_each_backend_with_lru(kind, tmp_path):
    cfg = CacheConfig(backend=kind, sqlite_path=str(tmp_path / "f.sqlite3"),
                      postgres_dsn=PG_DSN, redis_url=REDIS_URL, lru_size=7)
    try:
        cache = await open_policy_cache(cfg)
    except StoreError as exc:
        pytest.skip(f"{kind} not reachable: {exc}")
    try:
        assert isinstance(cache, CachedStore) and cache.lru.maxsize == 7
        assert await cache.get("factory-absent.example") is None
    finally:
        await cache.close()


async def test_factory_rejects_unknown_backend():
    with pytest.raises(ConfigError):
        await open_policy_backend(CacheConfig(backend="memcached"))


async def test_unreachable_servers_are_store_errors():
    with pytest.raises(StoreError):
        await PostgresPolicyCache.open("postgresql://postgres@127.0.0.1:1/test",
                                       connect_timeout=1)
    with pytest.raises(StoreError):
        await RedisPolicyCache.open("redis://127.0.0.1:1/0", socket_timeout=1)
    with pytest.raises(StoreError):
        await PostgresPolicyCache.open(PG_DSN, table="bad-name; drop")
