"""Source: the libtlsrpt UNIX datagram socket (Postfix >= 3.10)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from smtptls.errors import (
    ConfigError,
    DatagramError,
)
from smtptls.logs import get_logger
from smtptls.services.collector.limits import SOCKET_RCVBUF
from smtptls.services.collector.writer import Collector
from smtptls.tlsrptsend.libtlsrpt import MAX_DATAGRAM, CachedDecoder
from smtptls.tlsrptsend.results import SessionResult

_log = get_logger("tlsrpt.collect")

# --- sources ----------------------------------------------------------------------------------


class DatagramListener:
    """The libtlsrpt UNIX datagram socket (what Postfix's ``smtp_tlsrpt_socket_name``
    names). A stale socket file is replaced; anything else at the path is refused.

    Each time the socket is readable, up to ``DRAIN`` queued datagrams are read in one go
    (into one buffer) and handed to the collector together: the per-datagram cost is a
    ``recv_into`` and a dictionary lookup for the (usually repeated) datagram.
    """

    DRAIN = 2000

    def __init__(self, collector: Collector, path: str | Path, *, mode: int = 0o660,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.collector = collector
        self.path = Path(path)
        self.mode = mode
        self.clock = clock
        self.datagrams = 0
        self.bad = 0
        self.decoder = CachedDecoder()
        self._sock: socket.socket | None = None
        self._buffer = bytearray(MAX_DATAGRAM + 1)

    def received(self, data: bytes) -> None:
        """One datagram (also the entry point for tests and other transports)."""
        results = self._decode(data, self.clock())
        if results:
            self.collector.submit(results, source="datagram")

    def _decode(self, data: bytes, now: datetime) -> list[SessionResult]:
        self.datagrams += 1
        try:
            return self.decoder.results(data, now)
        except DatagramError as exc:
            self.bad += 1
            self.collector.metrics.bad_input.labels("datagram").inc()
            if self.bad <= 10 or self.bad % 1000 == 0:
                _log.warning("bad datagram", error=str(exc), count=self.bad)
            return []

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        now = self.clock()
        view = memoryview(self._buffer)
        results: list[SessionResult] = []
        for _ in range(self.DRAIN):
            try:
                n = sock.recv_into(self._buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # pragma: no cover - kernel trouble
                _log.warning("datagram socket error", error=str(exc))
                break
            if n > MAX_DATAGRAM:
                self.datagrams += 1
                self.bad += 1
                continue
            results.extend(self._decode(bytes(view[:n]), now))
        if results:
            self.collector.submit(results, source="datagram")

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ConfigError(f"{self.path} exists and is not a socket",
                                  key="tlsrpt.socket_path")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_RCVBUF)
            sock.bind(str(self.path))
            os.chmod(self.path, self.mode)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot bind {self.path}: {exc.strerror or exc}",
                              key="tlsrpt.socket_path") from exc
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        _log.info("listening", kind="libtlsrpt", path=str(self.path))

    async def stop(self) -> None:
        if self._sock is not None:
            self._readable()  # what is queued already is taken
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        with contextlib.suppress(OSError):
            self.path.unlink()
