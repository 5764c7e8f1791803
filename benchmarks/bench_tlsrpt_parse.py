"""TLSRPT report parsing speed: reports per second, JSON and gzip, strict and tolerant.

Generates a corpus of realistic reports (seeded: a few policies each, sts / tlsa /
no-policy-found, up to a handful of failure details, Google- and Microsoft-like
quirks in a share of them), then times :func:`smtptls.tlsrpt.parse_report` over it.

The parser keeps bounded memos of its host-name, address and date checks (the same
values come report after report); the "cold" row empties them before every report, so
it shows the cost with no help from earlier reports. Every address in the generated
corpus is random, so the other rows gain little from the address memo either.

If parsedmarc is installed in ``.peers/parsedmarc`` (a git-ignored virtualenv; never
part of the project), its SMTP TLS report parser is timed on the same corpus in that
interpreter, for a side-by-side figure; otherwise that row is skipped.

    .venv/bin/python benchmarks/bench_tlsrpt_parse.py [--reports 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import orjson  # noqa: E402

from smtptls.tlsrpt import parse_report  # noqa: E402
from smtptls.tlsrpt.values import forget as _forget  # noqa: E402

PEER_PYTHON = ROOT / ".peers" / "parsedmarc" / "bin" / "python"
CORPUS = ROOT.parent / "shared" / "corpus" / "tlsrpt-reports"
RESULTS = ["certificate-expired", "starttls-not-supported", "validation-failure",
           "certificate-host-mismatch", "sts-policy-fetch-error", "tlsa-invalid"]


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return f"2001:db8:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
    return f"{rng.choice([192, 198, 203])}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _policy(rng: random.Random, domain: str, quirky: bool) -> dict:
    kind = rng.choices(["sts", "tlsa", "no-policy-found"], weights=[6, 2, 2])[0]
    mx = [f"mx{i}.{domain}" for i in range(1, rng.randint(2, 4))]
    policy: dict = {"policy-type": kind}
    if kind == "sts":
        policy["policy-string"] = ["version: STSv1", "mode: enforce",
                                   *(f"mx: {m}" for m in mx), "max_age: 604800"]
        policy["policy-domain"] = domain
        if not quirky:
            policy["mx-host"] = mx
    elif kind == "tlsa":
        records = [f"3 1 1 {rng.getrandbits(256):064X}" for _ in range(rng.randint(1, 3))]
        policy["policy-string"] = [json.dumps(records)] if quirky else records
        policy["policy-domain"] = domain
    else:
        policy["policy-domain"] = domain
    failures = rng.choice([0, 0, 0, 1, 2, 5])
    details = []
    for _ in range(failures):
        detail = {"result-type": rng.choice(RESULTS), "sending-mta-ip": _ip(rng),
                  "receiving-mx-hostname": rng.choice(mx), "receiving-ip": _ip(rng),
                  "failed-session-count": rng.randint(1, 50)}
        if rng.random() < 0.3:
            detail["failure-reason-code"] = "X509_V_ERR_CERT_HAS_EXPIRED"
        details.append(detail)
    entry = {"policy": policy,
             "summary": {"total-successful-session-count": rng.randint(0, 20000),
                         "total-failure-session-count": sum(
                             d["failed-session-count"] for d in details)}}
    if details or not quirky:
        entry["failure-details"] = details
    return entry


def generate(count: int, seed: int = 8460) -> list[bytes]:
    """*count* report JSON documents; a third carry real-sender quirks."""
    rng = random.Random(seed)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        quirky = i % 3 == 0
        day = base + timedelta(days=rng.randrange(365))
        domain = f"d{rng.randrange(10_000)}.example"
        start = day.strftime("%Y-%m-%dT%H:%M:%S") + ("" if quirky and i % 2 else "Z")
        end = (day + timedelta(seconds=86399)).strftime("%Y-%m-%dT%H:%M:%S") + (
            "" if quirky and i % 2 else "Z")
        doc = {"organization-name": rng.choice(["Google Inc.", "Microsoft Corporation",
                                                "Mail.ru", "mx.example.net"]),
               "date-range": {"start-datetime": start, "end-datetime": end},
               "contact-info": None if quirky else "smtp-tls-reporting@sender.example",
               "report-id": f"{day:%Y-%m-%dT%H:%M:%SZ}_{domain}_{i}",
               "policies": [_policy(rng, domain, quirky) for _ in range(rng.randint(1, 4))]}
        out.append(json.dumps(doc, separators=(",", ":")).encode())
    return out


def _time(fn: Callable[[bytes], object], corpus: list[bytes], rounds: int) -> float:
    """Best-of-*rounds* reports per second."""
    rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        for item in corpus:
            fn(item)
        rates.append(len(corpus) / (time.perf_counter() - started))
    return max(rates)


_PEER_SNIPPET = r"""
import gzip, json, sys, time
from parsedmarc import parse_smtp_tls_report_json
real = [p for p in sys.argv[2:] if p.startswith("real:")]
corpus = [open(p, "rb").read() for p in sys.argv[2:] if not p.startswith("real:")]
rounds = int(sys.argv[1])
out = {"real_ok": 0, "real_total": len(real), "real_mx_host": 0}
for path in real:
    try:
        parsed = parse_smtp_tls_report_json(open(path[5:], "rb").read())
    except Exception:
        continue
    out["real_ok"] += 1
    out["real_mx_host"] += any("mx_host" in p or "mx-host" in p for p in parsed["policies"])
