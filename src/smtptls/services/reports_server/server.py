"""Wiring of ``smtptls reports serve``: store, intake, HTTP(S), SMTP and LMTP listeners.

:class:`ReportsService` starts everything on the running loop and reports the bound
ports (port 0 picks a free one, which the tests use); :func:`serve` runs it until a
signal arrives.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from smtptls.config import Config, parse_hostport
from smtptls.errors import ConfigError
from smtptls.logs import get_logger
from smtptls.net.dkim import TxtLookup, dns_txt_lookup
from smtptls.services.alerts import AlertChannel, dispatcher_from_config
from smtptls.services.reports_server.alert_rules import alert_loop
from smtptls.services.reports_server.app import ConsoleSettings, create_app, monitor_opener
from smtptls.services.reports_server.commit_queue import GroupCommitter
from smtptls.services.reports_server.imap_fetch import imap_poller, settings_from_config
from smtptls.services.reports_server.intake import ReportIntake
from smtptls.services.reports_server.limits import InflightBudget, RateLimiter
from smtptls.services.reports_server.mail import start_mail_listener
from smtptls.services.reports_server.metrics import IntakeMetrics
from smtptls.services.reports_server.own_check import make_own_check
from smtptls.services.reports_server.parse_pool import ParsePool, default_workers
from smtptls.store.open import open_report_store
from smtptls.store.reports_base import ReportStore

__all__ = ["ReportsService", "ServeOptions", "is_loopback", "serve"]

_log = get_logger("reports")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``reports serve`` listens on; ``None`` disables a listener."""

    listen: str | None = "127.0.0.1:8460"
    smtp: str | None = None
    lmtp: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None
    verify_dkim: bool = True
    require_dkim: bool = True  # RFC 8460 §3: unsigned report mail MUST be ignored


