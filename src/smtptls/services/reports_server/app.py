"""The aiohttp application of ``smtptls reports serve``.

Intake (RFC 8460 §5.4, no authentication — any reporter may post):

* ``POST /`` and its alias ``POST /v1/tlsrpt`` with ``Content-Type:
  application/tlsrpt+gzip`` or ``application/tlsrpt+json`` (§5.3 media types; anything
  else is 415). The body is capped (413); the decompressed size is capped by the
  parser (gzip bombs give 413). 201 when stored, 200 for a byte-identical re-post of
  a stored report (``"status": "duplicate"``), 202 for a different report under the
  report-id and organization of a stored one (``"status": "conflict"``: both kept,
  ``counted`` says whether this one is used in summaries), 400 for a report that
  does not parse (kept in quarantine), 503 when the store is down or the receiver's
  in-flight byte budget is spent, 429 past the per-address rate limit (both with
  ``Retry-After``; the reporter retries). 2xx is sent only after the store committed.

Dashboard (token-protected when a token is configured: HTTP Basic with the token as
password, or ``Authorization: Bearer <token>``):

* ``/?window=7d`` what needs attention (windows 24h, 7d, 30d, 90d, or
  ``window=custom&from=D&to=D``); ``/domain?name=D&window=..`` charts, reporters,
  failures with advice; ``/reports?domain=&reporter=&result=&q=&from=&to=&conflict=1
  &page=N`` all reports, filtered and paged; ``/report/<id>[?page=N]`` (failure details
  a page at a time);
  ``/quarantine`` and ``/quarantine/<id>/raw``; ``/monitor[?domain=D]`` the timeline
  of ``smtptls monitor``'s runs per domain (from ``[monitor] store``);
* ``/metrics`` Prometheus text format (token-protected too); ``/healthz`` (open).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from smtptls.errors import ConfigError, StoreError
from smtptls.logs import get_logger
from smtptls.services.reports_server import dashboard, views
from smtptls.services.reports_server.console import Window, overview_rows, parse_window
from smtptls.services.reports_server.intake import Outcome, ReportIntake
from smtptls.services.reports_server.limits import InflightBudget, RateLimiter, Reservation
from smtptls.services.reports_server.metrics import CONTENT_TYPE_LATEST, IntakeMetrics
from smtptls.store.reports_base import Channel, ReportStore, parse_since
from smtptls.store.reports_console import ReportFilter

if TYPE_CHECKING:  # the console loads the monitor's modules only when asked for them
    from smtptls.config import MonitorConfig
    from smtptls.store.monitor_base import MonitorStore

__all__ = ["INTAKE_PATHS", "MEDIA_TYPES", "create_app", "monitor_opener"]

INTAKE_PATHS = ("/", "/v1/tlsrpt")
# RFC 8460 §5.3 / §6: the two media types a report is posted with.
MEDIA_TYPES = ("application/tlsrpt+gzip", "application/tlsrpt+json")
OPEN_PATHS = ("/healthz",)
REALM = "smtptls reports"

_log = get_logger("reports.http")

STORE_KEY = web.AppKey("store", ReportStore)
INTAKE_KEY = web.AppKey("intake", ReportIntake)
METRICS_KEY = web.AppKey("metrics", IntakeMetrics)
TOKEN_KEY = web.AppKey("token", str)  # "" when the dashboard has no token
MAX_BODY_KEY = web.AppKey("max_body", int)
BUDGET_KEY = web.AppKey("budget", InflightBudget)
RATE_KEY = web.AppKey("rate", RateLimiter)
PAGE_SIZE_KEY = web.AppKey("failure_page_size", int)


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """What the console knows beyond the store: the owner's domains and rua URIs."""

    domains: tuple[str, ...] = ()
    rua: tuple[str, ...] = ()
    stale_days: int = 3
    #: runs ``smtptls check`` for an own domain (:mod:`.own_check`); None: no button
    check: Callable[[str], Awaitable[str]] | None = None


VIEW_KEY = web.AppKey("console", ConsoleSettings)

READ_CHUNK = 64 * 1024  # bytes read (and reserved) at a time from a body of unknown length
BUSY_RETRY_AFTER = "10"  # seconds: the in-flight budget frees up as uploads finish
STATUS = {Outcome.STORED: 201, Outcome.DUPLICATE: 200, Outcome.CONFLICT: 202}

