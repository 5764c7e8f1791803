"""Benchmark: policy daemon start to first answer, smtptls policyd side by side with
postfix-mta-sts-resolver (mta-sts-daemon), the way an operator starts each.

Method:

- Each daemon is started through its own command line (``smtptls policyd --config F``
  and ``mta-sts-daemon -c F``), listening on a free loopback port, with its default
  cache (ours: the SQLite policy cache, in a temporary directory; the peer: its
  in-memory cache) and its default options. The peer is at its best documented
  configuration, with the ``[uvloop]`` extra (it switches to uvloop by itself); it is
  installed into the git-ignored ``.peers/venv`` by ``bench_policyd.py`` when missing
  (the same venv, installed the same way here).
- The clock starts just before the ``exec`` of the daemon. The client connects every
  millisecond until the listener accepts, sends one socketmap request and stops the
  clock when the whole reply has arrived. The request is Postfix's parent-domain lookup
  (``postfix .bench.example``): both daemons answer it ``NOTFOUND`` from the key alone,
  with no DNS or HTTPS, so the time is the daemon's own start-up and nothing else.
- Runs alternate between the two daemons (``--runs`` each, one warm-up run each not
  counted), so whatever else loads the machine falls on both alike; each pair of
  neighbouring runs gives a ratio. Printed: min/median/max of each side and of the
  ratios, and the load average before and after.

Usage::

    .venv/bin/python benchmarks/bench_policyd_startup.py            # 15 runs each
    .venv/bin/python benchmarks/bench_policyd_startup.py --runs 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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

# stdlib only, shared with the end-to-end tests
from tests.e2e.socketmap_client import (  # noqa: E402
    connect_when_listening,
    free_port,
    socketmap_exchange,
)

PEER_BIN = ROOT / ".peers" / "venv" / "bin"
OURS = Path(sys.executable).parent / "smtptls"
REQUEST = b"postfix .bench.example"
REPLY = b"9:NOTFOUND ,"
TIMEOUT = 30.0


def ensure_peer() -> None:
    """The peer with its [uvloop] extra in .peers/venv (as bench_policyd.py installs it)."""
    py = PEER_BIN / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_BIN.parent)], check=True)
    have = subprocess.run([str(py), "-c", "import postfix_mta_sts_resolver, uvloop"],
                          capture_output=True)
    if have.returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q",
                        "postfix-mta-sts-resolver[uvloop]"], check=True)


def command(kind: str, port: int, workdir: Path) -> list[str]:
    if kind == "ours":
        cfg = workdir / "smtptls.toml"
        cfg.write_text(
            f'[cache]\nsqlite_path = "{workdir / "cache.sqlite3"}"\n'
            f'[dns]\nnameservers = ["127.0.0.1"]\nport = 9\n'  # never asked: no traffic out
            f'[policyd]\nlisten = "127.0.0.1:{port}"\nmetrics = "127.0.0.1:{free_port()}"\n'
            '[logging]\nlevel = "warning"\n')
        return [str(OURS), "policyd", "--config", str(cfg)]
    cfg = workdir / "mta-sts-daemon.yml"
    cfg.write_text(f"host: 127.0.0.1\nport: {port}\n")
    return [str(PEER_BIN / "mta-sts-daemon"), "-c", str(cfg), "-v", "warn"]


def first_answer(kind: str, workdir: Path) -> float:
    """Seconds from exec to the first complete socketmap reply."""
    port = free_port()
    argv = command(kind, port, workdir)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=bytecode_env(SMTPTLS_STATE_DIR=str(workdir)))
    try:
        sock = connect_when_listening(port, proc, limit=TIMEOUT - (time.perf_counter() - started),
                                      pause=0.001, connect_timeout=TIMEOUT)
        if sock is None:
            err = proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ""  # type: ignore[union-attr]
            raise SystemExit(f"{kind} did not answer within {TIMEOUT:g} s {err}")
        with sock:
            got = socketmap_exchange(sock, REQUEST)
        elapsed = time.perf_counter() - started
        if got != REPLY:
            raise SystemExit(f"{kind} answered {got!r}, expected {REPLY!r}")
        return elapsed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def summary(values: list[float], unit: float = 1e3, suffix: str = " ms") -> str:
    return (f"min {min(values) * unit:7.1f}{suffix}  median "
            f"{statistics.median(values) * unit:7.1f}{suffix}  max {max(values) * unit:7.1f}"
            f"{suffix}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=15, help="runs per daemon (default 15)")
    args = ap.parse_args()
    ensure_peer()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-policyd-startup-"))
    times: dict[str, list[float]] = {"ours": [], "peer": []}
    ratios: list[float] = []
    try:
        for kind in ("ours", "peer"):
            first_answer(kind, workdir)  # warm-up: byte-compiled files, page cache
        for i in range(args.runs):
            order = ("ours", "peer") if i % 2 == 0 else ("peer", "ours")
            pair = {kind: first_answer(kind, workdir) for kind in order}
            for kind, t in pair.items():
                times[kind].append(t)
            ratios.append(pair["ours"] / pair["peer"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"smtptls policyd   {summary(times['ours'])}  ({args.runs} runs)")
    print(f"mta-sts-daemon    {summary(times['peer'])}  ({args.runs} runs)")
    print(f"ratio per pair (smtptls / mta-sts-daemon): min {min(ratios):.2f}x  median "
          f"{statistics.median(ratios):.2f}x  max {max(ratios):.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\nmachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
