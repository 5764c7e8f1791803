"""Report parsing in worker processes, so the event loop only does HTTP, TLS and storing.

``reports serve`` runs one event loop; decompressing, decoding and checking a report
(RFC 8460 §4) and building its store record is a good part of what it spends per
report. :class:`ParsePool` runs ``[reports] parse_workers`` processes (this module run
with ``python -m``), each a loop over its standard input: a request frame in, a result
frame out, in order. The parse is :func:`~.intake.parse_submission`, the same function
the in-process intake calls, so every rule (size caps, RFC 8460 checks, the record) has
one place; the record comes back pickled and goes to the group committer like any
other, so a sender is still answered only after the commit that holds its report.

Frames: request ``>III`` (body length, ``max_body``, ``max_decompressed``) then the
body; answer ``>I`` (length) then the pickle of ``(True, record)`` or ``(False,
exception)``; a worker's first answer is empty (ready). Requests are pipelined (a
worker's answers come back in its order), each to the worker with the fewest waiting;
the requests of one loop iteration go in one write per worker, and a worker answers
what one read brought in one write (at most ANSWER_BATCH).

* Only bodies the intake would parse on the loop come here (at most
  ``INLINE_PARSE_MAX`` bytes, decompressing to at most as many), so a frame is small
  and a worker's memory bounded; larger reports keep the bounded thread path.
* A worker that dies (killed, out of memory) takes no report with it: nothing it held
  was acknowledged, and each request it held is sent once more, to another worker (the
  one started in its place when none is ready); a request whose second worker dies too
  is failed with :class:`ParseWorkerDied` (the intake quarantines it as a parser
  failure, with the bytes received).
* A worker says when it is ready (an empty answer, once its imports are done); until
  one is, and when none can be started (MAX_FAILED_STARTS in a row end before they are
  ready), :meth:`ParsePool.parse` raises :class:`ParsePoolUnavailable` and the intake
  parses on the loop: the server goes on.
* Workers run in a process group of their own (a terminal's Ctrl-C reaches the server
  only) and ignore SIGINT and SIGTERM (systemd's stop reaches every process of the
  service): they end when their input closes, once the server has answered every
  request (:meth:`ParsePool.close`), or when the server is gone.
* Requests are written without waiting for the pipe: what is queued is bounded by the
  bodies the server holds (``[reports] max_inflight``).
"""

from __future__ import annotations

import asyncio
import collections
import os
import pickle
import signal
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from smtptls.cpus import usable_cpus
from smtptls.logs import get_logger

if TYPE_CHECKING:  # a worker imports the store's record with the intake, signals ignored
    from smtptls.store.reports_base import ReportRecord

__all__ = ["ParsePool", "ParsePoolUnavailable", "ParseWorkerDied", "default_workers"]

_log = get_logger("reports.parse")

_REQUEST = struct.Struct(">III")
_ANSWER = struct.Struct(">I")
#: An answer longer than this is a worker defect (a record of a body of at most 64 KiB
#: decompressed pickles to a few times that): the worker is ended, not read further.
MAX_ANSWER = 16 * 1024 * 1024
#: A request longer than this is a server defect (bodies sent are at most 64 KiB).
MAX_REQUEST = 16 * 1024 * 1024
#: Bytes a worker reads from its input at once (many pipelined requests).
WORKER_READ = 1024 * 1024
#: Answers a worker writes at once at most (the first waits for no more than these).
ANSWER_BATCH = 8
#: How many times a request is sent to a worker at most (the second after a death).
ATTEMPTS = 2
#: Seconds a closing worker has to finish before it is killed.
CLOSE_TIMEOUT = 10.0
#: Seconds the server waits for its workers to be ready when it starts.
START_TIMEOUT = 30.0
#: Workers in a row that end before they are ready (a broken installation, no memory):
#: no more are started, and the server parses in process.
MAX_FAILED_STARTS = 3


class ParsePoolUnavailable(Exception):
    """No worker is running: parse in the server process."""


class ParseWorkerDied(Exception):
    """The workers parsing this report died (twice): it is treated as a parser failure."""


def default_workers() -> int:
    """One fewer than the CPUs this process may run on (the event loop keeps one)."""
    return usable_cpus() - 1


@dataclass(slots=True)
class _Job:
    body: bytes
    max_body: int
    max_decompressed: int
    future: asyncio.Future[ReportRecord]
    attempts: int = 0


@dataclass(slots=True)
class _Worker:
    proc: asyncio.subprocess.Process
    started: asyncio.Future[None]  # done once it is ready, or has ended
    waiting: collections.deque[_Job] = field(default_factory=collections.deque)
    outbox: list[bytes] = field(default_factory=list)  # requests not written yet
    reader: asyncio.Task[None] | None = None
    alive: bool = True
    ready: bool = False  # it said so (imports done): requests go to it


