"""``smtptls mta-sts DOMAIN`` and ``smtptls mta-sts parse FILE``.

``mta-sts DOMAIN`` runs the sender's discovery (RFC 8461 §3, §5.1): TXT lookup, cache
decision, HTTPS fetch, validation, cache update; it prints the policy in force and what
the cache did. Exit status: 0 a policy in mode enforce or testing applies; 1 no policy
(no record, or ``mode: none``); 2 an error (record invalid, DNS failure, fetch or policy
error with nothing cached, bad usage).

``mta-sts parse FILE`` validates a local policy file (RFC 8461 §3.2): exit 0 valid, 2
invalid with the line number. ``--json`` prints ``{"version", "mode", "max_age", "mx"}``
or ``{"error": "<message>", "line": <n or null>}``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtptls import config as config_mod
from smtptls.cli._preflight import require_ca_file, require_domains, require_resolver
from smtptls.cli.output import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.errors import ConfigError, PolicySyntaxError, SmtpTlsError
from smtptls.mtasts.policy import MAX_POLICY_BYTES, Mode, Policy, parse_policy

WIDTH = 100

EPILOG = """\
examples:
  smtptls mta-sts example.com
  smtptls mta-sts example.com --json --no-cache
  smtptls mta-sts example.com --nameserver 127.0.0.1:5353 --ca-file lab-ca.pem
  smtptls mta-sts parse mta-sts.txt
  smtptls mta-sts parse mta-sts.txt --json

