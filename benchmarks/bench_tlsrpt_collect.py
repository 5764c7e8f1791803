"""TLSRPT collection throughput and the daily aggregation of one day of results.

Run: ``.venv/bin/python benchmarks/bench_tlsrpt_collect.py [--results N] [--day-results N]``

1. libtlsrpt datagrams: a separate process sends N datagrams (as Postfix >= 3.10 would,
   blocking sends) to the collector's UNIX socket; the collector decodes, batches and
   commits them to SQLite (WAL, synchronous=FULL). Figure: results committed per second.
2. Postfix log: a log file of N sessions (10 % failures) read from its start by the log
   follower; sessions mapped to results under a static policy lookup, batched,
   committed. Three logs (:func:`write_log`): only the two TLS lines of each session;
   a realistic mix with ~72 % lines of other services; the same mix with RFC 3339
   stamps. Figure: results committed per second (best of ``--repeat`` runs, all shown).
   ``--only-log`` runs just this part.
3. HTTP: 100 POSTs of 1,000 results each (acknowledged after commit).
4. One day of results: ``--day-results`` (default 10,000,000) results folded into the
   store's counters (what the collector does continuously), then the daily aggregation
   proper: reading the day's counters, building one report per policy domain,
   validating each with the strict parser and gzipping it. The results come from a
   pool of 20,000 distinct pre-built results (1,000 domains), drawn at random, so that
   generating them costs nothing and memory stays flat. With ``--day-results`` below
   10 million the fold time is extrapolated linearly, and the script says so.
5. sys4's tlsrpt-collectd (if installed in ``.peers/tlsrpt-reporter``): the same
   datagrams to its socket, its SQLite storage; figure: datagrams committed per second.

Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp

from smtptls.services.collector import (
    Collector,
    DatagramListener,
    LogFollower,
    LogIngest,
    SendingAddress,
    StaticPolicyLookup,
    create_app,
)
from smtptls.store.results_base import Batch
from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrpt import parse_report
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.aggregate import DayTally, ReportIdentity, build_reports
from smtptls.tlsrptsend.libtlsrpt import datagram_for, encode_datagram
from smtptls.tlsrptsend.outgoing import gzip_report
from smtptls.tlsrptsend.postfix_results import PolicyContext
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / ".peers" / "tlsrpt-reporter" / "bin" / "tlsrpt-collectd"
NOW = datetime.now(UTC).replace(microsecond=0)
IDENTITY = ReportIdentity.with_defaults("mta.bench.example")
RESULT_TYPES = ("certificate-expired", "starttls-not-supported", "certificate-host-mismatch",
                "certificate-not-trusted", "validation-failure")


def policy(i: int) -> AppliedPolicy:
    dom = f"d{i % 1000}.bench.example"
    if i % 3 == 0:
        return AppliedPolicy(PolicyType.STS, dom, ("version: STSv1", "mode: enforce",
                                                   f"mx: *.{dom}", "max_age: 86400"),
                             (f"*.{dom}",))
    if i % 3 == 1:
        return AppliedPolicy(PolicyType.TLSA, dom, (f"3 1 1 {i % 1000:064x}",))
    return AppliedPolicy.none_found(dom)


def pool(n: int, rng: random.Random, time: datetime = NOW) -> list[SessionResult]:
    out = []
    for i in range(n):
        p = policy(i)
        if rng.random() < 0.1:
            out.append(SessionResult.failure(
                time, p, rng.choice(RESULT_TYPES), mx_host=f"mx{i % 3}.{p.policy_domain}",
                receiving_ip=f"192.0.{i % 200}.{i % 250 + 1}", sending_mta_ip="198.51.100.1"))
        else:
            out.append(SessionResult.success(time, p))
    return out


# --- 1. datagrams ----------------------------------------------------------------------------

SENDER = textwrap.dedent("""
    import socket, sys, json
    path, n = sys.argv[1], int(sys.argv[2])
    datagrams = [bytes.fromhex(line) for line in open(sys.argv[3])]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    k = len(datagrams)
    for i in range(n):
        s.sendto(datagrams[(i * 7919) % k], path)
