"""``smtptls reports serve|import|list|summary|show|quarantine|fetch|alerts`` — TLSRPT intake."""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from smtptls import config as config_mod
from smtptls.cli._preflight import require_existing_db
from smtptls.cli.output import (
    EXIT_NEGATIVE,
    EXIT_OK,
    Formatter,
    cut,
    print_json,
    run_with_store,
)
from smtptls.config import Config
from smtptls.store.open import open_report_store
from smtptls.store.reports_base import (
    CSV_COLUMNS,
    ReportStore,
    parse_since,
    summary_csv_rows,
)

T = TypeVar("T")

TOKEN_ENV = "SMTPTLS_REPORTS_TOKEN"  # noqa: S105 - the variable name, not a token


def _config(args: argparse.Namespace) -> Config:
    return config_mod.load(getattr(args, "config", None))


def _store(args: argparse.Namespace, cfg: Config) -> ReportStore:
    overrides: dict[str, Any] = {}
    if getattr(args, "db", None):
        overrides["path"] = args.db
    return open_report_store(cfg.reports, **overrides)


def _with_store(args: argparse.Namespace, fn: Callable[[ReportStore], Awaitable[T]], *,
                read_only: bool = True) -> T:
    cfg = _config(args)
    if read_only and cfg.reports.backend == "sqlite":  # reading never creates a store
        require_existing_db(getattr(args, "db", None) or cfg.reports.sqlite_path,
                            "report store")
    return run_with_store(_store(args, cfg), fn)


# --- serve -------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from smtptls.services.reports_server.server import ServeOptions, serve

    cfg = _config(args)
    if args.db:
        cfg = dataclasses.replace(
            cfg, reports=dataclasses.replace(cfg.reports, sqlite_path=args.db))
    token = args.token or os.environ.get(TOKEN_ENV) or cfg.reports.token or None
    options = ServeOptions(
        listen=args.listen or cfg.reports.listen,
        smtp=args.smtp or cfg.reports.smtp_listen,
        lmtp=args.lmtp or cfg.reports.lmtp_listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=token,
        verify_dkim=not args.no_dkim,
        # --no-dkim verifies nothing, so it cannot require a signature either
        require_dkim=(args.require_dkim or cfg.reports.require_dkim)
        and not args.accept_unsigned and not args.no_dkim,
    )
    asyncio.run(serve(cfg, options, on_started=_announce))
    return EXIT_OK


def _announce(service: Any) -> None:
    """What ``reports serve`` listens on, once it does (stderr; logs say it too)."""
    def say(text: str) -> None:
        print(f"smtptls reports serve: {text}", file=sys.stderr, flush=True)

    o = service.options
    store = service.config.reports
    say("storing reports in " + (store.sqlite_path if store.backend == "sqlite"
                                 else f"{store.backend} {store.postgres_dsn}"))
    if o.listen and service.http_port:
        scheme = "https" if o.tls_cert and o.tls_key else "http"
        host = o.listen.rsplit(":", 1)[0] if ":" in o.listen else o.listen
        base = f"{scheme}://{host or '127.0.0.1'}:{service.http_port}"
        say(f"report intake (RFC 8460 HTTPS POST): {base}/v1/tlsrpt")
        say(f"dashboard: {base}/ (token {'set' if service.token else 'not set'})")
        say(f"metrics: {base}/metrics")
    for kind, port in (("SMTP", service.smtp_port), ("LMTP", service.lmtp_port)):
        spec = o.smtp if kind == "SMTP" else o.lmtp
        if spec and port:
            say(f"report mail intake ({kind}): {spec.rsplit(':', 1)[0]}:{port}")
    say("stop with Ctrl-C or SIGTERM")


# --- import ------------------------------------------------------------------------------


