"""Report import throughput: ``smtptls reports import`` against parsedmarc, same mails.

Run: ``.venv/bin/python benchmarks/bench_report_import.py [-n 5000] [--reps 3]``.

5,000 (``-n``) RFC 8460 §5.3 report mails (multipart/report, a text part and an
``application/tlsrpt+gzip`` attachment, Google-like headers, a boundary of its own per mail; 1-3 policies and 0-4
failure details per report, every report-id distinct) are written into a temporary
maildir. Both sides read the same files, as whole processes started from the shell,
timed from start to exit:

* ``smtptls reports import --workers <cores>`` into a new SQLite store each run
  (``synchronous=FULL``: every report is on disk, in a group commit, before it is
  counted);
* parsedmarc (installed by this script into the git-ignored ``.peers/parsedmarc``),
  at its best configuration: ``n_procs`` = cores, ``offline = True`` (no DNS, no
  geolocation; a ``nameservers`` setting would make it send a test query first),
  JSON output to a directory (it keeps no store). It runs in a network namespace of its own (``unshare --net``) when the
  machine allows, so it cannot send anything anywhere.

The runs are interleaved (parsedmarc, smtptls, then the other order), ``--reps``
times; min/median/max reports/s of each side and of the ratio are printed with the
load average, and the CPU time each side spent per report over all its processes. A
stage breakdown (CPU microseconds per report, one process, on the first 1,000 mails)
says where smtptls's time goes. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import json
import mailbox
import os
import pickle
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from bench_env import bytecode_env  # noqa: E402
from bench_tlsrpt_store import make_reports  # noqa: E402

PEER_DIR = ROOT / ".peers" / "parsedmarc"
PEER = PEER_DIR / "bin" / "parsedmarc"
PEER_REQUIREMENT = "parsedmarc==11.1.0"
SMTPTLS = ROOT / ".venv" / "bin" / "smtptls"
CRLF = "\r\n"


def report_mail(i: int, report: dict) -> bytes:
    """One report mail in the form Google sends (RFC 8460 §5.3)."""
    gz = gzip.compress(json.dumps(report).encode(), mtime=0)
    text = base64.b64encode(gz).decode()
    lines = [text[j:j + 76] for j in range(0, len(text), 76)]
    domain = report["policies"][0]["policy"]["policy-domain"]
    name = f"google.com!{domain}!1714521600!1714607999!{i:06d}.json.gz"
    boundary = f"000000000000{i:016x}"  # each mail its own, as senders make them
    headers = [
        f"Received: by mail-sor-f69.google.com with SMTP id bench.{i}; "
        "Thu, 02 May 2024 00:00:00 -0700 (PDT)",
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=google.com; s=20230601;"
        " t=1714608000; h=to:subject:message-id:date:from:mime-version; bh=none; b=none",
        "MIME-Version: 1.0",
        "From: noreply-smtp-tls-reporting@google.com",
        "Date: Thu, 02 May 2024 00:00:00 -0700",
        f"Message-ID: <{i:06d}.bench@google.com>",
        f"Subject: Report Domain: {domain} Submitter: google.com "
        f"Report-ID: <{report['report-id']}@google.com>",
        "To: tlsrpt@example.net",
        f"TLS-Report-Domain: {domain}",
        "TLS-Report-Submitter: google.com",
        f'Content-Type: multipart/report; boundary="{boundary}"; report-type="tlsrpt"',
        "",
    ]
    body = [
        f"--{boundary}", 'Content-Type: text/plain; charset="UTF-8"', "",
        "This is an aggregate TLS report from google.com", "",
        f"--{boundary}",
        f'Content-Type: application/tlsrpt+gzip; name="{name}"',
        f'Content-Disposition: attachment; filename="{name}"',
        "Content-Transfer-Encoding: base64", "", *lines,
        f"--{boundary}--", "",
    ]
    return CRLF.join(headers + body).encode("ascii")


def write_maildir(path: Path, n: int) -> list[bytes]:
    box = mailbox.Maildir(str(path), create=True)
    mails = [report_mail(i, r) for i, r in enumerate(make_reports(n))]
    for mail in mails:
        box.add(mail)
    return mails


def ensure_peer() -> str:
    if not PEER.exists():
        print(f"installing {PEER_REQUIREMENT} into {PEER_DIR}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_DIR)], check=True)
        subprocess.run([str(PEER_DIR / "bin" / "python"), "-m", "pip", "install", "-q",
                        PEER_REQUIREMENT], check=True)
    out = subprocess.run([str(PEER_DIR / "bin" / "python"), "-c",
                          "import importlib.metadata as m; print(m.version('parsedmarc'))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _isolated() -> list[str]:
    """A network namespace of its own for the peer, if this machine allows one."""
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False) \
        if shutil.which("unshare") else None
    return ["unshare", "--net"] if probe is not None and probe.returncode == 0 else []


def _children_cpu() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run_parsedmarc(tmp: Path, maildir: Path, n: int, procs: int, prefix: list[str]) -> float:
    out = tmp / "parsedmarc-out"
    shutil.rmtree(out, ignore_errors=True)
    config = tmp / "parsedmarc.ini"
    config.write_text(
        "[general]\n"
        "offline = True\n"
        # no nameservers setting: parsedmarc would test them with a PTR query first
        f"n_procs = {procs}\n"
        "silent = True\n"
        f"output = {out}\n"
        "save_smtp_tls = True\n")
    start = time.perf_counter()
    done = subprocess.run([*prefix, str(PEER), "-c", str(config), str(maildir / "new")],
                          capture_output=True, text=True, timeout=1800, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"parsedmarc failed: {done.stderr.strip()[-500:]}")
    parsed = json.loads((out / "smtp_tls.json").read_text())
    if len(parsed) != n:
        raise SystemExit(f"parsedmarc parsed {len(parsed)} of {n} reports")
    return n / elapsed


def run_smtptls(tmp: Path, maildir: Path, n: int, workers: int) -> float:
    db = tmp / "reports.sqlite3"
    for f in tmp.glob("reports.sqlite3*"):
        f.unlink()
    start = time.perf_counter()
    done = subprocess.run([str(SMTPTLS), "reports", "import", "--db", str(db), "--json",
                           "--workers", str(workers), str(maildir)], env=bytecode_env(),
                          capture_output=True, text=True, timeout=1800, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"smtptls import failed: {done.stderr.strip()[-500:]}")
    if json.loads(done.stdout)["stored"] != n:
        raise SystemExit("smtptls did not store every report")
    return n / elapsed


def stages(mails: list[bytes], tmp: Path) -> list[tuple[str, float]]:
    """CPU microseconds per report of each step of the import, in one process."""
    from smtptls.services.report_import import ParsedSource, _parser
    from smtptls.store.reports_base import Channel, Intake, StoreLimits
    from smtptls.store.reports_sql import prepare_report
    from smtptls.store.reports_sqlite import SqliteReportStore
    from smtptls.tlsrpt.mail import read_report_mail

    parser = _parser(5 * 1024**2, 50 * 1024**2)
    limits = StoreLimits()
    n = len(mails)

    def cpu(fn, items) -> tuple[float, list]:  # type: ignore[no-untyped-def]
        t = time.process_time()
        out = [fn(x) for x in items]
        return (time.process_time() - t) / len(items) * 1e6, out

    rows: list[tuple[str, float]] = []
    walk, found = cpu(read_report_mail, mails)
    rows.append(("MIME walk (headers once, report part decoded)", walk))
    payloads = [f.attachments[0].payload for f in found]
    parse, records = cpu(parser.parse_body, payloads)
    rows.append(("report parse + flatten to a record", parse))
    prepare, prepared = cpu(lambda r: prepare_report(r, limits), records)
    rows.append(("store rows prepared (in the parser process)", prepare))
    # what a parser process sends back: a source's parsed items
    parsed = [ParsedSource((("report", p),), f.submitter) for p, f in zip(prepared, found,
                                                                         strict=True)]
    t = time.process_time()
    blob = pickle.dumps(parsed)
    rows.append(("hand-over to the parent (pickle, worker side)",
                 (time.process_time() - t) / n * 1e6))
    t = time.process_time()
    pickle.loads(blob)
    rows.append(("hand-over to the parent (unpickle, parent side)",
                 (time.process_time() - t) / n * 1e6))

    async def store() -> tuple[float, float]:
        s = SqliteReportStore(tmp / "stages.sqlite3", limits=limits)
        await s.open()
        items = [(p, Intake(Channel.IMPORT, datetime.now(UTC), remote="x")) for p in prepared]
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, n, 200):
            await s.add_reports(items[i:i + 200])
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        await s.close()
        return used / n * 1e6, wall / n * 1e6

    used, wall = asyncio.run(store())
    rows.append(("SQLite rows, 200 per commit (CPU)", used))
    rows.append(("SQLite rows, 200 per commit (wall, with fsync)", wall))
    return rows


def spread(values: list[float]) -> str:
    return (f"{min(values):>8,.0f} {statistics.median(values):>8,.0f} "
            f"{max(values):>8,.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=5000, help="report mails (default 5000)")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="smtptls parser processes and parsedmarc n_procs (default: cores)")
    args = ap.parse_args()
    version = ensure_peer()
    prefix = _isolated()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp_name:
        tmp = Path(tmp_name)
        maildir = tmp / "Maildir"
        mails = write_maildir(maildir, args.n)
        size = sum(map(len, mails)) / len(mails)
        print(f"{args.n} report mails in a maildir, {size:,.0f} bytes each on average; "
              f"{os.cpu_count()} cores; parsedmarc {version}, n_procs={args.workers}, "
              f"offline{' in its own network namespace' if prefix else ''}; smtptls "
              f"--workers {args.workers}, SQLite synchronous=FULL")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        peer: list[float] = []
        ours: list[float] = []
        cpu: dict[str, list[float]] = {"peer": [], "ours": []}
        for rep in range(args.reps):
            order = ("peer", "ours") if rep % 2 == 0 else ("ours", "peer")
            for side in order:
                before = _children_cpu()  # every process of the run, its workers too
                if side == "peer":
                    peer.append(run_parsedmarc(tmp, maildir, args.n, args.workers, prefix))
                else:
                    ours.append(run_smtptls(tmp, maildir, args.n, args.workers))
                cpu[side].append((_children_cpu() - before) / args.n * 1e6)
            print(f"  rep {rep + 1}: parsedmarc {peer[-1]:,.0f}/s, smtptls {ours[-1]:,.0f}/s, "
                  f"ratio {ours[-1] / peer[-1]:.2f}x, "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
        ratios = [o / p for o, p in zip(ours, peer, strict=True)]
        print()
        print(f"{'reports/s':<40} {'min':>8} {'median':>8} {'max':>8}")
        label = f"parsedmarc (n_procs={args.workers}, offline)"
        print(f"{label:<40} {spread(peer)}")
        print(f"{'smtptls reports import (committed)':<40} {spread(ours)}")
        print(f"{'ratio smtptls / parsedmarc':<40} {min(ratios):>7.2f}x "
              f"{statistics.median(ratios):>7.2f}x {max(ratios):>7.2f}x")
        print(f"{'CPU us per report, all processes':<40} {'':>8} {'median':>8}")
        print(f"{'  parsedmarc':<40} {'':>8} {statistics.median(cpu['peer']):>8,.0f}")
        print(f"{'  smtptls':<40} {'':>8} {statistics.median(cpu['ours']):>8,.0f}")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print()
        print("where smtptls spends it (CPU us per report, one process, first 1,000 mails):")
        for label, value in stages(mails[:1000], tmp):
            print(f"  {label:<52} {value:>8,.0f}")


if __name__ == "__main__":
    main()
