"""An HTTPS server hosting ``/.well-known/mta-sts.txt`` for many policy domains.

Layout (docs/publish.md)::

    DIR/<policy-domain>/mta-sts.txt   the policy (RFC 8461 §3.2), e.g. from
                                      ``smtptls publish mta-sts --out DIR --domain D``
    DIR/<policy-domain>/cert.pem      certificate chain for mta-sts.<policy-domain>
    DIR/<policy-domain>/key.pem       its private key (never logged)

- **SNI** picks the certificate: a client asking for ``mta-sts.example.com`` gets the
  context of ``DIR/example.com``; an unknown name ends the handshake with an
  ``unrecognized_name`` alert. A request whose ``Host`` names another policy domain than
  the SNI of its connection gets ``421 Misdirected Request`` (RFC 9110 §15.5.20): one
  connection never answers for two domains. In **plain-HTTP mode** (behind a
  TLS-terminating reverse proxy) no certificates are needed and the ``Host`` header
  alone picks the policy.
- **Connection limits**: the TLS handshake must finish within ``handshake_timeout``
  seconds; a connection without a complete request for ``idle_timeout`` seconds is
  closed; at most ``max_connections`` are open (never more than the descriptor limit
  allows), a new one past the cap closing the least recently active ones first. Each
  connection is counted from accept to close (handshakes included), and freed heap
  memory is handed back to the system after connections go away.
- The default address is loopback (:data:`DEFAULT_LISTEN`); serving the world on
  ``0.0.0.0:443`` is a choice made with ``--listen``.
- Only ``GET``/``HEAD`` of ``/.well-known/mta-sts.txt`` on ``Host: mta-sts.<domain>``
  answer 200, with ``Content-Type: text/plain; charset=utf-8`` (RFC 8461 §3.3) and a
  ``Cache-Control`` max-age of ``min(cache_max_age, policy max_age)``: short by default
  (300 s), because a cache that keeps an old body after the TXT ``id`` changed would
  make senders store the old policy under the new id (RFC 8461 §3.3 refetches only on
  an id change). Other methods on that path: 405; everything else: 404. No redirects.
- **Hot reload**: the directory is polled (mtime and size of each file) every
  ``reload_interval`` seconds, and at once on SIGHUP (the CLI wires it). A policy or key
  pair that does not load is skipped, logged and counted; the previous good version
  stays in service.
- An access log line per request (logger ``smtptls.policy_server``) and Prometheus
  metrics::

    smtptls_policy_server_requests_total{status}   answers by HTTP status
    smtptls_policy_server_request_seconds          latency histogram
    smtptls_policy_server_domains                  policy domains in service
    smtptls_policy_server_reloads_total{result}    directory scans (changed/unchanged)
    smtptls_policy_server_load_errors_total        files that did not load
    smtptls_policy_server_connections              open connections (handshakes included)
    smtptls_policy_server_connections_closed_total{reason}  evicted (cap), handshake
                                                   (failed or timed out)
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import heapq
import os
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from smtptls.errors import ConfigError, InvalidDomainError, PolicySyntaxError, SmtpTlsError
from smtptls.logs import get_logger
from smtptls.mtasts.policy import MAX_POLICY_BYTES, Policy, parse_policy
from smtptls.net.dns import normalize_domain
from smtptls.services.policyd.socketmap import (
    EVICT_FRACTION,
    AcceptErrorLog,
    effective_connection_limit,
    parse_listen,
)

__all__ = ["PolicyServer", "PolicyStore", "ServerConfig", "ServedPolicy"]

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3
MAX_DOMAINS = 100_000
MAX_CERT_BYTES = 1024 * 1024
CONTENT_TYPE = "text/plain; charset=utf-8"
#: Loopback unless told otherwise: publishing to the world is an explicit ``--listen``.
DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_PLAIN_LISTEN = "127.0.0.1:8080"
#: A sender fetches one small file: a handshake taking longer is a stalled client.
HANDSHAKE_TIMEOUT = 10.0
#: Connections with no complete request for this long are closed (aiohttp's keep-alive
#: timer, which also runs before the first request).
IDLE_TIMEOUT = 15.0
#: Senders fetch a policy once per ``max_age`` (days): a few hundred concurrent
#: connections is far beyond a real load; each idle TLS connection holds ~150-300 KB.
MAX_CONNECTIONS = 512
#: A close_notify the peer never answers is given up after this long.
TLS_SHUTDOWN_TIMEOUT = 5.0
#: Request octets decrypted before the handler is attached are held up to this much.
MAX_EARLY_DATA = 16 * 1024
#: Freed heap memory is returned (malloc_trim) this long after connections closed, at
#: most once per this interval: a few milliseconds of work per second at worst.
TRIM_DELAY = 1.0

log = get_logger("policy_server")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    directory: Path
    listen: str = DEFAULT_LISTEN
    plain_http: bool = False  # behind a TLS-terminating proxy: Host header only
    cache_max_age: int = 300
    reload_interval: float = 5.0
    metrics: str | None = None  # host:port of /metrics, None: off
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT
    max_connections: int = MAX_CONNECTIONS

    def __post_init__(self) -> None:
        if not 0 <= self.cache_max_age <= 86400:
            raise ConfigError("cache max-age must be 0..86400 seconds")
        if not 0.1 <= self.reload_interval <= 3600:
            raise ConfigError("reload interval must be 0.1..3600 seconds")
        if not 0.1 <= self.handshake_timeout <= 300:
            raise ConfigError("handshake timeout must be 0.1..300 seconds")
        if not 0.1 <= self.idle_timeout <= 3600:
            raise ConfigError("idle timeout must be 0.1..3600 seconds")
        if not 1 <= self.max_connections <= 1_000_000:
            raise ConfigError("max connections must be 1..1000000")


@dataclass(frozen=True, slots=True)
class ServedPolicy:
    """One policy domain in service."""

    domain: str
    body: bytes
    policy: Policy
    context: ssl.SSLContext | None
    stamp: tuple[tuple[int, int], ...]  # (mtime_ns, size) of the files it came from
    cache_control: str


def _stamp(paths: list[Path]) -> tuple[tuple[int, int], ...] | None:
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            return None
        out.append((st.st_mtime_ns, st.st_size))
    return tuple(out)


def _read(path: Path, limit: int) -> bytes:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise SmtpTlsError(f"{path.name} is larger than {limit} bytes")
    return data


@dataclass(slots=True)
class PolicyStore:
    """The policies (and certificates) of a directory, reloaded when files change."""

    directory: Path
    tls: bool = True
    cache_max_age: int = 300
    entries: dict[str, ServedPolicy] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    on_error: Callable[[str, str], None] | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # folder -> why, logged once

    def get(self, domain: str) -> ServedPolicy | None:
        return self.entries.get(domain)

    def _files(self, d: Path) -> list[Path]:
        names = ["mta-sts.txt"] + (["cert.pem", "key.pem"] if self.tls else [])
        return [d / n for n in names]

    def _load(self, domain: str, d: Path, stamp: tuple[tuple[int, int], ...]) -> ServedPolicy:
        raw = _read(d / "mta-sts.txt", MAX_POLICY_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PolicySyntaxError("policy is not valid UTF-8") from None
        policy = parse_policy(text)  # RFC 8461 §3.2: never serve what senders reject
        ctx = None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            for name in ("cert.pem", "key.pem"):
                _read(d / name, MAX_CERT_BYTES)  # bounded before OpenSSL reads it
            try:
                ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
            except (ssl.SSLError, OSError) as exc:
                raise SmtpTlsError(f"certificate or key does not load: {exc}") from None
        max_age = min(self.cache_max_age, policy.max_age)
        return ServedPolicy(domain, raw, policy, ctx, stamp, f"max-age={max_age}")

    def reload(self) -> bool:
        """Scan the directory; True when anything changed. Never raises for contents."""
        try:
            subdirs = sorted(p for p in self.directory.iterdir() if p.is_dir())
        except OSError as exc:
            self._error("*", f"cannot list {self.directory}: {exc.strerror}")
            return False
        seen: set[str] = set()
        changed = False
        skipped: dict[str, str] = {}
        for d in subdirs[:MAX_DOMAINS]:
            try:
                domain = normalize_domain(d.name)
            except InvalidDomainError:
                skipped[d.name] = "the folder name is not a domain name"
                continue
            if domain.startswith("mta-sts."):
                domain = domain[len("mta-sts."):]  # DIR/mta-sts.example.com is accepted too
            stamp = _stamp(self._files(d))
            if stamp is None:  # incomplete directory: not (yet) in service
                absent = [p.name for p in self._files(d) if not p.is_file()]
                skipped[d.name] = f"no {', '.join(absent) or 'readable files'}"
                continue
            seen.add(domain)
            old = self.entries.get(domain)
            if old is not None and old.stamp == stamp:
                continue
            if self.errors.get(domain + "@stamp") == repr(stamp):
                continue  # the same broken files: already reported
            try:
                self.entries[domain] = self._load(domain, d, stamp)
                self.errors.pop(domain, None)
                self.errors.pop(domain + "@stamp", None)
                changed = True
            except (SmtpTlsError, OSError) as exc:
                self.errors[domain + "@stamp"] = repr(stamp)
                self._error(domain, str(exc))
        for gone in set(self.entries) - seen:
            del self.entries[gone]
            changed = True
        for name, why in skipped.items():
            if self.skipped.get(name) != why:
                log.warning("domain skipped", folder=name, reason=why)
        self.skipped = skipped
        return changed

    def _error(self, domain: str, message: str) -> None:
        self.errors[domain] = message
        log.error("load failed", domain=domain, error=message)
        if self.on_error is not None:
            self.on_error(domain, message)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("smtptls_policy_server_requests_total", "HTTP answers",
                                ["status"], registry=self.registry)
        self.seconds = Histogram("smtptls_policy_server_request_seconds", "request latency",
                                 registry=self.registry,
                                 buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0))
        self.domains = Gauge("smtptls_policy_server_domains", "policy domains in service",
                             registry=self.registry)
        self.reloads = Counter("smtptls_policy_server_reloads_total", "directory scans",
                               ["result"], registry=self.registry)
        self.load_errors = Counter("smtptls_policy_server_load_errors_total",
                                   "policy or certificate files that did not load",
                                   registry=self.registry)
        self.connections = Gauge("smtptls_policy_server_connections",
                                 "open connections, handshakes included",
                                 registry=self.registry)
        self.closed = Counter("smtptls_policy_server_connections_closed_total",
                              "connections closed by a limit", ["reason"],
                              registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _host_domain(host: str | None) -> str | None:
    """``mta-sts.example.com[:port]`` -> ``example.com``; None for anything else."""
    if not host or len(host) > 300:
        return None
    name = host.strip().lower()
    if name.startswith("["):
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    name = name.rstrip(".")
    if not name.startswith("mta-sts."):
        return None
    try:
        return normalize_domain(name[len("mta-sts."):])
    except InvalidDomainError:
        return None


def release_free_memory() -> bool:
    """Hand freed heap pages back to the system (glibc ``malloc_trim``): without it the
    buffers of thousands of dropped connections stay in the process. False where the C
    library has no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def _malloc_trim() -> Callable[[int], int] | None:
    global _TRIM
    if _TRIM is False:
        name = ctypes.util.find_library("c")
        try:
            _TRIM = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):
            _TRIM = None
    return _TRIM  # type: ignore[return-value]


