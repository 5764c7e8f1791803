"""``smtptls check DOMAIN...`` and ``smtptls check --bulk FILE``: audit domains.

Exit status (docs/check.md): 0 every domain has no finding or only ``info`` ones;
1 some domain has a ``warning`` or an ``error``; 2 usage or internal error. In bulk
mode: 0 when the run completed (findings are in the results), 2 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from smtptls import config
from smtptls.check.bulk import (
    BulkSummary,
    JsonlSink,
    ResultSink,
    in_shard,
    open_results,
    parse_domain_lines,
    parse_shard,
    retryable,
    run_bulk,
    run_bulk_processes,
)
from smtptls.check.evaluate import evaluate
from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.check.render import render_report
from smtptls.check.report import CheckReport
from smtptls.cli._preflight import require_ca_file, require_domains, require_resolver
from smtptls.cli.output import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.errors import ConfigError, SmtpTlsError
from smtptls.store.check_results_postgres import PostgresCheckResults, is_postgres_url

MAX_LIST_BYTES = 256 * 1024 * 1024  # a domain list larger than 256 MiB is refused
# A bulk run's per-domain objects are nearly all freed by reference counting; the
# cyclic collector's default young generation (700 allocations) runs it every few
# domains. 10,000 keeps its memory bounded at a fraction of the cost.
BULK_GC_THRESHOLD = (10_000, 20, 100)

EPILOG = """\
examples:
  smtptls check example.com
  smtptls check example.com example.org --json
  smtptls check example.com --no-smtp --nameserver 127.0.0.1:53 --ca-file lab-ca.pem
  smtptls check --bulk domains.txt --out results.jsonl --concurrency 100 --no-smtp
  cut -d, -f2 top-1m.csv | smtptls check --bulk - --out results.jsonl --json
  smtptls check --bulk top-1m.txt --shard 3/8 --no-smtp --workers 2 \
      --out postgresql://scan@db.example/scans --run-id 2026-12

For each domain: the MX RRset (DNSSEC status), STARTTLS/TLS of every MX (version,
cipher, PKIX chain, names, expiry), MTA-STS (record, policy fetch with every RFC 8461
limit, MX coverage, max_age, mode), TLSRPT (record, rua reachability), DANE (TLSA per
MX, DNSSEC, live match, record advice, rollover safety) and DANE/MTA-STS consistency.
Each finding has a severity and the fix to publish.

exit status: 0 no finding above info; 1 a warning or an error finding (any domain);
  2 usage or internal error. --bulk: 0 when the run completed, 2 otherwise.
