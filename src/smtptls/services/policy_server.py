"""An HTTPS server hosting ``/.well-known/mta-sts.txt`` for many policy domains.

Layout (docs/publish.md)::

    DIR/<policy-domain>/mta-sts.txt   the policy (RFC 8461 §3.2), e.g. from
                                      ``smtptls publish mta-sts --out DIR --domain D``
    DIR/<policy-domain>/cert.pem      certificate chain for mta-sts.<policy-domain>
    DIR/<policy-domain>/key.pem       its private key (never logged)

- **SNI** picks the certificate: a client asking for ``mta-sts.example.com`` gets the
  context of ``DIR/example.com``; an unknown name ends the handshake with an
  ``unrecognized_name`` alert. In **plain-HTTP mode** (behind a TLS-terminating reverse
  proxy) no certificates are needed and the ``Host`` header alone picks the policy.
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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
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
from smtptls.services.policyd.socketmap import parse_listen

__all__ = ["PolicyServer", "PolicyStore", "ServerConfig", "ServedPolicy"]

POLICY_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3
MAX_DOMAINS = 100_000
MAX_CERT_BYTES = 1024 * 1024
CONTENT_TYPE = "text/plain; charset=utf-8"

log = get_logger("policy_server")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    directory: Path
    listen: str = "0.0.0.0:443"
    plain_http: bool = False  # behind a TLS-terminating proxy: Host header only
    cache_max_age: int = 300
    reload_interval: float = 5.0
    metrics: str | None = None  # host:port of /metrics, None: off

    def __post_init__(self) -> None:
        if not 0 <= self.cache_max_age <= 86400:
            raise ConfigError("cache max-age must be 0..86400 seconds")
        if not 0.1 <= self.reload_interval <= 3600:
            raise ConfigError("reload interval must be 0.1..3600 seconds")


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
        for d in subdirs[:MAX_DOMAINS]:
            try:
                domain = normalize_domain(d.name)
            except InvalidDomainError:
                continue
            if domain.startswith("mta-sts."):
                domain = domain[len("mta-sts."):]  # DIR/mta-sts.example.com is accepted too
            stamp = _stamp(self._files(d))
            if stamp is None:
                continue  # incomplete directory: not (yet) in service
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

    # --- TLS ----------------------------------------------------------------------------

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
        domain = _host_domain(name)
        entry = self.store.get(domain) if domain else None
        if entry is None or entry.context is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sslobj.context = entry.context
        return None

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
        if entry is None or request.path != POLICY_PATH:
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
                               shutdown_timeout=1.0)
        await runner.setup()
        self._runners.append(runner)
        host, port = parse_listen(self.config.listen, 80 if self.config.plain_http else 443)
        ssl_ctx = None if self.config.plain_http else self._ssl_context()
        site = web.TCPSite(runner, host, port, ssl_context=ssl_ctx, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}",
                              key="listen") from None
        self.bound = f"{host}:{_port_of(site, port)}"
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
        for runner in reversed(self._runners):
            with contextlib.suppress(Exception):
                await runner.cleanup()
        self._runners.clear()


def _port_of(site: web.TCPSite, default: int) -> int:
    server = getattr(site, "_server", None)
    if server is not None and getattr(server, "sockets", None):
        return int(server.sockets[0].getsockname()[1])
    return default


def default_directory() -> Path:
    return Path(os.environ.get("SMTPTLS_POLICY_DIR", "/var/lib/smtptls/mta-sts"))
