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
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import replace
from pathlib import Path

from smtptls import config as config_mod
from smtptls.config import Config
from smtptls.errors import ConfigError, SmtpTlsError
from smtptls.logs import get_logger
from smtptls.net.dns import DnsResolver
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.services.policyd.exim import EximAnswers
from smtptls.services.policyd.metrics import PolicydMetrics, start_metrics_server
from smtptls.services.policyd.refresh import Refresher
from smtptls.services.policyd.socketmap import SocketmapServer
from smtptls.store import open_policy_cache

__all__ = ["Daemon", "run"]

log = get_logger("policyd")


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
            self._metrics_runner, self.metrics_address = await start_metrics_server(
                self.metrics, cfg.policyd.metrics)
        self.refresher = Refresher(self.engine)
        self.refresher.start()
        log.info("policyd listening", socketmap=",".join(self.addresses),
                 metrics=self.metrics_address or "off", cache=cfg.cache.backend)

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
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
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
