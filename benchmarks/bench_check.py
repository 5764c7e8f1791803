"""Benchmark: bulk ``smtptls check`` (DNS + HTTPS, no SMTP) on N lab domains, side by side
with checkdmarc's MTA-STS and TLSRPT checks on the same domains, at equal concurrency.

Method (written up in docs/performance.md, section "check (bulk)", regenerated from
this script's output with ``--write-doc``):

- A lab (tests/lab) is started in this process: NSD + validating Unbound, the lab CA and
  its HTTPS policy hosts (one certificate per mta-sts.<domain>, SNI). N domains are
  published in batches: each with an MX host (address and, for half of them, a TLSA
  record; no SMTP receiver, SMTP is not probed), an ``_mta-sts`` TXT record and a policy
  (60 % enforce, 20 % testing, 20 % none), and a ``_smtp._tls`` record whose ``mailto:``
  domain is looked up for MX records (rua reachability).
- smtptls: ``smtptls check --bulk FILE --no-smtp --out results.jsonl --quiet --json
  --workers W --concurrency C`` as a separate process (the lab's servers stay in this
  one, so the two cores are shared the way they would be between a checker and the
  servers it checks). Per domain: MX, both TXT records, A/AAAA (+TLSA) of each MX host,
  the policy fetch (A of the policy host, TLS handshake, GET, every RFC 8461 §3.3
  limit), the rua MX lookup, evaluation, one JSON line.
- checkdmarc (installed by this script into the git-ignored ``.peers/checkdmarc`` with
  pip): ``check_mta_sts`` and ``check_smtp_tls_reporting`` per domain, with
  ``nameservers=[lab resolver]``, in a private mount namespace whose /etc/resolv.conf
  names the lab resolver (its policy download resolves through ``requests``), with
  ``REQUESTS_CA_BUNDLE`` = the lab CA. Its documentation offers no parallel mode (the CLI
  checks one domain after the other; ``--wait`` only adds a pause), so its best
  configuration is the library in P forked processes of C/P threads each (its checks
  are pure Python under one GIL per process). Equal concurrency: C domains in flight on
  both sides, and as many processes (default 2, the cores: on a machine loaded by other
  work the scheduler shares the cores per process, so fewer processes would lose).
- First a cold pass of smtptls over the whole list (the resolver's cache empty, every
  answer validated), reported apart. Then the list is cut into S slices and, R times,
  each slice is checked by both tools one after the other, the order alternating
  (ABBA), so that other load on the machine and the TIME_WAIT sockets a run leaves
  behind fall on both alike. Rate = slice size / wall time of the process (start-up
  included). Ratio = our rate / the peer's rate on the same slice, run next to each
  other; min / median / max over all S*R pairs, with the load average around each pair.
- CPU per domain: ``resource.getrusage(RUSAGE_CHILDREN)`` before and after each run
  (user + system time of the checker process and its worker processes, reaped), over
  the slice size.

Usage::

    .venv/bin/python benchmarks/bench_check.py                 # 2000 domains
    .venv/bin/python benchmarks/bench_check.py -n 500 --no-peer
    .venv/bin/python benchmarks/bench_check.py --write-doc     # update docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_env import bytecode_env  # noqa: E402

from tests.lab import LabDomain, PolicyHost  # noqa: E402
from tests.lab.lab import Lab  # noqa: E402

PEER_DIR = ROOT / ".peers" / "checkdmarc"
PEER = PEER_DIR / "bin" / "python"
PEER_REQUIREMENT = "checkdmarc>=5"
MOUNTNS = ROOT / "tests" / "lab" / "mountns.py"
DOC = ROOT / "docs" / "performance.md"
BATCH = 500
LAST_LAB_CPU = 0.0  # lab CPU seconds during the last timed run

PEER_SCRIPT = r"""
import json, multiprocessing, sys, time
from concurrent.futures import ThreadPoolExecutor
from checkdmarc.mta_sts import check_mta_sts
from checkdmarc.smtp_tls_reporting import check_smtp_tls_reporting
domains = open(sys.argv[1]).read().split()
ns = [sys.argv[2]]
procs, threads = int(sys.argv[3]), int(sys.argv[4])
def one(d):
    a = check_mta_sts(d, nameservers=ns, timeout=5.0)
    b = check_smtp_tls_reporting(d, nameservers=ns, timeout=5.0)
    return bool(a.get("valid")), bool(b.get("valid"))
