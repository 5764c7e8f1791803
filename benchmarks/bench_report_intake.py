"""HTTPS report intake throughput of ``smtptls reports serve``, group commits on and off.

Run: ``.venv/bin/python benchmarks/bench_report_intake.py [--clients 50] [--seconds 5]
[--reps 3] [--parse-workers N[,M...]] [--modes group,single]``.

``smtptls reports serve`` runs as its own process with HTTPS (a certificate from a test
CA made in a temporary directory, verified by the clients) and a new SQLite store
(``synchronous=FULL``) per slice, the per-address rate limit off. ``--clients``
concurrent aiohttp clients (keep-alive, one process) POST distinct valid RFC 8460
reports, half ``application/tlsrpt+json`` and half ``application/tlsrpt+gzip``
(1-3 policies, 0-4 failure details each, bodies encoded before the clock starts), for
``--seconds`` after a one-second warm-up. A report counts when its 2xx arrived, i.e.
after the commit that holds it; after each slice the store is opened and every
acknowledged report must be in it. ``--parse-workers N`` sets ``[reports]
parse_workers`` (report parsing in N worker processes, 0: on the event loop; unset or
``default``: the server's default, one fewer than the CPUs); the server's CPU time
counts its workers'. Several values (``--parse-workers 0,1``) run every configuration
with each, interleaved, and compare each with the first; ``--modes group`` runs only
the group-commit configuration.

Two server configurations, interleaved (the order alternates per repetition):
``group`` (``[reports] commit_batch = 256``, the default) and ``single``
(``commit_batch = 1``: one transaction and fsync per report, as before group commits).
Printed: reports/s min/median/max per side and of the ratio, p50/p99 latency, the CPU
time per acknowledged report of the server process, of its event loop (the main
thread: one core bounds it) and of the clients' process (what bounds the rate on a busy
machine), the load average. Last, the same reports go
through the intake and the group committer inside this process, no HTTP or TLS: the
rate parsing and storing alone allow. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import trustme

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_tlsrpt_store import make_reports  # noqa: E402

MODES = {"group": 256, "single": 1}
WARMUP = 1.0  # seconds of load before the clock starts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bodies(reports: list[dict], prefix: str) -> list[tuple[bytes, str]]:
    out = []
    for i, rep in enumerate(reports):
        doc = json.dumps({**rep, "report-id": f"{prefix}-{i}"}).encode()
        if i % 2:
            out.append((gzip.compress(doc, 6), "application/tlsrpt+gzip"))
        else:
            out.append((doc, "application/tlsrpt+json"))
    return out


class Server:
    def __init__(self, tmp: Path, name: str, batch: int, cert: Path, key: Path,
                 parse_workers: int | None) -> None:
        self.db = tmp / f"{name}.sqlite3"
        self.port = free_port()
        config = tmp / f"{name}.toml"
        workers = "" if parse_workers is None else f"parse_workers = {parse_workers}\n"
        config.write_text(f"[reports]\nrate_limit_per_minute = 0\ncommit_batch = {batch}\n"
                          + workers)
        argv = [sys.executable, "-m", "smtptls", "reports", "serve", "--config", str(config),
                "--db", str(self.db), "--listen", f"127.0.0.1:{self.port}", "--no-dkim",
                "--tls-cert", str(cert), "--tls-key", str(key)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    async def ready(self, ctx: ssl.SSLContext) -> None:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as c:
            while time.monotonic() < deadline:
                try:
                    async with c.get(f"https://127.0.0.1:{self.port}/healthz", ssl=ctx) as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
        raise SystemExit("reports serve did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stored(self) -> set[str]:
        with sqlite3.connect(self.db) as db:
            return {row[0] for row in db.execute("SELECT report_id FROM reports")}


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and of its running children (its parse
    workers), from Linux /proc."""
    total = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = _stat(int(proc.name))
        except OSError:  # ended meanwhile
            continue
        if int(proc.name) == pid or int(fields[1]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def loop_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process's main thread: its event loop."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, ctx: ssl.SSLContext, work: list[tuple[bytes, str]], clients: int,
               seconds: float, pid: int
               ) -> tuple[float, list[float], list[str], int, float, float, float]:
    """(reports/s, latencies of the counted 2xx, report-ids acknowledged, refusals,
    server, server event loop and client CPU seconds per counted report)."""
    url = f"https://127.0.0.1:{port}/v1/tlsrpt"
    it = iter(enumerate(work))
    acked: list[str] = []
    latencies: list[float] = []
    refused = 0
    start = time.monotonic()
    counting_from = start + WARMUP
    until = counting_from + seconds
    counted = 0
    connector = aiohttp.TCPConnector(limit=clients, ssl=ctx)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal refused, counted
        for i, (body, media_type) in it:
            t0 = time.monotonic()
            if t0 >= until:
                return
            async with session.post(url, data=body,
                                    headers={"Content-Type": media_type}) as r:
                await r.read()
                ok = 200 <= r.status < 300
            t1 = time.monotonic()
            if not ok:
                refused += 1
                continue
            acked.append(str(i))
            if t0 >= counting_from and t1 <= until:
                counted += 1
                latencies.append(t1 - t0)
        raise SystemExit("ran out of prepared reports: raise --prepare")

    async def clock() -> tuple[float, float, float]:
        await asyncio.sleep(max(0.0, counting_from - time.monotonic()))
        before, loop, mine = cpu_seconds(pid), loop_cpu_seconds(pid), time.process_time()
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        return (cpu_seconds(pid) - before, loop_cpu_seconds(pid) - loop,
                time.process_time() - mine)

    async with aiohttp.ClientSession(connector=connector) as session:
        (cpu, loop_cpu, client_cpu), *_ = await asyncio.gather(
            clock(), *(client(session) for _ in range(clients)))
    n = max(1, counted)
    return counted / seconds, latencies, acked, refused, cpu / n, loop_cpu / n, client_cpu / n


