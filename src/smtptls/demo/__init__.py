"""A zero-configuration, offline walk through the MTA-STS pipeline.

``smtptls demo`` uses the bundled policy ``mta-sts.txt`` of the reserved domain
``demo.example`` as if it had just been fetched for the TXT record
``v=STSv1; id=demo1``: it validates the policy (RFC 8461 §3.2), runs the cache decision
(§3.3) against the embedded SQLite cache (by default ``smtptls.sqlite3`` in the state
directory, so a second run finds the cached policy), and prints the sender's decision
(§4, §5) for a few MX hosts and the certificate names they present. No network is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from smtptls.config import CacheConfig
from smtptls.mtasts import (
    Action,
    apply_fetch_result,
    cert_matches,
    decide_refresh,
    effective_policy,
    parse_policy,
    parse_txt_records,
    sender_action,
)
from smtptls.store.sqlite import SqlitePolicyCache

DOMAIN = "demo.example"
TXT = "v=STSv1; id=demo1"


@dataclass(frozen=True, slots=True)
class DemoMx:
    host: str
    cert_names: tuple[str, ...]
    note: str


MX_HOSTS = (
    DemoMx("mx1.demo.example", ("mx1.demo.example",), "listed"),
    DemoMx("in.mail.demo.example", ("*.mail.demo.example",), "wildcard match"),
    DemoMx("a.b.mail.demo.example", ("*.mail.demo.example",), "one label only"),
    DemoMx("mx1.demo.example", ("mx.other.example",), "wrong name"),
    DemoMx("backup.elsewhere.example", ("backup.elsewhere.example",), "not listed"),
)


def bundled_policy_text() -> str:
    return resources.files(__package__).joinpath("mta-sts.txt").read_text("utf-8")


async def run_demo(cache_config: CacheConfig, out: Callable[[str], None] = print) -> int:
    now = time.time()
    # RFC 8461 §3.1: the TXT record; §3.2: the policy body, validated on "fetch"
    record = parse_txt_records([TXT])
    assert record is not None
    policy = parse_policy(bundled_policy_text())
    out(f"MTA-STS demo for {DOMAIN} (offline; bundled policy, no network)")
    out(f"  TXT _mta-sts.{DOMAIN}: {TXT}")
    out(f"  policy: mode {policy.mode.value}, max_age {policy.max_age}, "
        f"mx {', '.join(policy.mx)}")

    cache = await SqlitePolicyCache.open(cache_config.sqlite_path)
    try:
        cached = await cache.get(DOMAIN)
        action = decide_refresh(cached, record, now)
        if action is Action.FETCH:
            result = apply_fetch_result(cached, policy, record.id, now)
            if result.cached is not None:
                await cache.put(DOMAIN, result.cached)
            cached = result.cached
            out(f"  cache: nothing valid cached for id {record.id} -> policy stored")
        else:
            out(f"  cache: {action.value} "
                f"(policy id {cached.policy_id if cached else '-'} still valid)")
        out(f"  cache file: {cache_config.sqlite_path}")
    finally:
        await cache.close()

    in_force = effective_policy(cached, now)
    out("")
    out(f"  {'MX host':<25} {'certificate name':<25} {'decision':<12} why")
    for mx in MX_HOSTS:
        # RFC 8461 §4.1 (MX pattern) and §4.2 (certificate names), then §5 (mode)
        delivery = sender_action(in_force, mx.host, cert_matches(mx.host, mx.cert_names))
        why = mx.note if delivery.failure is None else f"{delivery.failure.value} ({mx.note})"
        out(f"  {mx.host:<25} {mx.cert_names[0]:<25} {delivery.verdict.value:<12} {why}")
    out("")
    out("  enforce: never deliver to a failing MX; when none is left, defer (RFC 8461 §5)")
    return 0
