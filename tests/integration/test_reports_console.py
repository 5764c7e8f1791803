"""The report console over real HTTP: reports POSTed to a running ``reports serve``, every
view read back and its numbers compared with numbers computed here from the raw reports."""

from __future__ import annotations

import gzip
import json
import os
import re
from datetime import UTC, date, datetime, timedelta
from html import unescape

import aiohttp
import pytest

from smtptls.config import AlertsConfig, Config, ReportsConfig
from smtptls.services.reports_server import app as console_app
from smtptls.services.reports_server.console import Window
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore

TOKEN = "console-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The sample's days count back from here, and the server's clock is held on it (below), so
#: a run that passes midnight UTC reads the same windows as it wrote.
TODAY = datetime.now(UTC).date()
GZIP = {"Content-Type": "application/tlsrpt+gzip"}


def day(n: int) -> date:
    return TODAY - timedelta(days=n)


def report(rid: str, org: str, domain: str, on: date, ok: int, failed: int,
           details: list[tuple[str, str, int]] = (), *, policy_type: str = "sts",
           hours: int = 24) -> dict:
    start = datetime.combine(on, datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(hours=hours) - timedelta(seconds=1)
    return {
        "organization-name": org, "report-id": rid, "contact-info": f"tlsrpt@{org.lower()}.example",
        "date-range": {"start-datetime": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                       "end-datetime": end.strftime("%Y-%m-%dT%H:%M:%SZ")},
        "policies": [{"policy": {"policy-type": policy_type, "policy-domain": domain,
                                 "mx-host": [f"mx1.{domain}"]},
                      "summary": {"total-successful-session-count": ok,
                                  "total-failure-session-count": failed},
                      "failure-details": [{"result-type": rt, "receiving-mx-hostname": mx,
                                           "failed-session-count": n} for rt, mx, n in details]}],
    }


#: The sample: a failing domain, a healthy one, one gone silent, and a busy reporter.
SAMPLE = (
    # failing.example: Google sees expired certificates for three days, Microsoft fine
    [report(f"g-{i}", "Google", "failing.example", day(i), 100, 5 if i <= 3 else 0,
            [("certificate-expired", "mx1.failing.example", 5)] if i <= 3 else []) for i in range(1, 12)]
    + [report(f"m-{i}", "Microsoft", "failing.example", day(i), 50, 0) for i in range(1, 6)]
    # overlapping failure types in one policy: 4 failed sessions, 3 + 2 details
    + [report("overlap-1", "Yahoo", "failing.example", day(2), 10, 4,
              [("certificate-expired", "mx1.failing.example", 3),
               ("certificate-host-mismatch", "mx1.failing.example", 2)])]
    # inconsistent: 1 failed session, 3 sessions of one type
    + [report("broken-1", "Tundra", "failing.example", day(3), 10, 1,
              [("certificate-not-trusted", "", 3)])]
    # double counting: Comcast's two reports overlap in time
    + [report("c-1", "Comcast", "failing.example", day(4), 7, 0, hours=48),
       report("c-2", "Comcast", "failing.example", day(3), 7, 0)]
    + [report(f"h-{i}", "Google", "healthy.example", day(i), 20, 0) for i in range(1, 8)]
    # silent.example got daily reports until 10 days ago
    + [report(f"s-{i}", "Google", "silent.example", day(i), 30, 0) for i in range(10, 20)]
)


def expected(domain: str, window: Window) -> dict:
    """The numbers a view must show, from the raw sample."""
    out = {"successful": 0, "failed": 0, "reports": 0, "orgs": {}, "types": {}}
    for r in SAMPLE:
        on = date.fromisoformat(r["date-range"]["start-datetime"][:10])
        p = r["policies"][0]
        if p["policy"]["policy-domain"] != domain or not window.start <= on <= window.end:
            continue
        s = p["summary"]
        out["successful"] += s["total-successful-session-count"]
        out["failed"] += s["total-failure-session-count"]
        out["reports"] += 1
        org = out["orgs"].setdefault(r["organization-name"], [0, 0])
        org[0] += s["total-successful-session-count"]
        org[1] += s["total-failure-session-count"]
        for f in p["failure-details"]:
            out["types"][f["result-type"]] = out["types"].get(f["result-type"], 0) + f["failed-session-count"]
    return out


def week(days: int = 7) -> Window:
    return Window(f"{days}d", TODAY - timedelta(days=days - 1), TODAY)


@pytest.fixture(autouse=True)
def _server_today(monkeypatch):
    monkeypatch.setattr(console_app, "_today", lambda: TODAY)


@pytest.fixture
async def console(tmp_path):
    store = SqliteReportStore(tmp_path / "reports.sqlite3")
    await store.open()
    cfg = Config(reports=ReportsConfig(domains=("failing.example", "healthy.example", "new.example"),
                                       rua=("mailto:tlsrpt@reports.example",),
                                       rate_limit_per_minute=0),
                 alerts=AlertsConfig(enabled=False))
    svc = ReportsService(cfg, ServeOptions(listen="127.0.0.1:0", token=TOKEN, verify_dkim=False),
                         store=store)
    await svc.start()
    url = f"http://127.0.0.1:{svc.http_port}"
    async with aiohttp.ClientSession(headers=AUTH) as client:
        yield url, client, store, svc
    await svc.stop()
    await store.close()


async def post_all(url: str, client: aiohttp.ClientSession, reports=SAMPLE) -> None:
    for r in reports:
        async with client.post(url + "/v1/tlsrpt", data=gzip.compress(json.dumps(r).encode()),
                               headers=GZIP) as resp:
            assert resp.status == 201, await resp.text()


async def page(client, url: str) -> str:
    async with client.get(url) as r:
        assert r.status == 200, await r.text()
        assert "script-src" not in r.headers["Content-Security-Policy"]
        return await r.text()


def rows(html: str, table_id: str) -> list[list[str]]:
    m = re.search(rf'<table id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert m, table_id
    out = []
    for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", m.group(1), re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)
        out.append([unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells])
    return out


async def test_overview_ranks_failing_domains_first_for_the_default_week(console):
    url, client, _, _ = console
    await post_all(url, client)
    html = await page(client, url + "/")
    assert 'aria-current="page">7d<' in html  # the default window, marked
    table = rows(html, "domains")
    names = [r[0] for r in table]
    assert names[0] == "failing.example"  # failed sessions first
    assert set(names) == {"failing.example", "healthy.example", "silent.example", "new.example"}
    for r in table:
        want = expected(r[0], week())
        assert int(r[1]) == want["successful"] + want["failed"] and int(r[2]) == want["failed"]
    failing = table[0]
    want = expected("failing.example", week())
    assert failing[3] == f"{100 * want['failed'] / (want['successful'] + want['failed']):.2f} %"
    assert failing[4].startswith("▲")  # worse than the week before, which had no failures
    assert failing[5] == "Comcast, Google, Microsoft, Tundra, Yahoo"
    silent = next(r for r in table if r[0] == "silent.example")
    assert "no reports for 10 days" in silent[7]
    healthy = next(r for r in table if r[0] == "healthy.example")
    # "0 failed" is a plain 0, never in red
    assert re.search(r'healthy\.example</a></td><td class="n">\d+</td><td class="n">0</td>', html)
    assert healthy[7] == "ok"


@pytest.mark.parametrize("key", ["24h", "30d", "90d"])
async def test_window_is_in_the_url_and_changes_the_numbers(console, key):
    url, client, _, _ = console
    await post_all(url, client)
    html = await page(client, f"{url}/?window={key}")
    assert f'aria-current="page">{key}<' in html
    days = {"24h": 2, "30d": 30, "90d": 90}[key]
    for r in rows(html, "domains"):
        want = expected(r[0], week(days))
        assert (int(r[1]), int(r[2])) == (want["successful"] + want["failed"], want["failed"])
    # the domain links keep the window
    assert f"/domain?name=failing.example&amp;window={key}" in html


async def test_custom_window_and_bad_windows(console):
    url, client, _, _ = console
    await post_all(url, client)
    w = Window("custom", day(15), day(10))
    html = await page(client, f"{url}/?window=custom&from={w.start}&to={w.end}")
    silent = next(r for r in rows(html, "domains") if r[0] == "silent.example")
    assert int(silent[1]) == expected("silent.example", w)["successful"] == 180
    for bad in ("?window=1y", "?window=custom&from=nonsense", "?window=custom&from=1990-01-01&to=2030-01-01"):
        async with client.get(url + "/" + bad) as r:
            assert r.status == 400 and "window" in (await r.text())


async def test_domain_page_reporters_failures_advice_and_counts_explained(console):
    url, client, _, _ = console
    await post_all(url, client)
    html = await page(client, f"{url}/domain?name=failing.example&window=7d")
    want = expected("failing.example", week())
    totals = unescape(re.sub(r"<[^>]+>", "", re.search(r'<p id="totals">(.*?)</p>', html).group(1)))
    assert totals.startswith(f"{want['successful']} successful and {want['failed']} failed sessions "
                             f"in {want['reports']} reports")
    reporters = {r[0]: r for r in rows(html, "reporters")}
    for org, (ok, bad) in want["orgs"].items():
        assert (int(reporters[org][2]), int(reporters[org][3])) == (ok + bad, bad)
    failures = rows(html, "failures")
    by_type: dict[str, int] = {}
    for rt, _mx, _org, ptype, first, last, n, _fix in failures:
        by_type[rt] = by_type.get(rt, 0) + int(n)
        assert ptype == "sts" and first <= last
    assert by_type == want["types"]
    expired = next(r for r in failures if r[0] == "certificate-expired" and r[2] == "Google")
    assert (expired[4], expired[5]) == (day(3).isoformat(), day(1).isoformat())
    assert "mx1.failing.example had expired" in expired[7] and "Renew the certificate" in expired[7]
    # RFC 8460 §4.3: overlapping types explained, not called an error
    note = unescape(re.search(r'id="overlap-note">(.*?)</p>', html, re.S).group(1))
    assert "add up to 5 sessions while the reporters counted 4 failed sessions" in note
    assert "RFC 8460 §4.3" in note
    # a summary contradicting its own details is flagged
    assert "Inconsistent report" in html and "broken-1" in html
    # two overlapping reports from one reporter are flagged as possible double counting
    assert re.search(r"Possible double counting: Comcast sent .*c-1.*c-2", html)
    assert "smtptls check failing.example" in html  # own domain: the command to check it
    # charts span the window and end today
    dates = re.findall(r'<g class="day" data-date="([\d-]+)"', html.split('id="chart-sessions"')[1])
    assert dates[0] == week().start.isoformat() and dates[6] == TODAY.isoformat()


async def test_domain_page_for_an_old_domain_offers_the_window_with_its_reports(console):
    url, client, _, _ = console
    await post_all(url, client, [report("old-1", "Google", "old.example", day(400), 5, 0)])
    html = await page(client, f"{url}/domain?name=old.example")
    assert 'id="window-empty"' in html
    link = unescape(re.search(r'id="window-empty">.*?href="([^"]+)"', html).group(1))
    html = await page(client, url + link)
    assert "5 successful and 0 failed sessions in 1 reports" in unescape(re.sub(r"<[^>]+>", "", html))


async def test_reports_list_filters_search_and_paging(console):
    url, client, store, _ = console
    await post_all(url, client)
    extra = [report(f"bulk-{i:03d}", "Bulk", "bulk.example", day(1 + i % 5), 1, 0) for i in range(60)]
    await post_all(url, client, extra)
    html = await page(client, f"{url}/reports?domain=bulk.example")
    assert "Reports 1–50 of 60 (page 1 of 2)" in html
    assert len(rows(html, "reports")) == 50
    nxt = unescape(re.search(r'rel="next" href="([^"]+)"', html).group(1))
    assert "domain=bulk.example" in nxt and "page=2" in nxt
    html = await page(client, url + nxt)
    assert len(rows(html, "reports")) == 10 and "Reports 51–60 of 60" in html
    html = await page(client, f"{url}/reports?reporter=Microsoft")
    assert {r[1] for r in rows(html, "reports")} == {"Microsoft"} and len(rows(html, "reports")) == 5
    html = await page(client, f"{url}/reports?result=certificate-expired")
    assert {r[0] for r in rows(html, "reports")} == {"g-1", "g-2", "g-3", "overlap-1"}
    html = await page(client, f"{url}/reports?q=overlap")
    assert [r[0] for r in rows(html, "reports")] == ["overlap-1"]
    html = await page(client, f"{url}/reports?q=%25")  # LIKE wildcards are literal
    assert "no report matches these filters" in html
    html = await page(client, f"{url}/reports?from={day(2)}&to={day(2)}&domain=failing.example")
    assert {r[0] for r in rows(html, "reports")} == {"g-2", "m-2", "overlap-1"}
    html = await page(client, f"{url}/reports?q=%3Cscript%3E")
    assert "<script>" not in html and "&lt;script&gt;" in html


async def test_conflict_filter_lists_only_reports_in_conflict(console):
    url, client, _, _ = console
    first = report("dup-1", "Google", "healthy.example", day(1), 20, 0)
    changed = json.loads(json.dumps(first))
    changed["policies"][0]["summary"]["total-successful-session-count"] = 999
    await post_all(url, client, [first, report("solo", "Google", "healthy.example", day(2), 1, 0)])
    async with client.post(url + "/v1/tlsrpt", data=gzip.compress(json.dumps(changed).encode()),
                           headers=GZIP) as r:
        assert r.status == 202
    html = await page(client, f"{url}/reports?conflict=1")
    assert [r[0] for r in rows(html, "reports")] == ["dup-1 conflict", "dup-1 conflict"]


async def test_empty_console_says_what_to_publish(console):
    url, client, _, _ = console
    html = unescape(await page(client, url + "/"))
    assert 'id="empty"' in html
    for d in ("failing.example", "healthy.example", "new.example"):
        assert f'_smtp._tls.{d}. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.example"' in html
        assert f"smtptls publish tlsrpt --domain {d} --rua mailto:tlsrpt@reports.example" in html
    reports = await page(client, url + "/reports")
    assert "no reports stored yet" in reports


async def test_core_views_need_no_javascript(console):
    url, client, _, _ = console
    await post_all(url, client)
    for path in ("/", "/?window=30d", "/domain?name=failing.example", "/reports",
                 "/reports?domain=failing.example&page=1", "/quarantine"):
        html = await page(client, url + path)
        assert "<script" not in html.lower() and " on" + "click=" not in html.lower()
    html = await page(client, url + "/reports")
    assert re.search(r'<form method="get" action="/reports" class="filters" id="filters">', html)
    html = await page(client, url + "/")
    assert re.search(r'<form method="get" action="/"', html)  # the custom window


# --- the console's queries on both backends ---------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_store(request, tmp_path):
    import uuid

    from smtptls.errors import StoreError
    from smtptls.store.reports_postgres import PostgresReportStore

    if request.param == "sqlite":
        s = SqliteReportStore(tmp_path / "reports.sqlite3")
    else:
        s = PostgresReportStore(os.environ.get("SMTPTLS_TEST_PG_DSN",
                                               "postgresql://postgres@127.0.0.1:5432/test"),
                                schema=f"test_console_{uuid.uuid4().hex[:12]}")
    try:
        await s.open()
    except StoreError as exc:
        pytest.fail(f"{request.param} report store unavailable: {exc}")
    yield s
    if isinstance(s, PostgresReportStore):
        await s.drop_schema()
    await s.close()


async def test_console_queries_agree_with_the_raw_reports_on_both_backends(any_store):
    from smtptls.services.reports_server.intake import ReportIntake
    from smtptls.store.reports_console import ReportFilter

    intake = ReportIntake(any_store)
    for r in SAMPLE:
        assert (await intake.submit_body(json.dumps(r).encode())).pk
    w = week()
    want = expected("failing.example", w)
    acts = await any_store.reporter_activity(start=w.start, end=w.end, domain="failing.example")
    assert {a.organization: [a.successful, a.failed] for a in acts} == want["orgs"]
    groups = await any_store.failure_groups(domain="failing.example", start=w.start, end=w.end)
    by_type: dict[str, int] = {}
    for g in groups:
        by_type[g.result_type] = by_type.get(g.result_type, 0) + g.sessions
    assert by_type == want["types"]
    checks = await any_store.count_checks(domain="failing.example", start=w.start, end=w.end)
    assert {(c.report_id, c.inconsistent) for c in checks} == {("overlap-1", False), ("broken-1", True)}
    # rfc8461_6: a policy-fetch detail over succeeded sessions is not a count to check
    assert "refresh-1" not in {c.report_id for c in checks}
    overlaps = await any_store.range_overlaps(domain="failing.example", start=w.start, end=w.end)
    assert [(o.first_report_id, o.second_report_id) for o in overlaps] == [("c-1", "c-2")]
    seen = {s.organization: s for s in await any_store.reporter_last_seen(domain="silent.example")}
    assert seen["Google"].last_day == day(10) and seen["Google"].days_reported == 10
    found, total = await any_store.search_reports(ReportFilter(search="g-1"), limit=5)
    assert total == 3 and {r.report_id for r in found} == {"g-1", "g-10", "g-11"}
    found, total = await any_store.search_reports(ReportFilter(search="_"), limit=5)
    assert total == 0  # LIKE wildcards are literal
    found, total = await any_store.search_reports(
        ReportFilter(domain="failing.example", result_type="certificate-expired", organization="Google"))
    assert {r.report_id for r in found} == {"g-1", "g-2", "g-3"} and total == 3
    assert await any_store.failure_types(domain="failing.example", start=w.start, end=w.end) == want["types"]
    assert "Comcast" in await any_store.organizations()


async def test_mailed_report_without_policy_domain_is_filed_under_the_header_domain(tmp_path):
    from smtptls.services.reports_server.intake import Outcome, ReportIntake
    from tests.integration.test_reports_imap import report as mail_report
    from tests.integration.test_reports_imap import report_mail

    store = SqliteReportStore(tmp_path / "hdr.sqlite3")
    await store.open()
    try:
        rep = mail_report("no-domain-1")
        del rep["policies"][0]["policy"]["policy-domain"]
        intake = ReportIntake(store, require_dkim=False)
        (outcome,) = await intake.submit_message(report_mail(rep), verify_dkim=False)
        assert outcome.outcome is Outcome.STORED
        got = await store.get_report("no-domain-1")
        assert got.policy_domains == ("receiver.example",)  # the TLS-Report-Domain header
        assert any("filed under receiver.example, from the TLS-Report-Domain header" in w
                   for w in got.warnings)
        summary = await store.summary(domain="receiver.example")
        assert (summary.successful, summary.failed) == (40, 2)
        assert "policy-domain" not in json.loads(got.raw_json)["policies"][0]["policy"]  # kept as sent
    finally:
        await store.close()


@pytest.mark.parametrize(("header", "filed"), [
    ("Receiver.Example.", "receiver.example"),
    (None, ""),
    ("", ""),
    ("not a domain", ""),
    ("<script>", ""),
    ("a" * 300 + ".example", ""),
])
def test_header_domain_is_used_only_when_it_is_a_domain_name(header, filed):
    from smtptls.services.reports_server.intake import file_under_header_domain
    from smtptls.store.reports_base import ReportRecord

    rep = report("h-1", "Google", "", TODAY, 1, 0)
    record = ReportRecord.from_dict(rep, raw_json=json.dumps(rep))
    out = file_under_header_domain(record, header)
    assert out.policies[0].policy_domain == filed
    assert (out is record) == (not filed)


async def test_metrics_per_own_domain_with_a_bounded_label_set(tmp_path):
    cfg = Config(reports=ReportsConfig(domains=("failing.example", "quiet.example"), rate_limit_per_minute=0),
                 alerts=AlertsConfig(enabled=False))
    store = SqliteReportStore(tmp_path / "m.sqlite3")
    await store.open()
    svc = ReportsService(cfg, ServeOptions(listen="127.0.0.1:0", verify_dkim=False), store=store)
    await svc.start()
    url = f"http://127.0.0.1:{svc.http_port}"
    try:
        async with aiohttp.ClientSession() as client:
            await post_all(url, client, SAMPLE[:12] + [report("x", "Evil", "<label>.example", day(1), 5, 1)])
            async with client.get(url + "/metrics") as r:
                text = await r.text()
    finally:
        await svc.stop()
        await store.close()
    ok = sum(r["policies"][0]["summary"]["total-successful-session-count"] for r in SAMPLE[:12])
    bad = sum(r["policies"][0]["summary"]["total-failure-session-count"] for r in SAMPLE[:12])
    assert f'smtptls_report_domain_sessions_total{{domain="failing.example",outcome="successful"}} {ok:.1f}' in text
    assert f'smtptls_report_domain_sessions_total{{domain="failing.example",outcome="failed"}} {bad:.1f}' in text
    assert 'smtptls_report_domain_sessions_total{domain="quiet.example",outcome="successful"} 0.0' in text
    assert 'smtptls_report_domain_sessions_total{domain="other",outcome="failed"} 1.0' in text
    assert "<label>" not in text  # report contents never become labels
    assert 'smtptls_report_domain_failure_details_total{domain="failing.example",result="certificate-expired"}' in text
    assert 'smtptls_report_domain_last_received_timestamp_seconds{domain="failing.example"}' in text


@pytest.mark.rfc
async def test_rfc8461_6_fetch_failure_over_delivered_sessions_is_not_inconsistent(any_store):
    """A sender that delivered 6 sessions under its cached policy while the refresh
    failed lists sts-policy-fetch-error for them: an overlap, not an inconsistency; a
    session type past the failed total still is one."""
    from smtptls.services.reports_server.intake import ReportIntake

    intake = ReportIntake(any_store)
    for r in (report("refresh-1", "Fastmail", "refresh.example", day(2), 6, 0,
                     [("sts-policy-fetch-error", "", 6)]),
              report("refresh-2", "Fastmail", "refresh.example", day(3), 6, 1,
                     [("sts-policy-fetch-error", "", 6), ("certificate-expired", "", 3)])):
        assert (await intake.submit_body(json.dumps(r).encode())).pk
    w = week()
    checks = await any_store.count_checks(domain="refresh.example", start=w.start, end=w.end)
    assert {(c.report_id, c.largest_type, c.inconsistent) for c in checks} == {
        ("refresh-1", "sts-policy-fetch-error", False),
        ("refresh-2", "certificate-expired", True)}
