"""``check --bulk`` past one machine: shards of one list, reports in PostgreSQL.

Real parts only: the lab's resolver and policy hosts, the local PostgreSQL server
(127.0.0.1:5432, a database created and dropped by the test).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from smtptls.check.bulk import shard_of
from tests.lab import LabDomain, LabMx, PolicyHost

pytestmark = [pytest.mark.lab, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
PG_SERVER = os.environ.get("SMTPTLS_TEST_PG_SERVER", "postgresql://postgres@127.0.0.1:5432")
N_DOMAINS = 10


@pytest.fixture(scope="module")
def domains(lab):
    out = []
    for i in range(N_DOMAINS):
        name = f"shard{i}.secure.test"
        mx = f"mx.{name}"
        out.append(LabDomain(
            name, mx=[LabMx(mx, cert="good")],
            txt={"_mta-sts": [f"v=STSv1; id=s{i}"],
                 "_smtp._tls": [f"v=TLSRPTv1; rua=mailto:tlsrpt@{name}"]},
            policy=PolicyHost(body=f"version: STSv1\nmode: enforce\nmx: {mx}\n"
                              "max_age: 604800\n")))
    lab.add(*out)
    return [d.name for d in out]


@pytest.fixture
def database():
    psycopg = pytest.importorskip("psycopg")
    name = f"smtptls_check_{secrets.token_hex(4)}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def dead_resolver():
    """A loopback UDP port that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _rows(dsn: str) -> list[tuple[str, str, str, bool, dict]]:
    import psycopg

    with psycopg.connect(dsn) as conn:
        cur = conn.execute("SELECT run_id, shard, domain, retryable, report "
                           "FROM check_results ORDER BY domain")
        return [tuple(r) for r in cur.fetchall()]


def _check(lab, listing: Path, *extra: str, resolver: str | None = None,
           timeout: str = "5") -> subprocess.CompletedProcess[str]:
    ip, port = lab.resolver
    argv = [sys.executable, "-m", "smtptls", "check", "--bulk", str(listing), "--no-smtp",
            "--no-rua-probe", "--quiet", "--json", "--nameserver", resolver or f"{ip}:{port}",
            "--ca-file", str(lab.ca_file), "--dnssec-probe", "test.", "--timeout", timeout,
            *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))


def test_shards_cover_the_list_once_and_resume_per_shard(lab, domains, database, tmp_path):
    listing = tmp_path / "domains.txt"
    listing.write_text("\n".join(domains) + "\n")
    dsn = database
    checked = []
    for k in (1, 2):
        r = _check(lab, listing, "--shard", f"{k}/2", "--out", dsn, "--run-id", "scan-1",
                   *(("--workers", "2") if k == 2 else ()))
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        mine = [d for d in domains if shard_of(d, 2) == k]
        assert summary["checked_now"] == len(mine) and summary["resumed"] == 0
        checked.append(summary["checked_now"])
    rows = _rows(dsn)
    # one row per domain and run, each written by the shard its hash names
    assert sorted(r[2] for r in rows) == sorted(domains)
    assert sum(checked) == N_DOMAINS
    for run_id, shard, domain, again, report in rows:
        assert run_id == "scan-1" and shard == f"{shard_of(domain, 2)}/2"
        assert again is False
        assert report["schema"] == "smtptls.check/1" and report["domain"] == domain
        assert report["adoption"]["mta_sts"] == "enforce"
    # resuming shard 1: nothing checked again, every report counted in the summary
    r = _check(lab, listing, "--shard", "1/2", "--out", dsn, "--run-id", "scan-1")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["checked_now"] == 0 and summary["resumed"] == checked[0]
    assert summary["adoption"]["mta_sts_modes"] == {"enforce": checked[0]}
    # a new run id is a new scan: rows of its own, the old ones kept
    r = _check(lab, listing, "--shard", "2/2", "--out", dsn, "--run-id", "scan-2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["checked_now"] == checked[1]
    assert len(_rows(dsn)) == N_DOMAINS + checked[1]


def test_retryable_rows_are_checked_again_and_replaced(lab, domains, database, tmp_path,
                                                       dead_resolver):
    listing = tmp_path / "domains.txt"
    listing.write_text("\n".join(domains[:2]) + "\n")
    # our resolver dies after the probe: each domain fails on our side
    r = _check(lab, listing, "--out", database, "--dnssec-probe", "", resolver=dead_resolver,
               timeout="1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    first = _rows(database)
    assert [r[3] for r in first] == [True, True]
    assert all(r[4]["retryable"] is True for r in first)
    assert first[0][0].startswith("list-")  # the default run id: a digest of the list
    # resumed with a working resolver: checked again, and the row replaced
    r = _check(lab, listing, "--out", database)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["checked_now"] == 2 and summary["resumed"] == 0
    again = _rows(database)
    assert len(again) == 2 and [r[3] for r in again] == [False, False]
    assert all("retryable" not in r[4] for r in again)


def test_bad_shard_and_run_id_without_database_are_usage_errors(lab, domains, tmp_path):
    listing = tmp_path / "domains.txt"
    listing.write_text(domains[0] + "\n")
    for extra in (("--shard", "3/2"), ("--shard", "x"),
                  ("--run-id", "r", "--out", str(tmp_path / "r.jsonl"))):
        r = _check(lab, listing, *extra)
        assert r.returncode == 2, (extra, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreachable_database_is_one_error_line(lab, domains, tmp_path):
    listing = tmp_path / "domains.txt"
    listing.write_text(domains[0] + "\n")
    r = _check(lab, listing, "--out", "postgresql://postgres@127.0.0.1:1/none")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "PostgreSQL" in r.stderr
