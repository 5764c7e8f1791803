"""``smtptls reports serve`` as a process: HTTP (aiohttp, curl) and SMTP (smtplib) intake,
the dashboard shows what came in; and DKIM keys looked up through the lab's DNS."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtptls.config import Config, DnsConfig
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore

TOKEN = "serve-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def report(report_id: str, domain: str = "serve.example", ok: int = 11, failed: int = 4) -> dict:
    return {"organization-name": "Serve Test Org", "report-id": report_id, "contact-info": "x@y.example",
            "date-range": {"start-datetime": "2024-06-01T00:00:00Z", "end-datetime": "2024-06-01T23:59:59Z"},
            "policies": [{"policy": {"policy-type": "sts", "policy-domain": domain,
                                     "policy-string": ["version: STSv1", "mode: enforce"],
                                     "mx-host": [f"mx.{domain}"]},
                          "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
                          "failure-details": [{"result-type": "starttls-not-supported",
                                               "receiving-mx-hostname": f"mx.{domain}",
                                               "sending-mta-ip": "192.0.2.9", "failed-session-count": failed}]}]}


def mail(rep: dict, sender: str = "sender.example") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"tlsrpt@{sender}"
    msg["To"] = "tlsrpt@serve.example"
    msg["Subject"] = f"Report Domain: serve.example Submitter: {sender} Report-ID: <{rep['report-id']}>"
    msg["TLS-Report-Domain"] = "serve.example"
    msg["TLS-Report-Submitter"] = sender
    msg.set_content("TLS report")
    msg.add_attachment(gzip.compress(json.dumps(rep).encode()), maintype="application",
                       subtype="tlsrpt+gzip", filename=f"{sender}!serve.example!1717200000!1717286399.json.gz")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port: int, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("sender.example")
        s.mail("tlsrpt@sender.example")
        s.rcpt("tlsrpt@serve.example")
        return s.data(raw)


@pytest.fixture
def served(tmp_path):
    http, smtp = free_port(), free_port()
    env = {**os.environ, "SMTPTLS_REPORTS_TOKEN": TOKEN}
    argv = [sys.executable, "-m", "smtptls", "reports", "serve", "--db", str(tmp_path / "r.sqlite3"),
            "--listen", f"127.0.0.1:{http}", "--smtp", f"127.0.0.1:{smtp}", "--no-dkim"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"reports serve exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", http), timeout=0.5), \
                    socket.create_connection(("127.0.0.1", smtp), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("reports serve did not start listening")
    yield f"http://127.0.0.1:{http}", smtp, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_serve_accepts_http_curl_and_smtp_and_the_dashboard_shows_them(served, tmp_path):
    url, smtp_port, proc = served
    async with aiohttp.ClientSession() as c:
        async with c.post(url + "/", data=gzip.compress(json.dumps(report("http-1")).encode()),
                          headers={"Content-Type": "application/tlsrpt+gzip"}) as r:
            assert r.status == 201
    body = tmp_path / "curl.json"
    body.write_text(json.dumps(report("curl-1", ok=5, failed=0)))
    done = await asyncio.to_thread(subprocess.run, [
        "curl", "-sS", "-o", os.devnull, "-w", "%{http_code}", "-H", "Content-Type: application/tlsrpt+json",
        "--data-binary", f"@{body}", url + "/v1/tlsrpt"], capture_output=True, text=True, timeout=30)
    assert done.stdout == "201", done.stderr
    code, _ = await asyncio.to_thread(send, smtp_port, mail(report("smtp-1", ok=2, failed=1)))
    assert code == 250
    async with aiohttp.ClientSession() as c:
        async with c.get(url + "/domain?name=serve.example&window=custom&from=2024-06-01"
                         "&to=2024-06-01", headers=AUTH) as r:
            html = await r.text()
        async with c.get(url + "/metrics", headers=AUTH) as r:
            metrics = await r.text()
    for rid in ("http-1", "curl-1", "smtp-1"):
        assert rid in html
    assert '<span class="ok">18</span> successful and <span class="failed">5</span> failed sessions in 3 reports' in html
    assert 'data-date="2024-06-01" data-days="1" data-successful="18" data-failed="5"' in html
    assert 'smtptls_reports_received_total{channel="smtp",outcome="stored"} 1.0' in metrics
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 15) == 0  # clean shutdown


def test_serve_refuses_a_public_listener_without_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SMTPTLS_REPORTS_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "smtptls", "reports", "serve", "--db",
                           str(tmp_path / "r.sqlite3"), "--listen", "0.0.0.0:0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "token" in done.stderr


@pytest.mark.lab
async def test_dkim_key_looked_up_through_the_lab_resolver(lab, tmp_path):
    from tests.lab import LabDomain

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    sender = "rpt-sender.insecure.test"
    await asyncio.to_thread(lab.add, LabDomain(sender, txt={
        "rpt._domainkey": [f"v=DKIM1; k=rsa; s=email:tlsrpt; p={pub}"]}))
    host, port = lab.resolver
    cfg = Config(dns=DnsConfig(nameservers=(host,), port=port, timeout=5.0))
    store = SqliteReportStore(Path(tmp_path) / "r.sqlite3")
    await store.open()
    svc = ReportsService(cfg, ServeOptions(listen=None, smtp="127.0.0.1:0"), store=store)
    await svc.start()
    try:
        def signed(rid: str) -> bytes:
            raw = mail(report(rid), sender)
            return dkim.sign(raw, b"rpt", sender.encode(), pem,
                             include_headers=[b"from", b"to", b"subject", b"tls-report-submitter"]) + raw

        good = signed("lab-1")
        forged = signed("lab-2").replace(b"TLS report\r\n", b"TLS rep0rt\r\n")
        assert b"TLS rep0rt" in forged
        for raw in (good, forged):
            code, _ = await asyncio.to_thread(send, svc.smtp_port, raw)
            assert code == 250
        ok, bad = await store.get_report("lab-1"), await store.get_report("lab-2")
        assert (ok.dkim, ok.dkim_domain) == ("pass", sender)
        # RFC 8460 §3: a report mail without a valid signature MUST be ignored: it is
        # kept aside in the quarantine, never counted
        assert bad is None
        (held,) = await store.list_quarantine()
        assert "DKIM fail" in held.reason
    finally:
        await svc.stop()
        await store.close()