def _import(args: argparse.Namespace) -> int:
    import time

    from smtptls.errors import ConfigError
    from smtptls.services.report_import import (
        DEFAULT_BATCH,
        ImportOptions,
        default_workers,
        import_paths,
        start_parsers,
    )
    from smtptls.store.reports_base import StoreLimits

    cfg = _config(args)
    workers = args.workers if args.workers is not None else default_workers()
    batch = args.batch if args.batch is not None else DEFAULT_BATCH
    if workers < 1 or batch < 1:
        raise ConfigError("--workers and --batch take a number of at least 1")
    lookup = None
    if args.verify_dkim:
        from smtptls.net.dkim import dns_txt_lookup
        from smtptls.net.dns import DnsResolver

        lookup = dns_txt_lookup(DnsResolver(cfg.dns))
    # an operator's own import of stored mail: DKIM checked only on request (old keys
    # are often rotated away), and then recorded, not enforced
    options = ImportOptions(max_body=cfg.reports.max_body,
                            max_decompressed=cfg.reports.max_decompressed, workers=workers,
                            batch_size=batch, verify_dkim=args.verify_dkim,
                            dkim_lookup=lookup, limits=StoreLimits.from_config(cfg.reports))
    tty = sys.stderr.isatty()
    started = time.monotonic()

    def committed(outcomes: list[Any], summary: Any) -> None:
        # Printed only once the transaction holding them committed.
        if not args.json:
            for source, outcome in outcomes:
                what = outcome.report_id if outcome.report_id else outcome.reason
                print(f"{outcome.outcome!s:<12} {source}  {cut(str(what), 60)}")
            sys.stdout.flush()
        if tty:
            done = summary.stored + summary.duplicate + summary.conflict + summary.quarantined
            rate = done / max(time.monotonic() - started, 1e-6)
            print(f"\r\033[K{done} committed of {summary.sources} read ({rate:,.0f}/s)",
                  end="", file=sys.stderr, flush=True)

    # Parser processes start before the store's thread exists (so they may be forked).
    pool = start_parsers(options) if workers > 1 else None
    try:
        result = _with_store(args, lambda store: import_paths(
            args.paths, store, options, on_committed=committed, pool=pool), read_only=False)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if tty:
        print("\r\033[K", end="", file=sys.stderr)
    if args.json:
        out = result.to_dict()
        out["seconds"] = round(time.monotonic() - started, 3)
        print_json(out)
    else:
        for source, reason in result.errors:
            print(f"{'error':<12} {source}  {cut(reason, 60)}")
        print(f"{result.stored} stored, {result.duplicate} duplicate, "
              f"{result.conflict} conflict, {result.quarantined} quarantined, "
              f"{len(result.errors)} not readable")
    return EXIT_OK if not (result.quarantined or result.errors) else EXIT_NEGATIVE


# --- list / show / quarantine --------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    reports = _with_store(args, lambda s: s.list_reports(domain=args.domain, limit=args.limit))
    if args.json:
        print_json([r.to_dict() for r in reports])
        return EXIT_OK
    print(f"{'id':>5}  {'start':<10}  {'organization':<18} {'policy domains':<20} "
          f"{'ok':>8} {'failed':>7}  report-id")
    for r in reports:
        domains = ",".join(d or "-" for d in r.policy_domains)
        print(f"{r.pk:>5}  {r.start.date().isoformat():<10}  {cut(r.organization, 18):<18} "
              f"{cut(domains, 20):<20} {r.successful:>8} {r.failed:>7}  "
              f"{cut(r.report_id, 22)}{_conflict_mark(r)}")
    return EXIT_OK


def _conflict_mark(report: Any) -> str:
    if not report.conflict:
        return ""
    return " [conflict]" if report.counted else " [conflict, not counted]"


def _show(args: argparse.Namespace) -> int:
    async def find(store: ReportStore) -> Any:
        report = await store.get_report(args.report_id)
        if report is None and args.report_id.isdigit() and len(args.report_id) < 19:
            report = await store.get_report(int(args.report_id))
        return report

    report = _with_store(args, find)
    if report is None:
        if args.json:
            print_json({"error": "no such report", "report_id": args.report_id})
        else:
            print(f"no report {args.report_id!r}", file=sys.stderr)
        return EXIT_NEGATIVE
    if args.json:
        print_json(report.to_dict(full=True))
        return EXIT_OK
    d = report.to_dict()
    for key in ("id", "report_id", "organization", "start", "end", "received_at", "channel",
                "provenance", "dkim", "dkim_domain", "submitter"):
        print(f"{key:<14} {d[key] if d[key] is not None else '-'}")
    if report.conflict:
        others = ", ".join(str(pk) for pk in report.conflicts_with)
        print(f"{'conflict':<14} same report-id and organization as {others}; "
              f"{'counted' if report.counted else 'not counted'} in summaries")
    print(f"{'sessions':<14} {report.successful} successful, {report.failed} failed")
    for w in report.warnings:
        print(f"{'warning':<14} {cut(w, 84)}")
    for p in report.policies:
        print(f"\npolicy {p.policy_type} {p.policy_domain or '-'}: {p.successful} successful, "
              f"{p.failed} failed")
        for f in p.failures:
            print(f"  {f.result_type:<28} {f.failed_session_count:>7}  "
                  f"mx={f.receiving_mx_hostname or '-'} ip={f.receiving_ip or '-'} "
                  f"from={f.sending_mta_ip or '-'}")
    return EXIT_OK


