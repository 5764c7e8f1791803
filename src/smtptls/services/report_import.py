"""``smtptls reports import``: load reports from files, directories, maildirs and mboxes.

What a path holds is decided by its name, then by its first bytes:

=====================  ==========================================================
``*.json``             one report, RFC 8460 §4 JSON
``*.json.gz``, ``*.gz``  one report, gzip (§5.3 ``application/tlsrpt+gzip``)
``*.eml``              one report mail (§5.3), DKIM optionally verified
``*.mbox``, or a file  an mbox mailbox, every message a report mail
starting ``From ``
a maildir              (a directory with ``cur/`` and ``new/``) every message
another directory      every file in it, recursively, by the rules above
=====================  ==========================================================

Each report is stored as on the network intake: a byte-identical one already stored is a
duplicate, a different one under a stored report-id and organization is kept as a
conflict; what does not parse is quarantined with the reason. Files over the size caps
are skipped and reported.
IMAP is not built: fetch into a maildir (e.g. with fetchmail or mbsync) and import that
(or use ``reports fetch``).

Bulk import is a pipeline: the sources are read here, parsed in worker processes
(``workers``; 1 parses in this process), and stored in **group commits**: up to
``batch_size`` reports, or what arrived within ``batch_seconds``, in one transaction
(one fsync, :meth:`ReportStore.add_reports`). A report is counted, and handed to
``on_committed`` to be printed, only after the transaction holding it committed, so an
import interrupted at any point (Ctrl-C, ``kill -9``, power loss) has stored at least
every report it said it stored, and running it again stores the rest: the reports
already stored are duplicates.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtptls.cpus import usable_cpus
from smtptls.errors import ReportError
from smtptls.services.reports_server.intake import (
    MAX_ATTACHMENTS,
    IntakeOutcome,
    Outcome,
    ReportIntake,
    error_kind,
    file_under_header_domain,
    stored_outcome,
)
from smtptls.store.reports_base import (
    Channel,
    DkimStatus,
    Intake,
    ReportRecord,
    ReportStore,
    StoreLimits,
)
from smtptls.store.reports_sql import PreparedReport, prepare_report
from smtptls.tlsrpt.mail import read_report_mail

if TYPE_CHECKING:  # DKIM and mbox code load only when an import needs them
    from smtptls.net.dkim import TxtLookup

__all__ = ["ImportOptions", "ImportSummary", "import_paths", "iter_sources"]

MAX_FILES = 1_000_000  # files visited per import at most
MAX_DEPTH = 16  # directory recursion depth
MAX_MBOX = 4 * 1024**3  # bytes of one mbox file
READ_STEP = 1024**2  # bytes per read once a file is longer than it said
#: Reports per group commit: an fsync costs about as much as storing a few hundred
#: small reports, so larger batches gain little and delay what the user sees.
DEFAULT_BATCH = 200
#: A batch is committed at the latest this long after its first report arrived.
DEFAULT_BATCH_SECONDS = 0.5
# Sources handed to a worker at once: the first chunks small (every worker starts at
# once, and an import of a few files is still spread), then up to CHUNK_SOURCES, which
# amortizes the hand-over (bench_report_import.py: 4.76x parsedmarc's rate with 32, 5.02x
# with 128).
FIRST_CHUNK_SOURCES = 16
CHUNK_SOURCES = 128
CHUNK_BYTES = 4 * 1024**2  # ... or fewer, when they are large
INFLIGHT_PER_WORKER = 2  # chunks queued per worker: bounds memory, keeps workers busy


@dataclass
class ImportSummary:
    """Counts of one import run; ``errors`` lists (source, reason) not imported at all."""

    sources: int = 0
    stored: int = 0
    duplicate: int = 0
    conflict: int = 0
    quarantined: int = 0
    # Left out of the repr: asyncio's runner writes the repr of its task, result and all,
    # when it puts back the SIGINT handler (a ValueError message it throws away).
    errors: list[tuple[str, str]] = field(default_factory=list, repr=False)
    outcomes: list[tuple[str, IntakeOutcome]] = field(default_factory=list, repr=False)

    def add(self, source: str, outcome: IntakeOutcome) -> None:
        self.outcomes.append((source, outcome))
        if outcome.outcome is Outcome.STORED:
            self.stored += 1
        elif outcome.outcome is Outcome.DUPLICATE:
            self.duplicate += 1
        elif outcome.outcome is Outcome.CONFLICT:
            self.conflict += 1
        else:
            self.quarantined += 1

    def to_dict(self) -> dict[str, object]:
        return {
            "sources": self.sources,
            "stored": self.stored,
            "duplicate": self.duplicate,
            "conflict": self.conflict,
            "quarantined": self.quarantined,
            "errors": [{"source": s, "reason": r} for s, r in self.errors],
            "items": [{"source": s, **o.to_dict()} for s, o in self.outcomes],
        }


@dataclass(frozen=True, slots=True)
class Source:
    """One thing to import: ``kind`` is ``body`` or ``mail``; ``read`` gives the bytes.

    A source that is a whole file also names it (``path``, at most ``cap`` bytes), so a
    parser process can read it itself.
    """

    name: str
    kind: str
    read: Callable[[], bytes]
    path: str | Path | None = None  # a maildir's messages: text (cheaper to hand over)
    cap: int = 0

    @classmethod
    def file(cls, path: str | Path, kind: str, cap: int) -> Source:
        return cls(str(path), kind, lambda: _read_capped(path, cap), path, cap)


def _read_capped(path: str | Path, cap: int) -> bytes:
    """The file's bytes, at most ``cap`` (more is an error); one read for a small file.

    The first read asks for the size ``fstat`` gives plus one byte (a read of ``cap``
    would allocate ``cap`` bytes for every file, however small), and reading goes on
    until the end of the file or past the cap, so a file that grows is still bounded.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            want = min(os.fstat(fd).st_size, cap) + 1
            chunks = [os.read(fd, want)]
            total = len(chunks[0])
            while chunks[-1] and total <= cap:
                chunks.append(os.read(fd, min(READ_STEP, cap + 1 - total)))
                total += len(chunks[-1])
        finally:
            os.close(fd)
    except OSError as exc:
        raise ReportError(f"cannot read: {exc.strerror or exc}") from None
    if total > cap:
        raise ReportError(f"larger than {cap} bytes")
    return b"".join(chunks)


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(8)
    except OSError:
        return b""


