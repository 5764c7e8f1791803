"""``smtptls policyd`` (the Postfix TLS policy daemon) and ``smtptls policyd query``.

``policyd`` serves Postfix's socketmap protocol for ``smtp_tls_policy_maps`` until
SIGTERM; SIGHUP reloads the configuration. ``policyd query DOMAIN`` prints what the
daemon would answer for a next-hop key, with the reasoning: the MX hosts with their
DNSSEC status, the TLSA state of each, the MTA-STS record and policy, and the answer
chosen and why. Exit status of ``query``: 0 an ``OK`` answer (a TLS policy), 1
``NOTFOUND`` (Postfix's default applies), 2 ``TEMP``/``PERM`` or an error.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from smtptls import config as config_mod
from smtptls.cli.output import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.errors import SmtpTlsError
from smtptls.services.policyd.socketmap import ReplyStatus

EPILOG = """\
examples:
  smtptls policyd --config /etc/smtptls/smtptls.toml
  smtptls policyd --listen 127.0.0.1:8461 --metrics 127.0.0.1:9461
  smtptls policyd --listen unix:/var/spool/postfix/private/smtptls
  smtptls policyd query example.com
  smtptls policyd query '[relay.example.net]:587' --json

Postfix main.cf:
  smtp_tls_policy_maps = socketmap:inet:127.0.0.1:8461:postfix
  smtp_dns_support_level = dnssec
(see docs/postfix.md)

exit status (query): 0 OK answer, 1 NOTFOUND, 2 TEMP/PERM or error
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "policyd",
        help="Postfix TLS policy daemon (socketmap), or 'query DOMAIN' to explain an answer",
        description="Serve MTA-STS and DANE decisions to Postfix over the socketmap "
        "protocol,\nor explain the answer for one next hop with 'query DOMAIN'.",
        usage="smtptls policyd [--config F] [--listen ADDR] [--metrics ADDR]\n"
        "       smtptls policyd query DOMAIN [--config F] [--json]",
        formatter_class=Formatter,
        epilog=EPILOG,
    )
    p.add_argument("action", nargs="?", choices=["query"], help=argparse.SUPPRESS)
    p.add_argument("domain", nargs="?", metavar="DOMAIN",
                   help="with 'query': the next-hop key (example.com, [host]:port)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--listen", metavar="ADDR",
                   help="socketmap listen address(es), comma-separated: 127.0.0.1:8461, "
                   "[::1]:8461, unix:/path (default: policyd.listen)")
    p.add_argument("--metrics", metavar="ADDR",
                   help="Prometheus /metrics address, 'off' to disable "
                   "(default: policyd.metrics)")
    p.add_argument("--json", action="store_true", help="with 'query': JSON output")
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    cfg = config_mod.load(args.config)
    if args.action == "query":
        if not args.domain:
            print("smtptls policyd query: a DOMAIN is required", file=sys.stderr)
            return EXIT_ERROR
        return _query(cfg, args.domain, args.json)
    if args.domain:
        print(f"smtptls policyd: unexpected argument {args.domain!r}", file=sys.stderr)
        return EXIT_ERROR
    from smtptls import logs
    from smtptls.services.policyd.daemon import event_loop_factory, run

    # the daemon logs per the [logging] section unless --log-level/--log-format say otherwise
    logs.setup(getattr(args, "log_level", None) or cfg.logging.level,
               getattr(args, "log_format", None) or cfg.logging.format)
    metrics = args.metrics
    if metrics is not None and metrics.lower() in ("off", "none", ""):
        metrics = ""
    loop_factory = event_loop_factory(cfg.policyd.event_loop)  # uvloop asked, not there
    _preflight(cfg, args.listen, metrics)
    from smtptls.paths import default_config_path

    # SIGHUP reloads the file the configuration came from, the default one included
    config_path = args.config or default_config_path()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(run(cfg, config_path=config_path, listen=args.listen,
                              metrics_listen=metrics))


