"""Declarative description of what the lab publishes and serves.

A test builds :class:`LabDomain` values (with :class:`LabMx` hosts and an optional
:class:`PolicyHost`) and hands them to ``lab.add``; the lab turns them into DNS records
(signed or not, by the zone the name falls in), certificates, an HTTPS policy host and
STARTTLS receivers. The values are frozen: ``lab.add`` returns copies with the assigned
addresses filled in.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "CertKind",
    "LabDomain",
    "LabError",
    "LabMx",
    "LabZone",
    "PolicyHost",
    "ZoneKind",
    "normalize_name",
]

MAX_NAME = 253
MAX_TXT_STRING = 255


class LabError(Exception):
    """The lab cannot do what was asked (bad model, a daemon did not start, ...)."""


class CertKind(enum.StrEnum):
    """Certificates the lab CA issues on demand."""

    GOOD = "good"                    # lab root -> leaf, right name, valid now
    WRONG_NAME = "wrong-name"        # lab root -> leaf for another name
    EXPIRED = "expired"              # lab root -> leaf whose notAfter is in the past
    NOT_YET_VALID = "not-yet-valid"  # lab root -> leaf whose notBefore is in the future
    SELF_SIGNED = "self-signed"      # leaf signed by its own key, right name
    INTERMEDIATE = "intermediate"    # lab root -> lab intermediate -> leaf; both sent
    UNTRUSTED = "untrusted"          # another CA (not in lab.ca_file) -> leaf, right name
    EXPIRING = "expiring"            # lab root -> leaf, right name, notAfter in 5 days


class ZoneKind(enum.StrEnum):
    """How a lab zone is published, which decides the DNSSEC status of its names."""

    SECURE = "secure"      # signed, DS in the parent: validator answers with AD
    INSECURE = "insecure"  # unsigned delegation, no DS: answers without AD
    BOGUS = "bogus"        # signed, DS in the parent, every non-DNSKEY RRSIG corrupted
    EXPIRED = "expired"    # signed, DS in the parent, every RRSIG expired two days ago
    EXPIRING = "expiring"  # signed, DS in the parent, every RRSIG expires in three days


def _member(enum_cls: type[enum.StrEnum], value: object, what: str) -> enum.StrEnum:
    try:
        return enum_cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum_cls)
        raise LabError(f"unknown {what} {value!r} (one of: {choices})") from None


def normalize_name(name: str) -> str:
    """Lower case, no trailing dot; raises :class:`LabError` for an unusable name."""
    if not isinstance(name, str):
        raise LabError(f"name must be a string, got {type(name).__name__}")
    n = name.strip().rstrip(".").lower()
    if not n or len(n) > MAX_NAME or any(not label for label in n.split(".")):
        raise LabError(f"not a usable DNS name: {name!r}")
    return n


@dataclass(frozen=True, slots=True)
class LabZone:
    """An extra zone below ``test`` (the built-in ones are created at start)."""

    name: str
    kind: ZoneKind = ZoneKind.SECURE

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_name(self.name))
        object.__setattr__(self, "kind", _member(ZoneKind, self.kind, "zone kind"))


@dataclass(frozen=True, slots=True)
class LabMx:
    """One MX host: an A record, a STARTTLS receiver on ``address:port`` and TLSA records.

    ``tlsa`` holds TLSA rdata strings for ``_<port>._tcp.<host>``; the last field may be
    ``auto``: the lab fills in the digest (or full data for matching type 0) of the
    certificate this receiver sends — the leaf for usages 1 and 3, the issuing CA for
    usages 0 and 2 (the intermediate for ``cert="intermediate"``, the lab root for the
    other CA-issued kinds, the other CA for ``untrusted``, the leaf for ``self-signed``).
    ``full_chain=True`` makes the receiver also send that issuing CA certificate (a
    DANE-TA(2) trust anchor must be in the chain, RFC 7672 §3.1.2).
    ``publish_mx=False`` publishes only the address (and TLSA) records, for a domain
    reached through its own A record (RFC 7672 §2.2.2 non-MX destination).
    ``data_reply`` is the reply to DATA (default ``250 OK``), e.g. ``"451 4.3.0 later"``.
    ``address`` is assigned by the lab; leave it None.
    """

    host: str
    pref: int = 10
    cert: CertKind | str = CertKind.GOOD
    starttls: bool = True
    tlsa: Sequence[str] = ()
    port: int = 25
    full_chain: bool = False
    publish_mx: bool = True
    data_reply: str | None = None
    address: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", normalize_name(self.host))
        object.__setattr__(self, "cert", _member(CertKind, self.cert, "cert kind"))
        if isinstance(self.tlsa, str):
            raise LabError("LabMx.tlsa is a list of rdata strings, not one string")
        object.__setattr__(self, "tlsa", tuple(self.tlsa))
        if not 0 <= self.pref <= 65535:
            raise LabError(f"MX preference out of range: {self.pref}")
        if not 1 <= self.port <= 65535:
            raise LabError(f"port out of range: {self.port}")


@dataclass(frozen=True, slots=True)
class PolicyHost:
    """What ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` answers.

    ``status`` and ``content_type`` (None: no Content-Type header) are sent as given;
    ``redirect_to`` adds a ``Location`` header (status 301 unless ``status`` is already
    a 3xx). ``body_size`` pads the body with comment-like filler lines to exactly that
    many bytes; ``chunked`` sends it with chunked transfer coding instead of a
    Content-Length. ``delay`` sleeps before the response head, ``body_delay`` between
    body chunks of ``chunk_size`` bytes (a trickling server). ``abort_after`` closes the
    connection after that many body bytes. ``headers`` are extra response headers.
    ``cert`` is the certificate kind presented for ``mta-sts.<domain>``; ``reachable=False``
    points the name at a lab address where nothing listens (connection refused).
    """

    body: str | bytes = ""
    status: int = 200
    content_type: str | None = "text/plain"
    redirect_to: str | None = None
    delay: float = 0.0
    cert: CertKind | str = CertKind.GOOD
    body_size: int | None = None
    chunked: bool = False
    body_delay: float = 0.0
    chunk_size: int = 1024
    abort_after: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    reachable: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "cert", _member(CertKind, self.cert, "cert kind"))
        if not 100 <= self.status <= 599:
            raise LabError(f"HTTP status out of range: {self.status}")
        if self.chunk_size < 1:
            raise LabError("chunk_size must be positive")
        object.__setattr__(self, "headers", dict(self.headers))

    def body_bytes(self) -> bytes:
        """The exact body the host sends (before any chunked coding)."""
        raw = self.body.encode() if isinstance(self.body, str) else bytes(self.body)
        if self.body_size is None:
            return raw
        if self.body_size <= len(raw):
            return raw[: self.body_size]
        filler_line = b"# filler " + b"x" * 54 + b"\n"  # 64 bytes
        missing = self.body_size - len(raw)
        reps = missing // len(filler_line) + 1
        return raw + (filler_line * reps)[:missing]


TxtValue = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LabDomain:
    """A mail domain: MX hosts, TXT records, an MTA-STS policy host, raw extra records.

    ``txt`` maps a label relative to the domain (``"_mta-sts"``, ``"_smtp._tls"``,
    ``""`` for the domain itself) to a list of TXT records; a record given as a tuple
    is published as several character-strings of one record (RFC 8461 §3.1 concatenation),
    a string longer than 255 octets is split into 255-octet strings.
    ``records`` are extra ``(owner, type, rdata)`` triples with absolute owner names and
    absolute names in rdata (``("alias.secure.test", "CNAME", "mx1.secure.test.")``).
    """

    name: str
    mx: Sequence[LabMx] = ()
    txt: Mapping[str, Sequence[TxtValue]] = field(default_factory=dict)
    policy: PolicyHost | None = None
    records: Sequence[tuple[str, str, str]] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", normalize_name(self.name))
        mxs = tuple(self.mx)
        for m in mxs:
            if not isinstance(m, LabMx):
                raise LabError(f"{self.name}: mx entries must be LabMx, got {m!r}")
        object.__setattr__(self, "mx", mxs)
        txt: dict[str, tuple[TxtValue, ...]] = {}
        for label, values in dict(self.txt).items():
            if isinstance(values, str | bytes):
                raise LabError(f"{self.name}: txt[{label!r}] must be a list of records")
            txt[label.strip(".").lower()] = tuple(values)
        object.__setattr__(self, "txt", txt)
        recs = []
        for rec in self.records:
            if len(rec) != 3:
                raise LabError(f"{self.name}: records are (owner, type, rdata) triples")
            owner, rtype, rdata = rec
            recs.append((normalize_name(owner), str(rtype).upper(), str(rdata)))
        object.__setattr__(self, "records", tuple(recs))

    @property
    def policy_host(self) -> str:
        return f"mta-sts.{self.name}"

    def with_addresses(self, addresses: Mapping[str, str]) -> LabDomain:
        """A copy whose MX hosts carry the addresses the lab assigned."""
        mxs = tuple(dataclasses.replace(m, address=addresses[m.host]) for m in self.mx)
        return dataclasses.replace(self, mx=mxs)
