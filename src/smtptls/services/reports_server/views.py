"""The console's pages: the overview (what needs attention), a domain, all reports.

Pure functions from values to HTML; every value from a report goes through
:func:`~smtptls.services.reports_server.dashboard.e`. No JavaScript: the window
control and the filters are links and GET forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from smtptls.services.reports_server.advice import advice
from smtptls.services.reports_server.chart import daily_chart
from smtptls.services.reports_server.console import (
    WINDOWS,
    DomainRow,
    Window,
    failure_rate,
    silent_reporters,
)
from smtptls.services.reports_server.dashboard import (
    domain_label,
    domain_link,
    e,
    failed_text,
    layout,
    rate_text,
    reports_table,
    table,
)
from smtptls.store.reports_base import StoredReport, Summary
from smtptls.store.reports_console import (
    CountCheck,
    FailureGroup,
    RangeOverlap,
    ReporterActivity,
    ReporterLastSeen,
    ReportFilter,
)
from smtptls.tlsrpt.report import ResultType

__all__ = ["DomainView", "domain_page", "empty_state", "overview_page", "reports_page",
           "window_nav"]

#: Reports per page of the "all reports" list.
PAGE_SIZE = 50
#: Reports listed on a domain page (the rest through "all reports").
DOMAIN_REPORTS = 20

_TREND = {"up": "▲ worse", "down": "▼ better", "same": "= same", "new": "new",
          "none": "—"}


def _when(value: datetime | None) -> str:
    return "—" if value is None else e(value.strftime("%Y-%m-%d %H:%M UTC"))


def window_nav(window: Window, path: str, **keep: str) -> str:
    """Links to each window (the current one marked) and a form for a custom one."""
    links = []
    for key in WINDOWS:
        current = ' aria-current="page"' if window.key == key else ""
        url = Window(key, window.start, window.end).url(path, **keep)
        links.append(f'<a href="{e(url)}"{current}>{e(key)}</a>')
    hidden = "".join(f'<input type="hidden" name="{e(k)}" value="{e(v)}">'
                     for k, v in keep.items() if v)
    current = ' aria-current="page"' if window.key == "custom" else ""
    return (
        f'<nav class="windows" aria-label="time window" id="window">{"".join(links)}'
        f'<form method="get" action="{e(path)}" class="filters">{hidden}'
        '<input type="hidden" name="window" value="custom">'
        f'<label>from <input type="date" name="from" value="{window.start.isoformat()}"></label>'
        f'<label>to <input type="date" name="to" value="{window.end.isoformat()}"></label>'
        f'<button type="submit"{current}>show</button></form></nav>'
        f'<p id="window-label">Showing {e(_span(window))}, compared with the '
        f"{window.days} days before.</p>")


def _span(window: Window) -> str:
    days = f"{window.start.isoformat()} to {window.end.isoformat()}"
    return f"{days} (UTC days)" if window.key == "custom" else f"the {window.label} ({days}, UTC)"


def _rua_examples(rua: Sequence[str]) -> list[str]:
    return list(rua) or ["mailto:tlsrpt@example.com"]


def empty_state(own_domains: Sequence[str], rua: Sequence[str]) -> str:
    """What to publish so that reports arrive: the exact record and the command."""
    uris = _rua_examples(rua)
    record_text = "v=TLSRPTv1; rua=" + ",".join(uris)
    domains = list(own_domains) or ["example.com"]
    records = "\n".join(f'_smtp._tls.{d}. IN TXT "{record_text}"' for d in domains)
    args = " ".join(f"--rua {u}" for u in uris)
    commands = "\n".join(f"smtptls publish tlsrpt --domain {d} {args}" for d in domains)
    where = ("" if rua else " Replace the address with one this receiver gets: an "
             "https:// URI of this server's /v1/tlsrpt, or a mailbox delivered to its "
             "SMTP/LMTP listener or fetched by <code>smtptls reports fetch</code>"
             " (set <code>reports.rua</code> to show yours here).")
    return (
        '<section id="empty" class="note"><h2>No reports yet</h2>'
        "<p>Senders report only to domains that ask for reports. Publish this TXT "
        f"record in each of your domains' DNS zones:{where}</p>"
        f"<pre>{e(records)}</pre><p>The command that prints it, checked:</p>"
        f"<pre>{e(commands)}</pre><p>Reports are daily: the first ones arrive a day or "
        "two after the record is visible. Reports you already have (files, a mailbox "
        "export) come in with <code>smtptls reports import</code>.</p></section>")


def _trend(row: DomainRow) -> str:
    text = _TREND[row.trend]
    if row.trend in ("up", "down", "same") and row.previous_rate is not None:
        text += f" (was {100 * row.previous_rate:.2f} %)"
    return f'<span class="trend-{row.trend}">{e(text)}</span>'


def _status(row: DomainRow) -> str:
    notes = []
    if row.silent_days is not None:
        notes.append(f'<span class="warn silent">no reports for {row.silent_days} days</span>')
    if row.failed:
        notes.append('<span class="failed">failing</span>')
    if not notes and row.sessions:
        notes.append('<span class="ok">ok</span>')
    return " ".join(notes) or "—"


def overview_page(rows: Sequence[DomainRow], window: Window, *, counts: Mapping[str, int],
                  own_domains: Sequence[str] = (), rua: Sequence[str] = ()) -> str:
    nav = window_nav(window, "/")
    if not rows or not counts.get("reports", 0):
        # nothing stored yet: say how to get reports in (the own domains, if any, below)
        nav += empty_state(own_domains, rua)
    if not rows:
        return layout("What needs attention", nav)
    failing = [r for r in rows if r.failed]
    silent = [r for r in rows if r.silent_days is not None]
    quiet = [r for r in rows if not r.sessions and r.silent_days is None]
    summary = []
    if failing:
        summary.append(f'<li><span class="failed">{len(failing)}</span> '
                       f"domain{'s' if len(failing) != 1 else ''} with failed sessions</li>")
    if silent:
        summary.append(f'<li class="warn">{len(silent)} domain{"s" if len(silent) != 1 else ""}'
                       " no longer getting reports</li>")
    if not failing and not silent:
        summary.append('<li class="ok">nothing failed in this window</li>')
    if quiet:
        summary.append(f"<li>{len(quiet)} without reports in this window</li>")
    keep = window.query()
    query = "&" + urlencode(keep)
    table_rows = [
        (domain_link(r.domain, query), str(r.sessions), failed_text(r.failed),
         rate_text(r.successful, r.failed), _trend(r),
         e(", ".join(r.reporters)) or "—", _when(r.last_received), _status(r))
        for r in rows
    ]
    body = (
        nav + f'<ul id="attention">{"".join(summary)}</ul>'
        + table(("policy domain", "sessions", "failed", "failure rate", "trend",
                 "reporters", "last report received", "status"), table_rows,
                numeric={1, 2, 3}, css_id="domains")
        + f'<p>{counts.get("reports", 0)} reports stored; '
        f'<a href="/quarantine">{counts.get("quarantine", 0)} quarantined</a>. Domains are '
        "ranked by failed sessions in the window, then by the latest report.</p>")
    return layout("What needs attention", body)


# --- a domain --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DomainView:
    """Everything a domain page shows, gathered by the handler."""

    domain: str
    window: Window
    summary: Summary
    activity: Sequence[ReporterActivity]
    previous: Sequence[ReporterActivity]
    last_seen: Sequence[ReporterLastSeen]
    groups: Sequence[FailureGroup]
    checks: Sequence[CountCheck]
    overlaps: Sequence[RangeOverlap]
    reports: Sequence[StoredReport]
    report_total: int
    today: date
    stale_days: int = 3
    own: bool = False
    rua: Sequence[str] = field(default=())


def _count_notes(v: DomainView) -> str:
    out = []
    overlap = [c for c in v.checks if not c.inconsistent]
    broken = [c for c in v.checks if c.inconsistent]
    if overlap:
        detail = sum(c.detail_sum for c in overlap)
        failed = sum(c.failed for c in overlap)
        out.append(
            '<p class="note" id="overlap-note">In '
            f"{len(overlap)} polic{'ies' if len(overlap) != 1 else 'y'} of these reports the "
            f"failure details add up to {detail} sessions while the reporters counted "
            f"{failed} failed sessions. That is allowed: a session can fail for more than one "
            "reason, and RFC 8460 §4.3 lets reporters list each (failure types overlap); a "
            "sender that keeps delivering under its cached MTA-STS policy while the refresh "
            "fails lists the sts-policy-* failure for sessions that succeeded (RFC 8461 §6). "
            "The totals above count failed sessions; the table below counts failure "
            "details.</p>")
    for c in broken:
        out.append(
            f'<p class="alert inconsistent">Inconsistent report <a href="/report/{c.report_pk}">'
            f"{e(c.report_id)}</a> from {e(c.organization)} ({c.day.isoformat()}): it counts "
            f"{c.failed} failed sessions in its summary but {c.largest_type_sum} sessions of "
            f"{e(c.largest_type)} alone in its details, which no overlap explains. Its "
            "summary total is the one counted.</p>")
    for o in v.overlaps:
        out.append(
            f'<p class="alert double-count">Possible double counting: {e(o.organization)} sent '
            f'<a href="/report/{o.first_pk}">{e(o.first_report_id)}</a> and '
            f'<a href="/report/{o.second_pk}">{e(o.second_report_id)}</a>, whose date ranges '
            "overlap for this domain; both are counted.</p>")
    return "".join(out)


def _reporters(v: DomainView) -> str:
    prev: dict[str, tuple[int, int]] = {}
    for a in v.previous:
        ok, bad = prev.get(a.organization, (0, 0))
        prev[a.organization] = (ok + a.successful, bad + a.failed)
    silent = {s.organization: gap for s, gap in silent_reporters(
        v.last_seen, today=v.today, stale_days=v.stale_days)}
    last = {s.organization: s for s in v.last_seen}
    rows = []
    names = sorted({a.organization for a in v.activity} | set(silent),
                   key=lambda o: (-next((a.failed for a in v.activity if a.organization == o), 0),
                                  o))
    for org in names:
        a = next((x for x in v.activity if x.organization == org), None)
        ok, bad = (a.successful, a.failed) if a else (0, 0)
        rate, before = failure_rate(ok, bad), failure_rate(*prev.get(org, (0, 0)))
        if rate is None:
            trend = "—"
        elif before is None:
            trend = "new"
        else:
            delta = 100 * (rate - before)
            trend = ("=" if abs(delta) < 0.05 else
                     f"▲ +{delta:.2f} pts" if delta > 0 else f"▼ {delta:.2f} pts")
        seen = last.get(org)
        status = (f'<span class="warn silent">no reports for {silent[org]} days</span>'
                  if org in silent else "")
        rows.append((e(org), str(a.reports if a else 0), str(ok + bad), failed_text(bad),
                     rate_text(ok, bad), e(trend),
                     _when(seen.last_received if seen else None), status))
    return table(("reporter", "reports", "sessions", "failed", "failure rate",
                  "trend vs previous window", "last report received", "status"), rows,
                 numeric={1, 2, 3, 4}, css_id="reporters",
                 empty="no reporter sent a report in this window")


def _reporter_charts(v: DomainView) -> str:
    per: dict[str, list[tuple[date, int, int]]] = {}
    for d in v.summary.days:
        for org, counts in d.by_organization.items():
            per.setdefault(org, []).append((d.day, counts.get("successful", 0),
                                            counts.get("failed", 0)))
    out = []
    for i, (org, points) in enumerate(sorted(per.items())):
        out.append(f"<details><summary>{e(org)}</summary>"
                   + daily_chart(points, start=v.window.start, end=v.window.end,
                                 ident=f"chart-reporter-{i + 1}",
                                 title=f"Daily sessions reported by {org}") + "</details>")
    return "".join(out)


def _failures(v: DomainView) -> str:
    rows = []
    for g in v.groups:
        a = advice(g.result_type, mx=g.receiving_mx, policy_type=g.policy_type,
                   last_seen=g.last_day.isoformat())
        rows.append((e(g.result_type), e(g.receiving_mx or "—"), e(g.organization),
                     e(g.policy_type), e(g.first_day.isoformat()), e(g.last_day.isoformat()),
                     str(g.sessions),
                     f'<span class="explain">{e(a.explanation)}</span> '
                     f'<b>Fix:</b> <span class="fix">{e(a.fix)}</span>'))
    return table(("result type", "receiving MX", "reporter", "policy type", "first seen",
                  "last seen", "sessions", "what it means and the fix"), rows,
                 numeric={6}, css_id="failures", empty="no failures reported in this window")


def check_page(domain: str, text: str) -> str:
    """The report of ``smtptls check`` for an own domain, run from its page."""
    back = f'<p><a href="/domain?name={e(domain)}">Back to {e(domain)}</a></p>'
    return layout(f"smtptls check {domain_label(domain)}",
                  f'{back}<pre id="check-report">{e(text)}</pre>')


def domain_page(v: DomainView) -> str:
    s = v.summary
    keep = {"name": v.domain}
    points = [(d.day, d.successful, d.failed) for d in s.days]
    label = domain_label(v.domain)
    days = [(e(d.day.isoformat()), str(d.reports), str(d.successful), failed_text(d.failed),
             rate_text(d.successful, d.failed)) for d in reversed(s.days)]
    check = (f'<form id="check" method="post" action="/domain/check">Check the live setup: '
             f'<input type="hidden" name="name" value="{e(v.domain)}">'
             '<button type="submit">run smtptls check now</button> '
             f"(or <code>smtptls check {e(v.domain)}</code>)</form>" if v.own else "")
    if s.reports == 0 and not v.last_seen:
        return layout(f"Policy domain {label}", window_nav(v.window, "/domain", **keep)
                      + check + empty_state([v.domain], v.rua))
    more = ReportFilter(domain=v.domain, start=v.window.start, end=v.window.end)
    hint = ""
    if s.reports == 0 and v.last_seen:
        last = max(x.last_day for x in v.last_seen)
        around = Window("custom", last - timedelta(days=29), last)
        hint = (f'<p class="note" id="window-empty">No report covers this window; the latest '
                f"covers {last.isoformat()}. "
                f'<a href="{e(around.url("/domain", **keep))}">Show the 30 days up to it</a>.'
                "</p>")
    body = (
        window_nav(v.window, "/domain", **keep) + hint
        + '<p id="totals">'
        f'<span class="ok">{s.successful}</span> successful and '
        f"{failed_text(s.failed)} failed sessions in {s.reports} reports "
        f"({rate_text(s.successful, s.failed)} failed).</p>"
        + _count_notes(v) + check
        + "<h2>Sessions per day</h2>"
        + daily_chart(points, start=v.window.start, end=v.window.end,
                      title=f"Daily sessions for {label}")
        + "<h2>Failed sessions per day</h2>"
        + daily_chart(points, start=v.window.start, end=v.window.end, failed_only=True,
                      ident="chart-failures", title=f"Daily failed sessions for {label}")
        + "<h2>Reporters</h2>" + _reporters(v) + _reporter_charts(v)
        + "<h2>Failures by result type, receiving MX, reporter and policy</h2>"
        + _failures(v)
        + "<h2>Per day</h2>"
        + table(("day (UTC)", "reports", "successful", "failed", "failure rate"), days,
                numeric={1, 2, 3, 4}, css_id="days", empty="no reports in this window")
        + f"<h2>Reports ({v.report_total})</h2>" + reports_table(v.reports)
        + (f'<p><a href="{e(filter_url(more))}">all {v.report_total} reports of this window'
           "</a></p>" if v.report_total > len(v.reports) else ""))
    return layout(f"Policy domain {label}", body)


# --- all reports -------------------------------------------------------------------------


def filter_query(f: ReportFilter) -> dict[str, str]:
    out = {"domain": f.domain, "reporter": f.organization, "result": f.result_type,
           "q": f.search, "from": f.start.isoformat() if f.start else "",
           "to": f.end.isoformat() if f.end else "", "conflict": "1" if f.conflict else ""}
    return {k: v for k, v in out.items() if v}


def filter_url(f: ReportFilter, page: int = 1) -> str:
    args = filter_query(f)
    if page > 1:
        args["page"] = str(page)
    return "/reports" + (f"?{urlencode(args)}" if args else "")


def _select(name: str, label: str, options: Sequence[str], current: str) -> str:
    opts = ['<option value="">any</option>'] + [
        f'<option value="{e(o)}"{" selected" if o == current else ""}>{e(o)}</option>'
        for o in options]
    return f'<label>{e(label)} <select name="{e(name)}">{"".join(opts)}</select></label>'


def reports_page(reports: Sequence[StoredReport], *, where: ReportFilter | None = None,
                 total: int | None = None, page: int = 1, domains: Sequence[str] = (),
                 organizations: Sequence[str] = ()) -> str:
    where = where or ReportFilter()
    total = len(reports) if total is None else total
    types = [str(t) for t in ResultType]
    if where.result_type and where.result_type not in types:
        types.append(where.result_type)
    form = (
        '<form method="get" action="/reports" class="filters" id="filters">'
        + _select("domain", "policy domain", list(domains), where.domain)
        + _select("reporter", "reporter", list(organizations), where.organization)
        + _select("result", "result type", types, where.result_type)
        + f'<label>report-id contains <input type="search" name="q" value="{e(where.search)}"'
        ' maxlength="200"></label>'
        f'<label>from <input type="date" name="from" value="{e(where.start or "")}"></label>'
        f'<label>to <input type="date" name="to" value="{e(where.end or "")}"></label>'
        '<label><span><input type="checkbox" name="conflict" value="1"'
        f'{" checked" if where.conflict else ""}> only conflicts</span></label>'
        '<button type="submit">filter</button> <a href="/reports">clear</a></form>')
    pages = max(1, -(-total // PAGE_SIZE))
    first = (page - 1) * PAGE_SIZE + 1 if total else 0
    last = min(total, page * PAGE_SIZE)
    links = []
    if page > 1:
        links.append(f'<a rel="prev" href="{e(filter_url(where, page - 1))}">previous</a>')
    if page < pages:
        links.append(f'<a rel="next" href="{e(filter_url(where, page + 1))}">next</a>')
    pager = (f'<p class="pager" id="pager">Reports {first}–{last} of {total} (page {page} '
             f"of {pages}). {' '.join(links)}</p>")
    empty = ("no report matches these filters" if filter_query(where) else
             'no reports stored yet: see <a href="/">the overview</a> for the record to '
             "publish")
    body = form + pager + (reports_table(reports) if reports else
                           table(("report-id",), [], numeric=set(), css_id="reports",
                                 empty=empty))
    if pages > 1:
        body += pager.replace('id="pager"', 'id="pager-bottom"')
    return layout("All reports", body)
