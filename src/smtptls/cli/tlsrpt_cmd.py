"""``smtptls tlsrpt collect|send|results`` — TLSRPT for senders (RFC 8460).

``collect`` runs the collector (libtlsrpt socket, Postfix logs, journald, HTTP);
``send`` builds and delivers the reports of a day (one pass; ``--loop`` to keep going);
``results`` shows what the store holds and what happened to the deliveries.

JSON output (``--json``), stable:

- ``send``: ``{"runs": [{"day", "dry_run", "reports": [{"policy_domain", "report_id",
  "successful", "failed", "rua", "skipped", "dns_error", "gzip_bytes", "subject",
  "filename" [, "report"]}], "deliveries": [{"policy_domain", "report_id", "uri",
  "status", "attempted", "attempts", "detail", "next_attempt"}]}]}`` — one run for
  ``--day``, else yesterday's and the day before's (whose retries may still be due)
- ``results``: ``{"results": [{"day", "policy_domain", "policy_type", "successful",
  "failed", "failures": {result-type: count}}], "deliveries": [{"report_id", "uri",
  "day", "policy_domain", "status", "attempts", "created_at", "next_attempt",
  "last_attempt", "last_error"}]}``

Exit status: 0 ok; 1 ``send`` had a delivery fail (permanently or for now), or
``results`` found nothing; 2 error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from smtptls import config as config_mod
from smtptls.cli._preflight import require_existing_db
from smtptls.cli.output import (
    EXIT_NEGATIVE,
    EXIT_OK,
    Formatter,
    add_common,
    cut,
    print_json,
    run_with_store,
)
from smtptls.config import Config
from smtptls.errors import ConfigError
from smtptls.store.open import open_result_store
from smtptls.store.results_base import DeliveryStatus, ResultStore

T = TypeVar("T")


def _config(args: argparse.Namespace) -> Config:
    cfg = config_mod.load(getattr(args, "config", None))
    changes: dict[str, Any] = {}
    if getattr(args, "db", None):
        changes.update(backend="sqlite", sqlite_path=args.db)
    if changes:
        cfg = dataclasses.replace(cfg, tlsrpt=dataclasses.replace(cfg.tlsrpt, **changes))
    return cfg


def _with_store(cfg: Config, fn: Callable[[ResultStore], Awaitable[T]]) -> T:
    return run_with_store(open_result_store(cfg.tlsrpt), fn)


# --- collect -----------------------------------------------------------------------------------


def _collect(args: argparse.Namespace) -> int:
    from smtptls.services.collector import run_collector

    cfg = _config(args)
    changes: dict[str, Any] = {}
    if args.socket:
        changes["socket_path"] = args.socket
    if args.log:
        changes["log_files"] = tuple(args.log)
    if args.log_format:
        changes["log_format"] = args.log_format
    if args.journald:
        changes["journald"] = True
    if args.http:
        changes["http_listen"] = None if args.http == "off" else args.http
    if args.policy_source:
        changes["policy_source"] = args.policy_source
    if changes:
        cfg = dataclasses.replace(cfg, tlsrpt=dataclasses.replace(cfg.tlsrpt, **changes))
    t = cfg.tlsrpt
    missing = [f for f in t.log_files if not Path(f).is_file()]
    if missing and not args.wait:
        # a typo in a path would otherwise collect nothing, silently, forever
        raise ConfigError(f"log file {missing[0]} does not exist (--wait: wait for it to "
                          "appear)")

    async def started(service: Any) -> None:
        def say(text: str) -> None:
            print(f"smtptls tlsrpt collect: {text}", file=sys.stderr, flush=True)

        store = t.sqlite_path if t.backend == "sqlite" else f"{t.backend} {t.postgres_dsn}"
        say(f"storing results in {store}")
        for f in t.log_files:
            say(f"warning: log file {f} does not exist yet; following it once it appears"
                if f in missing else f"following log file {f}")
        if t.socket_path:
            say(f"libtlsrpt datagrams on {t.socket_path}")
        if t.journald:
            say("following journald")
        if t.http_listen:
            port = getattr(service, "http_port", None)
            host = t.http_listen.rsplit(":", 1)[0]
            base = f"http://{host}:{port or '?'}"
            say(f"results intake (POST JSON): {base}/v1/results "
                f"(token {'set' if t.http_token else 'not set'}); metrics: {base}/metrics")
        say("stop with Ctrl-C or SIGTERM")

    asyncio.run(run_collector(cfg, from_start=args.from_start, on_started=started))
    return EXIT_OK


# --- send ---------------------------------------------------------------------------------------


def _send(args: argparse.Namespace) -> int:
    from smtptls.net.dns import DnsResolver
    from smtptls.services.sender import ReportSender, identity_from_config, run_loop
    from smtptls.tlsrptsend.aggregate import parse_day

    cfg = _config(args)
    day = parse_day(args.day) if args.day else None
    # RFC 8460 §4.4, §5.3: a report identity we would not send with is a configuration
    # error before anything is read or sent (also with --dry-run)
    identity = identity_from_config(cfg.tlsrpt)
    if args.dry_run and cfg.tlsrpt.backend == "sqlite":  # a dry run writes nothing
        require_existing_db(cfg.tlsrpt.sqlite_path, "result store")

    async def run(store: ResultStore) -> Any:
        sender = ReportSender(cfg, store, dns=DnsResolver(cfg.dns), identity=identity)
        if args.loop:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await run_loop(sender, stop=stop)
            return None
        if day is not None:
            runs = [await sender.run_day(day, dry_run=args.dry_run, force=args.now)]
        else:
            # yesterday, and the day before: its deliveries may still be in their retry
            # period (first attempt after midnight, retries for about a day)
            runs = await sender.run_pending(days=2, dry_run=args.dry_run, force=args.now)
        return runs, sender.identity.submitter

    result = _with_store(cfg, run)
    if result is None:
        return EXIT_OK
    runs, submitter = result
    if args.json:
        print_json({"runs": [r.to_dict(dry_run=args.dry_run, submitter=submitter,
                                       with_report=args.report) for r in runs]})
    else:
        for summary in runs:
            _print_summary(summary, dry_run=args.dry_run, show_report=args.report)
    bad = [o for r in runs for o in r.outcomes
           if o.attempted and o.status is not DeliveryStatus.DELIVERED]
    return EXIT_NEGATIVE if bad else EXIT_OK


def _print_summary(summary: Any, *, dry_run: bool, show_report: bool) -> None:
    what = "would send" if dry_run else "reports"
    print(f"{what} for {summary.day.isoformat()} (UTC): {len(summary.planned)} policy domain(s)")
    for p in summary.planned:
        note = p.skipped or (f"rua lookup failed: {p.dns_error}" if p.dns_error else "")
        print(f"  {cut(p.domain, 40):<40} ok {p.report.total_successful:>8}  "
              f"failed {p.report.total_failed:>6}  {cut(note, 30)}")
        for uri in p.uris:
            print(f"      -> {cut(uri, 88)}")
        if show_report:
            print(p.report.to_json(indent=2))
    if summary.outcomes:
        print("deliveries:")
    for o in summary.outcomes:
        when = "" if o.next_attempt is None else \
            f" next {o.next_attempt.strftime('%Y-%m-%d %H:%M:%SZ')}"
        print(f"  {o.status!s:<10} {cut(o.uri, 50):<50} {cut(o.detail, 20)}{when}")


# --- results ------------------------------------------------------------------------------------


def _results(args: argparse.Namespace) -> int:
    from smtptls.tlsrptsend.aggregate import parse_day

    cfg = _config(args)
    day = parse_day(args.day) if args.day else None

    async def run(store: ResultStore) -> tuple[Any, Any]:
        rows = await store.summaries(day=day, domain=args.domain, limit=args.limit)
        deliveries = await store.deliveries(day=None if day is None else day.isoformat(),
                                            limit=args.limit) if args.deliveries else []
        return rows, deliveries

    if cfg.tlsrpt.backend == "sqlite":  # read-only: never create a store
        require_existing_db(cfg.tlsrpt.sqlite_path, "result store")
    rows, deliveries = _with_store(cfg, run)
    if args.domain:
        deliveries = [d for d in deliveries if d.policy_domain == args.domain.lower()]
    if args.json:
        out: dict[str, Any] = {"results": [r.to_dict() for r in rows]}
        if args.deliveries:
            out["deliveries"] = [d.to_dict() for d in deliveries]
        print_json(out)
    else:
        print(f"{'day':<10} {'policy domain':<34} {'type':<15} {'ok':>9} {'failed':>7}  "
              "failures")
        for r in rows:
            top = ", ".join(f"{k} {v}" for k, v in list(r.failures.items())[:2])
            print(f"{r.day:<10} {cut(r.policy_domain, 34):<34} {r.policy_type:<15} "
                  f"{r.successful:>9} {r.failed:>7}  {cut(top, 19)}")
        if args.deliveries:
            print("\ndeliveries:")
            for d in deliveries:
                print(f"  {d.day} {d.status!s:<10} {d.attempts:>2}x {cut(d.uri, 44):<44} "
                      f"{cut(d.last_error, 22)}")
    return EXIT_OK if rows or deliveries else EXIT_NEGATIVE


# --- registration -------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tlsrpt", help="collect TLS results and send TLSRPT reports (RFC 8460, sender side)",
        formatter_class=Formatter,
        description="TLSRPT for sending MTAs: collect one result per SMTP session (libtlsrpt "
        "datagrams, Postfix logs, HTTP, Python API) and send each policy domain a daily "
        "report over HTTPS or DKIM-signed mail.",
        epilog="examples:\n"
        "  smtptls tlsrpt collect --config smtptls.toml\n"
        "  smtptls tlsrpt collect --log-file /var/log/mail.log --socket /run/smtptls/tlsrpt.sock\n"
        "  smtptls tlsrpt send --dry-run\n"
        "  smtptls tlsrpt send --day 2024-05-01 --json\n"
        "  smtptls tlsrpt results --day 2024-05-01 --deliveries")
    ts = p.add_subparsers(dest="tlsrpt_command", metavar="ACTION", required=True)

    c = ts.add_parser("collect", help="run the result collector", formatter_class=Formatter,
                      epilog="examples:\n  smtptls tlsrpt collect --journald\n"
                      "  smtptls tlsrpt collect --socket /run/smtptls/tlsrpt.sock "
                      "--http 127.0.0.1:8462")
    add_common(c, json_flag=False)
    c.add_argument("--db", metavar="PATH", help="SQLite result store (default tlsrpt.sqlite_path)")
    c.add_argument("--socket", metavar="PATH", help="libtlsrpt datagram socket to listen on")
    c.add_argument("--log-file", metavar="FILE", action="append", dest="log",
                   help="Postfix log file to follow (repeatable)")
    c.add_argument("--log-format", choices=("postfix", "exim"),
                   help="what the --log-file files are: Postfix logs or Exim's main log "
                   "(default tlsrpt.log_format; docs/exim.md)")
    c.add_argument("--journald", action="store_true", help="follow journald (mail facility)")
    c.add_argument("--http", metavar="HOST:PORT", help="HTTP endpoint for results ('off': none)")
    c.add_argument("--policy-source", choices=("policyd", "cache", "none"),
                   help="where log-derived results get their policy (default "
                   "tlsrpt.policy_source)")
    c.add_argument("--from-start", action="store_true",
                   help="read a log file never read before from its start (default: "
                   "only new lines); a file with a stored read position resumes from it")
    c.add_argument("--wait", action="store_true",
                   help="start even if a log file does not exist yet, and follow it once it "
                   "appears (default: a missing log file is an error)")
    c.set_defaults(func=_collect)

    s = ts.add_parser("send", help="build and deliver the reports of a day",
                      formatter_class=Formatter,
                      epilog="examples:\n  smtptls tlsrpt send --dry-run --report\n"
                      "  smtptls tlsrpt send --day 2024-05-01 --now --json\n"
                      "  smtptls tlsrpt send --loop      # as a daemon\n"
                      "exit status: 0 all attempted deliveries succeeded (or none were due), "
                      "1 a delivery failed, 2 error")
    add_common(s)
    s.add_argument("--db", metavar="PATH", help="SQLite result store (default tlsrpt.sqlite_path)")
    s.add_argument("--day", metavar="YYYY-MM-DD",
                   help="UTC day to report (default: yesterday, and the day before for its "
                   "retries)")
    s.add_argument("--dry-run", action="store_true", help="show what would be sent; send nothing")
    s.add_argument("--now", action="store_true",
                   help="send now, ignoring the spreading schedule and retry back-off")
    s.add_argument("--report", action="store_true", help="include the report JSON in the output")
    s.add_argument("--loop", action="store_true",
                   help="keep running: send and retry as deliveries come due")
    s.set_defaults(func=_send)

    r = ts.add_parser("results", help="show stored results and deliveries",
                      formatter_class=Formatter,
                      epilog="examples:\n  smtptls tlsrpt results\n"
                      "  smtptls tlsrpt results --domain example.com --deliveries --json")
    add_common(r)
    r.add_argument("--db", metavar="PATH", help="SQLite result store (default tlsrpt.sqlite_path)")
    r.add_argument("--day", metavar="YYYY-MM-DD", help="one UTC day")
    r.add_argument("--domain", metavar="D", help="one policy domain")
    r.add_argument("--deliveries", action="store_true", help="also list report deliveries")
    r.add_argument("--limit", type=int, default=1000)
    r.set_defaults(func=_results)
