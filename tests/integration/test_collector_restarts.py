"""``smtptls tlsrpt collect --log-file`` as a process, restarted and rotated under it.

Each test writes N Postfix sessions (a TLS line and a status line each, the TLS line of
one session written before the status line of the one before, so every read position
falls inside an open session) across clean SIGTERM restarts with lines written while
the collector is down, ``kill -9`` rounds, rename-rotation with a late writer still
appending to the old file, and copytruncate — and asserts that the store holds exactly
N sessions, all successful (a session whose TLS line was lost would be a failure:
delivered without TLS). Bounded in time: every wait has a limit of seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

CIPHER = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
MX = "mx1.mail.example.com[192.0.2.10]:25"
WAIT = 30.0  # seconds any condition may take before the test fails
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def pf(pid: int, text: str) -> str:
    t = datetime.now().astimezone()
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S} mta postfix/smtp[{pid}]: {text}\n"


def tls_line(i: int) -> str:
    return pf(10_000 + i, f"Verified TLS connection established to {MX}: {CIPHER}")


def status_line(i: int) -> str:
    return pf(10_000 + i, f"Q{i:09d}: to=<bob@example.com>, relay={MX}, delay=0.4, "
                          "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)")


class Sessions:
    """Numbered sessions written to a log file; session i's TLS line goes out with the
    status line of session i - 1, so a session is always open at a write boundary."""

    def __init__(self) -> None:
        self.next = 0
        self.open: int | None = None  # a session whose status line is not written yet

    def text(self, n: int) -> str:
        out = []
        for _ in range(n):
            out.append(tls_line(self.next))
            if self.open is not None:
                out.append(status_line(self.open))
            self.open = self.next
            self.next += 1
        return "".join(out)

    def close(self) -> str:
        """The status line still owed."""
        if self.open is None:
            return ""
        text, self.open = status_line(self.open), None
        return text

    def write(self, path: Path, n: int, *, close: bool = True) -> None:
        with path.open("a") as f:
            f.write(self.text(n) + (self.close() if close else ""))

    @property
    def written(self) -> int:
        return self.next


class Collector:
    """One ``smtptls tlsrpt collect`` process at a time, over one store."""

    def __init__(self, tmp: Path, log: Path, *, from_start: bool = False,
                 pg_schema: str | None = None) -> None:
        self.db = tmp / "results.sqlite3"
        self.log = log
        self.pg_schema = pg_schema
        self.config = tmp / "smtptls.toml"
        store = (f'backend = "postgres"\npostgres_dsn = "{PG_DSN}"\n'
                 f'postgres_schema = "{pg_schema}"\n') if pg_schema else \
            f'sqlite_path = "{self.db}"\n'
        self.config.write_text(f'[tlsrpt]\n{store}policy_source = "none"\n'
                               'sending_ip = "198.51.100.1"\nflush_interval = 0.5\n')
        self.argv = [sys.executable, "-m", "smtptls", "tlsrpt", "collect", "--config",
                     str(self.config), "--log-file", str(log), "--http", "off"]
        if from_start:
            self.argv.append("--from-start")
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr = tmp / "collector.err"

    def start(self) -> None:
        assert self.proc is None
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError("the collector did not stop") from None
        self.proc = None
        if sig == signal.SIGTERM:
            assert code == 0, self.stderr.read_text()[-2000:]

    def _query(self, sql: str) -> list[tuple]:
        if self.pg_schema:
            import psycopg

            try:
                with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
                    conn.execute(f'SET search_path TO "{self.pg_schema}"')
                    return list(conn.execute(sql).fetchall())
            except psycopg.errors.UndefinedTable:
                return []
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:
            return []  # the schema is not there yet
        finally:
            conn.close()

    def counts(self) -> tuple[int, int]:
        """(successful, failed) sessions stored, all days."""
        rows = self._query("SELECT COALESCE(SUM(successful), 0), COALESCE(SUM(failed), 0) "
                           "FROM tlsrpt_session_count")
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    def reading(self) -> bool:
        """The process has the log file open (Linux: its descriptors in /proc)."""
        assert self.proc is not None
        fds = Path(f"/proc/{self.proc.pid}/fd")
        try:
            return any(os.readlink(fd) == str(self.log) for fd in fds.iterdir())
        except OSError:
            return False

    def until(self, predicate, what: str) -> None:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if predicate():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"the collector exited: {self.stderr.read_text()[-2000:]}")
            time.sleep(0.05)
        raise AssertionError(f"{what} not reached: {self.counts()} stored")

    def ready(self) -> None:
        """Reading the log (which starts at the end of a file the collector has never
        read: lines written before that are not its)."""
        self.until(self.reading, "reading the log")

    def stored_at_least(self, n: int) -> None:
        self.until(lambda: sum(self.counts()) >= n, f"{n} sessions")

    def exactly(self, n: int) -> None:
        """Wait for n, stop cleanly (everything pending is written), and check that no
        session was lost, counted twice or misread."""
        self.stored_at_least(n)
        self.stop()
        assert self.counts() == (n, 0)

    def drop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None
        if self.pg_schema:
            import psycopg

            with psycopg.connect(PG_DSN, connect_timeout=5, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.pg_schema}" CASCADE')


@pytest.fixture
def world(tmp_path):
    made: list[Collector] = []

    def make(**kw) -> tuple[Collector, Path, Sessions]:
        log = tmp_path / "mail.log"
        log.touch()
        c = Collector(tmp_path, log, **kw)
        made.append(c)
        return c, log, Sessions()

    yield make
    for c in made:
        c.drop()


def test_sigterm_restarts_with_lines_written_while_down(world):
    collector, log, sessions = world()
    collector.start()
    collector.ready()
    for _ in range(3):
        sessions.write(log, 100, close=False)
        collector.stored_at_least(sessions.written - 1)
        collector.stop()
        sessions.write(log, 100, close=False)  # while it is down
        collector.start()
    sessions.write(log, 0)
    collector.exactly(sessions.written)
    assert sessions.written == 600


@pytest.mark.parametrize("from_start", [False, True], ids=["tail", "from-start"])
def test_kill_9_rounds_lose_nothing_and_count_nothing_twice(world, from_start):
    collector, log, sessions = world(from_start=from_start)
    collector.start()
    collector.ready()
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            sessions.write(log, 10, close=False)
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for round_ in range(5):
            # killed after this run committed something, with more pending and unread
            before = sum(collector.counts())
            collector.until(lambda: sum(collector.counts()) > before, "progress")  # noqa: B023
            time.sleep(0.1 + 0.1 * round_)
            collector.stop(signal.SIGKILL)
            time.sleep(0.2)
            collector.start()
    finally:
        stop.set()
        thread.join(WAIT)
    sessions.write(log, 0)
    assert sessions.written > 500
    collector.exactly(sessions.written)


@pytest.mark.postgres
def test_kill_9_rounds_postgres(world):
    import psycopg

    try:
        psycopg.connect(PG_DSN, connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    collector, log, sessions = world(pg_schema=f"t_restarts_{uuid.uuid4().hex[:10]}")
    collector.start()
    collector.ready()
    for _ in range(3):
        before = sum(collector.counts())
        sessions.write(log, 150, close=False)
        collector.until(lambda: sum(collector.counts()) > before, "progress")  # noqa: B023
        sessions.write(log, 50, close=False)  # pending or unread when it is killed
        collector.stop(signal.SIGKILL)
        sessions.write(log, 50, close=False)
        collector.start()
    sessions.write(log, 0)
    collector.exactly(sessions.written)


def _late_writer(path: Path, first: int, n: int, seconds: float) -> threading.Thread:
    """A syslog daemon that has not reopened yet: appends to the renamed file."""
    def run() -> None:
        for i in range(n):
            with path.open("a") as f:
                f.write(tls_line(first + i) + status_line(first + i))
            time.sleep(seconds / n)
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_rename_rotation_with_a_late_writer(world):
    collector, log, sessions = world()
    collector.start()
    collector.ready()
    sessions.write(log, 200)
    collector.stored_at_least(100)
    rotated = log.with_name("mail.log.1")
    os.rename(log, rotated)
    late = _late_writer(rotated, 50_000, 200, 1.0)  # still writing there for a second
    log.touch()
    sessions.write(log, 200)  # the new file, at once
    late.join(WAIT)
    collector.exactly(600)


def test_rename_rotation_while_killed(world):
    """Killed while the rotated file is still written: found again by its inode."""
    collector, log, sessions = world()
    collector.start()
    collector.ready()
    sessions.write(log, 200)
    collector.stored_at_least(200)
    rotated = log.with_name("mail.log.1")
    os.rename(log, rotated)
    late = _late_writer(rotated, 50_000, 100, 1.0)
    log.touch()
    sessions.write(log, 100)
    time.sleep(0.3)
    collector.stop(signal.SIGKILL)
    late.join(WAIT)
    sessions.write(log, 100)
    collector.start()
    collector.exactly(500)


def test_copytruncate_while_running_and_while_down(world):
    collector, log, sessions = world()
    collector.start()
    collector.ready()
    sessions.write(log, 200)
    collector.stored_at_least(200)
    # written and at once copied away and truncated: not read yet when the file empties
    sessions.write(log, 100)
    shutil.copyfile(log, log.with_name("mail.log.1"))
    os.truncate(log, 0)
    sessions.write(log, 100)
    collector.stored_at_least(400)
    collector.stop()
    # the same while the collector is down
    sessions.write(log, 50)
    shutil.copyfile(log, log.with_name("mail.log.1"))
    os.truncate(log, 0)
    sessions.write(log, 50)
    collector.start()
    collector.exactly(500)
