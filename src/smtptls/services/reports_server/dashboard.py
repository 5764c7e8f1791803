"""The dashboard's HTML pages, rendered on the server (pure functions, no JavaScript).

Report contents are attacker-controlled: every value goes through :func:`e` (HTML
escaping, quotes included) or :func:`url_arg` before it reaches a page, and the app
sends a Content-Security-Policy that forbids scripts altogether.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote

from smtptls.services.reports_server.chart import MAX_DAYS, daily_chart
from smtptls.store.reports_base import (
    DomainOverview,
    QuarantineEntry,
    StoredReport,
    Summary,
)

__all__ = ["domain_page", "e", "index_page", "quarantine_page", "report_page", "url_arg"]

NO_DOMAIN = "(no policy domain)"

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:.6em 1.2em}
header a{color:#fff;margin-right:1.2em;text-decoration:none}
main{padding:1em 1.2em;max-width:1200px}
table{border-collapse:collapse;margin:.6em 0 1.4em;background:#fff}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.failed{color:#c62828}.ok{color:#2e7d32}
pre{background:#fff;border:1px solid #ccc;padding:.6em;overflow:auto;max-height:40em}
.warn{color:#8a6d00}
.badge{background:#c62828;color:#fff;border-radius:.3em;padding:0 .35em;font-size:.8em}
.pager a{margin-right:1em}
"""


def e(value: object) -> str:
    """HTML-escape anything for element content and quoted attributes."""
    return escape("" if value is None else str(value), quote=True)


def url_arg(value: str) -> str:
    return quote(value, safe="")


def _domain_label(domain: str) -> str:
    return domain if domain else NO_DOMAIN


def _domain_link(domain: str) -> str:
    return f'<a href="/domain?name={url_arg(domain)}">{e(_domain_label(domain))}</a>'


