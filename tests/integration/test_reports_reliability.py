"""``smtptls reports serve`` under attack: forged reports, multi-member gzip, memory in
flight, storage growth; each against the real service as a process on loopback."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import re
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

TOKEN = "reliability-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GZIP = {"Content-Type": "application/tlsrpt+gzip"}
JSON = {"Content-Type": "application/tlsrpt+json"}
ORG = "Genuine Reporter"
DOMAIN = "victim.example"
MiB = 1024 * 1024


def report(report_id: str, ok: int, failed: int, *, details: int = 1, org: str = ORG) -> dict:
    per = failed // details if details else 0
    failures = [{"result-type": "certificate-expired" if i % 2 else "starttls-not-supported",
                 "receiving-mx-hostname": f"mx{i % 7}.{DOMAIN}", "sending-mta-ip": f"192.0.2.{i % 250}",
                 "failed-session-count": per + (failed - per * details if i == 0 else 0)}
                for i in range(details)]
    return {"organization-name": org, "report-id": report_id, "contact-info": "tlsrpt@reporter.example",
            "date-range": {"start-datetime": "2024-06-01T00:00:00Z", "end-datetime": "2024-06-01T23:59:59Z"},
            "policies": [{"policy": {"policy-type": "sts", "policy-domain": DOMAIN,
                                     "policy-string": ["version: STSv1", "mode: enforce"],
                                     "mx-host": [f"mx.{DOMAIN}"]},
                          "summary": {"total-successful-session-count": ok,
                                      "total-failure-session-count": failed},
                          "failure-details": failures}]}


def gz(obj: dict) -> bytes:
    return gzip.compress(json.dumps(obj).encode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    http: int
    smtp: int
    db: Path
    proc: subprocess.Popen
    config: Path

    def cli(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "smtptls", "reports", *argv, "--db", str(self.db),
                               "--config", str(self.config)],
                              capture_output=True, text=True, timeout=120)

    def cli_json(self, *argv: str):
        done = self.cli(*argv, "--json")
        assert done.returncode in (0, 1), done.stderr
        return json.loads(done.stdout)

    def rss(self) -> int:
        """Resident set size of the serving process, bytes (/proc/<pid>/status)."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) * 1024


def start_serve(tmp_path: Path, reports: dict, dns: tuple[str, int] | None = None,
                *, verify_dkim: bool = False) -> Served:
    http, smtp = free_port(), free_port()
    db = tmp_path / "reports.sqlite3"
    lines = ["[reports]"] + [f"{k} = {json.dumps(v)}" for k, v in reports.items()]
    if dns is not None:
        lines += ["[dns]", f'nameservers = ["{dns[0]}"]', f"port = {dns[1]}", "timeout = 5.0"]
    config = tmp_path / "smtptls.toml"
    config.write_text("\n".join(lines) + "\n")
    argv = [sys.executable, "-m", "smtptls", "reports", "serve", "--config", str(config), "--db", str(db),
            "--listen", f"127.0.0.1:{http}", "--smtp", f"127.0.0.1:{smtp}"]
    if not verify_dkim:
        argv.append("--no-dkim")
    proc = subprocess.Popen(argv, env={**os.environ, "SMTPTLS_REPORTS_TOKEN": TOKEN},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
    return Served(f"http://127.0.0.1:{http}", http, smtp, db, proc, config)


def stop_serve(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait()


@pytest.fixture
def serve(tmp_path) -> Iterator:
    started: list[Served] = []

    def run(reports: dict | None = None, **kw) -> Served:
        s = start_serve(tmp_path, reports or {}, **kw)
        started.append(s)
        return s

    yield run
    for s in started:
        stop_serve(s)


async def post(url: str, body: bytes, headers=GZIP, *, local: str | None = None) -> tuple[int, dict, dict]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0)) if local else None
    async with aiohttp.ClientSession(connector=connector) as c:
        async with c.post(url + "/v1/tlsrpt", data=body, headers=headers) as r:
            text = await r.text()
            try:
                data = json.loads(text)
            except ValueError:
                data = {"text": text}
            return r.status, data, dict(r.headers)