class ParsePool:
    """``workers`` parse processes; :meth:`start`, :meth:`parse`, :meth:`close`.

    ``command`` is the worker's command line (default: this module, by the server's
    interpreter)."""

    def __init__(self, workers: int, *, command: Sequence[str] | None = None) -> None:
        self.size = max(0, int(workers))
        self.command = tuple(command) if command else (sys.executable, "-m", __name__)
        self._workers: list[_Worker] = []
        self._closing = False
        self._spawning: set[asyncio.Task[None]] = set()
        self._retry: collections.deque[_Job] = collections.deque()  # for the next worker
        self._flushing = False  # a flush of the outboxes is scheduled
        self._failed_starts = 0  # workers in a row that ended before they were ready
        self.started = 0  # worker processes started (replacements included)
        self.deaths = 0  # workers that ended without being asked to

    @property
    def processes(self) -> list[asyncio.subprocess.Process]:
        """The running workers (ready or starting)."""
        return [w.proc for w in self._workers if w.alive]

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.processes]

    @property
    def ready(self) -> int:
        """Workers that take requests."""
        return sum(w.alive and w.ready for w in self._workers)

    @property
    def waiting(self) -> int:
        """Requests sent to a worker and not answered yet, or waiting for one to start."""
        return sum(len(w.waiting) for w in self._workers if w.alive) + len(self._retry)

    async def start(self) -> None:
        """Start the workers and wait (at most START_TIMEOUT) until they are ready;
        until one is, the intake parses in the server."""
        for _ in range(self.size):
            await self._spawn()
        if self._workers:
            await asyncio.wait([w.started for w in self._workers], timeout=START_TIMEOUT)
        if self.size:
            _log.info("parse workers started", workers=self.size, ready=self.ready,
                      pids=self.pids)

    async def parse(self, body: bytes, *, max_body: int, max_decompressed: int
                    ) -> ReportRecord:
        """The record of ``body`` (what :func:`~.intake.parse_submission` returns or
        raises), parsed by a worker; :class:`ParsePoolUnavailable` when none is ready."""
        if self._closing or not self.ready:
            raise ParsePoolUnavailable
        job = _Job(body, max_body, max_decompressed,
                   asyncio.get_running_loop().create_future())
        self._send(job)
        return await job.future

    async def close(self) -> None:
        """End every worker once it has answered what it holds (killed past
        CLOSE_TIMEOUT); requests still waiting then fail with ParsePoolUnavailable."""
        self._closing = True
        self._flush()
        for task in list(self._spawning):
            task.cancel()
        for w in self._workers:
            if w.alive and w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in self._workers:
            try:
                await asyncio.wait_for(w.proc.wait(), CLOSE_TIMEOUT)
            except TimeoutError:
                _log.warning("parse worker did not end, killing it", pid=w.proc.pid)
                w.proc.kill()
                await w.proc.wait()
            if w.reader is not None:
                await asyncio.gather(w.reader, return_exceptions=True)
        self._give_up_retries(always=True)
        self._workers.clear()

    # --- workers -------------------------------------------------------------------------

    async def _spawn(self) -> None:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=MAX_ANSWER, process_group=0)
        except OSError as exc:
            self._failed_starts += 1
            _log.error("cannot start a parse worker", error=str(exc))
            return
        worker = _Worker(proc, asyncio.get_running_loop().create_future())
        self._workers = [w for w in self._workers if w.alive] + [worker]
        self.started += 1
        worker.reader = asyncio.create_task(self._read(worker), name="reports-parse-worker")

    def _send(self, job: _Job) -> None:
        ready = [w for w in self._workers if w.alive and w.ready]
        if not ready:
            if not self._closing and self._starting():
                self._retry.append(job)  # for the worker about to be ready
            else:
                _fail(job, ParsePoolUnavailable())
            return
        worker = min(ready, key=lambda w: len(w.waiting))
        job.attempts += 1
        worker.waiting.append(job)
        worker.outbox.append(_REQUEST.pack(len(job.body), job.max_body, job.max_decompressed))
        worker.outbox.append(job.body)
        if not self._flushing:  # what this loop iteration sends goes in one write
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        for w in self._workers:
            if w.alive and w.outbox and w.proc.stdin is not None:
                w.proc.stdin.write(b"".join(w.outbox))
            w.outbox.clear()

    def _starting(self) -> bool:
        return bool(self._spawning) or any(w.alive and not w.ready for w in self._workers)

    async def _read(self, worker: _Worker) -> None:
        out = worker.proc.stdout
        assert out is not None
        try:
            (size,) = _ANSWER.unpack(await out.readexactly(_ANSWER.size))
            if size != 0:
                raise ValueError(f"a first answer of {size} bytes, not ready")
            worker.ready = True
            self._failed_starts = 0
            worker.started.set_result(None)
            while self._retry and not self._closing:
                self._send(self._retry.popleft())
            while True:
                (size,) = _ANSWER.unpack(await out.readexactly(_ANSWER.size))
                if not 0 < size <= MAX_ANSWER:
                    raise ValueError(f"answer of {size} bytes")
                # our own child wrote it, from a body it parsed: not untrusted data
                ok, value = pickle.loads(await out.readexactly(size))  # noqa: S301
                job = worker.waiting.popleft()
                if job.future.done():  # the caller has gone (client disconnected)
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)
        except asyncio.CancelledError:
            self._lost(worker, None)
            raise
        except Exception as exc:  # noqa: BLE001 - ended, or an answer it should not send
            self._lost(worker, exc)

    def _lost(self, worker: _Worker, exc: BaseException | None) -> None:
        was_ready, worker.alive, worker.ready = worker.ready, False, False
        if not worker.started.done():
            worker.started.set_result(None)
        if worker.proc.returncode is None and not self._closing:  # a bad answer: ended
            try:
                worker.proc.kill()
            except ProcessLookupError:
                pass
        held = list(worker.waiting)
        worker.waiting.clear()
        worker.outbox.clear()
        if self._closing and not held:
            return  # asked to end
        self.deaths += 1
        if not was_ready:
            self._failed_starts += 1
        _log.warning("parse worker ended", pid=worker.proc.pid, requests=len(held),
                     ready=was_ready, error=str(exc) if exc else "")
        if not self._closing:
            if self._failed_starts < MAX_FAILED_STARTS:
                task = asyncio.create_task(self._spawn(), name="reports-parse-spawn")
                self._spawning.add(task)
                task.add_done_callback(self._spawned)
            else:
                _log.error("parse workers do not start, parsing in the server",
                           failed=self._failed_starts)
        for job in held:
            if job.future.done():
                continue
            if job.attempts >= ATTEMPTS:
                _fail(job, ParseWorkerDied(f"{job.attempts} parse workers died on it"))
            else:
                self._send(job)
        self._give_up_retries()

    def _spawned(self, task: asyncio.Task[None]) -> None:
        self._spawning.discard(task)
        self._give_up_retries()

    def _give_up_retries(self, *, always: bool = False) -> None:
        """Requests waiting for a worker when none is starting: parsed in the server."""
        if always or not self._starting():
            for job in self._retry:
                _fail(job, ParsePoolUnavailable())
            self._retry.clear()


