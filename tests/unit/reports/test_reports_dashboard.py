"""Dashboard HTML, its SVG chart, the token check and the loopback rule."""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime
from html import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.services.reports_server import dashboard, views
from smtptls.services.reports_server.app import token_matches
from smtptls.services.reports_server.chart import MAX_BARS, buckets, daily_chart, day_label
from smtptls.services.reports_server.console import DomainRow, Window
from smtptls.services.reports_server.server import is_loopback
from smtptls.store.reports_base import (
    FailureRow,
    PolicyRow,
    QuarantineEntry,
    StoredReport,
    build_summary,
)
from smtptls.store.reports_console import (
    CountCheck,
    FailureGroup,
    RangeOverlap,
    ReporterActivity,
    ReporterLastSeen,
)

EVIL = '<script>alert("x")</script>&"\'><img src=x onerror=alert(1)>'
T0 = datetime(2024, 5, 1, tzinfo=UTC)
D0 = date(2024, 5, 1)
WEEK = Window("7d", date(2024, 4, 25), D0)


def _domain_view(name: str = EVIL) -> views.DomainView:
    return views.DomainView(
        domain=name, window=WEEK,
        summary=build_summary(domain=name, since=None, day_rows=[("2024-05-01", EVIL, 1, 5, 2)],
                              failure_rows=[("2024-05-01", EVIL, EVIL, EVIL, EVIL, 2)]),
        activity=[ReporterActivity(name, EVIL, 1, 5, 2, D0, D0)], previous=[],
        last_seen=[ReporterLastSeen(name, EVIL, date(2024, 4, 1), T0, 5, date(2024, 3, 1))],
        groups=[FailureGroup(EVIL, EVIL, EVIL, EVIL, D0, D0, 2, 1)],
        checks=[CountCheck(1, EVIL, EVIL, D0, 1, 3, EVIL, 2)],
        overlaps=[RangeOverlap(EVIL, 1, EVIL, 2, EVIL)],
        reports=[_stored()], report_total=1, today=D0, rua=(EVIL,))


def _stored(**over):
    base = dict(pk=1, report_id=EVIL, organization=EVIL, start=T0, end=T0, received_at=T0,
                channel="https", dkim="not-checked", dkim_domain="", submitter=EVIL, remote=EVIL,
                contact_info=EVIL, policy_domains=(EVIL,), successful=5, failed=2,
                warnings=(EVIL,), raw_json='{"organization-name": "' + EVIL.replace('"', '\\"') + '"}',
                policies=(PolicyRow("sts", EVIL, 5, 2, (EVIL,), (EVIL,),
                                    (FailureRow(EVIL, 2, EVIL, EVIL, EVIL, EVIL, EVIL, EVIL),)),))
    base.update(over)
    return StoredReport(**base)


def _no_raw_markup(html: str) -> None:
    assert "<script" not in html
    assert "<img" not in html
    assert "onerror=alert(1)>" not in html


@pytest.mark.parametrize(
    "render",
    [
        pytest.param(lambda: dashboard.report_page(_stored()), id="report-page"),
        pytest.param(lambda: views.reports_page([_stored()], domains=[EVIL], organizations=[EVIL]),
                     id="reports-page"),
        pytest.param(lambda: views.domain_page(_domain_view()), id="domain-page"),
        pytest.param(lambda: views.overview_page(
            [DomainRow(EVIL, 5, 2, 1, (EVIL,), None, T0, D0, 4)], WEEK, counts={}), id="index"),
        pytest.param(lambda: views.overview_page([], WEEK, counts={}, own_domains=[EVIL],
                                                 rua=[EVIL]), id="empty-state"),
        pytest.param(lambda: dashboard.quarantine_page(
            [QuarantineEntry(1, T0, "smtp", EVIL, EVIL, 3, "00")]), id="quarantine"),
        pytest.param(lambda: daily_chart([(D0, 1, 1)], start=D0, end=D0, title=EVIL),
                     id="chart-title"),
    ],
)
def test_attacker_controlled_values_are_escaped(render):
    html = render()
    _no_raw_markup(html)
    assert "&lt;script&gt;" in html or "%3Cscript%3E" in html


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_property_report_page_never_emits_raw_tags(text):
    html = dashboard.report_page(_stored(report_id="<b>" + text, organization=text + "<i>"))
    assert "&lt;b&gt;" + escape(text, quote=True) in html
    assert escape(text, quote=True) + "&lt;i&gt;" in html
    _no_raw_markup(html)


def test_chart_bars_carry_the_numbers_and_mark_days_without_reports():
    svg = daily_chart([(date(2024, 5, 1), 90, 10), (date(2024, 5, 3), 50, 0)],
                      start=date(2024, 5, 1), end=date(2024, 5, 4))
    days = re.findall(r'data-date="([\d-]+)" data-days="1" data-successful="(\d+)" '
                      r'data-failed="(\d+)" data-reported="(\d)"', svg)
    assert days == [("2024-05-01", "90", "10", "1"), ("2024-05-02", "0", "0", "0"),
                    ("2024-05-03", "50", "0", "1"), ("2024-05-04", "0", "0", "0")]
    assert svg.count('class="gap"') == 2 and "no report</text>" in svg
    assert svg.startswith("<svg") and svg.endswith("</svg>")


@pytest.mark.parametrize(("peak", "top"), [(0, 4), (1, 4), (2, 4), (5, 8), (10, 12), (99, 100),
                                           (5000, 5000), (5629, 6000), (10**9, 10**9)])
