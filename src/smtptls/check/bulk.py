"""Bulk checks: many domains, concurrently, resumable, with a summary.

- :func:`parse_domain_lines` reads a domain list (one per line, ``#`` comments, the
  first comma- or white-space-separated field; duplicates dropped, invalid names
  counted);
- :func:`read_results` reads a JSON Lines results file written earlier, so a run can
  resume: domains already there are skipped and still counted in the summary;
- :func:`run_bulk` checks the rest with ``concurrency`` workers sharing one
  :class:`~smtptls.check.gather.Gatherer` (global connection semaphore, per-address
  limits, run-scoped memos), each domain under the gatherer's per-domain time limit;
- :func:`retryable` tells a domain whose check our own infrastructure failed (the
  resolver did not answer) from a finding about the domain; its results line says
  ``"retryable": true`` and a resumed run checks it again;
- :class:`BulkSummary` aggregates adoption (MTA-STS, modes, TLSRPT, DANE, DNSSEC) and
  the most frequent findings; its JSON schema is ``smtptls.check-summary/1``;
- :func:`parse_shard` and :func:`shard_of` split one list between N machines with no
  coordination: a domain belongs to shard ``1 + H(domain) mod N``, ``H`` the first 8
  bytes of the SHA-256 of its A-label form (the same on every machine and every run);
- a :class:`ResultSink` receives each results line: :class:`JsonlSink` (a file or
  standard output), or :class:`smtptls.store.check_results_postgres.PostgresCheckResults`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO, Any, Protocol

from smtptls.check.evaluate import evaluate
from smtptls.check.findings import Area, Finding, Severity
from smtptls.check.gather import Gatherer
from smtptls.check.report import CheckReport
from smtptls.errors import InvalidDomainError, SmtpTlsError
from smtptls.net.dns import normalize_domain

__all__ = ["SUMMARY_SCHEMA", "BulkSummary", "JsonlSink", "ResultSink", "in_shard",
           "parse_domain_lines", "parse_shard", "read_results", "report_line", "retryable",
           "run_bulk", "shard_of"]

SUMMARY_SCHEMA = "smtptls.check-summary/1"
MAX_LINE = 4096  # characters of one input or results line that are looked at
MAX_RESULT_LINE = 4 * 1024 * 1024
TOP_REASONS = 10
MAX_SHARDS = 65536  # machines sharing one list; far more than any scan needs
MAX_SHARD_TEXT = 16  # characters of a --shard value looked at ("65536/65536" is 11)
CHILD_BATCH = 50  # results lines a worker process sends to its parent at once
FLUSH_EVERY = 100  # results lines between flushes of a file sink


# --- shards -----------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` (1 ≤ K ≤ N ≤ 65536) as ``(K, N)``; :class:`SmtpTlsError` otherwise."""
    k_text, sep, n_text = text.strip()[:MAX_SHARD_TEXT].partition("/")
    if not sep or not k_text.isdecimal() or not n_text.isdecimal() \
            or not k_text.isascii() or not n_text.isascii():
        raise SmtpTlsError(f"shard must be K/N, e.g. 3/8, not {text[:40]!r}")
    k, n = int(k_text), int(n_text)
    if not 1 <= n <= MAX_SHARDS or not 1 <= k <= n:
        raise SmtpTlsError(f"shard {k}/{n}: need 1 <= K <= N <= {MAX_SHARDS}")
    return k, n


def shard_of(domain: str, n: int) -> int:
    """The shard (1..n) of a normalised domain: a stable hash, no coordination needed.

    SHA-256 rather than Python's ``hash``, which is salted per process.
    """
    digest = hashlib.sha256(domain.encode("ascii", "replace")).digest()
    return 1 + int.from_bytes(digest[:8], "big") % n


def in_shard(domains: Iterable[str], k: int, n: int) -> list[str]:
    """The domains of shard ``k`` of ``n``, in list order."""
    if n == 1:
        return list(domains)
    return [d for d in domains if shard_of(d, n) == k]


# --- where results go ---------------------------------------------------------------------


class ResultSink(Protocol):
    """Receives each results line as it is ready; ``flush`` makes them durable."""

    def add(self, domain: str, line: str, retryable: bool) -> None: ...

    def flush(self) -> None: ...


