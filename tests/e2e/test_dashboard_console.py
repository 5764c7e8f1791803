"""The console in a real browser (Debian chromium driven by Playwright): the overview's
ranking and window control, a domain's explanations and flags, filters and paging, the
views without JavaScript, and the layout on a 360-pixel-wide screen.

The reports are dated relative to today and POSTed over HTTP; the numbers the pages
must show are computed here from the same JSON. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import gzip
import json

import aiohttp
import pytest

from smtptls.config import AlertsConfig, Config, ReportsConfig
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore
from tests.e2e.test_dashboard_browser import (  # noqa: F401
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    browser,  # noqa: F401 - the fixture
)
from tests.integration.test_reports_console import SAMPLE, expected, report, week

pytestmark = pytest.mark.e2e

TOKEN = "console-browser-token"
BULK = [report(f"bulk-{i:03d}", "Bulk Mail", "bulk.example", week().start, 3, 0) for i in range(55)]


@pytest.fixture
async def console(tmp_path):
    store = SqliteReportStore(tmp_path / "reports.sqlite3")
    await store.open()
    cfg = Config(reports=ReportsConfig(domains=("failing.example",), rate_limit_per_minute=0),
                 alerts=AlertsConfig(enabled=False))
    svc = ReportsService(cfg, ServeOptions(listen="127.0.0.1:0", token=TOKEN, verify_dkim=False),
                         store=store)
    await svc.start()
    url = f"http://127.0.0.1:{svc.http_port}"
    async with aiohttp.ClientSession() as client:
        for r in [*SAMPLE, *BULK]:
            async with client.post(url + "/v1/tlsrpt", data=gzip.compress(json.dumps(r).encode()),
                                   headers={"Content-Type": "application/tlsrpt+gzip"}) as resp:
                assert resp.status == 201
    yield url
    await svc.stop()
    await store.close()


async def _cells(page, selector: str) -> list[list[str]]:
    return await page.eval_on_selector_all(
        selector, "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


async def _context(browser, **kw):  # noqa: F811 - the fixture's value
    return await browser.new_context(http_credentials={"username": "admin", "password": TOKEN}, **kw)


async def test_overview_window_domain_and_filters_in_the_browser(console, browser):  # noqa: F811
    ARTIFACTS.mkdir(exist_ok=True)
    context = await _context(browser, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await page.goto(console + "/")
    table = await _cells(page, "#domains tbody tr")
    assert table[0][0] == "failing.example"
    for row in table:
        want = expected(row[0], week())
        if row[0] == "bulk.example":
            want = {"successful": 3 * len(BULK), "failed": 0}
        assert [int(row[1]), int(row[2])] == [want["successful"] + want["failed"], want["failed"]]
    assert {r[0] for r in table} == {"failing.example", "healthy.example", "silent.example", "bulk.example"}
    await page.screenshot(path=str(ARTIFACTS / "console-overview.png"), full_page=True)

    # the window control: a link, reflected in the URL and in the numbers
    async with page.expect_navigation():
        await page.click("#window a:text-is('30d')")
    assert "window=30d" in page.url
    silent = next(r for r in await _cells(page, "#domains tbody tr") if r[0] == "silent.example")
    assert int(silent[1]) == expected("silent.example", week(30))["successful"]

    # the domain page keeps the window and explains the counts
    async with page.expect_navigation():
        await page.click("#domains a:text-is('failing.example')")
    assert "name=failing.example" in page.url and "window=30d" in page.url
    assert "failure types overlap" in await page.inner_text("#overlap-note")
    assert await page.locator("p.inconsistent").count() == 1
    assert await page.locator("p.double-count").count() == 1
    fixes = await page.eval_on_selector_all("#failures .fix", "fs => fs.map(f => f.textContent)")
    assert fixes and all(fixes)
    await page.screenshot(path=str(ARTIFACTS / "console-domain.png"), full_page=True)

    # filters and paging on all reports
    await page.goto(console + "/reports")
    await page.select_option("select[name=domain]", "bulk.example")
    async with page.expect_navigation():
        await page.click("#filters button[type=submit]")
    assert "domain=bulk.example" in page.url
    assert "Reports 1–50 of 55" in await page.inner_text("#pager")
    async with page.expect_navigation():
        await page.click("#pager a[rel=next]")
    assert len(await _cells(page, "#reports tbody tr")) == 5
    await page.goto(console + "/reports")
    await page.fill("input[name=q]", "overlap")
    async with page.expect_navigation():  # keyboard only
        await page.keyboard.press("Enter")
    assert [r[0] for r in await _cells(page, "#reports tbody tr")] == ["overlap-1"]
    await context.close()


async def test_core_views_work_with_javascript_off(console, browser):  # noqa: F811
    context = await _context(browser, java_script_enabled=False)
    page = await context.new_page()
    await page.goto(console + "/?window=90d")
    assert await page.locator("#domains tbody tr").count() == 4
    async with page.expect_navigation():
        await page.click("#domains a:text-is('failing.example')")
    assert await page.locator("#failures tbody tr").count() > 0
    await page.goto(console + "/reports")
    await page.select_option("select[name=reporter]", "Microsoft")
    async with page.expect_navigation():
        await page.click("#filters button[type=submit]")
    assert "reporter=Microsoft" in page.url
    assert {r[1] for r in await _cells(page, "#reports tbody tr")} == {"Microsoft"}
    await context.close()


@pytest.mark.parametrize("width", [360, 768])
async def test_narrow_screens_cut_nothing_off(console, browser, width):  # noqa: F811
    context = await _context(browser, viewport={"width": width, "height": 800})
    page = await context.new_page()
    for path, name in (("/", "overview"), ("/domain?name=failing.example", "domain"),
                       ("/reports", "reports")):
        await page.goto(console + path)
        # the page itself never scrolls sideways: wide tables scroll in their own box
        page_width = await page.evaluate("document.documentElement.scrollWidth")
        assert page_width <= width, (path, page_width)
        boxes = await page.eval_on_selector_all(
            "table", "ts => ts.map(t => [getComputedStyle(t.parentElement).overflowX,"
                     " t.parentElement.getBoundingClientRect().right])")
        assert boxes and all(overflow == "auto" and right <= width + 0.5 for overflow, right in boxes)
        charts = await page.eval_on_selector_all("svg.chart", "cs => cs.map(c => c.getBoundingClientRect().right)")
        assert all(right <= width + 0.5 for right in charts)
        await page.screenshot(path=str(ARTIFACTS / f"console-{name}-{width}.png"), full_page=True)
    await context.close()