def _is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() and (path / "new").is_dir()


def _file_sources(path: Path, max_body: int, max_message: int) -> Iterator[Source]:
    name = path.name.lower()
    if name.endswith((".json", ".json.gz", ".gz")):
        yield Source.file(path, "body", max_body)
        return
    if name.endswith((".eml", ".msg")):
        yield Source.file(path, "mail", max_message)
        return
    head = _head(path)
    if name.endswith(".mbox") or head.startswith(b"From "):
        yield from _mbox_sources(path, max_message)
        return
    if head[:2] == b"\x1f\x8b" or head.lstrip()[:1] in (b"{", b"["):
        yield Source.file(path, "body", max_body)
        return
    yield Source.file(path, "mail", max_message)


def _mbox_sources(path: Path, max_message: int) -> Iterator[Source]:
    import mailbox

    try:
        if path.stat().st_size > MAX_MBOX:
            raise ReportError(f"mbox larger than {MAX_MBOX} bytes")
        box = mailbox.mbox(str(path), create=False)
        keys = list(box.iterkeys())
    except (OSError, mailbox.Error) as exc:
        raise ReportError(f"cannot read mbox: {exc}") from None
    for i, key in enumerate(keys):

        def read(key: str = key) -> bytes:
            try:
                fh = box.get_file(key)
                try:
                    data = fh.read(max_message + 1)
                finally:
                    fh.close()
            except (OSError, mailbox.Error) as exc:
                raise ReportError(f"cannot read: {exc}") from None
            if len(data) > max_message:
                raise ReportError(f"message larger than {max_message} bytes")
            return data

        yield Source(f"{path}#{i + 1}", "mail", read)


def _maildir_sources(path: Path, max_message: int) -> Iterator[Source]:
    for sub in ("new", "cur"):
        folder = path / sub
        try:
            # scandir: the entry's type comes with the listing, no stat per message
            with os.scandir(folder) as listing:
                names = sorted(e.name for e in listing
                               if not e.name.startswith(".") and e.is_file())
        except OSError as exc:
            raise ReportError(f"cannot list {folder}: {exc.strerror or exc}") from None
        prefix = os.path.join(folder, "")
        for name in names:
            yield Source.file(prefix + name, "mail", max_message)


