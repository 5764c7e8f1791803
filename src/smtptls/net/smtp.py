"""SMTP STARTTLS probe: connect, EHLO, STARTTLS, capture the peer's certificate chain.

The probe is a small, bounded asyncio SMTP client written for one job: reach TLS with an
MX host and report what it saw. It follows RFC 5321 (replies, §4.2) and RFC 3207
(STARTTLS), and sends SNI as RFC 7672 §8.1 requires for DANE (the TLSA base domain).

**The probe does not authenticate the server.** The TLS handshake runs without
certificate verification at the TLS layer so that the full chain *as sent by the server*
can be captured (DANE-EE accepts self-signed leaves; DANE-TA needs the chain). The
caller MUST verify :attr:`ProbeResult.chain_der` afterwards: with
:func:`smtptls.dane.verify.verify_chain` for DANE, or with
:func:`smtptls.net.pkix.verify_pkix` for MTA-STS / PKIX. A probe result by itself
never says a server is trusted.

Everything is bounded (:class:`ProbeLimits`): line length, lines per reply, buffered
bytes, handshake bytes, a timeout per step and a total deadline, so tarpits, endless
banners and garbage servers end in an :class:`~smtptls.errors.SmtpProbeError` in time.

The TLS layer runs over memory BIOs, so the whole session stays on the event loop:
pyOpenSSL on Python < 3.13 (``Connection.get_peer_cert_chain``), the standard library
where ``SSLObject.get_unverified_chain`` exists (Python ≥ 3.13).

Sans-I/O part: :class:`ReplyReader` parses server replies from bytes and is usable
without any network.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from smtptls.errors import ProtocolError, SmtpProbeError

__all__ = [
    "ProbeLimits",
    "ProbeResult",
    "ReplyReader",
    "SmtpReply",
    "Stage",
    "TlsBackend",
    "probe_starttls",
    "probe_starttls_sync",
]

TlsBackend = Literal["auto", "pyopenssl", "stdlib"]

_READ_CHUNK = 4096


class Stage(StrEnum):
    """Steps of a probe, in order; ``SmtpProbeError.stage`` is one of these."""

    CONNECT = "connect"
    BANNER = "banner"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    HANDSHAKE = "handshake"
    EHLO_TLS = "ehlo-tls"
    QUIT = "quit"


@dataclass(frozen=True, slots=True)
class ProbeLimits:
    """Bounds of one probe. Defaults fit an interactive check; services may lower them.

    RFC 5321 §4.5.3.2 allows servers minutes per step; a probe waits less and says so.
    """

    connect_timeout: float = 10.0
    step_timeout: float = 30.0  # one complete reply, or one TLS handshake
    total_timeout: float = 60.0  # the whole session, from connect to QUIT
    max_line: int = 4096  # RFC 5321 §4.5.3.1.5 says 512 for a reply line; be lenient
    max_reply_lines: int = 100
    max_handshake_bytes: int = 256 * 1024  # a long chain is ~20 KiB; this is ample
    min_tls_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"  # RFC 8461 §4 (E3)


# --- replies (sans-I/O) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """One complete server reply (RFC 5321 §4.2): a code and one or more text lines."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def to_text(self) -> str:
        """Wire form with CRLF line ends: ``250-a`` lines then a final ``250 b``."""
        out = []
        for i, line in enumerate(self.lines):
            sep = " " if i == len(self.lines) - 1 else "-"
            out.append(f"{self.code}{sep}{line}\r\n")
        return "".join(out)

    def summary(self, limit: int = 200) -> str:
        """Code and first line, cut to ``limit`` characters, for messages."""
        first = self.lines[0] if self.lines else ""
        text = f"{self.code} {first}".rstrip()
        return text if len(text) <= limit else text[: limit - 3] + "..."