def _fail(job: _Job, exc: BaseException) -> None:
    if not job.future.done():
        job.future.set_exception(exc)


# --- the worker process ----------------------------------------------------------------


def _answer(ok: bool, value: object) -> bytes:
    try:
        data = pickle.dumps((ok, value), protocol=pickle.HIGHEST_PROTOCOL)
        if not ok:
            pickle.loads(data)  # noqa: S301 - an exception that cannot be rebuilt is not sent
    except Exception:  # noqa: BLE001 - the intake still gets a parser failure
        data = pickle.dumps((False, RuntimeError(type(value).__name__)))
    return _ANSWER.pack(len(data)) + data


def worker_main() -> None:
    """Read requests from standard input until it closes; answer each on standard output."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when workers end
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from smtptls.services.reports_server.intake import parse_submission

    stdin = sys.stdin.fileno()
    # Answers go out on the original standard output; anything else printed goes to
    # standard error, so a stray print cannot break a frame.
    stdout = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdout.write(_ANSWER.pack(0))  # ready: the parser is imported
    stdout.flush()
    pending = bytearray()
    while True:
        chunk = os.read(stdin, WORKER_READ)  # every request arrived so far, up to this
        if not chunk:
            return  # the server closed our input (or is gone)
        pending += chunk
        answers = []
        while len(pending) >= _REQUEST.size:
            size, max_body, max_decompressed = _REQUEST.unpack_from(pending)
            if size > MAX_REQUEST:
                raise SystemExit(f"parse worker: request of {size} bytes")
            end = _REQUEST.size + size
            if len(pending) < end:
                break
            body = bytes(pending[_REQUEST.size:end])
            del pending[:end]
            try:
                answers.append(_answer(True, parse_submission(
                    body, max_body=max_body, max_decompressed=max_decompressed)))
            except Exception as exc:  # noqa: BLE001 - the intake judges it, as in process
                exc.__traceback__ = None
                answers.append(_answer(False, exc))
            if len(answers) >= ANSWER_BATCH:
                stdout.write(b"".join(answers))
                stdout.flush()
                answers.clear()
        if answers:  # the answers to what one read brought, in one write
            stdout.write(b"".join(answers))
            stdout.flush()


if __name__ == "__main__":
    worker_main()
