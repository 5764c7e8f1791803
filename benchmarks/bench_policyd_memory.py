"""Benchmark: policyd memory per cached domain, and start to first answer, smtptls
side by side with postfix-mta-sts-resolver (mta-sts-daemon).

Method:

- **Memory.** Each side runs in a fresh process that fills its cache with N domains
  (default 100,000) the way it would in service, and reports its resident set size
  (``VmRSS``) before and after; the figure is (after - before) / N.
  * smtptls: the real ``PolicyEngine`` with the default configuration and its SQLite
    policy cache (``[cache]`` defaults: an LRU of ``lru_size`` policies in front of the
    file), every domain looked up once through an in-memory DNS world and policy
    fetcher, so each holds a computed answer as in service;
  * postfix-mta-sts-resolver: its default in-memory cache (``InternalLRUCache``, sized
    to hold N) filled with N ``CacheEntry`` values, which is what it keeps per domain
    (it has no answer cache of its own).
- **Start to first answer.** The real command is started (``smtptls policyd`` with a
  config file; ``mta-sts-daemon`` with its YAML) and a socketmap request for an IP
  literal (answered without any network I/O by both) is sent until it is answered;
  the figure is the wall time from spawn to that answer.
- Runs alternate between the two sides (ROUNDS each) so whatever loads the machine
  falls on both alike; min/median/max and the load average are printed.

The peer lives in a git-ignored venv, installed by this script when missing::

    python -m venv .peers/venv && .peers/venv/bin/pip install postfix-mta-sts-resolver

Usage::

    .venv/bin/python benchmarks/bench_policyd_memory.py            # N=100000, 3 rounds
    .venv/bin/python benchmarks/bench_policyd_memory.py --n 20000 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".peers" / "venv"
PEER_PY = PEER_VENV / "bin" / "python"


def ensure_peer() -> None:
    if PEER_PY.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q", "postfix-mta-sts-resolver"],
                   check=True)


OURS = r'''
import asyncio, gc, os, sys, tempfile
sys.path.insert(0, sys.argv[2])
from dataclasses import replace
from smtptls.config import Config
from smtptls.dnssec import Security
from smtptls.net.dns import Answer, MxHost
from smtptls.net.https import FetchResult
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.store import open_policy_cache

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024

class Dns:
    async def query(self, name, rdtype):
        if rdtype == "MX" and name.startswith("d"):
            i = name[1:].split(".")[0]
            return Answer(name, "MX", (MxHost(10, f"mx{i}.bench.example"),),
                          Security.INSECURE, ttl=3600)
        if rdtype == "TXT":
            return Answer(name, "TXT", ("v=STSv1; id=1",), Security.INSECURE, ttl=3600)
        return Answer(name, rdtype, (), Security.INSECURE, ttl=3600)
    async def txt(self, name):
        return await self.query(name, "TXT")

async def fetch(domain, *, config, resolver):
    i = domain[1:].split(".")[0]
    return FetchResult(f"version: STSv1\nmode: enforce\nmx: mx{i}.bench.example\n"
                       "max_age: 86400\n", "text/plain", 200, "https://x/", 0.01)

async def main(n):
    cfg = Config()
    path = os.path.join(tempfile.mkdtemp(), "cache.sqlite3")
    cfg = replace(cfg, cache=replace(cfg.cache, sqlite_path=path))
    cache = await open_policy_cache(cfg.cache)
    engine = PolicyEngine(cfg, dns=Dns(), cache=cache, fetcher=fetch)
    for i in range(2000):  # warm the code paths and the store before measuring
        await engine.lookup(f"w{i}.warm.example")
    gc.collect()
    before = rss()
    for i in range(n):
        await engine.lookup(f"d{i}.bench.example")
    gc.collect()
    after = rss()
    assert len(engine._answers) >= n, "the answer cap dropped answers"
    print((after - before) / n)

asyncio.run(main(int(sys.argv[1])))
'''

PEER = r'''
import asyncio, gc, sys, time
from postfix_mta_sts_resolver.base_cache import CacheEntry
from postfix_mta_sts_resolver.internal_cache import InternalLRUCache

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024

async def main(n):
    cache = InternalLRUCache(cache_size=n + 2000)
    await cache.setup()
    now = time.time()
    for i in range(2000):
        await cache.set(f"w{i}.warm.example", CacheEntry(now, "1", {"version": "STSv1",
                        "mode": "enforce", "max_age": 86400, "mx": [f"mx{i}.warm.example"]}))
    gc.collect()
    before = rss()
    for i in range(n):
        body = {"version": "STSv1", "mode": "enforce", "max_age": 86400,
                "mx": [f"mx{i}.bench.example"]}
        await cache.set(f"d{i}.bench.example", CacheEntry(now, "1", body))
    gc.collect()
    print((rss() - before) / n)

asyncio.run(main(int(sys.argv[1])))
'''


def memory(side: str, n: int) -> float:
    code, py = (OURS, sys.executable) if side == "smtptls" else (PEER, str(PEER_PY))
    out = subprocess.run([py, "-c", code, str(n), str(ROOT / "src")], check=True,
                         capture_output=True, text=True, timeout=900)
    return float(out.stdout.strip().splitlines()[-1])


def _netstring(text: str) -> bytes:
    data = text.encode()
    return str(len(data)).encode() + b":" + data + b","


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def startup(side: str, workdir: Path) -> float:
    port = _free_port()
    if side == "smtptls":
        cfg = workdir / "smtptls.toml"
        cfg.write_text(f'[cache]\nsqlite_path = "{workdir / "c.sqlite3"}"\n\n'
                       f'[policyd]\nlisten = "127.0.0.1:{port}"\nmetrics = ""\n')
        cmd = [sys.executable, "-m", "smtptls", "policyd", "--config", str(cfg)]
        request = "postfix [192.0.2.1]"
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    else:
        cfg = workdir / "peer.yml"
        cfg.write_text(f"host: 127.0.0.1\nport: {port}\nzones:\n  test:\n"
                       "    strict_testing: false\n")
        cmd = [str(PEER_VENV / "bin" / "mta-sts-daemon"), "-c", str(cfg)]
        request = "test [192.0.2.1]"
        env = dict(os.environ)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=workdir)
    try:
        deadline = started + 30
        while time.perf_counter() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(_netstring(request))
                    if s.recv(1024):
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.002)
        raise RuntimeError(f"{side} never answered")
    finally:
        proc.terminate()
        proc.wait(10)


def _stats(values: list[float]) -> str:
    return (f"min {min(values):.3g}  median {statistics.median(values):.3g}  "
            f"max {max(values):.3g}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="cached domains")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--startups", type=int, default=10, help="start-up runs per side")
    args = ap.parse_args()
    ensure_peer()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    mem: dict[str, list[float]] = {"smtptls": [], "peer": []}
    for _ in range(args.rounds):
        for side in ("smtptls", "peer"):
            mem[side].append(memory(side, args.n))
    print(f"memory per cached domain, {args.n} domains, {args.rounds} rounds (bytes):")
    for side, values in mem.items():
        print(f"  {side:8} {_stats(values)}")
    ratio = [o / p for o, p in zip(mem["smtptls"], mem["peer"], strict=True)]
    print(f"  ratio smtptls/peer: {_stats(ratio)}")
    times: dict[str, list[float]] = {"smtptls": [], "peer": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.startups):
            for side in ("smtptls", "peer"):
                times[side].append(startup(side, Path(tmp)))
    print(f"start to first answer, {args.startups} runs each (seconds):")
    for side, values in times.items():
        print(f"  {side:8} {_stats(values)}")
    ratio = [o / p for o, p in zip(times["smtptls"], times["peer"], strict=True)]
    print(f"  ratio smtptls/peer: {_stats(ratio)}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
