"""``reports serve`` over HTTP(S): RFC 8460 §5.4 intake, hostile input, dashboard, metrics."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import shutil
import ssl
import subprocess
import zlib

import aiohttp
import pytest
import trustme

from smtptls.config import Config, ReportsConfig
from smtptls.errors import ConfigError
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore

MAX_BODY = 1024 * 1024
TOKEN = "dashboard-s3cret"
GZIP = {"Content-Type": "application/tlsrpt+gzip"}
JSON = {"Content-Type": "application/tlsrpt+json"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def rfc_report(report_id: str = "5065427c-23d3-47ca-b6e0-946ea0e8c4be") -> dict:
    """The RFC 8460 §4.5 example (mx-host as a list)."""
    return {
        "organization-name": "Company-X",
        "date-range": {"start-datetime": "2016-04-01T00:00:00Z", "end-datetime": "2016-04-01T23:59:59Z"},
        "contact-info": "sts-reporting@company-x.example",
        "report-id": report_id,
        "policies": [{
            "policy": {"policy-type": "sts",
                       "policy-string": ["version: STSv1", "mode: testing", "mx: *.mail.company-y.example",
                                         "max_age: 86400"],
                       "policy-domain": "company-y.example", "mx-host": ["*.mail.company-y.example"]},
            "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
            "failure-details": [
                {"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
                 "receiving-mx-hostname": "mx1.mail.company-y.example", "failed-session-count": 100},
                {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
                 "receiving-mx-hostname": "mx2.mail.company-y.example", "receiving-ip": "203.0.113.56",
                 "failed-session-count": 200},
                {"result-type": "validation-failure", "sending-mta-ip": "198.51.100.62",
                 "receiving-ip": "203.0.113.58", "receiving-mx-hostname": "mx-backup.mail.company-y.example",
                 "failed-session-count": 3, "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"},
            ],
        }],
    }


def gz(obj: dict) -> bytes:
    return gzip.compress(json.dumps(obj).encode(), mtime=0)  # same bytes every call


def gzip_bomb(expanded: int) -> bytes:
    """gzip of ``expanded`` zero bytes, made in chunks (never holds the expansion)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    out = [c.compress(chunk) for _ in range(expanded >> 20)]
    out.append(c.flush())
    return b"".join(out)


@pytest.fixture
async def service(tmp_path):
    store = SqliteReportStore(tmp_path / "reports.sqlite3")
    await store.open()
    cfg = Config(reports=ReportsConfig(max_body=MAX_BODY))
    svc = ReportsService(cfg, ServeOptions(listen="127.0.0.1:0", token=TOKEN, verify_dkim=False),
                         store=store)
    await svc.start()
    svc.url = f"http://127.0.0.1:{svc.http_port}"
    yield svc
    await svc.stop()
    await store.close()


@pytest.fixture
async def client():
    async with aiohttp.ClientSession() as session:
        yield session


async def post(client, url, body, headers):
    async with client.post(url, data=body, headers=headers) as r:
        return r.status, await r.json()


@pytest.mark.rfc("8460 5.4")
async def test_rfc8460_5_4_gzip_post_stored_then_repost_acknowledged(service, client):
    status, body = await post(client, service.url + "/", gz(rfc_report()), GZIP)
    assert (status, body["status"]) == (201, "stored")
    status, again = await post(client, service.url + "/", gz(rfc_report()), GZIP)
    assert (status, again["status"], again["id"]) == (200, "duplicate", body["id"])
    assert (await service.store.counts())["reports"] == 1


@pytest.mark.rfc("8460 5.4")
async def test_rfc8460_5_4_json_post_on_the_v1_alias(service, client):
    status, body = await post(client, service.url + "/v1/tlsrpt",
                              json.dumps(rfc_report("json-1")).encode(), JSON)
    assert (status, body["report_id"]) == (201, "json-1")
    stored = await service.store.get_report("json-1")
    assert json.loads(stored.raw_json)["report-id"] == "json-1"  # kept as received


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize("media_type", ["application/json", "text/plain", "application/tlsrpt",
                                        "application/gzip", ""])
