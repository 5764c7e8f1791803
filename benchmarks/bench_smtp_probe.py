"""STARTTLS probe throughput on loopback, and SMTP reply parsing speed.

Run: ``.venv/bin/python benchmarks/bench_smtp_probe.py [probes]``. Not part of the
test run. A small asyncio receiver on 127.0.0.1 answers banner, EHLO, STARTTLS (a
leaf + intermediate chain from trustme, ECDSA P-256), EHLO and QUIT; the client is
:func:`smtptls.net.smtp.probe_starttls` (pyOpenSSL over memory BIOs). Both run in
this one process, so the figures are a lower bound for the client's own cost.
"""

from __future__ import annotations

import asyncio
import ssl
import statistics
import sys
import time

import trustme

from smtptls.net.smtp import ReplyReader, SmtpReply, probe_starttls


async def receiver(ctx: ssl.SSLContext, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(b"220 bench ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-bench\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                             b"250-8BITMIME\r\n250 STARTTLS\r\n")
            elif verb == b"STAR":
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(ctx)
                continue
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


async def probes(port: int, total: int, concurrency: int) -> tuple[float, list[float]]:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with sem:
            t = time.perf_counter()
            res = await probe_starttls("127.0.0.1", host="mx.bench.test", port=port)
            latencies.append(time.perf_counter() - t)
            if not res.ok:
                raise SystemExit(f"probe failed: {res.error}")

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return time.perf_counter() - start, latencies


def bench_replies(seconds: float = 1.0) -> float:
    wire = SmtpReply(250, ("bench", "PIPELINING", "SIZE 10240000", "8BITMIME",
                           "STARTTLS")).to_text().encode()
    n = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(1000):
            r = ReplyReader()
            r.feed(wire)
            r.next_reply()
        n += 1000
    return n / seconds


async def main(total: int) -> None:
    ca = trustme.CA()
    leaf = ca.create_child_ca().issue_cert("mx.bench.test")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(ctx)
    server = await asyncio.start_server(lambda r, w: receiver(ctx, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"reply parsing (5-line EHLO reply): {bench_replies():,.0f} replies/s")
    for concurrency in (1, 16):
        elapsed, lat = await probes(port, total, concurrency)
        lat.sort()
        p95 = lat[int(len(lat) * 0.95) - 1]
        print(f"probes, concurrency {concurrency:>2}: {total / elapsed:7.1f} probes/s, "
              f"median {statistics.median(lat) * 1000:6.1f} ms, p95 {p95 * 1000:6.1f} ms "
              f"({total} probes, full session incl. TLS 1.3 handshake)")
    server.close()
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))
