"""Async DNS lookups with a DNSSEC security status on every answer.

Built on dnspython's :mod:`dns.asyncresolver`. Like Postfix, smtptls does not validate
DNSSEC itself: it asks a configured *validating* resolver with the DO bit and the AD
flag set, and trusts the AD bit of the answer (RFC 7672 §2.1.1, RFC 6840 §5.7)::

    AD set                       -> Security.SECURE
    answer (or NXDOMAIN/NODATA)
    without AD                   -> Security.INSECURE
    SERVFAIL from the resolver   -> DnsBogus        (bogus or indeterminate, §2.1.1)
    timeout                      -> DnsTimeout      (indeterminate)
    anything else                -> DnsError        (indeterminate)

A negative answer (NXDOMAIN or NODATA) is not an error: it is an :class:`Answer` with no
records and its own security status, since "provably absent" and "absent, unsigned"
mean different things to DANE. :meth:`DnsResolver.try_query` returns failures as data
too (security ``BOGUS`` / ``INDETERMINATE`` and the error attached).

CNAMEs are followed by the recursive resolver, as DNS does (RFC 8461 §3.1, A4); the
chain it returned is recorded in :attr:`Answer.cname_chain` and bounded by
``DnsConfig.max_cname_chain``. Every RRset is bounded by ``DnsConfig.max_records``.

The DO bit brings the RRSIGs along; :attr:`Answer.sig_expires` keeps only the earliest
Signature Expiration among those covering the answer RRset (RFC 4034 §3.1.5), so that a
monitor can warn before the signatures run out; the signatures themselves are dropped.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import idna

from smtptls.config import DnsConfig, parse_hostport
from smtptls.dnssec import Security
from smtptls.errors import (
    ConfigError,
    DnsBogus,
    DnsError,
    DnsLimitError,
    DnsTimeout,
    InvalidDomainError,
    SmtpTlsError,
)

__all__ = [
    "Answer",
    "DnsResolver",
    "InvalidDomainError",
    "MxHost",
    "TlsaRdata",
    "normalize_domain",
    "run_sync",
]

# RFC 1035 §2.3.4: 63 octets per label, 255 octets per name on the wire (253 in text).
MAX_LABEL = 63
MAX_NAME = 253
# RFC 1035 §3.3.14 / RFC 8461 §3.1: a TXT record's strings are concatenated; a DNS
# message is at most 65535 octets, so this bounds one record in practice.
MAX_TXT_LENGTH = 65535
_EDNS_PAYLOAD = 1232  # DNS flag day 2020 recommendation; TCP fallback on truncation

_RDTYPES = ("TXT", "MX", "A", "AAAA", "TLSA", "CNAME")


# --- names ---------------------------------------------------------------------------


def _ldh_label(label: str) -> bool:
    # RFC 1123 §2.1 / RFC 5890 §2.3.1: letters, digits, hyphen; no leading/trailing hyphen.
    # Underscore is accepted for service labels such as _mta-sts and _25._tcp (RFC 8552).
    if not label or len(label) > MAX_LABEL:
        return False
    if label[0] == "-" or label[-1] == "-":
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in label)


#: An already normalised name (lower-case LDH labels of 1 to 63 octets, underscore
#: allowed): what the label walk of :func:`normalize_domain` returns unchanged.
_NORMALISED = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
                         r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def normalize_domain(domain: str) -> str:
    """Return the lower-case A-label form of ``domain`` without a trailing dot.

    Rejects before any I/O what cannot be a policy domain or host name: an empty
    name, a leading dot, empty labels, labels over 63 octets, names over 253 octets,
    characters outside letters/digits/hyphen (underscore allowed for service labels),
    and IP address literals. U-labels are converted with IDNA 2008 (RFC 5891).
    Raises :class:`InvalidDomainError`.

    A name already in that form (but for a final dot), as DNS answers and normalised
    lists carry them, is returned without the label walk; an all-numeric last label
    (RFC 3696 §2; an IPv4 literal has one) always takes the walk, which refuses it.
    """
    if isinstance(domain, str):
        text = domain[:-1] if domain.endswith(".") else domain
        if len(text) <= MAX_NAME and _NORMALISED.fullmatch(text) \
                and not text.rpartition(".")[2].isdigit():
            return text
    return _normalize_domain_walk(domain)


def _normalize_domain_walk(domain: str) -> str:
    """:func:`normalize_domain` label by label (the reference its quick form is tested
    against)."""
    if not isinstance(domain, str):
        raise InvalidDomainError(f"not a domain name: {domain!r}")
    text = domain.strip()
    if len(text) > 4 * MAX_NAME:
        raise InvalidDomainError("domain name too long", name=text[:64] + "...")
    if text.endswith("."):
        text = text[:-1]  # the root label is implied
    if not text:
        raise InvalidDomainError("empty domain name", name=domain)
    if text.startswith("."):
        raise InvalidDomainError("domain name starts with a dot", name=domain)
    labels = text.split(".")
    if any(not label for label in labels):
        raise InvalidDomainError("domain name has an empty label", name=domain)
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        raise InvalidDomainError("an IP address is not a domain name", name=domain)
    out: list[str] = []
    for label in labels:
        if label.isascii():
            ascii_label = label.lower()
        else:
            try:
                ascii_label = idna.encode(label, uts46=True).decode("ascii")
            except (idna.IDNAError, UnicodeError) as exc:
                raise InvalidDomainError(f"invalid internationalized label {label!r}",
                                         name=domain) from exc
        if not _ldh_label(ascii_label):
            raise InvalidDomainError(f"invalid label {label!r}", name=domain)
        out.append(ascii_label)
    result = ".".join(out)
    if len(result) > MAX_NAME:
        raise InvalidDomainError("domain name longer than 253 octets", name=domain)
    if result.rsplit(".", 1)[-1].isdigit():
        # RFC 3696 §2: a top-level label is never all-numeric.
        raise InvalidDomainError("all-numeric top-level label", name=domain)
    return result


# --- answer values ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MxHost:
    """One MX record: preference and exchange (lower-case, no trailing dot)."""

    preference: int
    exchange: str

    def to_text(self) -> str:
        return f"{self.preference} {self.exchange}."


@dataclass(frozen=True, slots=True)
class TlsaRdata:
    """One TLSA record's fields as received (RFC 6698 §2.1); judged by :mod:`smtptls.dane`."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    def to_text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"