async def test_rfc8460_5_3_other_media_types_are_415_and_quarantined(service, client, media_type):
    headers = {"Content-Type": media_type} if media_type else {}
    status, body = await post(client, service.url + "/", gz(rfc_report()), headers)
    assert status == 415
    entry = await service.store.get_quarantine(body["quarantine_id"])
    assert entry.raw == gz(rfc_report()) and "media type" in entry.reason


def deep_nesting() -> bytes:
    return b'{"report-id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def huge_numbers() -> bytes:
    r = json.dumps(rfc_report("huge"))
    return r.replace("5326", "9" * 5000).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        pytest.param(b'{"organization-name": "x", ', JSON, 400, "json", id="malformed-json"),
        pytest.param(b"\xff\xfe\x00garbage", JSON, 400, "", id="not-utf8"),
        pytest.param(deep_nesting(), JSON, 400, "", id="deep-nesting"),
        pytest.param(huge_numbers(), JSON, 400, "", id="huge-number"),
        pytest.param(gz(rfc_report())[:-30], GZIP, 400, "", id="truncated-gzip"),
        pytest.param(b"\x1f\x8bnot really gzip at all", GZIP, 400, "", id="bad-gzip"),
        pytest.param(gzip_bomb(100 * 1024 * 1024), GZIP, 413, "", id="gzip-bomb-100MiB"),
        pytest.param(json.dumps({"policies": []}).encode(), JSON, 400, "", id="missing-fields"),
        pytest.param(b"[]", JSON, 400, "", id="array-not-object"),
    ],
)
async def test_hostile_bodies_are_refused_quarantined_and_the_server_survives(
        service, client, body, headers, status, reason):
    got, answer = await post(client, service.url + "/", body, headers)
    assert got == status, answer
    assert answer["status"] == "quarantined" and answer["reason"]
    assert reason in answer["reason"].lower()
    entry = await service.store.get_quarantine(answer["quarantine_id"])
    assert entry.raw == body  # nothing lost
    async with client.get(service.url + "/healthz") as r:
        assert r.status == 200
    ok, _ = await post(client, service.url + "/", gz(rfc_report("after")), GZIP)
    assert ok == 201


async def test_gzip_bomb_is_small_on_the_wire():
    bomb = gzip_bomb(100 * 1024 * 1024)
    assert len(bomb) < MAX_BODY  # it passes the body cap; the decompressed cap stops it


async def test_body_over_the_cap_is_413(service, client):
    status, body = await post(client, service.url + "/", b"{" + b" " * (MAX_BODY + 10) + b"}", JSON)
    assert status == 413 and "larger" in body["reason"]
    async with client.get(service.url + "/healthz") as r:
        assert r.status == 200


async def test_chunked_body_over_the_cap_is_413(service, client):
    async def chunks():
        for _ in range(40):
            yield b" " * 65536

    async with client.post(service.url + "/", data=chunks(), headers=JSON) as r:
        assert r.status == 413


