"""Group commits keep RFC 8460 §5.4's promise: a sender told "stored" finds its report
stored, even when ``reports serve`` is killed (``kill -9``) while reports arrive.

``smtptls reports serve`` runs as a process with HTTPS (a test CA) and SMTP on a SQLite
store; 50 HTTPS clients post distinct reports and a few SMTP senders deliver report
mail while the server is killed mid-flight. It is then started again on the same
file: every report acknowledged (2xx, 250) must be there, exactly once. Both ways of
parsing: in the server process (``parse_workers = 0``) and in worker processes.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import smtplib
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest
import trustme

from tests.integration.tlsrpt_reports import one_policy_report

CLIENTS = 50
KILL_AFTER = 300  # HTTPS reports acknowledged (and one mail) before the kill: mid-flight
TOKEN = "durability-token"


def report(report_id: str) -> dict:
    return one_policy_report(report_id, domain="durable.example", org="Durability Org", ok=7,
                             result_type="starttls-not-supported", sending_ip="192.0.2.9")


def report_mail(rep: dict) -> bytes:
    msg = EmailMessage()
    msg["From"] = "tlsrpt@sender.example"
    msg["To"] = "tlsrpt@durable.example"
    msg["Subject"] = f"Report Domain: durable.example Submitter: sender.example " \
                     f"Report-ID: <{rep['report-id']}>"
    msg["TLS-Report-Domain"] = "durable.example"
    msg["TLS-Report-Submitter"] = "sender.example"
    msg.set_content("TLS report")
    msg.add_attachment(gzip.compress(json.dumps(rep).encode()), maintype="application",
                       subtype="tlsrpt+gzip",
                       filename="sender.example!durable.example!1717200000!1717286399.json.gz")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``reports serve`` over one SQLite file, startable again after a kill."""

    def __init__(self, tmp: Path, parse_workers: int = 0) -> None:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        self.cert, self.key = tmp / "cert.pem", tmp / "key.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(self.cert))
        leaf.private_key_pem.write_to_path(str(self.key))
        self.ctx = ssl.create_default_context()
        ca.configure_trust(self.ctx)
        self.db = tmp / "reports.sqlite3"
        self.config = tmp / "serve.toml"
        self.config.write_text("[reports]\nrate_limit_per_minute = 0\n"
                               f"parse_workers = {parse_workers}\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = self.smtp = 0

    def start(self) -> None:
        self.http, self.smtp = free_port(), free_port()
        argv = [sys.executable, "-m", "smtptls", "reports", "serve", "--config", str(self.config),
                "--db", str(self.db), "--listen", f"127.0.0.1:{self.http}",
                "--smtp", f"127.0.0.1:{self.smtp}", "--no-dkim",
                "--tls-cert", str(self.cert), "--tls-key", str(self.key)]
        self.proc = subprocess.Popen(argv, env={**os.environ, "SMTPTLS_REPORTS_TOKEN": TOKEN},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(self.proc.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.smtp), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.http), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("reports serve did not start")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stored(self) -> list[str]:
        with sqlite3.connect(self.db) as db:
            return [row[0] for row in db.execute("SELECT report_id FROM reports")]


@pytest.fixture(params=[0, 2], ids=["in-process", "parse-workers"])
def serve(tmp_path, request):
    s = Serve(tmp_path, request.param)
    s.start()
    yield s
    s.stop()


async def post_until_refused(s: Serve, client: int, acked: list[str], enough: asyncio.Event,
                             smtp_acked: list[str]) -> None:
    url = f"https://127.0.0.1:{s.http}/v1/tlsrpt"
    gzipped = client % 2 == 1
    async with aiohttp.ClientSession() as session:
        for n in range(100_000):
            rid = f"https-{client}-{n}"
            body = json.dumps(report(rid)).encode()
            headers = {"Content-Type": "application/tlsrpt+json"}
            if gzipped:
                body, headers = gzip.compress(body), {"Content-Type": "application/tlsrpt+gzip"}
            try:
                async with session.post(url, data=body, headers=headers, ssl=s.ctx) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        acked.append(rid)
                        if len(acked) >= KILL_AFTER and smtp_acked:
                            enough.set()
            except (TimeoutError, aiohttp.ClientError, OSError):
                return  # the server is gone: this report was never acknowledged


def mail_until_refused(s: Serve, sender: int, acked: list[str], stop: threading.Event) -> None:
    for n in range(10_000):
        rid = f"smtp-{sender}-{n}"
        try:
            with smtplib.SMTP("127.0.0.1", s.smtp, timeout=30) as smtp:
                smtp.ehlo("sender.example")
                smtp.mail("tlsrpt@sender.example")
                smtp.rcpt("tlsrpt@durable.example")
                code, _ = smtp.data(report_mail(report(rid)))
        except (OSError, smtplib.SMTPException):
            return
        if code == 250:
            acked.append(rid)
        if stop.is_set():
            return


async def test_rfc8460_5_4_every_acknowledged_report_survives_kill_9(serve):
    https_acked: list[str] = []
    smtp_acked: list[str] = []
    enough = asyncio.Event()
    stop = threading.Event()
    senders = [threading.Thread(target=mail_until_refused, args=(serve, i, smtp_acked, stop))
               for i in range(3)]
    for t in senders:
        t.start()
    clients = [asyncio.create_task(post_until_refused(serve, i, https_acked, enough,
                                                      smtp_acked))
               for i in range(CLIENTS)]
    try:
        await asyncio.wait_for(enough.wait(), 120)
    except TimeoutError:
        pass  # a slow machine: kill anyway, the check below is the same
    serve.kill9()  # no shutdown: only what was committed survives
    stop.set()
    await asyncio.gather(*clients)
    for t in senders:
        await asyncio.to_thread(t.join, 60)

    serve.start()  # the same SQLite file, opened again (WAL recovered)
    stored = serve.stored()
    assert len(stored) == len(set(stored))  # nothing stored twice
    stored_set = set(stored)
    assert https_acked and smtp_acked
    assert [r for r in https_acked if r not in stored_set] == []
    assert [r for r in smtp_acked if r not in stored_set] == []
    # The restarted server takes reports again, the killed ones' senders may retry.
    async with aiohttp.ClientSession() as session, session.post(
            f"https://127.0.0.1:{serve.http}/v1/tlsrpt", ssl=serve.ctx,
            data=json.dumps(report(https_acked[0])).encode(),
            headers={"Content-Type": "application/tlsrpt+json"}) as r:
        assert r.status == 200  # a byte-identical re-post of a stored report: duplicate
        assert (await r.json())["status"] == "duplicate"
