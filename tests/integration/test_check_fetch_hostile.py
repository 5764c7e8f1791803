"""The bulk policy fetch against broken and hostile policy hosts: each outcome, exactly.

``check.fetch.fetch_policy_lean`` reads the response itself and maps every failure of
the connection, the handshake and the HTTP exchange to the typed error (and text) a
finding is made of. These cases pin each outcome to the text a report carries today,
so a change of the fetch's transport (TLS, sockets, reader) must keep every finding
byte. Tiny asyncio servers on lab addresses (127.N.243.x, port 443) with lab
certificates; the policy host's address comes from an in-memory resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import ssl
import struct

import pytest

from smtptls.check.fetch import fetch_policy_lean, https_ssl_context
from smtptls.config import FetchConfig
from smtptls.dnssec import Security
from smtptls.errors import SmtpTlsError
from smtptls.net.memory import MemoryResolver

pytestmark = pytest.mark.lab

DOMAIN = "hostile-policy.test"
HOST = f"mta-sts.{DOMAIN}"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.hostile-policy.test\r\nmax_age: 86400\r\n"
TEXT = POLICY.decode()
LIMITS = "(connect 1 s, total 2 s)"


def _ok(body: bytes = POLICY, ctype: bytes = b"text/plain", extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + ctype
            + b"\r\nContent-Length: %d\r\n" % len(body) + extra + b"\r\n" + body)


async def _request(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        await reader.readuntil(b"\r\n\r\n")


def _answer(data: bytes):
    async def handler(reader, writer):
        await _request(reader)
        writer.write(data)
        await writer.drain()
    return handler


def _then(head: bytes, pause: float = 0.0, abort: bool = False):
    """Answer ``head`` after the request, wait ``pause``; then close (or abort)."""
    async def handler(reader, writer):
        await _request(reader)
        writer.write(head)
        await writer.drain()
        await asyncio.sleep(pause)
        if abort:
            writer.transport.abort()
    return handler


async def _close_now(reader, writer):
    pass


async def _reset_now(reader, writer):
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))


async def _hello_then(reader, writer, data: bytes = b""):
    await reader.read(4096)  # the ClientHello, read: the close is a FIN, not a reset
    writer.write(data)
    await writer.drain()


async def _plain_http(reader, writer):
    await _hello_then(reader, writer, b"HTTP/1.1 400 Bad\r\n\r\n")


async def _alert(reader, writer):
    await _hello_then(reader, writer, b"\x15\x03\x03\x00\x02\x02\x28")  # handshake_failure


async def _silent(reader, writer):
    await asyncio.sleep(30)


async def _endless(reader, writer):
    await _request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
    for _ in range(200):
        writer.write(b"x" * 8192)
        await writer.drain()


CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
           b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(POLICY), POLICY))
PARTIAL = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nshort"
HANDSHAKE_TEXT = ("TLS verification failed (handshake): Cannot connect to host "
                  f"{HOST}:443 ssl:default [")

# name: (certificate kind or None for plain TCP, handler, outcome); an outcome is
# ("ok", body) or (error class name, the start of its text, its ``reason`` or None).
CASES = {
    "ok": ("good", _answer(_ok()), ("ok", TEXT)),
    "gzip": ("good", _answer(_ok(gzip.compress(POLICY), extra=b"Content-Encoding: gzip\r\n")),
             ("ok", TEXT)),
    "chunked": ("good", _answer(CHUNKED), ("ok", TEXT)),
    "until-close": ("good", _answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                                    + POLICY), ("ok", TEXT)),
    "intermediate": ("intermediate", _answer(_ok()), ("ok", TEXT)),
    "html": ("good", _answer(_ok(ctype=b"text/html")),
             ("FetchContentTypeError", "media type 'text/html' is not text/plain", None)),
    "404": ("good", _answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            ("FetchStatusError", "HTTP 404 Not Found", None)),
    "redirect": ("good", _answer(b"HTTP/1.1 301 Moved\r\nLocation: https://x/\r\n"
                                 b"Content-Length: 0\r\n\r\n"),
                 ("FetchStatusError", "HTTP 301 redirect to 'https://x/' not followed", None)),
    "not-utf8": ("good", _answer(_ok(b"version: STSv1\r\n\xff\xfe\r\n")),
                 ("PolicySyntaxError", "line 2: policy is not valid UTF-8",
                  "policy is not valid UTF-8")),
    "declared-too-large": ("good", _answer(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                           b"Content-Length: 99999\r\n\r\n"),
                           ("FetchTooLargeError", "Content-Length 99999 exceeds the 65536",
                            None)),
    "streamed-too-large": ("good", _endless,
                           ("FetchTooLargeError", "body exceeds the 65536 byte cap", None)),
    "wrong-name": ("wrong-name", _answer(_ok()),
                   ("FetchTlsError", "TLS verification failed (wrong-name): Hostname mismatch",
                    "wrong-name")),
    "expired": ("expired", _answer(_ok()),
                ("FetchTlsError", "TLS verification failed (expired): certificate has expired",
                 "expired")),
    "untrusted": ("untrusted", _answer(_ok()),
                  ("FetchTlsError", "TLS verification failed (untrusted): unable to get local "
                   "issuer certificate", "untrusted")),
    "self-signed": ("self-signed", _answer(_ok()),
                    ("FetchTlsError", "TLS verification failed (untrusted): self-signed",
                     "untrusted")),
    "plain-http": (None, _plain_http, ("FetchTlsError", HANDSHAKE_TEXT
                                       + "[SSL: WRONG_VERSION_NUMBER]", "handshake")),
    "tcp-close-unread": (None, _close_now,
                         ("FetchError", "cannot connect: Connection reset by peer", None)),
    "tcp-reset": (None, _reset_now,
                  ("FetchError", "cannot connect: Connection reset by peer", None)),
    "tcp-fin-in-handshake": (None, _hello_then, ("FetchError", "cannot connect: ", None)),
    "tls-alert": (None, _alert,
                  ("FetchTlsError", HANDSHAKE_TEXT + "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE]",
                   "handshake")),
    "tcp-silent": (None, _silent, ("FetchError", "cannot connect: ", None)),
    "tls-silent": ("good", _silent,
                   ("FetchTimeoutError", f"no complete answer within the limits {LIMITS}",
                    None)),
    "tls-close-after-handshake": ("good", _close_now,
                                  ("FetchError", "HTTP failure: Server disconnected", None)),
    "head-cut": ("good", _then(b"HTTP/1.1 200 OK\r\nContent-"),
                 ("FetchError", "HTTP failure: Server disconnected", None)),
    "body-cut": ("good", _then(PARTIAL),
                 ("FetchError", "HTTP failure: Response payload is not completed", None)),
    "body-cut-no-close-notify": ("good", _then(PARTIAL, 0.05, abort=True),
                                 ("FetchError", "HTTP failure: Response payload is not "
                                  "completed", None)),
    "body-stalls": ("good", _then(PARTIAL, 30),
                    ("FetchTimeoutError", f"no complete answer within the limits {LIMITS}",
                     None)),
    "head-too-long": ("good", _then(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70000, 2),
                      ("FetchError", "bad HTTP response: response head too long", None)),
    "chunk-line-too-long": ("good", _then(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                          b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 70000,
                                          2),
                            ("FetchError", "malformed response: Separator is not found, and "
                             "chunk exceed the limit", None)),
}


async def _outcome(lab, address: str) -> tuple:
    resolver = MemoryResolver()
    resolver.set(HOST, "A", address, security=Security.SECURE)
    config = FetchConfig(ca_file=str(lab.ca_file), connect_timeout=1.0, total_timeout=2.0)
    try:
        result = await fetch_policy_lean(https_ssl_context(config), resolver, DOMAIN, config)
    except SmtpTlsError as exc:
        reason = getattr(exc, "reason", None)
        return type(exc).__name__, str(exc), None if reason is None else str(reason)
    return "ok", result.text


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("name", list(CASES))
async def test_rfc8461_3_3_bulk_fetch_outcome_of_a_hostile_policy_host(lab, name):
    kind, handler, expected = CASES[name]
    address = lab.net.ip(243, 1 + list(CASES).index(name))
    server_ctx = None
    if kind is not None:
        chain = lab.issue([HOST], kind)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(chain.chain_file, chain.key_file)

    async def serve(reader, writer):
        try:
            await handler(reader, writer)
        except (OSError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, address, 443, ssl=server_ctx,
                                        reuse_address=True)
    try:
        got = await _outcome(lab, address)
    finally:
        server.close()
    if expected[0] == "ok":
        assert got == expected
    else:
        assert (got[0], got[2]) == (expected[0], expected[2])
        assert got[1].startswith(expected[1]), got[1]


async def test_refused_connection_names_the_address(lab):
    address = lab.net.ip(243, 250)  # nothing listens there
    got = await _outcome(lab, address)
    assert got == ("FetchError", f"cannot connect: Connect call failed ('{address}', 443)",
                   None)
