"""Soak: a bounded, mixed, hostile load against the real services on loopback.

Starts ``smtptls reports serve``, ``smtptls policyd`` and ``smtptls tlsrpt collect`` as
subprocesses in a scratch directory and, for ``--seconds`` (default 120), runs at once:

- policyd: clients asking for an answer in a loop (latency, unanswered requests),
  clients trickling one octet of a request at a time, and a flood of idle connections
  twice the configured connection cap;
- reports serve: unique gzip reports, byte-identical resubmissions of earlier ones,
  junk bodies, bodies over the size limit, and an upload trickled slowly;
- tlsrpt collect: Postfix log sessions appended to a log file renamed away and
  recreated every ``--rotate`` seconds (logrotate's default ``create`` mode), the
  writer going on with the old file for ``--late-writer`` seconds as syslog does until
  it reopens, and junk posted to its HTTP endpoint.

The per-address rate limit of ``reports serve`` is raised to ``--reports-rate`` per
minute (all clients here share 127.0.0.1); requests past it get 429 and are retried.

Then it prints the RSS and open descriptors of each service (start, peak, end), the
rows stored, and how many acknowledged reports and written log sessions were lost or
stored twice. Exit status 0 when nothing was lost or duplicated, 1 otherwise.

Not a pytest module (no ``test_`` prefix, nothing imports it)::

    .venv/bin/python tests/soak/soak.py --seconds 120
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
POLICYD_CAP = 200  # [policyd] max_connections for the run; the idle flood is twice it
IDLE_FLOOD = 2 * POLICYD_CAP
TRICKLERS = 20
REPORT_PAGE = 1000
OVERSIZED = 6 * 1024 * 1024  # above [reports] max_body (5 MiB)
LOG_DOMAIN = "log.soak.example"
CIPHER = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
MX = "mx1.log.soak.example[192.0.2.10]:25"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- process figures --------------------------------------------------------------------


@dataclass
class Figures:
    start: int = 0
    peak: int = 0
    end: int = 0

    def add(self, value: int) -> None:
        if not self.start:
            self.start = value
        self.peak = max(self.peak, value)
        self.end = value


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    rss: Figures = field(default_factory=Figures)
    fds: Figures = field(default_factory=Figures)

    def sample(self) -> None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
            fds = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                self.rss.add(int(line.split()[1]))
        self.fds.add(fds)


def start(name: str, argv: list[str], work: Path) -> Service:
    log = (work / f"{name.replace(' ', '-')}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "smtptls", *argv], stdout=log,
                            stderr=subprocess.STDOUT, env=env, cwd=work)
    return Service(name, proc)


def wait_port(port: int, svc: Service, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if svc.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{svc.name} did not start (see its log)") from None
            time.sleep(0.1)


# --- load: policyd ------------------------------------------------------------------------


@dataclass
class PolicydLoad:
    answered: int = 0
    unanswered: int = 0
    why: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    trickle_closed: int = 0
    idle_opened: int = 0
    idle_closed_by_server: int = 0


def netstring(text: str) -> bytes:
    data = text.encode()
    return b"%d:%s," % (len(data), data)


async def policyd_client(port: int, stop: float, st: PolicydLoad) -> None:
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            st.unanswered += 1
            st.why[type(exc).__name__] = st.why.get(type(exc).__name__, 0) + 1
            await asyncio.sleep(0.1)
            continue
        try:
            for _ in range(200):
                if time.monotonic() >= stop:
                    break
                t0 = time.perf_counter()
                writer.write(netstring("postfix override.example"))
                try:
                    async with asyncio.timeout(5):
                        data = await reader.readuntil(b",")
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
                    st.unanswered += 1
                    st.why[type(exc).__name__] = st.why.get(type(exc).__name__, 0) + 1
                    break
                if b"OK dane-only" in data:
                    st.answered += 1
                    st.latencies.append(time.perf_counter() - t0)
                else:
                    st.unanswered += 1
                    st.why["other reply"] = st.why.get("other reply", 0) + 1
                await asyncio.sleep(0.002)
        finally:
            writer.close()


async def policyd_trickler(port: int, stop: float, st: PolicydLoad) -> None:
    request = netstring("postfix " + "t" * 300)
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.5)
            continue
        try:
            for octet in request:
                if time.monotonic() >= stop:
                    return
                writer.write(bytes([octet]))
                try:
                    if await asyncio.wait_for(reader.read(100), 1.0) == b"":
                        st.trickle_closed += 1
                        break
                except TimeoutError:
                    continue
                except ConnectionError:
                    st.trickle_closed += 1
                    break
        finally:
            writer.close()


async def policyd_idle_flood(port: int, stop: float, st: PolicydLoad) -> None:
    held: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    while time.monotonic() < stop:
        alive = []
        for reader, writer in held:
            if reader.at_eof() or writer.is_closing():
                st.idle_closed_by_server += 1
                writer.close()
            else:
                alive.append((reader, writer))
        held = alive
        while len(held) < IDLE_FLOOD and time.monotonic() < stop:
            try:
                conn = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                break
            st.idle_opened += 1
            held.append(conn)
            asyncio.ensure_future(conn[0].read())  # notices the server's close
        await asyncio.sleep(1.0)
    for _, writer in held:
        writer.close()


# --- load: reports serve --------------------------------------------------------------------


@dataclass
class ReportsLoad:
    acked: set[str] = field(default_factory=set)
    refused_unique: int = 0
    duplicates_sent: int = 0
    duplicates_acked: int = 0
    junk_sent: int = 0
    junk_4xx: int = 0
    oversized_sent: int = 0
    oversized_413: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def report(report_id: str, day: int) -> bytes:
    domain = f"d{day % 50}.soak.example"
    body = {
        "organization-name": "Soak Sender",
        "date-range": {"start-datetime": f"2026-01-{day % 28 + 1:02d}T00:00:00Z",
                       "end-datetime": f"2026-01-{day % 28 + 1:02d}T23:59:59Z"},
        "contact-info": "tlsrpt@sender.soak.example",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts", "policy-domain": domain,
                       "policy-string": ["version: STSv1", "mode: enforce",
                                         f"mx: mx.{domain}", "max_age: 86400"],
                       "mx-host": [f"mx.{domain}"]},
            "summary": {"total-successful-session-count": 100 + day,
                        "total-failure-session-count": 1},
            "failure-details": [{"result-type": "certificate-expired",
                                 "sending-mta-ip": "198.51.100.7",
                                 "receiving-mx-hostname": f"mx.{domain}",
                                 "failed-session-count": 1}],
        }],
    }
    return gzip.compress(json.dumps(body).encode(), mtime=0)


GZIP = {"Content-Type": "application/tlsrpt+gzip"}


async def reports_poster(url: str, stop: float, st: ReportsLoad, seed: int) -> None:
    rnd = random.Random(seed)
    sent: list[tuple[str, bytes]] = []
    n = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while time.monotonic() < stop:
            n += 1
            roll = rnd.random()
            try:
                if roll < 0.25 and sent:  # the same bytes again: a duplicate
                    rid, body = rnd.choice(sent)
                    st.duplicates_sent += 1
                    async with http.post(url, data=body, headers=GZIP) as r:
                        st.statuses[r.status] = st.statuses.get(r.status, 0) + 1
                        if 200 <= r.status < 300:
                            st.duplicates_acked += 1
                elif roll < 0.35:  # junk
                    st.junk_sent += 1
                    junk = rnd.randbytes(rnd.randint(1, 50_000))
                    async with http.post(url, data=junk, headers=GZIP) as r:
                        st.statuses[r.status] = st.statuses.get(r.status, 0) + 1
                        st.junk_4xx += 400 <= r.status < 500
                elif roll < 0.36:  # over the size limit
                    st.oversized_sent += 1
                    async with http.post(url, data=b"\x1f\x8b" + b"\0" * OVERSIZED,
                                         headers=GZIP) as r:
                        st.statuses[r.status] = st.statuses.get(r.status, 0) + 1
                        st.oversized_413 += r.status == 413
                else:
                    rid = f"soak-{seed}-{n}-{uuid.uuid4()}"
                    body = report(rid, n)
                    async with http.post(url, data=body, headers=GZIP) as r:
                        st.statuses[r.status] = st.statuses.get(r.status, 0) + 1
                        if 200 <= r.status < 300:
                            st.acked.add(rid)
                            sent.append((rid, body))
                        else:
                            st.refused_unique += 1
                        if r.status in (429, 503):
                            await asyncio.sleep(0.2)  # back off as a sender would
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                st.errors += 1
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.005)


async def reports_trickler(port: int, stop: float) -> None:
    """A POST announcing 1 MB and sending a few octets a second."""
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/tlsrpt+gzip\r\n"
                         b"Content-Length: 1000000\r\n\r\n")
            while time.monotonic() < stop and not reader.at_eof():
                writer.write(b"\0" * 8)
                await writer.drain()
                await asyncio.sleep(1.0)
            writer.close()
        except (OSError, ConnectionError):
            await asyncio.sleep(0.5)


# --- load: tlsrpt collect ------------------------------------------------------------------


@dataclass
class CollectLoad:
    sessions_written: int = 0
    rotations: int = 0
    junk_sent: int = 0
    junk_4xx: int = 0


def session_lines(n: int) -> str:
    t = datetime.now().astimezone()
    head = f"{t:%b} {t.day:2d} {t:%H:%M:%S} mta postfix/smtp[{10000 + n % 50000}]: "
    qid = f"{n:010X}"
    return (f"{head}Verified TLS connection established to {MX}: {CIPHER}\n"
            f"{head}{qid}: to=<user{n}@{LOG_DOMAIN}>, relay={MX}, delay=0.4, "
            "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)\n")


async def log_writer(log: Path, stop: float, st: CollectLoad, rate: int, rotate: float,
                     late: float) -> None:
    n = 0
    next_rotation = time.monotonic() + rotate
    reopen_at = 0.0
    fh = log.open("a")
    try:
        while time.monotonic() < stop:
            batch = max(1, rate // 10)
            fh.write("".join(session_lines(n + i) for i in range(batch)))
            fh.flush()
            n += batch
            st.sessions_written += batch
            now = time.monotonic()
            if reopen_at and now >= reopen_at:
                fh.close()  # syslog got its HUP: on to the new file
                fh = log.open("a")
                reopen_at = 0.0
            elif now >= next_rotation:
                # logrotate "create": rename, a new empty file; the writer goes on with
                # the old one for a while
                old = log.with_name(log.name + ".1")
                if old.exists():
                    old.unlink()
                os.rename(log, old)
                os.close(os.open(log, os.O_CREAT | os.O_WRONLY, 0o644))
                st.rotations += 1
                next_rotation = now + rotate
                reopen_at = now + late
            await asyncio.sleep(0.1)
    finally:
        fh.close()


async def collect_junk(url: str, stop: float, st: CollectLoad) -> None:
    rnd = random.Random(7)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        while time.monotonic() < stop:
            st.junk_sent += 1
            body = rnd.choice([b"{", b"[]" * 1000, rnd.randbytes(2000),
                               json.dumps({"results": [{"x": 1}]}).encode()])
            try:
                async with http.post(url, data=body,
                                     headers={"Content-Type": "application/json"}) as r:
                    st.junk_4xx += 400 <= r.status < 500
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)


# --- run ------------------------------------------------------------------------------------


async def sampler(services: list[Service], stop: float) -> None:
    while time.monotonic() < stop:
        for s in services:
            s.sample()
        await asyncio.sleep(1.0)


async def run_load(seconds: float, ports: dict[str, int], log: Path, services: list[Service],
                   rate: int, rotate: float, late: float) -> tuple[PolicydLoad, ReportsLoad, CollectLoad]:
    stop = time.monotonic() + seconds
    pd, rp, co = PolicydLoad(), ReportsLoad(), CollectLoad()
    reports_url = f"http://127.0.0.1:{ports['reports']}/"
    tasks = [sampler(services, stop + 0.5)]
    tasks += [policyd_client(ports["policyd"], stop, pd) for _ in range(4)]
    tasks += [policyd_trickler(ports["policyd"], stop, pd) for _ in range(TRICKLERS)]
    tasks.append(policyd_idle_flood(ports["policyd"], stop, pd))
    tasks += [reports_poster(reports_url, stop, rp, seed) for seed in range(3)]
    tasks += [reports_trickler(ports["reports"], stop) for _ in range(5)]
    tasks.append(log_writer(log, stop, co, rate, rotate, late))
    tasks.append(collect_junk(f"http://127.0.0.1:{ports['collect']}/v1/results", stop, co))
    await asyncio.gather(*tasks)
    return pd, rp, co


def cli_json(argv: list[str]) -> object:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-m", "smtptls", *argv], capture_output=True,
                         env=env, timeout=120, check=False)
    if out.returncode not in (0, 1):
        raise SystemExit(f"smtptls {' '.join(argv)}: {out.stderr.decode()[-2000:]}")
    return json.loads(out.stdout or b"null")


def stored_sessions(db: Path) -> int:
    data = cli_json(["tlsrpt", "results", "--db", str(db), "--domain", LOG_DOMAIN, "--json",
                     "--limit", "100000"])
    rows = data.get("results", []) if isinstance(data, dict) else []
    return sum(r["successful"] + r["failed"] for r in rows)


def reports_section(per_minute: int) -> str:
    """``[reports]`` with a raised per-address rate limit, where the key exists."""
    from dataclasses import fields

    from smtptls.config import ReportsConfig

    names = {f.name for f in fields(ReportsConfig)}
    if "rate_limit_per_minute" not in names:
        return ""
    burst = f"rate_limit_burst = {per_minute}\n" if "rate_limit_burst" in names else ""
    return f"[reports]\nrate_limit_per_minute = {per_minute}\n{burst}"


async def stored_report_ids(db: Path) -> list[str]:
    """Every stored report-id, read page by page (the store bounds one page)."""
    from smtptls.store.reports_sqlite import SqliteReportStore

    store = SqliteReportStore(db)
    await store.open()
    ids: list[str] = []
    try:
        while True:
            page = await store.list_reports(limit=REPORT_PAGE, offset=len(ids))
            ids += [r.report_id for r in page]
            if len(page) < REPORT_PAGE:
                return ids
    finally:
        await store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="load duration (default 120)")
    ap.add_argument("--rate", type=int, default=500, help="log sessions per second (500)")
    ap.add_argument("--rotate", type=float, default=20.0, help="seconds between log rotations")
    ap.add_argument("--late-writer", type=float, default=1.0,
                    help="seconds the writer goes on with a rotated file (1)")
    ap.add_argument("--reports-rate", type=int, default=6000,
                    help="reports serve: requests per minute per address (6000)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = ap.parse_args()
    if not 1 <= args.seconds <= 3600:
        ap.error("--seconds must be 1..3600")

    work = Path(tempfile.mkdtemp(prefix="smtptls-soak-"))
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # DNS that never answers
    blackhole.bind(("127.0.0.1", 0))
    ports = {"policyd": free_port(), "reports": free_port(), "collect": free_port()}
    (work / "smtptls.toml").write_text(f"""
