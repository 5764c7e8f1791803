"""The MTA-STS policy fetch for bulk runs: one TLS context, A-first resolution, and a
small HTTP/1.1 reader instead of an HTTP client session per fetch.

:func:`smtptls.net.https.fetch_policy` builds a TLS context and an HTTP session for
every fetch, which is right for a sender fetching now and then. In a bulk run every
fetch goes to another host over a new connection (``mta-sts.<domain>``), so a client
session's pooling is of no use and its machinery costs about as much CPU time as the
TLS handshake itself. :func:`fetch_policy_lean` makes the same request (RFC 8461 §3.3:
``GET`` of the well-known URL, no redirects, only 200, ``text/plain``, the body cap
enforced while reading, connect and total timeouts) over one connection with the
verifying context of :func:`smtptls.net.https.https_ssl_context`, and raises the same
typed errors with the same texts as :func:`smtptls.net.https.fetch_policy_with`.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib

from smtptls.config import FetchConfig
from smtptls.errors import (
    FetchError,
    FetchTimeoutError,
    FetchTooLargeError,
    SmtpTlsError,
)
from smtptls.net import https
from smtptls.net.https import (
    WELL_KNOWN_PATH,
    FetchResult,
    _decode,
    _short,
    _tls_error,
    check_response,
    https_ssl_context,
    policy_url,
)
from smtptls.net.protocols import Resolver

__all__ = ["fetch_policy_lean", "https_ssl_context"]

MAX_HEAD = 64 * 1024  # status line and header fields of a response
MAX_CHUNK_LINE = 1024


class _Malformed(Exception):
    """The response is not HTTP/1.x as RFC 9112 frames it."""


class _Closed(Exception):
    """The server closed the connection before the response head was complete."""


class _Incomplete(Exception):
    """The server closed the connection before the whole body had come."""


async def fetch_policy_lean(ctx: ssl.SSLContext, resolver: Resolver, domain: str,
                            config: FetchConfig) -> FetchResult:
    """The policy request of :func:`~smtptls.net.https.fetch_policy_with` over one new
    connection with ``ctx`` (built by :func:`https_ssl_context` for ``config``)."""
    url = policy_url(domain)  # validates the domain first (no I/O on a bad name)
    host = url.split("/", 3)[2]
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.total_timeout):
            text, content_type, status = await _fetch(ctx, resolver, host, url, config)
    except SmtpTlsError:
        raise
    except ssl.SSLError as exc:  # after the handshake, or a verification failure
        raise _tls_error(exc, url) from exc
    except TimeoutError as error:
        raise FetchTimeoutError(
            f"no complete answer within the limits (connect {config.connect_timeout:g} s, "
            f"total {config.total_timeout:g} s)", url=url) from error
    except _Closed as exc:
        raise FetchError("HTTP failure: Server disconnected", url=url) from exc
    except (_Incomplete, asyncio.IncompleteReadError) as exc:
        raise FetchError("HTTP failure: Response payload is not completed", url=url) from exc
    except _Malformed as exc:
        raise FetchError(f"bad HTTP response: {_short(exc)}", url=url) from exc
    except OSError as exc:
        raise FetchError(f"HTTP failure: {_short(exc)}", url=url) from exc
    except (ValueError, LookupError, zlib.error) as exc:
        raise FetchError(f"malformed response: {_short(exc)}", url=url) from exc
    return FetchResult(text=text, content_type=content_type, status=status, url=url,
                       elapsed=time.monotonic() - started)


async def _addresses(resolver: Resolver, host: str, url: str) -> list[str]:
    """The policy host's addresses: A first, and AAAA only when there is no A record
    (a connection goes to the first address anyway; the AAAA lookup it skips is a third
    of a fetch's DNS work). No A record: the rule of the HTTP client session's resolver
    (:class:`~smtptls.net.https.DnsAiohttpResolver`: A and AAAA, the first error)."""
    answer = await resolver.try_query(host, "A")
    if answer.records:
        return list(answer.records)
    try:
        # named here, not imported at the top: naming it imports aiohttp (and the CA
        # stores its connector loads), which a bulk run of A-record hosts never needs
        found = await https.DnsAiohttpResolver(resolver).resolve(host, 443,
                                                                  socket.AF_UNSPEC)
    except OSError as exc:
        inner = getattr(exc, "error", None)
        raise FetchError(f"cannot resolve the policy host: {inner or _short(exc)}",
                         url=url) from None
    return [r["host"] for r in found]


async def _connect(ctx: ssl.SSLContext, addresses: list[str], host: str, url: str,
                   config: FetchConfig) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A verified TLS connection to the first address that takes one (in order)."""
    errors: list[OSError] = []
    for address in addresses:
        try:
            async with asyncio.timeout(config.connect_timeout):
                return await asyncio.open_connection(
                    address, 443, ssl=ctx, server_hostname=host, limit=MAX_HEAD,
                    ssl_handshake_timeout=config.connect_timeout)
        except ssl.SSLCertVerificationError as exc:
            raise _tls_error(exc, url) from exc
        except ssl.SSLError as exc:  # the handshake failed otherwise
            raise _tls_error(_HandshakeText(host, exc), url) from exc
        except OSError as exc:
            errors.append(exc)
    if len(errors) == 1 or len({str(e) for e in errors}) == 1:
        failure = errors[0]
    else:
        failure = OSError("Multiple exceptions: " + ", ".join(str(e) for e in errors))
    raise FetchError(f"cannot connect: {_short(failure.strerror or failure)}", url=url)


class _HandshakeText(Exception):
    """A failed handshake described as the HTTP client session of
    :func:`~smtptls.net.https.fetch_policy_with` describes it (the same finding text)."""

    def __init__(self, host: str, exc: ssl.SSLError) -> None:
        super().__init__(f"Cannot connect to host {host}:443 ssl:default [{exc.strerror}]")


async def _fetch(ctx: ssl.SSLContext, resolver: Resolver, host: str, url: str,
                 config: FetchConfig) -> tuple[str, str, int]:
    addresses = await _addresses(resolver, host, url)
    reader, writer = await _connect(ctx, addresses, host, url, config)
    try:
        writer.write(
            (f"GET {WELL_KNOWN_PATH} HTTP/1.1\r\nHost: {host}\r\n"
             f"User-Agent: {config.user_agent}\r\nAccept: text/plain\r\n"
             "Accept-Encoding: gzip, deflate\r\nConnection: close\r\n\r\n").encode("ascii"))
        status, reason, headers = await _head(reader)
        content_type = headers.get("content-type", "")
        # RFC 8461 §3.3: redirects not followed, only 200, text/plain (net.https rules)
        check_response(url, status, reason, headers.get("location", ""), content_type)
        body = await _body(reader, headers, config.max_body, url)
    finally:
        writer.close()
    return _decode(body), content_type, status


async def _head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    """Status, reason and header fields (names in lower case, the first of each kept)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _Closed from exc
    except asyncio.LimitOverrunError as exc:
        raise _Malformed("response head too long") from exc
    lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise _Malformed(f"invalid status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise _Malformed(f"invalid header line {line[:60]!r}")
        headers.setdefault(name.lower(), value.strip())
    return int(code), reason.strip(), headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str], cap: int,
                url: str) -> bytes:
    # RFC 8461 §3.3 (B5): a declared length over the cap fails at once; the length read
    # (after decompression, as it is delivered) is checked too, whatever was declared.
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    declared = None if chunked else headers.get("content-length")
    length = None
    if declared is not None:
        if not declared.isdigit():
            raise _Malformed(f"invalid Content-Length {declared[:40]!r}")
        length = int(declared)
        if length > cap:
            raise FetchTooLargeError(f"Content-Length {length} exceeds the {cap} byte cap",
                                     url=url)
    encoding = headers.get("content-encoding", "").strip().lower()
    inflate = None
    if encoding in ("gzip", "x-gzip"):
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflate = zlib.decompressobj(zlib.MAX_WBITS)
    buf = bytearray()

    def add(data: bytes) -> None:
        nonlocal inflate
        if inflate is not None:
            data = inflate.decompress(data, cap + 1 - len(buf))
        buf.extend(data)
        if len(buf) > cap:
            raise FetchTooLargeError(f"body exceeds the {cap} byte cap", url=url)

    if chunked:
        while True:
            line = await reader.readline()
            if not line.endswith(b"\n") or len(line) > MAX_CHUNK_LINE:
                raise _Malformed("invalid chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Malformed("invalid chunk size") from None
            if size == 0:
                break
            if len(buf) + size > cap and inflate is None:
                raise FetchTooLargeError(f"body exceeds the {cap} byte cap", url=url)
            add(await reader.readexactly(size))
            await reader.readexactly(2)
    elif length is not None:
        while length > 0:
            data = await reader.read(min(length, 65536))
            if not data:
                raise _Incomplete
            length -= len(data)
            add(data)
    else:
        while data := await reader.read(65536):
            add(data)
    return bytes(buf)
