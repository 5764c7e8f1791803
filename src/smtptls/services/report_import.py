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
IMAP is not built: fetch into a maildir (e.g. with fetchmail or mbsync) and import that.
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from smtptls.errors import ReportError
from smtptls.services.reports_server.intake import IntakeOutcome, Outcome, ReportIntake
from smtptls.store.reports_base import Channel

__all__ = ["ImportSummary", "import_paths", "iter_sources"]

MAX_FILES = 1_000_000  # files visited per import at most
MAX_DEPTH = 16  # directory recursion depth
MAX_MBOX = 4 * 1024**3  # bytes of one mbox file


@dataclass
class ImportSummary:
    """Counts of one import run; ``errors`` lists (source, reason) not imported at all."""

    sources: int = 0
    stored: int = 0
    duplicate: int = 0
    conflict: int = 0
    quarantined: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)
    outcomes: list[tuple[str, IntakeOutcome]] = field(default_factory=list)

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
    """One thing to import: ``kind`` is ``body`` or ``mail``; ``read`` gives the bytes."""

    name: str
    kind: str
    read: Callable[[], bytes]


def _read_capped(path: Path, cap: int) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(cap + 1)
    except OSError as exc:
        raise ReportError(f"cannot read: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise ReportError(f"larger than {cap} bytes")
    return data


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
        yield Source(str(path), "body", lambda: _read_capped(path, max_body))
        return
    if name.endswith((".eml", ".msg")):
        yield Source(str(path), "mail", lambda: _read_capped(path, max_message))
        return
    head = _head(path)
    if name.endswith(".mbox") or head.startswith(b"From "):
        yield from _mbox_sources(path, max_message)
        return
    if head[:2] == b"\x1f\x8b" or head.lstrip()[:1] in (b"{", b"["):
        yield Source(str(path), "body", lambda: _read_capped(path, max_body))
        return
    yield Source(str(path), "mail", lambda: _read_capped(path, max_message))


def _mbox_sources(path: Path, max_message: int) -> Iterator[Source]:
    try:
        if path.stat().st_size > MAX_MBOX:
            raise ReportError(f"mbox larger than {MAX_MBOX} bytes")
        box = mailbox.mbox(str(path), create=False)
        keys = list(box.iterkeys())
    except (OSError, mailbox.Error) as exc:
        raise ReportError(f"cannot read mbox: {exc}") from None
    for i, key in enumerate(keys):

        def read(key: str = key) -> bytes:
            fh = box.get_file(key)
            try:
                data = fh.read(max_message + 1)
            finally:
                fh.close()
            if len(data) > max_message:
                raise ReportError(f"message larger than {max_message} bytes")
            return data

        yield Source(f"{path}#{i + 1}", "mail", read)


def _maildir_sources(path: Path, max_message: int) -> Iterator[Source]:
    for sub in ("new", "cur"):
        try:
            entries = sorted((path / sub).iterdir())
        except OSError as exc:
            raise ReportError(f"cannot list {path / sub}: {exc.strerror or exc}") from None
        for entry in entries:
            if entry.is_file() and not entry.name.startswith("."):
                yield Source(str(entry), "mail",
                             lambda entry=entry: _read_capped(entry, max_message))


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


async def import_paths(
    paths: list[str | Path],
    intake: ReportIntake,
    *,
    max_body: int,
    verify_dkim: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ImportSummary:
    """Import everything under ``paths`` through ``intake``; StoreError propagates."""
    summary = ImportSummary()
    max_message = max_body * 2
    for item in iter_sources(list(paths), max_body=max_body, max_message=max_message):
        if isinstance(item, tuple):
            summary.errors.append(item)
            continue
        summary.sources += 1
        if progress:
            progress(item.name)
        try:
            data = item.read()
        except ReportError as exc:
            summary.errors.append((item.name, str(exc)))
            continue
        except (OSError, mailbox.Error) as exc:
            summary.errors.append((item.name, f"cannot read: {exc}"))
            continue
        if item.kind == "body":
            summary.add(item.name, await intake.submit_body(
                data, channel=Channel.IMPORT, remote=item.name))
        else:
            for outcome in await intake.submit_message(
                    data, channel=Channel.IMPORT, remote=item.name, verify_dkim=verify_dkim):
                summary.add(item.name, outcome)
    return summary