_SECURITY_HEADERS = {
    # Report contents are attacker-controlled: no scripts, nothing loaded from elsewhere.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def token_matches(header: str | None, token: str) -> bool:
    """Does an ``Authorization`` header carry ``token`` (Bearer, or Basic password)?"""
    if not header or len(header) > 4096:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        _, _, password = decoded.partition(":")
        return hmac.compare_digest(password.encode(), token.encode())
    return False


def _json(data: object, status: int = 200, *, headers: dict[str, str] | None = None
          ) -> web.Response:
    return web.Response(text=json.dumps(data) + "\n", status=status,
                        content_type="application/json", headers=headers)


@web.middleware
async def _security(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                    ) -> web.StreamResponse:
    token = request.app[TOKEN_KEY]
    is_intake = request.method == "POST" and request.path in INTAKE_PATHS
    if token and not is_intake and request.path not in OPEN_PATHS:
        if not token_matches(request.headers.get("Authorization"), token):
            response: web.StreamResponse = web.Response(
                status=401, text="authentication required\n",
                headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})
            response.headers.update(_SECURITY_HEADERS)
            return response
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(_SECURITY_HEADERS)
        raise
    except StoreError as exc:
        _log.error("store unavailable", path=request.path, error=str(exc))
        response = web.Response(status=503, text="report store unavailable\n",
                                headers={"Retry-After": "60"})
    response.headers.update(_SECURITY_HEADERS)
    return response


class _Busy(Exception):
    """The in-flight budget has no room for this body."""


