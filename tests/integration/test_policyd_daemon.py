"""``smtptls policyd`` as a real subprocess: SIGHUP reloads, SIGTERM finishes in-flight
requests and exits 0, the metrics port answers, ``policyd query`` explains.

DNS points at a loopback UDP socket that never answers, so a lookup that needs DNS is
slow (it times out after the configured 1.5 s) and answers come from the configured
per-domain overrides or the no-policy path — no network beyond 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from smtptls.services.policyd.socketmap import NetstringDecoder, Request

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, *, dns_port: int, listen: str, metrics: str, override: str) -> None:
    path.write_text(f"""
[dns]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = 1.5

[cache]
sqlite_path = "{path.parent / 'cache.sqlite3'}"

[policyd]
listen = "{listen}"
metrics = "{metrics}"
overrides = {{ "override.example" = "{override}" }}
""")


@pytest.fixture
def blackhole_dns():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def daemon(tmp_path, blackhole_dns):
    port, mport = free_port(), free_port()
    cfg = tmp_path / "smtptls.toml"
    write_config(cfg, dns_port=blackhole_dns, listen=f"127.0.0.1:{port}",
                 metrics=f"127.0.0.1:{mport}", override="dane-only")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtptls", "--log-level", "info", "policyd", "--config", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode()) from None  # type: ignore[union-attr]
            time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("daemon did not start")
    proc.test_port = port  # type: ignore[attr-defined]
    proc.test_mport = mport  # type: ignore[attr-defined]
    proc.test_cfg = cfg  # type: ignore[attr-defined]
    proc.test_dns = blackhole_dns  # type: ignore[attr-defined]
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


async def ask(port: int, *keys: str) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(Request("postfix", k).to_bytes() for k in keys))
    dec = NetstringDecoder(100000)
    out: list[str] = []
    async with asyncio.timeout(15):
        while len(out) < len(keys):
            data = await reader.read(65536)
            if not data:
                break
            out.extend(f.decode() for f in dec.feed(data))
    writer.close()
    return out


async def test_sighup_reloads_the_configuration(daemon) -> None:
    assert await ask(daemon.test_port, "override.example") == ["OK dane-only"]
    write_config(daemon.test_cfg, dns_port=daemon.test_dns,
                 listen=f"127.0.0.1:{daemon.test_port}",
                 metrics=f"127.0.0.1:{daemon.test_mport}", override="encrypt")
    daemon.send_signal(signal.SIGHUP)
    for _ in range(50):
        await asyncio.sleep(0.1)
        if await ask(daemon.test_port, "override.example") == ["OK encrypt"]:
            break
    assert await ask(daemon.test_port, "override.example") == ["OK encrypt"]
    assert daemon.poll() is None  # still running


async def test_sighup_with_a_broken_file_keeps_running(daemon) -> None:
    daemon.test_cfg.write_text("[policyd\nbroken")
    daemon.send_signal(signal.SIGHUP)
    await asyncio.sleep(0.5)
    assert daemon.poll() is None
    assert await ask(daemon.test_port, "override.example") == ["OK dane-only"]


async def test_sigterm_finishes_in_flight_requests_then_exits(daemon) -> None:
    task = asyncio.ensure_future(ask(daemon.test_port, "slow.example", "override.example"))
    await asyncio.sleep(0.4)  # the DNS lookups of slow.example are now in flight
    daemon.send_signal(signal.SIGTERM)
    replies = await task
    # RFC 7672 §2.1.2 (J1): an MX lookup that fails means delay, never "no policy"
    assert replies[1:] == ["OK dane-only"]
    assert replies[0].startswith("TEMP the MX lookup of slow.example is indeterminate")
    assert await asyncio.to_thread(daemon.wait, 15) == 0
    stderr = daemon.stderr.read().decode()
    assert "policyd stopped" in stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", daemon.test_port), timeout=1).close()


async def test_metrics_port(daemon) -> None:
    await ask(daemon.test_port, "override.example", "[192.0.2.1]")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{daemon.test_mport}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    assert 'smtptls_policyd_requests_total{answer="dane-only"}' in text
    assert 'smtptls_policyd_requests_total{answer="notfound"}' in text
    assert "smtptls_policyd_connections" in text


def test_policyd_query_explains(tmp_path, blackhole_dns) -> None:
    cfg = tmp_path / "q.toml"
    write_config(cfg, dns_port=blackhole_dns, listen="127.0.0.1:1", metrics="127.0.0.1:2",
                 override="dane-only")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [sys.executable, "-m", "smtptls", "policyd", "query", "Override.Example.", "--json",
         "--config", str(cfg)], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["reply"] == "OK dane-only"
    assert "override" in data["decision"]["reason"]
    lit = subprocess.run(
        [sys.executable, "-m", "smtptls", "policyd", "query", "[192.0.2.1]:25",
         "--config", str(cfg)], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert lit.returncode == 1
    assert b"NOTFOUND" in lit.stdout and b"IP literal" in lit.stdout