def _quarantine(args: argparse.Namespace) -> int:
    if args.raw is not None:
        entry = _with_store(args, lambda s: s.get_quarantine(args.raw))
        if entry is None or entry.raw is None:
            print(f"no quarantine entry {args.raw}", file=sys.stderr)
            return EXIT_NEGATIVE
        sys.stdout.buffer.write(entry.raw)
        sys.stdout.flush()
        return EXIT_OK
    entries = _with_store(args, lambda s: s.list_quarantine(limit=args.limit))
    if args.json:
        print_json([q.to_dict() for q in entries])
        return EXIT_OK
    for q in entries:
        kept = "excerpt" if q.excerpt else "whole"
        print(f"{q.pk:>5}  {q.received_at.strftime('%Y-%m-%d %H:%M')}  {q.channel:<6} "
              f"{q.size:>9} {kept:<7}  {cut(q.remote or '-', 24):<24} {cut(q.reason, 32)}")
    if not entries:
        print("quarantine is empty")
    return EXIT_OK


# --- summary -----------------------------------------------------------------------------


def _summary(args: argparse.Namespace) -> int:
    since = parse_since(args.since, now=datetime.now(UTC)) if args.since else None
    summary = _with_store(args, lambda s: s.summary(domain=args.domain, since=since))
    if args.json:
        print_json(summary.to_dict())
        return EXIT_OK
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(summary_csv_rows(summary))
        return EXIT_OK
    scope = args.domain or "all policy domains"
    print(f"{scope}: {summary.reports} reports, {summary.successful} successful, "
          f"{summary.failed} failed sessions" + (f" since {since}" if since else ""))
    print(f"\n{'day':<10} {'reports':>7} {'successful':>11} {'failed':>8}  failures by type")
    for d in summary.days:
        kinds = ", ".join(f"{k} {v}" for k, v in d.by_result_type.items())
        print(f"{d.day.isoformat():<10} {d.reports:>7} {d.successful:>11} {d.failed:>8}  "
              f"{cut(kinds, 58)}")
    if summary.failures:
        print(f"\n{'result type':<28} {'receiving MX':<26} {'reporter':<18} "
              f"{'sending IP':<16} {'sessions':>8}")
        for rt, mx, org, ip, n in summary.failures[:50]:
            print(f"{cut(rt, 28):<28} {cut(mx or '-', 26):<26} {cut(org, 18):<18} "
                  f"{cut(ip or '-', 16):<16} {n:>8}")
    return EXIT_OK


# --- fetch (IMAP) ----------------------------------------------------------------------------


def _fetch(args: argparse.Namespace) -> int:
    from smtptls.net.dkim import dns_txt_lookup
    from smtptls.net.dns import DnsResolver
    from smtptls.services.reports_server.imap_fetch import fetch_reports, settings_from_config
    from smtptls.services.reports_server.intake import ReportIntake

    cfg = _config(args)
    imap = cfg.reports.imap
    if args.folder:
        imap = dataclasses.replace(imap, folder=args.folder)
    settings = settings_from_config(imap)

    async def run(store: ReportStore) -> Any:
        lookup = None if args.no_dkim else dns_txt_lookup(DnsResolver(cfg.dns))
        intake = ReportIntake(store, max_body=cfg.reports.max_body,
                              max_decompressed=cfg.reports.max_decompressed,
                              dkim_lookup=lookup,
                              require_dkim=cfg.reports.require_dkim and not args.no_dkim)
        return await fetch_reports(intake, settings)

    result = _with_store(args, run, read_only=False)
    if args.json:
        print_json(result.to_dict())
    else:
        print(f"{settings.where()}: {result.messages} messages, {result.stored} reports "
              f"stored, {result.duplicate} duplicates, {result.conflict} conflicts, "
              f"{result.quarantined} quarantined" + (f", {result.left} left for the next "
                                                     "run" if result.left else ""))
        for error in result.errors:
            print(f"error: {error}", file=sys.stderr)
    return EXIT_NEGATIVE if result.left else EXIT_OK


