"""``smtptls policy-server`` on a lab address: SNI, headers, 404s, reload, plain HTTP,
metrics, and the round trip publish -> serve -> ``smtptls check`` with no error."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import ssl
import sys
from pathlib import Path

import pytest

from smtptls.mtasts import parse_policy
from smtptls.services.policy_server import PolicyServer, ServerConfig
from tests.lab import LabDomain, LabMx

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
_NEXT = [0]


def _address(lab) -> str:
    _NEXT[0] += 1
    return lab.net.ip(241, _NEXT[0])


def _domain_dir(lab, base: Path, domain: str, policy: str) -> Path:
    d = base / domain
    d.mkdir(parents=True, exist_ok=True)
    chain = lab.issue([f"mta-sts.{domain}"], "good")
    shutil.copy(chain.chain_file, d / "cert.pem")
    shutil.copy(chain.key_file, d / "key.pem")
    (d / "mta-sts.txt").write_text(policy)
    return d


async def _get(address: str, port: int, *, sni: str | None, host: str, lab=None,
               path: str = "/.well-known/mta-sts.txt", method: str = "GET",
               tls: bool = True) -> tuple[int, dict[str, str], bytes]:
    ctx = None
    if tls:
        ctx = ssl.create_default_context(cafile=str(lab.ca_file))
        if sni is None:
            ctx.check_hostname = False
    reader, writer = await asyncio.open_connection(
        address, port, ssl=ctx, server_hostname=sni if tls else None)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                 .encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(":") for line in lines[1:])}
    return status, headers, body


POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.{d}\r\nmax_age: {age}\r\n"


@pytest.fixture()
async def served(lab, tmp_path):
    _domain_dir(lab, tmp_path, "one.example", POLICY.format(d="one.example", age=604800))
    _domain_dir(lab, tmp_path, "two.example", POLICY.format(d="two.example", age=60))
    server = PolicyServer(ServerConfig(tmp_path, listen=f"{_address(lab)}:443",
                                       reload_interval=0.2, metrics=f"{_address(lab)}:9443"))
    await server.start()
    yield server, tmp_path
    await server.stop()


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_policy_server_sni_picks_certificate_and_headers(lab, served):
    server, _ = served
    addr, port = server.bound.rsplit(":", 1)
    for domain, age in (("one.example", 300), ("two.example", 60)):
        status, headers, body = await _get(addr, int(port), sni=f"mta-sts.{domain}",
                                           host=f"mta-sts.{domain}", lab=lab)
        assert status == 200
        assert headers["content-type"] == "text/plain; charset=utf-8"
        # Cache-Control: the configured 300 s, capped by the policy's own max_age.
        assert headers["cache-control"] == f"max-age={age}"
        assert parse_policy(body.decode()).mx == (f"mx1.{domain}",)


@pytest.mark.parametrize(("host", "path", "method", "status"), [
    ("mta-sts.one.example", "/", "GET", 404),
    ("mta-sts.one.example", "/.well-known/other.txt", "GET", 404),
    # RFC 9110 §15.5.20: Host names another policy domain than the SNI: 421
    ("mta-sts.unknown.example", "/.well-known/mta-sts.txt", "GET", 421),
    ("one.example", "/.well-known/mta-sts.txt", "GET", 404),
    ("mta-sts.one.example", "/.well-known/mta-sts.txt", "POST", 405),
    ("mta-sts.one.example", "/.well-known/mta-sts.txt", "HEAD", 200),
], ids=["root", "other-path", "unknown-host", "bare-domain-host", "post", "head"])
async def test_policy_server_answers_only_the_policy(lab, served, host, path, method, status):
    server, _ = served
    addr, port = server.bound.rsplit(":", 1)
    got, _, _ = await _get(addr, int(port), sni="mta-sts.one.example", host=host, lab=lab,
                           path=path, method=method)
    assert got == status


async def test_policy_server_unknown_sni_refused(lab, served):
    server, _ = served
    addr, port = server.bound.rsplit(":", 1)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _get(addr, int(port), sni="mta-sts.unknown.example", host="x", lab=lab)


async def test_policy_server_hot_reload_and_bad_files(lab, served):
    server, base = served
    addr, port = server.bound.rsplit(":", 1)
    _domain_dir(lab, base, "three.example", POLICY.format(d="three.example", age=86400))
    (base / "one.example" / "mta-sts.txt").write_text("mode: broken\n")  # keeps the old one
    for _ in range(50):
        if server.store.get("three.example") is not None and "one.example" in \
                server.store.errors:
            break
        await asyncio.sleep(0.1)
    status, _, body = await _get(addr, int(port), sni="mta-sts.three.example",
                                 host="mta-sts.three.example", lab=lab)
    assert status == 200 and b"mx1.three.example" in body
    status, _, body = await _get(addr, int(port), sni="mta-sts.one.example",
                                 host="mta-sts.one.example", lab=lab)
    assert status == 200 and b"mx1.one.example" in body  # the last good policy
    shutil.rmtree(base / "two.example")
    server.reload()  # what SIGHUP does
    assert server.store.get("two.example") is None
    mhost, mport = server.metrics_bound.rsplit(":", 1)
    _, _, metrics = await _get(mhost, int(mport), sni=None, host="x", path="/metrics",
                               tls=False)
    text = metrics.decode()
    assert 'smtptls_policy_server_requests_total{status="200"}' in text
    assert "smtptls_policy_server_load_errors_total 1.0" in text
    assert "smtptls_policy_server_domains 2.0" in text


async def test_policy_server_plain_http_uses_host_header(lab, tmp_path):
    d = tmp_path / "plain.example"
    d.mkdir()
    (d / "mta-sts.txt").write_text(POLICY.format(d="plain.example", age=86400))
    server = PolicyServer(ServerConfig(tmp_path, listen=f"{_address(lab)}:8080",
                                       plain_http=True))
    await server.start()
    try:
        addr, port = server.bound.rsplit(":", 1)
        status, headers, body = await _get(addr, int(port), sni=None,
                                           host="mta-sts.plain.example:443", tls=False)
        assert status == 200 and b"mx1.plain.example" in body
        assert headers["content-type"].startswith("text/plain")
        status, _, _ = await _get(addr, int(port), sni=None, host="mta-sts.other.example",
                                  tls=False)
        assert status == 404
    finally:
        await server.stop()


async def _cli(*args: str) -> tuple[int, str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.rfc("8461 3.3")
async def test_rfc8461_3_3_round_trip_publish_serve_check(lab, tmp_path):
    """A domain published with ``smtptls publish`` and served by ``smtptls
    policy-server`` on the lab address of mta-sts.<domain> passes ``smtptls check``."""
    domain = "roundtrip.secure.test"
    mx = f"mx1.{domain}"
    code, out, err = await _cli("publish", "mta-sts", "--domain", domain, "--mx", mx,
                                "--mode", "enforce", "--max-age", "604800",
                                "--out", str(tmp_path), "--json")
    assert code == 0, err
    published = json.loads(out)
    chain = lab.issue([f"mta-sts.{domain}"], "good")
    shutil.copy(chain.chain_file, tmp_path / domain / "cert.pem")
    shutil.copy(chain.key_file, tmp_path / domain / "key.pem")
    code, out, err = await _cli("publish", "tlsrpt", "--domain", domain,
                                "--rua", f"mailto:tlsrpt@{domain}", "--json")
    assert code == 0, err
    tlsrpt = json.loads(out)["record"]
    address = _address(lab)
    server = PolicyServer(ServerConfig(tmp_path, listen=f"{address}:443"))
    await server.start()
    try:
        d = LabDomain(domain, mx=[LabMx(mx, cert="good", tlsa=["3 1 1 auto"])],
                      txt={"_mta-sts": [published["record"]], "_smtp._tls": [tlsrpt]},
                      records=[(f"mta-sts.{domain}", "A", address)])
        await asyncio.to_thread(lab.add, d)
        code, out, err = await _cli("check", domain, "--json", "--nameserver",
                                    lab.resolver[0], "--ca-file", str(lab.ca_file),
                                    "--timeout", "10")
        report = json.loads(out)
        errors = [f for f in report["findings"] if f["severity"] != "info"]
        assert errors == [], errors
        assert code == 0
        assert report["adoption"]["mta_sts"] == "enforce"
        assert report["mta_sts"]["record_id"] == published["id"]
        assert report["adoption"]["dane"] == "pass"
        # Re-publishing the same body keeps the id (no needless refetch by senders).
        code, out, _ = await _cli("publish", "mta-sts", "--domain", domain, "--mx", mx,
                                  "--mode", "enforce", "--max-age", "604800",
                                  "--out", str(tmp_path), "--json")
        assert json.loads(out)["id"] == published["id"]
        assert json.loads(out)["changed"] is False
    finally:
        await server.stop()
        await asyncio.to_thread(lab.remove, domain)


async def test_policy_server_cli_sighup_reloads_and_sigterm_stops(lab, tmp_path):
    import signal

    address = _address(lab)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", "policy-server", "--dir", str(tmp_path), "--plain",
        "--listen", f"{address}:8081", "--reload-interval", "3600",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert b"listening on" in line
        status, _, _ = await _get(address, 8081, sni=None, host="mta-sts.late.example",
                                  tls=False)
        assert status == 404
        d = tmp_path / "late.example"
        d.mkdir()
        (d / "mta-sts.txt").write_text(POLICY.format(d="late.example", age=86400))
        proc.send_signal(signal.SIGHUP)  # rescan now, not in an hour
        for _ in range(50):
            status, _, body = await _get(address, 8081, sni=None,
                                         host="mta-sts.late.example", tls=False)
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200 and b"mx1.late.example" in body
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
