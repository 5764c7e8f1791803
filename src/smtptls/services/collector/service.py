"""The service life cycle: store, collector, sources and HTTP started and stopped as one."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from smtptls.config import Config
from smtptls.errors import (
    ConfigError,
    SmtpTlsError,
)
from smtptls.logs import get_logger
from smtptls.services.collector.datagram import DatagramListener
from smtptls.services.collector.http import _is_loopback, _listen_address, create_app
from smtptls.services.collector.ingest import LogIngest, SendingAddress
from smtptls.services.collector.journal import JournalFollower
from smtptls.services.collector.logfile import LogFollower, position_name
from smtptls.services.collector.policy import PolicyLookup, make_policy_lookup
from smtptls.services.collector.writer import Collector
from smtptls.store.open import open_result_store
from smtptls.store.results_base import (
    ResultStore,
)

_log = get_logger("tlsrpt.collect")

def _socket_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not an octal mode", key="tlsrpt.socket_mode") from exc
    if not 0 <= mode <= 0o777:
        raise ConfigError("mode out of range", key="tlsrpt.socket_mode")
    return mode


class CollectorService:
    """Everything ``smtptls tlsrpt collect`` runs: store, collector, sources, HTTP."""

    def __init__(self, config: Config, *, store: ResultStore | None = None,
                 lookup: PolicyLookup | None = None, from_start: bool = False) -> None:
        self.config = config
        cfg = config.tlsrpt
        self.store = store or open_result_store(cfg)
        self._own_store = store is None
        self.lookup = lookup
        self.from_start = from_start
        self.collector = Collector(self.store, batch_size=cfg.batch_size,
                                   flush_interval=cfg.flush_interval,
                                   max_pending=cfg.max_pending,
                                   default_sending_ip=cfg.sending_ip)
        self.datagrams: DatagramListener | None = None
        self.followers: list[LogFollower] = []
        self.journal: JournalFollower | None = None
        self.ingest: LogIngest | None = None
        self._closers: list[Any] = []
        self._runner: web.AppRunner | None = None
        self.http_port: int | None = None

    def check(self) -> None:
        cfg = self.config.tlsrpt
        if cfg.http_listen:
            host, _ = _listen_address(cfg.http_listen)
            if not _is_loopback(host) and not cfg.http_token:
                raise ConfigError("refusing to accept results beyond loopback without a "
                                  "token", key="tlsrpt.http_token")
        if not (cfg.socket_path or cfg.log_files or cfg.journald or cfg.http_listen):
            raise ConfigError("nothing to collect from: set socket_path, log_files, "
                              "journald or http_listen", key="tlsrpt")

    async def start(self) -> None:
        self.check()
        cfg = self.config.tlsrpt
        if self._own_store:
            await self.store.open()
        self.collector.start()
        try:
            if cfg.socket_path:
                self.datagrams = DatagramListener(self.collector, cfg.socket_path,
                                                  mode=_socket_mode(cfg.socket_mode))
                await self.datagrams.start()
            if cfg.log_files or cfg.journald:
                if self.lookup is None:
                    self.lookup, self._closers = await make_policy_lookup(self.config)
                sending = SendingAddress(cfg.sending_ip)
                self.ingest = LogIngest(self.collector, self.lookup, sending=sending,
                                        log_format=cfg.log_format)
                for path in cfg.log_files:
                    follower = LogFollower(self.ingest, path, from_start=self.from_start,
                                           name=position_name(path))
                    # (appended first: stop() closes it whatever resume() did)
                    self.followers.append(follower)
                    await follower.resume(self.store)
                    follower.start()
                if cfg.journald:
                    journal_ingest = LogIngest(self.collector, self.lookup, sending=sending,
                                               source="journal")
                    self.journal = JournalFollower(journal_ingest)
                    self.journal.start()
            if cfg.http_listen:
                host, port = _listen_address(cfg.http_listen)
                self._runner = web.AppRunner(create_app(self.collector, token=cfg.http_token),
                                             access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, host, port)
                await site.start()
                server = site._server
                self.http_port = int(server.sockets[0].getsockname()[1]) if server else port
                _log.info("listening", kind="http", host=host, port=self.http_port)
        except OSError as exc:
            await self.stop()
            raise ConfigError(f"cannot start the collector: {exc.strerror or exc}") from exc
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.datagrams is not None:
            await self.datagrams.stop()
        for f in self.followers:
            await f.stop()
        self.followers.clear()
        if self.journal is not None:
            await self.journal.stop()
            self.journal = None
        await self.collector.stop()
        for c in self._closers:
            with contextlib.suppress(SmtpTlsError):
                await c.close()
        self._closers.clear()
        if self._own_store:
            await self.store.close()

    async def __aenter__(self) -> CollectorService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def run_collector(config: Config, *, from_start: bool = False,
                        on_started: Callable[[CollectorService], Awaitable[None]] | None = None
                        ) -> None:
    """Run until SIGINT/SIGTERM."""
    service = CollectorService(config, from_start=from_start)
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        if on_started is not None:
            await on_started(service)
        await stop.wait()
    finally:
        await service.stop()