_TRIM: object = False


class _Connection(asyncio.Protocol):
    """One TCP connection, counted from accept to close. With TLS, the handshake runs
    through ``loop.start_tls`` (bounded by the handshake timeout) with this object as
    the protocol above it; then aiohttp's request handler gets the events."""

    def __init__(self, server: PolicyServer) -> None:
        self.server = server
        self.raw: asyncio.Transport | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.handler: asyncio.Protocol | None = None
        self.early = bytearray()
        self.last_activity = 0.0
        self.gone = False
        self.tls_task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        self.last_activity = time.monotonic()
        self.server._admit(self)
        if self.server._tls is None:
            self._attach(transport)
        else:
            transport.pause_reading()  # nothing is read before start_tls takes over
            self.tls_task = asyncio.ensure_future(self._handshake(transport, self.server._tls))

    async def _handshake(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(raw, self, ctx, server_side=True,
                                       ssl_handshake_timeout=self.server.config.handshake_timeout,
                                       ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT)
        except (OSError, RuntimeError):  # SSLError, timeouts, resets are OSErrors
            raw.abort()
            if not self.gone:
                self.server.metrics.closed.labels("handshake").inc()
            self._gone()
            return
        if tls is None or self.gone:
            return
        self._attach(tls)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        handler = self.server._web_server()  # type: ignore[misc]
        self.handler = handler
        handler.connection_made(transport)
        if self.early:
            data = bytes(self.early)
            self.early.clear()
            handler.data_received(data)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        if self.handler is not None:
            self.handler.data_received(data)
        elif len(self.early) + len(data) <= MAX_EARLY_DATA:
            self.early += data  # decrypted before start_tls returned
        else:
            self.close()

    def eof_received(self) -> bool | None:
        return self.handler.eof_received() if self.handler is not None else None

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        handler, self.handler = self.handler, None
        if handler is not None:
            handler.connection_lost(exc)
        self._gone()

    def close(self) -> None:
        """Drop the connection at once (no TLS shutdown: this is for limits)."""
        if self.raw is not None:
            self.raw.abort()

    def _gone(self) -> None:
        if not self.gone:
            self.gone = True
            self.server._forget(self)


class PolicyServer:
    """``await start()``, then ``bound`` holds the listening address; ``await stop()``."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = _Metrics()
        self.store = PolicyStore(config.directory, tls=not config.plain_http,
                                 cache_max_age=config.cache_max_age,
                                 on_error=lambda _d, _m: self.metrics.load_errors.inc())
        self.bound: str | None = None
        self.metrics_bound: str | None = None
        self._runners: list[web.AppRunner] = []
        self._poller: asyncio.Task[None] | None = None
        self._tls: ssl.SSLContext | None = None
        self._web_server: web.Server | None = None
        self._listener: asyncio.base_events.Server | None = None
        self._connections: set[_Connection] = set()
        self._sni_domain: weakref.WeakKeyDictionary[ssl.SSLObject, str] = (
            weakref.WeakKeyDictionary())
        self._trim_handle: asyncio.TimerHandle | None = None
        self._accept_errors = AcceptErrorLog()

    # --- connections --------------------------------------------------------------------

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def connection_limit(self) -> int:
        return effective_connection_limit(self.config.max_connections)

    def _admit(self, conn: _Connection) -> None:
        conns = self._connections
        limit = self.connection_limit
        if len(conns) >= limit:
            batch = heapq.nsmallest(max(1, limit // EVICT_FRACTION), conns,
                                    key=lambda c: c.last_activity)
            for old in batch:
                old.close()
                old._gone()
            self.metrics.closed.labels("evicted").inc(len(batch))
        conns.add(conn)
        self.metrics.connections.set(len(conns))

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        self.metrics.connections.set(len(self._connections))
        if self._trim_handle is None:
            with contextlib.suppress(RuntimeError):  # no loop: nothing to schedule
                self._trim_handle = asyncio.get_running_loop().call_later(
                    TRIM_DELAY, self._trim)

    def _trim(self) -> None:
        self._trim_handle = None
        release_free_memory()

    # --- TLS ----------------------------------------------------------------------------

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        domain = _host_domain(name)
        entry = self.store.get(domain) if domain else None
        if entry is None or entry.context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = entry.context
        self._sni_domain[sslobj] = entry.domain
        return None

    def _misdirected(self, request: web.Request, domain: str | None) -> bool:
        """True when ``Host`` names a policy domain other than the connection's SNI."""
        if self._tls is None or domain is None or request.transport is None:
            return False
        sslobj = request.transport.get_extra_info("ssl_object")
        return sslobj is None or self._sni_domain.get(sslobj) != domain

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.sni_callback = self._sni  # type: ignore[assignment]
        return ctx

    # --- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        domain = _host_domain(request.host)
        entry = self.store.get(domain) if domain else None
        if self._misdirected(request, domain):
            # RFC 9110 §15.5.20: this connection is not authoritative for that name
            resp = web.Response(status=421, text="misdirected request\n",
                                content_type="text/plain")
        elif entry is None or request.path != POLICY_PATH:
            resp = web.Response(status=404, text="not found\n", content_type="text/plain")
        elif request.method not in ("GET", "HEAD"):
            resp = web.Response(status=405, text="method not allowed\n",
                                content_type="text/plain", headers={"Allow": "GET, HEAD"})
        else:
            # RFC 8461 §3.3: the policy is served as text/plain.
            resp = web.Response(status=200, body=entry.body,
                                headers={"Content-Type": CONTENT_TYPE,
                                         "Cache-Control": entry.cache_control})
        elapsed = time.monotonic() - started
        self.metrics.requests.labels(str(resp.status)).inc()
        self.metrics.seconds.observe(elapsed)
        peer = request.remote or "-"
        log.info("request", peer=peer, host=(request.host or "-")[:100],
                 method=request.method[:10], path=request.path[:200], status=resp.status,
                 bytes=resp.body_length if hasattr(resp, "body_length") else 0,
                 ms=round(elapsed * 1000, 2))
        return resp

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    # --- life cycle ---------------------------------------------------------------------

    def reload(self) -> bool:
        changed = self.store.reload()
        self.metrics.reloads.labels("changed" if changed else "unchanged").inc()
        self.metrics.domains.set(len(self.store.entries))
        if changed:
            log.info("policies loaded", domains=len(self.store.entries))
        return changed

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.reload_interval)
            self.reload()

    async def start(self) -> None:
        if not self.config.directory.is_dir():
            raise ConfigError(f"{self.config.directory} is not a directory", key="dir")
        self.reload()
        app = web.Application(client_max_size=4096)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False,
                               shutdown_timeout=1.0, keepalive_timeout=self.config.idle_timeout)
        await runner.setup()
        self._runners.append(runner)
        self._web_server = runner.server
        host, port = parse_listen(self.config.listen, 80 if self.config.plain_http else 443)
        self._tls = None if self.config.plain_http else self._ssl_context()
        loop = asyncio.get_running_loop()
        self._accept_errors.install(loop)
        try:
            # TLS is started per connection (_Connection), so that every connection is
            # counted from accept to close, handshakes included
            self._listener = await loop.create_server(lambda: _Connection(self), host, port,
                                                      reuse_address=True, backlog=1024)
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}",
                              key="listen") from None
        self.bound = f"{host}:{self._listener.sockets[0].getsockname()[1]}"
        if self.config.metrics:
            mapp = web.Application()
            mapp.router.add_get("/metrics", self._metrics)
            mrunner = web.AppRunner(mapp, access_log=None, handle_signals=False)
            await mrunner.setup()
            self._runners.append(mrunner)
            mhost, mport = parse_listen(self.config.metrics, 9443)
            msite = web.TCPSite(mrunner, mhost, mport, reuse_address=True)
            await msite.start()
            self.metrics_bound = f"{mhost}:{_port_of(msite, mport)}"
        self._poller = asyncio.create_task(self._poll())
        log.info("listening", address=self.bound, plain_http=self.config.plain_http,
                 domains=len(self.store.entries), metrics=self.metrics_bound or "off")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self._connections):
            if conn.handler is None:
                conn.close()  # a handshake in progress
        for runner in reversed(self._runners):
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._runners.clear()
        for conn in list(self._connections):
            conn.close()
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None
        self._accept_errors.uninstall()


def _port_of(site: web.TCPSite, default: int) -> int:
    server = getattr(site, "_server", None)
    if server is not None and getattr(server, "sockets", None):
        return int(server.sockets[0].getsockname()[1])
    return default


def default_directory() -> Path:
    return Path(os.environ.get("SMTPTLS_POLICY_DIR", "/var/lib/smtptls/mta-sts"))