# --- alerts ------------------------------------------------------------------------------


def _alerts(args: argparse.Namespace) -> int:
    from smtptls.services.alerts import dispatcher_from_config
    from smtptls.services.reports_server.alert_rules import evaluate

    cfg = _config(args)

    async def run(store: Any) -> Any:
        return await evaluate(store, cfg.alerts, window=args.window)

    alerts = _with_store(args, run)
    if args.dry_run:
        if args.json:
            print_json({"window": args.window or cfg.alerts.window,
                        "alerts": [a.to_dict() for a in alerts]})
        else:
            for a in alerts:
                print(a.to_text() + "\n")
            print(f"{len(alerts)} alert(s) would fire (before deduplication)")
        return EXIT_NEGATIVE if alerts else EXIT_OK
    result = asyncio.run(dispatcher_from_config(cfg.alerts).dispatch(alerts))
    if args.json:
        print_json({"sent": [a.to_dict() for a in result.sent], "suppressed": result.suppressed,
                    "failed": [{"code": a.code, "domain": a.domain, "channel": c, "error": err}
                               for a, c, err in result.failed],
                    "cleared": list(result.cleared)})
    else:
        print(f"{len(result.sent)} sent, {result.suppressed} already sent, "
              f"{len(result.failed)} delivery failures, {len(result.cleared)} cleared")
    return EXIT_NEGATIVE if result.failed else EXIT_OK