class ReplyReader:
    """Incremental reply parser: ``feed`` bytes, take complete replies with ``next_reply``.

    RFC 5321 §4.2: each line is ``CODE SP text`` or ``CODE "-" text`` (continuation) or
    just ``CODE``; a multi-line reply repeats the same code on every line (§4.2.1).
    Lines end in CRLF; a bare LF is accepted. Raises :class:`ProtocolError` on garbage,
    on a line longer than ``max_line`` bytes, on more than ``max_lines`` lines in one
    reply, or when more than ``max_line * max_lines`` bytes wait unparsed.
    """

    __slots__ = ("_buf", "_code", "_lines", "max_line", "max_lines")

    def __init__(self, *, max_line: int = 4096, max_lines: int = 100) -> None:
        if max_line < 8 or max_lines < 1:
            raise ProtocolError("reply limits too small", detail=f"{max_line=} {max_lines=}")
        self.max_line = max_line
        self.max_lines = max_lines
        self._buf = bytearray()
        self._code: int | None = None
        self._lines: list[str] = []

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a returned reply (incomplete lines included)."""
        return len(self._buf) + sum(len(x) for x in self._lines)

    @property
    def mid_reply(self) -> bool:
        """True when lines of an unfinished multi-line reply have been consumed."""
        return bool(self._lines)

    def feed(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > self.max_line * self.max_lines:
            raise ProtocolError("server sent too much data without a complete reply",
                                detail=f"over {self.max_line * self.max_lines} bytes")
        tail = self._buf.rfind(b"\n")
        if len(self._buf) - tail - 1 > self.max_line:
            raise ProtocolError("reply line too long", detail=f"over {self.max_line} bytes")

    def next_reply(self) -> SmtpReply | None:
        """The next complete reply, or None when more bytes are needed."""
        # Bounded: every iteration consumes one line of the bounded buffer.
        while (end := self._buf.find(b"\n")) >= 0:
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            if len(raw) > self.max_line:
                raise ProtocolError("reply line too long", detail=f"over {self.max_line} bytes")
            code, final, text = self._parse_line(raw)
            if self._code is not None and code != self._code:
                # RFC 5321 §4.2.1: all lines of a multi-line reply carry the same code.
                raise ProtocolError("multi-line reply changes its code",
                                    detail=f"{self._code} then {code}")
            self._code = code
            self._lines.append(text)
            if len(self._lines) > self.max_lines:
                raise ProtocolError("reply has too many lines",
                                    detail=f"over {self.max_lines} lines")
            if final:
                reply = SmtpReply(code, tuple(self._lines))
                self._code = None
                self._lines = []
                return reply
        return None

    @staticmethod
    def _parse_line(raw: bytes) -> tuple[int, bool, str]:
        # RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39
        head = raw[:3]
        if len(head) != 3 or not head.isdigit() or head[0:1] not in b"2345":
            raise ProtocolError("not an SMTP reply line", detail=repr(raw[:40]))
        sep = raw[3:4]
        if sep not in (b"", b" ", b"-"):
            raise ProtocolError("bad separator after reply code", detail=repr(raw[:40]))
        text = raw[4:].decode("utf-8", errors="replace")
        return int(head), sep != b"-", text


# --- result --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """What one probe saw. ``chain_der`` is UNVERIFIED: the caller must verify it.

    ``stage_reached`` is the last stage completed (None when the connection failed);
    ``error`` is the failure that ended the probe early, if any.
    """

    host: str
    address: str
    port: int
    server_name: str | None
    banner: str = ""
    ehlo_lines: tuple[str, ...] = ()
    used_helo: bool = False  # EHLO was refused and HELO answered (no extensions)
    starttls_offered: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    chain_der: tuple[bytes, ...] = ()
    ehlo_tls_lines: tuple[str, ...] = ()
    stage_reached: Stage | None = None
    error: SmtpProbeError | None = None

    @property
    def ok(self) -> bool:
        """TLS was established and the session ended cleanly (nothing verified)."""
        return self.error is None and self.tls_version is not None

    @property
    def handshake_done(self) -> bool:
        return self.tls_version is not None

    def raise_for_error(self) -> ProbeResult:
        if self.error is not None:
            raise self.error
        return self

    def to_dict(self) -> dict[str, object]:
        return {
            "host": self.host,
            "address": self.address,
            "port": self.port,
            "server_name": self.server_name,
            "banner": self.banner,
            "ehlo": list(self.ehlo_lines),
            "used_helo": self.used_helo,
            "starttls_offered": self.starttls_offered,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "chain_length": len(self.chain_der),
            "stage_reached": None if self.stage_reached is None else str(self.stage_reached),
            "error": None if self.error is None else {"stage": self.error.stage,
                                                      "message": str(self.error)},
        }


# --- TLS over memory BIOs ------------------------------------------------------------


class _TlsEngine(Protocol):
    def handshake(self) -> bool: ...  # True when complete, False when it needs input
    def take_outgoing(self) -> bytes: ...
    def put_incoming(self, data: bytes) -> None: ...
    def recv(self) -> bytes | None: ...  # plaintext; None: need input; b"": closed
    def send(self, data: bytes) -> None: ...
    def close_notify(self) -> None: ...
    def version(self) -> str | None: ...
    def cipher(self) -> str | None: ...
    def chain_der(self) -> list[bytes]: ...


class _OpenSslEngine:
    """pyOpenSSL Connection over memory BIOs (Python < 3.13 path)."""

    def __init__(self, server_name: str | None, min_version: str) -> None:
        from OpenSSL import SSL

        self._SSL = SSL
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_min_proto_version(
            SSL.TLS1_3_VERSION if min_version == "TLSv1.3" else SSL.TLS1_2_VERSION)
        # Deliberate: the chain is captured here and verified by the caller (module doc).
        ctx.set_verify(SSL.VERIFY_NONE)
        self._conn = SSL.Connection(ctx, None)
        if server_name:
            self._conn.set_tlsext_host_name(server_name.encode("ascii"))
        self._conn.set_connect_state()

    def handshake(self) -> bool:
        try:
            self._conn.do_handshake()
        except self._SSL.WantReadError:
            return False
        except self._SSL.Error as exc:
            raise _tls_failure(exc) from exc
        return True

    def take_outgoing(self) -> bytes:
        out = bytearray()
        for _ in range(1024):  # bounded by what the engine holds
            try:
                chunk = self._conn.bio_read(65536)
            except self._SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def put_incoming(self, data: bytes) -> None:
        self._conn.bio_write(data)

    def recv(self) -> bytes | None:
        try:
            return self._conn.recv(65536)
        except self._SSL.WantReadError:
            return None
        except self._SSL.ZeroReturnError:
            return b""
        except self._SSL.Error as exc:
            raise _tls_failure(exc) from exc

    def send(self, data: bytes) -> None:
        try:
            self._conn.sendall(data)
        except self._SSL.Error as exc:
            raise _tls_failure(exc) from exc

    def close_notify(self) -> None:
        with contextlib.suppress(self._SSL.Error):
            self._conn.shutdown()

    def version(self) -> str | None:
        name = self._conn.get_protocol_version_name()
        return None if not name or name == "Unknown" else name

    def cipher(self) -> str | None:
        return self._conn.get_cipher_name()

    def chain_der(self) -> list[bytes]:
        from cryptography.hazmat.primitives.serialization import Encoding

        chain = self._conn.get_peer_cert_chain(as_cryptography=True) or []
        return [c.public_bytes(Encoding.DER) for c in chain]


class _StdlibEngine:
    """ssl.SSLObject over memory BIOs. The full chain needs Python ≥ 3.13
    (``get_unverified_chain``); earlier versions give the leaf only."""

    def __init__(self, server_name: str | None, min_version: str) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        # Deliberate: the chain is captured here and verified by the caller (module doc).
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if min_version == "TLSv1.3"
                               else ssl.TLSVersion.TLSv1_2)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = ctx.wrap_bio(self._in, self._out, server_side=False,
                                 server_hostname=server_name or None)

    def handshake(self) -> bool:
        try:
            self._obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError as exc:
            raise _tls_failure(exc) from exc
        return True

    def take_outgoing(self) -> bytes:
        return self._out.read()

    def put_incoming(self, data: bytes) -> None:
        self._in.write(data)

    def recv(self) -> bytes | None:
        try:
            return self._obj.read(65536)
        except ssl.SSLWantReadError:
            return None
        except ssl.SSLZeroReturnError:
            return b""
        except ssl.SSLError as exc:
            raise _tls_failure(exc) from exc

    def send(self, data: bytes) -> None:
        try:
            self._obj.write(data)
        except ssl.SSLError as exc:
            raise _tls_failure(exc) from exc

    def close_notify(self) -> None:
        with contextlib.suppress(ssl.SSLError):
            self._obj.unwrap()

    def version(self) -> str | None:
        return self._obj.version()

    def cipher(self) -> str | None:
        c = self._obj.cipher()
        return None if c is None else c[0]

    def chain_der(self) -> list[bytes]:
        getter = getattr(self._obj, "get_unverified_chain", None)
        if getter is not None:  # Python ≥ 3.13
            return [bytes(c) for c in (getter() or [])]
        leaf = self._obj.getpeercert(binary_form=True)
        return [leaf] if leaf else []


def stdlib_has_full_chain() -> bool:
    """True when the standard library can return the server's whole chain (3.13+)."""
    return hasattr(ssl.SSLObject, "get_unverified_chain")