async def in_process(tmp: Path, name: str, batch: int, work: list[tuple[bytes, str]],
                     clients: int, seconds: float) -> tuple[float, float]:
    """The same reports through the intake and the group committer in this process, no
    HTTP or TLS: (reports/s, CPU seconds per report), the ceiling the server works under."""
    from smtptls.services.reports_server.commit_queue import GroupCommitter
    from smtptls.services.reports_server.intake import ReportIntake
    from smtptls.store.reports_sqlite import SqliteReportStore

    store = SqliteReportStore(tmp / f"{name}.sqlite3")
    await store.open()
    committer = GroupCommitter(store, max_batch=batch)
    intake = ReportIntake(store, committer=committer)
    it = iter(work)
    until = time.monotonic() + seconds
    done = 0

    async def client() -> None:
        nonlocal done
        for body, _ in it:
            if time.monotonic() >= until:
                return
            await intake.submit_body(body)
            done += 1

    cpu = time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    cpu = time.process_time() - cpu
    await committer.close()
    await store.close()
    return done / seconds, cpu / max(1, done)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def spread(values: list[float], fmt: str = ",.0f") -> str:
    return (f"{min(values):{fmt}} / {statistics.median(values):{fmt}} / "
            f"{max(values):{fmt}}")


def workers_list(text: str) -> list[int | None]:
    return [None if w == "default" else int(w) for w in text.split(",")]


