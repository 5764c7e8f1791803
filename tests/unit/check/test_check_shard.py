"""``check --bulk --shard K/N``: N shards partition one list exactly, the same way in
every process and on every machine, with no coordination."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.check.bulk import BulkSummary, in_shard, parse_shard, shard_of
from smtptls.errors import SmtpTlsError

ROOT = Path(__file__).resolve().parents[3]

label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
domain_st = st.builds(lambda a, b: f"{a}.{b}", label, label)


@settings(max_examples=60, deadline=None)
@given(st.lists(domain_st, unique=True, max_size=200), st.integers(1, 64))
def test_shards_partition_the_list_exactly(domains, n):
    parts = [in_shard(domains, k, n) for k in range(1, n + 1)]
    flat = [d for p in parts for d in p]
    assert sorted(flat) == sorted(domains)  # every domain in one shard, none twice
    for k, part in enumerate(parts, 1):
        assert all(shard_of(d, n) == k for d in part)
        assert part == [d for d in domains if d in set(part)]  # list order kept


def test_shards_are_balanced():
    domains = [f"d{i}.example" for i in range(20000)]
    sizes = [len(in_shard(domains, k, 8)) for k in range(1, 9)]
    assert sum(sizes) == 20000
    assert max(sizes) - min(sizes) < 0.1 * 20000 / 8


def test_shard_is_the_documented_hash():
    """1 + (first 8 bytes of SHA-256 of the A-label, big-endian) mod N: any machine, any
    language can compute it (docs/check.md)."""
    for d in ("example.com", "xn--bcher-kva.example", "b17.secure.test"):
        for n in (1, 2, 7, 1000):
            expected = 1 + int.from_bytes(hashlib.sha256(d.encode()).digest()[:8], "big") % n
            assert shard_of(d, n) == expected


def test_shards_agree_across_processes():
    """Another interpreter with another hash seed deals the same domains the same way."""
    domains = [f"host{i}.example.org" for i in range(500)]
    code = ("import json, sys; from smtptls.check.bulk import shard_of; "
            "print(json.dumps([shard_of(d, 5) for d in json.loads(sys.argv[1])]))")
    outs = []
    for seed in ("1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT / "src"))
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(domains)],
                              capture_output=True, text=True, env=env, timeout=60, check=True)
        outs.append(json.loads(proc.stdout))
    assert outs[0] == outs[1] == [shard_of(d, 5) for d in domains]


@pytest.mark.parametrize("text,expected", [
    ("1/1", (1, 1)), ("3/8", (3, 8)), (" 8/8 ", (8, 8)), ("65536/65536", (65536, 65536)),
])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["0/4", "5/4", "1/0", "1", "a/b", "1/2/3", "-1/4", "",
                                  "1/65537", "1/" + "9" * 5000])
def test_parse_shard_refuses_bad_input(text):
    with pytest.raises(SmtpTlsError):
        parse_shard(text)


def test_summaries_of_worker_processes_merge():
    a, b = BulkSummary(domains=2, with_error=1), BulkSummary(domains=3, timed_out=1)
    a.modes["enforce"] += 2
    b.modes["enforce"] += 1
    b.reasons["mx.none"] += 3
    b.reason_text["mx.none"] = "no MX"
    a.merge(b)
    assert (a.domains, a.with_error, a.timed_out) == (5, 1, 1)
    assert a.modes["enforce"] == 3 and a.reasons["mx.none"] == 3
    assert a.reason_text == {"mx.none": "no MX"}