def part(i):
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, domains[i::procs]))
t0 = time.monotonic()
with multiprocessing.get_context("fork").Pool(procs) as pool:
    results = [r for chunk in pool.map(part, range(procs)) for r in chunk]
elapsed = time.monotonic() - t0
print(json.dumps({"domains": len(domains), "elapsed": elapsed,
                  "mta_sts_valid": sum(a for a, _ in results),
                  "tlsrpt_valid": sum(b for _, b in results)}))
"""


def _domains(lab: Lab, n: int) -> list[LabDomain]:
    out = []
    for i in range(n):
        name = f"b{i}.secure.test"
        mx = f"mx.{name}"
        kind = ("enforce", "enforce", "enforce", "testing", "none")[i % 5]
        body = (f"version: STSv1\nmode: {kind}\n"
                + ("" if kind == "none" else f"mx: {mx}\n") + "max_age: 604800\n")
        records = [(name, "MX", f"10 {mx}."),
                   (mx, "A", lab.net.ip(250, 1 + i % 250))]
        if i % 2 == 0:
            records.append((f"_25._tcp.{mx}", "TLSA", "3 1 1 " + f"{i:064x}"))
        out.append(LabDomain(
            name, records=records,
            txt={"_mta-sts": [f"v=STSv1; id=bench{i}"],
                 "_smtp._tls": [f"v=TLSRPTv1; rua=mailto:tlsrpt@{name}"]},
            policy=PolicyHost(body=body)))
    return out


def _time_wait() -> int:
    """TCP sockets in TIME_WAIT (state 06 in /proc/net/tcp)."""
    try:
        with open("/proc/net/tcp") as fh:
            return sum(1 for line in fh if line.split()[3:4] == ["06"])
    except OSError:
        return 0


def _ensure_peer() -> str:
    """checkdmarc in .peers/checkdmarc (created with venv + pip on first use); its version."""
    if not PEER.exists():
        print(f"installing {PEER_REQUIREMENT} into {PEER_DIR}", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_DIR)], check=True)
        subprocess.run([str(PEER), "-m", "pip", "install", "-q", PEER_REQUIREMENT],
                       check=True)
    out = subprocess.run([str(PEER), "-c", "import importlib.metadata as m; "
                          "print(m.version('checkdmarc'))"], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def _lab_cpu() -> float:
    """CPU seconds used so far by the lab: this process (its HTTPS policy hosts run in a
    thread here) and its live descendants (Unbound, NSD)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    total = me.ru_utime + me.ru_stime
    tick = os.sysconf("SC_CLK_TCK")
    parents, stats = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        stats[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    ours = {os.getpid()}
    grew = True
    while grew:
        grew = False
        for pid, ppid in parents.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                grew = True
    return total + sum(stats[p] for p in ours if p != os.getpid())


def _timed(argv: list[str], env: dict[str, str], timeout: float) -> tuple[
        subprocess.CompletedProcess[str], float, float]:
    """Run ``argv``; its wall time and the CPU time of it and its reaped children."""
    global LAST_LAB_CPU
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    lab0 = _lab_cpu()
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    wall = time.monotonic() - t0
    LAST_LAB_CPU = _lab_cpu() - lab0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return proc, wall, cpu


def _our_env() -> dict[str, str]:
    """smtptls from src/, with its bytecode cached (in the git-ignored .peers/, not in
    src/) as an installed package has it: checkdmarc's pip install compiled its own,
    and a checker that compiles its modules anew on every start measures the compiler."""
    return bytecode_env(PYTHONPATH=str(ROOT / "src"))


def _run_smtptls(lab: Lab, listing: Path, work: Path, concurrency: int, workers: int) -> dict:
    out = work / "results.jsonl"
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "smtptls", "check", "--bulk", str(listing), "--no-smtp",
            "--out", str(out), "--quiet", "--json", "--nameserver", lab.resolver[0],
            "--ca-file", str(lab.ca_file), "--timeout", "10", "--dnssec-probe", "test.",
            "--concurrency", str(concurrency), "--max-connections", str(concurrency),
            "--workers", str(workers)]
    env = _our_env()
    proc, wall, cpu = _timed(argv, env, 1800)
    if proc.returncode != 0:
        raise SystemExit(f"smtptls check failed: {proc.stderr[-2000:]}")
    return {"wall": wall, "cpu": cpu, "summary": json.loads(proc.stdout)}