def test_chart_axis_ticks_are_integers(peak, top):
    svg = daily_chart([(D0, peak, 0)], start=D0, end=D0)
    ticks = [int(t) for t in re.findall(r'text-anchor="end" font-size="11">(\d+)</text>', svg)]
    assert ticks == [top * i // 4 for i in range(5)] and ticks[-1] >= peak
    assert all(t * 4 % top == 0 or top % 4 == 0 for t in ticks)


def test_chart_spans_the_window_even_without_data():
    svg = daily_chart([], start=date(2024, 4, 25), end=D0)
    assert svg.count('class="day"') == 7 and 'data-date="2024-05-01"' in svg


def test_chart_failures_only_legend_matches_what_is_drawn():
    svg = daily_chart([(D0, 90, 10)], start=D0, end=D0, failed_only=True)
    assert "bar-ok" not in svg and ">successful</text>" not in svg and ">failed</text>" in svg
    both = daily_chart([(D0, 90, 10)], start=D0, end=D0)
    assert ">successful</text>" in both and ">failed</text>" in both


def test_chart_labels_carry_the_year_where_it_changes():
    svg = daily_chart([(date(2025, 12, 30), 1, 0)], start=date(2025, 12, 20), end=date(2026, 1, 10))
    labels = re.findall(r'class="x-label"[^>]*>([^<]+)</text>', svg)
    assert labels[0].endswith("2025")
    assert any(label.endswith("2026") for label in labels)
    assert sum(label[-4:].isdigit() for label in labels) == 2
    assert day_label(date(2026, 1, 2), with_year=False) == "2 Jan"


def test_chart_bars_keep_a_minimum_width_in_long_windows():
    svg = daily_chart([(date(2024, 1, 1), 5, 1)], start=date(2004, 1, 1), end=date(2024, 1, 1))
    widths = {float(w) for w in re.findall(r'class="bar-failed" x="[\d.]+" y="[\d.]+" width="([\d.]+)"', svg)}
    assert min(widths) >= 3.0


def test_buckets_group_long_windows_and_keep_every_session():
    points = [(date(2024, 1, 1) + __import__("datetime").timedelta(days=i), 1, i % 2) for i in range(365)]
    bars = buckets(points, date(2024, 1, 1), date(2024, 12, 30))
    assert len(bars) <= MAX_BARS
    assert sum(b[2] for b in bars) == 365 and sum(b[3] for b in bars) == 182


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        pytest.param("Bearer s3cret", True, id="bearer"),
        pytest.param("bearer s3cret", True, id="bearer-lower-case"),
        pytest.param(_basic("admin", "s3cret"), True, id="basic-any-user"),
        pytest.param(_basic("", "s3cret"), True, id="basic-empty-user"),
        pytest.param("Bearer s3cret2", False, id="bearer-wrong"),
        pytest.param(_basic("admin", "nope"), False, id="basic-wrong"),
        pytest.param("Basic !!!notbase64", False, id="basic-garbage"),
        pytest.param("Digest s3cret", False, id="other-scheme"),
        pytest.param("", False, id="empty"),
        pytest.param(None, False, id="absent"),
        pytest.param("Bearer " + "x" * 5000, False, id="oversized"),
    ],
)
def test_dashboard_token_check(header, ok):
    assert token_matches(header, "s3cret") is ok


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("reports.example", False)],
)
def test_loopback_rule_for_the_dashboard(host, loopback):
    assert is_loopback(host) is loopback


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=80),
                 st.binary(max_size=60).map(lambda b: "Basic " + base64.b64encode(b).decode())))
def test_property_token_check_accepts_only_the_token(header):
    accepted = token_matches(header, "s3cret")
    if accepted:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() == "bearer":
            assert value.strip() == "s3cret"
        else:
            assert base64.b64decode(value.strip()).decode().partition(":")[2] == "s3cret"


def test_conflicting_reports_carry_a_badge_and_a_note_linking_each_other():
    forged = _stored(pk=7, conflict=True, counted=False, conflicts_with=(9,), provenance="https")
    table = views.reports_page([forged, _stored(pk=9, conflict=True, provenance="dkim")])
    assert table.count('class="badge conflict"') == 2 and 'href="/report/7#conflict"' in table
    assert "(not counted)" in table and "(counted)" in table
    page = dashboard.report_page(forged)
    assert 'id="conflict"' in page and 'href="/report/9"' in page
    assert "Another one is counted in the summaries" in page
    _no_raw_markup(page)
    assert 'id="conflict"' not in dashboard.report_page(_stored())


def test_report_page_pager_links_pages_of_failure_details():
    report = _stored(pk=3, failure_rows=120)
    first = dashboard.report_page(report, page=1, page_size=50)
    assert "Failure details 1–50 of 120 (page 1 of 3)" in first
    assert 'href="/report/3?page=2" rel="next"' in first and 'rel="prev"' not in first
    last = dashboard.report_page(report, page=3, page_size=50)
    assert 'href="/report/3?page=2" rel="prev"' in last and 'rel="next"' not in last
    assert 'id="pager"' not in dashboard.report_page(_stored(failure_rows=10), page_size=50)


def test_report_page_shows_stored_json_that_does_not_decode_as_text():
    page = dashboard.report_page(_stored(raw_json='{"report-id": "cut'))
    assert "{&quot;report-id&quot;: &quot;cut" in page