def is_loopback(host: str) -> bool:
    """Is ``host`` a loopback address (or ``localhost``)? Hostnames otherwise are not."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_address(text: str, default_port: int) -> tuple[str, int]:
    """``parse_hostport`` that also takes port 0 (the system picks a free port)."""
    if text.strip().endswith(":0"):
        return parse_hostport(text.strip()[:-2], default_port)[0], 0
    return parse_hostport(text, default_port)


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate/key: {exc}") from None
    return ctx


class ReportsService:
    """The running intake service (HTTP app + optional SMTP/LMTP listeners)."""

    def __init__(self, config: Config, options: ServeOptions,
                 store: ReportStore | None = None, *,
                 dkim_lookup: TxtLookup | None = None,
                 alert_channels: list[AlertChannel] | None = None) -> None:
        self.config = config
        self.options = options
        self.token = options.token or config.reports.token
        self.store = store or open_report_store(config.reports)
        self.metrics = IntakeMetrics(domains=config.reports.domains)
        # One budget for every HTTPS request and SMTP/LMTP session together.
        self.budget = InflightBudget(config.reports.max_inflight)
        self.metrics.watch_inflight(lambda: self.budget.used)
        self.metrics.watch_parse_workers(
            lambda: self.parse_pool.ready if self.parse_pool is not None else 0,
            lambda: self.parse_pool.deaths if self.parse_pool is not None else 0)
        self.dkim_lookup = dkim_lookup  # None: TXT lookups through the configured DNS
        self._own_store = store is None
        self.committer: GroupCommitter | None = None
        self.parse_pool: ParsePool | None = None
        self._runner: web.AppRunner | None = None
        self._servers: list[asyncio.Server] = []
        self.http_port: int | None = None
        self.smtp_port: int | None = None
        self.lmtp_port: int | None = None
        # Background work: the [reports.imap] poller and the [alerts] rules
        self.alert_channels = alert_channels  # None: the channels [alerts] configures
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def check(self) -> None:
        """Refuse configurations that would expose the dashboard without a token, or
        whose in-flight budget could never hold the largest message."""
        cfg = self.config.reports
        if cfg.max_inflight and cfg.max_inflight < 2 * cfg.max_body:
            # One largest mail (twice max_body, for base64) must fit, or it never would.
            raise ConfigError(f"must be 0 or at least twice max_body ({2 * cfg.max_body})",
                              key="reports.max_inflight")
        if (self.options.tls_cert is None) != (self.options.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.options.listen:
            host, _ = listen_address(self.options.listen, 8460)
            if not is_loopback(host) and not self.token:
                raise ConfigError(
                    f"refusing to serve the dashboard on {host} without a token: set "
                    "reports.token (or --token / SMTPTLS_REPORTS_TOKEN), or listen on "
                    "loopback behind a reverse proxy", key="reports.token")

    async def start(self) -> None:
        self.check()
        cfg = self.config.reports
        if self._own_store:
            await self.store.open()
        lookup = self.dkim_lookup
        if lookup is None and self.options.verify_dkim:
            from smtptls.net.dns import DnsResolver

            lookup = dns_txt_lookup(DnsResolver(self.config.dns))
        # Reports of concurrent submissions share a transaction (one fsync).
        self.committer = GroupCommitter(self.store, max_batch=cfg.commit_batch)
        workers = default_workers() if cfg.parse_workers is None else cfg.parse_workers
        # Small reports parsed in worker processes, off the event loop.
        self.parse_pool = ParsePool(workers) if workers else None
        intake = ReportIntake(self.store, max_body=cfg.max_body,
                              max_decompressed=cfg.max_decompressed,
                              dkim_lookup=lookup,
                              require_dkim=self.options.require_dkim and self.options.verify_dkim,
                              metrics=self.metrics,
                              max_parallel_parses=cfg.max_parallel_parses,
                              committer=self.committer, pool=self.parse_pool)
        try:
            if self.parse_pool is not None:
                await self.parse_pool.start()
            if self.options.listen:
                host, port = listen_address(self.options.listen, 8460)
                app = create_app(self.store, intake, metrics=self.metrics, token=self.token,
                                 max_body=cfg.max_body, budget=self.budget,
                                 rate=RateLimiter(cfg.rate_limit_per_minute,
                                                  cfg.rate_limit_burst),
                                 failure_page_size=cfg.failure_page_size,
                                 console=ConsoleSettings(
                                     domains=tuple(d.lower().rstrip(".") for d in cfg.domains),
                                     rua=cfg.rua, stale_days=cfg.stale_days,
                                     check=make_own_check(self.config) if cfg.domains
                                     else None),
                                 monitor=monitor_opener(self.config.monitor))
                self._runner = web.AppRunner(app, access_log=None)
                await self._runner.setup()
                ssl_ctx = (_tls_context(self.options.tls_cert, self.options.tls_key)
                           if self.options.tls_cert and self.options.tls_key else None)
                site = web.TCPSite(self._runner, host, port, ssl_context=ssl_ctx)
                await site.start()
                self.http_port = _bound_port(self._runner, site)
                _log.info("listening", kind="https" if ssl_ctx else "http", host=host,
                          port=self.http_port, dashboard_token=bool(self.token))
            max_message = cfg.max_body * 2  # base64 grows a gzip attachment by a third
            for spec, lmtp in ((self.options.smtp, False), (self.options.lmtp, True)):
                if not spec:
                    continue
                host, port = listen_address(spec, 24 if lmtp else 25)
                server = await start_mail_listener(intake, host, port, lmtp=lmtp,
                                                   max_message=max_message,
                                                   budget=self.budget)
                self._servers.append(server)
                bound = server.sockets[0].getsockname()[1]
                if lmtp:
                    self.lmtp_port = bound
                else:
                    self.smtp_port = bound
                _log.info("listening", kind="lmtp" if lmtp else "smtp", host=host, port=bound)
            self._start_background(intake)
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"cannot listen: {exc.strerror or exc}") from None
        except BaseException:
            await self.stop()
            raise

    def _start_background(self, intake: ReportIntake) -> None:
        self._stop.clear()
        if self.config.reports.imap.host:
            settings = settings_from_config(self.config.reports.imap)
            self._tasks.append(asyncio.create_task(imap_poller(
                intake, settings, interval=self.config.reports.imap.interval, stop=self._stop)))
            _log.info("polling mailbox", where=settings.where(),
                      interval=self.config.reports.imap.interval)
        if self.config.alerts.enabled:
            dispatcher = dispatcher_from_config(self.config.alerts, channels=self.alert_channels)
            self._tasks.append(asyncio.create_task(alert_loop(
                self.store, self.config.alerts, dispatcher, stop=self._stop)))  # type: ignore[arg-type]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        self._tasks.clear()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.parse_pool is not None:  # every request answered: the workers end
            await self.parse_pool.close()
            self.parse_pool = None
        if self.committer is not None:  # what was received is committed before the store closes
            await self.committer.close()
        if self._own_store:
            await self.store.close()

    async def __aenter__(self) -> ReportsService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _bound_port(runner: web.AppRunner, site: web.TCPSite) -> int:
    """The port the site listens on (its own port, or the one the kernel chose for 0),
    from aiohttp's public ``runner.addresses``."""
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return int(site.name.rsplit(":", 1)[-1])  # pragma: no cover - no socket yet


async def serve(config: Config, options: ServeOptions, *,
                on_started: Callable[[ReportsService], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM; ``on_started`` is told once everything listens."""
    service = ReportsService(config, options)
    await service.start()
    if on_started is not None:
        on_started(service)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    try:
        await stop.wait()
    finally:
        await service.stop()