def _make_engine(backend: TlsBackend, server_name: str | None, min_version: str) -> _TlsEngine:
    if backend == "stdlib" or (backend == "auto" and stdlib_has_full_chain()):
        return _StdlibEngine(server_name, min_version)
    if backend in ("auto", "pyopenssl"):
        return _OpenSslEngine(server_name, min_version)
    raise SmtpProbeError(f"unknown TLS backend {backend!r}", stage=Stage.HANDSHAKE)


def _openssl_error() -> type[BaseException]:
    from OpenSSL import SSL

    return SSL.Error


class _TlsFailure(Exception):
    """Internal: a TLS library error, turned into SmtpProbeError by the session."""


def _tls_failure(exc: BaseException) -> _TlsFailure:
    return _TlsFailure(_describe_tls_error(exc))


def _describe_tls_error(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], list) and args[0]:  # pyOpenSSL: [(lib, func, reason)]
        return "; ".join(str(item[-1]) for item in args[0] if item)
    return str(exc) or type(exc).__name__


# --- the session ---------------------------------------------------------------------


class _Plain:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read(self) -> bytes:
        return await self.reader.read(_READ_CHUNK)

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class _Tls:
    def __init__(self, plain: _Plain, engine: _TlsEngine) -> None:
        self.plain = plain
        self.engine = engine

    async def _flush(self) -> None:
        out = self.engine.take_outgoing()
        if out:
            await self.plain.write(out)

    async def handshake(self, max_bytes: int) -> None:
        received = 0
        while not self.engine.handshake():
            await self._flush()
            data = await self.plain.read()
            if not data:
                raise _TlsFailure("connection closed during the TLS handshake")
            received += len(data)
            if received > max_bytes:
                raise _TlsFailure(f"TLS handshake larger than {max_bytes} bytes")
            self.engine.put_incoming(data)
        await self._flush()

    async def read(self) -> bytes:
        # Bounded: each pass either returns or consumes one chunk from the socket; the
        # caller's step timeout and reply bounds end a peer that trickles forever.
        while True:
            data = self.engine.recv()
            await self._flush()  # post-handshake messages may need an answer
            if data is not None:
                return data
            raw = await self.plain.read()
            if not raw:
                return b""
            self.engine.put_incoming(raw)

    async def write(self, data: bytes) -> None:
        self.engine.send(data)
        await self._flush()

    async def close(self) -> None:
        self.engine.close_notify()
        with contextlib.suppress(OSError):
            await self._flush()


