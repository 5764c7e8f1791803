"""Gather the facts about a domain: DNS, the MTA-STS policy fetch, rua probes, SMTP.

The I/O half of ``smtptls check``; :mod:`smtptls.check.evaluate` judges the result.
Built on the project's adapters, so every limit of the protocols is applied exactly as
a sender applies it: :mod:`smtptls.net.dns` (DNSSEC status from the validating
resolver's AD bit), :func:`smtptls.net.https.fetch_policy` (RFC 8461 §3.3: HTTPS only,
no redirects, text/plain, size cap, timeouts) and
:func:`smtptls.net.smtp.probe_starttls` (bounded STARTTLS probe capturing the chain),
whose chain is then verified with :func:`smtptls.net.pkix.verify_pkix`.

A :class:`Gatherer` is meant to live for a whole run (one domain or a million): it
keeps run-scoped, bounded memos of MX host lookups, SMTP probes and rua probes, so
hosts shared by many domains are asked once, and it is polite to shared servers: one
global connection semaphore and a small per-address connection limit.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from smtptls.check.dane import decide
from smtptls.check.dnsbulk import BulkResolver
from smtptls.check.facts import (
    DomainFacts,
    FetchFacts,
    LookupFacts,
    MxFacts,
    ProbeFacts,
    RuaFacts,
    TlsaFacts,
    cert_facts,
    is_root,
)
from smtptls.check.fetch import fetch_policy_lean, https_ssl_context
from smtptls.check.mx import MAX_HOSTS, mx_targets
from smtptls.config import DnsConfig, FetchConfig
from smtptls.dane.decide import HostLookup, Requirement, tlsa_candidates, tlsa_query_name
from smtptls.dane.tlsa import TLSARecord
from smtptls.dnssec import Security
from smtptls.errors import (
    ConfigError,
    DaneError,
    FetchContentTypeError,
    FetchError,
    FetchStatusError,
    FetchTimeoutError,
    FetchTlsError,
    FetchTooLargeError,
    InvalidDomainError,
    PolicySyntaxError,
    SmtpTlsError,
)
from smtptls.mtasts.record import is_sts_candidate
from smtptls.net import https
from smtptls.net.dns import Answer, DnsResolver, normalize_domain
from smtptls.net.https import FetchResult, fetch_policy
from smtptls.net.protocols import Resolver
from smtptls.tlsrpt.record import is_tlsrpt_record, parse_record

if TYPE_CHECKING:
    import aiohttp

    from smtptls.net.smtp import ProbeLimits

__all__ = ["CheckOptions", "Gatherer"]

T = TypeVar("T")

MAX_RUA = 8  # rua URIs probed per record
_RANK = {Security.SECURE: 0, Security.INSECURE: 1, Security.INDETERMINATE: 2,
         Security.BOGUS: 3}


@dataclass(frozen=True, slots=True)
class CheckOptions:
    """How a check runs. Every bound has a default; the CLI maps its flags here."""

    dns: DnsConfig = field(default_factory=DnsConfig)
    ca_file: str | None = None  # trust store for the policy host, MX certs and rua hosts
    smtp: bool = True  # probe MX hosts with STARTTLS
    rua_probe: bool = True  # probe rua destinations (HEAD/OPTIONS, MX lookup)
    timeout: float = 30.0  # per network step (DNS, HTTPS total, SMTP total)
    domain_timeout: float = 120.0  # everything about one domain
    smtp_port: int = 25
    helo_name: str = "localhost"
    max_addresses: int = 2  # addresses probed per MX host
    ipv6: bool = False  # also probe AAAA addresses when A records exist
    max_connections: int = 64  # open connections at once, all kinds (global semaphore)
    per_host_connections: int = 2  # open SMTP connections per MX address
    memo_size: int = 20000  # entries per run-scoped memo (hosts, probes, rua)
    max_dns_queries: int = 128  # DNS queries in flight at once (resolvers drop floods)
    bulk_dns: bool = False  # one shared UDP socket, AD bit without DO (check.dnsbulk)

    def __post_init__(self) -> None:
        if not 0 < self.timeout <= 600 or not 0 < self.domain_timeout <= 3600:
            raise ConfigError("timeouts must be positive (at most 600 s per step)")
        if not 1 <= self.max_connections <= 10000 or not 1 <= self.per_host_connections <= 64:
            raise ConfigError("connection limits out of range")
        if not 1 <= self.max_dns_queries <= 10000:
            raise ConfigError("max_dns_queries out of range")
        if not 1 <= self.max_addresses <= 16 or not 1 <= self.smtp_port <= 65535:
            raise ConfigError("max_addresses or smtp_port out of range")

    @property
    def fetch(self) -> FetchConfig:
        return FetchConfig(ca_file=self.ca_file, connect_timeout=min(10.0, self.timeout),
                           total_timeout=self.timeout)

    @property
    def probe_limits(self) -> ProbeLimits:
        from smtptls.net.smtp import ProbeLimits  # SMTP modules only when SMTP is probed

        return ProbeLimits(connect_timeout=min(10.0, self.timeout),
                           step_timeout=min(30.0, self.timeout), total_timeout=self.timeout)


async def _each(aws: list[Awaitable[T]]) -> list[T]:
    """``asyncio.gather`` of ``aws`` as a list, without a task for a single awaitable
    (one MX host, one TLSA base, one rua URI: the common case)."""
    if len(aws) == 1:
        return [await aws[0]]
    return list(await asyncio.gather(*aws))


class _Memo:
    """A bounded, run-scoped memo of coroutine results with in-flight de-duplication."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._done: OrderedDict[Any, Any] = OrderedDict()
        self._pending: dict[Any, asyncio.Future[Any]] = {}

    async def get(self, key: Any, factory: Callable[[], Awaitable[T]]) -> T:
        if key in self._done:
            self._done.move_to_end(key)
            return self._done[key]  # type: ignore[no-any-return]
        fut = self._pending.get(key)
        if fut is not None:
            return await asyncio.shield(fut)  # type: ignore[no-any-return]
        fut = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        try:
            value = await factory()
        except BaseException as exc:
            self._pending.pop(key, None)
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warning
            raise
        self._pending.pop(key, None)
        fut.set_result(value)
        self._done[key] = value
        while len(self._done) > self.size:
            self._done.popitem(last=False)
        return value


