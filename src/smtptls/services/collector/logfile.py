"""Source: log files followed like ``tail -F``, with read positions committed with the
results their lines gave."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smtptls.logs import get_logger
from smtptls.services.collector.ingest import LogIngest
from smtptls.services.collector.limits import (
    COMPRESSED,
    MAX_CHUNKS,
    MAX_DIR_ENTRIES,
    MAX_PARTIAL,
    MAX_READ,
    MAX_SIBLINGS,
    RESUME_REPLAY,
    ROTATED_QUIET,
    TAIL_BYTES,
)
from smtptls.store.results_base import (
    Batch,
    LogPosition,
    ResultStore,
)

_log = get_logger("tlsrpt.collect")

def position_name(path: str | Path) -> str:
    """The name a followed log's read position is stored under: this host and the file's
    absolute path (several MTAs may write to one PostgreSQL store)."""
    return f"{socket.gethostname()}:{os.path.abspath(path)}"


def tail_digest(tail: bytes) -> str:
    """What identifies a read position's place in a file: SHA-256 of the bytes just
    before it (the end of the last line read, at most ``TAIL_BYTES``)."""
    return hashlib.sha256(tail).hexdigest() if tail else ""


def _tail_at(fd: int, offset: int) -> bytes:
    """The ``TAIL_BYTES`` bytes of a file just before ``offset`` (fewer near its start)."""
    n = min(offset, TAIL_BYTES)
    if n <= 0:
        return b""
    try:
        return os.pread(fd, n, offset - n)
    except OSError:
        return b""


class LogFollower:
    """Follows one log file like ``tail -F``, and remembers how far it read.

    - New lines as they are written, in steps of at most ``max_chunks`` reads of
      ``max_read`` bytes (``MAX_CHUNKS`` of ``MAX_READ`` unless given).
    - **Rotation** (another inode at the path): the old file is still read — a syslog
      daemon may go on writing to it for a while — until it has been quiet for
      ``rotate_quiet`` seconds (:data:`ROTATED_QUIET`); then the new file, from its start.
    - **Truncation** (``copytruncate``: the file is shorter than our position, or the
      bytes before our position changed): the rest of what was not read yet is taken
      from the copy, when a file next to it (``mail.log.1``, ``mail.log-20240501``, not
      compressed) holds the same bytes before our position; then the file from its start.
    - **Positions** (:meth:`resume`, with a store): each step's lines are handed over
      with the position they end at (device, inode, offset, :func:`tail_digest`), which
      the collector commits in the transaction of the results those lines gave. On
      start the stored position is found again — in the file at the path, or in the
      rotated file that has its inode — and up to :data:`RESUME_REPLAY` bytes before it
      are read again, only to rebuild the sessions still open there (what they complete
      was counted before the restart). Without a stored position reading starts at the
      end (``from_start``: at the start), and that position is stored at once.
    """

    def __init__(self, ingest: LogIngest, path: str | Path, *, poll: float = 0.25,
                 from_start: bool = False, name: str | None = None,
                 rotate_quiet: float = ROTATED_QUIET, max_read: int = MAX_READ,
                 max_chunks: int = MAX_CHUNKS) -> None:
        self.ingest = ingest
        self.path = Path(path)
        self.poll = poll
        self.from_start = from_start
        self.name = name or str(self.path)
        self.rotate_quiet = rotate_quiet
        if max_read < 1 or max_chunks < 1:
            raise ValueError("max_read and max_chunks must be at least 1")
        self.max_read = max_read
        self.max_chunks = max_chunks
        self._file: Any = None
        self._dev: int | None = None
        self._inode: int | None = None
        self._offset = 0  # just past the last complete line read
        self._tail = b""  # the bytes of the file just before _offset
        self._seen: tuple[int, int] | None = None  # (size, mtime) when last checked
        self._partial = b""
        self._leaving: float | None = None  # not the path's file: last time it gave data
        self._quiet = 0.0
        self._fresh = False  # a file appearing at the path is read from its start
        self._resumed = False
        self._handed: LogPosition | None = None
        self._task: asyncio.Task[None] | None = None
        self.lines = 0
        self.rotations = 0
        self.truncations = 0
        self.replayed = 0  # lines read again on resume

    # -- files ---------------------------------------------------------------------------------

    def _adopt(self, f: Any, offset: int | None) -> None:
        """Read ``f`` from ``offset`` (``None``: its end)."""
        if self._file is not None and self._file is not f:
            self._file.close()
        st = os.fstat(f.fileno())
        if offset is None:
            offset = st.st_size
        f.seek(offset)
        self._file, self._dev, self._inode = f, st.st_dev, st.st_ino
        self._offset = offset
        self._tail = _tail_at(f.fileno(), offset)
        self._seen = None
        self._partial = b""
        self._leaving = None

    def _open(self, at_end: bool) -> bool:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
        except OSError:
            return False
        self._adopt(f, None if at_end else 0)
        self._fresh = False
        return True

    def _find(self, match: Callable[[int, os.stat_result], bool]) -> Any:
        """An open file next to ours (its name starts with ours: what logrotate names a
        rotated file, not compressed) for which ``match(fd, stat)`` holds; newest first,
        at most ``MAX_SIBLINGS`` looked at."""
        base = self.path.name
        found: list[tuple[float, str]] = []
        try:
            with os.scandir(self.path.parent) as entries:
                for i, entry in enumerate(entries):
                    if i >= MAX_DIR_ENTRIES:
                        break
                    if entry.name != base and entry.name.startswith(base) \
                            and not entry.name.endswith(COMPRESSED) \
                            and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(OSError):
                            found.append((entry.stat().st_mtime, entry.path))
        except OSError:
            return None
        for _, name in sorted(found, reverse=True)[:MAX_SIBLINGS]:
            try:
                f = open(name, "rb")  # noqa: SIM115 - handed to _adopt
            except OSError:
                continue
            try:
                if match(f.fileno(), os.fstat(f.fileno())):
                    return f
            except OSError:
                pass
            f.close()
        return None

    def _holds(self, offset: int, digest: str, *, inode: tuple[int, int] | None = None
               ) -> Callable[[int, os.stat_result], bool]:
        """A :meth:`_find` test: the file has ``digest`` just before ``offset`` (and,
        with ``inode``, is that file; a position at 0 has only its inode to go by)."""
        def match(fd: int, st: os.stat_result) -> bool:
            if inode is not None and (st.st_dev, st.st_ino) != inode:
                return False
            if inode is None and not digest:
                return False
            return st.st_size >= offset and tail_digest(_tail_at(fd, offset)) == digest
        return match

    def _switch(self) -> None:
        """The old file is done: the path's file, from its start."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._leaving = None
        if not self._open(at_end=False):
            self._fresh = True  # not there yet: read from its start when it is

    def _truncated(self) -> None:
        self.truncations += 1
        here = (self._dev, self._inode)
        copy = None
        if self._tail:
            digest = tail_digest(self._tail)
            holds = self._holds(self._offset, digest)
            copy = self._find(lambda fd, st: (st.st_dev, st.st_ino) != here and holds(fd, st))
        if copy is not None:
            # copytruncate: what was not read yet is in the copy; then the file from 0
            _log.info("log truncated, reading the rest of its copy", path=str(self.path))
            self._adopt(copy, self._offset)
            self._leaving, self._quiet = time.monotonic(), 0.0
        else:
            _log.info("log truncated, reading it from its start", path=str(self.path))
            self._adopt(self._file, 0)

    def _check_truncated(self) -> bool:
        """Whether the file we read at the path is shorter than our position, or holds
        other bytes before it (truncated, and written again past it)."""
        if self._file is None:
            return False
        try:
            st = os.fstat(self._file.fileno())
        except OSError:
            return False
        if st.st_size < self._offset:
            return True
        seen = (st.st_size, st.st_mtime_ns)
        if seen == self._seen:
            return False
        self._seen = seen
        return bool(self._tail) and _tail_at(self._file.fileno(), self._offset) != self._tail

    # -- positions -----------------------------------------------------------------------------

    @property
    def position(self) -> LogPosition | None:
        """Where reading stands: just past the last complete line read."""
        if self._file is None or self._inode is None or self._dev is None:
            return None
        return LogPosition(self._dev, self._inode, self._offset, tail_digest(self._tail))

    async def resume(self, store: ResultStore) -> str:
        """Find the stored position again (see the class); returns how it was found:
        ``new`` (none stored), ``resumed``, ``rotated`` (in the rotated file),
        ``copy`` (truncated: in its copy), ``truncated`` or ``replaced`` (read from the
        start) or ``missing`` (no file yet)."""
        self._resumed = True
        stored = await store.log_position(self.name)
        if stored is None:
            if not self._open(at_end=not self.from_start):
                self._fresh = True
                return "missing"
            pos = self.position
            if pos is not None:
                await store.add_batch(Batch(positions={self.name: pos}))
                self._handed = pos
            return "new"
        how = self._locate(stored)
        self._handed = stored
        if how in ("resumed", "rotated", "copy"):
            self._replay()
        _log.info("log position", path=str(self.path), found=how, offset=self._offset,
                  replayed=self.replayed)
        return how

    def _locate(self, stored: LogPosition) -> str:
        try:
            st: os.stat_result | None = os.stat(self.path)
        except OSError:
            st = None
        inode = (stored.device, stored.inode)
        if st is not None and (st.st_dev, st.st_ino) == inode:
            try:
                f = open(self.path, "rb")  # noqa: SIM115 - kept open while following
            except OSError:
                f = None
            if f is not None:
                if self._holds(stored.offset, stored.line_digest, inode=inode)(
                        f.fileno(), os.fstat(f.fileno())):
                    self._adopt(f, stored.offset)
                    return "resumed"
                # truncated while we were down: the rest may be in its copy
                self.truncations += 1
                holds = self._holds(stored.offset, stored.line_digest)
                copy = self._find(lambda fd, s: (s.st_dev, s.st_ino) != inode and holds(fd, s))
                if copy is not None:
                    f.close()
                    self._adopt(copy, stored.offset)
                    self._leaving, self._quiet = time.monotonic(), 0.0
                    return "copy"
                self._adopt(f, 0)
                return "truncated"
        # another file at the path, or none: ours was rotated away (or copied)
        old = self._find(self._holds(stored.offset, stored.line_digest, inode=inode)) \
            or self._find(self._holds(stored.offset, stored.line_digest))
        if old is not None:
            self._adopt(old, stored.offset)
            self.rotations += 1
            self._leaving, self._quiet = time.monotonic(), self.rotate_quiet
            return "rotated"
        if stored.offset:
            _log.warning("the log file read before is gone: what was written to it after "
                         "the stored position is not counted", path=str(self.path))
        if self._open(at_end=False):
            return "replaced"
        self._fresh = True
        return "missing"

    def _replay(self) -> None:
        """Read the lines before the position again (at most ``RESUME_REPLAY`` bytes),
        to rebuild the sessions open there; their results are not counted again."""
        if self._file is None or self.ingest is None:
            return
        start = max(0, self._offset - RESUME_REPLAY)
        try:
            data = os.pread(self._file.fileno(), self._offset - start, start)
        except OSError:
            return
        if start:
            cut = data.find(b"\n")
            data = data[cut + 1:] if cut >= 0 else b""
        lines = data.decode("utf-8", "replace").split("\n")[:-1]
        self.replayed = len(lines)
        if lines:
            self.ingest.replay(lines)

    # -- reading -------------------------------------------------------------------------------

    def _read(self) -> tuple[list[str], bool]:
        """Complete lines of the next chunk, and whether the end of the file was hit."""
        if self._file is None:
            return [], True
        chunk = self._file.read(self.max_read)
        if not chunk:
            return [], True
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n")
        if end < 0:
            complete: list[str] = []
            self._partial = data
        else:
            # one decode and one split for the whole chunk: the same lines as decoding
            # each line (a newline byte is never part of a UTF-8 sequence)
            complete = data[:end].decode("utf-8", "replace").split("\n")
            self._partial = data[end + 1:]
        if len(self._partial) > MAX_PARTIAL:
            self._partial = b""  # a line this long is not Postfix's
        consumed = len(data) - len(self._partial)
        if consumed:
            self._offset += consumed
            piece = data[max(0, consumed - TAIL_BYTES):consumed]
            self._tail = piece if len(piece) == TAIL_BYTES else \
                (self._tail + piece)[-TAIL_BYTES:]
        self.lines += len(complete)
        return complete, False

    def poll_once(self) -> list[str]:
        """Lines available now (at most ``max_chunks`` reads, so a long backlog is taken
        in bounded steps), handling rotation and truncation once the end is reached."""
        if self._file is None:
            if not self._open(at_end=not (self.from_start or self._fresh)
                              and self._inode is None):
                return []
        if self._leaving is None and self._check_truncated():
            self._truncated()
        lines: list[str] = []
        got = False
        for _ in range(self.max_chunks):
            more, eof = self._read()
            lines += more
            if eof:
                break
            got = True
        else:
            return lines  # more to read: the caller comes back at once
        now = time.monotonic()
        if self._leaving is not None:
            # a rotated file: read while it is written to, then the path's new file
            if got:
                self._leaving = now
            elif now - self._leaving >= self._quiet:
                self._switch()
                lines += self._read()[0]
            return lines
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # rotated away, the new file not there yet: keep the old one
        if (st.st_dev, st.st_ino) != (self._dev, self._inode):
            # rotated: go on reading the old file until it is quiet
            self.rotations += 1
            self._leaving, self._quiet = now, self.rotate_quiet
            if self._quiet <= 0:
                self._switch()
                lines += self._read()[0]
        return lines

    async def step(self) -> bool:
        """One :meth:`poll_once`, its lines handed to the ingest (with the position they
        end at, once :meth:`resume` has run); then the event loop runs once, so the
        collector commits what this step gave while the next one is read (a backlog
        keeps both CPUs busy). False when there was nothing to read."""
        lines = self.poll_once()
        position = self.position if self._resumed else None
        if not lines and (position is None or position == self._handed):
            return False
        if position is not None:
            await self.ingest.lines(lines, (self.name, position))
            self._handed = position
        else:
            await self.ingest.lines(lines)
        await asyncio.sleep(0)
        return True

    async def run(self) -> None:
        while True:
            if not await self.step():
                await asyncio.sleep(self.poll)

    def start(self) -> None:
        if self._task is None:
            # position at the end now, so lines written after start() are read
            if self._file is None and not self.from_start and not self._resumed \
                    and not self._open(at_end=True):
                self._fresh = True
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._file is not None:
            self._file.close()
            self._file = None
