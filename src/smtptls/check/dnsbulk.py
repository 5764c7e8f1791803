"""A DNS resolver for bulk runs: one UDP socket, many queries in flight, same answers.

:class:`BulkResolver` is a :class:`smtptls.net.dns.DnsResolver` (the gatherer and the
policy fetch use it unchanged) whose :meth:`query` sends every query over one shared
UDP socket per run instead of a new socket per query, demultiplexes answers by query
id, retransmits after ``retry`` seconds within the lifetime, falls back to TCP when an
answer is truncated, and bounds the queries in flight. The answer is interpreted by
:func:`smtptls.net.dns.answer_from_response`, exactly as for every other lookup
(DNSSEC status from the AD bit, SERVFAIL as bogus, CNAME chains, record bounds).

Security: query ids are random and unique among the queries in flight, answers are
accepted only from the server asked, with the id and the question of the query
(RFC 5452 §9.1); the socket's source port is the operating system's random choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import secrets

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rdatatype
import dns.resolver

from smtptls.config import DnsConfig, parse_hostport
from smtptls.errors import ConfigError, DnsError, DnsTimeout
from smtptls.net.dns import Answer, DnsResolver, answer_from_response, normalize_domain

__all__ = ["BulkResolver"]

_RDTYPES = {"TXT": 16, "MX": 15, "A": 1, "AAAA": 28, "TLSA": 52, "CNAME": 5}
_PAYLOAD = 1232
MAX_RESPONSE = 65535


# RFC 1035 §4.1.1 header flags RD (0x0100) and AD (0x0020, RFC 6840 §5.7); one
# question, one additional record: the RFC 6891 OPT record, payload 1232, DO clear.
_FLAGS = (0x0100 | 0x0020).to_bytes(2, "big")
_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT = b"\x00\x00\x29" + _PAYLOAD.to_bytes(2, "big") + b"\x00\x00\x00\x00\x00\x00"


def query_wire(qid: int, qname: str, qtype: int) -> bytes:
    """The wire form of a query (RFC 1035 §4.1) for a normalised, ASCII ``qname``."""
    labels = b"".join(len(x).to_bytes(1, "big") + x.encode("ascii")
                      for x in qname.split(".") if x)
    return (qid.to_bytes(2, "big") + _FLAGS + _COUNTS + labels + b"\x00"
            + qtype.to_bytes(2, "big") + b"\x00\x01" + _OPT)


def _question_end(wire: bytes) -> int:
    """Offset after the (single, uncompressed) question of a query we built."""
    pos = 12
    while pos < len(wire) and wire[pos] != 0:  # bounded by the wire length
        pos += wire[pos] + 1
    return pos + 1 + 4  # root label, QTYPE, QCLASS


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, owner: BulkResolver) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        self.owner._received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP errors: the query times out and is retried


class BulkResolver(DnsResolver):
    """``BulkResolver(DnsConfig(...), limit=128, dnssec_records=False)``.

    ``dnssec_records=False`` leaves the DO bit out: a validating resolver still sets AD
    for a query with the AD bit (RFC 6840 §5.7), and the RRSIGs it would add are
    neither needed nor cheap to parse.
    """

    def __init__(self, config: DnsConfig | None = None, *, limit: int = 128,
                 dnssec_records: bool = False, retry: float = 1.0) -> None:
        super().__init__(config)
        self._inflight = asyncio.Semaphore(limit)
        self._do = dnssec_records
        self._retry = retry
        self._servfail_pause = 0.2
        self._server = self._first_server()
        self._transport: asyncio.DatagramTransport | None = None
        self._opening: asyncio.Lock | None = None
        self._pending: dict[int, tuple[asyncio.Future[bytes], bytes]] = {}

    def _first_server(self) -> tuple[str, int]:
        if self.config.nameservers:
            host, port = parse_hostport(self.config.nameservers[0], self.config.port)
        else:
            try:
                system = dns.resolver.Resolver(configure=True)
            except dns.exception.DNSException as exc:
                raise DnsError(f"no resolver configuration: {exc}") from None
            first = next((str(n) for n in system.nameservers), None)
            if first is None:
                raise DnsError("no nameserver configured")
            host, port = first, self.config.port
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(f"nameserver must be an IP address, got {host!r}",
                              key="dns.nameservers") from None
        return host, port

    async def _ensure_socket(self) -> asyncio.DatagramTransport:
        if self._transport is not None and not self._transport.is_closing():
            return self._transport
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._transport is None or self._transport.is_closing():
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), remote_addr=self._server)
                self._transport = transport
        return self._transport

    def _received(self, data: bytes, addr: tuple) -> None:
        if len(data) < 12 or (addr[0], addr[1]) != self._server:
            return
        qid = int.from_bytes(data[:2], "big")
        entry = self._pending.get(qid)
        if entry is None:
            return
        fut, question = entry
        # RFC 5452 §9.1: the answer must carry the question that was asked.
        if data[12:12 + len(question)].lower() != question.lower():
            return
        if not fut.done():
            fut.set_result(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def _exchange(self, qname: str, qtype: int, lifetime: float) -> bytes:
        transport = await self._ensure_socket()
        for _ in range(64):
            qid = secrets.randbelow(65536)
            if qid not in self._pending:
                break
        else:  # pragma: no cover - 64 collisions in a row
            raise DnsError("no free query id")
        wire = query_wire(qid, qname, qtype)
        question = wire[12:_question_end(wire)]
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[qid] = (fut, question)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + lifetime
        try:
            while True:
                transport.sendto(wire)
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), min(self._retry, left))
                except TimeoutError:
                    if loop.time() >= deadline:
                        raise
        finally:
            self._pending.pop(qid, None)
            if not fut.done():
                fut.cancel()

    async def query(self, name: str, rdtype: str) -> Answer:
        rdtype = rdtype.upper()
        if rdtype not in _RDTYPES:
            raise DnsError(f"unsupported record type {rdtype}", name=name, rdtype=rdtype)
        qname = normalize_domain(name)
        timeout = self.config.timeout
        async with self._inflight:
            try:
                if self._do:
                    response = await self._tcp(qname, rdtype, timeout)
                else:
                    data = await self._exchange(qname, _RDTYPES[rdtype], timeout)
                    if len(data) > 3 and data[3] & 0x0F == 2:
                        # SERVFAIL can be a busy resolver shedding load as well as bogus
                        # data (RFC 7672 §2.1.1: indeterminate); ask once more before
                        # an auditor calls it bogus.
                        await asyncio.sleep(self._servfail_pause)
                        data = await self._exchange(qname, _RDTYPES[rdtype], timeout)
                    response = dns.message.from_wire(data)
                    if response.flags & dns.flags.TC:
                        response = await self._tcp(qname, rdtype, timeout)
            except TimeoutError:
                raise DnsTimeout(f"no answer within {timeout:g} s", name=qname,
                                 rdtype=rdtype) from None
            except dns.exception.Timeout:
                raise DnsTimeout(f"no answer within {timeout:g} s", name=qname,
                                 rdtype=rdtype) from None
            except (dns.exception.DNSException, ValueError) as exc:
                raise DnsError(f"malformed answer: {str(exc)[:100]}", name=qname,
                               rdtype=rdtype) from None
            except OSError as exc:
                raise DnsError(f"lookup failed: {exc.strerror or exc}", name=qname,
                               rdtype=rdtype) from None
        if not isinstance(response, dns.message.QueryMessage):
            raise DnsError("response is not a query response", name=qname, rdtype=rdtype)
        return answer_from_response(qname, rdtype, response, config=self.config)

    async def _tcp(self, qname: str, rdtype: str, lifetime: float) -> dns.message.Message:
        """Over TCP (a truncated answer, or RRSIGs wanted): one connection per query."""
        msg = dns.message.make_query(qname + ".", rdtype, use_edns=0, payload=_PAYLOAD,
                                     want_dnssec=self._do)
        # RFC 6840 §5.7: AD in the query asks the validating resolver for the AD bit.
        msg.flags = dns.flags.RD | dns.flags.AD
        return await dns.asyncquery.tcp(msg, self._server[0], timeout=lifetime,
                                        port=self._server[1])

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