@dataclass(frozen=True, slots=True)
class Answer:
    """The result of one lookup.

    ``records`` holds ``str`` for TXT (strings of one record concatenated, RFC 8461
    §3.1), A, AAAA and CNAME; :class:`MxHost` for MX; :class:`TlsaRdata` for TLSA.
    An empty ``records`` is a negative answer: ``nxdomain`` tells NXDOMAIN from NODATA.
    ``cname_chain`` lists the names the resolver followed, starting with the query
    name's target (empty when there was no CNAME). ``ttl`` is the smallest TTL along
    the chain (0 for negative answers without an SOA). ``sig_expires`` is the earliest
    RRSIG expiration covering the answer RRset (RFC 4034 §3.1.5); None when the RRset
    came unsigned, negative, or from a source that does not carry signatures. It is not
    part of equality: a re-signed RRset is the same answer.
    """

    name: str
    rdtype: str
    records: tuple[Any, ...]
    security: Security
    cname_chain: tuple[str, ...] = ()
    ttl: int = 0
    nxdomain: bool = False
    error: DnsError | None = field(default=None, compare=False)
    sig_expires: dt.datetime | None = field(default=None, compare=False)

    @property
    def canonical_name(self) -> str:
        return self.cname_chain[-1] if self.cname_chain else self.name

    @property
    def secure(self) -> bool:
        return self.security is Security.SECURE

    def __bool__(self) -> bool:
        return bool(self.records)


def _name_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _rdata_value(rdtype: str, rdata: Any) -> Any:
    if rdtype == "TXT":
        # RFC 8461 §3.1 (and RFC 7208 §3.3 alike): the character-strings of one TXT
        # record are concatenated without separators.
        raw = b"".join(rdata.strings)
        return raw.decode("utf-8", errors="replace")
    if rdtype == "MX":
        return MxHost(int(rdata.preference), _name_text(rdata.exchange))
    if rdtype == "TLSA":
        return TlsaRdata(int(rdata.usage), int(rdata.selector), int(rdata.mtype),
                         bytes(rdata.cert))
    if rdtype == "CNAME":
        return _name_text(rdata.target)
    return rdata.to_text()  # A, AAAA: the address in presentation form