for label, items in (("json", corpus), ("gzip", [gzip.compress(c) for c in corpus])):
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for item in items:
            data = gzip.decompress(item) if item[:2] == b"\x1f\x8b" else item
            parse_smtp_tls_report_json(data.decode())
        best = max(best, len(items) / (time.perf_counter() - t))
    out[label] = best
print(json.dumps(out))
"""


def _peer(corpus: list[bytes], rounds: int, real: list[Path]) -> dict[str, float] | None:
    if not PEER_PYTHON.is_file():
        return None
    # parsedmarc requires every member it knows (contact-info, mx-host, ...): give it the
    # strictly valid share of the corpus, the same documents timed as "strict" here
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, item in enumerate(corpus):
            path = os.path.join(tmp, f"{i}.json")
            Path(path).write_bytes(item)
            paths.append(path)
        proc = subprocess.run(  # noqa: S603 - fixed interpreter and arguments, no shell
            [str(PEER_PYTHON), "-c", _PEER_SNIPPET, str(rounds), *paths,
             *(f"real:{p}" for p in real)],
            capture_output=True, text=True, timeout=600, check=False,
        )
    if proc.returncode != 0:
        print(f"parsedmarc: not timed ({proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    corpus = generate(args.reports)
    gz = [gzip.compress(c) for c in corpus]
    clean = [c for i, c in enumerate(corpus) if i % 3]
    clean_gz = [gzip.compress(c) for c in clean]
    size = sum(map(len, corpus)) / len(corpus)
    policies = sum(len(json.loads(c)["policies"]) for c in corpus) / len(corpus)
    print(f"corpus: {len(corpus)} reports, mean {size:.0f} bytes JSON, "
          f"{sum(map(len, gz)) / len(gz):.0f} bytes gzip, {policies:.1f} policies/report, "
          f"{len(clean)} strictly valid")
    print(f"python {sys.version.split()[0]}, best of {args.rounds} rounds\n")
    def cold(data: bytes) -> object:
        _forget()
        return parse_report(data)

    rows = [
        ("smtptls tolerant, all, JSON", lambda d: parse_report(d), corpus),
        ("smtptls tolerant, all, JSON, cold", cold, corpus),
        ("smtptls tolerant, all, gzip", lambda d: parse_report(d), gz),
        ("smtptls tolerant, valid, JSON", lambda d: parse_report(d), clean),
        ("smtptls strict, valid, JSON", lambda d: parse_report(d, strict=True), clean),
        ("smtptls strict, valid, gzip", lambda d: parse_report(d, strict=True), clean_gz),
        # floors: decoding alone, no validation and no model (what any parser pays first)
        ("json.loads only, valid, JSON", lambda d: json.loads(d), clean),
        ("orjson.loads only, valid, JSON", orjson.loads, clean),
    ]
    print(f"{'parser':<34} {'reports/s':>10} {'MB/s JSON':>10}")
    for label, fn, items in rows:
        rate = _time(fn, items, args.rounds)
        print(f"{label:<34} {rate:>10,.0f} {rate * size / 1e6:>10.1f}")
    real = sorted(CORPUS.glob("*.json")) if CORPUS.is_dir() else []
    peer = _peer(clean, args.rounds, real)
    if peer is None:
        print("parsedmarc: not installed in .peers/parsedmarc, skipped")
    else:
        for label in ("json", "gzip"):
            rate = peer[label]
            print(f"{'parsedmarc, valid, ' + label.upper():<34} {rate:>10,.0f} "
                  f"{rate * size / 1e6:>10.1f}")
    if real:
        ours = [parse_report(p.read_bytes()) for p in real]
        with_mx = sum(any(pol.mx_host for pol in r.policies) for r in ours)
        print(f"\nreal reports ({CORPUS.name}): smtptls accepts {len(ours)}/{len(real)}, "
              f"keeps mx-host in {with_mx}", end="")
        if peer is not None:
            print(f"; parsedmarc accepts {peer['real_ok']}/{peer['real_total']}, "
                  f"keeps mx-host in {peer['real_mx_host']}")
        else:
            print()
    # sanity: the generated totals survive parsing
    report = parse_report(corpus[1], strict=True)
    doc = json.loads(corpus[1])
    assert report.total_successful == sum(
        p["summary"]["total-successful-session-count"] for p in doc["policies"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