def layout(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)} — smtptls reports</title>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        '<header><a href="/"><b>smtptls</b> TLSRPT reports</a>'
        '<a href="/reports">all reports</a><a href="/quarantine">quarantine</a></header>'
        f"<main><h1>{e(title)}</h1>{body}</main></body></html>"
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: set[int],
           css_id: str = "") -> str:
    ident = f' id="{e(css_id)}"' if css_id else ""
    head = "".join(f'<th class="n">{e(h)}</th>' if i in numeric else f"<th>{e(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(headers)}">none</td></tr>')
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _rate(ok: int, bad: int) -> str:
    total = ok + bad
    return "—" if total == 0 else f"{100 * bad / total:.2f} %"


def index_page(domains: Sequence[DomainOverview], counts: dict[str, int]) -> str:
    rows = [
        (_domain_link(d.policy_domain), str(d.reports), f'<span class="ok">{d.successful}</span>',
         f'<span class="failed">{d.failed}</span>', _rate(d.successful, d.failed),
         e(d.first_day.isoformat()), e(d.last_day.isoformat()))
        for d in domains
    ]
    body = (
        f"<p>{counts.get('reports', 0)} reports stored; "
        f'<a href="/quarantine">{counts.get("quarantine", 0)} quarantined</a>.</p>'
        + _table(("policy domain", "reports", "successful", "failed", "failure rate",
                  "first day", "last day"), rows, numeric={1, 2, 3, 4}, css_id="domains")
    )
    return layout("Policy domains", body)


def conflict_badge(report: StoredReport) -> str:
    """A badge for a report whose key another report shares (links to the report)."""
    if not report.conflict:
        return ""
    what = "counted" if report.counted else "not counted"
    return (f' <a class="badge conflict" href="/report/{report.pk}#conflict" title="another '
            f'report has this report-id and organization ({what})">conflict</a>')


def _reports_table(reports: Sequence[StoredReport]) -> str:
    rows = [
        (f'<a href="/report/{r.pk}">{e(r.report_id)}</a>{conflict_badge(r)}', e(r.organization),
         e(r.start.strftime("%Y-%m-%d %H:%M")), e(r.end.strftime("%Y-%m-%d %H:%M")),
         e(", ".join(_domain_label(d) for d in r.policy_domains)), str(r.successful),
         str(r.failed), e(r.channel), e(r.dkim))
        for r in reports
    ]
    return _table(("report-id", "organization", "start (UTC)", "end (UTC)", "policy domains",
                   "successful", "failed", "via", "DKIM"), rows, numeric={5, 6},
                  css_id="reports")


def _chart_note(summary: Summary) -> str:
    if summary.days and (summary.days[-1].day - summary.days[0].day).days >= MAX_DAYS:
        return (f'<p class="warn" id="chart-note">The chart shows the last {MAX_DAYS} days; '
                "the table below lists every day.</p>")
    return ""


def domain_page(domain: str, summary: Summary, reports: Sequence[StoredReport]) -> str:
    points = [(d.day, d.successful, d.failed) for d in summary.days]
    daily = [(e(d.day.isoformat()), str(d.reports), str(d.successful), str(d.failed),
              _rate(d.successful, d.failed)) for d in summary.days]
    matrix = [(e(rt), e(mx or "—"), e(org), e(ip or "—"), str(n))
              for rt, mx, org, ip, n in summary.failures]
    body = (
        '<p id="totals">'
        f'<span class="ok">{summary.successful}</span> successful and '
        f'<span class="failed">{summary.failed}</span> failed sessions in '
        f"{summary.reports} reports.</p>"
        + daily_chart(points, title=f"Daily sessions for {_domain_label(domain)}")
        + _chart_note(summary)
        + "<h2>Failed sessions per day</h2>"
        + daily_chart([(d, 0, bad) for d, _, bad in points], ident="chart-failures",
                      title=f"Daily failed sessions for {_domain_label(domain)}")
        + "<h2>Failures by result type, receiving MX and reporter</h2>"
        + _table(("result type", "receiving MX", "reporting organization", "sending MTA IP",
                  "failed sessions"), matrix, numeric={4}, css_id="failures")
        + "<h2>Per day</h2>"
        + _table(("day (UTC)", "reports", "successful", "failed", "failure rate"), daily,
                 numeric={1, 2, 3, 4}, css_id="days")
        + "<h2>Reports</h2>" + _reports_table(reports)
    )
    return layout(f"Policy domain {_domain_label(domain)}", body)


def reports_page(reports: Sequence[StoredReport]) -> str:
    return layout("All reports", _reports_table(reports))


def _conflict_note(report: StoredReport) -> str:
    if not report.conflict:
        return ""
    links = ", ".join(f'<a href="/report/{pk}">report {pk}</a>' for pk in report.conflicts_with)
    state = ("This one is counted in the summaries (its origin is the best established)."
             if report.counted else "Another one is counted in the summaries.")
    return (f'<p class="warn" id="conflict"><span class="badge">conflict</span> Another '
            f"report was received with the same report-id and organization but a different "
            f"body: {links or 'none left'}. {state} HTTPS reports are not authenticated; a "
            "DKIM-verified mail is preferred.</p>")


def _pager(report: StoredReport, page: int, page_size: int) -> str:
    if not page_size or report.failure_rows <= page_size:
        return ""
    pages = -(-report.failure_rows // page_size)
    links = []
    if page > 1:
        links.append(f'<a href="/report/{report.pk}?page={page - 1}" rel="prev">previous</a>')
    if page < pages:
        links.append(f'<a href="/report/{report.pk}?page={page + 1}" rel="next">next</a>')
    return (f'<p class="pager" id="pager">Failure details {(page - 1) * page_size + 1}–'
            f"{min(report.failure_rows, page * page_size)} of {report.failure_rows} (page "
            f"{page} of {pages}). {' '.join(links)}</p>")


def report_page(report: StoredReport, *, page: int = 1, page_size: int = 0) -> str:
    meta = [
        ("report-id", e(report.report_id)),
        ("organization", e(report.organization)),
        ("contact", e(report.contact_info or "—")),
        ("date range (UTC)", e(f"{report.start.isoformat()} — {report.end.isoformat()}")),
        ("received", e(f"{report.received_at.isoformat()} via {report.channel}")),
        ("origin", e(report.provenance or "—")),
        ("from", e(report.remote or "—")),
        ("submitter", e(report.submitter or "—")),
        ("DKIM", e(report.dkim + (f" (d={report.dkim_domain})" if report.dkim_domain else ""))),
    ]
    warn = "".join(f'<li class="warn">{e(w)}</li>' for w in report.warnings)
    parts = [_conflict_note(report),
             _table(("field", "value"), meta, numeric=set(), css_id="meta"),
             _pager(report, page, page_size)]
    if warn:
        parts.append(f"<h2>Parser warnings</h2><ul>{warn}</ul>")
    for i, p in enumerate(report.policies):
        parts.append(f"<h2>Policy {i + 1}: {e(p.policy_type)} for "
                     f"{_domain_link(p.policy_domain)}</h2>")
        parts.append(f'<p><span class="ok">{p.successful}</span> successful, '
                     f'<span class="failed">{p.failed}</span> failed sessions.</p>')
        if p.policy_strings:
            parts.append("<pre>" + e("\n".join(p.policy_strings)) + "</pre>")
        if p.mx_hosts:
            parts.append("<p>MX hosts: " + e(", ".join(p.mx_hosts)) + "</p>")
        rows = [(e(f.result_type), e(f.sending_mta_ip or "—"),
                 e(f.receiving_mx_hostname or "—"), e(f.receiving_ip or "—"),
                 str(f.failed_session_count),
                 e(" ".join(x for x in (f.failure_reason_code, f.additional_information) if x)))
                for f in p.failures]
        parts.append(_table(("result type", "sending MTA IP", "receiving MX", "receiving IP",
                             "sessions", "reason / information"), rows, numeric={4},
                            css_id=f"failures-{i + 1}"))
    parts.append(_pager(report, page, page_size))
    decoded, error = report.report_json()
    pretty = (report.raw_json or "" if error else
              json.dumps(decoded, indent=2, ensure_ascii=False))
    parts.append("<h2>Report JSON</h2><pre id=\"raw\">" + e(pretty) + "</pre>")
    return layout(f"Report {report.report_id}", "".join(parts))


def quarantine_page(entries: Sequence[QuarantineEntry]) -> str:
    rows = [(str(q.pk), e(q.received_at.isoformat()), e(q.channel), e(q.remote or "—"),
             e(q.reason), str(q.size), e(q.sha256[:16]),
             f'<a href="/quarantine/{q.pk}/raw">{"excerpt" if q.excerpt else "download"}</a>')
            for q in entries]
    body = ("<p>Submissions that could not be read as reports are kept here with the "
            "reason, byte for byte; beyond the quarantine's size and age limits only a "
            "digest and an excerpt.</p>"
            + _table(("id", "received (UTC)", "via", "from", "reason", "bytes", "sha256",
                      "raw"), rows, numeric={0, 5}, css_id="quarantine"))
    return layout("Quarantine", body)


def not_found_page(what: str) -> str:
    return layout("Not found", f"<p>{e(what)}</p>")