@dataclass(slots=True)
class _Progress:
    host: str
    address: str
    port: int
    server_name: str | None
    stage: Stage = Stage.CONNECT  # the stage being attempted
    reached: Stage | None = None
    banner: str = ""
    ehlo_lines: tuple[str, ...] = ()
    used_helo: bool = False
    starttls_offered: bool = False
    tls_version: str | None = None
    cipher: str | None = None
    chain_der: tuple[bytes, ...] = ()
    ehlo_tls_lines: tuple[str, ...] = ()
    writer: asyncio.StreamWriter | None = None
    channel: _Plain | _Tls | None = None
    error: SmtpProbeError | None = field(default=None)

    def fail(self, message: str, detail: str | None = None) -> SmtpProbeError:
        err = SmtpProbeError(message if detail is None else f"{message}: {detail}",
                             stage=self.stage, host=self.host)
        return err

    def done(self, stage: Stage) -> None:
        self.reached = stage

    def result(self) -> ProbeResult:
        return ProbeResult(
            host=self.host, address=self.address, port=self.port,
            server_name=self.server_name, banner=self.banner, ehlo_lines=self.ehlo_lines,
            used_helo=self.used_helo, starttls_offered=self.starttls_offered,
            tls_version=self.tls_version, cipher=self.cipher, chain_der=self.chain_der,
            ehlo_tls_lines=self.ehlo_tls_lines, stage_reached=self.reached, error=self.error,
        )


