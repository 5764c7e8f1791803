"""HTTPS policy hosts and STARTTLS receivers, served from one background thread.

The servers run on their own asyncio event loop in a daemon thread, so they neither
share nor disturb the event loop pytest-asyncio gives the tests, and a test may talk to
them with blocking clients (``smtplib``, ``subprocess``) as well as with async ones.

* One HTTPS server on ``<policy address>:443`` for every policy host: the certificate is
  chosen by SNI (``mta-sts.<domain>``), the response by the Host header. A client that
  sends no SNI gets a self-signed certificate for ``no-sni.lab.invalid``.
* One aiosmtpd receiver per MX address (``address:port``), STARTTLS with that MX's chain
  or not offered at all; every accepted message is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.message
import email.policy
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.smtp import SMTP as SmtpServer
from aiosmtpd.smtp import Envelope, Session

from .model import LabError, LabMx, PolicyHost
from .pki import CertChain

__all__ = ["LabMessage", "PolicyRequest", "ServerThread"]

HEAD_LIMIT = 16 * 1024
READ_TIMEOUT = 10.0
POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_RECORDED = 10_000


@dataclass(frozen=True, slots=True)
class LabMessage:
    """A message a lab receiver accepted."""

    host: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    tls_version: str | None
    sni: str | None
    peer: tuple[str, int]
    received_at: float

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """One HTTP request a policy host received."""

    host: str | None
    sni: str | None
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    peer: tuple[str, int]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def _server_context(chain: CertChain) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(chain.chain_file, chain.key_file)
    return ctx


@dataclass
class _PolicyEntry:
    policy: PolicyHost
    context: ssl.SSLContext


@dataclass
class _Receiver:
    mx: LabMx
    chain: CertChain | None
    server: asyncio.base_events.Server
    sni_seen: list[str] = field(default_factory=list)


class _Handler:
    """aiosmtpd handler recording every message for one MX host."""

    def __init__(self, owner: ServerThread, mx: LabMx, sni_seen: list[str]) -> None:
        self.owner = owner
        self.mx = mx
        self.sni_seen = sni_seen

    async def handle_DATA(self, server: SmtpServer, session: Session,
                          envelope: Envelope) -> str:
        ssl_obj = session.ssl if isinstance(session.ssl, dict) else None
        tls_version = None
        transport = server.transport
        if transport is not None:
            obj = transport.get_extra_info("ssl_object")
            if obj is not None:
                tls_version = obj.version()
        msg = LabMessage(
            host=self.mx.host,
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content or envelope.content or b"",
            tls=tls_version is not None or ssl_obj is not None,
            tls_version=tls_version,
            sni=self.sni_seen[-1] if self.sni_seen else None,
            peer=tuple(session.peer[:2]) if session.peer else ("", 0),
            received_at=time.time(),
        )
        self.owner.record_message(msg)
        return self.mx.data_reply or "250 OK"


class ServerThread:
    """An event loop in a daemon thread hosting the policy and SMTP servers."""

    def __init__(self, policy_address: str, fallback: CertChain) -> None:
        self.policy_address = policy_address
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="smtptls-lab-servers",
                                        daemon=True)
        self._lock = threading.Lock()
        self._policies: dict[str, _PolicyEntry] = {}
        self._receivers: dict[str, _Receiver] = {}
        self._messages: dict[str, list[LabMessage]] = {}
        self._requests: dict[str, list[PolicyRequest]] = {}
        self._fallback = fallback
        self._https: asyncio.base_events.Server | None = None
        self._conn_tasks: set[asyncio.Task] = set()

    # --- thread plumbing ----------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.call(self._start_https())

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.call(self._stop_all(), timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()

    async def _stop_all(self) -> None:
        servers = [r.server for r in self._receivers.values()]
        if self._https is not None:
            servers.append(self._https)
        for s in servers:
            s.close()
        for t in list(self._conn_tasks):
            t.cancel()
        # SMTP sessions still open (aiosmtpd tasks) end here, not as "destroyed pending".
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in others:
            t.cancel()
        if others:
            await asyncio.wait(others, timeout=2)
        for s in servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2)
        self._receivers.clear()

    # --- records ------------------------------------------------------------------------

    def record_message(self, msg: LabMessage) -> None:
        with self._lock:
            box = self._messages.setdefault(msg.host, [])
            if len(box) < MAX_RECORDED:
                box.append(msg)

    def messages(self, host: str) -> list[LabMessage]:
        with self._lock:
            return list(self._messages.get(host, ()))

    def clear_messages(self, host: str | None = None) -> None:
        with self._lock:
            if host is None:
                self._messages.clear()
            else:
                self._messages.pop(host, None)

    def requests(self, host: str) -> list[PolicyRequest]:
        with self._lock:
            return list(self._requests.get(host, ()))

    def sni_seen(self, host: str) -> list[str]:
        with self._lock:
            r = self._receivers.get(host)
            return list(r.sni_seen) if r else []

    # --- policy hosts -------------------------------------------------------------------

    def set_policies(self, entries: dict[str, tuple[PolicyHost, CertChain]],
                     removed: set[str]) -> None:
        table = {name: _PolicyEntry(p, _server_context(c)) for name, (p, c) in entries.items()}
        with self._lock:
            for name in removed:
                self._policies.pop(name, None)
            self._policies.update(table)

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.sni_name = name  # type: ignore[attr-defined]
        if name is None:
            return
        with self._lock:
            entry = self._policies.get(name.lower().rstrip("."))
        if entry is not None:
            sslobj.context = entry.context

    async def _start_https(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self._fallback.chain_file, self._fallback.key_file)
        ctx.sni_callback = self._sni
        self._https = await asyncio.start_server(self._serve_http, self.policy_address, 443,
                                                 ssl=ctx, reuse_address=True)

    async def _serve_http(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._conn_tasks.add(task)
        try:
            await self._http_exchange(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                TimeoutError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            if task is not None:
                self._conn_tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _http_exchange(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        if len(head) > HEAD_LIMIT:
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            return
        method, target, _version = parts
        headers = []
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers.append((k.strip(), v.strip()))
        host = next((v for k, v in headers if k.lower() == "host"), None)
        hostname = host.rsplit(":", 1)[0].lower().rstrip(".") if host else None
        sslobj = writer.get_extra_info("ssl_object")
        sni = getattr(sslobj, "sni_name", None)
        peer = writer.get_extra_info("peername") or ("", 0)
        req = PolicyRequest(hostname, sni, method, target, tuple(headers), tuple(peer[:2]))
        with self._lock:
            key = hostname or sni or ""
            box = self._requests.setdefault(key, [])
            if len(box) < MAX_RECORDED:
                box.append(req)
            entry = self._policies.get(hostname) if hostname else None
        if entry is None or target.split("?", 1)[0] != POLICY_PATH or method not in ("GET", "HEAD"):
            await self._respond_simple(writer, 404, b"not found\n")
            return
        await self._respond_policy(writer, entry.policy, head_only=method == "HEAD")

    async def _respond_simple(self, writer: asyncio.StreamWriter, status: int,
                              body: bytes) -> None:
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + body)
        await writer.drain()

    async def _respond_policy(self, writer: asyncio.StreamWriter, p: PolicyHost,
                              head_only: bool) -> None:
        if p.delay:
            await asyncio.sleep(p.delay)
        body = p.body_bytes()
        status = p.status
        hdrs: list[tuple[str, str]] = []
        if p.redirect_to is not None:
            if not 300 <= status < 400:
                status = 301
            hdrs.append(("Location", p.redirect_to))
        if p.content_type is not None:
            hdrs.append(("Content-Type", p.content_type))
        if p.chunked:
            hdrs.append(("Transfer-Encoding", "chunked"))
        else:
            hdrs.append(("Content-Length", str(len(body))))
        hdrs.append(("Connection", "close"))
        hdrs.extend(p.headers.items())
        head = f"HTTP/1.1 {status} Lab\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
        writer.write(head.encode("latin-1"))
        await writer.drain()
        if head_only:
            return
        sent = 0
        limit = len(body) if p.abort_after is None else min(p.abort_after, len(body))
        step = p.chunk_size
        while sent < limit:
            piece = body[sent:min(sent + step, limit)]
            if p.chunked:
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                writer.write(piece)
            sent += len(piece)
            await writer.drain()
            if p.body_delay:
                await asyncio.sleep(p.body_delay)
        if p.abort_after is not None and p.abort_after < len(body):
            transport = writer.transport
            transport.abort()
            return
        if p.chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    # --- SMTP receivers -----------------------------------------------------------------

    def set_receivers(self, wanted: dict[str, tuple[LabMx, CertChain]]) -> None:
        self.call(self._set_receivers(wanted))

    async def _set_receivers(self, wanted: dict[str, tuple[LabMx, CertChain]]) -> None:
        for host, (mx, chain) in wanted.items():
            current = self._receivers.get(host)
            if current is not None:
                same = (current.mx.address, current.mx.port, current.mx.starttls,
                        current.mx.data_reply, current.chain) == (
                    mx.address, mx.port, mx.starttls, mx.data_reply, chain)
                if same:
                    current.mx = mx
                    continue
                current.server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(current.server.wait_closed(), 2)
                del self._receivers[host]
            await self._start_receiver(mx, chain)

    async def _start_receiver(self, mx: LabMx, chain: CertChain) -> None:
        sni_seen: list[str] = []
        tls_context = None
        if mx.starttls:
            tls_context = _server_context(chain)

            def on_sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
                if name:
                    with self._lock:
                        sni_seen.append(name)

            tls_context.sni_callback = on_sni
        handler = _Handler(self, mx, sni_seen)

        def factory() -> SmtpServer:
            return SmtpServer(handler, hostname=mx.host, tls_context=tls_context,
                              require_starttls=False, enable_SMTPUTF8=True,
                              ident="smtptls lab receiver", data_size_limit=10 * 1024 * 1024)

        if mx.address is None:
            raise LabError(f"{mx.host}: no address assigned")
        server = await self.loop.create_server(factory, mx.address, mx.port,
                                               reuse_address=True)
        self._receivers[mx.host] = _Receiver(mx, chain, server, sni_seen)

    def remove_receivers(self, hosts: set[str]) -> None:
        self.call(self._remove_receivers(hosts))

    async def _remove_receivers(self, hosts: set[str]) -> None:
        for host in hosts:
            r = self._receivers.pop(host, None)
            if r is not None:
                r.server.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(r.server.wait_closed(), 2)