async def get(url: str, path: str) -> str:
    async with aiohttp.ClientSession() as c:
        async with c.get(url + path, headers=AUTH) as r:
            assert r.status == 200, path
            return await r.text()


def report_mail(rep: dict, sender: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"tlsrpt@{sender}"
    msg["To"] = f"tlsrpt@{DOMAIN}"
    msg["Subject"] = f"Report Domain: {DOMAIN} Submitter: {sender} Report-ID: <{rep['report-id']}>"
    msg["TLS-Report-Domain"] = DOMAIN
    msg["TLS-Report-Submitter"] = sender
    msg.set_content(f"This is an aggregate TLS report from {sender}")
    msg.add_attachment(gz(rep), maintype="application", subtype="tlsrpt+gzip",
                       filename=f"{sender}!{DOMAIN}!1717200000!1717286399.json.gz")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def smtp_send(port: int, raw: bytes) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("reporter.example")
        s.mail("tlsrpt@reporter.example")
        s.rcpt(f"tlsrpt@{DOMAIN}")
        code, text = s.data(raw)
    return code, text.decode()


# --- 1. a forged report does not displace the genuine one ---------------------------------


@pytest.fixture
def dkim_sender(lab):
    """A reporter domain in the lab's DNS with a DKIM key; returns (domain, private key PEM)."""
    from tests.lab import LabDomain

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    sender = "genuine-reporter.insecure.test"
    lab.add(LabDomain(sender, txt={"rpt._domainkey": [f"v=DKIM1; k=rsa; s=email:tlsrpt; p={pub}"]}))
    return sender, pem


@pytest.mark.lab
@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_forged_post_first_then_dkim_mail_both_kept_genuine_counted(serve, lab, dkim_sender):
    sender, pem = dkim_sender
    s = serve(dns=lab.resolver, verify_dkim=True)
    forged = report("2024-06-01T00:00:00Z_victim", ok=0, failed=999_999)
    genuine = report("2024-06-01T00:00:00Z_victim", ok=5_000, failed=12, details=3)

    status, body, _ = await post(s.url, gz(forged))
    assert (status, body["status"]) == (201, "stored")
    raw = report_mail(genuine, sender)
    signed = dkim.sign(raw, b"rpt", sender.encode(), pem,
                       include_headers=[b"from", b"to", b"subject", b"tls-report-submitter"]) + raw
    code, text = await asyncio.to_thread(smtp_send, s.smtp, signed)
    assert code == 250
    assert "conflict" in text and "report(s) stored" not in text

    listed = s.cli_json("list")
    assert len(listed) == 2  # both kept
    by_origin = {r["provenance"]: r for r in listed}
    assert set(by_origin) == {"https", "dkim"}
    assert all(r["conflict"] for r in listed)
    assert by_origin["dkim"]["counted"] and not by_origin["https"]["counted"]
    assert by_origin["dkim"]["dkim"] == "pass"

    summary = s.cli_json("summary", "--domain", DOMAIN)
    assert summary["totals"] == {"reports": 1, "successful_sessions": 5_000, "failed_sessions": 12}
    text = s.cli("list").stdout
    assert text.count("[conflict, not counted]") == 1 and text.count("[conflict]") == 1
    index = await get(s.url, "/?window=custom&from=2024-06-01&to=2024-06-01")
    # dashboard totals: the genuine one (5000 successful + 12 failed sessions)
    assert ">5012<" in index and "999999" not in index
    page = await get(s.url, "/reports")
    assert page.count('class="badge conflict"') == 2
    assert f'href="/report/{by_origin["https"]["id"]}#conflict"' in page
    forged_page = await get(s.url, f"/report/{by_origin['https']['id']}")
    assert f'href="/report/{by_origin["dkim"]["id"]}"' in forged_page
    assert "Another one is counted in the summaries" in forged_page

    # A byte-identical re-POST of either body is a duplicate; a new forgery another conflict,
    # which does not take the place of the DKIM-verified report.
    status, body, _ = await post(s.url, gz(forged))
    assert (status, body["status"]) == (200, "duplicate")
    status, body, _ = await post(s.url, gz(genuine))
    assert (status, body["status"]) == (200, "duplicate")
    status, body, _ = await post(s.url, gz(report("2024-06-01T00:00:00Z_victim", ok=1, failed=7)))
    assert (status, body["status"], body["counted"]) == (202, "conflict", False)
    assert sorted(body["conflicts_with"]) == sorted(r["id"] for r in listed)
    summary = s.cli_json("summary", "--domain", DOMAIN)
    assert summary["totals"]["failed_sessions"] == 12


async def test_smtp_reply_says_duplicate_for_a_report_already_stored(serve):
    s = serve()
    raw = report_mail(report("dup-1", ok=3, failed=1), "reporter.example")
    code, text = await asyncio.to_thread(smtp_send, s.smtp, raw)
    assert code == 250 and "1 report(s) stored" in text
    code, text = await asyncio.to_thread(smtp_send, s.smtp, raw)
    assert code == 250 and "1 duplicate" in text and "report(s) stored" not in text
    assert len(s.cli_json("list")) == 1


# --- 2. multi-member gzip: the stored JSON is what was parsed ------------------------------


async def test_multi_member_gzip_report_stored_whole_and_shown(serve):
    s = serve()
    rep = report("multi-member-1", ok=77, failed=5, details=5)
    text = json.dumps(rep).encode()
    half = len(text) // 2
    body = gzip.compress(text[:half]) + gzip.compress(text[half:])  # RFC 1952 §2.2: members
    status, answer, _ = await post(s.url, body)
    assert status == 201, answer
    done = s.cli("show", str(answer["id"]), "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["report"] == rep and "report_error" not in shown
    assert (shown["successful_sessions"], shown["failed_sessions"]) == (77, 5)
    with sqlite3.connect(s.db) as db:
        (raw,) = db.execute("SELECT raw_json FROM reports WHERE id = ?", (answer["id"],)).fetchone()
    assert raw.encode() == text  # exactly the text parsed, every member


async def test_show_json_never_raises_on_a_stored_report_that_does_not_decode(serve):
    s = serve()
    status, answer, _ = await post(s.url, gz(report("broken-1", ok=1, failed=0)))
    assert status == 201
    with sqlite3.connect(s.db) as db:  # what the old intake stored for a multi-member body
        db.execute("UPDATE reports SET raw_json = substr(raw_json, 1, 40) WHERE id = ?", (answer["id"],))
    done = s.cli("show", str(answer["id"]), "--json")
    assert done.returncode == 0 and "Traceback" not in done.stderr
    shown = json.loads(done.stdout)
    assert shown["report"] is None and "does not decode" in shown["report_error"]
    assert len(shown["report_text"]) == 40
    assert "broken-1" in await get(s.url, f"/report/{answer['id']}")


# --- 3. bytes in flight are bounded over all requests and sessions -------------------------


def stalled_upload(port: int, size: int) -> tuple[socket.socket, bytes]:
    """A POST that declares ``size`` bytes, sends all but the last and stalls; with the
    server's answer if it gave one at once (then the rest is not sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"POST /v1/tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+gzip\r\n"
                 f"Content-Length: {size}\r\n\r\n".encode() + b"\x1f\x8b" + b"\0" * 65534)
    answer = answer_of(sock, 0.5)
    if answer is None:
        try:
            sock.sendall(b"\0" * (size - 65537))
        except OSError:  # refused and closed by the server meanwhile
            return sock, b"closed"
        answer = answer_of(sock, 0.2)
    return sock, answer or b""


def answer_of(sock: socket.socket, wait: float) -> bytes | None:
    """What the server sent (b"" when it closed), or None while it says nothing."""
    sock.settimeout(wait)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return None
    except OSError:
        return b""


async def inflight(url: str) -> float:
    metrics = await get(url, "/metrics")
    return float(re.search(r"^smtptls_reports_inflight_bytes (\S+)$", metrics, re.M).group(1))


async def settled(url: str, done, tries: int = 300) -> bool:
    """Whether the in-flight gauge meets ``done`` within ``tries`` looks, 0.1 s apart."""
    for _ in range(tries):
        if done(await inflight(url)):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_stalled_uploads_past_the_inflight_cap_are_refused_and_memory_stays_bounded(serve):
    cap, each, count = 16 * MiB, 4 * MiB, 30  # 30 uploads of 4 MiB: 120 MiB without a cap
    s = serve({"max_inflight": cap})
    before = s.rss()
    uploads = [await asyncio.to_thread(stalled_upload, s.http, each) for _ in range(count)]
    held = [sk for sk, answer in uploads if not answer]
    answers = [answer for _, answer in uploads if answer]
    assert len(held) == cap // each  # the budget holds four; every further one is refused
    assert len(answers) == count - cap // each
    assert all(a.startswith(b"HTTP/1.1 503") and b"Retry-After" in a for a in answers
               if a != b"closed")
    assert sum(a.startswith(b"HTTP/1.1 503") for a in answers) >= len(answers) // 2
    assert await inflight(s.url) == cap
    grown = s.rss() - before
    assert grown < cap + 40 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
    code, text = await asyncio.to_thread(smtp_send_sized, s.smtp, 9 * MiB)
    assert code == 452 and "4.3.1" in text  # mail shares the budget
    for sk in held:
        sk.close()
    assert await settled(s.url, lambda used: used == 0)  # released
    status, _, _ = await post(s.url, gz(report("after-1", ok=1, failed=0)))
    assert status == 201
    code, _ = await asyncio.to_thread(smtp_send_sized, s.smtp, 9 * MiB)
    assert code == 250  # SIZE declared, message sent


def smtp_send_sized(port: int, size: int) -> tuple[int, str]:
    """Declare ``size`` (RFC 1870) and send a small report mail."""
    raw = report_mail(report("sized-1", ok=1, failed=0), "reporter.example")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("reporter.example")
        s.mail("tlsrpt@reporter.example", [f"SIZE={size}"])
        s.rcpt(f"tlsrpt@{DOMAIN}")
        try:
            code, text = s.data(raw)
        except smtplib.SMTPDataError as exc:
            code, text = exc.smtp_code, exc.smtp_error
    return code, text.decode()


async def test_chunked_uploads_are_counted_as_they_arrive(serve):
    s = serve({"max_body": MiB, "max_inflight": 2 * MiB})

    def chunked(nbytes: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", s.http), timeout=30)
        sock.sendall(b"POST /v1/tlsrpt HTTP/1.1\r\nHost: x\r\nContent-Type: application/tlsrpt+gzip\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        sock.sendall(f"{nbytes:x}\r\n".encode() + b"\0" * nbytes + b"\r\n")
        return sock

    held = [await asyncio.to_thread(chunked, 900 * 1024) for _ in range(2)]
    assert await settled(s.url, lambda used: used >= 1800 * 1024)
    third = await asyncio.to_thread(chunked, 512 * 1024)
    assert (await asyncio.to_thread(answer_of, third, 10)).startswith(b"HTTP/1.1 503")
    for sock in held:
        assert await asyncio.to_thread(answer_of, sock, 0.3) is None  # still being received
        sock.close()
    third.close()


# --- 4. storage limits --------------------------------------------------------------------


async def test_failure_details_beyond_the_row_limit_are_folded_with_exact_totals(serve):
    s = serve({"max_failure_rows": 100})
    rep = report("many-details", ok=10, failed=30_000, details=3_000)
    status, answer, _ = await post(s.url, gz(rep))
    assert status == 201
    with sqlite3.connect(s.db) as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM failures").fetchone()
    assert rows == 100 + 2  # kept as given, then one row per result type
    summary = s.cli_json("summary")
    assert summary["totals"]["failed_sessions"] == 30_000
    by_type: dict[str, int] = {}
    for f in rep["policies"][0]["failure-details"]:
        by_type[f["result-type"]] = by_type.get(f["result-type"], 0) + f["failed-session-count"]
    assert summary["days"][0]["failures_by_result_type"] == by_type  # exact per type
    shown = s.cli_json("show", str(answer["id"]))
    assert shown["report"] == rep  # the report as received is kept


async def test_report_page_paginates_failure_details(serve):
    s = serve({"failure_page_size": 50})
    status, answer, _ = await post(s.url, gz(report("paged", ok=1, failed=120, details=120)))
    assert status == 201
    first = await get(s.url, f"/report/{answer['id']}")
    last = await get(s.url, f"/report/{answer['id']}?page=3")
    rows = re.compile(r'<tr><td>(?:certificate-expired|starttls-not-supported)</td>')
    assert len(rows.findall(first)) == 50 and len(rows.findall(last)) == 20
    assert "page 1 of 3" in first and f'href="/report/{answer["id"]}?page=2" rel="next"' in first
    assert "Failure details 101–120 of 120" in last


async def test_quarantine_beyond_its_size_limit_keeps_a_digest_and_an_excerpt(serve):
    s = serve({"quarantine_max_bytes": 20_000, "quarantine_excerpt": 512})
    junk = [bytes([65 + i]) * 8_000 for i in range(5)]
    for body in junk:
        status, _, _ = await post(s.url, body, JSON)
        assert status == 400  # not a report: quarantined
    entries = sorted(s.cli_json("quarantine"), key=lambda q: q["id"])
    assert [q["excerpt_only"] for q in entries] == [False, False, True, True, True]
    assert [q["size"] for q in entries] == [8_000] * 5
    assert [q["sha256"] for q in entries] == [hashlib.sha256(b).hexdigest() for b in junk]
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "smtptls", "reports", "quarantine", "--db", str(s.db),
        "--raw", str(entries[-1]["id"])], capture_output=True, timeout=60)
    raw = done.stdout
    assert raw == junk[-1][:512]
    listing = s.cli("quarantine").stdout
    assert listing.count(" excerpt ") == 3 and listing.count(" whole ") == 2
    with sqlite3.connect(s.db) as db:
        (kept,) = db.execute("SELECT SUM(LENGTH(raw)) FROM quarantine").fetchone()
    assert kept == 2 * 8_000 + 3 * 512


async def test_posts_past_the_per_address_rate_limit_get_429(serve):
    s = serve({"rate_limit_per_minute": 0.01, "rate_limit_burst": 3})
    statuses = [(await post(s.url, gz(report(f"rate-{i}", ok=1, failed=0))))[:1][0] for i in range(3)]
    assert statuses == [201, 201, 201]
    status, body, headers = await post(s.url, gz(report("rate-3", ok=1, failed=0)))
    assert status == 429 and int(headers["Retry-After"]) > 0
    status, _, _ = await post(s.url, gz(report("rate-4", ok=1, failed=0)), local="127.0.0.2")
    assert status == 201  # another source address has its own allowance
    assert len(s.cli_json("list")) == 4


# --- 5. import output names whole files ---------------------------------------------------


def test_an_inflight_budget_smaller_than_one_message_is_refused_at_start(tmp_path):
    config = tmp_path / "smtptls.toml"
    config.write_text("[reports]\nmax_body = 1048576\nmax_inflight = 1048576\n")
    done = subprocess.run([sys.executable, "-m", "smtptls", "reports", "serve", "--config", str(config),
                           "--db", str(tmp_path / "r.sqlite3"), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "reports.max_inflight" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_import_output_shows_whole_file_names(tmp_path):
    folder = tmp_path / "a-folder-with-a-rather-long-name-for-reports" / "received-2024-06-01"
    folder.mkdir(parents=True)
    path = folder / "reporter.example!victim.example!1717200000!1717286399.json.gz"
    path.write_bytes(gz(report("import-1", ok=1, failed=0)))
    done = subprocess.run([sys.executable, "-m", "smtptls", "reports", "import", "--db",
                           str(tmp_path / "r.sqlite3"), str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert str(path) in done.stdout and "…" not in done.stdout
