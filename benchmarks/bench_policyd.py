"""Benchmark: cached socketmap answers per second and latency, smtptls policyd side by
side with postfix-mta-sts-resolver (mta-sts-daemon), same client, same machine.

Method (written up in docs/performance.md, section "policyd"):

- Both daemons run as separate processes on loopback, each with the same N_DOMAINS
  domains warm in its cache, so every request is a cache hit and no network I/O
  happens:
  * smtptls: the real ``PolicyEngine`` + ``SocketmapServer`` with metrics on, fed by an
    in-memory DNS world (MX, TXT, policy) and warmed by one lookup per domain;
  * postfix-mta-sts-resolver: its own ``STSSocketmapResponder`` with its default
    in-memory cache (``InternalLRUCache``), pre-filled with the same policies
    (``CacheEntry(ts=now, id, policy)``, ``cache_grace`` raised so nothing goes stale).
  Its package lives in a git-ignored venv, installed by this script when missing at its
  best documented configuration, with the ``[uvloop]`` extra (``python -m venv
  .peers/venv && .peers/venv/bin/pip install 'postfix-mta-sts-resolver[uvloop]'``).
- One client (the same for both): ``benchmarks/socketmap_load.c``, compiled with ``cc``
  at start, so the load generator is never the bottleneck. C concurrent connections,
  each sends a request for a random domain and waits for the reply before the next,
  like Postfix's smtp processes do (closed loop, no pipelining).
- smtptls runs on the event loop its daemon would pick (``[policyd] event_loop``,
  ``--loop``; "auto" is uvloop when the ``smtptls[uvloop]`` extra is installed). Every reply is checked
  against the expected answer; latency is measured per request in the client.
- A third server, the floor, shows what the loopback round trip itself costs: a
  socketmap responder written for nothing else (uvloop, the reply to each whole
  request looked up in a dict of encoded replies, no engine, no metrics). No Python
  daemon answers faster, so floor / mta-sts-daemon bounds the ratio any could reach.
- The servers run at the same time; for each C, measurement slices alternate between
  them (ROUNDS x SLICE seconds each, after a short warm-up per slice), so whatever
  else loads the machine falls on both alike. The whole run stays under two minutes.

Usage::

    .venv/bin/python benchmarks/bench_policyd.py            # full comparison
    .venv/bin/python benchmarks/bench_policyd.py --quick    # shorter runs
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER_PY = ROOT / ".peers" / "venv" / "bin" / "python"
N_DOMAINS = 1000


def domain(i: int) -> str:
    return f"d{i}.bench.example"


def mx(i: int) -> str:
    return f"mx{i}.bench.example"


# --- servers ------------------------------------------------------------------------------


def serve_ours(port: int, n: int, loop_choice: str) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from smtptls.config import Config, PolicydConfig
    from smtptls.net.memory import MemoryFetcher, MemoryResolver
    from smtptls.services.policyd.daemon import event_loop_factory
    from smtptls.services.policyd.decide import PolicyEngine
    from smtptls.services.policyd.metrics import PolicydMetrics
    from smtptls.services.policyd.refresh import Refresher
    from smtptls.services.policyd.socketmap import SocketmapServer
    from smtptls.store import MemoryPolicyCache

    # the package's in-memory DNS and policy host: every other name is NODATA for an hour
    dns = MemoryResolver(negative_ttl=3600)
    fetch = MemoryFetcher()
    for i in range(n):
        dns.mx(domain(i), mx(i))
        dns.txt_record(f"_mta-sts.{domain(i)}", "v=STSv1; id=1", ttl=3600)
        fetch.policies[domain(i)] = f"version: STSv1\nmode: enforce\nmx: {mx(i)}\nmax_age: 86400\n"

    async def main() -> None:
        cfg = Config(policyd=PolicydConfig(txt_recheck_interval=3600.0))
        metrics = PolicydMetrics()
        engine = PolicyEngine(cfg, dns=dns, cache=MemoryPolicyCache(), fetcher=fetch,
                              metrics=metrics)
        for i in range(n):
            await engine.lookup(domain(i))
        server = SocketmapServer(engine, observer=metrics.observe)
        await server.listen_tcp("127.0.0.1", port)
        refresher = Refresher(engine)
        refresher.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("READY", flush=True)
        await stop.wait()
        await refresher.stop()
        await server.close(1.0)

    # the daemon's own choice of event loop ([policyd] event_loop; "auto": uvloop when
    # the smtptls[uvloop] extra is installed)
    factory = event_loop_factory(loop_choice)
    print(f"(smtptls on {'asyncio' if factory is None else 'uvloop'})", file=sys.stderr)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


def serve_peer(port: int, n: int) -> None:
    import logging

    from postfix_mta_sts_resolver import utils
    from postfix_mta_sts_resolver.base_cache import CacheEntry
    from postfix_mta_sts_resolver.internal_cache import InternalLRUCache
    from postfix_mta_sts_resolver.responder import STSSocketmapResponder

    logging.basicConfig(level=logging.WARNING)
    # its best documented configuration: the [uvloop] extra, which its daemon switches
    # to by itself (we start its responder directly, so install the loop as it would)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        print("(peer without uvloop)", file=sys.stderr)
    cfg = utils.populate_cfg_defaults({"host": "127.0.0.1", "port": port,
                                       "cache_grace": 86400})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cache = InternalLRUCache(cache_size=max(n, 10000))
        await cache.setup()
        now = time.time()
        for i in range(n):
            body = {"version": "STSv1", "mode": "enforce", "max_age": 86400, "mx": [mx(i)]}
            await cache.set(domain(i), CacheEntry(now, "1", body))
        responder = STSSocketmapResponder(cfg, loop, cache)
        await responder.start()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("READY", flush=True)
        await stop.wait()
        await responder.stop()

    asyncio.run(main())


def serve_floor(port: int, n: int) -> None:
    """The least a Python socketmap responder can do per request (see the module doc)."""
    import uvloop

    def netstring(text: str) -> bytes:
        data = text.encode()
        return b"%d:%s," % (len(data), data)

    replies = {netstring(f"postfix {domain(i)}"):
               netstring(f"OK secure match={mx(i)} servername=hostname") for i in range(n)}

    class Responder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buffer = b""

        def data_received(self, data: bytes) -> None:
            buffer = self.buffer + data
            while (colon := buffer.find(b":")) > 0:
                end = colon + 1 + int(buffer[:colon]) + 1
                if len(buffer) < end:
                    break
                self.transport.write(replies.get(buffer[:end], b"9:NOTFOUND ,"))  # type: ignore[attr-defined]
                buffer = buffer[end:]
            self.buffer = buffer

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Responder, "127.0.0.1", port)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        print("READY", flush=True)
        await stop.wait()
        server.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


# --- the client -------------------------------------------------------------------------------


def build_client(workdir: Path) -> Path:
    """Compile the C load generator (the same client for both daemons)."""
    exe = workdir / "socketmap_load"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "benchmarks" / "socketmap_load.c")],
                   check=True)
    return exe


def run_client(exe: Path, port: int, conns: int, duration: float, warmup: float, n: int,
               workdir: Path) -> tuple[float, list[float], int]:
    """Closed-loop load; returns (requests/s, latencies in s, errors)."""
    lat_file = workdir / "lat.bin"
    out = subprocess.run([str(exe), str(port), str(conns), str(int(duration * 1000)),
                          str(int(warmup * 1000)), str(n), str(lat_file)],
                         capture_output=True, text=True, timeout=duration + warmup + 30)
    if out.returncode != 0:
        raise SystemExit(f"load generator failed: {out.stderr}")
    fields = dict(kv.split("=") for kv in out.stdout.split())
    lat = array("f")
    lat.frombytes(lat_file.read_bytes())
    return (int(fields["requests"]) / float(fields["seconds"]), [x / 1e6 for x in lat],
            int(fields["errors"]))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))
    return values[k]


def start_server(kind: str, port: int, loop_choice: str = "auto") -> subprocess.Popen:
    py = str(PEER_PY) if kind == "peer" else sys.executable
    proc = subprocess.Popen([py, __file__, f"serve-{kind}", "--port", str(port),
                             "--domains", str(N_DOMAINS), "--loop", loop_choice],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if line.strip() != b"READY":
        proc.kill()
        raise SystemExit(f"{kind} server failed: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return proc


def ensure_peer() -> None:
    """The peer at its best documented configuration, in the git-ignored .peers/venv."""
    if not PEER_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_PY.parent.parent)], check=True)
    have = subprocess.run([str(PEER_PY), "-c", "import postfix_mta_sts_resolver, uvloop"],
                          capture_output=True)
    if have.returncode != 0:
        subprocess.run([str(PEER_PY), "-m", "pip", "install", "-q",
                        "postfix-mta-sts-resolver[uvloop]"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mode", nargs="?", default="bench",
                    choices=["bench", "serve-ours", "serve-peer", "serve-floor"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--domains", type=int, default=N_DOMAINS)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--conns", default="1,10,50")
    ap.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                    help="smtptls's event loop ([policyd] event_loop; default auto)")
    args = ap.parse_args()
    if args.mode == "serve-ours":
        return serve_ours(args.port, args.domains, args.loop)
    if args.mode == "serve-peer":
        return serve_peer(args.port, args.domains)
    if args.mode == "serve-floor":
        return serve_floor(args.port, args.domains)

    rounds, slice_s, warmup = (3, 1.0, 0.3) if args.quick else (6, 1.5, 0.3)
    conns_list = [int(c) for c in args.conns.split(",")]
    kinds = ["ours"]
    ensure_peer()
    if PEER_PY.exists():
        kinds.append("peer")
    else:
        print(f"(postfix-mta-sts-resolver not installed at {PEER_PY}; ours only)")
    try:
        import uvloop  # noqa: F401 - the floor runs on it
        kinds.append("floor")
    except ImportError:
        print("(uvloop not installed: no floor)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ratios: dict[int, list[float]] = {}
    bounds: dict[int, list[float]] = {}  # floor / peer: the most any Python daemon gets
    # both daemons run at once; measurement slices alternate between them so that the
    # load of anything else on the machine falls on both alike
    workdir = Path(tempfile.mkdtemp(prefix="bench-policyd-"))
    exe = build_client(workdir)
    procs = {kind: (start_server(kind, port := free_port(), args.loop), port)
             for kind in kinds}
    try:
        import uvloop  # noqa: F401
        ours_loop = "uvloop" if args.loop != "asyncio" else "asyncio"
    except ImportError:
        ours_loop = "asyncio" if args.loop == "auto" else args.loop
    print(f"smtptls event loop: {ours_loop} (event_loop = {args.loop!r}); "
          "mta-sts-daemon: uvloop")
    results: dict[tuple[str, int], tuple[float, float, float, int]] = {}
    try:
        for conns in conns_list:
            agg: dict[str, tuple[int, float, list[float], int]] = {
                k: (0, 0.0, [], 0) for k in kinds}
            for _ in range(rounds):
                slice_rps: dict[str, float] = {}
                for kind in kinds:
                    rps, lat, errors = run_client(exe, procs[kind][1], conns, slice_s,
                                                  warmup, N_DOMAINS, workdir)
                    slice_rps[kind] = rps
                    n, t, lats, e = agg[kind]
                    agg[kind] = (n + len(lat), t + len(lat) / rps if rps else t, lats + lat,
                                 e + errors)
                if slice_rps.get("peer"):
                    # the ratio of two neighbouring slices: whatever else loads the
                    # machine falls on both
                    ratios.setdefault(conns, []).append(slice_rps["ours"] / slice_rps["peer"])
                    if "floor" in slice_rps:
                        bounds.setdefault(conns, []).append(slice_rps["floor"]
                                                            / slice_rps["peer"])
            for kind in kinds:
                n, t, lats, e = agg[kind]
                rps = n / t if t else 0.0
                results[(kind, conns)] = (rps, pct(lats, 50), pct(lats, 99), e)
                print(f"{kind:5} C={conns:<3} {rps:9.0f} req/s  p50 {pct(lats, 50)*1e3:6.3f} ms"
                      f"  p99 {pct(lats, 99)*1e3:6.3f} ms  mean {statistics.fmean(lats)*1e3:6.3f}"
                      f" ms  errors {e}", flush=True)
    finally:
        for proc, _ in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("| clients | smtptls req/s | p50 ms | p99 ms | mta-sts-daemon req/s | p50 ms | p99 ms "
          "| ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for conns in conns_list:
        o = results[("ours", conns)]
        p = results.get(("peer", conns))
        if p is None:
            print(f"| {conns} | {o[0]:.0f} | {o[1]*1e3:.3f} | {o[2]*1e3:.3f} | - | - | - | - |")
        else:
            print(f"| {conns} | {o[0]:.0f} | {o[1]*1e3:.3f} | {o[2]*1e3:.3f} | {p[0]:.0f} | "
                  f"{p[1]*1e3:.3f} | {p[2]*1e3:.3f} | {o[0]/p[0]:.1f}x |")
    if ratios:
        print("\nratio per pair of neighbouring slices (smtptls / mta-sts-daemon):")
        for conns, values in ratios.items():
            print(f"  C={conns:<3} min {min(values):.2f}x  median "
                  f"{statistics.median(values):.2f}x  max {max(values):.2f}x  "
                  f"({len(values)} pairs)")
    if bounds:
        print("floor (a responder doing nothing but answer) / mta-sts-daemon, same pairs:")
        for conns, values in bounds.items():
            floor = results[("floor", conns)]
            print(f"  C={conns:<3} min {min(values):.2f}x  median "
                  f"{statistics.median(values):.2f}x  max {max(values):.2f}x  "
                  f"(floor {floor[0]:.0f} req/s, p50 {floor[1]*1e3:.3f} ms)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
