"""``--lookup NAME`` for ``smtptls tlsa check``: the published TLSA RRset from DNS.

Instead of a records file, ``tlsa check CERT --lookup mx.example.com`` reads the RRset
at ``_25._tcp.mx.example.com`` from the (validating) resolver, together with its
DNSSEC status (RFC 7672 §2.1.1), and hands the records to the offline check in the
same ``(owner, record)`` form as :func:`smtptls.dane.tlsa.parse_records`.

A bogus or indeterminate answer is an error (those records must not be used, RFC 7672
§2.1.2); an empty answer is an error too (nothing to check). An insecure answer is
returned with ``security == "insecure"``: the records can be compared with the
certificate, but a sender would not use them (RFC 7672 §2.2.3), and callers say so.

Wiring in ``smtptls.cli.tlsa`` (check sub-command)::

    from smtptls.cli import _tlsa_lookup
    _tlsa_lookup.add_arguments(c)            # --lookup, --port, --nameserver, --timeout
    # make --records optional: c.add_argument("--records", ..., required=False)
    ...
    if args.lookup:
        found = _tlsa_lookup.lookup_from_args(args)
        parsed = list(found.parsed)          # instead of parse_records(file text)
    # JSON: add "lookup": found.to_dict(); text: print(found.summary())
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from smtptls import config
from smtptls.config import DnsConfig
from smtptls.dane.decide import tlsa_query_name
from smtptls.dane.tlsa import TLSARecord
from smtptls.dnssec import Security
from smtptls.errors import ConfigError, DaneError, DnsError
from smtptls.net.dns import DnsResolver, run_sync

__all__ = ["LookedUp", "add_arguments", "lookup", "lookup_from_args"]


@dataclass(frozen=True, slots=True)
class LookedUp:
    """A TLSA RRset as DNS returned it."""

    name: str  # _25._tcp.<host>
    security: Security
    records: tuple[TLSARecord, ...]
    cname_chain: tuple[str, ...] = ()
    ttl: int | None = None  # the RRset's TTL as the resolver gave it

    @property
    def parsed(self) -> list[tuple[str | None, TLSARecord]]:
        """The ``(owner, record)`` pairs ``parse_records`` would give for a zone file."""
        return [(self.name + ".", r) for r in self.records]

    def summary(self) -> str:
        text = f"{self.name}: {len(self.records)} TLSA record(s), DNSSEC {self.security}"
        if self.security is not Security.SECURE:
            # RFC 7672 §2.2.3: only DNSSEC-validated TLSA records are used by senders.
            text += " (not validated: senders would not use these records for DANE)"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "security": str(self.security),
                "cname_chain": list(self.cname_chain), "ttl": self.ttl}


async def lookup(host: str, *, dns_config: DnsConfig | None = None,
                 port: int = 25) -> LookedUp:
    """The TLSA RRset at ``_<port>._tcp.<host>`` with its DNSSEC status.

    Raises :class:`DnsError` (bogus, indeterminate, unreachable resolver) and
    :class:`DaneError` (no TLSA records there).
    """
    name = tlsa_query_name(host, port)
    answer = await DnsResolver(dns_config).try_query(name, "TLSA")
    if answer.security in (Security.BOGUS, Security.INDETERMINATE):
        # RFC 7672 §2.1.2: such records must not be used; say so instead of checking.
        err = answer.error
        raise DnsError(f"TLSA lookup {name} is {answer.security}: the records cannot be "
                       f"used{'' if err is None else f' ({err})'}", name=name, rdtype="TLSA")
    if not answer.records:
        raise DaneError(f"no TLSA records at {name} (DNSSEC {answer.security})")
    records = tuple(TLSARecord.from_rdata(r) for r in answer.records)
    return LookedUp(name, answer.security, records, answer.cname_chain,
                    int(answer.ttl) if answer.ttl else None)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tlsa check`` for reading the records from DNS."""
    parser.add_argument("--lookup", metavar="HOST",
                        help="read the TLSA records of _PORT._tcp.HOST from DNS instead of "
                        "--records (DNSSEC status reported)")
    parser.add_argument("--port", type=int, default=25,
                        help="port label of the TLSA name for --lookup (default 25)")
    parser.add_argument("--nameserver", metavar="IP[:PORT]", action="append",
                        help="validating resolver for --lookup (repeatable)")
    parser.add_argument("--timeout", metavar="S", type=float, help="DNS timeout for --lookup")


def lookup_from_args(args: argparse.Namespace) -> LookedUp:
    """Run :func:`lookup` for parsed ``tlsa check`` arguments (blocking)."""
    dns_cfg = config.load(getattr(args, "config", None)).dns
    if getattr(args, "nameserver", None):
        dns_cfg = dataclasses.replace(dns_cfg, nameservers=tuple(args.nameserver))
    if getattr(args, "timeout", None) is not None:
        if not 0 < args.timeout <= 600:
            raise ConfigError("--timeout must be between 0 and 600 seconds")
        dns_cfg = dataclasses.replace(dns_cfg, timeout=args.timeout)
    port = getattr(args, "port", 25)
    return run_sync(lambda: lookup(args.lookup, dns_config=dns_cfg, port=port))