def _run_peer(lab: Lab, listing: Path, work: Path, procs: int, threads: int) -> dict:
    script = work / "peer.py"
    script.write_text(PEER_SCRIPT)
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    argv = [unshare, "--mount", "--propagation", "private", "--", sys.executable,
            str(MOUNTNS), str(lab.resolv_conf), "--", str(PEER), str(script), str(listing),
            lab.resolver[0], str(procs), str(threads)]
    env = dict(_our_env(), REQUESTS_CA_BUNDLE=str(lab.ca_file), SSL_CERT_FILE=str(lab.ca_file))
    env.pop("PYTHONPATH")
    proc, wall, cpu = _timed(argv, env, 3600)
    if proc.returncode != 0:
        raise SystemExit(f"checkdmarc run failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(wall=wall, cpu=cpu)
    return result


def _mmm(values: list[float], fmt: str = "{:.1f}") -> str:
    """min / median / max."""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values),
                                              max(values)))


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _section(n: int, args: argparse.Namespace, setup: float, cold: dict, pairs: list[dict],
             version: str | None, when: str, startup: float) -> str:
    s = cold["summary"]
    a = s["adoption"]
    ours = [p["ours_rate"] for p in pairs]
    cpu = [p["ours_cpu_ms"] for p in pairs]
    marginal = [p["ours_marginal_ms"] for p in pairs]
    per_core = [1000.0 / c for c in marginal]
    lines = [
        "## check (bulk)",
        "",
        f"`benchmarks/bench_check.py` (method in its docstring), run {when}: {n} lab "
        "domains, DNS + HTTPS checks, no SMTP, on this 2-core machine; the lab's Unbound, "
        "NSD and HTTPS policy hosts run on the same two cores. Setup (publishing the "
        f"domains) took {setup:.1f} s. Both tools at concurrency {args.concurrency} "
        f"(smtptls `--workers {args.workers}`, checkdmarc {args.peer_procs} processes); "
        f"{args.slices} slices of {n // args.slices} domains, "
        f"{args.repeats} repetitions, the two tools alternating (ABBA) on each slice.",
        "",
        "| measurement | min / median / max |",
        "|---|---|",
        f"| `smtptls check --bulk --no-smtp`, domains/s (per slice, warm resolver cache) "
        f"| **{_mmm(ours, '{:.0f}')}** |",
        f"| smtptls CPU per domain, ms (checker and its worker processes, `getrusage`) | "
        f"**{_mmm(cpu, '{:.2f}')}** |",
        f"| the same beyond start-up (a one-domain run costs {startup:.2f} s CPU: "
        f"imports, resolver probe, worker processes) | {_mmm(marginal, '{:.2f}')} |",
        f"| smtptls domains per second per core of checker CPU (beyond start-up) | "
        f"{_mmm(per_core, '{:.0f}')} |",
    ]
    if pairs and pairs[0].get("peer_rate") is not None:
        peer = [p["peer_rate"] for p in pairs]
        ratio = [p["ratio"] for p in pairs]
        pcpu = [p["peer_cpu_ms"] for p in pairs]
        lines += [
            f"| checkdmarc {version} `check_mta_sts` + `check_smtp_tls_reporting` "
            f"({args.peer_procs} processes × {args.concurrency // args.peer_procs} threads), "
            f"domains/s | {_mmm(peer, '{:.0f}')} |",
            f"| checkdmarc CPU per domain, ms | {_mmm(pcpu, '{:.2f}')} |",
            f"| **ratio** smtptls / checkdmarc (same slice, next to each other) | "
            f"**{_mmm(ratio, '{:.2f}')}×** |",
            f"| lab CPU per domain, ms (Unbound, NSD, HTTPS hosts), during smtptls runs | "
            f"{_mmm([p['lab_ours_ms'] for p in pairs], '{:.2f}')} |",
            f"| the same during checkdmarc runs | "
            f"{_mmm([p['lab_peer_ms'] for p in pairs], '{:.2f}')} |",
        ]
        lab_ms = statistics.median(p["lab_ours_ms"] for p in pairs)
        peer_ms = statistics.median(pcpu)
        ours_ms = statistics.median(cpu)
        bound = [
            "Both tools and the lab share the two cores, so CPU bounds the ratio: with the "
            f"lab's median {lab_ms:.2f} ms and checkdmarc's {peer_ms:.2f} ms per domain, a "
            f"checker at our median {ours_ms:.2f} ms can be at most "
            f"{(lab_ms + peer_ms) / (lab_ms + ours_ms):.2f}× checkdmarc's rate when the "
            f"cores are the limit, one costing nothing {(lab_ms + peer_ms) / lab_ms:.2f}×; "
            f"3× needs at most {(lab_ms + peer_ms) / 3 - lab_ms:.2f} ms per domain.",
            "",
        ]
    else:
        bound = []
    loads = [p["load"] for p in pairs]
    lines += [
        f"| cold pass, whole list (resolver cache empty), smtptls domains/s | "
        f"{n / cold['wall']:.0f} ({1000 * cold['cpu'] / n:.2f} ms CPU per domain) |",
        "",
        "Load average (1, 5, 15 min) before the first pair: " + loads[0] + "; after the "
        "last: " + pairs[-1]["load_after"] + ".",
        "",
        *bound,
        "Per pair (slice, repetition: smtptls domains/s, CPU ms per domain"
        + ("; checkdmarc domains/s; ratio" if pairs[0].get("peer_rate") else "")
        + "; load before):",
        "",
    ]
    for p in pairs:
        peer_part = (f"; {p['peer_rate']:.0f}/s; {p['ratio']:.2f}×"
                     if p.get("peer_rate") is not None else "")
        lines.append(f"- slice {p['slice']}, rep {p['rep']}: {p['ours_rate']:.0f}/s, "
                     f"{p['ours_cpu_ms']:.2f} ms{peer_part}; load {p['load']}")
    lines += [
        "",
        f"Adoption found on the cold pass: {a['mta_sts_policy']['count']} valid MTA-STS "
        f"policies (modes {a['mta_sts_modes']}), {a['tlsrpt']['count']} TLSRPT records, "
        f"{s['with_error']} domain(s) with an error finding, {s['timed_out']} over the time "
        "limit" + (f"; checkdmarc on the last slice: {pairs[-1]['peer_mta_sts_valid']} "
                   f"valid MTA-STS and {pairs[-1]['peer_tlsrpt_valid']} valid TLSRPT of "
                   f"{n // args.slices}" if pairs[-1].get("peer_rate") else "") + ".",
        "",
    ]
    return "\n".join(lines)


