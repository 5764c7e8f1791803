"""A DNS resolver for bulk runs: one UDP socket, many queries in flight, same answers.

:class:`BulkResolver` is a :class:`smtptls.net.dns.DnsResolver` (the gatherer and the
policy fetch use it unchanged) whose :meth:`query` sends every query over one shared
UDP socket per run instead of a new socket per query, demultiplexes answers by query
id, retransmits after ``retry`` seconds within the lifetime, falls back to TCP when an
answer is truncated, and bounds the queries in flight. The answer is interpreted by
:func:`smtptls.net.dns.answer_from_response`, exactly as for every other lookup
(DNSSEC status from the AD bit, SERVFAIL as bogus, CNAME chains, record bounds).

Reading answers is the larger part of a bulk run's DNS work, and dnspython's generic
message parser costs about ten times what a bulk run's answers need. :func:`read_answer`
reads the shapes a bulk run mostly gets — NOERROR or NXDOMAIN, one question, answer
records of the asked name and type only (no CNAME, no RRSIG), A, AAAA, MX, TXT or TLSA
rdata, an SOA for negative answers — and builds the same :class:`Answer`; any other
shape, anything out of bounds or malformed (where dnspython would raise, or read
differently), returns ``None`` and the response is read by dnspython and
:func:`~smtptls.net.dns.answer_from_response` as everywhere else. A property test
(``tests/unit/check/test_check_dnsbulk.py``) holds both readings equal on generated
responses, and a lab test on every lab domain.

Security: query ids are random and unique among the queries in flight, answers are
accepted only from the server asked, with the id and the question of the query
(RFC 5452 §9.1); the socket's source port is the operating system's random choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import secrets
import struct

import dns.asyncquery
import dns.exception
import dns.flags
import dns.ipv6
import dns.message
import dns.rdatatype
import dns.resolver

from smtptls.config import DnsConfig, parse_hostport
from smtptls.dnssec import Security
from smtptls.errors import ConfigError, DnsError, DnsTimeout
from smtptls.net.dns import (
    MAX_TXT_LENGTH,
    Answer,
    DnsResolver,
    MxHost,
    TlsaRdata,
    answer_from_response,
    normalize_domain,
)

__all__ = ["BulkResolver", "read_answer"]

_RDTYPES = {"TXT": 16, "MX": 15, "A": 1, "AAAA": 28, "TLSA": 52, "CNAME": 5}
_PAYLOAD = 1232
MAX_RESPONSE = 65535
# Query ids drawn from the operating system's CSPRNG at once (RFC 5452 §9.2: random
# ids): one getrandom call per 512 queries instead of one per query.
ID_POOL = 512


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


# --- reading answers -----------------------------------------------------------------------

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_MAX_POINTERS = 64  # compression pointers followed in one name (a loop is malformed)
# A name whose text form is its labels as they are (what dnspython prints unescaped).
_PLAIN_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}")
_DIGEST_LENGTH = {1: 32, 2: 64}  # TLSA matching types SHA-256, SHA-512 (RFC 6698 §2.1.3)


class _Unread(Exception):
    """Not a shape :func:`read_answer` reads: the reference reader takes over."""


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``pos`` as lower-case text, and the offset after
    it in the record. Raises :class:`_Unread` for anything but plain labels."""
    labels: list[str] = []
    end = -1
    length = 0
    for _ in range(_MAX_POINTERS):
        if pos >= len(data):
            raise _Unread
        n = data[pos]
        if n == 0:
            if end < 0:
                end = pos + 1
            return ".".join(labels).lower(), end
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise _Unread
            if end < 0:
                end = pos + 2
            target = ((n & 0x3F) << 8) | data[pos + 1]
            if target >= pos:  # RFC 1035 §4.1.4: a pointer to a prior occurrence
                raise _Unread
            pos = target
            continue
        if n & 0xC0:
            raise _Unread
        label = data[pos + 1:pos + 1 + n]
        length += n + 1
        if len(label) != n or length > 255 or not _PLAIN_LABEL.fullmatch(label):
            raise _Unread
        labels.append(label.decode("ascii"))
        pos += n + 1
    raise _Unread


def _rdata(rdtype: str, data: bytes, start: int, end: int) -> tuple[object, object]:
    """The record value (as :func:`~smtptls.net.dns.answer_from_response` gives it) and
    its identity within an RRset (dnspython drops equal rdata)."""
    rd = data[start:end]
    if rdtype == "A":
        if len(rd) != 4:
            raise _Unread
        return f"{rd[0]}.{rd[1]}.{rd[2]}.{rd[3]}", rd
    if rdtype == "AAAA":
        if len(rd) != 16:
            raise _Unread
        return dns.ipv6.inet_ntoa(rd), rd
    if rdtype == "TXT":
        strings = []
        pos = 0
        while pos < len(rd):
            n = rd[pos]
            if pos + 1 + n > len(rd):
                raise _Unread
            strings.append(rd[pos + 1:pos + 1 + n])
            pos += 1 + n
        if not strings:
            raise _Unread
        # RFC 8461 §3.1: the strings of one record are concatenated without separators
        return b"".join(strings).decode("utf-8", errors="replace"), rd
    if rdtype == "MX":
        if len(rd) < 3:
            raise _Unread
        exchange, after = _name(data, start + 2)
        if after != end:
            raise _Unread
        # the root (a null MX, RFC 7505) reads "." as in net.dns, not an empty name
        host = MxHost(int.from_bytes(rd[:2], "big"), exchange or ".")
        return host, host
    if rdtype == "TLSA":
        # dnspython refuses a digest whose length is not its matching type's
        # (RFC 6698 §2.1.3): the whole response is then malformed
        if len(rd) < 4 or len(rd) - 3 != _DIGEST_LENGTH.get(rd[2], len(rd) - 3):
            raise _Unread
        return TlsaRdata(rd[0], rd[1], rd[2], bytes(rd[3:])), rd
    raise _Unread


