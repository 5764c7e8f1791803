"""TLSRPT intake throughput: reports parsed and stored per second (SQLite, PostgreSQL).

Run: ``.venv/bin/python benchmarks/bench_tlsrpt_store.py [reports]`` (default 2000).

A deterministic corpus of gzip reports (1-3 policies, 0-4 failure details each) is
generated in memory; each figure is end to end through ``ReportIntake.submit_body``:
gunzip + parse (tolerant) + flatten + one committed transaction. SQLite runs with
``synchronous=FULL`` (a report is on disk before it is acknowledged), so the figure is
bounded by fsync. PostgreSQL (127.0.0.1:5432, database ``test``) is used when reachable;
the run uses its own schema and drops it. A summary query over everything stored is
timed too.

If parsedmarc is installed in a virtualenv at ``.peers/parsedmarc`` (git-ignored), its
SMTP TLS report parser is timed on the same corpus, parse only, in that interpreter.
Not part of the test run.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from smtptls.errors import StoreError
from smtptls.services.reports_server.intake import Outcome, ReportIntake
from smtptls.store.reports_postgres import PostgresReportStore
from smtptls.store.reports_sqlite import SqliteReportStore
from smtptls.tlsrpt.reader import parse_report

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / ".peers" / "parsedmarc" / "bin" / "python"
RESULT_TYPES = ["certificate-expired", "starttls-not-supported", "validation-failure",
                "certificate-host-mismatch", "sts-policy-fetch-error", "tlsa-invalid"]


def make_reports(n: int, seed: int = 8460) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        day = 1 + i % 28
        policies = []
        for _ in range(rnd.randint(1, 3)):
            domain = f"d{rnd.randint(1, 50)}.example"
            details = [{
                "result-type": rnd.choice(RESULT_TYPES),
                "sending-mta-ip": f"192.0.2.{rnd.randint(1, 254)}",
                "receiving-mx-hostname": f"mx{rnd.randint(1, 3)}.{domain}",
                "receiving-ip": f"198.51.100.{rnd.randint(1, 254)}",
                "failed-session-count": rnd.randint(1, 50),
            } for _ in range(rnd.randint(0, 4))]
            policies.append({
                "policy": {"policy-type": "sts", "policy-domain": domain,
                           "policy-string": ["version: STSv1", "mode: enforce",
                                             f"mx: *.{domain}", "max_age: 604800"],
                           "mx-host": [f"*.{domain}"]},
                "summary": {"total-successful-session-count": rnd.randint(0, 100000),
                            "total-failure-session-count": sum(d["failed-session-count"]
                                                               for d in details)},
                "failure-details": details,
            })
        out.append({
            "organization-name": rnd.choice(["Google Inc.", "Microsoft Corporation", "Mail.ru"]),
            "date-range": {"start-datetime": f"2024-05-{day:02d}T00:00:00Z",
                           "end-datetime": f"2024-05-{day:02d}T23:59:59Z"},
            "contact-info": "smtp-tls-reporting@example.net",
            "report-id": f"bench-{i}-{uuid.uuid4().hex[:8]}",
            "policies": policies,
        })
    return out


def parse_only(bodies: list[bytes]) -> float:
    t = time.perf_counter()
    for body in bodies:
        parse_report(body)
    return len(bodies) / (time.perf_counter() - t)


async def store_run(label: str, store, bodies: list[bytes]) -> None:
    try:
        await store.open()
    except StoreError as exc:
        print(f"{label:<34} skipped: {exc}")
        return
    try:
        intake = ReportIntake(store)
        t = time.perf_counter()
        for body in bodies:
            outcome = await intake.submit_body(body)
            assert outcome.outcome is Outcome.STORED, outcome
        elapsed = time.perf_counter() - t
        print(f"{label:<34} {len(bodies) / elapsed:>10,.0f} reports/s "
              f"({elapsed * 1000 / len(bodies):.2f} ms each)")
        t = time.perf_counter()
        summary = await store.summary()
        print(f"{label + ' summary query':<34} {(time.perf_counter() - t) * 1000:>10,.1f} ms "
              f"({summary.reports} reports, {len(summary.failures)} failure rows)")
    finally:
        if isinstance(store, PostgresReportStore):
            await store.drop_schema()
        await store.close()


def parsedmarc_run(reports: list[dict]) -> None:
    if not PEER.exists():
        print(f"{'parsedmarc (parse only)':<34} skipped: no virtualenv at .peers/parsedmarc")
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reports.json"
        path.write_text(json.dumps([json.dumps(r) for r in reports]))
        script = (
            "import json, sys, time\n"
            "from parsedmarc import parse_smtp_tls_report_json\n"
            "docs = json.load(open(sys.argv[1]))\n"
            "t = time.perf_counter()\n"
            "for d in docs: parse_smtp_tls_report_json(d)\n"
            "print(len(docs) / (time.perf_counter() - t))\n"
        )
        done = subprocess.run([str(PEER), "-c", script, str(path)], capture_output=True,
                              text=True, timeout=600)
    if done.returncode != 0:
        print(f"{'parsedmarc (parse only)':<34} failed: {done.stderr.strip()[-200:]}")
        return
    print(f"{'parsedmarc (parse only, JSON)':<34} {float(done.stdout):>10,.0f} reports/s")


async def main(n: int) -> None:
    reports = make_reports(n)
    bodies = [gzip.compress(json.dumps(r).encode()) for r in reports]
    json_bodies = [json.dumps(r).encode() for r in reports]
    print(f"{n} generated reports, {sum(map(len, bodies)) / n:,.0f} bytes gzip on average\n")
    print(f"{'smtptls parse only (gzip)':<34} {parse_only(bodies):>10,.0f} reports/s")
    print(f"{'smtptls parse only (JSON)':<34} {parse_only(json_bodies):>10,.0f} reports/s")
    parsedmarc_run(reports)
    with tempfile.TemporaryDirectory() as tmp:
        await store_run("SQLite parse+store (sync=FULL)",
                        SqliteReportStore(Path(tmp) / "bench.sqlite3"), bodies)
    await store_run("PostgreSQL parse+store",
                    PostgresReportStore(PG_DSN, schema=f"bench_{uuid.uuid4().hex[:8]}"), bodies)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