class _BoundedResolver(DnsResolver):
    """A :class:`DnsResolver` with a bound on queries in flight.

    A validating resolver answers a burst of thousands of concurrent queries by
    dropping some (Unbound: ``num-queries-per-thread``), which a stub sees as timeouts;
    a bulk run keeps its burst below that.
    """

    def __init__(self, config: DnsConfig, limit: int) -> None:
        super().__init__(config)
        self._inflight = asyncio.Semaphore(limit)

    async def query(self, name: str, rdtype: str) -> Answer:
        async with self._inflight:
            return await super().query(name, rdtype)


class _HostLimits:
    """Per-address semaphores, created on demand and dropped when idle (bounded)."""

    def __init__(self, per_host: int) -> None:
        self.per_host = per_host
        self._sems: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    async def run(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        sem, users = self._sems.setdefault(key, (asyncio.Semaphore(self.per_host), [0]))
        users[0] += 1
        try:
            async with sem:
                return await factory()
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._sems.pop(key, None)


def _lookup(answer: Answer, name: str) -> LookupFacts:
    records: tuple[str, ...]
    if answer.rdtype == "MX":
        records = tuple(r.to_text() for r in answer.records)
    elif answer.rdtype == "TLSA":
        records = tuple(r.to_text() for r in answer.records)
    else:
        records = tuple(str(r) for r in answer.records)
    return LookupFacts(name, answer.security, records,
                       None if answer.error is None else str(answer.error)[:300],
                       answer.nxdomain)


def _worst(*values: Security) -> Security:
    return max(values, key=lambda s: _RANK[s])


@dataclass(slots=True)
class _Partial:
    """What has been gathered so far (the per-domain time limit may cut it short)."""

    domain: str
    mx: LookupFacts | None = None
    mx_answer: Answer | None = None
    sts_txt: LookupFacts | None = None
    tlsrpt_txt: LookupFacts | None = None
    hosts: list[MxFacts] = field(default_factory=list)
    policy: FetchFacts | None = None
    rua: list[RuaFacts] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Gatherer:
    """Gathers :class:`DomainFacts`; use ``async with Gatherer(options) as g``."""

    def __init__(self, options: CheckOptions | None = None, *,
                 resolver: Resolver | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.options = options or CheckOptions()
        if resolver is None:
            if self.options.bulk_dns:
                resolver = BulkResolver(self.options.dns, limit=self.options.max_dns_queries)
            else:
                resolver = _BoundedResolver(self.options.dns, self.options.max_dns_queries)
        self.resolver = resolver
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        size = self.options.memo_size
        self._hosts = _Memo(size)
        self._probes = _Memo(size)
        self._rua = _Memo(size)
        self._connections = asyncio.Semaphore(self.options.max_connections)
        self._per_host = _HostLimits(self.options.per_host_connections)
        self._session: aiohttp.ClientSession | None = None
        self._fetch_ctx: ssl.SSLContext | None = None
        if self.options.ca_file is not None:
            try:
                with open(self.options.ca_file, "rb"):
                    pass
            except OSError as exc:
                raise ConfigError(f"cannot read CA file {self.options.ca_file}: "
                                  f"{exc.strerror}", key="ca_file") from None

    async def __aenter__(self) -> Gatherer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if isinstance(self.resolver, BulkResolver):
            self.resolver.close()
        if self._session is not None:
            await self._session.close()
        self._session = None

    # --- one domain ---------------------------------------------------------------------

    async def gather(self, domain: str) -> DomainFacts:
        """Everything about ``domain``; never raises for what the network does.

        Raises :class:`~smtptls.errors.InvalidDomainError` for a name that cannot be a
        domain, and :class:`~smtptls.errors.ConfigError` for an unusable CA file.
        """
        name = normalize_domain(domain)
        started = time.monotonic()
        checked_at = self._clock()
        part = _Partial(name)
        timed_out = False
        try:
            async with asyncio.timeout(self.options.domain_timeout):
                await self._gather(part)
        except TimeoutError:
            timed_out = True
        mx = part.mx or LookupFacts(name, Security.INDETERMINATE, (),
                                    "not looked up (time limit)")
        return DomainFacts(
            domain=name, checked_at=checked_at, mx=mx, hosts=tuple(part.hosts),
            sts_txt=part.sts_txt, policy=part.policy, tlsrpt_txt=part.tlsrpt_txt,
            rua=tuple(part.rua), smtp_probed=self.options.smtp, timed_out=timed_out,
            elapsed=time.monotonic() - started, notes=tuple(part.notes))

    async def _gather(self, part: _Partial) -> None:
        d = part.domain
        r = self.resolver
        mx, sts, rpt = await asyncio.gather(r.try_query(d, "MX"),
                                            r.try_query(f"_mta-sts.{d}", "TXT"),
                                            r.try_query(f"_smtp._tls.{d}", "TXT"))
        part.mx = _lookup(mx, d)
        part.mx_answer = mx
        part.sts_txt = _lookup(sts, f"_mta-sts.{d}")
        part.tlsrpt_txt = _lookup(rpt, f"_smtp._tls.{d}")
        await asyncio.gather(self._mail_side(part), self._policy(part), self._tlsrpt(part))

    async def _mail_side(self, part: _Partial) -> None:
        mx = part.mx
        assert mx is not None
        if mx.nxdomain or (len(mx.records) == 1 and is_root(mx.records[0].split()[-1])):
            return
        if mx.failed:
            return
        targets, _bad = mx_targets(mx)
        pairs: list[tuple[int | None, str]] = list(targets[:MAX_HOSTS])
        if not mx.records:
            pairs = [(None, part.domain)]  # RFC 5321 §5.1 implicit MX; RFC 7672 §2.2.2
        hosts = await _each([self._host(h) for _, h in pairs])
        part.hosts = [replace(h, preference=p) for (p, _), h in zip(pairs, hosts, strict=True)]
        if not self.options.smtp:
            return
        facts = DomainFacts(part.domain, self._clock(), mx, tuple(part.hosts))
        try:
            decision = decide(facts)
            sni = {e.host: e.sni for e in decision.entries
                   if e.requirement in (Requirement.DANE_REQUIRED, Requirement.ENCRYPT_ONLY)}
        except DaneError:
            sni = {}
        probed = await asyncio.gather(*(self._probe_host(h, sni.get(h.host))
                                        for h in part.hosts))
        part.hosts = list(probed)

    async def _host(self, host: str) -> MxFacts:
        return await self._hosts.get(host, lambda: self._host_dns(host))

    async def _host_dns(self, host: str) -> MxFacts:
        r = self.resolver
        a, aaaa = await asyncio.gather(r.try_query(host, "A"), r.try_query(host, "AAAA"))
        chain = a.cname_chain or aaaa.cname_chain
        first: Security | None = None
        if chain:
            # RFC 7672 §2.2.3: the alias's own status decides whether DANE can apply.
            first = (await r.try_query(host, "CNAME")).security
        lookup = HostLookup(host, _worst(a.security, aaaa.security), chain, first)
        bases = tlsa_candidates(lookup)
        answers = await _each([r.try_query(tlsa_query_name(b, self.options.smtp_port), "TLSA")
                               for b in bases])
        tlsa = []
        for base, ans in zip(bases, answers, strict=True):
            records: list[TLSARecord] = []
            for rd in ans.records:
                try:
                    records.append(TLSARecord.from_rdata(rd))
                except SmtpTlsError:
                    continue
            tlsa.append(TlsaFacts(base, tlsa_query_name(base, self.options.smtp_port),
                                  ans.security, tuple(records),
                                  None if ans.error is None else str(ans.error)[:300]))
        return MxFacts(host, None, _lookup(a, host), _lookup(aaaa, host), tuple(chain), first,
                       tuple(tlsa))

    async def _probe_host(self, host: MxFacts, sni: str | None) -> MxFacts:
        addresses = list(host.a.records)
        if self.options.ipv6 or not addresses:
            addresses += list(host.aaaa.records)
        addresses = addresses[: self.options.max_addresses]
        server_name = sni or host.host
        probes = await asyncio.gather(*(self._probe(host.host, a, server_name)
                                        for a in addresses))
        return replace(host, probes=tuple(probes), probed=True)

    async def _probe(self, host: str, address: str, server_name: str) -> ProbeFacts:
        key = (host, address, server_name)
        return await self._probes.get(key, lambda: self._per_host.run(
            address, lambda: self._probe_once(host, address, server_name)))

    async def _probe_once(self, host: str, address: str, server_name: str) -> ProbeFacts:
        from smtptls.net.pkix import verify_pkix
        from smtptls.net.smtp import probe_starttls

        async with self._connections:
            result = await probe_starttls(address, host=host, server_name=server_name,
                                          port=self.options.smtp_port,
                                          helo_name=self.options.helo_name,
                                          limits=self.options.probe_limits)
        pkix_ok = reason = rtype = None
        cert = None
        if result.chain_der:
            verdict = verify_pkix(result.chain_der, host, self.options.ca_file, self._clock())
            pkix_ok, reason, rtype = verdict.ok, verdict.reason, verdict.result_type
            cert = cert_facts(result.chain_der[0])
        err = result.error
        return ProbeFacts(address, result.server_name, result.starttls_offered,
                          result.tls_version, result.cipher, result.chain_der,
                          None if err is None else err.stage,
                          None if err is None else str(err)[:300], pkix_ok, reason, rtype,
                          cert)

    # --- MTA-STS ------------------------------------------------------------------------

    async def _policy(self, part: _Partial) -> None:
        txt = part.sts_txt
        if txt is None or txt.failed or not any(is_sts_candidate(t) for t in txt.records):
            return  # RFC 8461 §3.1: no record, no policy to fetch
        url = f"https://mta-sts.{part.domain}/.well-known/mta-sts.txt"
        started = time.monotonic()
        kind = error = tls_reason = None
        status = None
        body = content_type = None
        try:
            async with self._connections:
                if self.options.bulk_dns:
                    result = await self._fetch_shared(part.domain)
                else:
                    result = await fetch_policy(part.domain, config=self.options.fetch,
                                                resolver=self.resolver)
            body, content_type, status = result.text, result.content_type, result.status
        except FetchTlsError as exc:
            kind, error, tls_reason = "tls", str(exc), getattr(exc, "reason", None)
        except FetchStatusError as exc:
            kind, error, status = "status", str(exc), exc.status
        except FetchContentTypeError as exc:
            kind, error = "content-type", str(exc)
        except FetchTooLargeError as exc:
            kind, error = "too-large", str(exc)
        except FetchTimeoutError as exc:
            kind, error = "timeout", str(exc)
        except FetchError as exc:
            kind = "dns" if "cannot resolve" in str(exc) else "fetch"
            error = str(exc)
        except PolicySyntaxError as exc:
            kind, error = "encoding", str(exc)
        except InvalidDomainError as exc:
            kind, error = "fetch", str(exc)
        part.policy = FetchFacts(url, body, status, content_type, kind,
                                 None if error is None else error[:300],
                                 None if tls_reason is None else str(tls_reason),
                                 time.monotonic() - started)

    def _fetch_context(self) -> ssl.SSLContext:
        """One verifying TLS context for every policy fetch of a bulk run."""
        if self._fetch_ctx is None:
            self._fetch_ctx = https_ssl_context(self.options.fetch)
        return self._fetch_ctx

    async def _fetch_shared(self, domain: str) -> FetchResult:
        """:func:`~smtptls.net.https.fetch_policy` with one TLS context for the run: the
        same request, limits and errors, without a context and session per domain."""
        return await fetch_policy_lean(self._fetch_context(), self.resolver, domain,
                                       self.options.fetch)

    # --- TLSRPT -------------------------------------------------------------------------

    async def _tlsrpt(self, part: _Partial) -> None:
        txt = part.tlsrpt_txt
        if txt is None or txt.failed or not self.options.rua_probe:
            return
        candidates = [t for t in txt.records if is_tlsrpt_record(t)]
        if len(candidates) != 1:
            return
        try:
            record = parse_record(candidates[0])
        except SmtpTlsError:
            return
        uris = [u for u in record.report_uris][:MAX_RUA]
        part.rua = await _each([self._rua.get(u, lambda u=u: self._probe_rua(u, part))
                                for u in uris])

    async def _probe_rua(self, uri: str, part: _Partial | None = None) -> RuaFacts:
        scheme = uri.partition(":")[0].lower()
        if scheme == "mailto":
            return await self._probe_mailto(uri, part)
        return await self._probe_https(uri)

    async def _probe_mailto(self, uri: str, part: _Partial | None = None) -> RuaFacts:
        address = uri.partition(":")[2].partition("?")[0]
        domain = address.rpartition("@")[2]
        try:
            domain = normalize_domain(domain)
        except InvalidDomainError:
            return RuaFacts(uri, "mailto", False, f"{domain[:80]!r} is not a mail domain")
        if part is not None and part.mx_answer is not None and domain == part.domain:
            mx = part.mx_answer  # the checked domain itself: its MX answer is at hand
        else:
            mx = await self.resolver.try_query(domain, "MX")
        if mx.error is not None:
            return RuaFacts(uri, "mailto", None, f"MX lookup of {domain} failed: {mx.error}")
        if mx.nxdomain:
            return RuaFacts(uri, "mailto", False, f"{domain} does not exist")
        if mx.records:
            if len(mx.records) == 1 and is_root(mx.records[0].exchange):
                return RuaFacts(uri, "mailto", False, f"{domain} publishes a null MX")
            return RuaFacts(uri, "mailto", True, f"{domain} has MX records")
        a = await self.resolver.try_query(domain, "A")
        if a.records:
            return RuaFacts(uri, "mailto", True, f"{domain} has no MX but an address record")
        return RuaFacts(uri, "mailto", False, f"{domain} has neither MX nor address records")

    def _http_session(self) -> aiohttp.ClientSession:
        import aiohttp  # only rua HTTPS probes need a client session (a bulk run rarely)

        if self._session is None:
            try:
                ctx = ssl.create_default_context(cafile=self.options.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load CA file: {exc}", key="ca_file") from None
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            connector = aiohttp.TCPConnector(resolver=https.DnsAiohttpResolver(self.resolver),
                                             ssl=ctx, use_dns_cache=False, force_close=True,
                                             limit=16)
            timeout = aiohttp.ClientTimeout(total=self.options.timeout,
                                            connect=min(10.0, self.options.timeout))
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  trust_env=False)
        return self._session

    async def _probe_https(self, uri: str) -> RuaFacts:
        # RFC 8460 §5.4: reports are POSTed; a probe must not post one, so HEAD (then
        # OPTIONS) only shows that the host answers over valid TLS.
        try:
            host = urlsplit(uri).hostname or ""
        except ValueError:
            host = ""
        if not host:
            return RuaFacts(uri, "https", False, "no host in the URI")
        import aiohttp

        session = self._http_session()
        status = None
        try:
            async with self._connections:
                for method in ("HEAD", "OPTIONS"):
                    async with session.request(method, uri, allow_redirects=False,
                                               headers={"User-Agent": "smtptls-check"}) as resp:
                        status = resp.status
                    if status not in (405, 501):
                        break
        except aiohttp.ClientConnectorCertificateError as exc:
            return RuaFacts(uri, "https", False,
                            f"TLS certificate not valid: {str(exc.certificate_error)[:160]}")
        except aiohttp.ClientSSLError as exc:
            return RuaFacts(uri, "https", False, f"TLS failure: {str(exc)[:160]}")
        except aiohttp.ClientConnectorError as exc:
            inner = getattr(exc.os_error, "error", None) or exc.os_error
            return RuaFacts(uri, "https", False, f"cannot connect: {str(inner)[:160]}")
        except TimeoutError:
            return RuaFacts(uri, "https", False, "no answer in time")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return RuaFacts(uri, "https", False, f"HTTP failure: {str(exc)[:160]}")
        return RuaFacts(uri, "https", True, f"{host} answered HTTP {status}", status)