def iter_sources(paths: list[str | Path], *, max_body: int, max_message: int
                 ) -> Iterator[Source | tuple[str, str]]:
    """Sources to import, or (path, reason) for paths that cannot be read at all."""
    visited = 0
    for raw in paths:
        root = Path(raw)
        if not root.exists():
            yield (str(root), "no such file or directory")
            continue
        if root.is_file():
            try:
                yield from _file_sources(root, max_body, max_message)
            except ReportError as exc:
                yield (str(root), str(exc))
            continue
        if _is_maildir(root):
            try:
                yield from _maildir_sources(root, max_message)
            except ReportError as exc:
                yield (str(root), str(exc))
            continue
        base_depth = len(root.parts)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            here = Path(dirpath)
            dirnames.sort()
            if len(here.parts) - base_depth >= MAX_DEPTH:
                dirnames.clear()
            maildirs = [d for d in dirnames if _is_maildir(here / d)]
            for d in maildirs:
                try:
                    yield from _maildir_sources(here / d, max_message)
                except ReportError as exc:
                    yield (str(here / d), str(exc))
            dirnames[:] = [d for d in dirnames if d not in maildirs and not d.startswith(".")]
            for fname in sorted(filenames):
                if fname.startswith(".") or fname.endswith((".md", ".txt")):
                    continue
                visited += 1
                if visited > MAX_FILES:
                    yield (str(root), f"stopped after {MAX_FILES} files")
                    return
                try:
                    yield from _file_sources(here / fname, max_body, max_message)
                except ReportError as exc:
                    yield (str(here / fname), str(exc))


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How an import runs; the size caps come from ``[reports]`` in the configuration."""

    max_body: int
    max_decompressed: int
    workers: int = 1  # parser processes; 1 parses in this process
    batch_size: int = DEFAULT_BATCH
    batch_seconds: float = DEFAULT_BATCH_SECONDS
    verify_dkim: bool = False
    dkim_lookup: TxtLookup | None = None  # needed for verify_dkim
    # the store's limits: parser processes then hand over the rows to insert, prepared
    limits: StoreLimits | None = None


def default_workers() -> int:
    """One parser process per CPU this process may run on."""
    return usable_cpus()


# --- parsing (pure, in worker processes) -----------------------------------------------

#: One parsed thing of a source: ("report", record) or ("quarantine", reason, kind).
Parsed = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ParsedSource:
    """What a worker made of one source: its reports and refusals, and two headers."""

    items: tuple[Parsed, ...]
    submitter: str | None = None
    error: str | None = None  # the file could not be read: nothing was parsed
    raw: bytes | None = None  # the bytes read by a worker, sent back to be quarantined


_PARSER: ReportIntake | None = None
_LIMITS: StoreLimits | None = None


def _init_worker(max_body: int, max_decompressed: int, limits: StoreLimits | None) -> None:
    global _PARSER, _LIMITS  # noqa: PLW0603 - one parser per worker process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _PARSER = _parser(max_body, max_decompressed)
    _LIMITS = limits


def _parser(max_body: int, max_decompressed: int) -> ReportIntake:
    # Parsing only: the store is never touched in a worker.
    return ReportIntake(None, max_body=max_body, max_decompressed=max_decompressed)  # type: ignore[arg-type]


def _parse_chunk(chunk: Sequence[tuple[str, bytes | str | Path, int]]) -> list[ParsedSource]:
    """Parse sources given as bytes, or as a file to read (at most ``cap`` bytes)."""
    assert _PARSER is not None
    out = []
    for kind, what, cap in chunk:
        if isinstance(what, bytes):
            out.append(_prepared(parse_source(kind, what, _PARSER)))
            continue
        try:
            data = _read_capped(what, cap)
        except ReportError as exc:
            out.append(ParsedSource((), error=str(exc)))
            continue
        parsed = _prepared(parse_source(kind, data, _PARSER))
        if any(item[0] == "quarantine" for item in parsed.items):
            parsed = dataclasses.replace(parsed, raw=data)
        out.append(parsed)
    return out


def _prepared(parsed: ParsedSource) -> ParsedSource:
    """The reports of ``parsed`` as the store rows to insert, under the store's limits."""
    if _LIMITS is None:
        return parsed
    items = tuple(("report", prepare_report(item[1], _LIMITS)) if item[0] == "report" else item
                  for item in parsed.items)
    return dataclasses.replace(parsed, items=items)


