"""Postfix's socketmap protocol: netstring codec (sans-I/O) and an asyncio server.

(Over 800 lines: the codec and the connection's hot path share state that splitting
would put behind an extra call per request; the limits live beside them.)

The protocol (Postfix ``socketmap_table(5)``) runs over TCP or a UNIX socket. Every
request and every reply is one netstring (D. J. Bernstein, "Netstrings")::

    netstring = length ":" data ","       ; length: decimal digits, the octets of data
    request   = name SP key               ; e.g. "postfix example.com"
    reply     = "OK" SP data | "NOTFOUND" SP | "TEMP" SP reason | "PERM" SP reason

A client may send several requests without waiting (pipelining); replies come back in
request order. What this module decides about broken input:

- a length with a sign, a leading zero (``"01:"``), no digits, too many digits, a
  missing ``:`` or ``,``: the framing cannot be trusted any more, so the connection gets
  one ``PERM`` reply and is closed (nothing after the broken frame is answered);
- a length above ``max_request``: same — the frame is refused before it is read;
- a frame that is well formed but not ``name SP key`` (no space, not UTF-8): ``PERM``,
  and the connection stays usable;
- an unknown map name: ``PERM`` (Postfix logs it as a configuration error);
- an idle connection is closed after ``idle_timeout`` seconds;
- a request must be complete ``request_timeout`` seconds after its first octet arrived
  (a client trickling one octet a second is closed, however active it looks);
- at most ``max_connections`` connections are open (never more than the process's file
  descriptor limit allows, less :data:`FD_RESERVE`); a new connection past the cap
  closes the connections idle the longest (no request in progress), a batch at a time;
  when none is idle the new connection is closed;
- accept errors (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) are logged as one
  line per :data:`ACCEPT_ERROR_LOG_INTERVAL` seconds with a count, never as tracebacks.

:class:`NetstringDecoder` and :func:`encode_netstring` are pure; :class:`SocketmapServer`
serves a :class:`Handler` (the daemon's policy engine) with a fast synchronous path for
cached answers and an asynchronous one for lookups that need DNS or HTTPS.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import resource
import socket
import stat
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from time import perf_counter
from typing import Protocol

from smtptls.errors import ProtocolError, SmtpTlsError
from smtptls.logs import get_logger

__all__ = [
    "MAX_REPLY",
    "Handler",
    "NetstringDecoder",
    "Reply",
    "ReplyStatus",
    "Request",
    "SocketmapServer",
    "encode_netstring",
    "parse_request",
]

log = get_logger("policyd")

#: Postfix's default ``socketmap_max_reply_size`` is 100000 octets; we never send more.
MAX_REPLY = 100000
#: Per connection, at most this many decoded requests wait for their answer; past it
#: the server stops reading from that client until the backlog drains.
MAX_PENDING = 1024
#: File descriptors kept free of client connections: listeners, the cache database,
#: DNS and HTTPS sockets of lookups in flight, the metrics endpoint, log files.
FD_RESERVE = 64
#: At the connection cap, this fraction of the cap (at least one) of the longest-idle
#: connections is closed at once, so the search for them is not repeated per accept.
EVICT_FRACTION = 64
#: An accept error is logged at most once per this many seconds (with a count of the
#: ones not logged); asyncio itself retries the accept a second later.
ACCEPT_ERROR_LOG_INTERVAL = 60.0
_ACCEPT_ERROR_MESSAGE = "socket.accept() out of system resource"  # asyncio's wording


class ProtocolFramingError(ProtocolError):
    """A netstring is broken; ``frames`` holds the complete requests decoded before it."""

    def __init__(self, message: str, frames: list[bytes]) -> None:
        super().__init__(message)
        self.frames = frames


# --- netstrings ---------------------------------------------------------------------


def encode_netstring(data: bytes) -> bytes:
    """``b"OK x"`` -> ``b"4:OK x,"``."""
    return b"%d:%s," % (len(data), data)


class NetstringDecoder:
    """Incremental netstring decoder: feed it bytes as they arrive, get whole frames.

    ``max_length`` bounds one frame's data; the length prefix is refused as soon as it
    has more digits than ``max_length`` needs, so nothing unbounded is ever buffered.
    After a :class:`ProtocolFramingError` the decoder is unusable (``broken`` is True).
    """

    __slots__ = ("_buf", "_max_digits", "broken", "max_length")

    def __init__(self, max_length: int) -> None:
        if max_length < 1:
            raise ProtocolError("max_length must be at least 1")
        self.max_length = max_length
        self._max_digits = len(str(max_length))
        self._buf = bytearray()
        self.broken = False

    @property
    def buffered(self) -> int:
        """Octets received but not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the frames now complete, in order.

        Raises :class:`ProtocolFramingError` (carrying the frames completed before the
        fault) when the stream is not a valid netstring sequence.
        """
        if self.broken:
            raise ProtocolFramingError("connection already failed framing", [])
        buf = self._buf
        frame = self.single_frame(data)
        if frame is not None:
            return [frame]
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while pos < end:
            colon = buf.find(b":", pos, pos + self._max_digits + 1)
            if colon < 0:
                # no ":" yet: every octet so far must be a digit, and not too many
                head = buf[pos:min(end, pos + self._max_digits + 1)]
                self._check_digits(head, complete=False, frames=frames)
                break
            digits = bytes(buf[pos:colon])
            self._check_digits(digits, complete=True, frames=frames)
            length = int(digits)
            if length > self.max_length:
                self._fail(f"request of {length} octets exceeds the limit of "
                           f"{self.max_length}", frames)
            stop = colon + 1 + length
            if stop >= end:
                break  # the data or the trailing "," has not arrived yet
            if buf[stop] != 0x2C:  # ","
                self._fail("netstring not terminated by ','", frames)
            frames.append(bytes(buf[colon + 1:stop]))
            pos = stop + 1
        if pos:
            del buf[:pos]
        return frames

    def single_frame(self, data: bytes) -> bytes | None:
        """The frame, when nothing is buffered and ``data`` is exactly one valid
        netstring (the usual case: one request per read); else None (use :meth:`feed`)."""
        if self._buf or self.broken or data[-1:] != b",":
            return None
        colon = data.find(b":", 0, self._max_digits + 1)
        if colon <= 0 or (colon > 1 and data[0] == 0x30):
            return None
        digits = data[:colon]
        if not digits.isdigit():
            return None
        length = int(digits)
        if length > self.max_length or colon + length + 2 != len(data):
            return None
        return data[colon + 1:-1]

    def _check_digits(self, digits: bytes | bytearray, *, complete: bool,
                      frames: list[bytes]) -> None:
        if not digits:
            if complete:
                self._fail("netstring length is empty", frames)
            return
        if not digits.isdigit():
            self._fail("netstring length is not a decimal number", frames)
        if len(digits) > self._max_digits:
            self._fail(f"netstring length exceeds the limit of {self.max_length} octets",
                       frames)
        if len(digits) > 1 and digits[0] == 0x30:
            # Netstrings: the length is written without leading zeros ("0:," is fine)
            self._fail("netstring length has a leading zero", frames)

    def _fail(self, message: str, frames: list[bytes]) -> None:
        self.broken = True
        self._buf.clear()
        raise ProtocolFramingError(message, frames)


# --- requests and replies -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One socketmap request: map ``name`` and lookup ``key``."""

    name: str
    key: str

    def to_bytes(self) -> bytes:
        return encode_netstring(f"{self.name} {self.key}".encode())