class _Session:
    def __init__(self, p: _Progress, limits: ProbeLimits, helo_name: str,
                 backend: TlsBackend) -> None:
        self.p = p
        self.limits = limits
        self.helo_name = helo_name
        self.backend = backend
        self.replies = ReplyReader(max_line=limits.max_line, max_lines=limits.max_reply_lines)

    async def reply(self) -> SmtpReply:
        p = self.p
        assert p.channel is not None
        try:
            async with asyncio.timeout(self.limits.step_timeout):
                while (reply := self.replies.next_reply()) is None:
                    data = await p.channel.read()
                    if not data:
                        raise p.fail("connection closed by the server")
                    self.replies.feed(data)
        except TimeoutError as error:
            raise p.fail(f"no complete reply within {self.limits.step_timeout:g}s") from error
        except ProtocolError as exc:
            raise p.fail("malformed reply", str(exc)) from exc
        return reply

    async def command(self, line: str) -> SmtpReply:
        p = self.p
        assert p.channel is not None
        if self.replies.pending:
            # RFC 5321 §4.3.1 / no pipelining: the server spoke out of turn.
            raise p.fail("server sent data before the command", f"{self.replies.pending} bytes")
        await p.channel.write(line.encode("ascii") + b"\r\n")
        return await self.reply()

    async def run(self) -> None:
        p, limits = self.p, self.limits
        try:
            async with asyncio.timeout(limits.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    p.address, p.port, limit=limits.max_line)
        except TimeoutError as exc:
            raise p.fail(f"no connection within {limits.connect_timeout:g}s") from exc
        p.writer = writer
        p.channel = _Plain(reader, writer)
        p.done(Stage.CONNECT)

        p.stage = Stage.BANNER
        banner = await self.reply()
        p.banner = banner.text
        if banner.code != 220:
            # RFC 5321 §3.1: 554 instead of 220 means no service; QUIT and leave.
            raise p.fail("server refused the session", banner.summary())
        p.done(Stage.BANNER)

        p.stage = Stage.EHLO
        ehlo = await self.command(f"EHLO {self.helo_name}")
        if ehlo.code != 250:
            # RFC 5321 §3.2: fall back to HELO; without EHLO there is no STARTTLS. Only
            # done to report what the server supports.
            helo = await self.command(f"HELO {self.helo_name}")
            if helo.code != 250:
                raise p.fail("EHLO and HELO refused", ehlo.summary())
            p.used_helo = True
            p.ehlo_lines = helo.lines
            p.done(Stage.EHLO)
            p.stage = Stage.STARTTLS
            raise p.fail("STARTTLS not offered", "server speaks HELO only (no ESMTP)")
        p.ehlo_lines = ehlo.lines
        p.starttls_offered = _offers_starttls(ehlo)
        p.done(Stage.EHLO)

        p.stage = Stage.STARTTLS
        if not p.starttls_offered:
            raise p.fail("STARTTLS not offered")
        answer = await self.command("STARTTLS")
        if answer.code != 220:
            raise p.fail("server refused STARTTLS", answer.summary())
        if self.replies.pending:
            # RFC 3207 §4.2 / CVE-2011-0411: plaintext after the 220 would be read as if
            # it came inside TLS; a correct server sends nothing before the ClientHello.
            raise p.fail("server sent plaintext after its STARTTLS reply",
                         f"{self.replies.pending} bytes (possible command injection)")
        p.done(Stage.STARTTLS)

        p.stage = Stage.HANDSHAKE
        assert isinstance(p.channel, _Plain)
        tls = _Tls(p.channel, _make_engine(self.backend, p.server_name,
                                           limits.min_tls_version))
        try:
            async with asyncio.timeout(limits.step_timeout):
                await tls.handshake(limits.max_handshake_bytes)
        except TimeoutError as exc:
            raise p.fail(f"TLS handshake not done within {limits.step_timeout:g}s") from exc
        p.channel = tls
        p.tls_version = tls.engine.version()
        p.cipher = tls.engine.cipher()
        p.chain_der = tuple(tls.engine.chain_der())
        p.done(Stage.HANDSHAKE)

        # RFC 3207 §4.2: forget what was learnt before TLS and say EHLO again.
        p.stage = Stage.EHLO_TLS
        ehlo2 = await self.command(f"EHLO {self.helo_name}")
        if ehlo2.code != 250:
            raise p.fail("EHLO after STARTTLS refused", ehlo2.summary())
        p.ehlo_tls_lines = ehlo2.lines
        p.done(Stage.EHLO_TLS)

        p.stage = Stage.QUIT
        bye = await self.command("QUIT")
        if bye.code != 221:
            raise p.fail("unexpected reply to QUIT", bye.summary())
        p.done(Stage.QUIT)


