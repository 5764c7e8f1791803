"""Source: the HTTP API, ``POST /v1/results`` (answered after the commit), health and
metrics."""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from smtptls.config import parse_hostport
from smtptls.errors import (
    ResultError,
    StoreError,
)
from smtptls.logs import get_logger
from smtptls.net.results_client import IDEMPOTENCY_HEADER
from smtptls.services.collector.limits import MAX_HTTP_BODY, MAX_HTTP_RESULTS
from smtptls.services.collector.writer import Collector
from smtptls.store.results_base import (
    BatchOutcome,
    check_batch_id,
)
from smtptls.tlsrptsend.postfix_lines import is_report_message_id
from smtptls.tlsrptsend.results import SessionResult, loads_bounded, normalize_ip

_log = get_logger("tlsrpt.collect")

# --- HTTP -------------------------------------------------------------------------------------

COLLECTOR_KEY = web.AppKey("collector", Collector)
TOKEN_KEY = web.AppKey("token", object)


def _authorized(request: web.Request) -> bool:
    token = request.app[TOKEN_KEY]
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                             str(token).encode())


def _json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(data) + "\n", status=status,
                        content_type="application/json")


def parse_http_results(body: bytes, now: datetime) -> tuple[list[SessionResult], int]:
    """The results of a ``POST /v1/results`` body, and how many were our own report
    mails (dropped). Raises :class:`ResultError` naming the bad item."""
    data = loads_bounded(body, MAX_HTTP_BODY)
    if isinstance(data, dict) and "results" in data:
        data = data["results"]
    items = data if isinstance(data, list) else [data]
    if len(items) > MAX_HTTP_RESULTS:
        raise ResultError(f"more than {MAX_HTTP_RESULTS} results in one request")
    out, own = [], 0
    for i, item in enumerate(items):
        if isinstance(item, dict) and "message-id" in item:
            item = dict(item)
            mid = item.pop("message-id")
            if isinstance(mid, str) and is_report_message_id(mid):
                own += 1
                continue
        try:
            out.append(SessionResult.from_dict(item, now=now))
        except ResultError as exc:
            raise ResultError(f"results[{i}]: {exc}") from exc
    return out, own


async def _post_results(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _json_response({"status": "refused", "reason": "authentication required"}, 401)
    collector = request.app[COLLECTOR_KEY]
    if request.content_length is not None and request.content_length > MAX_HTTP_BODY:
        return _json_response({"status": "refused", "reason": "body too large"}, 413)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > MAX_HTTP_BODY:
            return _json_response({"status": "refused", "reason": "body too large"}, 413)
        chunks.append(chunk)
    body = b"".join(chunks)
    try:
        results, own = parse_http_results(body, datetime.now(UTC))
    except ResultError as exc:
        collector.metrics.bad_input.labels("http").inc()
        return _json_response({"status": "refused", "reason": str(exc)}, 400)
    if own:
        collector.metrics.dropped.labels("own-report").inc(own)
    batch_id = request.headers.get(IDEMPOTENCY_HEADER)
    if batch_id is not None:
        try:
            batch_id = check_batch_id(batch_id.strip())
        except ResultError as exc:
            collector.metrics.bad_input.labels("http").inc()
            return _json_response({"status": "refused", "reason": str(exc)}, 400)
    try:
        stored, outcome = await collector.record_batch(results, source="http",
                                                       batch_id=batch_id)
    except StoreError as exc:
        return web.Response(text=json.dumps({"status": "unavailable", "reason": str(exc)}),
                            status=503, content_type="application/json",
                            headers={"Retry-After": "30"})
    if outcome is BatchOutcome.CONFLICT:
        return _json_response({"status": "conflict", "stored": 0, "reason":
                               f"{IDEMPOTENCY_HEADER} {batch_id} was used for other "
                               "results"}, 409)
    return _json_response({"status": str(outcome), "stored": stored, "dropped_own": own})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _metrics(request: web.Request) -> web.Response:
    if not _authorized(request):
        return web.Response(status=401, text="authentication required\n")
    body = request.app[COLLECTOR_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(collector: Collector, *, token: str | None = None) -> web.Application:
    app = web.Application(client_max_size=MAX_HTTP_BODY + 1024)
    app[COLLECTOR_KEY] = collector
    app[TOKEN_KEY] = token
    app.router.add_post("/v1/results", _post_results)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/metrics", _metrics)
    return app


def _listen_address(text: str) -> tuple[str, int]:
    """``host:port`` to listen on; port 0 (any free port) is allowed here."""
    stripped = text.strip()
    if stripped.endswith(":0") and not stripped.endswith("::0"):
        host, _ = parse_hostport(stripped[:-2], 8462)
        return host, 0
    return parse_hostport(stripped, 8462)


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost."):
        return True
    try:
        return normalize_ip(host) in ("::1",) or normalize_ip(host).startswith("127.")
    except ResultError:
        return False