""")


def datagram_pool(tmp: Path, rng: random.Random) -> Path:
    path = tmp / "datagrams.hex"
    with path.open("w") as f:
        for r in pool(5000, rng):
            f.write(encode_datagram(datagram_for(r, tlsrpt_record="v=TLSRPTv1; "
                                                 "rua=mailto:r@x.example")).hex() + "\n")
    return path


async def bench_datagrams(tmp: Path, n: int, datagrams: Path) -> float:
    store = SqliteResultStore(tmp / "dg.sqlite3")
    await store.open()
    collector = Collector(store, flush_interval=0.2, batch_size=5000, max_pending=10**6)
    collector.start()
    sock = tmp / "tlsrpt.sock"
    listener = DatagramListener(collector, sock)
    await listener.start()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, str(sock), str(n),
                                                str(datagrams))
    start = time.perf_counter()
    while collector.stored + collector.metrics.dropped.labels("backlog")._value.get() < n:
        await asyncio.sleep(0.01)
        if proc.returncode is not None and listener.datagrams >= n:
            await collector.flush()
    elapsed = time.perf_counter() - start
    await proc.wait()
    await listener.stop()
    await collector.stop()
    total = sum((await store.tally(NOW.date())).total())
    await store.close()
    print(f"  datagrams: {n:,} sent, {listener.datagrams:,} received, {total:,} committed, "
          f"decoder cache hits {listener.decoder.hits:,}")
    return total / elapsed


# --- 2. Postfix log ----------------------------------------------------------------------------

CIPHER = ("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
          "server-signature RSA-PSS (2048 bits) server-digest SHA256")
LOG_KINDS = {
    # name: (other lines around each delivery, RFC 3339 stamps, sessions per second stamp)
    "tls-only": (False, False, None),
    "mix": (True, False, 100),
    "mix-rfc3339": (True, True, 100),
}


def write_log(path: Path, n: int, rng: random.Random, kind: str = "tls-only") -> int:
    """A Postfix log of ``n`` deliveries (10 % deferred for want of STARTTLS), each to one
    of 1,000 domains. ``tls-only``: the two smtp lines of each session and nothing else,
    all in one second, 50 smtp processes. ``mix``: as a whole mail log reads, five lines
    of other services around each delivery (smtpd connect and client=, cleanup
    message-id, qmgr from= and removed: ~72 % of the lines), 100 smtp processes, the
    clock moving one second every 100 deliveries; ``mix-rfc3339``: the same with
    rsyslog's high-precision stamps (a fraction on every line). Returns the line count."""
    other, iso, per_second = LOG_KINDS[kind]
    start = datetime.now().astimezone().replace(microsecond=0)
    if per_second:
        start -= timedelta(seconds=n // per_second + 1)  # a backlog, read after the fact
    lines = 0
    with path.open("w") as f:
        for i in range(n):
            t = start if not per_second else start + timedelta(seconds=i // per_second)
            if iso:
                stamp = (t + timedelta(microseconds=(i % per_second) * 9973)).isoformat(
                    timespec="microseconds")
            else:
                stamp = f"{t:%b} {t.day:2d} {t:%H:%M:%S}"
            head = f"{stamp} mta postfix/"
            dom = f"d{i % 1000}.bench.example"
            mx = f"mx1.{dom}[192.0.{i % 200}.{i % 250 + 1}]:25"
            pid = 1000 + i % (100 if other else 50)
            qid = f"{0x10000000 + i:X}"
            if other:
                f.write(f"{head}smtpd[{400 + i % 20}]: connect from client{i % 300}.example"
                        f"[198.51.100.{i % 250 + 1}]\n"
                        f"{head}smtpd[{400 + i % 20}]: {qid}: client=client{i % 300}.example"
                        f"[198.51.100.{i % 250 + 1}], sasl_method=PLAIN, sasl_username=u{i}\n"
                        f"{head}cleanup[{300 + i % 10}]: {qid}: message-id=<{i}.{qid}"
                        "@client.example>\n"
                        f"{head}qmgr[200]: {qid}: from=<sender{i % 97}@client.example>, "
                        "size=4711, nrcpt=1 (queue active)\n")
                lines += 4
            if rng.random() < 0.1:
                f.write(f"{head}smtp[{pid}]: {qid}: to=<u@{dom}>, relay={mx}, "
                        "delay=0.4, delays=0.1/0/0.2/0.1, dsn=4.7.4, status=deferred (TLS is "
                        f"required, but was not offered by host {mx[:-3]})\n")
                lines += 1
            else:
                f.write(f"{head}smtp[{pid}]: Verified TLS connection established to {mx}: "
                        f"{CIPHER}\n"
                        f"{head}smtp[{pid}]: {qid}: to=<u@{dom}>, relay={mx}, "
                        "delay=0.4, delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 2.0.0 "
                        "Ok: queued as 4F2A1C0B3D)\n")
                lines += 2
            if other:
                f.write(f"{head}qmgr[200]: {qid}: removed\n")
                lines += 1
    return lines


async def bench_log(tmp: Path, n: int, rng: random.Random, kind: str = "tls-only"
                    ) -> tuple[float, float]:
    """Results committed per second and lines read per second, from the file's start
    (a backlog) to the last commit."""
    path = tmp / f"mail-{kind}.log"
    write_log(path, n, rng, kind)
    db = tmp / f"log-{kind}.sqlite3"
    store = SqliteResultStore(db)
    await store.open()
    collector = Collector(store, flush_interval=0.2, batch_size=5000, max_pending=10**7)
    collector.start()
    contexts = [PolicyContext(f"d{i}.bench.example", "sts", "enforce",
                              ("version: STSv1", "mode: enforce"), (f"*.d{i}.bench.example",))
                for i in range(1000)]
    ingest = LogIngest(collector, StaticPolicyLookup(contexts),
                       sending=SendingAddress("198.51.100.1"))
    follower = LogFollower(ingest, path, from_start=True)
    start = time.perf_counter()
    while await follower.step():  # what LogFollower.run does while there is a backlog
        pass
    await collector.flush()
    elapsed = time.perf_counter() - start
    await collector.stop()
    total = 0
    for day in await store.days():
        total += sum((await store.tally(date.fromisoformat(day))).total())
    await store.close()
    for p in (path, db):
        p.unlink(missing_ok=True)
    print(f"  log ({kind}): {follower.lines:,} lines, {ingest.sessions:,} sessions, "
          f"{total:,} committed in {elapsed:.2f} s ({collector.metrics.batches._value.get():.0f}"
          " transactions)")
    return total / elapsed, follower.lines / elapsed


async def bench_logs(tmp: Path, n: int, rng: random.Random, repeat: int) -> None:
    for kind in LOG_KINDS:
        runs = [await bench_log(tmp, n, rng, kind) for _ in range(repeat)]
        rates = sorted(r for r, _ in runs)
        best = max(runs)
        spread = f" (runs: {', '.join(f'{r:,.0f}' for r in rates)})" if repeat > 1 else ""
        print(f"  -> Postfix log, {kind}: {best[0]:,.0f} results/s committed, "
              f"{best[1]:,.0f} lines/s{spread}")


# --- 3. HTTP -------------------------------------------------------------------------------------

async def bench_http(tmp: Path, rng: random.Random) -> float:
    from aiohttp import web

    store = SqliteResultStore(tmp / "http.sqlite3")
    await store.open()
    collector = Collector(store)
    collector.start()
    runner = web.AppRunner(create_app(collector), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    bodies = [json.dumps([r.to_dict() for r in pool(1000, rng)]).encode() for _ in range(5)]
    start = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        async def post(i: int) -> None:
            async with http.post(f"http://127.0.0.1:{port}/v1/results", data=bodies[i % 5],
                                 headers={"Content-Type": "application/json"}) as resp:
                assert resp.status == 200, await resp.text()
        for chunk in range(10):
            await asyncio.gather(*(post(chunk * 10 + i) for i in range(10)))
    elapsed = time.perf_counter() - start
    await runner.cleanup()
    await collector.stop()
    await store.close()
    return 100_000 / elapsed


# --- 4. one day ---------------------------------------------------------------------------------

async def bench_day(tmp: Path, n: int, rng: random.Random) -> None:
    day = NOW.date()
    results = pool(20_000, rng)
    picks = [rng.randrange(len(results)) for _ in range(100_000)]
    # in-memory tally (the pure aggregation, no store)
    m = n
    tally = DayTally(day)
    start = time.perf_counter()
    for i in range(m):
        tally.add(results[picks[i % 100_000]])
    pure = time.perf_counter() - start
    # the store path: fold into counters batch by batch, as the collector does
    store = SqliteResultStore(tmp / "day.sqlite3")
    await store.open()
    start = time.perf_counter()
    done = 0
    while done < n:
        batch = Batch()
        size = min(100_000, n - done)
        for i in range(size):
            batch.add(results[picks[(done + i) % 100_000]])
        await store.add_batch(batch)
        done += size
    fold = time.perf_counter() - start
    # the daily aggregation proper
    start = time.perf_counter()
    tally = await store.tally(day)
    reports = build_reports(tally, IDENTITY)
    sizes = 0
    for r in reports:
        parse_report(r.to_json(), strict=True)
        sizes += len(gzip_report(r))
    build = time.perf_counter() - start
    await store.close()
    ok, bad = tally.total()
    rows = len(tally.sessions) + sum(len(d) for d in tally.details.values())
    factor = 10_000_000 / n
    print(f"  day: {n:,} results ({ok:,} ok, {bad:,} failed) -> {rows:,} counter rows, "
          f"{len(reports):,} reports, {sizes / 1e6:.1f} MB gzip")
    extra = "" if n >= 10_000_000 else f", extrapolated from {n:,}"
    print(f"  pure in-memory tally:  {m / pure:>12,.0f} results/s  "
          f"(10 M: {10_000_000 * pure / m:.1f} s{extra})")
    print(f"  fold into the store:   {n / fold:>12,.0f} results/s  "
          f"(10 M: {fold * factor:.1f} s{extra})")
    print(f"  build + validate + gzip all reports of the day from the counters: {build:.2f} s")


# --- 5. sys4 tlsrpt-collectd -------------------------------------------------------------------

async def bench_peer(tmp: Path, n: int, datagrams: Path) -> float | None:
    if not PEER.exists():
        print(f"  sys4 tlsrpt-collectd: not installed ({PEER} missing; "
              "python -m venv .peers/tlsrpt-reporter && .peers/tlsrpt-reporter/bin/pip "
              "install tlsrpt-reporter)")
        return None
    db = tmp / "peer.sqlite"
    sock = tmp / "peer.sock"
    proc = await asyncio.create_subprocess_exec(
        str(PEER), f"--storage=sqlite://{db}", f"--socketname={sock}", "--sockettimeout=1",
        "--log_level=error", f"--logfilename={tmp / 'peer.log'}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for _ in range(100):
        if sock.exists():
            break
        await asyncio.sleep(0.05)
    else:
        proc.kill()
        print("  sys4 tlsrpt-collectd: did not create its socket")
        return None
    sender = await asyncio.create_subprocess_exec(sys.executable, "-c", SENDER, str(sock),
                                                  str(n), str(datagrams))
    start = time.perf_counter()
    total = 0
    deadline = start + 600
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.2)
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                row = con.execute("SELECT SUM(cntrtotal) FROM finalresults").fetchone()
            total = int(row[0] or 0)
        except sqlite3.Error:
            continue
        if total >= n:
            break
    elapsed = time.perf_counter() - start
    await sender.wait()
    proc.terminate()
    await proc.wait()
    print(f"  sys4 tlsrpt-collectd: {total:,} of {n:,} datagrams committed")
    return total / elapsed if total else None


QLEN = Path("/proc/sys/net/unix/max_dgram_qlen")


def qlen(value: int | None = None) -> str:
    if value is not None:
        QLEN.write_text(str(value))
    return QLEN.read_text().strip()


def datagrams_in_netns(args: argparse.Namespace) -> None:
    """Run the datagram part again in a private network namespace whose
    net.unix.max_dgram_qlen is raised (a per-namespace setting; the host's is untouched)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        print("  (no unshare: datagram run with a raised queue length skipped)")
        return
    argv = [unshare, "--net", "--", sys.executable, __file__, "--inside-netns",
            str(args.qlen), "--results", str(args.results)]
    if args.skip_peer:
        argv.append("--skip-peer")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        print(f"  (namespace run failed: {done.stderr.strip()[-300:]})")


async def only_datagrams(args: argparse.Namespace, rng: random.Random, tmp: Path) -> None:
    print(f"  in a private network namespace, net.unix.max_dgram_qlen = "
          f"{qlen(args.inside_netns)}")
    datagrams = datagram_pool(tmp, rng)
    rate = await bench_datagrams(tmp, args.results, datagrams)
    print(f"  -> libtlsrpt datagrams: {rate:,.0f} results/s committed")
    if not args.skip_peer:
        rate = await bench_peer(tmp, args.results, datagrams)
        if rate is not None:
            print(f"  -> sys4 tlsrpt-collectd: {rate:,.0f} datagrams/s committed")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", type=int, default=200_000)
    ap.add_argument("--day-results", type=int, default=10_000_000)
    ap.add_argument("--skip-peer", action="store_true")
    ap.add_argument("--only-log", action="store_true", help="only the Postfix log part")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each Postfix log kind")
    ap.add_argument("--qlen", type=int, default=1024,
                    help="net.unix.max_dgram_qlen for the second datagram run (0: skip)")
    ap.add_argument("--inside-netns", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    rng = random.Random(8460)
    tmp = Path(tempfile.mkdtemp(prefix="tlsrpt-bench-", dir="/tmp"))
    if args.inside_netns:
        try:
            await only_datagrams(args, rng, tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        if args.only_log:
            await bench_logs(tmp, args.results, rng, args.repeat)
            return
        datagrams = datagram_pool(tmp, rng)
        print(f"  host net.unix.max_dgram_qlen = {qlen()}")
        rate = await bench_datagrams(tmp, args.results, datagrams)
        print(f"  -> libtlsrpt datagrams: {rate:,.0f} results/s committed")
        if args.qlen:
            datagrams_in_netns(args)
        await bench_logs(tmp, args.results, rng, args.repeat)
        rate = await bench_http(tmp, rng)
        print(f"  -> HTTP (1,000 results per POST): {rate:,.0f} results/s committed")
        if not args.skip_peer:
            rate = await bench_peer(tmp, args.results, datagrams)
            if rate is not None:
                print(f"  -> sys4 tlsrpt-collectd: {rate:,.0f} datagrams/s committed")
        await bench_day(tmp, args.day_results, rng)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())