async def test_dashboard_requires_the_token(service, client):
    for path in ("/", "/reports", "/domain?name=x", "/quarantine", "/metrics", "/report/1"):
        async with client.get(service.url + path) as r:
            assert r.status == 401, path
            assert r.headers["WWW-Authenticate"].startswith("Basic")
    basic = "Basic " + base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    async with client.get(service.url + "/", headers={"Authorization": basic}) as r:
        assert r.status == 200
    async with client.get(service.url + "/", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401


async def test_dashboard_shows_the_report_escaped(service, client):
    evil = rfc_report("<script>alert(1)</script>")
    evil["organization-name"] = '<img src=x onerror="alert(2)">'
    assert (await post(client, service.url + "/", gz(evil), GZIP))[0] == 201
    async with client.get(service.url + "/domain?name=company-y.example&window=custom"
                          "&from=2016-04-01&to=2016-04-01", headers=AUTH) as r:
        html = await r.text()
        assert r.status == 200
        assert "script-src" not in r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert re.search(r'id="totals"><span class="ok">5326</span>.*?<span class="failed">303</span>', html)
    assert 'data-date="2016-04-01" data-days="1" data-successful="5326" data-failed="303"' in html
    pk = (await service.store.list_reports())[0].pk
    async with client.get(f"{service.url}/report/{pk}", headers=AUTH) as r:
        page = await r.text()
    assert "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED" in page and "<script>alert" not in page
    async with client.get(service.url + "/report/999999", headers=AUTH) as r:
        assert r.status == 404


async def test_metrics_count_reports_sessions_and_errors(service, client):
    await post(client, service.url + "/", gz(rfc_report()), GZIP)
    await post(client, service.url + "/", gz(rfc_report()), GZIP)
    await post(client, service.url + "/", b"nope", JSON)
    async with client.get(service.url + "/metrics", headers=AUTH) as r:
        text = await r.text()
    assert 'smtptls_reports_received_total{channel="https",outcome="stored"} 1.0' in text
    assert 'smtptls_reports_received_total{channel="https",outcome="duplicate"} 1.0' in text
    assert 'smtptls_report_sessions_total{result="success"} 5326.0' in text
    assert 'smtptls_report_sessions_total{result="starttls-not-supported"} 200.0' in text
    assert 'smtptls_report_intake_errors_total{channel="https",kind="parse"} 1.0' in text


async def test_quarantine_download_is_an_attachment(service, client):
    _, body = await post(client, service.url + "/", b"<html>", JSON)
    async with client.get(f"{service.url}/quarantine/{body['quarantine_id']}/raw", headers=AUTH) as r:
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert r.headers["Content-Disposition"].startswith("attachment")
        assert await r.read() == b"<html>"


async def test_curl_posts_a_report(service, tmp_path):
    curl = shutil.which("curl")
    if curl is None:
        pytest.fail("curl is not installed (Debian package curl)")
    path = tmp_path / "report.json.gz"
    path.write_bytes(gz(rfc_report("curl-1")))
    argv = [curl, "-sS", "-o", str(tmp_path / "out.json"), "-w", "%{http_code}",
            "-H", "Content-Type: application/tlsrpt+gzip", "--data-binary", f"@{path}",
            service.url + "/v1/tlsrpt"]
    done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=30)
    assert done.stdout == "201", done.stderr
    assert json.loads((tmp_path / "out.json").read_text())["report_id"] == "curl-1"
    assert await service.store.get_report("curl-1") is not None


async def test_https_intake_with_tls_certificate(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    store = SqliteReportStore(tmp_path / "r.sqlite3")
    await store.open()
    svc = ReportsService(Config(), ServeOptions(listen="127.0.0.1:0", tls_cert=str(cert_file),
                                                tls_key=str(key_file), verify_dkim=False), store=store)
    await svc.start()
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        async with aiohttp.ClientSession() as c, c.post(
                f"https://127.0.0.1:{svc.http_port}/", data=gz(rfc_report("tls-1")), headers=GZIP,
                ssl=ctx) as r:
            assert r.status == 201
        # Verification stays on: a client without the CA refuses the connection.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with aiohttp.ClientSession() as c:
                await c.get(f"https://127.0.0.1:{svc.http_port}/healthz")
    finally:
        await svc.stop()
        await store.close()


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "192.0.2.1:8460", "[::]:0"])
async def test_refuses_to_expose_the_dashboard_without_a_token(tmp_path, listen):
    svc = ReportsService(Config(), ServeOptions(listen=listen, verify_dkim=False),
                         store=SqliteReportStore(tmp_path / "r.sqlite3"))
    with pytest.raises(ConfigError, match="token"):
        await svc.start()


async def test_store_down_answers_503_so_the_sender_retries(tmp_path, client):
    store = SqliteReportStore(tmp_path / "r.sqlite3")
    await store.open()
    svc = ReportsService(Config(), ServeOptions(listen="127.0.0.1:0", verify_dkim=False), store=store)
    await svc.start()
    try:
        await store.close()  # the database goes away under the running service
        async with client.post(f"http://127.0.0.1:{svc.http_port}/", data=gz(rfc_report()),
                               headers=GZIP) as r:
            assert r.status == 503
            assert r.headers["Retry-After"]
    finally:
        await svc.stop()