def read_answer(qname: str, rdtype: str, question: bytes, data: bytes,
                config: DnsConfig) -> Answer | None:
    """The :class:`Answer` in ``data`` (a response to our query whose question section
    is ``question``), or ``None`` when the response is not a shape read here."""
    try:
        return _read(qname, rdtype, question, data, config)
    except (_Unread, IndexError, struct.error):
        return None


def _read(qname: str, rdtype: str, question: bytes, data: bytes,
          config: DnsConfig) -> Answer | None:
    if len(data) < 12:
        return None
    _qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    rcode = flags & 0x0F
    # a query response (opcode QUERY), not truncated, NOERROR or NXDOMAIN, one question
    if flags & 0x7800 or flags & 0x0200 or rcode not in (0, 3) or qd != 1:
        return None
    if data[12:12 + len(question)].lower() != question.lower():
        return None
    qtype = _RDTYPES[rdtype]
    pos = 12 + len(question)
    records: list[object] = []
    seen: set[object] = set()
    ttl = None
    soa_ttl = None
    for section, count in ((0, an), (1, ns), (2, ar)):
        for _ in range(count):
            owner, pos = _name(data, pos)
            if pos + 10 > len(data):
                return None
            rtype, rclass, rttl, rdlen = _RR.unpack_from(data, pos)
            pos += 10
            end = pos + rdlen
            if end > len(data):
                return None
            if section == 0:
                if rtype != qtype or rclass != 1 or owner != qname or rcode == 3:
                    return None  # CNAME, RRSIG, another name: the reference reader
                value, key = _rdata(rdtype, data, pos, end)
                if key not in seen:
                    seen.add(key)
                    records.append(value)
                ttl = rttl if ttl is None else min(ttl, rttl)
            elif section == 1 and rtype == 6:  # SOA (RFC 2308 §5)
                if soa_ttl is not None or rdlen < 22 or rclass != 1:
                    return None
                _mname, after = _name(data, pos)
                _rname, after = _name(data, after)
                if after + 20 != end:
                    return None
                soa_ttl = min(rttl, int.from_bytes(data[end - 4:end], "big"))
            elif section == 2 and rtype == 41:  # OPT: an extended RCODE is not read here
                if owner != "" or rttl >> 24:
                    return None
            pos = end
    if pos != len(data):
        return None  # trailing bytes: malformed for dnspython
    # RFC 6840 §5.7 / RFC 7672 §2.1.1: the validating resolver's AD bit (net.dns rule)
    security = Security.SECURE if flags & 0x0020 else Security.INSECURE
    if not records:
        return Answer(qname, rdtype, (), security, (), soa_ttl or 0, nxdomain=rcode == 3)
    if len(records) > config.max_records:
        return None  # the reference reader raises its bound error
    if rdtype == "MX":
        records.sort(key=lambda mx: (mx.preference, mx.exchange))  # type: ignore[attr-defined]
    elif rdtype == "TXT" and any(len(r) > MAX_TXT_LENGTH for r in records):  # type: ignore[arg-type]
        return None
    return Answer(qname, rdtype, tuple(records), security, (), int(ttl or 0))


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
        self._ids: list[int] = []

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

    async def _exchange(self, qname: str, qtype: int,
                        lifetime: float) -> tuple[bytes, bytes]:
        """Send the query, resend every ``retry`` seconds until an answer or the end of
        ``lifetime`` (one timer per query, no task); the answer and our question."""
        transport = self._transport
        if transport is None or transport.is_closing():
            transport = await self._ensure_socket()
        for _ in range(64):
            if not self._ids:
                self._ids = list(struct.unpack(f"!{ID_POOL}H", secrets.token_bytes(2 * ID_POOL)))
            qid = self._ids.pop()
            if qid not in self._pending:
                break
        else:  # pragma: no cover - 64 collisions in a row
            raise DnsError("no free query id")
        wire = query_wire(qid, qname, qtype)
        question = wire[12:_question_end(wire)]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bytes] = loop.create_future()
        self._pending[qid] = (fut, question)
        deadline = loop.time() + lifetime
        retry = self._retry

        def resend() -> None:
            nonlocal timer
            if fut.done():
                return
            now = loop.time()
            if now >= deadline:
                fut.set_exception(TimeoutError())
                return
            transport.sendto(wire)
            timer = loop.call_at(min(deadline, now + retry), resend)

        transport.sendto(wire)
        timer = loop.call_at(min(deadline, loop.time() + retry), resend)
        try:
            return await fut, question
        finally:
            timer.cancel()
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
                    data, question = await self._exchange(qname, _RDTYPES[rdtype], timeout)
                    if len(data) > 3 and data[3] & 0x0F == 2:
                        # SERVFAIL can be a busy resolver shedding load as well as bogus
                        # data (RFC 7672 §2.1.1: indeterminate); ask once more before
                        # an auditor calls it bogus.
                        await asyncio.sleep(self._servfail_pause)
                        data, question = await self._exchange(qname, _RDTYPES[rdtype],
                                                              timeout)
                    answer = read_answer(qname, rdtype, question, data, self.config)
                    if answer is not None:
                        return answer
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