[dns]
nameservers = ["127.0.0.1:{blackhole.getsockname()[1]}"]
timeout = 1.0
[cache]
sqlite_path = "{work / 'cache.sqlite3'}"
[policyd]
listen = "127.0.0.1:{ports['policyd']}"
metrics = ""
max_connections = {POLICYD_CAP}
overrides = {{ "override.example" = "dane-only" }}
{reports_section(args.reports_rate)}""")
    log = work / "mail.log"
    log.touch()
    reports_db, results_db = work / "reports.sqlite3", work / "results.sqlite3"
    cfg = str(work / "smtptls.toml")
    services = [
        start("reports serve", ["reports", "serve", "--config", cfg, "--db", str(reports_db),
                                "--listen", f"127.0.0.1:{ports['reports']}", "--no-dkim"],
              work),
        start("policyd", ["policyd", "--config", cfg], work),
        start("tlsrpt collect", ["tlsrpt", "collect", "--config", cfg, "--db", str(results_db),
                                 "--log-file", str(log), "--policy-source", "none",
                                 "--http", f"127.0.0.1:{ports['collect']}"], work),
    ]
    try:
        for svc, port in zip(services, (ports["reports"], ports["policyd"], ports["collect"]),
                             strict=True):
            wait_port(port, svc)
        time.sleep(2.0)  # the collector has opened the log file
        started = datetime.now(UTC)
        pd, rp, co = asyncio.run(run_load(args.seconds, ports, log, services, args.rate,
                                          args.rotate, args.late_writer))
        # let the collector catch up: its stored count stops moving
        stored, last, still, deadline = 0, -1, 0, time.monotonic() + 60
        while time.monotonic() < deadline and stored < co.sessions_written and still < 3:
            time.sleep(2.0)
            stored = stored_sessions(results_db)
            still = still + 1 if stored == last else 0
            last = stored
        for s in services:
            s.sample()
        ids = asyncio.run(stored_report_ids(reports_db))
        exited = [s.name for s in services if s.proc.poll() is not None]
    finally:
        for s in services:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in services:
            try:
                s.proc.wait(20)
            except subprocess.TimeoutExpired:
                s.proc.kill()
        blackhole.close()

    soak_ids = [i for i in ids if i.startswith("soak-")]
    report_lost = len(rp.acked - set(soak_ids))
    report_dup = len(soak_ids) - len(set(soak_ids))
    session_lost = max(0, co.sessions_written - stored)
    session_dup = max(0, stored - co.sessions_written)
    lat = sorted(pd.latencies) or [0.0]
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    load1, load5, load15 = os.getloadavg()
    tracebacks = {s.name: (work / f"{s.name.replace(' ', '-')}.log").read_text(
        errors="replace").count("Traceback") for s in services}

    print(f"smtptls soak {started:%Y-%m-%d %H:%M:%S} UTC, {args.seconds:g} s of load, "
          f"load average {load1:.2f} {load5:.2f} {load15:.2f} ({os.cpu_count()} CPUs)")
    print(f"{'service':<15} {'RSS MB start':>12} {'peak':>7} {'end':>7}   "
          f"{'fds start':>9} {'peak':>5} {'end':>5}  tracebacks")
    for s in services:
        print(f"{s.name:<15} {s.rss.start / 1024:>12.1f} {s.rss.peak / 1024:>7.1f} "
              f"{s.rss.end / 1024:>7.1f}   {s.fds.start:>9} {s.fds.peak:>5} {s.fds.end:>5}  "
              f"{tracebacks[s.name]}")
    why = "".join(f", {k} {v}" for k, v in sorted(pd.why.items()))
    print(f"policyd: {pd.answered} answered, {pd.unanswered} unanswered{why}, "
          f"p99 {p99:.1f} ms; "
          f"{pd.trickle_closed} trickling connections closed; {pd.idle_opened} idle "
          f"connections opened against a cap of {POLICYD_CAP}, "
          f"{pd.idle_closed_by_server} closed by the server")
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(rp.statuses.items()))
    print(f"reports serve: {len(rp.acked)} unique reports acknowledged, "
          f"{rp.refused_unique} refused; {rp.duplicates_sent} identical resubmissions "
          f"({rp.duplicates_acked} acknowledged); junk {rp.junk_sent} ({rp.junk_4xx} 4xx); "
          f"oversized {rp.oversized_sent} ({rp.oversized_413} 413); {rp.errors} client errors")
    print(f"  HTTP statuses {statuses}")
    print(f"  rows stored {len(soak_ids)}: lost {report_lost}, duplicated {report_dup}")
    print(f"tlsrpt collect: {co.sessions_written} sessions written to the log, "
          f"{co.rotations} rotations (late writer {args.late_writer:g} s); "
          f"junk posts {co.junk_sent} ({co.junk_4xx} 4xx)")
    print(f"  sessions stored {stored}: lost {session_lost}, duplicated {session_dup}")
    if exited:
        print(f"exited during the run: {', '.join(exited)}")
    if args.keep:
        print(f"scratch directory: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    bad = report_lost or report_dup or session_lost or session_dup or exited
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