def _offers_starttls(ehlo: SmtpReply) -> bool:
    # RFC 3207 §4: the EHLO keyword STARTTLS; the first line is the greeting, not a keyword.
    return any(line.split(maxsplit=1)[:1] == ["STARTTLS"]
               for line in (x.upper() for x in ehlo.lines[1:]))


def _sni(server_name: str | None) -> str | None:
    """RFC 6066 §3: SNI carries a DNS host name (A-labels), never an IP literal."""
    if not server_name:
        return None
    name = server_name.rstrip(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return None
    if not name.isascii() or len(name) > 253:
        raise SmtpProbeError("server name must be an ASCII (A-label) DNS name",
                             stage=Stage.HANDSHAKE, host=server_name)
    return name.lower()


async def probe_starttls(
    address: str,
    *,
    host: str,
    server_name: str | None = None,
    port: int = 25,
    helo_name: str = "localhost",
    limits: ProbeLimits | None = None,
    tls_backend: TlsBackend = "auto",
) -> ProbeResult:
    """Probe ``address``:``port`` (the MX ``host``'s address) up to TLS and QUIT.

    ``server_name`` is sent as SNI; for DANE it is the TLSA base domain (RFC 7672 §8.1),
    by default ``host``. Never raises for what the server does: failures are in
    ``result.error`` (an :class:`SmtpProbeError` whose ``stage`` says where) together with
    everything seen up to then. The returned chain is NOT verified — see the module doc.
    """
    limits = limits or ProbeLimits()
    sni = _sni(host if server_name is None else server_name)
    p = _Progress(host=host, address=address, port=port, server_name=sni)
    session = _Session(p, limits, helo_name, tls_backend)
    try:
        async with asyncio.timeout(limits.total_timeout):
            await session.run()
    except SmtpProbeError as exc:
        p.error = exc
    except _TlsFailure as exc:
        p.error = p.fail("TLS handshake failed" if p.stage == Stage.HANDSHAKE
                         else "TLS error", str(exc))
    except TimeoutError:
        p.error = p.fail(f"probe not done within {limits.total_timeout:g}s (total deadline)")
    except (OSError, EOFError) as exc:
        p.error = p.fail("connection failed" if p.stage == Stage.CONNECT else "I/O error",
                         exc.strerror if isinstance(exc, OSError) and exc.strerror
                         else str(exc) or type(exc).__name__)
    except UnicodeEncodeError:
        p.error = p.fail("HELO name must be ASCII", repr(helo_name))
    except _openssl_error() as exc:  # a TLS library error outside the wrapped calls
        p.error = p.fail("TLS error", _describe_tls_error(exc))
    finally:
        await _close(p)
    return p.result()


async def _close(p: _Progress) -> None:
    """Close politely but quickly: close_notify if TLS is up, then the socket."""
    if p.writer is None:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            if isinstance(p.channel, _Tls) and p.error is None:
                await p.channel.close()
            p.writer.close()
            await p.writer.wait_closed()
    p.writer.close()


def probe_starttls_sync(address: str, **kwargs: object) -> ProbeResult:
    """Blocking twin of :func:`probe_starttls` for scripts (not for use inside a loop)."""
    return asyncio.run(probe_starttls(address, **kwargs))  # type: ignore[arg-type]
