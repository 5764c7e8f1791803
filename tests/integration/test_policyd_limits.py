"""Connection limits of the socketmap server and of ``smtptls policyd``.

- a request must be complete ``request_timeout`` seconds after its first octet: a client
  trickling one octet at a time is closed however often it sends;
- the connection cap (never above the file descriptor limit less a reserve) closes the
  longest-idle connections first, so fresh clients are answered when an attacker holds
  many connections open;
- accept errors are one rate-limited log line, not a traceback per retry.

The fd-limit test runs the real daemon under ``ulimit -n`` through ``setrlimit`` in the
child. DNS points at a loopback UDP socket that never answers; the answers come from a
configured override, so nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtptls.services.policyd.metrics import PolicydMetrics
from smtptls.services.policyd.socketmap import (
    FD_RESERVE,
    AcceptErrorLog,
    NetstringDecoder,
    Request,
    SocketmapServer,
    effective_connection_limit,
)

ROOT = Path(__file__).resolve().parents[2]
OVERRIDE_REPLY = "OK dane-only"


class OverrideHandler:
    """Answers every key from memory (no I/O)."""

    def lookup_cached(self, key: str) -> bytes | None:
        return b"12:OK dane-only,"

    async def lookup(self, key: str) -> bytes:
        return b"12:OK dane-only,"


async def _ask(host: str, port: int, key: str, limit: float = 5.0) -> str:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(Request("postfix", key).to_bytes())
        dec = NetstringDecoder(100000)
        async with asyncio.timeout(limit):
            while True:
                data = await reader.read(4096)
                if not data:
                    return ""
                frames = dec.feed(data)
                if frames:
                    return frames[0].decode()
    finally:
        writer.close()


@pytest.fixture
async def server():
    srv = SocketmapServer(OverrideHandler(), idle_timeout=0.6, request_timeout=1.5,
                          max_connections=20)
    srv.test_addr = await srv.listen_tcp("127.0.0.1", 0)  # type: ignore[attr-defined]
    yield srv
    await srv.close(grace=1.0)


async def test_trickling_client_is_closed_at_the_request_deadline(server) -> None:
    # one octet every 0.2 s: each read is "activity", so the 0.6 s idle timeout never
    # fires; the 1.5 s request deadline does
    reader, writer = await asyncio.open_connection(*server.test_addr)
    request = Request("postfix", "x" * 200).to_bytes()
    started = time.monotonic()
    closed_after = None
    for octet in request:
        try:
            writer.write(bytes([octet]))
            await writer.drain()
            data = await asyncio.wait_for(reader.read(100), 0.2)
        except TimeoutError:
            continue
        except ConnectionError:
            data = b""
        if data == b"":
            closed_after = time.monotonic() - started
            break
    writer.close()
    assert closed_after is not None, "a trickled request kept the connection open"
    assert 1.3 < closed_after < 3.0
    assert server.request_timeouts == 1
    metrics = PolicydMetrics()
    metrics.watch_limits(server)
    text = metrics.render().decode()
    assert 'smtptls_policyd_connections_closed_total{reason="request-timeout"} 1.0' in text
    assert "smtptls_policyd_accept_errors_total 0.0" in text


async def test_slow_but_complete_requests_keep_the_connection(server) -> None:
    # whole requests every 0.4 s: activity within the idle timeout, each one complete
    reader, writer = await asyncio.open_connection(*server.test_addr)
    dec = NetstringDecoder(1000)
    for i in range(6):
        writer.write(Request("postfix", f"d{i}.example").to_bytes())
        frames = dec.feed(await asyncio.wait_for(reader.read(100), 2))
        assert [f.decode() for f in frames] == [OVERRIDE_REPLY]
        await asyncio.sleep(0.4)
    writer.close()
    assert server.request_timeouts == 0


async def test_pipelined_requests_split_across_reads_are_not_timed_out(server) -> None:
    # every write ends in the middle of a request, so the buffer is never empty between
    # reads; each request still completes at once, so no deadline is missed
    reader, writer = await asyncio.open_connection(*server.test_addr)
    requests = [Request("postfix", f"p{i}.example").to_bytes() for i in range(40)]
    chunks = [requests[0][:5]] + [requests[i][5:] + requests[i + 1][:5]
                                  for i in range(len(requests) - 1)]
    chunks.append(requests[-1][5:])
    started = time.monotonic()
    for chunk in chunks:  # the rest of one request and the first 5 octets of the next
        writer.write(chunk)
        await asyncio.sleep(2.5 / 40)
    dec = NetstringDecoder(1000)
    replies: list[bytes] = []
    async with asyncio.timeout(5):
        while len(replies) < 40:
            data = await reader.read(4096)
            assert data, f"closed after {len(replies)} replies"
            replies += dec.feed(data)
    assert time.monotonic() - started > server.request_timeout
    assert replies == [OVERRIDE_REPLY.encode()] * 40
    assert server.request_timeouts == 0
    writer.close()


async def test_connection_cap_closes_the_longest_idle_first(server) -> None:
    host, port = server.test_addr
    held = []
    for _ in range(20):
        held.append(await asyncio.open_connection(host, port))
        await asyncio.sleep(0.01)
    # a client in the middle of a request is not idle and must not be closed
    busy_reader, busy_writer = held[0]
    busy_writer.write(b"30:postfix ")
    await busy_writer.drain()
    await asyncio.sleep(0.05)
    assert await _ask(host, port, "fresh.example") == OVERRIDE_REPLY
    assert server.connection_count <= 20
    assert server.evicted >= 1
    # the oldest idle one (held[1]) was closed; the busy one (held[0]) still works
    assert await asyncio.wait_for(held[1][0].read(), 2) == b""
    busy_writer.write(b"x" * 22 + b",")
    assert await asyncio.wait_for(busy_reader.read(100), 2) == b"12:OK dane-only,"
    for _, w in held:
        w.close()


def test_connection_limit_stays_under_the_descriptor_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert effective_connection_limit(10) == min(10, soft - FD_RESERVE)
    assert effective_connection_limit(10**9) == soft - FD_RESERVE
    assert effective_connection_limit(0) == soft - FD_RESERVE


def test_accept_errors_are_one_line_per_interval() -> None:
    now = [0.0]
    seen: list[dict[str, object]] = []
    errors = AcceptErrorLog(interval=60.0, clock=lambda: now[0])
    errors._previous = lambda _loop, ctx: seen.append(ctx)  # the handler it replaced
    context = {"message": "socket.accept() out of system resource",
               "exception": OSError(24, "Too many open files")}
    logged = 0
    for _ in range(1000):  # 10 s of retries
        errors(None, context)  # type: ignore[arg-type]
        logged += errors._unlogged == 0  # a line was written, counting what it covers
        now[0] += 0.01
    assert errors.count == 1000
    assert logged == 1
    now[0] += 60
    errors(None, context)  # type: ignore[arg-type]
    assert errors._unlogged == 0  # the next line, a minute later, counts the 999 since
    errors(None, {"message": "something else"})  # type: ignore[arg-type]
    assert seen == [{"message": "something else"}]


# --- the real daemon under a low descriptor limit -------------------------------------

FD_LIMIT = 256


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture
def low_fd_daemon(tmp_path):
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    port = _free_port()
    cfg = tmp_path / "smtptls.toml"
    cfg.write_text(f"""