def _security_of(response: dns.message.Message) -> Security:
    # RFC 6840 §5.7 / RFC 7672 §2.1.1: a validating resolver sets AD only on data it
    # validated; we trust it because we asked a configured, trusted resolver.
    return Security.SECURE if response.flags & dns.flags.AD else Security.INSECURE


_SERIAL = 2**32


def sig_expiration(expiration: int, inception: int) -> dt.datetime:
    """An RRSIG's Signature Expiration as a UTC time (pure).

    RFC 4034 §3.1.5: both fields are 32-bit seconds since 1970 compared in serial number
    arithmetic (RFC 1982), so an expiration "below" the inception has wrapped past 2106;
    it is read as the later time.
    """
    if expiration < inception:
        expiration += _SERIAL
    return dt.datetime.fromtimestamp(expiration, dt.UTC)


def earliest_signature(response: dns.message.Message, rrset: dns.rrset.RRset
                       ) -> dt.datetime | None:
    """The earliest expiration of the RRSIGs covering ``rrset`` in ``response``'s
    answer section (pure); None when there is none (unsigned zone, no DO)."""
    try:
        sigs = response.find_rrset(response.answer, rrset.name, rrset.rdclass,
                                   dns.rdatatype.RRSIG, rrset.rdtype)
    except KeyError:
        return None
    times = [sig_expiration(int(sig.expiration), int(sig.inception)) for sig in sigs]
    return min(times) if times else None


def _soa_ttl(response: dns.message.Message) -> int:
    # RFC 2308 §5: negative answers are cached for min(SOA TTL, SOA MINIMUM).
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(min(rrset.ttl, rrset[0].minimum))
    return 0


def answer_from_response(
    qname: str, rdtype: str, response: dns.message.Message, *, config: DnsConfig
) -> Answer:
    """Build an :class:`Answer` from a resolver's response message (pure).

    Raises :class:`DnsBogus` for SERVFAIL, :class:`DnsError` for other error rcodes,
    and :class:`DnsLimitError` when the CNAME chain or the RRset is over its bound.
    """
    rcode = response.rcode()
    if rcode == dns.rcode.SERVFAIL:
        raise DnsBogus("resolver answered SERVFAIL (DNSSEC bogus or indeterminate)",
                       name=qname, rdtype=rdtype)
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        raise DnsError(f"resolver answered {dns.rcode.to_text(rcode)}", name=qname,
                       rdtype=rdtype)
    security = _security_of(response)
    wanted = dns.rdatatype.from_text(rdtype)
    if not isinstance(response, dns.message.QueryMessage):
        raise DnsError("response is not a query response", name=qname, rdtype=rdtype)
    try:
        chain = response.resolve_chaining()
    except (dns.exception.DNSException, KeyError, ValueError) as exc:
        raise DnsError(f"malformed response: {exc}", name=qname, rdtype=rdtype) from exc
    cnames = tuple(_name_text(rrset[0].target) for rrset in chain.cnames if len(rrset))
    if len(cnames) > config.max_cname_chain:
        raise DnsLimitError(
            f"CNAME chain longer than {config.max_cname_chain}", name=qname, rdtype=rdtype
        )
    rrset = chain.answer
    if rcode == dns.rcode.NXDOMAIN or rrset is None or rrset.rdtype != wanted:
        return Answer(qname, rdtype, (), security, cnames, _soa_ttl(response),
                      nxdomain=rcode == dns.rcode.NXDOMAIN)
    if len(rrset) > config.max_records:
        raise DnsLimitError(
            f"{len(rrset)} {rdtype} records, more than the bound of {config.max_records}",
            name=qname, rdtype=rdtype,
        )
    records = tuple(_rdata_value(rdtype, rd) for rd in rrset)
    if rdtype == "MX":
        records = tuple(sorted(records, key=lambda mx: (mx.preference, mx.exchange)))
    elif rdtype == "TXT" and any(len(r) > MAX_TXT_LENGTH for r in records):
        raise DnsLimitError("TXT record longer than 65535 characters", name=qname,
                            rdtype=rdtype)
    return Answer(qname, rdtype, records, security, cnames, int(chain.minimum_ttl),
                  sig_expires=earliest_signature(response, rrset))


