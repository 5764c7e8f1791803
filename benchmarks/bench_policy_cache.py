"""Policy cache throughput: get/put per second for each backend, with and without the LRU,
and cached-path discoveries per second (TXT answer given, no fetch).

Run: ``.venv/bin/python benchmarks/bench_policy_cache.py [operations]``.
PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) are used when
reachable and skipped otherwise; each run uses its own table / key prefix and removes it.
Not part of the test run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

from smtptls.config import FetchConfig
from smtptls.engine.mtasts_discovery import Outcome, discover
from smtptls.errors import StoreError
from smtptls.mtasts import CachedPolicy, Mode, Policy
from smtptls.net.memory import MemoryResolver
from smtptls.store import CachedStore, MemoryPolicyCache
from smtptls.store.postgres import PostgresPolicyCache
from smtptls.store.redis import RedisPolicyCache
from smtptls.store.sqlite import SqlitePolicyCache

POLICY = Policy(version="STSv1", mode=Mode.ENFORCE, max_age=604800,
                mx=("mx1.example.com", "mx2.example.com", "*.backup.example.net"))
RUN = uuid.uuid4().hex[:8]


async def _timed(label: str, n: int, op) -> None:
    start = time.perf_counter()
    for i in range(n):
        await op(i)
    elapsed = time.perf_counter() - start
    print(f"  {label:<34} {n / elapsed:>10,.0f} ops/s   ({elapsed * 1e6 / n:7.1f} µs/op)")


async def bench_backend(name: str, store, n: int, domains: int) -> None:
    now = time.time()
    entry = CachedPolicy.from_fetch(POLICY, "1", now)
    print(f"{name}:")
    await _timed("put", n, lambda i: store.put(f"d{i % domains}.example", entry))
    await _timed("get (backend)", n, lambda i: store.get(f"d{i % domains}.example"))
    front = CachedStore(store, lru_size=domains)
    for i in range(domains):  # warm the LRU
        await front.get(f"d{i}.example")
    await _timed("get (LRU in front, warm)", n, lambda i: front.get(f"d{i % domains}.example"))


async def main(n: int) -> None:
    domains = 1000
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await SqlitePolicyCache.open(Path(tmp) / "bench.sqlite3")
        await bench_backend("sqlite (WAL, one thread)", sqlite, n, domains)
        await sqlite.close()
    try:
        pg = await PostgresPolicyCache.open("postgresql://postgres@127.0.0.1:5432/test",
                                            table=f"bench_policy_{RUN}", connect_timeout=3)
    except StoreError as exc:
        print(f"postgres: skipped ({exc})")
    else:
        await bench_backend("postgres (pool of 4)", pg, n, domains)
        await pg.drop()
        await pg.close()
    try:
        rd = await RedisPolicyCache.open("redis://127.0.0.1:6379/0", prefix=f"bench:{RUN}:")
    except StoreError as exc:
        print(f"redis: skipped ({exc})")
    else:
        await bench_backend("redis", rd, n, domains)
        await rd.drop()
        await rd.close()

    cache = MemoryPolicyCache()
    dns = MemoryResolver()
    now = time.time()
    for i in range(domains):
        dns.txt_record(f"_mta-sts.d{i}.example", "v=STSv1; id=1", ttl=0)
        await cache.put(f"d{i}.example", CachedPolicy.from_fetch(POLICY, "1", now))

    async def one(i: int) -> None:
        d = await discover(f"d{i % domains}.example", dns=dns, cache=cache,
                           fetch_config=FetchConfig(), now=now)
        assert d.outcome is Outcome.CACHED

    print("discovery, cached path (TXT id unchanged, memory cache):")
    await _timed("discover()", n, one)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
