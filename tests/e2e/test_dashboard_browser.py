"""The dashboard in a real browser (Debian chromium driven by Playwright).

Sample data: every report of a folder, imported with the CLI: the project's own reports
(tests/fixtures/tlsrpt, always there) and the real-world corpus (skipped without it, see
tests/conftest.py). The numbers the page must show are computed here from the raw JSON,
independently of the store. A screenshot
of each page lands in test-artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import gzip
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtptls.cli.main import main
from smtptls.config import Config
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore
from tests.conftest import FIXTURES

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token"


@pytest.fixture(params=["own", "corpus"])
def sample(request) -> tuple[Path, str]:
    """A folder of reports, and the policy domain whose page is looked at."""
    if request.param == "corpus":
        return request.getfixturevalue("corpus") / "tlsrpt-reports", "example.com"
    return FIXTURES / "tlsrpt", "example.net"


def _payloads(path: Path) -> list[dict]:
    data = path.read_bytes()
    if path.suffix == ".json":
        return [json.loads(data)]
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    out = []
    for part in msg.walk():
        ctype = part.get_content_type()
        name = str(part.get_filename() or part.get_param("name") or "")
        if part.is_multipart() or not (ctype.startswith("application/tlsrpt")
                                        or name.endswith((".json", ".json.gz", ".gz"))):
            continue
        body = part.get_payload(decode=True)
        out.append(json.loads(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body))
    return out


def expected_for(folder: Path, domain: str, *, refused: frozenset[str] = frozenset()) -> dict:
    """The numbers for ``domain`` from the raw files, leaving out the files the receiver
    refused (``refused``: their names, as its quarantine lists them)."""
    reports = {}
    for p in sorted(folder.iterdir()):
        if p.suffix in (".json", ".eml") and p.name not in refused:
            for r in _payloads(p):
                reports.setdefault((r["report-id"], r["organization-name"]), r)
    days: dict[str, list[int]] = {}
    by_type: dict[str, int] = {}
    n_reports = 0
    for r in reports.values():
        start = datetime.fromisoformat(r["date-range"]["start-datetime"])
        day = (start if start.tzinfo else start.replace(tzinfo=UTC)).astimezone(UTC).date().isoformat()
        mine = [p for p in r.get("policies") or []
                if (p["policy"].get("policy-domain") or "").lower().rstrip(".") == domain]
        n_reports += bool(mine)
        for p in mine:
            s = p.get("summary") or {}
            slot = days.setdefault(day, [0, 0])
            slot[0] += s.get("total-successful-session-count") or 0
            slot[1] += s.get("total-failure-session-count") or 0
            for f in p.get("failure-details") or []:
                by_type[f["result-type"]] = by_type.get(f["result-type"], 0) + f["failed-session-count"]
    return {"days": days, "by_type": by_type, "reports": n_reports,
            "successful": sum(v[0] for v in days.values()), "failed": sum(v[1] for v in days.values())}


@pytest.fixture
async def dashboard(tmp_path, sample, capsys):
    db = tmp_path / "reports.sqlite3"
    code = await asyncio.to_thread(main, ["reports", "import", "--db", str(db), str(sample[0])])
    assert code in (0, 1)  # 1: the sample's negative mail is quarantined
    capsys.readouterr()
    store = SqliteReportStore(db)
    await store.open()
    svc = ReportsService(Config(), ServeOptions(listen="127.0.0.1:0", token=TOKEN, verify_dkim=False),
                         store=store)
    await svc.start()
    refused = frozenset(Path(q.remote).name for q in await store.list_quarantine(limit=1000))
    yield f"http://127.0.0.1:{svc.http_port}", refused
    await svc.stop()
    await store.close()


@pytest.fixture
async def browser():
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"chromium not found at {CHROMIUM}: install the Debian package 'chromium' "
                    "(scripts/install-system.sh does)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright for Python is not installed: pip install -e '.[dev]'")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def _numbers(page, selector: str) -> list[list[str]]:
    return await page.eval_on_selector_all(
        selector, "rows => rows.map(r => Array.from(r.cells).map(c => c.innerText.trim()))")


def _window_of(folder: Path) -> str:
    """A custom window holding every report of the sample (its first to last day)."""
    days = []
    for p in sorted(folder.iterdir()):
        if p.suffix in (".json", ".eml"):
            for r in _payloads(p):
                start = datetime.fromisoformat(r["date-range"]["start-datetime"])
                days.append((start if start.tzinfo else start.replace(tzinfo=UTC)).astimezone(UTC).date())
    return f"window=custom&from={min(days).isoformat()}&to={max(days).isoformat()}"


async def test_dashboard_shows_the_right_numbers(dashboard, browser, sample):
    folder, domain = sample
    dashboard, refused = dashboard
    want = expected_for(folder, domain, refused=refused)
    assert want["reports"] >= 3 and want["failed"] > 0  # the sample is worth looking at
    window = _window_of(folder)
    ARTIFACTS.mkdir(exist_ok=True)
    context = await browser.new_context(http_credentials={"username": "admin", "password": TOKEN},
                                        viewport={"width": 1280, "height": 1000})
    page = await context.new_page()

    response = await page.goto(f"{dashboard}/?{window}")
    assert response.status == 200
    rows = await _numbers(page, "#domains tbody tr")
    row = next(r for r in rows if r[0] == domain)
    # sessions, failed
    assert [int(row[1]), int(row[2])] == [want["successful"] + want["failed"], want["failed"]]
    failed_column = [int(r[2]) for r in rows]
    assert failed_column == sorted(failed_column, reverse=True)  # failing domains first
    await page.screenshot(path=str(ARTIFACTS / "dashboard-index.png"), full_page=True)

    await page.click(f"#domains a:text-is('{domain}')")
    await page.wait_for_load_state()
    assert f"/domain?name={domain}" in page.url and "window=custom" in page.url  # window kept
    totals = await page.inner_text("#totals")
    assert f"{want['successful']} successful and {want['failed']} failed sessions in {want['reports']} reports" in totals

    # The chart: bars over the whole window carrying its numbers (days grouped in long windows).
    bars = await page.eval_on_selector_all(
        "#chart-sessions g.day",
        "gs => gs.map(g => [g.dataset.date, +g.dataset.days, +g.dataset.successful, +g.dataset.failed])")
    assert sum(b[2] for b in bars) == want["successful"] and sum(b[3] for b in bars) == want["failed"]
    if all(b[1] == 1 for b in bars):
        shown = {d: [ok, bad] for d, _, ok, bad in bars if ok or bad}
        assert shown == {d: v for d, v in want["days"].items() if v[0] or v[1]}
    heights = await page.eval_on_selector_all(
        "#chart-failures rect.bar-failed", "rs => rs.map(r => +r.getAttribute('height'))")
    assert max(heights) > 100  # the worst day fills most of the failures chart (own scale)
    legend = await page.eval_on_selector_all("#chart-failures .legend-label", "ts => ts.map(t => t.textContent)")
    assert "successful" not in legend and "failed" in legend
    assert await page.locator("#chart-sessions").is_visible()

    # The failure breakdown table (result type x MX x reporter x policy type), with advice.
    failures = await _numbers(page, "#failures tbody tr")
    by_type: dict[str, int] = {}
    for rt, _mx, _org, _ptype, first, last, n, fix in failures:
        by_type[rt] = by_type.get(rt, 0) + int(n)
        assert first <= last and "Fix:" in fix
    assert by_type == want["by_type"]
    if sum(want["by_type"].values()) > want["failed"]:
        # explained: overlapping types (RFC 8460 §4.3), or flagged as inconsistent
        notes = await page.eval_on_selector_all(
            "#overlap-note, p.inconsistent", "ps => ps.map(p => p.innerText)")
        assert notes and all("failure types overlap" in n or "Inconsistent report" in n for n in notes)

    days = await _numbers(page, "#days tbody tr")
    assert {d[0]: [int(d[2]), int(d[3])] for d in days} == want["days"]
    await page.screenshot(path=str(ARTIFACTS / "dashboard-domain.png"), full_page=True)

    # A report's detail view, reached by its link.
    await page.click("#reports tbody tr:first-child a")
    await page.wait_for_load_state()
    assert "/report/" in page.url
    raw = json.loads(await page.inner_text("#raw"))
    assert any((p["policy"].get("policy-domain") or "").lower() == domain for p in raw["policies"])
    await page.screenshot(path=str(ARTIFACTS / "dashboard-report.png"), full_page=True)
    assert (ARTIFACTS / "dashboard-domain.png").stat().st_size > 10_000
    await context.close()


async def test_dashboard_refuses_a_browser_without_the_token(dashboard, browser):
    dashboard, _ = dashboard
    from playwright.async_api import Error as PlaywrightError

    anonymous = await browser.new_context()
    page = await anonymous.new_page()
    # Headless chromium has nobody to ask for the password: the navigation fails.
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        await page.goto(dashboard + "/")
    await anonymous.close()
    wrong = await browser.new_context(http_credentials={"username": "admin", "password": "wrong"})
    page = await wrong.new_page()
    response = await page.goto(dashboard + "/domain?name=example.net")
    assert response.status == 401
    assert "successful" not in await page.content()
    await wrong.close()
