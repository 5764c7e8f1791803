"""The bulk policy fetch's HTTP/1.1 reader (``check.fetch``): RFC 8461 §3.3 limits on the
body whatever the framing (Content-Length, chunked, until close, compressed), and the
response head read as the one-domain fetch reads it. Fed from memory: no network."""

from __future__ import annotations

import asyncio
import gzip

import pytest

from smtptls.check.fetch import _body, _Closed, _head, _Incomplete, _Malformed
from smtptls.errors import FetchTooLargeError

URL = "https://mta-sts.example.com/.well-known/mta-sts.txt"
POLICY = b"version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400\r\n"


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def _read(raw: bytes, cap: int = 65536) -> tuple[int, str, dict[str, str], bytes]:
    reader = _reader(raw)
    status, reason, headers = await _head(reader)
    return status, reason, headers, await _body(reader, headers, cap, URL)


async def test_rfc8461_3_3_content_length_body_and_first_header_kept():
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-type: text/html\r\n"
           b"Content-Length: %d\r\n\r\n" % len(POLICY)) + POLICY
    status, reason, headers, body = await _read(raw)
    assert (status, reason, headers["content-type"], body) == (200, "OK", "text/plain", POLICY)


async def test_rfc8461_3_3_chunked_body_is_reassembled():
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(POLICY[i:i + 10]), POLICY[i:i + 10])
                      for i in range(0, len(POLICY), 10))
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
           + chunks + b"0\r\n\r\n")
    assert (await _read(raw))[3] == POLICY


async def test_rfc8461_3_3_body_until_close_and_gzip_decoded():
    packed = gzip.compress(POLICY)
    raw = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n\r\n"
           + packed)
    assert (await _read(raw))[3] == POLICY


async def test_rfc8461_3_3_declared_length_over_the_cap_fails_at_once():
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"x" * 10
    with pytest.raises(FetchTooLargeError, match="Content-Length 70000 exceeds the 65536"):
        await _read(raw)


@pytest.mark.parametrize("framing", ["chunked", "close", "gzip"])
async def test_rfc8461_3_3_streamed_body_over_the_cap_fails_whatever_the_framing(framing):
    big = b"y" * 5000
    if framing == "chunked":
        raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"3e8\r\n" + big[:1000] + b"\r\n" for _ in range(5)) + b"0\r\n\r\n")
    elif framing == "close":
        raw = b"HTTP/1.1 200 OK\r\n\r\n" + big
    else:  # a small compressed body that inflates past the cap
        raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gzip.compress(big)
    with pytest.raises(FetchTooLargeError, match="body exceeds the 4096 byte cap"):
        await _read(raw, cap=4096)


async def test_truncated_body_and_head_are_told_apart():
    with pytest.raises(_Incomplete):
        await _read(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
    with pytest.raises(_Closed):
        await _read(b"HTTP/1.1 200 OK\r\nContent-")


@pytest.mark.parametrize("raw", [b"HTTX/1.1 200 OK\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                                 b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"])
async def test_malformed_responses_are_refused(raw):
    with pytest.raises(_Malformed):
        await _read(raw)