def parse_request(frame: bytes) -> Request:
    """``b"postfix example.com"`` -> ``Request("postfix", "example.com")``.

    socketmap_table(5): the request is the map name, one space, the key. Raises
    :class:`ProtocolError` for a frame without the space or not in UTF-8.
    """
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("request is not UTF-8") from None
    name, sep, key = text.partition(" ")
    if not sep or not name:
        raise ProtocolError("request is not 'name key'")
    return Request(name, key)


class ReplyStatus(StrEnum):
    """socketmap_table(5) reply status words."""

    OK = "OK"
    NOTFOUND = "NOTFOUND"
    TEMP = "TEMP"
    PERM = "PERM"


def _clean(text: str, limit: int) -> str:
    # replies are single-line; control characters would corrupt Postfix's logs
    out = "".join(c if c.isprintable() else " " for c in text)
    return out[:limit]


@dataclass(frozen=True, slots=True)
class Reply:
    """A socketmap reply; :meth:`to_bytes` gives the netstring on the wire."""

    status: ReplyStatus
    data: str = ""

    @classmethod
    def ok(cls, data: str) -> Reply:
        return cls(ReplyStatus.OK, data)

    @classmethod
    def notfound(cls) -> Reply:
        return cls(ReplyStatus.NOTFOUND, "")

    @classmethod
    def temp(cls, reason: str) -> Reply:
        return cls(ReplyStatus.TEMP, reason)

    @classmethod
    def perm(cls, reason: str) -> Reply:
        return cls(ReplyStatus.PERM, reason)

    def to_text(self) -> str:
        # socketmap_table(5): "NOTFOUND " carries an empty data part after the space
        return f"{self.status.value} {_clean(self.data, MAX_REPLY - 16)}"

    def to_bytes(self) -> bytes:
        return encode_netstring(self.to_text().encode("utf-8"))

    @classmethod
    def parse(cls, text: str) -> Reply:
        """Parse a reply's text (for clients and tests). Raises ProtocolError."""
        status, sep, data = text.partition(" ")
        try:
            st = ReplyStatus(status)
        except ValueError:
            raise ProtocolError(f"unknown reply status {status[:20]!r}") from None
        if not sep:
            raise ProtocolError("reply without a space after the status")
        return cls(st, data)