[dns]
nameservers = ["127.0.0.1:{dns.getsockname()[1]}"]
timeout = 1.0

[cache]
sqlite_path = "{tmp_path / 'cache.sqlite3'}"

[policyd]
listen = "127.0.0.1:{port}"
metrics = ""
overrides = {{ "override.example" = "dane-only" }}
""")
    log = (tmp_path / "policyd.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtptls", "--log-level", "info", "policyd", "--config",
         str(cfg)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        preexec_fn=_low_fd_limit)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError((tmp_path / "policyd.log").read_text()) from None
            time.sleep(0.1)
    proc.test_port = port  # type: ignore[attr-defined]
    proc.test_log = tmp_path / "policyd.log"  # type: ignore[attr-defined]
    yield proc
    proc.kill()
    proc.wait(5)
    log.close()
    dns.close()


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


async def test_policyd_at_the_descriptor_limit_answers_fresh_clients(low_fd_daemon) -> None:
    port = low_fd_daemon.test_port
    held: list[socket.socket] = []
    try:
        for _ in range(3 * FD_LIMIT):  # far more idle connections than descriptors
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # fresh clients are answered: the longest-idle connections made room
        for i in range(20):
            async with asyncio.timeout(10):
                while True:
                    try:
                        reply = await _ask("127.0.0.1", port, "override.example", 3.0)
                    except (TimeoutError, ConnectionError):
                        continue  # an accept retry in progress
                    if reply:
                        break
            assert reply == OVERRIDE_REPLY, i
        open_now = sum(_still_open(s) for s in held)
        assert open_now <= FD_LIMIT - FD_RESERVE
        assert low_fd_daemon.poll() is None
    finally:
        for s in held:
            s.close()
    text = low_fd_daemon.test_log.read_text()
    assert "Traceback" not in text
    assert len(text) < 20_000, text[:2000]
    # the daemon keeps answering after the flood is gone
    assert await _ask("127.0.0.1", port, "override.example") == OVERRIDE_REPLY
