"""``smtptls dane DOMAIN``: DANE for SMTP (RFC 7672) of one destination, checked live."""

from __future__ import annotations

import argparse
import dataclasses
import socket
import textwrap

from smtptls import config
from smtptls.cli._preflight import require_domains, require_resolver
from smtptls.cli.output import EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.engine.dane_destination import DestinationReport, MxReport, check_destination_sync
from smtptls.errors import ConfigError
from smtptls.net.smtp import ProbeLimits

EPILOG = """\
examples:
  smtptls dane example.com
  smtptls dane example.com --no-probe --json
  smtptls dane example.com --nameserver 127.0.0.1:53 --timeout 20

Looks up the MX RRset, each MX host's addresses and its TLSA records with their DNSSEC
status (from the validating resolver's AD bit), decides per MX host what RFC 7672
requires, probes each address with STARTTLS (SNI = TLSA base domain) and verifies the
chain the server sent against the TLSA records.

per-MX verdicts: pass (DANE authenticated) | fail (do not deliver to this MX) |
  encrypt-only (TLSA records all unusable: TLS only) | no-dane | unchecked (--no-probe)
exit status: 0 every MX host has usable TLSA records and passes (with --no-probe: has
  usable, secure TLSA records); 1 a DANE failure, or DANE does not apply to some or all
  MX hosts (verdicts fail, partial, not-applicable); 2 error (bad input, DNS unreachable).
The --json schema is documented in docs/dane.md.
"""


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _wrap(text: str, indent: str) -> str:
    return textwrap.fill(text, width=100, initial_indent=indent,
                         subsequent_indent=indent + "   ", break_on_hyphens=False)


def _record_text(rec: str) -> str:
    head, _, data = rec.rpartition(" ")
    return f"{head} {_short(data, 24)}" if len(data) > 24 else rec


def _print_mx(m: MxReport) -> None:
    pref = "" if m.preference is None else f"{m.preference} "
    print(f"  {pref}{m.host}  [{m.decision.requirement}]  verdict: {m.verdict}")
    if m.cname_chain:
        print(f"    alias of: {' -> '.join(m.cname_chain)}")
    addrs = ", ".join(m.addresses) or "(none)"
    print(f"    addresses ({m.address_security}): {_short(addrs, 76)}")
    for t in m.tlsa:
        records = [_record_text(r.to_text()) for r in t.records]
        shown = "; ".join(records[:3]) + (f" (+{len(records) - 3})" if len(records) > 3 else "")
        print(f"    TLSA {t.name} ({t.security}): {_short(shown or 'no records', 60)}")
    for c in m.checks:
        p = c.probe
        tls = (f"{p.tls_version} {p.cipher}, {len(p.chain_der)} cert(s) sent"
               if p.handshake_done else f"no TLS ({p.error})")
        print(_wrap(f"{c.address}: {tls} -> {c.verdict}", "    "))
    print(_wrap(f"=> {m.reason}", "    "))


def _print_report(r: DestinationReport) -> None:
    print(_wrap(f"{r.domain}: {str(r.verdict).upper()} - {r.reason}", ""))
    if r.decision is not None:
        answer = r.decision.policy or "defer"
        print(_wrap(f"sender: {answer} - {r.decision.reason}", "  "))
    kind = "MX RRset" if r.has_mx else "no MX records (the domain is its own host)"
    print(f"{kind}: {r.mx_security}")
    for m in r.mx:
        _print_mx(m)
    if not r.probed:
        print("(not probed: --no-probe)")


def _run(args: argparse.Namespace) -> int:
    cfg = config.load(args.config)
    dns_cfg = cfg.dns
    if args.nameserver:
        dns_cfg = dataclasses.replace(dns_cfg, nameservers=tuple(args.nameserver))
    limits = ProbeLimits()
    if args.timeout is not None:
        if not 0 < args.timeout <= 600:
            raise ConfigError("--timeout must be between 0 and 600 seconds")
        dns_cfg = dataclasses.replace(dns_cfg, timeout=args.timeout)
        limits = ProbeLimits(connect_timeout=min(limits.connect_timeout, args.timeout),
                             step_timeout=min(limits.step_timeout, args.timeout),
                             total_timeout=args.timeout)
    if not 0 < args.port < 65536:
        raise ConfigError("--port must be 1-65535")
    if args.dnssec_probe is not None:
        dns_cfg = dataclasses.replace(dns_cfg, dnssec_probe=args.dnssec_probe)
    args.domain = require_domains([args.domain])[0]
    require_resolver(dns_cfg)  # DANE rests on the AD bit: refuse a resolver without it
    helo = args.helo_name or socket.getfqdn()
    if "." not in helo or not helo.isascii():
        helo = "localhost"
    report = check_destination_sync(
        args.domain, dns_config=dns_cfg, probe=not args.no_probe, port=args.port,
        limits=limits, helo_name=helo, include_nexthop=args.match_nexthop)
    if args.json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    return EXIT_OK if report.ok else EXIT_NEGATIVE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dane", help="check DANE for SMTP (RFC 7672) of a destination, live",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="DNSSEC status of MX and TLSA records, STARTTLS probe of "
                       "every MX address and TLSA verification of the chain it sends.")
    p.add_argument("domain", metavar="DOMAIN", help="destination (next-hop) domain")
    p.add_argument("--json", action="store_true", help="machine-readable JSON output")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--nameserver", metavar="IP[:PORT]", action="append",
                   help="validating resolver to ask (repeatable; default: config or "
                   "resolv.conf)")
    p.add_argument("--dnssec-probe", metavar="NAME",
                   help="signed name whose answer must carry the AD bit before the resolver "
                   "is trusted (default dns.dnssec_probe, '.'; '' skips the probe)")
    p.add_argument("--no-probe", action="store_true",
                   help="DNS only: do not connect to the MX hosts")
    p.add_argument("--port", type=int, default=25, help="SMTP port (default 25; also the "
                   "TLSA name _PORT._tcp)")
    p.add_argument("--timeout", metavar="S", type=float,
                   help="DNS timeout and total time per STARTTLS probe")
    p.add_argument("--helo-name", metavar="NAME", help="EHLO name (default: this host's FQDN)")
    p.add_argument("--match-nexthop", action="store_true",
                   help="also accept the destination domain as a DANE-TA certificate name "
                   "(RFC 7672 §3.2.2)")
    p.set_defaults(func=_run)