The --json schema "smtptls.check/1" (and "smtptls.check-summary/1" for --bulk --json)
is documented in docs/check.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="audit domains: MX, TLS, MTA-STS, TLSRPT, DANE",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Audit the mail transport security of domains and say "
                       "what to fix.")
    p.add_argument("domains", metavar="DOMAIN", nargs="*", help="domains to check")
    p.add_argument("--json", action="store_true",
                   help="JSON output (one report, or a list of reports; with --bulk: the "
                   "summary)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--nameserver", metavar="IP[:PORT]", action="append",
                   help="validating resolver to ask (repeatable; default: config, then "
                   "resolv.conf)")
    p.add_argument("--ca-file", metavar="FILE",
                   help="PEM trust store for HTTPS and MX certificates (default: system)")
    p.add_argument("--dnssec-probe", metavar="NAME",
                   help="signed name whose answer must carry the AD bit before the resolver "
                   "is trusted (default dns.dnssec_probe, '.'; '' skips the probe)")
    p.add_argument("--no-smtp", action="store_true", help="do not connect to MX hosts")
    p.add_argument("--no-rua-probe", action="store_true",
                   help="do not probe TLSRPT rua destinations")
    p.add_argument("--timeout", metavar="S", type=float, default=30.0,
                   help="time limit per network step (default 30)")
    p.add_argument("--domain-timeout", metavar="S", type=float, default=None,
                   help="time limit per domain (default 120, bulk 60)")
    p.add_argument("--port", type=int, default=25, help="SMTP port of the MX hosts")
    p.add_argument("--helo-name", metavar="NAME", help="EHLO name (default: this host's FQDN)")
    p.add_argument("--ipv6", action="store_true", help="also probe IPv6 addresses")
    p.add_argument("--brief", action="store_true", help="findings only, no facts overview")
    b = p.add_argument_group("bulk")
    b.add_argument("--bulk", metavar="FILE|-", help="check every domain listed in FILE "
                   "(one per line; '-' reads standard input)")
    b.add_argument("--concurrency", metavar="N", type=int, default=100,
                   help="domains checked at once (default 100)")
    b.add_argument("--max-connections", metavar="N", type=int, default=64,
                   help="open connections at once, all kinds (default 64)")
    b.add_argument("--per-host", metavar="N", type=int, default=2,
                   help="open SMTP connections per MX address (default 2)")
    b.add_argument("--out", metavar="FILE|URL", help="append one JSON report per line; "
                   "domains already in FILE are skipped (resume). A postgresql:// URL "
                   "stores one row per domain and run instead (resumable per shard)")
    b.add_argument("--shard", metavar="K/N", default="1/1",
                   help="check only shard K of N (a stable hash of each domain): N "
                   "machines given the same list split it with no coordination")
    b.add_argument("--run-id", metavar="ID",
                   help="with a postgresql:// --out: the run's name (default: a digest of "
                   "the domain list, the same on every machine; give a new one for a new "
                   "scan of the same list)")
    b.add_argument("--workers", metavar="N", type=int, default=1,
                   help="processes sharing the list (default 1; e.g. the number of cores)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace, bulk: bool) -> CheckOptions:
    cfg = config.load(args.config)
    dns_cfg = cfg.dns
    if args.nameserver:
        dns_cfg = dataclasses.replace(dns_cfg, nameservers=tuple(args.nameserver))
    if not 0 < args.timeout <= 600:
        raise ConfigError("--timeout must be between 0 and 600 seconds")
    dns_cfg = dataclasses.replace(dns_cfg, timeout=min(dns_cfg.timeout, args.timeout))
    helo = args.helo_name or socket.getfqdn()
    if "." not in helo or not helo.isascii():
        helo = "localhost"
    domain_timeout = args.domain_timeout or (60.0 if bulk else 120.0)
    if args.dnssec_probe is not None:
        dns_cfg = dataclasses.replace(dns_cfg, dnssec_probe=args.dnssec_probe)
    require_ca_file(args.ca_file or cfg.fetch.ca_file)
    return CheckOptions(dns=dns_cfg, ca_file=args.ca_file or cfg.fetch.ca_file,
                        smtp=not args.no_smtp, rua_probe=not args.no_rua_probe,
                        timeout=args.timeout, domain_timeout=domain_timeout,
                        smtp_port=args.port, helo_name=helo, ipv6=args.ipv6,
                        max_connections=args.max_connections,
                        per_host_connections=args.per_host, bulk_dns=bulk)


def run(args: argparse.Namespace) -> int:
    if args.bulk:
        if args.domains:
            raise ConfigError("give domains either as arguments or with --bulk, not both")
        return _bulk(args)
    if not args.domains:
        print("smtptls check: error: give at least one DOMAIN (or --bulk FILE)",
              file=sys.stderr)
        return EXIT_ERROR
    domains = require_domains(args.domains)
    options = _options(args, bulk=False)
    require_resolver(options.dns)  # an operator error, before anything is judged

    async def main() -> list[CheckReport]:
        async with Gatherer(options) as g:
            return [evaluate(await g.gather(d)) for d in domains]

    reports = asyncio.run(main())
    if args.json:
        docs = [r.to_dict() for r in reports]
        print_json(docs[0] if len(docs) == 1 else docs)
    else:
        print("\n\n".join(render_report(r, verbose=not args.brief) for r in reports))
    return EXIT_NEGATIVE if any(r.failed for r in reports) else EXIT_OK


def _read_list(name: str) -> list[str]:
    try:
        if name == "-":
            data = sys.stdin.read(MAX_LIST_BYTES + 1)
        else:
            with Path(name).open("r", encoding="utf-8", errors="replace") as fh:
                data = fh.read(MAX_LIST_BYTES + 1)
    except OSError as exc:
        raise SmtpTlsError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_LIST_BYTES:
        raise SmtpTlsError(f"{name}: domain list larger than {MAX_LIST_BYTES} bytes")
    return data.splitlines()


class _Progress:
    """A rich progress bar on stderr (rate and ETA), or nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.progress: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]:>7.1f}/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=Console(stderr=True), transient=False)
        self.task = self.progress.add_task("check", total=total, rate=0.0)

    def __enter__(self) -> _Progress:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self) -> None:
        if self.progress is None:
            return
        self.progress.advance(self.task)
        speed = self.progress.tasks[0].speed or 0.0
        self.progress.update(self.task, rate=speed)


def _list_run_id(domains: list[str]) -> str:
    """A run id every machine derives alike from the same list (before sharding)."""
    digest = hashlib.sha256("\n".join(domains).encode("ascii", "replace")).hexdigest()
    return f"list-{digest[:16]}"


@contextlib.contextmanager
def _bulk_collector() -> Iterator[None]:
    """For the run: what start-up built (modules, the parser, the options) lives for the
    whole run, so it is frozen (no collection walks it again, in this process or its
    forked workers) and the young generation is larger; both are put back after, so a
    caller running the CLI in process (tests, scripts) keeps its own settings."""
    threshold = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*BULK_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _bulk(args: argparse.Namespace) -> int:
    options = _options(args, bulk=True)
    k, n = parse_shard(args.shard)
    listing = parse_domain_lines(_read_list(args.bulk))
    require_resolver(options.dns)
    summary = BulkSummary(invalid=len(listing.invalid))
    todo = in_shard(listing.domains, k, n)
    to_db = args.out is not None and is_postgres_url(args.out)
    if args.run_id is not None and not to_db:
        raise ConfigError("--run-id needs a postgresql:// --out")
    out_path = Path(args.out) if args.out and not to_db else None
    wanted = set(todo)
    finished: set[str] = set()
    bad = 0
    store = None
    if to_db:
        store = PostgresCheckResults(args.out, run_id=args.run_id or _list_run_id(
            listing.domains), shard=f"{k}/{n}")
        store.open()
        rows = store.done()
    elif out_path is not None:
        done, bad = open_results(out_path)
        rows = ((r.domain, r) for r in done)
    else:
        rows = iter(())
    try:
        for domain, item in rows:
            if domain not in wanted or domain in finished:
                continue
            report = item if isinstance(item, CheckReport) else _stored(item)
            # a domain our infrastructure failed (retryable) is checked again
            if report is None or retryable(report):
                continue
            finished.add(domain)
            summary.add(report, resumed=True)
    except BaseException:
        if store is not None:
            store.close()
        raise
    todo = [d for d in todo if d not in finished]
    if bad:
        print(f"smtptls check: {bad} unreadable line(s) in {out_path} ignored "
              "(their domains are checked again)", file=sys.stderr)
    show = sys.stderr.isatty() and not args.quiet
    out_fh = None
    try:
        if out_path is not None:
            try:
                out_fh = out_path.open("a+", encoding="utf-8")
            except OSError as exc:
                raise SmtpTlsError(f"cannot write {out_path}: {exc.strerror}") from None
            if out_fh.tell() > 0:
                out_fh.seek(out_fh.tell() - 1)
                if out_fh.read(1) != "\n":
                    out_fh.write("\n")  # end a line cut short by an interrupted run
        sink: ResultSink | None
        if store is not None:
            sink = store
        elif out_fh is not None:
            sink = JsonlSink(out_fh)
        else:
            sink = None if args.json else JsonlSink(sys.stdout)
        failed_here: list[str] = []

        def done(domain: str, again: bool) -> None:
            if again:
                failed_here.append(domain)
            progress.advance()

        async def main() -> BulkSummary:
            async with Gatherer(options) as g:
                return await run_bulk(todo, g, concurrency=args.concurrency, out=sink,
                                      summary=summary, on_done=done)

        with _bulk_collector(), _Progress(len(todo), show) as progress:
            if args.workers > 1:
                run_bulk_processes(todo, options, workers=args.workers,
                                   concurrency=args.concurrency, out=sink, summary=summary,
                                   on_done=done)
            else:
                asyncio.run(main())
    finally:
        if out_fh is not None:
            out_fh.close()
        if store is not None:
            store.close()
    if args.json:
        print_json(summary.to_dict())
    elif not args.quiet or args.out is not None:
        print(summary.render(), file=sys.stderr if args.out is None else sys.stdout)
    if failed_here:
        again = "run again with the same --out to retry them" if args.out else "check " \
            "them again"
        print(f"smtptls check: error: {len(failed_here)} domain(s) not checked because the "
              f"resolver gave no answer (e.g. {failed_here[0]}); {again}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _stored(text: str) -> CheckReport | None:
    """A report read back from the database (one that no longer reads is checked again)."""
    try:
        return CheckReport.from_dict(json.loads(text))
    except (ValueError, RecursionError, SmtpTlsError):
        return None
