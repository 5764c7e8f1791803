"""The policy daemon process: wiring, signals, clean shutdown.

``smtptls policyd`` runs :func:`run`: it opens the policy cache (the configured store
with its LRU), a DNS resolver, the :class:`~.decide.PolicyEngine`, the socketmap
listeners, the metrics endpoint and the :class:`~.refresh.Refresher`. Signals:

- ``SIGTERM`` / ``SIGINT``: stop accepting connections, finish the requests in flight
  (up to ``grace`` seconds), close the cache, exit 0;
- ``SIGHUP``: reload the configuration file (overrides, testing answer, recheck
  interval, ...); the answer cache is emptied so every answer follows the new
  configuration. Listen addresses and the cache backend need a restart. A file that no
  longer loads is logged and the running configuration kept.

Start-up order: the socketmap listeners answer first. The metrics address is bound at
start (a taken one fails the start) but served once the HTTP machinery (aiohttp) has
been imported in a background thread; the first policy fetch would import it anyway.
``[policyd] event_loop`` picks the event loop (:func:`event_loop_factory`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from smtptls import config as config_mod
from smtptls.config import Config
from smtptls.errors import ConfigError, SmtpTlsError
from smtptls.logs import get_logger
from smtptls.net.dns import DnsResolver
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.services.policyd.exim import EximAnswers
from smtptls.services.policyd.metrics import PolicydMetrics, bind_metrics_socket, serve_metrics
from smtptls.services.policyd.refresh import Refresher
from smtptls.services.policyd.socketmap import SocketmapServer
from smtptls.store import open_policy_cache

__all__ = ["Daemon", "event_loop_factory", "run"]

log = get_logger("policyd")

#: Imported after the listeners answer, in a background thread (see the module doc).
LATE_IMPORTS = ("aiohttp", "aiohttp.web")


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``asyncio.Runner`` for ``[policyd] event_loop`` (None:
    asyncio's own loop): ``"auto"`` is uvloop when installed (``smtptls[uvloop]``),
    ``"uvloop"`` requires it (a :class:`ConfigError` without it)."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("event_loop = \"uvloop\" needs the Python package 'uvloop', "
                              "which is not installed: install smtptls[uvloop] "
                              "(pip install 'smtptls[uvloop]')",
                              key="policyd.event_loop") from None
        return None
    return uvloop.new_event_loop


def _import_late() -> None:
    for name in LATE_IMPORTS:
        importlib.import_module(name)


class Daemon:
    """One running policy daemon. ``listen`` and ``metrics`` override the config."""

    def __init__(
        self,
        config: Config,
        *,
        config_path: str | Path | None = None,
        listen: str | None = None,
        metrics_listen: str | None = None,
        grace: float = 10.0,
        idle_timeout: float | None = None,
    ) -> None:
        if listen is not None or metrics_listen is not None:
            pd = config.policyd
            config = replace(config, policyd=replace(
                pd, listen=listen or pd.listen,
                metrics=pd.metrics if metrics_listen is None else (metrics_listen or None)))
        self.config = config
        self.config_path = config_path
        self.grace = grace
        self.idle_timeout = config.policyd.idle_timeout if idle_timeout is None else idle_timeout
        self.metrics = PolicydMetrics()
        self.engine: PolicyEngine | None = None
        self.exim: EximAnswers | None = None  # answers for Exim's map name (docs/exim.md)
        self.server: SocketmapServer | None = None
        self.refresher: Refresher | None = None
        self.addresses: list[str] = []
        self.metrics_address: str | None = None
        self._metrics_runner = None
        self._metrics_socket: socket.socket | None = None
        self._late: asyncio.Task[None] | None = None
        self._cache = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        cfg = self.config
        self._cache = await open_policy_cache(cfg.cache)
        dns = DnsResolver(cfg.dns)
        self.engine = PolicyEngine(cfg, dns=dns, cache=self._cache, metrics=self.metrics)
        exim_map = cfg.policyd.exim_map_name
        if exim_map and exim_map != cfg.policyd.map_name:
            self.exim = EximAnswers(self.engine)
        self.server = SocketmapServer(
            self.engine, map_name=cfg.policyd.map_name, max_request=cfg.policyd.max_request,
            idle_timeout=self.idle_timeout, request_timeout=cfg.policyd.request_timeout,
            max_connections=cfg.policyd.max_connections, observer=self.metrics.observe,
            extra_maps=None if self.exim is None else {exim_map: self.exim})
        server = self.server
        self.metrics.connections.set_function(lambda: server.connection_count)
        self.metrics.watch_limits(server)
        for spec in [s.strip() for s in cfg.policyd.listen.split(",") if s.strip()]:
            self.addresses.append(await self.server.listen(spec))
        if cfg.policyd.metrics:
            self._metrics_socket, self.metrics_address = bind_metrics_socket(
                cfg.policyd.metrics)
        self.refresher = Refresher(self.engine)
        self.refresher.start()
        self._late = asyncio.ensure_future(self._start_late())
        log.info("policyd listening", socketmap=",".join(self.addresses),
                 metrics=self.metrics_address or "off", cache=cfg.cache.backend)

    async def _start_late(self) -> None:
        """After the listeners answer: import the HTTP machinery off the event loop,
        then serve the metrics socket bound at start."""
        try:
            await asyncio.to_thread(_import_late)
            sock = self._metrics_socket
            if sock is not None:
                self._metrics_runner = await serve_metrics(self.metrics, sock)
                self._metrics_socket = None  # the runner owns it now
        except Exception as exc:  # the socketmap service goes on without metrics
            log.error("metrics endpoint not started", error=f"{type(exc).__name__}: {exc}")

    async def ready(self) -> None:
        """Wait until the metrics endpoint serves (tests; answers come before)."""
        if self._late is not None:
            await asyncio.shield(self._late)

    def reload(self) -> None:
        """SIGHUP: reload the configuration file."""
        if self.config_path is None:
            log.info("SIGHUP: no configuration file to reload; answers recomputed")
            if self.engine is not None:
                self.engine.reconfigure(self.config)
            if self.exim is not None:
                self.exim.reconfigure()
            return
        try:
            new = config_mod.load(self.config_path)
        except ConfigError as exc:
            log.error("SIGHUP: configuration not reloaded", error=str(exc))
            return
        pd = new.policyd
        new = replace(new, policyd=replace(pd, listen=self.config.policyd.listen,
                                           metrics=self.config.policyd.metrics))
        self.config = new
        if self.engine is not None:
            self.engine.reconfigure(new)
        if self.exim is not None:
            self.exim.reconfigure()
        if self.server is not None:
            self.server.map_name = new.policyd.map_name
            self.server.max_request = new.policyd.max_request
            self.server.request_timeout = new.policyd.request_timeout
            self.server.max_connections = new.policyd.max_connections
        log.info("configuration reloaded", path=str(self.config_path))

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        log.info("policyd stopping")
        if self.server is not None:
            await self.server.close(self.grace)
        if self.refresher is not None:
            await self.refresher.stop()
        if self._late is not None and not self._late.done():
            self._late.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._late
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
        if self._metrics_socket is not None:
            self._metrics_socket.close()
            self._metrics_socket = None
        if self._cache is not None:
            with contextlib.suppress(SmtpTlsError):
                await self._cache.close()
        log.info("policyd stopped")


async def run(config: Config, *, config_path: str | Path | None = None,
              listen: str | None = None, metrics_listen: str | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT; returns the exit code."""
    daemon = Daemon(config, config_path=config_path, listen=listen,
                    metrics_listen=metrics_listen)
    loop = asyncio.get_running_loop()
    try:
        await daemon.start()
    except OSError as exc:
        await daemon.stop()
        raise SmtpTlsError(f"cannot listen: {exc.strerror or exc}") from None
    except BaseException:
        await daemon.stop()
        raise
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, daemon.reload)
    try:
        await daemon.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await daemon.stop()
    return 0