# --- the resolver ----------------------------------------------------------------------


def _nameservers(config: DnsConfig) -> list[dns.nameserver.Nameserver]:
    servers: list[dns.nameserver.Nameserver] = []
    for entry in config.nameservers:
        host, port = parse_hostport(entry, config.port)
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ConfigError(f"nameserver must be an IP address, got {entry!r}",
                              key="dns.nameservers") from exc
        servers.append(dns.nameserver.Do53Nameserver(host, port))
    return servers


class DnsResolver:
    """Async stub resolver asking a (validating) recursive resolver.

    ``DnsResolver(DnsConfig(nameservers=("127.0.0.1",), port=5353))``; empty
    ``nameservers`` uses the system's resolv.conf.
    """

    def __init__(self, config: DnsConfig | None = None) -> None:
        self.config = config or DnsConfig()
        try:
            resolver = dns.asyncresolver.Resolver(configure=not self.config.nameservers)
        except dns.exception.DNSException as exc:
            raise DnsError(f"no resolver configuration: {exc}") from exc
        if self.config.nameservers:
            resolver.nameservers = _nameservers(self.config)
        elif self.config.port != 53:
            resolver.port = self.config.port
        resolver.timeout = self.config.timeout
        resolver.lifetime = self.config.timeout
        # RFC 4035 §3.2.1 / RFC 6840 §5.7: DO bit in EDNS and the AD bit in the query so
        # the validating resolver reports validation in AD.
        resolver.use_edns(0, dns.flags.DO, _EDNS_PAYLOAD)
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.search = []
        resolver.cache = None
        self._resolver = resolver

    async def query(self, name: str, rdtype: str) -> Answer:
        """Look ``name`` up; negative answers are empty :class:`Answer` values.

        Raises :class:`DnsTimeout`, :class:`DnsBogus`, :class:`DnsLimitError`,
        :class:`InvalidDomainError` or :class:`DnsError`.
        """
        rdtype = rdtype.upper()
        if rdtype not in _RDTYPES:
            raise DnsError(f"unsupported record type {rdtype}", name=name, rdtype=rdtype)
        qname = normalize_domain(name)
        try:
            result = await self._resolver.resolve(
                qname + ".", rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as exc:
            responses = exc.kwargs.get("responses") or {}
            response = next(iter(responses.values()), None)
            if response is None:  # pragma: no cover - dnspython always records it
                return Answer(qname, rdtype, (), Security.INSECURE, nxdomain=True)
            return answer_from_response(qname, rdtype, response, config=self.config)
        except dns.resolver.NoNameservers as exc:
            raise _from_no_nameservers(qname, rdtype, exc) from exc
        except dns.exception.Timeout as error:
            raise DnsTimeout(f"no answer within {self.config.timeout:g} s", name=qname,
                             rdtype=rdtype) from error
        except dns.resolver.YXDOMAIN as error:
            raise DnsError("name too long after DNAME substitution", name=qname,
                           rdtype=rdtype) from error
        except dns.exception.DNSException as exc:
            raise DnsError(f"lookup failed: {exc}", name=qname, rdtype=rdtype) from exc
        except OSError as exc:
            raise DnsError(f"lookup failed: {exc.strerror or exc}", name=qname,
                           rdtype=rdtype) from exc
        return answer_from_response(qname, rdtype, result.response, config=self.config)

    async def try_query(self, name: str, rdtype: str) -> Answer:
        """Like :meth:`query`, but DNS failures come back as data, never raised.

        SERVFAIL gives ``Security.BOGUS``; timeouts and other failures give
        ``Security.INDETERMINATE`` (RFC 7672 §2.1.1); ``error`` holds the exception.
        """
        try:
            return await self.query(name, rdtype)
        except DnsBogus as exc:
            return Answer(str(name), rdtype.upper(), (), Security.BOGUS, error=exc)
        except DnsError as exc:
            return Answer(str(name), rdtype.upper(), (), Security.INDETERMINATE, error=exc)

    async def txt(self, name: str) -> Answer:
        return await self.query(name, "TXT")

    async def mx(self, name: str) -> Answer:
        return await self.query(name, "MX")

    async def a(self, name: str) -> Answer:
        return await self.query(name, "A")

    async def aaaa(self, name: str) -> Answer:
        return await self.query(name, "AAAA")

    async def tlsa(self, name: str) -> Answer:
        return await self.query(name, "TLSA")

    async def addresses(self, name: str) -> tuple[Answer, Answer]:
        """A and AAAA for ``name``, queried concurrently."""
        a, aaaa = await asyncio.gather(self.a(name), self.aaaa(name))
        return a, aaaa

    def describe(self) -> str:
        """The resolver(s) asked, for messages: ``127.0.0.1:53`` or ``resolv.conf (…)``."""
        if self.config.nameservers:
            return ", ".join(self.config.nameservers)
        servers = [str(getattr(n, "address", n)) for n in self._resolver.nameservers]
        return "resolv.conf (" + (", ".join(servers[:3]) or "no nameserver") + ")"

    async def probe(self, name: str, *, validating: bool = True) -> None:
        """Raise :class:`DnsError` unless the resolver answers (and validates DNSSEC).

        Asks for the NS RRset of ``name``, a DNSSEC-signed zone (the root ``.`` on the
        Internet, as Postfix's ``dnssec_probe = ns:.``), and with ``validating``
        requires the AD bit: a resolver that does not answer, refuses, or does not
        validate would make every DNSSEC status "indeterminate" or "insecure" (RFC 7672
        §2.1.1), so callers stop before judging anything with it.
        """
        where = self.describe()
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise ConfigError(f"bad DNSSEC probe name {name!r}: {exc}",
                              key="dns.dnssec_probe") from exc
        try:
            result = await self._resolver.resolve(qname, "NS", search=False,
                                                  raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as error:
            raise DnsError(f"resolver {where} says the probe name {name} does not exist; "
                           "set dns.dnssec_probe to a signed zone") from error
        except dns.resolver.NoNameservers as exc:
            cause = _from_no_nameservers(name, "NS", exc)
            raise DnsError(f"resolver {where} gave no usable answer for the probe "
                           f"{name} NS: {cause.message}") from exc
        except dns.exception.Timeout as error:
            raise DnsTimeout(f"resolver {where} did not answer within "
                             f"{self.config.timeout:g} s") from error
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsError(f"resolver {where} cannot be asked: {exc}") from exc
        if validating and not result.response.flags & dns.flags.AD:
            raise DnsError(f"resolver {where} does not validate DNSSEC (no AD bit on the "
                           f"signed name {name}); use a validating resolver such as "
                           "Unbound, or set dns.dnssec_probe")


def _from_no_nameservers(qname: str, rdtype: str, exc: Exception) -> DnsError:
    errors = (exc.kwargs.get("errors") or []) if hasattr(exc, "kwargs") else []
    for entry in errors:
        response = entry[4] if len(entry) > 4 else None
        if response is not None and response.rcode() == dns.rcode.SERVFAIL:
            # RFC 7672 §2.1.1: a validating resolver answers SERVFAIL for bogus data;
            # a stub cannot tell that from other indeterminate failures.
            return DnsBogus("resolver answered SERVFAIL (DNSSEC bogus or indeterminate)",
                            name=qname, rdtype=rdtype)
    for entry in errors:
        if isinstance(entry[3], dns.exception.Timeout):
            return DnsTimeout("no answer in time", name=qname, rdtype=rdtype)
    reasons = "; ".join(str(e[3]) for e in errors[:3]) or "no nameserver answered"
    return DnsError(f"lookup failed: {reasons}", name=qname, rdtype=rdtype)


T = TypeVar("T")


def run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run one coroutine to completion from synchronous code (CLI, scripts).

    ``run_sync(lambda: DnsResolver(cfg).txt("_mta-sts.example.com"))``. Must not be
    called from inside a running event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise SmtpTlsError("run_sync called from a running event loop; await instead")

    async def _main() -> T:
        return await factory()

    return asyncio.run(_main())
