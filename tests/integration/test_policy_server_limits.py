"""Connection limits of ``smtptls policy-server``: the TLS handshake timeout, the idle
timeout, the connection cap with bounded memory that is returned after connections
are dropped, the SNI/Host check (421), and a loopback default address.

Certificates come from a lab PKI made in the test's directory; everything listens on
127.0.0.1. Memory is read from /proc/PID/status of the real server process.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from smtptls.services.policy_server import DEFAULT_LISTEN, PolicyServer, ServerConfig
from tests.lab.pki import LabPki

ROOT = Path(__file__).resolve().parents[2]
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.{d}\r\nmax_age: 86400\r\n"
DOMAINS = ("one.example", "two.example")


@pytest.fixture
def policy_dir(tmp_path):
    pki = LabPki(tmp_path / "pki")
    base = tmp_path / "policies"
    for domain in DOMAINS:
        d = base / domain
        d.mkdir(parents=True)
        chain = pki.issue([f"mta-sts.{domain}"], "good")
        shutil.copy(chain.chain_file, d / "cert.pem")
        shutil.copy(chain.key_file, d / "key.pem")
        (d / "mta-sts.txt").write_text(POLICY.format(d=domain))
    return SimpleNamespace(dir=base, ca=pki.ca_file)


def _client_ctx(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


async def _request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                   *, close: bool = False) -> tuple[int, bytes]:
    conn = "close" if close else "keep-alive"
    writer.write(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                 f"Connection: {conn}\r\n\r\n".encode())
    await writer.drain()
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(v) for k, _, v in (h.partition(":") for h in lines[1:])
                      if k.strip().lower() == "content-length")
        body = await reader.readexactly(length)
    return int(lines[0].split()[1]), body


async def _fetch(port: int, ca: Path, sni: str, host: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx(ca),
                                                   server_hostname=sni)
    try:
        return await _request(reader, writer, host, close=True)
    finally:
        writer.close()


@pytest.fixture
async def served(policy_dir):
    server = PolicyServer(ServerConfig(policy_dir.dir, listen="127.0.0.1:0", handshake_timeout=0.5,
                                       idle_timeout=0.8, max_connections=20))
    await server.start()
    server.test_port = int(server.bound.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    server.test_ca = policy_dir.ca  # type: ignore[attr-defined]
    yield server
    await server.stop()


def test_default_listen_address_is_loopback(tmp_path) -> None:
    assert ServerConfig(tmp_path).listen == DEFAULT_LISTEN
    assert DEFAULT_LISTEN.startswith("127.0.0.1:")
    out = subprocess.run([sys.executable, "-m", "smtptls", "policy-server", "--help"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")}).stdout
    assert "default 127.0.0.1:8443" in " ".join(out.split())


@pytest.mark.rfc("9110 15.5.20")
async def test_rfc9110_15_5_20_host_naming_another_policy_domain_than_sni_is_421(served):
    port, ca = served.test_port, served.test_ca
    assert (await _fetch(port, ca, "mta-sts.one.example", "mta-sts.one.example"))[0] == 200
    status, body = await _fetch(port, ca, "mta-sts.one.example", "mta-sts.two.example")
    assert status == 421 and b"mx1.two.example" not in body
    # on one keep-alive connection too: the first answer does not open the door
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx(ca),
                                                   server_hostname="mta-sts.two.example")
    assert (await _request(reader, writer, "mta-sts.two.example:443"))[0] == 200
    status, body = await _request(reader, writer, "mta-sts.one.example")
    assert status == 421 and b"mx1.one.example" not in body
    writer.close()


async def test_handshake_timeout_closes_a_silent_connection(served):
    reader, writer = await asyncio.open_connection("127.0.0.1", served.test_port)
    writer.write(b"\x16\x03\x01")  # the first octets of a ClientHello, then nothing
    started = time.monotonic()
    async with asyncio.timeout(5):
        try:
            assert await reader.read() == b""
        except ConnectionError:
            pass
    assert 0.3 < time.monotonic() - started < 3.0
    writer.close()
    for _ in range(50):
        if served.connection_count == 0:
            break
        await asyncio.sleep(0.05)
    assert served.connection_count == 0
    assert served.metrics.closed.labels("handshake")._value.get() == 1


async def test_idle_tls_connection_is_closed(served):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", served.test_port, ssl=_client_ctx(served.test_ca),
        server_hostname="mta-sts.one.example")
    assert served.connection_count == 1
    started = time.monotonic()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # no request at all: closed at the idle timeout
    assert 0.6 < time.monotonic() - started < 3.0
    writer.close()


async def test_trickled_request_is_closed_at_the_idle_timeout(served):
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", served.test_port, ssl=_client_ctx(served.test_ca),
        server_hostname="mta-sts.one.example")
    started = time.monotonic()
    closed_after = None
    for octet in b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.one.example\r\n":
        try:
            writer.write(bytes([octet]))  # one octet every 0.1 s: never a whole request
            await writer.drain()
            data = await asyncio.wait_for(reader.read(100), 0.1)
        except TimeoutError:
            continue
        except (ConnectionError, ssl.SSLError):
            data = b""
        if data == b"":
            closed_after = time.monotonic() - started
            break
    writer.close()
    assert closed_after is not None and 0.6 < closed_after < 3.0


async def test_connection_cap_in_process(served):
    port, ca = served.test_port, served.test_ca
    held = [await asyncio.open_connection("127.0.0.1", port, ssl=_client_ctx(ca),
                                          server_hostname="mta-sts.one.example")
            for _ in range(40)]
    assert served.connection_count <= 20
    assert (await _fetch(port, ca, "mta-sts.one.example", "mta-sts.one.example"))[0] == 200
    for _, w in held:
        w.close()


# --- the real server process: many idle TLS connections, RSS from /proc ---------------

CAP = 50
IDLE_CONNECTIONS = 400
KB = 1024


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_process(policy_dir, tmp_path):
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtptls", "policy-server", "--dir", str(policy_dir.dir),
         "--listen", f"127.0.0.1:{port}", "--max-connections", str(CAP),
         "--idle-timeout", "60", "--handshake-timeout", "5"],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError((tmp_path / "server.log").read_text()) from None
            time.sleep(0.1)
    proc.test_port = port  # type: ignore[attr-defined]
    proc.test_log = tmp_path / "server.log"  # type: ignore[attr-defined]
    yield proc
    proc.kill()
    proc.wait(5)
    log.close()


async def test_idle_tls_connections_beyond_the_cap_bounded_and_memory_returned(
        server_process, policy_dir):
    pid, port, ca = server_process.pid, server_process.test_port, policy_dir.ca
    for _ in range(20):  # warm up: code paths, TLS contexts, caches
        assert (await _fetch(port, ca, "mta-sts.one.example", "mta-sts.one.example"))[0] == 200
    await asyncio.sleep(1.5)
    base_rss, base_fds = _rss_kb(pid), _fds(pid)
    ctx = _client_ctx(ca)
    held = []
    for _ in range(IDLE_CONNECTIONS):  # handshakes completed, then silence
        held.append(await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                  server_hostname="mta-sts.one.example"))
    await asyncio.sleep(0.5)
    peak_rss, peak_fds = _rss_kb(pid), _fds(pid)
    # a fresh client is answered while the attacker's connections are held
    assert (await _fetch(port, ca, "mta-sts.two.example", "mta-sts.two.example"))[0] == 200
    for _, writer in held:
        writer.close()
    held.clear()
    await asyncio.sleep(3)  # the connections are gone and the trim has run
    after_rss = _rss_kb(pid)
    assert peak_fds - base_fds <= CAP + 2
    # at most CAP connections' worth of memory (each well under 400 KB), not 400 of them
    assert peak_rss - base_rss < CAP * 400 + 16 * KB, (base_rss, peak_rss)
    assert after_rss - base_rss < 6 * KB, (base_rss, peak_rss, after_rss)
    assert server_process.poll() is None
    assert "Traceback" not in server_process.test_log.read_text()