# --- registration ----------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--db", metavar="PATH",
                   help="SQLite report store (default: reports.sqlite_path)")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable JSON output")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reports", help="receive, store and read TLSRPT reports (RFC 8460)",
        formatter_class=Formatter,
        description="TLSRPT intake for domain owners: an HTTPS and SMTP/LMTP receiver with a "
        "dashboard, and commands to import and read the stored reports.",
        epilog="examples:\n"
        "  smtptls reports serve --listen 127.0.0.1:8460 --smtp 127.0.0.1:2525\n"
        "  smtptls reports import ~/Maildir/.tlsrpt reports/*.json.gz\n"
        "  smtptls reports summary --domain example.com --since 30d --csv\n"
        "  smtptls reports show 1 --json\n"
        "  smtptls reports fetch                      # from the [reports.imap] mailbox\n"
        "  smtptls reports alerts --dry-run --window 7d")
    rs = p.add_subparsers(dest="reports_command", metavar="ACTION", required=True)

    s = rs.add_parser("serve", help="run the HTTPS/SMTP/LMTP intake and the dashboard",
                      formatter_class=Formatter,
                      epilog="examples:\n  smtptls reports serve --smtp 127.0.0.1:2525\n"
                      "  SMTPTLS_REPORTS_TOKEN=secret smtptls reports serve --listen "
                      "0.0.0.0:8460 \\\n      --tls-cert cert.pem --tls-key key.pem")
    _common(s, json_flag=False)
    s.add_argument("--listen", metavar="HOST:PORT",
                   help="HTTP(S) intake and dashboard (default reports.listen)")
    s.add_argument("--smtp", metavar="HOST:PORT", help="SMTP intake of report mail")
    s.add_argument("--lmtp", metavar="HOST:PORT", help="LMTP intake of report mail")
    s.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    s.add_argument("--tls-key", metavar="PEM", help="private key for --tls-cert")
    s.add_argument("--token", metavar="T",
                   help=f"dashboard token (default reports.token or ${TOKEN_ENV}); required "
                   "when listening beyond loopback")
    s.add_argument("--no-dkim", action="store_true", help="do not verify DKIM on report mail")
    s.add_argument("--require-dkim", action="store_true",
                   help="quarantine report mail whose DKIM signature does not pass "
                   "(the default, RFC 8460 §3)")
    s.add_argument("--accept-unsigned", action="store_true",
                   help="store report mail without a passing DKIM signature by its "
                   "submitter too (not RFC 8460 behaviour; reports.require_dkim = false)")
    s.set_defaults(func=_serve)

    i = rs.add_parser("import", help="import .json, .json.gz, .eml, maildirs and mbox files",
                      formatter_class=Formatter,
                      epilog="examples:\n  smtptls reports import report.json.gz\n"
                      "  smtptls reports import ~/Maildir/.tlsrpt --json\n"
                      "  smtptls reports import archive.mbox --workers 4\n"
                      "a report is printed (and counted) only once it is committed; an "
                      "interrupted\nimport run again stores the rest, the others are "
                      "duplicates\n"
                      "exit status: 0 all stored, 1 something quarantined or unreadable, "
                      "2 error")
    _common(i)
    i.add_argument("paths", nargs="+", metavar="PATH")
    i.add_argument("--verify-dkim", action="store_true",
                   help="verify DKIM of imported mail (needs DNS)")
    i.add_argument("--workers", type=int, metavar="N",
                   help="parser processes (default: one per CPU; 1 parses in-process)")
    i.add_argument("--batch", type=int, metavar="N",
                   help="reports per commit (default 200; a batch also commits after 0.5 s)")
    i.set_defaults(func=_import)

    ls = rs.add_parser("list", help="list stored reports, newest first",
                       formatter_class=Formatter,
                       epilog="example:\n  smtptls reports list --domain example.com --json")
    _common(ls)
    ls.add_argument("--domain", metavar="D", help="only reports about this policy domain")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(func=_list)

    sm = rs.add_parser("summary", help="daily sessions and failure breakdown",
                       formatter_class=Formatter,
                       epilog="examples:\n  smtptls reports summary --since 30d\n"
                       "  smtptls reports summary --domain example.com --csv > tlsrpt.csv")
    _common(sm, json_flag=False)
    sm.add_argument("--domain", metavar="D", help="one policy domain")
    sm.add_argument("--since", metavar="WHEN", help="30d, 12h, 2w or a date (2024-05-01)")
    fmt = sm.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON output")
    fmt.add_argument("--csv", action="store_true", help="CSV output")
    sm.set_defaults(func=_summary)

    sh = rs.add_parser("show", help="one report: by report-id or by its numeric id",
                       formatter_class=Formatter,
                       epilog="example:\n  smtptls reports show 2020-01-01T00:00:00Z_mx.example\n"
                       "exit status: 1 when no such report")
    _common(sh)
    sh.add_argument("report_id", metavar="REPORT_ID")
    sh.set_defaults(func=_show)

    f = rs.add_parser("fetch", aliases=["fetch-imap"],
                      help="fetch report mail from an IMAP mailbox ([reports.imap])",
                      formatter_class=Formatter,
                      epilog="examples:\n  smtptls reports fetch\n"
                      "  smtptls reports fetch --folder TLSRPT --json\n\n"
                      "IMAPS or STARTTLS with the certificate verified (reports.imap.ca_file "
                      "or the system store); each\nmessage is marked or moved only after its "
                      "reports are stored.")
    _common(f)
    f.add_argument("--folder", help="folder to read (default reports.imap.folder)")
    f.add_argument("--no-dkim", action="store_true",
                   help="do not verify DKIM (and so do not require it)")
    f.set_defaults(func=_fetch)

    al = rs.add_parser("alerts", help="the alerts the stored reports raise now ([alerts])",
                       formatter_class=Formatter,
                       epilog="examples:\n  smtptls reports alerts --dry-run\n"
                       "  smtptls reports alerts --dry-run --window 30d --json\n"
                       "  smtptls reports alerts          # send through [alerts] channels")
    _common(al)
    al.add_argument("--dry-run", action="store_true", help="show what would fire; send nothing")
    al.add_argument("--window", metavar="WINDOW",
                    help="24h, 7d, 30d or 90d (default alerts.window)")
    al.set_defaults(func=_alerts)

    q = rs.add_parser("quarantine", help="submissions that could not be read, with reasons",
                      formatter_class=Formatter,
                      epilog="examples:\n  smtptls reports quarantine --json\n"
                      "  smtptls reports quarantine --raw 3 > submission.bin")
    _common(q)
    q.add_argument("--raw", type=int, metavar="ID", help="write one entry's bytes to stdout")
    q.add_argument("--limit", type=int, default=100)
    q.set_defaults(func=_quarantine)

