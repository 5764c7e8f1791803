"""Prometheus metrics of the policy daemon, served on their own port at ``/metrics``.

Every daemon has its own :class:`~prometheus_client.CollectorRegistry`, so tests can run
several in one process. Metric names::

    smtptls_policyd_requests_total{answer}      dane-only, dane, secure, notfound, temp,
                                                perm, other (any other OK answer: the
                                                testing answer, overrides)
    smtptls_policyd_request_seconds             latency histogram (socketmap request in,
                                                reply written)
    smtptls_policyd_answer_cache_total{result}  hit / miss of the in-memory answer cache
    smtptls_policyd_policy_lookups_total{outcome}  MTA-STS discoveries by outcome
                                                (cached, fetched, fetch-failed, ...)
    smtptls_policyd_fetch_errors_total{kind}    policy fetch failures by kind (tls, status,
                                                timeout, content-type, too-large, syntax, ...)
    smtptls_policyd_refresh_total{kind,result}  background work (recheck, proactive)
    smtptls_policyd_connections                 open socketmap connections
    smtptls_policyd_cached_answers              entries in the answer cache
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from smtptls.services.policyd.socketmap import parse_listen

__all__ = ["PolicydMetrics", "answer_label", "start_metrics_server"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            30.0)
_LABELS = ("dane-only", "dane", "secure", "notfound", "temp", "perm", "other")


def answer_label(reply: bytes) -> str:
    """The metrics label of an encoded reply: ``b"12:OK dane-only,"`` -> ``dane-only``."""
    colon = reply.find(b":")
    body = reply[colon + 1:-1]
    status, _, data = body.partition(b" ")
    if status == b"OK":
        word = data.split(b" ", 1)[0].decode("ascii", "replace")
        return word if word in ("dane-only", "dane", "secure") else "other"
    return {b"NOTFOUND": "notfound", b"TEMP": "temp", b"PERM": "perm"}.get(status, "other")


class PolicydMetrics:
    """The daemon's metrics; ``observe`` is the socketmap server's per-request hook."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("smtptls_policyd_requests", "socketmap requests by answer",
                                ["answer"], registry=r)
        self.latency = Histogram("smtptls_policyd_request_seconds",
                                 "socketmap request latency", buckets=_BUCKETS, registry=r)
        self.answer_cache = Counter("smtptls_policyd_answer_cache",
                                    "answer cache lookups", ["result"], registry=r)
        self.policy_lookups = Counter("smtptls_policyd_policy_lookups",
                                      "MTA-STS discoveries by outcome", ["outcome"], registry=r)
        self.fetch_errors = Counter("smtptls_policyd_fetch_errors",
                                    "MTA-STS policy fetch failures by kind", ["kind"],
                                    registry=r)
        self.refresh = Counter("smtptls_policyd_refresh", "background refreshes",
                               ["kind", "result"], registry=r)
        self.connections = Gauge("smtptls_policyd_connections", "open socketmap connections",
                                 registry=r)
        self.cached_answers = Gauge("smtptls_policyd_cached_answers",
                                    "entries in the answer cache", registry=r)
        self._by_label = {label: self.requests.labels(label) for label in _LABELS}
        self._hit = self.answer_cache.labels("hit")
        self._miss = self.answer_cache.labels("miss")
        self._label_of: dict[bytes, str] = {}
        self._observe_latency = self.latency.observe

    def observe(self, reply: bytes, seconds: float) -> None:
        label = self._label_of.get(reply)
        if label is None:
            label = answer_label(reply)
            if len(self._label_of) < 4096:
                self._label_of[reply] = label
        self._by_label[label].inc()
        self._observe_latency(seconds)

    def cache_hit(self) -> None:
        self._hit.inc()

    def cache_miss(self) -> None:
        self._miss.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def start_metrics_server(metrics: PolicydMetrics, listen: str) -> tuple[web.AppRunner, str]:
    """Serve ``GET /metrics`` on ``listen`` (``host:port``); returns the runner and the
    bound address. Stop with ``await runner.cleanup()``."""
    host, port = parse_listen(listen, 9461)

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    server = site._server
    bound = port
    if server is not None and getattr(server, "sockets", None):
        bound = server.sockets[0].getsockname()[1]
    return runner, f"{host}:{bound}"