async def _read_capped(request: web.Request, limit: int, reservation: Reservation
                       ) -> bytes | None:
    """The body, or None when it is longer than ``limit`` (never reads past it).

    Every byte held is reserved first (a declared Content-Length at once, a body of
    unknown length chunk by chunk); raises :class:`_Busy` when the budget is spent.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    if request.content_length is not None and not reservation.grow(request.content_length):
        raise _Busy
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        if not reservation.grow(size):
            chunks.clear()
            raise _Busy
        chunks.append(chunk)
    return b"".join(chunks)


async def intake_handler(request: web.Request) -> web.Response:
    metrics = request.app[METRICS_KEY]
    limit = request.app[MAX_BODY_KEY]
    remote = request.remote or ""
    media_type = request.content_type.lower()
    wait = request.app[RATE_KEY].allow(remote, time.monotonic())
    if wait:
        metrics.error("https", "rate-limited")
        _log.warning("report refused", remote=remote, reason="rate limit")
        response = _json({"status": "refused", "reason": "too many reports from this address"},
                         429, headers={"Retry-After": str(int(wait))})
        response.force_close()  # the body is not read
        return response
    budget = request.app[BUDGET_KEY]
    with budget.hold() as reservation:
        try:
            body = await _read_capped(request, limit, reservation)
        except _Busy:
            metrics.error("https", "busy")
            _log.warning("report refused", remote=remote, reason="in-flight budget spent",
                         budget=budget.limit)
            response = _json({"status": "refused", "reason": "too many reports in progress"},
                             503, headers={"Retry-After": BUSY_RETRY_AFTER})
            response.force_close()  # the body is not read: close at once, no lingering
            return response
        return await _take(request, body, media_type, remote, limit)


async def _take(request: web.Request, body: bytes | None, media_type: str, remote: str,
                limit: int) -> web.Response:
    intake = request.app[INTAKE_KEY]
    metrics = request.app[METRICS_KEY]
    if body is None:
        metrics.error("https", "too-large")
        _log.warning("report refused", remote=remote, reason="body over size cap", cap=limit)
        return _json({"status": "refused", "reason": f"body larger than {limit} bytes"}, 413)
    if media_type not in MEDIA_TYPES:
        # RFC 8460 §5.3: reports are application/tlsrpt+gzip or +json; keep what came.
        outcome = await intake.quarantine(
            body, f"unsupported media type {media_type[:100]!r}", channel=Channel.HTTPS,
            remote=remote, kind="media-type")
        _log.warning("report refused", remote=remote, reason="media type",
                     media_type=media_type[:100], quarantine_id=outcome.pk)
        return _json({"status": "refused", "reason": "unsupported media type; use "
                      + " or ".join(MEDIA_TYPES), "quarantine_id": outcome.pk}, 415)
    outcome = await intake.submit_body(body, channel=Channel.HTTPS, remote=remote)
    if outcome.outcome is Outcome.QUARANTINED:
        _log.warning("report quarantined", remote=remote, reason=outcome.reason,
                     quarantine_id=outcome.pk)
        return _json(outcome.to_dict(), 413 if outcome.too_large else 400)
    _log.info("report received", remote=remote, report_id=outcome.report_id,
              outcome=str(outcome.outcome))
    return _json(outcome.to_dict(), STATUS[outcome.outcome])


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _today() -> date:
    return datetime.now(UTC).date()


def _window(request: web.Request) -> Window:
    q = request.query
    if q.get("since") and not q.get("window"):  # the older ?since=30d form
        start = parse_since(q["since"], now=datetime.now(UTC))
        return parse_window("custom", start.isoformat(), _today().isoformat(), today=_today())
    return parse_window(q.get("window"), q.get("from"), q.get("to"), today=_today())


async def index_handler(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    view = request.app[VIEW_KEY]
    try:
        window = _window(request)
    except ConfigError as exc:
        return _html(dashboard.not_found_page(str(exc)), 400)
    prev = window.previous()
    rows = overview_rows(
        await store.reporter_activity(start=window.start, end=window.end),
        await store.reporter_activity(start=prev.start, end=prev.end),
        await store.reporter_last_seen(), today=_today(), stale_days=view.stale_days,
        own_domains=view.domains)
    return _html(views.overview_page(rows, window, counts=await store.counts(),
                                     own_domains=view.domains, rua=view.rua))


async def domain_handler(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    view = request.app[VIEW_KEY]
    name = request.query.get("name", "")[:255].strip().lower().rstrip(".")
    try:
        window = _window(request)
    except ConfigError as exc:
        return _html(dashboard.not_found_page(str(exc)), 400)
    prev = window.previous()
    where = ReportFilter(domain=name, start=window.start, end=window.end)
    reports, total = await store.search_reports(where, limit=views.DOMAIN_REPORTS)
    if not name and not total:
        return _html(dashboard.not_found_page("no policy domain given"), 404)
    page = views.DomainView(
        domain=name, window=window,
        summary=await store.summary(domain=name, since=window.start, until=window.end),
        activity=await store.reporter_activity(start=window.start, end=window.end,
                                               domain=name),
        previous=await store.reporter_activity(start=prev.start, end=prev.end, domain=name),
        last_seen=await store.reporter_last_seen(domain=name),
        groups=await store.failure_groups(domain=name, start=window.start, end=window.end),
        checks=await store.count_checks(domain=name, start=window.start, end=window.end),
        overlaps=await store.range_overlaps(domain=name, start=window.start, end=window.end),
        reports=reports, report_total=total, today=_today(), stale_days=view.stale_days,
        own=name in view.domains, rua=view.rua)
    return _html(views.domain_page(page))


async def check_handler(request: web.Request) -> web.Response:
    """POST ``name=<own domain>``: run ``smtptls check`` for it and show the report."""
    view = request.app[VIEW_KEY]
    form = await request.post()
    name = str(form.get("name", ""))[:255].strip().lower().rstrip(".")
    if view.check is None or name not in view.domains:
        # only configured own domains: no target ever comes from the browser
        return _html(dashboard.not_found_page("not one of the configured own domains"), 404)
    from smtptls.services.reports_server.own_check import CheckBusy

    try:
        text = await view.check(name)
    except CheckBusy:
        return _html(dashboard.not_found_page("a check is running; try again shortly"), 429)
    return _html(views.check_page(name, text))


def _date_arg(text: str | None) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


async def reports_handler(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    q = request.query
    where = ReportFilter(
        domain=q.get("domain", "")[:255].strip().lower().rstrip("."),
        organization=q.get("reporter", "")[:200], result_type=q.get("result", "")[:100],
        conflict=q.get("conflict") == "1", search=q.get("q", "")[:200].strip(),
        start=_date_arg(q.get("from")), end=_date_arg(q.get("to")))
    text = q.get("page", "1")
    page = int(text) if text.isdigit() and 0 < len(text) < 7 and int(text) > 0 else 1
    reports, total = await store.search_reports(
        where, limit=views.PAGE_SIZE, offset=(page - 1) * views.PAGE_SIZE)
    domains = sorted({d.policy_domain for d in await store.reporter_last_seen()})
    return _html(views.reports_page(reports, where=where, total=total, page=page,
                                    domains=domains, organizations=await store.organizations()))


def _pk(request: web.Request) -> int | None:
    text = request.match_info.get("pk", "")
    return int(text) if text.isdigit() and len(text) < 19 else None


async def report_handler(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    pk = _pk(request)
    size = request.app[PAGE_SIZE_KEY]
    text = request.query.get("page", "1")
    page = int(text) if text.isdigit() and 0 < len(text) < 10 and int(text) > 0 else 1
    report = (await store.get_report(pk, failures_offset=(page - 1) * size,
                                     failures_limit=size if size else None)
              if pk is not None else None)
    if report is None:
        return _html(dashboard.not_found_page("no such report"), 404)
    return _html(dashboard.report_page(report, page=page, page_size=size))


async def quarantine_handler(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    return _html(dashboard.quarantine_page(await store.list_quarantine(limit=1000)))


async def quarantine_raw_handler(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    pk = _pk(request)
    entry = await store.get_quarantine(pk) if pk is not None else None
    if entry is None or entry.raw is None:
        return _html(dashboard.not_found_page("no such quarantine entry"), 404)
    # Served as an opaque download, never rendered by the browser.
    return web.Response(body=entry.raw, content_type="application/octet-stream", headers={
        "Content-Disposition": f'attachment; filename="quarantine-{entry.pk}.bin"'})


class MonitorSource:
    """The monitor store the console reads (``[monitor] store``), opened at the first
    timeline request and closed with the application. ``opener`` returns None while
    there is no store yet (a SQLite file the monitor has not written): the console
    shows an empty timeline and creates nothing."""

    def __init__(self, opener: Callable[[], MonitorStore | None] | None) -> None:
        self._opener = opener
        self._store: MonitorStore | None = None
        self._lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return self._opener is not None

    async def get(self) -> MonitorStore | None:
        if self._opener is None:
            return None
        async with self._lock:
            if self._store is None:
                store = self._opener()
                if store is None:
                    return None
                await store.open()
                self._store = store
            return self._store

    async def close(self, _app: web.Application | None = None) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()


MONITOR_KEY = web.AppKey("monitor", MonitorSource)


def monitor_opener(cfg: MonitorConfig) -> Callable[[], MonitorStore | None]:
    """What opens the store ``[monitor] store`` names, for :func:`create_app` (None
    while its SQLite file does not exist)."""

    def make() -> MonitorStore | None:
        from smtptls.store.monitor_open import monitor_store_exists, open_monitor_store

        return open_monitor_store(cfg) if monitor_store_exists(cfg) else None

    return make


async def monitor_handler(request: web.Request) -> web.Response:
    """``/monitor``: the monitored domains; ``?domain=D``: D's runs, newest first."""
    from smtptls.services.reports_server import monitor_views

    try:
        store = await request.app[MONITOR_KEY].get()
    except StoreError as exc:
        _log.error("monitor store unavailable", error=str(exc)[:300])
        return _html(dashboard.not_found_page("the monitor store is unavailable"), 503)
    domain = request.query.get("domain", "")[:255].strip().lower().rstrip(".")
    if store is None:
        if not request.app[MONITOR_KEY].configured:
            return _html(dashboard.not_found_page("no monitor store configured"), 404)
        return _html(monitor_views.monitor_timeline_page(domain, []) if domain
                     else monitor_views.monitor_domains_page([]))
    try:
        if not domain:
            return _html(monitor_views.monitor_domains_page(await store.domains()))
        runs = await store.runs(domain, limit=monitor_views.TIMELINE_RUNS)
    except StoreError as exc:
        _log.error("monitor store unavailable", error=str(exc)[:300])
        return _html(dashboard.not_found_page("the monitor store is unavailable"), 503)
    return _html(monitor_views.monitor_timeline_page(domain, runs))


