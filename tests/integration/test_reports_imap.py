"""Report mail fetched from a real IMAP server: Debian's Dovecot, started for the test
in a temporary directory with its own configuration (nothing of the host's /etc), TLS
with a test CA (trustme), IMAPS and STARTTLS listeners on loopback."""

from __future__ import annotations

import asyncio
import base64
import gzip
import imaplib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtptls.cli.main import main
from smtptls.errors import ImapError
from smtptls.net.imap import DONE_KEYWORD, ImapSecurity, ImapSettings
from smtptls.services.reports_server.imap_fetch import fetch_reports
from smtptls.services.reports_server.intake import ReportIntake
from smtptls.store.reports_sqlite import SqliteReportStore

DOVECOT = "/usr/sbin/dovecot"
USER, PASSWORD = "reports", "imap-test-password"
SENDER = "sender.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dovecot exited: {log.read_text() if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail("dovecot did not listen")


@pytest.fixture(scope="module")
def dovecot():
    if not os.path.exists(DOVECOT):
        pytest.fail("dovecot not found: install the Debian package dovecot-imapd "
                    "(scripts/install-system.sh does)")
    # Dovecot's own processes run as its system users (auth as "dovecot", mail as
    # "nobody"): its directory lies outside pytest's private (0700) temporary tree.
    root = Path(tempfile.mkdtemp(prefix="smtptls-dovecot-"))
    root.chmod(0o755)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    other = trustme.CA()
    other.cert_pem.write_to_path(str(root / "other-ca.pem"))
    (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
    home = root / "home"
    home.mkdir()
    nobody = 65534
    os.chown(home, nobody, nobody)
    imap_port, imaps_port = free_port(), free_port()
    (root / "dovecot.conf").write_text(f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
ssl_dh = </usr/share/dovecot/dh.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={nobody} gid={nobody} home={home}/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")
    log = root / "dovecot.log"
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(root / "dovecot.conf")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_port(imaps_port, proc, log)
        _wait_port(imap_port, proc, log)
        yield {"root": root, "imap": imap_port, "imaps": imaps_port, "ca": str(root / "ca.pem"),
               "other_ca": str(root / "other-ca.pem"), "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def _client(d) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", d["imaps"], ssl_context=ssl.create_default_context(cafile=d["ca"]))
    c.login(USER, PASSWORD)
    return c


@pytest.fixture
def mailbox(dovecot):
    """An empty INBOX (and no Done/Quarantine folders) for each test."""
    c = _client(dovecot)
    for folder in ("Done", "Quarantine"):
        c.delete(folder)
    _, (count,) = c.select("INBOX")
    if int(count):
        c.store("1:*", "+FLAGS.SILENT", "(\\Deleted)")
        c.expunge()
    c.logout()
    return dovecot


def append(d, raw: bytes, folder: str = "INBOX", flags: str = "") -> None:
    c = _client(d)
    typ, _ = c.append(folder, flags or None, None, raw)
    assert typ == "OK"
    c.logout()


def folder_state(d, folder: str) -> list[tuple[bytes, bytes]]:
    """(flags, subject line) of each message in ``folder``."""
    c = _client(d)
    typ, (count,) = c.select(folder, readonly=True)
    if typ != "OK" or not int(count):
        c.logout()
        return []
    _, data = c.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    out = [(item[0], item[1].strip()) for item in data if isinstance(item, tuple)]
    c.logout()
    return out


@pytest.fixture(scope="module")
def key():
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(pub).decode()}"


def report(rid: str, *, ok: int = 40, failed: int = 2) -> dict:
    return {"organization-name": "Sender Inc.", "report-id": rid, "contact-info": f"tlsrpt@{SENDER}",
            "date-range": {"start-datetime": "2024-05-01T00:00:00Z", "end-datetime": "2024-05-01T23:59:59Z"},
            "policies": [{"policy": {"policy-type": "sts", "policy-domain": "receiver.example",
                                     "mx-host": ["mx.receiver.example"]},
                          "summary": {"total-successful-session-count": ok, "total-failure-session-count": failed},
                          "failure-details": [{"result-type": "certificate-expired",
                                               "receiving-mx-hostname": "mx.receiver.example",
                                               "failed-session-count": failed}] if failed else []}]}


def report_mail(rep: dict, pem: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"tlsrpt@{SENDER}"
    msg["To"] = "tlsrpt@receiver.example"
    msg["Subject"] = f"Report Domain: receiver.example Submitter: {SENDER} Report-ID: <{rep['report-id']}>"
    msg["TLS-Report-Domain"] = "receiver.example"
    msg["TLS-Report-Submitter"] = SENDER
    msg.set_content(f"This is an aggregate TLS report from {SENDER}")
    msg.add_attachment(gzip.compress(json.dumps(rep).encode()), maintype="application",
                       subtype="tlsrpt+gzip", filename=f"{SENDER}!receiver.example!1714521600!1714607999.json.gz")
    msg.replace_header("Content-Type", msg["Content-Type"].replace("multipart/mixed", "multipart/report")
                       + '; report-type="tlsrpt"')
    raw = msg.as_bytes().replace(b"\n", b"\r\n")
    if pem is not None:
        raw = dkim.sign(raw, b"rpt", SENDER.encode(), pem,
                        include_headers=[b"from", b"to", b"subject", b"tls-report-submitter"]) + raw
    return raw


def settings(d, **over) -> ImapSettings:
    base = dict(host="127.0.0.1", port=d["imaps"], username=USER, password=PASSWORD,
                security=ImapSecurity.IMAPS, ca_file=d["ca"], done_folder="Done",
                quarantine_folder="Quarantine", timeout=10)
    base.update(over)
    return ImapSettings(**base)


@pytest.fixture
async def store(tmp_path):
    s = SqliteReportStore(tmp_path / "reports.sqlite3")
    await s.open()
    yield s
    await s.close()


def lookup_for(txt: str):
    async def lookup(name: str) -> list[str]:
        assert name == f"rpt._domainkey.{SENDER}"
        return [txt]
    return lookup


async def test_imaps_fetch_stores_dkim_verified_reports_and_moves_them_after_commit(mailbox, store, key):
    pem, txt = key
    append(mailbox, report_mail(report("imap-1"), pem))
    append(mailbox, report_mail(report("imap-2", ok=10, failed=0), pem))
    append(mailbox, b"From: someone@example.org\r\nSubject: hello\r\n\r\nnot a report\r\n")
    intake = ReportIntake(store, dkim_lookup=lookup_for(txt), require_dkim=True)
    result = await fetch_reports(intake, settings(mailbox))
    assert (result.messages, result.stored, result.quarantined, result.left) == (3, 2, 1, 0)
    stored = {r.report_id: r for r in await store.list_reports()}
    assert set(stored) == {"imap-1", "imap-2"}
    assert all(r.dkim == "pass" and r.channel == "imap" for r in stored.values())
    assert stored["imap-1"].remote.startswith(f"imap://{USER}@127.0.0.1:")  # no password
    assert PASSWORD not in stored["imap-1"].remote
    (held,) = await store.list_quarantine()
    assert held.channel == "imap" and "DKIM" in held.reason
    assert folder_state(mailbox, "INBOX") == []
    done = folder_state(mailbox, "Done")
    assert len(done) == 2 and all(b"\\Seen" in flags and DONE_KEYWORD.encode() in flags for flags, _ in done)
    assert [s for _, s in folder_state(mailbox, "Quarantine")] == [b"Subject: hello"]
    summary = await store.summary(domain="receiver.example")
    assert (summary.successful, summary.failed) == (50, 2)


async def test_starttls_fetch_and_a_second_run_finds_nothing(mailbox, store, key):
    pem, txt = key
    append(mailbox, report_mail(report("tls-1"), pem))
    intake = ReportIntake(store, dkim_lookup=lookup_for(txt), require_dkim=True)
    s = settings(mailbox, port=mailbox["imap"], security=ImapSecurity.STARTTLS, done_folder="",
                 quarantine_folder="")
    first = await fetch_reports(intake, s)
    second = await fetch_reports(intake, s)
    assert (first.messages, first.stored) == (1, 1)
    assert second.messages == 0
    ((flags, _),) = folder_state(mailbox, "INBOX")  # kept in place, marked handled
    assert b"\\Seen" in flags and DONE_KEYWORD.encode() in flags


async def test_refetch_after_a_crash_is_a_duplicate_not_a_double_count(mailbox, store, key):
    pem, txt = key
    raw = report_mail(report("again-1"), pem)
    append(mailbox, raw)
    intake = ReportIntake(store, dkim_lookup=lookup_for(txt), require_dkim=True)
    await fetch_reports(intake, settings(mailbox))
    append(mailbox, raw)  # as if the first run died after the commit, before the move
    result = await fetch_reports(intake, settings(mailbox))
    assert (result.stored, result.duplicate) == (0, 1)
    summary = await store.summary(domain="receiver.example")
    assert (summary.reports, summary.failed) == (1, 2)


async def test_store_down_leaves_the_message_unseen_in_the_folder(mailbox, tmp_path, key):
    pem, txt = key
    append(mailbox, report_mail(report("down-1"), pem))
    broken = SqliteReportStore(tmp_path / "broken.sqlite3")
    await broken.open()
    await broken.close()  # every write now raises StoreError
    intake = ReportIntake(broken, dkim_lookup=lookup_for(txt), require_dkim=True)
    result = await fetch_reports(intake, settings(mailbox))
    assert (result.messages, result.left) == (1, 1) and result.errors
    ((flags, _),) = folder_state(mailbox, "INBOX")
    assert b"\\Seen" not in flags and DONE_KEYWORD.encode() not in flags


async def test_certificate_from_another_ca_is_refused_before_login(mailbox, store):
    intake = ReportIntake(store)
    for security, port in ((ImapSecurity.IMAPS, mailbox["imaps"]), (ImapSecurity.STARTTLS, mailbox["imap"])):
        with pytest.raises(ImapError) as exc:
            await fetch_reports(intake, settings(mailbox, ca_file=mailbox["other_ca"], security=security,
                                                 port=port))
        assert "certificate" in str(exc.value) and PASSWORD not in str(exc.value)


async def test_wrong_password_is_a_typed_error_without_the_password(mailbox, store):
    with pytest.raises(ImapError) as exc:
        await fetch_reports(ReportIntake(store), settings(mailbox, password="wrong-secret"))
    assert exc.value.stage == "login" and "wrong-secret" not in str(exc.value)


async def test_oversized_message_is_not_fetched_and_moved_aside(mailbox, store, key):
    pem, txt = key
    append(mailbox, report_mail(report("big-1"), pem))
    intake = ReportIntake(store, dkim_lookup=lookup_for(txt), require_dkim=True)
    result = await fetch_reports(intake, settings(mailbox, max_message=500))
    assert (result.quarantined, result.stored) == (1, 0)
    (held,) = await store.list_quarantine()
    assert "over the 500-byte limit" in held.reason
    assert len(folder_state(mailbox, "Quarantine")) == 1


async def test_cli_reports_fetch_with_the_config_file(mailbox, tmp_path, key, capsys):
    pem, txt = key
    append(mailbox, report_mail(report("cli-1"), pem))
    (tmp_path / "imap-password").write_text(PASSWORD + "\n")
    cfg = tmp_path / "smtptls.toml"
    cfg.write_text(f"""
[reports]
sqlite_path = "{tmp_path / 'cli.sqlite3'}"
require_dkim = false

[reports.imap]
host = "127.0.0.1"
port = {mailbox['imaps']}
username = "{USER}"
password_file = "{tmp_path / 'imap-password'}"
ca_file = "{mailbox['ca']}"
done_folder = "Done"
""")
    code = await asyncio.to_thread(main, ["reports", "fetch", "--config", str(cfg), "--no-dkim", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["stored"] == 1 and out["messages"] == 1
    assert len(folder_state(mailbox, "Done")) == 1


def _report_ids(raw: bytes) -> set[tuple[str, str]]:
    """(report-id, organization) of every report attached to a mail, read here directly."""
    import email as email_mod
    import email.policy

    msg = email_mod.message_from_bytes(raw, policy=email.policy.compat32)
    out = set()
    for part in msg.walk():
        name = str(part.get_filename() or "")
        if part.is_multipart() or not (part.get_content_type().startswith("application/tlsrpt")
                                        or name.endswith((".json", ".gz"))):
            continue
        body = part.get_payload(decode=True)
        try:
            data = json.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
            out.add((data["report-id"], data["organization-name"]))
        except (ValueError, KeyError, OSError):
            continue
    return out


async def test_real_report_mails_of_the_corpus_through_imap(mailbox, store, corpus):
    mails = sorted((corpus / "tlsrpt-reports").glob("*.eml"))
    assert mails
    expected: set[tuple[str, str]] = set()
    for path in mails:
        raw = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        append(mailbox, raw)
        expected |= _report_ids(raw)
    intake = ReportIntake(store, require_dkim=False)  # the real signers' keys are not on loopback
    result = await fetch_reports(intake, settings(mailbox))
    assert result.messages == len(mails) and result.left == 0
    stored = {(r.report_id, r.organization) for r in await store.list_reports(limit=1000)}
    assert stored == expected
    assert folder_state(mailbox, "INBOX") == []
    assert len(folder_state(mailbox, "Done")) + len(folder_state(mailbox, "Quarantine")) == len(mails)


async def test_serve_polls_the_configured_mailbox(mailbox, tmp_path, key):
    from smtptls.config import AlertsConfig, Config, ReportsConfig, ReportsImapConfig
    from smtptls.services.reports_server.server import ReportsService, ServeOptions

    pem, txt = key
    (tmp_path / "pw").write_text(PASSWORD)
    cfg = Config(reports=ReportsConfig(imap=ReportsImapConfig(
        host="127.0.0.1", port=mailbox["imaps"], username=USER, password_file=str(tmp_path / "pw"),
        ca_file=mailbox["ca"], done_folder="Done", interval=0.5)), alerts=AlertsConfig(enabled=False))
    store = SqliteReportStore(tmp_path / "serve.sqlite3")
    await store.open()
    svc = ReportsService(cfg, ServeOptions(listen=None), store=store, dkim_lookup=lookup_for(txt))
    await svc.start()
    try:
        append(mailbox, report_mail(report("polled-1"), pem))
        for _ in range(100):
            if await store.get_report("polled-1"):
                break
            await asyncio.sleep(0.1)
        got = await store.get_report("polled-1")
        assert got is not None and got.dkim == "pass" and got.channel == "imap"
    finally:
        await svc.stop()
        await store.close()
    assert len(folder_state(mailbox, "Done")) == 1