def _preflight(cfg: config_mod.Config, listen: str | None, metrics: str | None) -> None:
    """Refuse bad or taken addresses before the daemon starts; then say what it does."""
    from smtptls.cli._preflight import require_listen

    specs = [s.strip() for s in (listen or cfg.policyd.listen).split(",") if s.strip()]
    for spec in specs:
        require_listen(spec, 8461, "--listen")
    metrics = cfg.policyd.metrics if metrics is None else metrics
    if metrics:
        require_listen(metrics, 9461, "--metrics")
    c = cfg.cache
    where = {"sqlite": c.sqlite_path, "postgres": c.postgres_dsn, "redis": c.redis_url}
    first = specs[0] if specs else "127.0.0.1:8461"
    kind = "unix" if first.startswith("unix:") else "inet"
    target = first.removeprefix("unix:")
    lines = [f"policy cache: {c.backend} {where.get(c.backend, '')}",
             f"socketmap on {', '.join(specs)}; metrics "
             + (f"http://{metrics}/metrics" if metrics else "off"),
             "Postfix main.cf:",
             f"  smtp_tls_policy_maps = socketmap:{kind}:{target}:{cfg.policyd.map_name}",
             "  smtp_dns_support_level = dnssec",
             "stop with Ctrl-C or SIGTERM (SIGHUP reloads the configuration)"]
    for line in lines:
        print(f"smtptls policyd: {line}", file=sys.stderr, flush=True)


def _query(cfg: config_mod.Config, key: str, as_json: bool) -> int:
    from smtptls.net.dns import DnsResolver
    from smtptls.services.policyd.decide import PolicyEngine
    from smtptls.store import open_policy_cache

    async def go() -> Any:
        cache = await open_policy_cache(cfg.cache)
        try:
            engine = PolicyEngine(cfg, dns=DnsResolver(cfg.dns), cache=cache)
            return await engine.explain(key)
        finally:
            await cache.close()

    try:
        explanation = asyncio.run(go())
    except SmtpTlsError as exc:
        if as_json:
            print_json({"key": key, "error": str(exc)})
        else:
            print(f"smtptls policyd query: {exc}", file=sys.stderr)
        return EXIT_ERROR
    data = explanation.to_dict()
    if as_json:
        print_json(data)
    else:
        _print_human(data)
    status = explanation.reply.status
    if status is ReplyStatus.OK:
        return EXIT_OK
    if status is ReplyStatus.NOTFOUND:
        return EXIT_NEGATIVE
    return EXIT_ERROR


def _print_human(d: dict[str, Any]) -> None:
    print(f"next hop   {d['key']}")
    facts = d.get("facts")
    if facts:
        nh = facts["nexthop"]
        kind = nh["kind"] + (f", port {nh['port']}" if nh["port"] else "")
        print(f"kind       {kind}")
        if nh["kind"] == "domain":
            if facts["mx_error"]:
                print(f"MX         lookup failed: {facts['mx_error']}")
            elif facts["null_mx"]:
                print("MX         null MX (RFC 7505): no mail accepted")
            else:
                implicit = " (no MX records: the domain itself)" if facts["implicit_mx"] else ""
                print(f"MX         DNSSEC {facts['mx_security']}{implicit}")
        for h in facts["hosts"]:
            print(f"  {h['preference']:>5} {h['host']:<48} TLSA {h['tlsa']}")
            for rec in h["tlsa_records"][:4]:
                print(f"        {rec[:90]}")
    sts = d.get("mta_sts")
    if sts:
        print(f"MTA-STS    {sts['outcome']}" + (f", record {sts['record']}" if sts["record"]
                                                 else ""))
        pol = sts.get("policy")
        if pol:
            print(f"  policy   mode {pol['mode']}, max_age {pol['max_age']}, "
                  f"mx {', '.join(pol['mx'])}")
        for name, err in (sts.get("errors") or {}).items():
            print(f"  {name} error: {err['message']}")
    for note in d.get("notes") or []:
        print(f"note       {note}")
    dec = d["decision"]
    print(f"answer     {d['reply']}")
    print(f"why        {dec['reason']}")
    if d.get("recheck_after") is not None:
        print(f"recheck    after {d['recheck_after']} s")
