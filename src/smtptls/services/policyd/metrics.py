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
    smtptls_policyd_connections_closed_total{reason}  closed by a limit: request-timeout,
                                                evicted-idle (connection cap), refused
                                                (cap reached, none idle)
    smtptls_policyd_accept_errors_total         accepts failed (EMFILE, ENFILE, ...)
    smtptls_policyd_cached_answers              entries in the answer cache
"""

from __future__ import annotations

import socket
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from smtptls.services.policyd.socketmap import parse_listen

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["PolicydMetrics", "answer_label", "bind_metrics_socket", "serve_metrics",
           "start_metrics_server"]

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            30.0)
#: Distinct encoded replies counted individually (one per domain answer at most);
#: beyond that replies are labelled on the spot.
_MAX_DISTINCT_REPLIES = 100000
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


class _HotPathCollector:
    """Exports the per-request counters, kept as plain integers on the hot path (no
    locks, no label lookups per request) and turned into metric families on scrape."""

    def __init__(self, owner: PolicydMetrics) -> None:
        self.owner = owner

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        o = self.owner
        requests = CounterMetricFamily("smtptls_policyd_requests",
                                       "socketmap requests by answer", labels=["answer"])
        by_label = dict.fromkeys(_LABELS, 0)
        for reply, count in list(o._by_reply.items()):
            label = o._label_of.get(reply) or answer_label(reply)
            by_label[label] += count
        for label, count in o._other_replies.items():
            by_label[label] += count
        for label in _LABELS:
            requests.add_metric([label], by_label[label])
        yield requests
        cumulative, buckets = 0, []
        for bound, count in zip((*_BUCKETS, float("inf")), o._lat_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily("smtptls_policyd_request_seconds",
                                    "socketmap request latency", buckets=buckets,
                                    sum_value=o._lat_sum)
        cache = CounterMetricFamily("smtptls_policyd_answer_cache", "answer cache lookups",
                                    labels=["result"])
        cache.add_metric(["hit"], o.hits)
        cache.add_metric(["miss"], o.misses)
        yield cache


class ConnectionLimits(Protocol):
    """What :class:`~.socketmap.SocketmapServer` counts about its limits."""

    @property
    def request_timeouts(self) -> int: ...
    @property
    def evicted(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def accept_errors(self) -> int: ...


class _LimitsCollector:
    def __init__(self, source: ConnectionLimits) -> None:
        self.source = source

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        src = self.source
        closed = CounterMetricFamily("smtptls_policyd_connections_closed",
                                     "connections closed by a limit", labels=["reason"])
        closed.add_metric(["request-timeout"], src.request_timeouts)
        closed.add_metric(["evicted-idle"], src.evicted)
        closed.add_metric(["refused"], src.refused)
        yield closed
        yield CounterMetricFamily("smtptls_policyd_accept_errors",
                                  "accepts that failed for lack of descriptors or memory",
                                  value=src.accept_errors)


class PolicydMetrics:
    """The daemon's metrics; ``observe`` is the socketmap server's per-request hook."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        # hot-path state: plain numbers, exported by _HotPathCollector
        self.hits = 0
        self.misses = 0
        self._by_reply: dict[bytes, int] = {}
        self._label_of: dict[bytes, str] = {}
        self._other_replies: dict[str, int] = dict.fromkeys(_LABELS, 0)
        self._lat_counts = [0] * (len(_BUCKETS) + 1)
        self._lat_sum = 0.0
        r.register(_HotPathCollector(self))  # type: ignore[arg-type]

    def observe(self, reply: bytes, seconds: float) -> None:
        by_reply = self._by_reply
        count = by_reply.get(reply)
        if count is not None:
            by_reply[reply] = count + 1
        elif len(by_reply) < _MAX_DISTINCT_REPLIES:
            by_reply[reply] = 1
            self._label_of[reply] = answer_label(reply)
        else:
            self._other_replies[answer_label(reply)] += 1
        self._lat_counts[bisect_left(_BUCKETS, seconds)] += 1
        self._lat_sum += seconds

    def watch_limits(self, source: ConnectionLimits) -> None:
        """Export the connection-limit counters of ``source`` (the socketmap server)."""
        self.registry.register(_LimitsCollector(source))  # type: ignore[arg-type]

    def cache_hit(self) -> None:
        self.hits += 1

    def cache_miss(self) -> None:
        self.misses += 1

    def render(self) -> bytes:
        return generate_latest(self.registry)


def bind_metrics_socket(listen: str) -> tuple[socket.socket, str]:
    """The listening socket for ``/metrics`` on ``listen`` (``host:port``, port 0: any)
    and its bound address. Binding needs no HTTP server: the daemon binds at start (a
    taken address fails the start) and serves it once its socketmap listeners answer.
    Raises :class:`OSError`."""
    host, port = parse_listen(listen, 9461)
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    return sock, (f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}")


async def serve_metrics(metrics: PolicydMetrics, sock: socket.socket) -> web.AppRunner:
    """Serve ``GET /metrics`` on a bound socket (:func:`bind_metrics_socket`); returns
    the runner (stop with ``await runner.cleanup()``, which closes the socket)."""
    from aiohttp import web

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


async def start_metrics_server(metrics: PolicydMetrics, listen: str) -> tuple[web.AppRunner, str]:
    """Serve ``GET /metrics`` on ``listen`` (``host:port``); returns the runner and the
    bound address. Stop with ``await runner.cleanup()``."""
    sock, address = bind_metrics_socket(listen)
    try:
        return await serve_metrics(metrics, sock), address
    except BaseException:
        sock.close()
        raise