class JsonlSink:
    """JSON Lines into an open text file (or standard output), flushed every 100 lines."""

    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh
        self._pending = 0

    def add(self, domain: str, line: str, retryable: bool) -> None:
        self.fh.write(line + "\n")
        self._pending += 1
        if self._pending >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        self.fh.flush()
        self._pending = 0


@dataclass(slots=True)
class DomainList:
    domains: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    duplicates: int = 0


def parse_domain_lines(lines: Iterable[str], *, limit: int = 10_000_000) -> DomainList:
    """Domains from a list: blank lines and ``#`` comments skipped, first field used;
    single-label names (``localhost``, a header word) count as invalid.

    Never raises for content: unusable names land in ``invalid`` (at most 1000 kept).
    Raises :class:`SmtpTlsError` when more than ``limit`` domains are given.
    """
    out = DomainList()
    seen: set[str] = set()
    for raw in lines:
        if not isinstance(raw, str):
            raise SmtpTlsError("domain list lines must be text")
        line = raw[:MAX_LINE].split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        first = line.split()[0]
        try:
            name = normalize_domain(first)
            if "." not in name:
                raise InvalidDomainError("a mail domain has at least two labels")
        except InvalidDomainError:
            if len(out.invalid) < 1000:
                out.invalid.append(first[:100])
            continue
        if name in seen:
            out.duplicates += 1
            continue
        if len(out.domains) >= limit:
            raise SmtpTlsError(f"more than {limit} domains in the list")
        seen.add(name)
        out.domains.append(name)
    return out


def read_results(lines: Iterable[str]) -> tuple[list[CheckReport], int]:
    """Reports from a JSON Lines results file, and how many lines were unusable.

    A truncated last line (a run killed mid-write) is simply unusable: its domain is
    checked again.
    """
    reports: list[CheckReport] = []
    bad = 0
    for raw in lines:
        if not isinstance(raw, str):
            raise SmtpTlsError("results lines must be text")
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_RESULT_LINE:
            bad += 1
            continue
        try:
            reports.append(CheckReport.from_dict(json.loads(line)))
        except (ValueError, RecursionError, SmtpTlsError):
            bad += 1
    return reports, bad