def _write_doc(section: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(r"## check \(bulk\)\n.*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section.rstrip("\n") + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("-n", type=int, default=2000, help="lab domains (default 2000)")
    ap.add_argument("--concurrency", type=int, default=100,
                    help="domains in flight, both tools (default 100)")
    ap.add_argument("--workers", type=int, default=2,
                    help="smtptls check --workers (default 2, the cores)")
    ap.add_argument("--peer-procs", type=int, default=None,
                    help="checkdmarc processes (default: as many as --workers)")
    ap.add_argument("--slices", type=int, default=4, help="slices of the list (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    ap.add_argument("--no-peer", action="store_true", help="skip checkdmarc")
    ap.add_argument("--write-doc", action="store_true", help="update docs/performance.md")
    args = ap.parse_args()
    args.peer_procs = args.peer_procs or args.workers
    version = None if args.no_peer else _ensure_peer()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="bench-check-") as tmp:
        work = Path(tmp)
        t0 = time.monotonic()
        domains = _domains(lab, args.n)
        for i in range(0, len(domains), BATCH):
            lab.add(*domains[i:i + BATCH])
        setup = time.monotonic() - t0
        listing = work / "domains.txt"
        listing.write_text("\n".join(d.name for d in domains) + "\n")
        print(f"published {args.n} domains in {setup:.1f} s; load {_load()}", flush=True)
        cold = _run_smtptls(lab, listing, work, args.concurrency, args.workers)
        print(f"cold pass: {args.n} domains in {cold['wall']:.1f} s = "
              f"{args.n / cold['wall']:.0f}/s, {1000 * cold['cpu'] / args.n:.2f} ms CPU "
              "per domain", flush=True)
        one = work / "one.txt"
        one.write_text(domains[0].name + "\n")
        startup = statistics.median(
            _run_smtptls(lab, one, work, args.concurrency, args.workers)["cpu"]
            for _ in range(3))
        print(f"start-up (a one-domain list): {startup:.2f} s CPU", flush=True)
        size = args.n // args.slices
        slices = []
        for k in range(args.slices):
            path = work / f"slice{k}.txt"
            path.write_text("\n".join(d.name for d in domains[k * size:(k + 1) * size]) + "\n")
            slices.append(path)
        pairs = []
        turn = 0
        for rep in range(1, args.repeats + 1):
            for k, path in enumerate(slices, 1):
                pair: dict = {"slice": k, "rep": rep, "load": _load(),
                              "time_wait": _time_wait()}
                order = ["ours", "peer"] if turn % 2 == 0 else ["peer", "ours"]
                turn += 1
                for side in order:
                    if side == "ours":
                        r = _run_smtptls(lab, path, work, args.concurrency, args.workers)
                        pair["ours_rate"] = size / r["wall"]
                        pair["ours_cpu_ms"] = 1000 * r["cpu"] / size
                        pair["ours_marginal_ms"] = 1000 * (r["cpu"] - startup) / size
                        pair["lab_ours_ms"] = 1000 * LAST_LAB_CPU / size
                    elif not args.no_peer:
                        r = _run_peer(lab, path, work, args.peer_procs,
                                      max(1, args.concurrency // args.peer_procs))
                        pair["peer_rate"] = size / r["wall"]
                        pair["peer_cpu_ms"] = 1000 * r["cpu"] / size
                        pair["lab_peer_ms"] = 1000 * LAST_LAB_CPU / size
                        pair["peer_mta_sts_valid"] = r["mta_sts_valid"]
                        pair["peer_tlsrpt_valid"] = r["tlsrpt_valid"]
                if "peer_rate" in pair:
                    pair["ratio"] = pair["ours_rate"] / pair["peer_rate"]
                pair["load_after"] = _load()
                pairs.append(pair)
                print(f"slice {k} rep {rep} ({'/'.join(order)}): smtptls "
                      f"{pair['ours_rate']:.0f}/s {pair['ours_cpu_ms']:.2f} ms/domain"
                      + (f"; checkdmarc {pair['peer_rate']:.0f}/s "
                         f"{pair['peer_cpu_ms']:.2f} ms/domain; ratio {pair['ratio']:.2f}"
                         if "ratio" in pair else "")
                      + f"; load {pair['load']}; TIME_WAIT {pair['time_wait']}", flush=True)
        section = _section(args.n, args, setup, cold, pairs, version, when, startup)
        print("\n" + section)
        if args.write_doc:
            _write_doc(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
