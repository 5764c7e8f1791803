"""The console's view of ``smtptls monitor``: per domain, the timeline of its runs.

``/monitor`` lists the domains of the monitor store's history; ``/monitor?domain=D``
lists D's runs, newest first: when, judged or not (a resolver outage), the alerts
raised (sent) and cleared in that run, the alerts active after it and the worst of
their severities. Pure functions from values to HTML, every value through
:func:`~smtptls.services.reports_server.dashboard.e`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from smtptls.services.reports_server.dashboard import e, layout, table, url_arg

if TYPE_CHECKING:
    from smtptls.store.monitor_base import DomainSummary, RunRecord

__all__ = ["TIMELINE_RUNS", "monitor_domains_page", "monitor_timeline_page"]

#: Runs shown on one timeline page (the store keeps ``monitor.keep_runs``).
TIMELINE_RUNS = 200


def _when(value: datetime) -> str:
    return e(value.strftime("%Y-%m-%d %H:%M:%S UTC"))


def _link(domain: str) -> str:
    return f'<a href="/monitor?domain={url_arg(domain)}">{e(domain)}</a>'


def monitor_domains_page(domains: Sequence[DomainSummary]) -> str:
    rows = [(_link(d.domain), e(d.runs), _when(d.last_run)) for d in domains]
    body = table(("domain", "runs kept", "last run"), rows, numeric={1}, css_id="monitor",
                 empty="no monitor run stored yet (smtptls monitor writes them)")
    return layout("Monitor", body)


def _keys(keys: Sequence[str]) -> str:
    """``domain|code|subject`` keys as ``code subject`` lines."""
    if not keys:
        return "—"
    return "<br>".join(e(" ".join(p for p in k.split("|")[1:] if p)) for k in keys)


def monitor_timeline_page(domain: str, runs: Sequence[RunRecord]) -> str:
    rows = []
    for run in runs:
        worst = run.worst
        status = "judged" if run.judged else "not judged (lookups failed)"
        if run.retried:
            status += ", retried"
        rows.append((_when(run.run_at), e(status), _keys(run.raised), _keys(run.cleared),
                     e(len(run.alerts)), e(worst.value if worst else "none")))
    body = ('<p><a href="/monitor">all monitored domains</a></p>'
            + table(("run", "status", "raised", "cleared", "active", "worst"), rows,
                    numeric={4}, css_id="timeline", empty="no run of this domain stored"))
    return layout(f"Monitor timeline: {domain}", body)
