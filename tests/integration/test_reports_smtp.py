"""``reports serve`` mail intake: RFC 8460 §5.3 report mail over SMTP and LMTP (aiosmtpd)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import smtplib
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtptls.config import Config
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore
from tests.conftest import FIXTURES

REPORT = {"organization-name": "Sender Inc.", "report-id": "mail-1", "contact-info": "tlsrpt@sender.example",
          "date-range": {"start-datetime": "2024-05-01T00:00:00Z", "end-datetime": "2024-05-01T23:59:59Z"},
          "policies": [{"policy": {"policy-type": "sts", "policy-domain": "receiver.example",
                                   "policy-string": ["version: STSv1", "mode: enforce"],
                                   "mx-host": ["mx.receiver.example"]},
                        "summary": {"total-successful-session-count": 40, "total-failure-session-count": 2},
                        "failure-details": [{"result-type": "certificate-expired",
                                             "receiving-mx-hostname": "mx.receiver.example",
                                             "sending-mta-ip": "192.0.2.5", "failed-session-count": 2}]}]}


@pytest.fixture(scope="module")
def key():
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, f"v=DKIM1; k=rsa; s=email:tlsrpt; p={base64.b64encode(pub).decode()}"


def report_mail(report: dict | None = None, *, attachment: bytes | None = None, pem: bytes | None = None) -> bytes:
    report = report or REPORT
    msg = EmailMessage()
    msg["From"] = "tlsrpt@sender.example"
    msg["To"] = "tlsrpt@receiver.example"
    msg["Subject"] = f"Report Domain: receiver.example Submitter: sender.example Report-ID: <{report['report-id']}>"
    msg["TLS-Report-Domain"] = "receiver.example"
    msg["TLS-Report-Submitter"] = "sender.example"
    msg.set_content("This is an aggregate TLS report from sender.example")
    payload = attachment if attachment is not None else gzip.compress(json.dumps(report).encode())
    msg.add_attachment(payload, maintype="application", subtype="tlsrpt+gzip",
                       filename="sender.example!receiver.example!1714521600!1714607999.json.gz")
    msg.replace_header("Content-Type", msg["Content-Type"].replace("multipart/mixed", "multipart/report")
                       + '; report-type="tlsrpt"')
    raw = msg.as_bytes().replace(b"\n", b"\r\n")
    if pem is not None:
        raw = dkim.sign(raw, b"rpt", b"sender.example", pem,
                        include_headers=[b"from", b"to", b"subject", b"tls-report-submitter"]) + raw
    return raw


def make_lookup(record: str):
    async def lookup(name: str) -> list[str]:
        return [record] if name == "rpt._domainkey.sender.example" else []
    return lookup


@pytest.fixture
async def service(tmp_path, key, request):
    require = getattr(request, "param", False)
    store = SqliteReportStore(tmp_path / "reports.sqlite3")
    await store.open()
    svc = ReportsService(Config(), ServeOptions(listen="127.0.0.1:0", smtp="127.0.0.1:0", lmtp="127.0.0.1:0",
                                                require_dkim=require),
                         store=store, dkim_lookup=make_lookup(key[1]))
    await svc.start()
    yield svc
    await svc.stop()
    await store.close()


def smtp_send(port: int, raw: bytes, rcpts=("tlsrpt@receiver.example",), lmtp: bool = False):
    cls = smtplib.LMTP if lmtp else smtplib.SMTP
    with cls("127.0.0.1", port, timeout=30) as s:
        if not lmtp:
            s.ehlo("sender.example")
        else:
            s.ehlo_or_helo_if_needed()
        s.mail("tlsrpt@sender.example")
        for r in rcpts:
            s.rcpt(r)
        code, text = s.data(raw)
    return code, text.decode()


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_signed_report_by_smtp_is_stored_with_dkim_pass(service, key):
    code, text = await asyncio.to_thread(smtp_send, service.smtp_port, report_mail(pem=key[0]))
    assert code == 250 and "1 report(s) stored" in text
    got = await service.store.get_report("mail-1")
    assert (got.dkim, got.dkim_domain, got.channel, got.submitter) == ("pass", "sender.example", "smtp",
                                                                       "sender.example")
    assert (got.successful, got.failed) == (40, 2)
    assert json.loads(got.raw_json) == REPORT  # the attachment's JSON as sent


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_forged_signature_is_recorded_as_fail(service, key):
    raw = report_mail(pem=key[0]).replace(b"aggregate TLS report", b"aggregate TLS rep0rt")
    code, _ = await asyncio.to_thread(smtp_send, service.smtp_port, raw)
    assert code == 250
    assert (await service.store.get_report("mail-1")).dkim == "fail"


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize("service", [True], indirect=True)
async def test_rfc8460_5_3_require_dkim_quarantines_forged_mail(service, key):
    raw = report_mail(pem=key[0]).replace(b"aggregate TLS report", b"aggregate TLS rep0rt")
    code, text = await asyncio.to_thread(smtp_send, service.smtp_port, raw)
    assert code == 250 and "quarantine" in text
    (entry,) = await service.store.list_quarantine()
    assert entry.reason.startswith("DKIM fail")
    assert (await service.store.get_quarantine(entry.pk)).raw.endswith(raw[-200:])
    assert await service.store.get_report("mail-1") is None
    ok, _ = await asyncio.to_thread(smtp_send, service.smtp_port, report_mail(pem=key[0]))
    assert ok == 250 and await service.store.get_report("mail-1") is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param(b"From: a@b.example\r\nSubject: hello\r\n\r\njust text\r\n", "no tlsrpt report",
                     id="no-attachment"),
        pytest.param(report_mail(attachment=b"\x1f\x8b\x08\x00 definitely not gzip"), "attachment 1",
                     id="bad-gzip-attachment"),
        pytest.param(report_mail(attachment=gzip.compress(b'{"report-id": [[[[')), "attachment 1",
                     id="bad-json-attachment"),
    ],
)
async def test_unreadable_mail_is_accepted_and_quarantined(service, raw, reason):
    code, _ = await asyncio.to_thread(smtp_send, service.smtp_port, raw)
    assert code == 250  # accepted: never dropped, kept with the reason
    (entry,) = await service.store.list_quarantine()
    assert reason in entry.reason.lower() or reason in entry.reason
    assert entry.channel == "smtp"
    stored = (await service.store.get_quarantine(entry.pk)).raw
    assert stored.replace(b"\r\n", b"\n").rstrip() == raw.replace(b"\r\n", b"\n").rstrip()


async def test_lmtp_answers_once_per_recipient(service, key):
    reader, writer = await asyncio.open_connection("127.0.0.1", service.lmtp_port)

    async def reply() -> list[str]:
        lines = []
        while True:
            line = (await asyncio.wait_for(reader.readline(), 10)).decode()
            lines.append(line)
            if line[3:4] != "-":
                return lines

    async def cmd(text: str) -> list[str]:
        writer.write(text.encode() + b"\r\n")
        await writer.drain()
        return await reply()

    assert (await reply())[0].startswith("220")
    assert (await cmd("LHLO sender.example"))[-1].startswith("250")
    assert (await cmd("MAIL FROM:<tlsrpt@sender.example>"))[0].startswith("250")
    for rcpt in ("a@receiver.example", "b@receiver.example"):
        assert (await cmd(f"RCPT TO:<{rcpt}>"))[0].startswith("250")
    assert (await cmd("DATA"))[0].startswith("354")
    body = report_mail(pem=key[0]).replace(b"\r\n.", b"\r\n..")
    writer.write(body + b"\r\n.\r\n")
    await writer.drain()
    first, second = await reply(), await reply()
    assert first[0].startswith("250") and second[0].startswith("250")
    await cmd("QUIT")
    writer.close()
    got = await service.store.get_report("mail-1")
    assert (got.channel, got.dkim) == ("lmtp", "pass")


async def test_lmtp_with_smtplib(service, key):
    code, _ = await asyncio.to_thread(smtp_send, service.lmtp_port, report_mail(pem=key[0]), lmtp=True)
    assert code == 250
    assert (await service.store.get_report("mail-1")).channel == "lmtp"


@pytest.fixture(params=["own", "corpus"])
def report_mails(request):
    """The mails of a report folder, and how many of them repeat a report of another."""
    if request.param == "corpus":
        return sorted((request.getfixturevalue("corpus") / "tlsrpt-reports").glob("*.eml")), 3
    return sorted((FIXTURES / "tlsrpt").glob("*.eml")), 0


async def test_corpus_mails_by_smtp(service, report_mails):
    """The name docs/conformance.md cites; sends the own folder's mails and the corpus'."""
    emls, repeats = report_mails
    assert emls
    for path in emls:
        raw = re.sub(rb"\r?\n", b"\r\n", path.read_bytes())  # SMTP lines end in CRLF
        code, _ = await asyncio.to_thread(smtp_send, service.smtp_port, raw)
        assert code == 250, path.name
    counts = await service.store.counts()
    # Every message is either stored as reports or kept in quarantine; none is lost.
    assert counts["quarantine"] == 1  # the one negative sample (a cron mail)
    assert counts["reports"] >= len(emls) - 1 - repeats


async def test_store_down_answers_451(service, key):
    await service.store.close()
    code, text = await asyncio.to_thread(smtp_send, service.smtp_port, report_mail(pem=key[0]))
    assert code == 451, text  # temporary: the sending MTA keeps the message and retries
    await service.store.open()