def label(mode: str, workers: int | None, several: bool) -> str:
    if not several:
        return mode
    return f"{mode}/w{'d' if workers is None else workers}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--prepare", type=int, default=40_000,
                    help="report bodies encoded per slice (more than can be posted)")
    ap.add_argument("--parse-workers", type=workers_list, default=[None],
                    help="[reports] parse_workers of the server, or several, comma-separated"
                         " (each compared with the first), 'default' its own (the default)")
    ap.add_argument("--modes", type=lambda t: t.split(","), default=list(MODES),
                    help="server configurations, comma-separated (default: group,single)")
    args = ap.parse_args()
    modes = [m for m in MODES if m in args.modes]
    several = len(args.parse_workers) > 1
    slices = [(m, w) for m in modes for w in args.parse_workers]
    reports = make_reports(args.prepare)
    results: dict[tuple[str, int | None], list[tuple[float, float, float, float, float]]] = {
        sl: [] for sl in slices}
    shown = ",".join("default" if w is None else str(w) for w in args.parse_workers)
    print(f"reports serve HTTPS intake, SQLite synchronous=FULL, {args.clients} clients, "
          f"{args.seconds:g} s per slice after {WARMUP:g} s warm-up, {os.cpu_count()} cores, "
          f"parse_workers {shown}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as d:
        tmp = Path(d)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        for rep in range(args.reps):
            order = slices if rep % 2 == 0 else list(reversed(slices))
            for mode, workers in order:
                name = f"{mode}-{'d' if workers is None else workers}-{rep}"
                work = bodies(reports, name)
                server = Server(tmp, name, MODES[mode], cert, key, workers)
                try:
                    asyncio.run(server.ready(ctx))
                    rate, lat, acked, refused, cpu, loop_cpu, client_cpu = asyncio.run(
                        load(server.port, ctx, work, args.clients, args.seconds,
                             server.proc.pid))
                finally:
                    server.stop()
                stored = server.stored()
                missing = [i for i in acked if f"{name}-{i}" not in stored]
                results[mode, workers].append((rate, pct(lat, 0.5), pct(lat, 0.99), cpu * 1e6,
                                               loop_cpu * 1e6))
                print(f"  rep {rep + 1} {label(mode, workers, several):<9} {rate:>8,.0f} "
                      f"reports/s  p50 {pct(lat, 0.5):6.1f} ms  p99 {pct(lat, 0.99):6.1f} ms  "
                      f"CPU µs/report server {cpu * 1e6:5.0f} (loop {loop_cpu * 1e6:4.0f}) "
                      f"clients {client_cpu * 1e6:5.0f}  "
                      f"acknowledged {len(acked):,}, in the store {len(acked) - len(missing):,}"
                      f", refused {refused}  load {os.getloadavg()[0]:.2f}", flush=True)
                if missing:
                    raise SystemExit(f"{len(missing)} acknowledged reports missing")
    print()
    print(f"{'':<10}{'reports/s min / median / max':>30}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'server CPU µs/report':>24}{'loop CPU µs/report':>22}")
    for sl in slices:
        rows = results[sl]
        print(f"{label(*sl, several):<10}{spread([r[0] for r in rows]):>30}"
              f"{statistics.median(r[1] for r in rows):>8.1f}"
              f"{statistics.median(r[2] for r in rows):>8.1f}"
              f"{spread([r[3] for r in rows]):>24}{spread([r[4] for r in rows]):>22}")
    print("(p50, p99: medians of the repetitions; CPU: min / median / max)")
    for w in args.parse_workers:
        if "group" in modes and "single" in modes:
            ratios = [g[0] / s[0] for g, s in zip(results["group", w], results["single", w],
                                                  strict=True)]
            print(f"group / single throughput{'' if not several else f' (w{w})'}: "
                  f"{spread(ratios, '.2f')} (min / median / max)")
    for mode in modes:
        first = args.parse_workers[0]
        for w in args.parse_workers[1:]:
            ratios = [b[0] / a[0] for a, b in zip(results[mode, first], results[mode, w],
                                                  strict=True)]
            print(f"{label(mode, w, several)} / {label(mode, first, several)} throughput: "
                  f"{spread(ratios, '.2f')} (min / median / max)")
    print()
    print(f"no HTTP, in one process: parse + group committer + SQLite, {args.clients} tasks")
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as d:
        for mode in modes:
            batch = MODES[mode]
            rate, cpu = asyncio.run(in_process(Path(d), mode, batch,
                                               bodies(reports, f"direct-{mode}"),
                                               args.clients, args.seconds))
            print(f"  {mode:<6} {rate:>8,.0f} reports/s  CPU {cpu * 1e6:5.0f} µs/report  "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
