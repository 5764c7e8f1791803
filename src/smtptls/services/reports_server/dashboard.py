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

from smtptls.store.reports_base import QuarantineEntry, StoredReport

__all__ = ["domain_link", "e", "failed_text", "layout", "quarantine_page", "rate_text",
           "report_page", "reports_table", "table", "url_arg"]

NO_DOMAIN = "(no policy domain)"

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa;line-height:1.4}
header{background:#263238;color:#fff;padding:.6em 1em;display:flex;flex-wrap:wrap;gap:.3em 1.2em}
header a{color:#fff;text-decoration:none}
a{color:#0b57a4}
a:focus,button:focus,input:focus,select:focus,summary:focus{outline:3px solid #f9a825;
outline-offset:1px}
.skip{position:absolute;left:-999px}.skip:focus{left:.5em;top:.5em;background:#fff;color:#000;padding:.3em}
main{padding:1em;max-width:1200px}
h1{font-size:1.5em;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;margin:.6em 0 1.4em}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.fix{min-width:18em}
.failed{color:#b71c1c;font-weight:600}.ok{color:#1b5e20}
pre{background:#fff;border:1px solid #bbb;padding:.6em;overflow:auto;max-height:40em}
.warn{color:#6d5200}.note{background:#fff8e1;border-left:4px solid #f9a825;padding:.5em .8em}
.alert{background:#ffebee;border-left:4px solid #b71c1c;padding:.5em .8em}
.badge{background:#b71c1c;color:#fff;border-radius:.3em;padding:0 .35em;font-size:.8em}
.pager a{margin-right:1em}
nav.windows{display:flex;flex-wrap:wrap;gap:.4em;align-items:center;margin:.4em 0 1em}
nav.windows a{border:1px solid #0b57a4;border-radius:.3em;padding:.15em .6em;text-decoration:none}
nav.windows a[aria-current]{background:#0b57a4;color:#fff}
form.filters{display:flex;flex-wrap:wrap;gap:.5em 1em;align-items:end;margin:.5em 0 1em}
form.filters label{display:flex;flex-direction:column;font-size:.9em}
input,select,button{font:inherit;padding:.2em .4em;max-width:100%}
svg.chart{max-width:100%;height:auto;background:#fff;border:1px solid #ddd}
code{background:#eee;padding:0 .2em;overflow-wrap:anywhere}
@media (max-width:600px){main{padding:.6em}th,td{padding:.2em .35em}h1{font-size:1.2em}}
"""


def e(value: object) -> str:
    """HTML-escape anything for element content and quoted attributes."""
    return escape("" if value is None else str(value), quote=True)


def url_arg(value: str) -> str:
    return quote(value, safe="")


def domain_label(domain: str) -> str:
    return domain if domain else NO_DOMAIN


def domain_link(domain: str, query: str = "") -> str:
    return (f'<a href="/domain?name={url_arg(domain)}{e(query)}">'
            f"{e(domain_label(domain))}</a>")


_domain_label = domain_label
_domain_link = domain_link


def layout(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{e(title)} — smtptls reports</title>"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        '<a class="skip" href="#main">skip to content</a>'
        '<header><a href="/"><b>smtptls</b> TLSRPT console</a>'
        '<a href="/reports">all reports</a><a href="/quarantine">quarantine</a></header>'
        f'<main id="main"><h1>{e(title)}</h1>{body}</main></body></html>'
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: set[int],
          css_id: str = "", empty: str = "none") -> str:
    """A table in a horizontally scrolling box (nothing is cut off on narrow screens);
    cells are HTML already (escape them first)."""
    ident = f' id="{e(css_id)}"' if css_id else ""
    head = "".join(f'<th scope="col" class="n">{e(h)}</th>' if i in numeric
                   else f'<th scope="col">{e(h)}</th>' for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{c}</td>' if i in numeric else f"<td>{c}</td>"
                        for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    if not body:
        body.append(f'<tr class="empty"><td colspan="{len(headers)}">{empty}</td></tr>')
    return (f'<div class="scroll"><table{ident}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


_table = table


def rate_text(ok: int, bad: int) -> str:
    total = ok + bad
    return "—" if total == 0 else f"{100 * bad / total:.2f} %"


_rate = rate_text


def failed_text(n: int) -> str:
    """A failed-session count: red only when there are failures."""
    return f'<span class="failed">{n}</span>' if n else "0"


def conflict_badge(report: StoredReport) -> str:
    """A badge for a report whose key another report shares (links to the report)."""
    if not report.conflict:
        return ""
    what = "counted" if report.counted else "not counted"
    return (f' <a class="badge conflict" href="/report/{report.pk}#conflict" title="another '
            f'report has this report-id and organization ({what})">conflict</a>')


def reports_table(reports: Sequence[StoredReport]) -> str:
    rows = [
        (f'<a href="/report/{r.pk}">{e(r.report_id)}</a>{conflict_badge(r)}', e(r.organization),
         e(r.start.strftime("%Y-%m-%d %H:%M")), e(r.end.strftime("%Y-%m-%d %H:%M")),
         e(", ".join(_domain_label(d) for d in r.policy_domains)), str(r.successful),
         failed_text(r.failed), e(r.channel), e(r.dkim))
        for r in reports
    ]
    return _table(("report-id", "organization", "start (UTC)", "end (UTC)", "policy domains",
                   "successful", "failed", "via", "DKIM"), rows, numeric={5, 6},
                  css_id="reports")


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
                     f"{failed_text(p.failed)} failed sessions.</p>")
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
