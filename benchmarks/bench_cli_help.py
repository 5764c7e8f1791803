"""Benchmark: ``smtptls --help`` from exec to exit, side by side with ``parsedmarc --help``.

Method:

- Both commands are run through their console scripts, as an operator types them,
  with stdout and stderr discarded. parsedmarc is the one in the git-ignored
  ``.peers/parsedmarc`` venv that ``bench_report_import.py`` installs (its installer
  runs when the venv is missing).
- Byte-code caches are warm for both: each command runs once, not counted, before the
  measurement (``PYTHONDONTWRITEBYTECODE`` is unset and the caches go to
  ``.peers/pycache``, so a source tree that cannot be written still gets them).
- Runs alternate between the two (``--runs`` each), so other load falls on both alike;
  each pair of neighbouring runs gives a ratio. Printed: min/median/max of each side
  and of the ratios, and the load average before and after.

Usage::

    .venv/bin/python benchmarks/bench_cli_help.py             # 20 runs each
    .venv/bin/python benchmarks/bench_cli_help.py --runs 5 --no-peer
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

# the peer as the import benchmark installs and measures it (.peers/parsedmarc)
from bench_env import bytecode_env  # noqa: E402
from bench_report_import import PEER, ensure_peer  # noqa: E402

OURS = Path(sys.executable).parent / "smtptls"




def run_once(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env=env, timeout=60, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} --help exited {done.returncode}")
    return elapsed


def spread(values: list[float]) -> str:
    """min / median / max of times in seconds, printed in milliseconds."""
    return (f"min {min(values) * 1000:7.1f} ms  median {statistics.median(values) * 1000:7.1f} ms"
            f"  max {max(values) * 1000:7.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="runs per command (default 20)")
    ap.add_argument("--no-peer", action="store_true", help="time smtptls only")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs takes a number of at least 1")
    env = bytecode_env()
    commands = {"smtptls --help": [str(OURS), "--help"]}
    if not args.no_peer:
        ensure_peer()
        commands["parsedmarc --help"] = [str(PEER), "--help"]
    for command in commands.values():
        run_once(command, env)  # warm the byte-code caches; not counted
    print("load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    times: dict[str, list[float]] = {name: [] for name in commands}
    ratios: list[float] = []
    for i in range(args.runs):
        order = list(commands) if i % 2 == 0 else list(reversed(commands))
        got = {name: run_once(commands[name], env) for name in order}
        for name, t in got.items():
            times[name].append(t)
        if len(got) == 2:
            ratios.append(got["smtptls --help"] / got["parsedmarc --help"])
    for name, values in times.items():
        print(f"{name:18s} {spread(values)}  ({len(values)} runs)")
    if ratios:
        print(f"ratio per pair (smtptls / parsedmarc): min {min(ratios):.2f}x  median "
              f"{statistics.median(ratios):.2f}x  max {max(ratios):.2f}x")
    print("load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