@dataclass(slots=True)
class BulkSummary:
    """Counts over every report of a run (resumed ones included)."""

    domains: int = 0
    resumed: int = 0
    invalid: int = 0
    timed_out: int = 0
    with_error: int = 0
    with_warning: int = 0
    mta_sts_record: int = 0
    mta_sts_policy: int = 0
    modes: Counter[str] = field(default_factory=Counter)
    tlsrpt: int = 0
    dane: Counter[str] = field(default_factory=Counter)
    mx_dnssec: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    reason_text: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0
    checked_now: int = 0

    def add(self, report: CheckReport, *, resumed: bool = False) -> None:
        self.domains += 1
        self.resumed += int(resumed)
        self.timed_out += int(report.timed_out)
        worst = report.worst
        self.with_error += int(worst is Severity.ERROR)
        self.with_warning += int(worst is Severity.WARNING)
        a = report.adoption
        self.mta_sts_record += int(a.mta_sts_record)
        if a.mta_sts is not None:
            self.mta_sts_policy += 1
            self.modes[a.mta_sts] += 1
        self.tlsrpt += int(a.tlsrpt)
        self.dane[a.dane] += 1
        if a.mx_dnssec:
            self.mx_dnssec[a.mx_dnssec] += 1
        for code in {f.code for f in report.findings
                     if f.severity is not Severity.INFO and f.area is not Area.CHECK}:
            self.reasons[code] += 1
            if code not in self.reason_text and len(self.reason_text) < 1000:
                self.reason_text[code] = next(
                    f.message for f in report.findings if f.code == code)[:120]

    def merge(self, other: BulkSummary) -> None:
        """Add another process's counts (``elapsed`` is the caller's own)."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if f.name == "elapsed":
                continue
            if isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, dict):
                for code, text in theirs.items():
                    if code not in mine and len(mine) < 1000:
                        mine[code] = text
            else:
                setattr(self, f.name, mine + theirs)

    def _pct(self, n: int) -> float:
        return round(100.0 * n / self.domains, 1) if self.domains else 0.0

    def to_dict(self) -> dict[str, Any]:
        rate = self.checked_now / self.elapsed if self.elapsed > 0 else 0.0
        return {
            "schema": SUMMARY_SCHEMA,
            "domains": self.domains,
            "checked_now": self.checked_now,
            "resumed": self.resumed,
            "invalid": self.invalid,
            "timed_out": self.timed_out,
            "elapsed": round(self.elapsed, 3),
            "rate": round(rate, 1),
            "with_error": self.with_error,
            "with_warning": self.with_warning,
            "adoption": {
                "mta_sts_record": {"count": self.mta_sts_record,
                                   "percent": self._pct(self.mta_sts_record)},
                "mta_sts_policy": {"count": self.mta_sts_policy,
                                   "percent": self._pct(self.mta_sts_policy)},
                "mta_sts_modes": dict(sorted(self.modes.items())),
                "tlsrpt": {"count": self.tlsrpt, "percent": self._pct(self.tlsrpt)},
                "dane": {k: {"count": v, "percent": self._pct(v)}
                         for k, v in sorted(self.dane.items())},
                "mx_dnssec": dict(sorted(self.mx_dnssec.items())),
            },
            "top_failures": [{"code": c, "domains": n, "percent": self._pct(n),
                              "example": self.reason_text.get(c, "")}
                             for c, n in self.reasons.most_common(TOP_REASONS)],
        }

    def render(self) -> str:
        d = self.to_dict()
        a = d["adoption"]
        lines = [f"{self.domains} domain(s) ({self.checked_now} checked now in "
                 f"{self.elapsed:.1f} s, {d['rate']}/s; {self.resumed} resumed, "
                 f"{self.invalid} invalid, {self.timed_out} over the time limit)",
                 f"  with errors: {self.with_error} ({self._pct(self.with_error)}%), "
                 f"worst a warning: {self.with_warning} ({self._pct(self.with_warning)}%)",
                 f"  MTA-STS record: {a['mta_sts_record']['percent']}%   valid policy: "
                 f"{a['mta_sts_policy']['percent']}%   modes: "
                 + (", ".join(f"{k} {v}" for k, v in a["mta_sts_modes"].items()) or "-"),
                 f"  TLSRPT: {a['tlsrpt']['percent']}%   DANE: "
                 + ", ".join(f"{k} {v['percent']}%" for k, v in a["dane"].items())
                 + "   MX DNSSEC: "
                 + (", ".join(f"{k} {v}" for k, v in a["mx_dnssec"].items()) or "-")]
        if d["top_failures"]:
            lines.append("  top failures:")
            for t in d["top_failures"]:
                lines.append(f"    {t['domains']:>7} ({t['percent']:>5}%)  {t['code']}")
        return "\n".join(lines)


def retryable(report: CheckReport) -> bool:
    """The check of this domain failed on our side, not the domain's: the check could not
    run, or the resolver gave no usable answer for the MX lookup (timeout, refused,
    unreachable: DNSSEC ``indeterminate``). A SERVFAIL (``bogus``) is the domain's own
    DNSSEC failure (RFC 7672 §2.1.1), a finding like any other."""
    if report.sections.get("retryable") is True:
        return True
    if any(f.code == "check.failed" for f in report.findings):
        return True
    mx = report.sections.get("mx")
    lookup = mx.get("lookup") if isinstance(mx, dict) else None
    return isinstance(lookup, dict) and lookup.get("security") == "indeterminate" \
        and bool(lookup.get("error"))


def report_line(report: CheckReport, again: bool | None = None) -> str:
    """One results line: the report, marked ``"retryable": true`` when :func:`retryable`
    (``again``, when the caller has already asked)."""
    data = report.to_dict()
    if retryable(report) if again is None else again:
        data["retryable"] = True
    return json.dumps(data, separators=(",", ":"))


def _failure_report(domain: str, gatherer: Gatherer, exc: SmtpTlsError) -> CheckReport:
    f = Finding("check.failed", Severity.ERROR, Area.CHECK, domain,
                f"the check could not run: {exc}")
    return CheckReport(domain, gatherer._clock(), (f,))


async def run_bulk(domains: Iterable[str], gatherer: Gatherer, *, concurrency: int = 50,
                   out: ResultSink | None = None, summary: BulkSummary | None = None,
                   on_done: Callable[[str, bool], None] | None = None) -> BulkSummary:
    """Check ``domains`` with ``concurrency`` workers; each results line goes to ``out``.

    Each report is handed to the sink as soon as it is ready (a file sink flushes every
    few lines, and at the end), so an interrupted run loses at most the domains in
    flight. ``on_done(domain, retryable)`` is called after each.
    """
    if not 1 <= concurrency <= 10000:
        raise SmtpTlsError("concurrency must be between 1 and 10000")
    summary = summary or BulkSummary()
    started = time.monotonic()
    source: Iterator[str] = iter(domains)

    def record(report: CheckReport) -> None:
        summary.add(report)
        summary.checked_now += 1
        again = retryable(report)
        if out is not None:
            out.add(report.domain, report_line(report, again), again)
        if on_done is not None:
            on_done(report.domain, again)

    async def worker() -> None:
        for domain in source:  # one shared iterator: each domain taken once
            try:
                report = evaluate(await gatherer.gather(domain))
            except SmtpTlsError as exc:
                report = _failure_report(domain, gatherer, exc)
            record(report)

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        summary.elapsed += time.monotonic() - started
        if out is not None:
            out.flush()
    return summary


def open_results(path: Path) -> tuple[list[CheckReport], int]:
    """Read a results file for resuming (missing file: nothing done yet)."""
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return read_results(fh)
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise SmtpTlsError(f"cannot read {path}: {exc.strerror}") from None


# --- several processes ------------------------------------------------------------------


class _ToParent:
    """The sink of a worker process: batches of ``(domain, line, retryable)`` to the
    parent, so the parent writes them without decoding any report again."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.batch: list[tuple[str, str, bool]] = []

    def add(self, domain: str, line: str, retryable: bool) -> None:
        self.batch.append((domain, line, retryable))
        if len(self.batch) >= CHILD_BATCH:
            self.flush()

    def flush(self) -> None:
        if self.batch:
            self.conn.send(self.batch)
            self.batch = []


