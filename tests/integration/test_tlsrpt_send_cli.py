"""``smtptls tlsrpt collect|send|results`` as a user runs them (subprocesses on loopback).

A small DNS responder answers the ``_smtp._tls`` TXT query, an HTTPS server with a
trustme certificate takes the report; the collector runs as its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trustme
from aiohttp import web

from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

SRC = str(Path(__file__).resolve().parents[2] / "src")
T = datetime(2024, 5, 1, 10, tzinfo=UTC)
STS = AppliedPolicy(PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce",
                                                    "mx: mx.example.com", "max_age: 86400"),
                    ("mx.example.com",))


class TinyDns:
    """Answers TXT queries from a dict over UDP on 127.0.0.1 (a thread)."""

    def __init__(self, txt: dict[str, str]) -> None:
        self.txt = txt
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            q = query.question[0]
            name = q.name.to_text(omit_final_dot=True)
            if q.rdtype == dns.rdatatype.TXT and name in self.txt:
                response.answer.append(dns.rrset.from_text(q.name, 300, "IN", "TXT",
                                                           f'"{self.txt[name]}"'))
            self.sock.sendto(response.to_wire(), addr)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=os.environ | {"PYTHONPATH": SRC})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def db(tmp_path):
    path = tmp_path / "results.sqlite3"
    async with SqliteResultStore(path) as store:
        await store.add_results([SessionResult.success(T, STS)] * 5 + [
            SessionResult.failure(T, STS, "starttls-not-supported", mx_host="mx.example.com",
                                  receiving_ip="192.0.2.1", sending_mta_ip="198.51.100.1")])
    return path


async def test_cli_results_table_and_json(db):
    code, out, err = await cli("tlsrpt", "results", "--db", str(db), "--json")
    assert code == 0, err
    (row,) = json.loads(out)["results"]
    assert row == {"day": "2024-05-01", "policy_domain": "example.com", "policy_type": "sts",
                   "successful": 5, "failed": 1, "failures": {"starttls-not-supported": 1}}
    code, out, _ = await cli("tlsrpt", "results", "--db", str(db), "--deliveries")
    assert code == 0 and "example.com" in out and all(len(line) <= 100
                                                       for line in out.splitlines())
    code, _, _ = await cli("tlsrpt", "results", "--db", str(db), "--day", "2024-05-02")
    assert code == 1
    code, _, err = await cli("tlsrpt", "results", "--db", str(db), "--day", "May 1")
    assert code == 2 and "not a day" in err


@pytest.mark.rfc("8460 5.4")
async def test_cli_send_dry_run_then_send(db, tmp_path):
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    received: list[bytes] = []

    async def intake(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=201)

    app = web.Application()
    app.router.add_post("/tlsrpt", intake)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    tiny = TinyDns({"_smtp._tls.example.com": f"v=TLSRPTv1; rua=https://127.0.0.1:{port}/tlsrpt"})
    conf = tmp_path / "smtptls.toml"
    conf.write_text(f"""
[dns]
nameservers = ["127.0.0.1"]
port = {tiny.port}
timeout = 2.0

[tlsrpt]
submitter = "mta.sender.example"
ca_file = "{tmp_path / 'ca.pem'}"
sqlite_path = "{db}"
""")
    try:
        code, out, err = await cli("tlsrpt", "send", "--config", str(conf), "--day",
                                   "2024-05-01", "--dry-run", "--json", "--report")
        assert code == 0, err
        (data,) = json.loads(out)["runs"]
        (report,) = data["reports"]
        assert report["rua"] == [f"https://127.0.0.1:{port}/tlsrpt"]
        assert report["report"]["policies"][0]["summary"] == {
            "total-successful-session-count": 5, "total-failure-session-count": 1}
        assert data["deliveries"][0]["detail"] in ("would send now", "scheduled")
        assert received == []
        code, out, err = await cli("tlsrpt", "send", "--config", str(conf), "--day",
                                   "2024-05-01", "--now")
        assert code == 0, err + out
        assert "delivered" in out and len(received) == 1
        code, out, _ = await cli("tlsrpt", "results", "--config", str(conf), "--deliveries",
                                 "--json")
        (delivery,) = json.loads(out)["deliveries"]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    finally:
        tiny.close()
        await runner.cleanup()


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize("contact", ["tlsrpt@sender.example", "tlsrpt@reports.mta.sender.example",
                                     "tlsrpt@elsewhere.example"])
async def test_rfc8460_5_3_contact_info_in_another_domain_is_refused(db, tmp_path, contact):
    # TLS-Report-Submitter (the submitter) MUST match the contact-info domain
    tiny = TinyDns({"_smtp._tls.example.com": "v=TLSRPTv1; rua=https://127.0.0.1:9/tlsrpt"})
    try:
        await _contact_info_refused(db, tmp_path, contact, tiny.port)
    finally:
        tiny.close()


async def _contact_info_refused(db, tmp_path, contact: str, dns_port: int) -> None:
    conf = tmp_path / "smtptls.toml"
    body = f"""
