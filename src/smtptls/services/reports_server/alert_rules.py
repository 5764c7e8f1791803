"""The console's alert rules: what in the stored reports needs the owner now.

Rules (each configurable in ``[alerts]``, docs/reports.md "Alerts"):

* ``failure-rate``: one reporter saw more than ``failure_rate_percent`` of at least
  ``min_sessions`` sessions to a domain fail in the window (one alert per reporter);
* ``new-failure-type``: a result type reported in the window that the window before
  did not have (one per type);
* ``critical-failure``: any session failing with one of ``critical_result_types``
  (policy failures: a broken MTA-STS host, TLSA or DNSSEC blocks mail for every sender);
* ``reports-stopped``: a reporter that used to report on a domain sent nothing for
  ``stale_days`` days.

:func:`alerts_from` is pure over store rows; :func:`evaluate` reads them from a store.
The alerts are values (:class:`~smtptls.services.alerts.Alert`); deduplication and
delivery are the dispatcher's (services/alerts.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, time

from smtptls.config import AlertsConfig
from smtptls.errors import SmtpTlsError
from smtptls.logs import get_logger
from smtptls.services.alerts import Alert, AlertDispatcher, Severity
from smtptls.services.reports_server.advice import advice
from smtptls.services.reports_server.console import Window, parse_window, silent_reporters
from smtptls.store.reports_console import (
    ConsoleStore,
    FailureGroup,
    ReporterActivity,
    ReporterLastSeen,
)

__all__ = ["alert_loop", "alerts_from", "evaluate"]

_log = get_logger("reports.alerts")


def _at(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def alerts_from(cfg: AlertsConfig, *, window: Window,
                activity: Iterable[ReporterActivity],
                groups: Mapping[str, Sequence[FailureGroup]],
                previous_types: Mapping[str, Mapping[str, int]],
                last_seen: Iterable[ReporterLastSeen], today: date) -> list[Alert]:
    out: list[Alert] = []
    span = window.label
    for a in activity:
        total = a.successful + a.failed
        if total < max(1, cfg.min_sessions) or not a.failed:
            continue
        pct = 100 * a.failed / total
        if pct <= cfg.failure_rate_percent:
            continue
        mine = [g for g in groups.get(a.policy_domain, ()) if g.organization == a.organization]
        top = max(mine, key=lambda g: g.sessions, default=None)
        fix = (advice(top.result_type, mx=top.receiving_mx, policy_type=top.policy_type).fix
               if top else "Look at the domain's failures in the console.")
        out.append(Alert(
            Severity.WARNING, a.policy_domain, "failure-rate",
            f"{pct:.1f} % of {total} sessions failed as reported by {a.organization} "
            f"({span}; threshold {cfg.failure_rate_percent:g} %)",
            fix=fix, first_seen=_at(a.first_day), last_seen=_at(a.last_day),
            subject=a.organization))
    critical = set(cfg.critical_result_types)
    for domain, gs in groups.items():
        by_type: dict[str, list[FailureGroup]] = {}
        for g in gs:
            by_type.setdefault(g.result_type, []).append(g)
        before = previous_types.get(domain, {})
        for rt, items in sorted(by_type.items()):
            sessions = sum(g.sessions for g in items)
            first = min(g.first_day for g in items)
            last = max(g.last_day for g in items)
            mxs = sorted({g.receiving_mx for g in items if g.receiving_mx})
            top = max(items, key=lambda g: g.sessions)
            a_ = advice(rt, mx=top.receiving_mx, policy_type=top.policy_type,
                        last_seen=last.isoformat())
            where = f" on {', '.join(mxs[:3])}" if mxs else ""
            if rt in critical:
                out.append(Alert(
                    Severity.CRITICAL, domain, "critical-failure",
                    f"{sessions} sessions failed with {rt}{where} ({span}): {a_.explanation}",
                    fix=a_.fix, first_seen=_at(first), last_seen=_at(last), subject=rt))
            elif cfg.new_failure_type and rt not in before:
                out.append(Alert(
                    Severity.WARNING, domain, "new-failure-type",
                    f"new failure type {rt}{where}: {sessions} sessions ({span}), none in "
                    f"the {window.days} days before. {a_.explanation}",
                    fix=a_.fix, first_seen=_at(first), last_seen=_at(last), subject=rt))
    if cfg.stale_days:
        for s, gap in silent_reporters(last_seen, today=today, stale_days=cfg.stale_days):
            out.append(Alert(
                Severity.WARNING, s.policy_domain, "reports-stopped",
                f"no report from {s.organization} for {gap} days (last covered "
                f"{s.last_day.isoformat()}, received {s.last_received:%Y-%m-%d %H:%M} UTC)",
                fix="Check that the _smtp._tls TXT record is still published and that "
                "report mail and HTTPS posts still reach this receiver (MX, mailbox, "
                "quarantine).", first_seen=_at(s.first_day), last_seen=s.last_received,
                subject=s.organization))
    return out


async def evaluate(store: ConsoleStore, cfg: AlertsConfig, *, today: date | None = None,
                   window: str | None = None) -> list[Alert]:
    """The alerts active now for every domain in ``store``."""
    today = today or datetime.now(UTC).date()
    w = parse_window(window or cfg.window, today=today)
    prev = w.previous()
    activity = await store.reporter_activity(start=w.start, end=w.end)
    domains = sorted({a.policy_domain for a in activity if a.failed})
    groups = {d: await store.failure_groups(domain=d, start=w.start, end=w.end)
              for d in domains}
    previous = {d: await store.failure_types(domain=d, start=prev.start, end=prev.end)
                for d in domains}
    last_seen = await store.reporter_last_seen()
    return alerts_from(cfg, window=w, activity=activity, groups=groups,
                       previous_types=previous, last_seen=last_seen, today=today)


async def alert_loop(store: ConsoleStore, cfg: AlertsConfig, dispatcher: AlertDispatcher, *,
                     stop: asyncio.Event) -> None:
    """``reports serve``: evaluate the rules every ``cfg.interval`` seconds and hand the
    alerts to the dispatcher (which sends each condition once) until ``stop`` is set."""
    while not stop.is_set():
        try:
            result = await dispatcher.dispatch(await evaluate(store, cfg))
            if result.sent or result.failed:
                _log.info("alerts evaluated", sent=len(result.sent), failed=len(result.failed),
                          suppressed=result.suppressed, cleared=len(result.cleared))
        except SmtpTlsError as exc:  # the store down, a bad window: try again later
            _log.error("alert evaluation failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(1.0, cfg.interval))
        except TimeoutError:
            pass