def _child(shard: list[str], options: Any, concurrency: int, conn: Any) -> None:
    """A worker process: check ``shard``, send results lines, then its summary."""
    import contextlib

    summary = BulkSummary()

    async def main() -> None:
        async with Gatherer(options) as g:
            await run_bulk(shard, g, concurrency=concurrency, out=_ToParent(conn),
                           summary=summary)

    try:
        asyncio.run(main())
        conn.send(summary)
    except KeyboardInterrupt:  # the parent reports the interruption
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.send(None)
            conn.close()


def run_bulk_processes(domains: list[str], options: Any, *, workers: int, concurrency: int,
                       out: ResultSink | None = None, summary: BulkSummary | None = None,
                       on_done: Callable[[str, bool], None] | None = None) -> BulkSummary:
    """Like :func:`run_bulk`, spread over ``workers`` processes (one gatherer each).

    The domain list is dealt round-robin; each process runs ``concurrency // workers``
    domains at once with its share of the connection limits and keeps its own summary,
    merged here at the end. This process passes the results lines to ``out`` and calls
    ``on_done``.
    """
    import dataclasses
    import multiprocessing
    from multiprocessing.connection import wait

    if not 1 <= workers <= 64:
        raise SmtpTlsError("workers must be between 1 and 64")
    summary = summary or BulkSummary()
    started = time.monotonic()
    per = dataclasses.replace(
        options, max_connections=max(1, options.max_connections // workers),
        max_dns_queries=max(1, options.max_dns_queries // workers))
    ctx = multiprocessing.get_context("fork")
    procs, conns = [], []
    for i in range(workers):
        part = domains[i::workers]
        if not part:
            continue
        parent_conn, child_conn = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(part, per, max(1, concurrency // workers),
                                             child_conn), daemon=True)
        p.start()
        child_conn.close()
        procs.append(p)
        conns.append(parent_conn)
    open_conns = list(conns)
    try:
        while open_conns:
            for conn in wait(open_conns):
                try:
                    batch = conn.recv()
                except EOFError:
                    batch = None
                if batch is None:
                    open_conns.remove(conn)
                    continue
                if isinstance(batch, BulkSummary):
                    summary.merge(batch)
                    continue
                for domain, line, again in batch:
                    if out is not None:
                        out.add(domain, line, again)
                    if on_done is not None:
                        on_done(domain, again)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        summary.elapsed += time.monotonic() - started
        if out is not None:
            out.flush()
    return summary