# --- the server -----------------------------------------------------------------------


class Handler(Protocol):
    """What the server asks. ``lookup_cached`` must be fast and never block: it returns
    the encoded reply when it is known in memory, else None; ``lookup`` may do I/O.
    Both receive the key as sent by Postfix."""

    def lookup_cached(self, key: str) -> bytes | None: ...

    async def lookup(self, key: str) -> bytes: ...


Observer = Callable[[bytes, float], None]  # (encoded reply, seconds) after each request


class _Connection(asyncio.Protocol):
    """One client connection: decode, answer in order, keep reads bounded."""

    def __init__(self, server: SocketmapServer) -> None:
        self.server = server
        self.decoder = NetstringDecoder(server.max_request)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[bytes, float]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False
        self.close_after_pending = False
        self.reading_paused = False
        self.writing_paused = False
        self.idle_handle: asyncio.TimerHandle | None = None
        self.last_activity = 0.0
        # loop time of the first octet of the incomplete request buffered (0: none)
        self.request_started = 0.0
        self.request_handle: asyncio.TimerHandle | None = None
        self._error_reply = b""

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's transports and uvloop's (which do not subclass asyncio.Transport)
        self.transport = transport  # type: ignore[assignment]
        if not self.server._admit(self):
            self._close()
            return
        loop = asyncio.get_running_loop()
        self._loop_time = loop.time
        self.last_activity = loop.time()
        self.idle_handle = loop.call_later(self.server.idle_timeout, self._idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server._connections.discard(self)
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        if self.request_handle is not None:
            self.request_handle.cancel()
        # an in-flight lookup keeps running (shared with other clients); its answer is
        # simply not written
        self.pending.clear()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._maybe_resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.close_after_pending:
            return
        # a float store per read; the idle timer checks it when it fires (no re-arming)
        self.last_activity = self._loop_time()
        server = self.server
        if self.worker is None and not self.pending:
            # hot path: one whole request whose answer is in memory
            frame = self.decoder.single_frame(data)
            if frame is not None:
                started = perf_counter()
                reply = server._answer_fast(frame)
                if reply is not None:
                    self.transport.write(reply)  # type: ignore[union-attr]
                    server._observe(reply, perf_counter() - started)
                    return
                self.pending.append((frame, started))
                self.worker = asyncio.ensure_future(self._drain())
                return
        try:
            frames = self.decoder.feed(data)
        except ProtocolFramingError as exc:
            frames = exc.frames
            self.close_after_pending = True
            self.server._framing_errors += 1
            log.info("socketmap framing error", peer=self._peer(), error=str(exc))
            error_reply: bytes | None = Reply.perm(f"protocol error: {exc.message}").to_bytes()
        else:
            error_reply = None
        now = perf_counter()
        if self.pending or self.worker is not None:
            self.pending.extend((f, now) for f in frames)
        else:
            out: list[bytes] = []
            for i, frame in enumerate(frames):
                reply = server._answer_fast(frame)
                if reply is None:
                    self.pending.extend((f, now) for f in frames[i:])
                    break
                server._observe(reply, perf_counter() - now)
                out.append(reply)
            if out:
                assert self.transport is not None
                self.transport.write(b"".join(out) if len(out) > 1 else out[0])
        if error_reply is not None:
            self.pending.append((b"", -1.0))  # marker: the PERM, then close
            self._error_reply = error_reply
        if self.pending and self.worker is None:
            self.worker = asyncio.ensure_future(self._drain())
        if len(self.pending) > MAX_PENDING:
            self._pause_reading()
        if self.decoder.buffered:
            if frames or not self.request_started:
                self._start_request_clock()  # what is buffered now began in this read
        else:
            self.request_started = 0.0

    def eof_received(self) -> bool | None:
        # half-close: answer what was asked, then close
        if self.pending or self.worker is not None:
            self.close_after_pending = True
            return True
        return None

    # internals

    async def _drain(self) -> None:
        server = self.server
        try:
            while self.pending and not self.closing:
                frame, started = self.pending.popleft()
                if started < 0:
                    self._write(self._error_reply)
                    self._close()
                    return
                reply = server._answer_fast(frame)
                if reply is None:
                    reply = await server._answer_slow(frame)
                server._observe(reply, perf_counter() - started)
                self._write(reply)
                self._maybe_resume_reading()
        finally:
            self.worker = None
        if self.close_after_pending and not self.closing:
            self._close()
        elif server._stopping and not self.closing:
            self._close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _idle(self) -> None:
        if self.closing:
            return
        idle_for = self._loop_time() - self.last_activity
        timeout = self.server.idle_timeout
        if self.worker is not None or idle_for < timeout:
            # active, or a slow lookup in flight (not idleness): look again later
            delay = timeout if self.worker is not None else timeout - idle_for
            self.idle_handle = asyncio.get_running_loop().call_later(delay, self._idle)
            return
        log.debug("closing idle socketmap connection", peer=self._peer())
        self._close()

    @property
    def idle(self) -> bool:
        """No request in progress: nothing buffered, pending or being looked up."""
        return (not self.closing and self.worker is None and not self.pending
                and not self.decoder.buffered)

    def _start_request_clock(self) -> None:
        self.request_started = self.last_activity
        if self.request_handle is None and self.server.request_timeout > 0:
            self.request_handle = asyncio.get_running_loop().call_later(
                self.server.request_timeout, self._request_deadline)

    def _request_deadline(self) -> None:
        self.request_handle = None
        if self.closing or not self.request_started:
            return
        left = self.request_started + self.server.request_timeout - self._loop_time()
        if left > 0:
            # a later request began after the one this timer was set for
            self.request_handle = asyncio.get_running_loop().call_later(
                left, self._request_deadline)
            return
        self.server._request_timeouts += 1
        log.info("socketmap request not complete in time, connection closed",
                 peer=self._peer(), seconds=self.server.request_timeout,
                 buffered=self.decoder.buffered)
        self._close()

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (self.reading_paused and not self.writing_paused and len(self.pending) <= MAX_PENDING
                and self.transport is not None and not self.closing):
            self.reading_paused = False
            self.transport.resume_reading()

    def _peer(self) -> str:
        if self.transport is None:
            return "?"
        peer = self.transport.get_extra_info("peername")
        return str(peer) if peer else "unix"


def effective_connection_limit(wanted: int, reserve: int = FD_RESERVE) -> int:
    """``wanted`` (0: no cap of its own), lowered so that connections leave ``reserve``
    descriptors free under the soft ``RLIMIT_NOFILE``; at least one connection."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_room = None if soft == resource.RLIM_INFINITY else soft - reserve
    if not wanted:
        return max(1, fd_room) if fd_room is not None else 1 << 30
    return max(1, wanted if fd_room is None else min(wanted, fd_room))


class AcceptErrorLog:
    """The event loop's exception handler for one kind of context: asyncio reports an
    accept that failed for lack of descriptors or memory with a traceback, every time
    it retries. This logs it as one line per ``interval`` seconds with the number of
    occurrences since, and passes every other context on unchanged."""

    def __init__(self, interval: float = ACCEPT_ERROR_LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.count = 0
        self._unlogged = 0
        self._last = -interval
        self._loop: asyncio.AbstractEventLoop | None = None
        self._previous: Callable[..., object] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is loop:
            return
        self._loop = loop
        self._previous = loop.get_exception_handler()
        loop.set_exception_handler(self)

    def uninstall(self) -> None:
        if self._loop is not None and self._loop.get_exception_handler() is self:
            self._loop.set_exception_handler(self._previous)  # type: ignore[arg-type]
        self._loop = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        if context.get("message") != _ACCEPT_ERROR_MESSAGE:
            if self._previous is not None:
                self._previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.count += 1
        self._unlogged += 1
        now = self.clock()
        if now - self._last < self.interval:
            return
        exc = context.get("exception")
        error = (exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc))
        log.error("cannot accept connections, retrying", error=error, times=self._unlogged)
        self._last = now
        self._unlogged = 0


def parse_listen(spec: str, default_port: int) -> tuple[str, int]:
    """Like :func:`smtptls.config.parse_hostport`, also accepting port 0 (any free port).
    Raises :class:`~smtptls.errors.ConfigError`."""
    from smtptls.config import parse_hostport

    text = spec.strip()
    if text.endswith(":0") and not text.endswith("::0"):
        host, _ = parse_hostport(text[:-2], default_port)
        return host, 0
    return parse_hostport(text, default_port)


def _remove_stale_socket(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(p.lstat().st_mode):
            p.unlink()  # a socket left by a previous run; never any other file


class SocketmapServer:
    """Serves one :class:`Handler` on any number of TCP and UNIX listeners.

    ``map_name`` is the only map name answered (Postfix: the last part of
    ``socketmap:inet:host:port:NAME``); ``observer`` is called with each encoded reply
    and the seconds it took, for metrics.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        map_name: str = "postfix",
        max_request: int = 1024,
        idle_timeout: float = 300.0,
        request_timeout: float = 10.0,
        max_connections: int = 4096,
        observer: Observer | None = None,
        extra_maps: Mapping[str, Handler] | None = None,
    ) -> None:
        self.handler = handler
        # more map names on the same listeners, each with its own handler (Exim's map)
        self.extra_maps = {k.encode("utf-8"): h for k, h in (extra_maps or {}).items()}
        self._lookup_cached = handler.lookup_cached
        self._map_name = map_name
        self._map_bytes = map_name.encode("utf-8")
        self.max_request = max_request
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.observer = observer
        self._servers: list[asyncio.base_events.Server] = []
        self._connections: set[_Connection] = set()
        self._unix_paths: list[Path] = []
        self._stopping = False
        self._framing_errors = 0
        self._request_timeouts = 0
        self._evicted = 0
        self._refused = 0
        self._accept_errors = AcceptErrorLog()
        self._unknown_map = Reply.perm("unknown map name").to_bytes()

    @property
    def map_name(self) -> str:
        return self._map_name

    @map_name.setter
    def map_name(self, value: str) -> None:
        self._map_name = value
        self._map_bytes = value.encode("utf-8")

    # --- connection limits -------------------------------------------------------

    @property
    def connection_limit(self) -> int:
        """``max_connections``, lowered to what the file descriptor limit leaves."""
        return effective_connection_limit(self.max_connections)

    def _admit(self, conn: _Connection) -> bool:
        """Register a new connection; at the cap, close the longest-idle ones first.
        False when the cap is reached and none is idle (the new one is closed)."""
        conns = self._connections
        limit = self.connection_limit
        if len(conns) >= limit:
            idle = [c for c in conns if c.idle]
            if not idle:
                self._refused += 1
                return False
            batch = heapq.nsmallest(max(1, limit // EVICT_FRACTION), idle,
                                    key=lambda c: c.last_activity)
            for old in batch:
                old._close()
                conns.discard(old)
            self._evicted += len(batch)
            log.debug("connection cap reached, idle connections closed", closed=len(batch),
                      limit=limit)
        conns.add(conn)
        return True

    # --- answering -------------------------------------------------------------

    def _request(self, frame: bytes) -> tuple[str | None, bytes | None]:
        name, sep, key = frame.partition(b" ")
        if sep and name == self._map_bytes:
            try:
                return key.decode("utf-8"), None
            except UnicodeDecodeError:
                pass
        try:
            request = parse_request(frame)
        except ProtocolError as exc:
            return None, Reply.perm(f"bad request: {exc.message}").to_bytes()
        if request.name != self.map_name and request.name.encode() not in self.extra_maps:
            return None, self._unknown_map
        return request.key, None

    def _answer_fast(self, frame: bytes) -> bytes | None:
        name, sep, key = frame.partition(b" ")
        if sep and name == self._map_bytes:
            try:
                return self._lookup_cached(key.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        extra = self.extra_maps.get(name) if sep else None
        if extra is not None:
            try:
                return extra.lookup_cached(key.decode("utf-8"))
            except UnicodeDecodeError:
                pass
        return self._request(frame)[1]

    async def _answer_slow(self, frame: bytes) -> bytes:
        key, error = self._request(frame)
        if key is None:
            assert error is not None
            return error
        handler = self.extra_maps.get(frame.partition(b" ")[0], self.handler)
        try:
            return await handler.lookup(key)
        except SmtpTlsError as exc:
            return Reply.temp(f"lookup failed: {exc}").to_bytes()
        except Exception as exc:  # never let one lookup kill the connection
            log.error("lookup crashed", key=key[:100], error=f"{type(exc).__name__}: {exc}")
            return Reply.temp("internal error").to_bytes()

    def _observe(self, reply: bytes, seconds: float) -> None:
        if self.observer is not None:
            try:
                self.observer(reply, seconds)
            except Exception as exc:  # metrics must never break the protocol
                log.error("request observer failed", error=repr(exc))

    # --- listeners ---------------------------------------------------------------

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0: any); return the bound address."""
        loop = asyncio.get_running_loop()
        self._accept_errors.install(loop)
        server = await loop.create_server(lambda: _Connection(self), host, port,
                                          reuse_address=True, backlog=1024)
        self._servers.append(server)
        sock = server.sockets[0]
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        addr = sock.getsockname()
        return addr[0], addr[1]

    async def listen_unix(self, path: str | Path, mode: int = 0o660) -> Path:
        """Listen on a UNIX socket at ``path`` (a stale socket file is replaced)."""
        p = Path(path)
        _remove_stale_socket(p)
        loop = asyncio.get_running_loop()
        self._accept_errors.install(loop)
        server = await loop.create_unix_server(lambda: _Connection(self), str(p), backlog=1024)
        os.chmod(p, mode)
        self._servers.append(server)
        self._unix_paths.append(p)
        return p

    async def listen(self, spec: str) -> str:
        """``host:port``, ``[v6]:port`` or ``unix:/path``; returns the bound address."""
        if spec.startswith("unix:"):
            return "unix:" + str(await self.listen_unix(spec[5:]))
        host, port = parse_listen(spec, 8461)
        bound_host, bound_port = await self.listen_tcp(host, port)
        return f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def framing_errors(self) -> int:
        return self._framing_errors

    @property
    def request_timeouts(self) -> int:
        """Connections closed because a request was not complete in time."""
        return self._request_timeouts

    @property
    def evicted(self) -> int:
        """Idle connections closed to make room under the connection cap."""
        return self._evicted

    @property
    def refused(self) -> int:
        """New connections closed at the cap because none was idle."""
        return self._refused

    @property
    def accept_errors(self) -> int:
        return self._accept_errors.count

    async def close(self, grace: float = 10.0) -> None:
        """Stop listening, finish in-flight requests (up to ``grace`` s), then close."""
        self._stopping = True
        for server in self._servers:
            server.close()
        deadline = time.monotonic() + grace
        for conn in list(self._connections):
            if conn.worker is None:
                conn._close()
        while any(c.worker is not None for c in self._connections):
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self._connections):
            conn._close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        for p in self._unix_paths:
            with contextlib.suppress(OSError):
                p.unlink()
        self._servers.clear()
        self._accept_errors.uninstall()