exit status:
  DOMAIN      0 policy in force (enforce/testing), 1 no policy or mode none, 2 error
  parse FILE  0 valid policy, 2 invalid (the message names the line)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mta-sts",
        help="discover and validate a domain's MTA-STS policy, or check a policy file",
        description="Discover, fetch and validate the MTA-STS policy of DOMAIN (RFC 8461),\n"
        "or validate a local policy file with 'parse FILE'.",
        usage="smtptls mta-sts DOMAIN [options]\n       smtptls mta-sts parse FILE [--json]",
        formatter_class=Formatter,
        epilog=EPILOG,
    )
    p.add_argument("target", metavar="DOMAIN | parse", help="policy domain, or 'parse'")
    p.add_argument("file", metavar="FILE", nargs="?",
                   help="with 'parse': the policy file to check ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--nameserver", metavar="IP[:PORT]", action="append",
                   help="resolver to ask (repeatable; default: config, then resolv.conf)")
    p.add_argument("--ca-file", metavar="FILE",
                   help="PEM trust store for the policy host (default: system store)")
    p.add_argument("--dnssec-probe", metavar="NAME",
                   help="name the resolver must answer for before discovery (default "
                   "dns.dnssec_probe, '.'; '' skips the probe)")
    p.add_argument("--no-cache", action="store_true",
                   help="use an empty in-memory cache instead of the configured one")
    p.add_argument("--timeout", metavar="SECONDS", type=float,
                   help="DNS timeout and total fetch timeout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.target == "parse":
        if not args.file:
            return _usage_error(args, "mta-sts parse needs a FILE")
        return _parse_file(args)
    if args.file:
        return _usage_error(args, f"unexpected argument {args.file!r} after DOMAIN")
    return _discover(args)


def _usage_error(args: argparse.Namespace, message: str) -> int:
    if args.json:
        print_json({"error": message, "line": None})
    else:
        print(f"smtptls mta-sts: error: {message}", file=sys.stderr)
    return EXIT_ERROR


# --- parse FILE ----------------------------------------------------------------------------


def _read_policy_file(name: str) -> str:
    try:
        if name == "-":
            raw = sys.stdin.buffer.read(MAX_POLICY_BYTES + 1)
        else:
            with Path(name).open("rb") as fh:
                raw = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise SmtpTlsError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        # RFC 8461 §3.3: bound the policy body (64 KiB, as for a fetched policy)
        raise PolicySyntaxError(f"policy larger than {MAX_POLICY_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PolicySyntaxError("policy is not valid UTF-8", line=line) from None


def _parse_file(args: argparse.Namespace) -> int:
    try:
        policy = parse_policy(_read_policy_file(args.file))
    except PolicySyntaxError as exc:
        if args.json:
            print_json({"error": exc.reason, "line": exc.line})
        else:
            where = args.file if exc.line is None else f"{args.file}:{exc.line}"
            print(f"{where}: invalid MTA-STS policy: {exc.reason}", file=sys.stderr)
        return EXIT_ERROR
    except SmtpTlsError as exc:
        if args.json:
            print_json({"error": str(exc), "line": None})
        else:
            print(f"smtptls mta-sts: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print_json(policy.to_dict())
        return EXIT_OK
    print(f"{args.file}: valid MTA-STS policy")
    for line in _policy_lines(policy):
        print(line)
    for warning in policy.warnings:
        print(_row("warning", warning))
    return EXIT_OK


# --- DOMAIN --------------------------------------------------------------------------------


def _row(label: str, value: str) -> str:
    return textwrap.fill(value, width=WIDTH, initial_indent=f"{label:<13}",
                         subsequent_indent=" " * 13, break_on_hyphens=False) or label


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "",
             f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "".join(parts) or "0s"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _policy_lines(policy: Policy) -> list[str]:
    return [
        _row("mode", policy.mode.value),
        _row("max_age", f"{policy.max_age} ({_duration(policy.max_age)})"),
        _row("mx", ", ".join(policy.mx) if policy.mx else "(none)"),
    ]


_OUTCOME_TEXT = {
    "fetched": "policy fetched and cached",
    "cached": "cached policy applies (record id unchanged, or no usable record)",
    "fetch-failed-kept-cached": "fetch failed; the unexpired cached policy stays in force",
    "fetch-failed": "fetch failed and nothing valid cached: deliver as without MTA-STS",
    "no-policy": "no MTA-STS policy: deliver as without MTA-STS",
}


def build_configs(args: argparse.Namespace) -> config_mod.Config:
    """The configuration file with the command line's DNS and fetch options applied
    (``mta-sts`` and ``publish`` share them)."""
    cfg = config_mod.load(args.config)
    dns_cfg, fetch_cfg = cfg.dns, cfg.fetch
    if args.nameserver:
        dns_cfg = dataclasses.replace(dns_cfg, nameservers=tuple(args.nameserver))
    if args.ca_file:
        fetch_cfg = dataclasses.replace(fetch_cfg, ca_file=args.ca_file)
    if args.dnssec_probe is not None:
        dns_cfg = dataclasses.replace(dns_cfg, dnssec_probe=args.dnssec_probe)
    if args.timeout is not None:
        if not 0 < args.timeout <= 600:
            raise ConfigError("--timeout must be between 0 and 600 seconds")
        dns_cfg = dataclasses.replace(dns_cfg, timeout=args.timeout)
        fetch_cfg = dataclasses.replace(
            fetch_cfg, total_timeout=args.timeout,
            connect_timeout=min(fetch_cfg.connect_timeout, args.timeout))
    return dataclasses.replace(cfg, dns=dns_cfg, fetch=fetch_cfg)


async def _discover_async(args: argparse.Namespace, cfg: config_mod.Config) -> tuple[Any, str]:
    from smtptls.engine.mtasts_discovery import discover
    from smtptls.net.dns import DnsResolver
    from smtptls.store import MemoryPolicyCache, open_policy_cache

    resolver = DnsResolver(cfg.dns)
    if args.no_cache:
        cache: Any = MemoryPolicyCache()
        where = "memory (--no-cache)"
    else:
        cache = await open_policy_cache(cfg.cache)
        where = cfg.cache.backend + (
            f" {cfg.cache.sqlite_path}" if cfg.cache.backend == "sqlite" else "")
    try:
        result = await discover(args.target, dns=resolver, cache=cache,
                                fetch_config=cfg.fetch, now=time.time())
    finally:
        await cache.close()
    return result, where


def _exit_code(d: Any) -> int:
    if d.policy is not None and d.policy.mode is not Mode.NONE:
        return EXIT_OK
    if d.policy is not None:  # mode none: the domain withdrew MTA-STS (RFC 8461 §8.3)
        return EXIT_NEGATIVE
    if d.fetch_error is not None or d.txt_error is not None:
        return EXIT_ERROR
    return EXIT_NEGATIVE


def _discover(args: argparse.Namespace) -> int:
    # operator errors are one line and exit 2, before any table of results
    args.target = require_domains([args.target])[0]
    cfg = build_configs(args)
    require_ca_file(cfg.fetch.ca_file)
    require_resolver(cfg.dns, validating=False)  # MTA-STS itself needs no DNSSEC
    d, where = asyncio.run(_discover_async(args, cfg))
    code = _exit_code(d)
    if args.json:
        data = d.to_dict()
        data["cache_backend"] = where
        data["exit"] = code
        print_json(data)
        return code
    print(_row("domain", d.domain))
    if d.txt_records:
        for i, text in enumerate(d.txt_records):
            print(_row("TXT record" if i == 0 else "", text))
    if d.txt_security is not None:
        print(_row("DNSSEC", f"{d.txt_security.value} (_mta-sts TXT answer)"))
    print(_row("outcome", f"{d.outcome.value}: {_OUTCOME_TEXT[d.outcome.value]}"))
    if d.record_id is not None:
        print(_row("record id", d.record_id))
    if d.fetch is not None:
        f = d.fetch
        print(_row("fetched", f"{f.url} (HTTP {f.status}, {f.content_type}, "
                              f"{f.elapsed:.2f} s)"))
    if d.policy is not None:
        print(_row("policy id", d.policy_id or "-"))
        for line in _policy_lines(d.policy):
            print(line)
    if d.cached is not None:
        print(_row("cache", f"{where}; fetched {_when(d.cached.fetched_at)}, "
                            f"expires {_when(d.cached.expires_at)}"))
    else:
        print(_row("cache", f"{where}; no entry"))
    for label, err in (("TXT error", d.txt_error), ("fetch error", d.fetch_error),
                       ("cache error", d.store_error)):
        if err is not None:
            print(_row(label, str(err)))
    return code
