"""Source: journald through ``journalctl --output=json --follow``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from smtptls.logs import get_logger
from smtptls.services.collector.ingest import LogIngest
from smtptls.services.collector.limits import MAX_PARTIAL

_log = get_logger("tlsrpt.collect")

class JournalFollower:
    """journald through ``journalctl --output=json --follow`` (mail facility), started
    with an argument list; restarted with back-off when it exits."""

    def __init__(self, ingest: LogIngest, *, argv: Sequence[str] | None = None) -> None:
        self.ingest = ingest
        self.argv = list(argv) if argv is not None else [
            "journalctl", "--output=json", "--follow", "--lines=0", "--no-pager",
            "SYSLOG_FACILITY=2"]
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.entries = 0

    async def _once(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            *self.argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            limit=MAX_PARTIAL)
        assert self._proc.stdout is not None
        batch: list[dict[str, Any]] = []
        while True:
            try:
                # with entries waiting, do not sit on them: hand them over after 0.2 s
                line = await asyncio.wait_for(self._proc.stdout.readline(),
                                              0.2 if batch else None)
            except TimeoutError:
                await self.ingest.journal_entries(batch)
                batch = []
                continue
            except (asyncio.LimitOverrunError, ValueError):
                continue  # an entry longer than the limit: skipped
            if not line:
                break
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                batch.append(entry)
                self.entries += 1
            if len(batch) >= 500:
                await self.ingest.journal_entries(batch)
                batch = []
        if batch:
            await self.ingest.journal_entries(batch)
        await self._proc.wait()

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._once()
                _log.warning("journalctl exited", code=self._proc.returncode if self._proc
                             else None)
            except OSError as exc:
                _log.error("cannot run journalctl", error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 5)