def parse_source(kind: str, data: bytes, parser: ReportIntake) -> ParsedSource:
    """Parse a ``body`` or ``mail`` source as :class:`ReportIntake` does on intake."""
    if kind == "body":
        return ParsedSource((_parse_report(data, parser, None),))
    try:
        mail = read_report_mail(data, strict=False, max_size=max(parser.max_message, len(data)))
    except ReportError as exc:
        return ParsedSource((("quarantine", str(exc), error_kind(exc)),))
    except Exception as exc:  # a parser defect must not lose the message
        return ParsedSource((("quarantine", f"parser failure: {type(exc).__name__}", "other"),))
    items = []
    for i, (filename, payload) in enumerate(mail.attachments[:MAX_ATTACHMENTS]):
        item = _parse_report(payload, parser, mail.report_domain)
        if item[0] == "quarantine":
            # Keep the whole message (its headers give the context), say which part.
            item = ("quarantine", f"attachment {i + 1} ({filename or 'no name'}): {item[1]}",
                    item[2])
        items.append(item)
    return ParsedSource(tuple(items), mail.submitter)


def _parse_report(body: bytes, parser: ReportIntake, header_domain: str | None) -> Parsed:
    try:
        record = parser.parse_body(body)
    except ReportError as exc:
        return ("quarantine", str(exc), error_kind(exc))
    except Exception as exc:  # a parser defect must not lose the submission
        what = f"parser failure: {type(exc).__name__}"
        return ("quarantine", what, error_kind(exc))
    if header_domain is not None:
        record = file_under_header_domain(record, header_domain)
    return ("report", record)


def start_parsers(options: ImportOptions) -> ProcessPoolExecutor:
    """Start ``options.workers`` parser processes; the caller shuts them down.

    Forked (fast: every module is already loaded) while this process runs one thread,
    so no lock another thread holds is copied; later, from a fresh forkserver process.
    """
    if threading.active_count() == 1:
        context = get_context("fork")
    else:
        context = get_context("forkserver")
        context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(options.workers, mp_context=context, initializer=_init_worker,
                               initargs=(options.max_body, options.max_decompressed,
                                         options.limits))
    pool.submit(int).result()  # a fork context starts every worker now, before any thread
    return pool


# --- the pipeline -----------------------------------------------------------------------


@dataclass
class _Pending:
    """One source read and handed to a parser, waiting for its result."""

    name: str
    kind: str
    data: bytes  # empty until read, when a worker reads the file
    path: str | Path | None = None
    cap: int = 0


