"""policyd's start-up order and its event loop (no timing here: what is imported when,
and which loop runs).

- the socketmap listeners are up before the HTTP machinery (aiohttp) is imported: it is
  loaded after them, off the event loop, and the metrics endpoint (its address bound at
  start, so a taken one still fails the start) is served once it is;
- ``[policyd] event_loop``: ``auto`` is uvloop when installed, ``asyncio`` asyncio's own
  loop, ``uvloop`` without the package a configuration error naming the extra.

Each check runs in a fresh interpreter (``sys.modules`` of this one has everything).
DNS points at a loopback port nobody answers; no request here needs DNS.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from smtptls.config import load
from smtptls.errors import ConfigError
from smtptls.services.policyd.daemon import event_loop_factory

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import asyncio, json, socket, sys
from smtptls.config import Config, DnsConfig, PolicydConfig, CacheConfig
from smtptls.services.policyd.daemon import Daemon, event_loop_factory

def ask(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        req = b"postfix .parent.example"
        s.sendall(b"%d:%s," % (len(req), req))
        return s.recv(100).decode()

async def main():
    cfg = Config(dns=DnsConfig(nameservers=("127.0.0.1",), port=9),
                 cache=CacheConfig(sqlite_path=sys.argv[1]),
                 policyd=PolicydConfig(listen="127.0.0.1:0", metrics="127.0.0.1:0"))
    daemon = Daemon(cfg)
    await daemon.start()
    port = int(daemon.addresses[0].rsplit(":", 1)[1])
    out = {"aiohttp_at_listen": "aiohttp" in sys.modules,
           "loop": type(asyncio.get_running_loop()).__module__}
    out["answer"] = await asyncio.to_thread(ask, port)
    await daemon.ready()
    out["aiohttp_when_ready"] = "aiohttp" in sys.modules
    host, _, mport = daemon.metrics_address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(mport))
    writer.write(b"GET /metrics HTTP/1.0\\r\\n\\r\\n")
    out["metrics"] = (await reader.read()).decode("latin-1")
    writer.close()
    await daemon.stop()
    print(json.dumps(out))

with asyncio.Runner(loop_factory=event_loop_factory(sys.argv[2])) as r:
    r.run(main())
"""


def _start(tmp_path: Path, loop: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "c.sqlite3"), loop],
                         capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT / "src"), "SMTPTLS_STATE_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("loop", ["asyncio", "auto"])
def test_listeners_answer_before_the_http_machinery_is_imported(tmp_path, loop):
    out = _start(tmp_path, loop)
    assert out["aiohttp_at_listen"] is False
    # Postfix's parent-domain lookup: NOTFOUND from the key alone (RFC 8461 §3.4)
    assert out["answer"] == "9:NOTFOUND ,"
    assert out["aiohttp_when_ready"] is True
    assert out["metrics"].startswith("HTTP/1.") and " 200 " in out["metrics"].split("\r\n")[0]
    assert "smtptls_policyd_requests_total" in out["metrics"]
    expected = "uvloop" if loop == "auto" and _has_uvloop() else "asyncio"
    assert out["loop"].split(".")[0] == expected


def test_a_taken_metrics_address_still_fails_the_start(tmp_path):
    import asyncio

    from smtptls.config import CacheConfig, Config, DnsConfig, PolicydConfig
    from smtptls.services.policyd.daemon import Daemon

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cfg = Config(dns=DnsConfig(nameservers=("127.0.0.1",), port=9),
                     cache=CacheConfig(sqlite_path=str(tmp_path / "c.sqlite3")),
                     policyd=PolicydConfig(listen="127.0.0.1:0",
                                           metrics=f"127.0.0.1:{port}"))

        async def go() -> None:
            daemon = Daemon(cfg)
            try:
                with pytest.raises(OSError):
                    await daemon.start()
            finally:
                await daemon.stop()

        asyncio.run(go())


def test_event_loop_asyncio_is_asyncios_own():
    assert event_loop_factory("asyncio") is None


@pytest.mark.skipif(not _has_uvloop(), reason="uvloop not installed")
def test_event_loop_auto_is_uvloop_when_installed():
    import uvloop

    assert event_loop_factory("auto") is uvloop.new_event_loop
    assert event_loop_factory("uvloop") is uvloop.new_event_loop


def test_event_loop_uvloop_without_the_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert event_loop_factory("auto") is None
    with pytest.raises(ConfigError) as err:
        event_loop_factory("uvloop")
    assert "smtptls[uvloop]" in str(err.value) and "policyd.event_loop" in str(err.value)


def test_event_loop_key_accepts_only_its_choices(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[policyd]\nevent_loop = "uvloop"\n')
    assert load(path).policyd.event_loop == "uvloop"
    path.write_text('[policyd]\nevent_loop = "trio"\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert "policyd.event_loop" in str(err.value)