async def metrics_handler(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def health_handler(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


def create_app(
    store: ReportStore,
    intake: ReportIntake,
    *,
    metrics: IntakeMetrics,
    token: str | None = None,
    max_body: int = 5 * 1024 * 1024,
    budget: InflightBudget | None = None,
    rate: RateLimiter | None = None,
    failure_page_size: int = 200,
    console: ConsoleSettings | None = None,
    monitor: Callable[[], MonitorStore | None] | None = None,
) -> web.Application:
    """The application; the caller owns the store's lifetime. ``monitor`` makes the
    (unopened) monitor store of the ``/monitor`` timeline; the application opens it
    when first asked and closes it on cleanup."""
    app = web.Application(middlewares=[_security], client_max_size=max_body + 1)
    app[STORE_KEY] = store
    app[INTAKE_KEY] = intake
    app[METRICS_KEY] = metrics
    app[TOKEN_KEY] = token or ""
    app[MAX_BODY_KEY] = max_body
    app[BUDGET_KEY] = budget or InflightBudget(0)
    app[RATE_KEY] = rate or RateLimiter(0, 1)
    app[PAGE_SIZE_KEY] = failure_page_size
    app[VIEW_KEY] = console or ConsoleSettings()
    app[MONITOR_KEY] = MonitorSource(monitor)
    app.on_cleanup.append(app[MONITOR_KEY].close)
    for path in INTAKE_PATHS:
        app.router.add_post(path, intake_handler)
    app.router.add_get("/", index_handler)
    app.router.add_get("/domain", domain_handler)
    app.router.add_post("/domain/check", check_handler)
    app.router.add_get("/reports", reports_handler)
    app.router.add_get("/report/{pk}", report_handler)
    app.router.add_get("/quarantine", quarantine_handler)
    app.router.add_get("/quarantine/{pk}/raw", quarantine_raw_handler)
    app.router.add_get("/monitor", monitor_handler)
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", health_handler)
    return app