@dataclass
class _Batch:
    """Parsed reports and refusals waiting for one group commit, in source order."""

    started: float = 0.0
    reports: list[tuple[ReportRecord | PreparedReport, Intake]] = field(default_factory=list)
    quarantines: list[tuple[bytes, str, Intake]] = field(default_factory=list)
    # (source, "report"|"quarantine", index into reports|quarantines, reason, kind)
    order: list[tuple[str, str, int, str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.order)


async def import_paths(
    paths: Sequence[str | Path],
    store: ReportStore,
    options: ImportOptions,
    *,
    on_committed: Callable[[list[tuple[str, IntakeOutcome]], ImportSummary], None] | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> ImportSummary:
    """Import everything under ``paths`` into ``store``; StoreError propagates.

    ``on_committed`` is called after every group commit with the outcomes it made
    durable (in source order) and the running summary. ``pool``: parser processes from
    :func:`start_parsers` (started early, they start faster); else they are started
    here when ``options.workers`` > 1, and stopped at the end.
    """
    stored_limits = getattr(store, "limits", None)
    if options.limits is not None and stored_limits != options.limits:
        # the parsers would prepare rows the store refuses: say it before any work
        raise ValueError(f"import prepared under {options.limits}, the store keeps "
                         f"{stored_limits}")
    summary = ImportSummary()
    parser = _parser(options.max_body, options.max_decompressed)
    sources = iter_sources(list(paths), max_body=options.max_body,
                           max_message=parser.max_message)
    own_pool = pool is None and options.workers > 1
    if own_pool:
        pool = start_parsers(options)
    loop = asyncio.get_running_loop()
    inflight: collections.deque[tuple[list[_Pending], asyncio.Future[list[ParsedSource]]]]
    inflight = collections.deque()
    batch = _Batch()

    writing: asyncio.Task[None] | None = None

    async def commit() -> None:
        # The store writes one batch while the next is parsed; commits stay in order.
        nonlocal batch, writing
        done, batch = batch, _Batch()
        if writing is not None:
            await writing  # its StoreError ends the import here
            writing = None
        if done:
            writing = asyncio.ensure_future(write(done))

    async def write(done: _Batch) -> None:
        added = await store.add_reports(done.reports) if done.reports else []
        kept = await store.add_quarantines(done.quarantines) if done.quarantines else []
        committed: list[tuple[str, IntakeOutcome]] = []
        for name, what, index, reason, kind in done.order:
            if what == "report":
                outcome = stored_outcome(added[index], done.reports[index][0].report_id)
            else:
                outcome = IntakeOutcome(Outcome.QUARANTINED, kept[index], reason=reason,
                                        kind=kind, too_large=kind == "too-large")
            summary.add(name, outcome)
            committed.append((name, outcome))
        if on_committed is not None:
            on_committed(committed, summary)

    async def take(pending: list[_Pending], parsed: list[ParsedSource]) -> None:
        for source, result in zip(pending, parsed, strict=True):
            if result.error is not None:
                summary.errors.append((source.name, result.error))
                continue
            if result.raw is not None:
                source.data = result.raw
            dkim, dkim_domain = DkimStatus.NOT_CHECKED, None
            if source.kind == "mail" and options.verify_dkim and options.dkim_lookup:
                from smtptls.net.dkim import verify_report_mail

                checked = await verify_report_mail(source.data, options.dkim_lookup)
                dkim, dkim_domain = checked.status, checked.domain
            intake = Intake(Channel.IMPORT, datetime.now(UTC), remote=source.name,
                            submitter=result.submitter, dkim=dkim, dkim_domain=dkim_domain)
            if not batch:
                batch.started = time.monotonic()
            for item in result.items:
                if item[0] == "report":
                    batch.order.append((source.name, "report", len(batch.reports), "", ""))
                    batch.reports.append((item[1], intake))
                else:
                    batch.order.append((source.name, "quarantine", len(batch.quarantines),
                                        item[1], item[2]))
                    batch.quarantines.append((source.data, item[1], intake))
            if len(batch.reports) >= options.batch_size or (
                    batch and time.monotonic() - batch.started >= options.batch_seconds):
                await commit()

    chunk_sources = FIRST_CHUNK_SOURCES

    def read_chunk() -> list[_Pending] | None:
        nonlocal chunk_sources
        chunk: list[_Pending] = []
        size = 0
        limit, chunk_sources = chunk_sources, min(CHUNK_SOURCES, 2 * chunk_sources)
        for item in sources:
            if isinstance(item, tuple):
                summary.errors.append(item)
                continue
            summary.sources += 1
            if pool is not None and item.path is not None and not options.verify_dkim:
                # read by the worker: this process only stores (DKIM is checked here, on
                # the bytes, so with --verify-dkim this process reads them)
                chunk.append(_Pending(item.name, item.kind, b"", item.path, item.cap))
                if len(chunk) >= limit:
                    return chunk
                continue
            try:
                data = item.read()
            except ReportError as exc:
                summary.errors.append((item.name, str(exc)))
                continue
            except OSError as exc:
                summary.errors.append((item.name, f"cannot read: {exc}"))
                continue
            chunk.append(_Pending(item.name, item.kind, data))
            size += len(data)
            if len(chunk) >= limit or size >= CHUNK_BYTES:
                return chunk
        return chunk or None

    def submit(chunk: list[_Pending]) -> asyncio.Future[list[ParsedSource]]:
        if pool is None:
            done: asyncio.Future[list[ParsedSource]] = loop.create_future()
            done.set_result([parse_source(p.kind, p.data, parser) for p in chunk])
            return done
        work = [(p.kind, p.path if p.path is not None else p.data, p.cap) for p in chunk]
        future: Future[list[ParsedSource]] = pool.submit(_parse_chunk, work)
        return asyncio.wrap_future(future)

    try:
        depth = INFLIGHT_PER_WORKER * max(1, options.workers) if pool else 1
        exhausted = False
        while True:
            while not exhausted and len(inflight) < depth:
                chunk = read_chunk()
                if chunk is None:
                    exhausted = True
                    break
                inflight.append((chunk, submit(chunk)))
            if not inflight:
                break
            chunk, parsed = inflight.popleft()
            await take(chunk, await parsed)
        await commit()
        await commit()  # waits for the last write
    finally:
        for _, parsed in inflight:
            parsed.cancel()
        if writing is not None and not writing.done():
            # Interrupted: let the write in flight finish (its batch is then stored, but
            # not reported, and a rerun finds it as duplicates).
            await asyncio.shield(writing)
        if own_pool and pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return summary
