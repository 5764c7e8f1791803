"""The socketmap server on real loopback sockets (TCP and UNIX).

A small handler answers from a table; keys starting with ``slow`` take a while, so
pipelined fast and slow requests prove replies come back in request order. Covers
fragmented and pipelined netstrings, garbage, oversized requests, unknown map names,
1,000 concurrent connections, clients that disconnect mid-request, idle timeouts and
the metrics endpoint.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from smtptls.services.policyd.metrics import PolicydMetrics, start_metrics_server
from smtptls.services.policyd.socketmap import (
    NetstringDecoder,
    Reply,
    Request,
    SocketmapServer,
    encode_netstring,
)


class TableHandler:
    def __init__(self) -> None:
        self.table = {"example.com": Reply.ok("dane-only").to_bytes(),
                      "sts.example": Reply.ok("secure match=mx.sts.example "
                                              "servername=hostname").to_bytes()}
        self.slow_started = 0
        self.slow_done = 0

    def lookup_cached(self, key: str) -> bytes | None:
        if key.startswith("slow"):
            return None
        return self.table.get(key, Reply.notfound().to_bytes())

    async def lookup(self, key: str) -> bytes:
        self.slow_started += 1
        await asyncio.sleep(0.05)
        self.slow_done += 1
        return Reply.ok(f"answer-for-{key}").to_bytes()


def req(key: str, name: str = "postfix") -> bytes:
    return Request(name, key).to_bytes()


async def read_replies(reader: asyncio.StreamReader, n: int, limit: float = 10.0
                       ) -> list[str]:
    dec = NetstringDecoder(200000)
    out: list[str] = []
    async with asyncio.timeout(limit):
        while len(out) < n:
            data = await reader.read(65536)
            if not data:
                break
            out.extend(f.decode() for f in dec.feed(data))
    return out


@pytest.fixture
async def server():
    handler = TableHandler()
    metrics = PolicydMetrics()
    srv = SocketmapServer(handler, map_name="postfix", max_request=256, idle_timeout=1.0,
                          observer=metrics.observe)
    host, port = await srv.listen_tcp("127.0.0.1", 0)
    srv.test_addr = (host, port)  # type: ignore[attr-defined]
    srv.test_handler = handler  # type: ignore[attr-defined]
    srv.test_metrics = metrics  # type: ignore[attr-defined]
    yield srv
    await srv.close(grace=1.0)


async def connect(srv):  # type: ignore[no-untyped-def]
    return await asyncio.open_connection(*srv.test_addr)


async def test_single_request(server) -> None:
    reader, writer = await connect(server)
    writer.write(req("example.com"))
    assert await read_replies(reader, 1) == ["OK dane-only"]
    writer.close()


async def test_pipelined_requests_answered_in_order(server) -> None:
    reader, writer = await connect(server)
    keys = [f"slow-{i}" if i % 7 == 3 else ("example.com", "sts.example", "nx.example")[i % 3]
            for i in range(200)]
    writer.write(b"".join(req(k) for k in keys))
    replies = await read_replies(reader, len(keys))
    expected = []
    for k in keys:
        if k.startswith("slow"):
            expected.append(f"OK answer-for-{k}")
        elif k == "example.com":
            expected.append("OK dane-only")
        elif k == "sts.example":
            expected.append("OK secure match=mx.sts.example servername=hostname")
        else:
            expected.append("NOTFOUND ")
    assert replies == expected
    writer.close()


async def test_fragmented_netstrings(server) -> None:
    reader, writer = await connect(server)
    wire = req("example.com") + req("slow-x") + req("nx.example")
    for i in range(len(wire)):
        writer.write(wire[i:i + 1])
        await writer.drain()
        if i % 5 == 0:
            await asyncio.sleep(0.001)
    assert await read_replies(reader, 3) == ["OK dane-only", "OK answer-for-slow-x",
                                             "NOTFOUND "]
    writer.close()


@pytest.mark.parametrize("garbage", [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http"),
    pytest.param(b"-5:abc,", id="negative-length"),
    pytest.param(b"007:example,", id="leading-zeros"),
    pytest.param(b"3:abcX", id="bad-terminator"),
    pytest.param(b"\xff\xfe\x00garbage", id="binary"),
])
async def test_garbage_gets_perm_then_close(server, garbage: bytes) -> None:
    reader, writer = await connect(server)
    writer.write(req("example.com") + garbage + req("example.com"))
    replies = await read_replies(reader, 3)
    assert replies[0] == "OK dane-only"
    assert replies[1].startswith("PERM protocol error")
    assert len(replies) == 2  # nothing after the broken frame: the connection is closed
    assert await reader.read() == b""
    writer.close()


async def test_oversized_request_perm_and_close(server) -> None:
    reader, writer = await connect(server)
    writer.write(encode_netstring(b"postfix " + b"a" * 300))
    replies = await read_replies(reader, 1)
    assert replies[0].startswith("PERM protocol error") and "exceeds" in replies[0]
    assert await reader.read() == b""
    writer.close()


async def test_unknown_map_name_is_perm_and_connection_stays(server) -> None:
    reader, writer = await connect(server)
    writer.write(req("example.com", name="othermap") + encode_netstring(b"nospace")
                 + req("example.com"))
    assert await read_replies(reader, 3) == ["PERM unknown map name",
                                             "PERM bad request: request is not 'name key'",
                                             "OK dane-only"]
    writer.close()


async def test_one_thousand_concurrent_connections(server) -> None:
    async def client(i: int) -> list[str]:
        reader, writer = await connect(server)
        try:
            keys = ["example.com", "sts.example", f"slow-{i}" if i % 10 == 0 else "nx.example"]
            writer.write(b"".join(req(k) for k in keys))
            return await read_replies(reader, 3, limit=60)
        finally:
            writer.close()

    started = time.monotonic()
    results = await asyncio.gather(*(client(i) for i in range(1000)))
    assert all(len(r) == 3 and r[0] == "OK dane-only" for r in results)
    assert all(r[2] == (f"OK answer-for-slow-{i}" if i % 10 == 0 else "NOTFOUND ")
               for i, r in enumerate(results))
    assert time.monotonic() - started < 60


async def test_client_disconnecting_mid_request_does_not_hurt(server) -> None:
    # half a netstring, then gone
    _, w1 = await connect(server)
    w1.write(b"19:postfix exa")
    await w1.drain()
    w1.close()
    # a slow request whose client leaves before the answer
    _, w2 = await connect(server)
    w2.write(req("slow-gone"))
    await w2.drain()
    w2.transport.abort()
    await asyncio.sleep(0.15)
    assert server.test_handler.slow_done >= 1
    reader, writer = await connect(server)
    writer.write(req("example.com"))
    assert await read_replies(reader, 1) == ["OK dane-only"]
    writer.close()


async def test_idle_connection_is_closed(server) -> None:
    reader, _writer = await connect(server)
    started = time.monotonic()
    async with asyncio.timeout(5):
        assert await reader.read() == b""
    assert 0.8 < time.monotonic() - started < 4


async def test_half_close_still_gets_answers(server) -> None:
    reader, writer = await connect(server)
    writer.write(req("slow-a") + req("example.com"))
    writer.write_eof()
    assert await read_replies(reader, 2) == ["OK answer-for-slow-a", "OK dane-only"]
    writer.close()


async def test_unix_socket(tmp_path) -> None:
    srv = SocketmapServer(TableHandler(), map_name="postfix")
    path = tmp_path / "policyd.sock"
    bound = await srv.listen(f"unix:{path}")
    assert bound == f"unix:{path}"
    assert oct(path.stat().st_mode & 0o777) == "0o660"
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(req("example.com") + req("slow-u"))
        assert await read_replies(reader, 2) == ["OK dane-only", "OK answer-for-slow-u"]
        writer.close()
    finally:
        await srv.close(grace=1.0)
    assert not path.exists()


async def test_close_finishes_in_flight_requests(server) -> None:
    reader, writer = await connect(server)
    writer.write(req("slow-inflight"))
    await writer.drain()
    await asyncio.sleep(0.01)
    await server.close(grace=2.0)
    assert await read_replies(reader, 1) == ["OK answer-for-slow-inflight"]
    with pytest.raises(OSError):
        await connect(server)


async def test_metrics_endpoint(server) -> None:
    metrics = server.test_metrics
    reader, writer = await connect(server)
    writer.write(req("example.com") * 3 + req("nx.example") + req("x", name="bad"))
    await read_replies(reader, 5)
    writer.close()
    runner, addr = await start_metrics_server(metrics, "127.0.0.1:0")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{addr}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
    finally:
        await runner.cleanup()
    assert 'smtptls_policyd_requests_total{answer="dane-only"} 3.0' in text
    assert 'smtptls_policyd_requests_total{answer="notfound"} 1.0' in text
    assert 'smtptls_policyd_requests_total{answer="perm"} 1.0' in text
    assert "smtptls_policyd_request_seconds_bucket" in text