[dns]
nameservers = ["127.0.0.1"]
port = {dns_port}
timeout = 2.0

[tlsrpt]
submitter = "mta.sender.example"
contact_info = "{contact}"
sqlite_path = "{db}"
"""
    conf.write_text(body)
    code, out, err = await cli("config", "check", str(conf))
    assert code == 2 and out == ""
    (line,) = err.splitlines()  # one line, no traceback
    assert "tlsrpt.contact_info" in line and "RFC 8460 §5.3" in line
    assert "use an address @mta.sender.example" in line
    code, out, err = await cli("config", "check", str(conf), "--json")
    assert code == 2 and json.loads(out)["ok"] is False
    code, out, err = await cli("tlsrpt", "send", "--config", str(conf), "--day",
                               "2024-05-01", "--dry-run")
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert "tlsrpt.contact_info" in line and contact in line and "Traceback" not in err
    # the same setup with an address in the submitter's domain runs
    conf.write_text(body.replace(contact, "tlsrpt@mta.sender.example"))
    code, out, err = await cli("config", "check", str(conf))
    assert (code, out.strip(), err) == (0, f"{conf}: ok", "")
    code, out, err = await cli("tlsrpt", "send", "--config", str(conf), "--day",
                               "2024-05-01", "--dry-run", "--json", "--report")
    assert code == 0, err
    (data,) = json.loads(out)["runs"]
    (report,) = data["reports"]
    assert report["rua"] == ["https://127.0.0.1:9/tlsrpt"]  # a dry run: nothing sent
    assert report["report"]["contact-info"] == "tlsrpt@mta.sender.example"


async def test_cli_collect_runs_until_sigterm(tmp_path):
    log = tmp_path / "mail.log"
    log.write_text("")
    db = tmp_path / "collected.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", "tlsrpt", "collect", "--db", str(db), "--log-file",
        str(log), "--http", "off", "--policy-source", "none",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": SRC})
    try:
        mx = "mx.example.org[203.0.113.5]:25"
        now = datetime.now().astimezone()
        stamp = f"{now:%b} {now.day:2d} {now:%H:%M:%S}"
        # the follower starts at the end of the file: wait until it has it open
        fds = f"/proc/{proc.pid}/fd"
        for _ in range(300):
            with contextlib.suppress(OSError):
                if any(os.readlink(f"{fds}/{fd}") == str(log) for fd in os.listdir(fds)):
                    break
            await asyncio.sleep(0.05)
        with log.open("a") as f:
            f.write(f"{stamp} mta postfix/smtp[42]: Untrusted TLS connection established to "
                    f"{mx}: TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)\n")
            f.write(f"{stamp} mta postfix/smtp[42]: ABCDEF0123: to=<a@example.org>, relay={mx},"
                    " delay=1, delays=1/0/0/0, dsn=2.0.0, status=sent (250 Ok)\n")
        for _ in range(100):
            await asyncio.sleep(0.1)
            if db.exists():
                async with SqliteResultStore(db) as store:
                    rows = await store.summaries()
                if rows:
                    break
        assert rows and rows[0].policy_type == "no-policy-found" and rows[0].successful == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert proc.returncode == 0


async def test_cli_collect_refuses_a_bad_setup(tmp_path):
    code, _, err = await cli("tlsrpt", "collect", "--db", str(tmp_path / "x.sqlite3"),
                             "--http", "off")
    assert code == 2 and "nothing to collect" in err
