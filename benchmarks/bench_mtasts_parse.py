"""MTA-STS parsing throughput: policies/s and TXT records/s (pure core, one thread).

Run: ``.venv/bin/python benchmarks/bench_mtasts_parse.py [seconds-per-case]``.
Not part of the test run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from smtptls.mtasts import Policy, StsRecord, cert_matches, parse_policy, parse_txt_records

POLICIES = {
    "small (1 mx, LF)": "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 604800\n",
    "typical (3 mx, CRLF)": (
        "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\nmx: mx2.example.com\r\n"
        "mx: *.backup.example.net\r\nmax_age: 1296000\r\n"
    ),
    "large (100 mx + ext)": (
        "version: STSv1\nmode: enforce\nmax_age: 31557600\n"
        + "".join(f"mx: mx{i}.mail.example.org\n" for i in range(100))
        + "comment: generated for the benchmark\n"
    ),
}
TXT_ANSWERS = {
    "one record": ["v=STSv1; id=20160831085700Z;"],
    "among SPF/verification": [
        "v=spf1 include:_spf.example.com -all",
        "google-site-verification=abcdefghijklmnopqrstuvwxyz0123456789",
        "v=STSv1; id=20240101T010101; ext=1",
    ],
}


def rate(func: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``func`` over about ``seconds`` seconds."""
    count, batch = 0, 64
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            func()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    print(f"smtptls MTA-STS parse benchmark ({seconds:.1f} s per case, one thread)")
    for name, text in POLICIES.items():
        policy = parse_policy(text)
        print(
            f"  parse_policy  {name:<24} {rate(lambda t=text: parse_policy(t), seconds):>10,.0f} policies/s"
        )
        assert parse_policy(policy.to_text()) == policy
    for name, answer in TXT_ANSWERS.items():
        r = rate(lambda a=answer: parse_txt_records(a), seconds)
        print(f"  parse_txt     {name:<24} {r:>10,.0f} TXT answers/s")
    record = "v=STSv1; id=20160831085700Z;"
    r = rate(lambda: StsRecord.parse(record), seconds)
    print(f"  StsRecord.parse {'single record':<22} {r:>10,.0f} records/s")
    policy = Policy("STSv1", "enforce", 86400, ("*.mail.example.com", "mx.example.net"))
    r = rate(lambda: policy.matches_mx("a.mail.example.com"), seconds)
    print(f"  matches_mx    {'wildcard hit':<24} {r:>10,.0f} matches/s")
    sans = ["www.example.com", "*.mail.example.com"]
    r = rate(lambda: cert_matches("a.mail.example.com", sans), seconds)
    print(f"  cert_matches  {'2 SANs, wildcard':<24} {r:>10,.0f} matches/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
