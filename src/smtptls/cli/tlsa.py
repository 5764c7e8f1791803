"""``smtptls tlsa generate|check``: TLSA records from certificates, offline.

``generate`` prints zone-file lines for a certificate (or its chain, or a key);
``check`` says which published records match which certificate of a chain, and with
``--host`` runs the full DANE verification (RFC 7672 §3) against those names.
Neither command touches the network.

JSON output (``--json``), stable:

- generate: ``{"records": [{"owner", "usage", "selector", "mtype", "data", "rdata",
  "line", "source": {"depth", "subject"}}]}``
- check: ``{"ok", "records": [{"rdata", "owner", "usable", "unusable_reason",
  "ignored_by_agility", "matches": [{"depth", "subject", "how"}]}], "verdict":
  null | {"ok", "reason", "detail", "depth", "matched", "result_type"}}``
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from smtptls.cli import _tlsa_lookup
from smtptls.cli.output import EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.dane.publish import load_certificates, rollover_advice, tlsa_from_cert
from smtptls.dane.tlsa import MatchingType, TLSARecord, Usage, parse_records, select_usable
from smtptls.dane.tlsa import unusable_reason as _unusable
from smtptls.dane.verify import _Cert, _record_anchor, _signed_by, verify_chain
from smtptls.errors import DaneError

MAX_FILE = 1024 * 1024


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_FILE + 1)
    except OSError as exc:
        raise DaneError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > MAX_FILE:
        raise DaneError(f"{what} {path} is larger than {MAX_FILE} octets")
    return data


def _owner(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip()
    if not name.startswith("_"):
        # The port and protocol labels of SMTP (RFC 7672 §2.2.3).
        name = f"_25._tcp.{name}"
    return name if name.endswith(".") else name + "."


def _subject(cert: x509.Certificate | None) -> str:
    if cert is None:
        return "?"
    try:
        return cert.subject.rfc4514_string() or "<empty subject>"
    except Exception:  # odd encodings in real certificates
        return "?"


def _generate(args: argparse.Namespace) -> int:
    data = _read(args.cert, "certificate file")
    certs = load_certificates(data)
    usage = Usage(args.usage)
    if usage in (Usage.PKIX_TA, Usage.PKIX_EE):
        print("smtptls: warning: PKIX usages 0 and 1 are unusable for SMTP "
              "(RFC 7672 §3.1.3); use 3 (DANE-EE) or 2 (DANE-TA)", file=sys.stderr)
    sources: list[tuple[int, str, Any]] = []
    if usage in (Usage.DANE_EE, Usage.PKIX_EE):
        if certs:
            sources.append((0, _subject(certs[0]), certs[0]))
        else:
            sources.append((0, "public key", data))  # a key file: tlsa_from_cert reads it
    else:
        if len(certs) < 2:
            raise DaneError("usage 2 (trust anchor) needs the issuer certificate(s): give "
                            "the chain the server sends, leaf first, in one PEM file")
        sources.extend((i, _subject(c), c) for i, c in enumerate(certs) if i > 0)
    owner = _owner(args.name)
    rows = []
    for depth, subject, source in sources:
        rec = tlsa_from_cert(source, args.usage, args.selector, args.mtype)
        line = f"{owner} IN TLSA {rec.to_text()}" if owner else rec.to_text()
        rows.append({"owner": owner, "usage": int(rec.usage), "selector": int(rec.selector),
                     "mtype": int(rec.mtype), "data": rec.data.hex(), "rdata": rec.to_text(),
                     "line": line, "source": {"depth": depth, "subject": subject}})
    if args.json:
        print_json({"records": rows})
    else:
        for row in rows:
            print(f"; depth {row['source']['depth']}: {row['source']['subject']}")
            print(row["line"])
    return EXIT_OK


def _matches(rec: TLSARecord, chain: list[_Cert]) -> list[dict[str, Any]]:
    out = []
    if rec.usage in (Usage.DANE_EE, Usage.PKIX_EE):
        if chain and chain[0].matches(rec):
            out.append({"depth": 0, "subject": _subject(chain[0].cert), "how": "leaf"})
        return out
    for entry in chain:
        if entry.matches(rec):
            how = "leaf" if entry.index == 0 else "issuer"
            out.append({"depth": entry.index, "subject": _subject(entry.cert), "how": how})
    if not out and rec.usage == Usage.DANE_TA and rec.mtype == MatchingType.FULL:
        anchor = _record_anchor(rec)
        top = chain[-1] if chain else None
        if anchor is not None and top is not None and top.cert is not None \
                and _signed_by(top.cert, anchor.key):
            subject = _subject(anchor.cert) if anchor.cert is not None else "public key"
            out.append({"depth": len(chain), "subject": subject, "how": "record-anchor"})
    return out


def _check(args: argparse.Namespace) -> int:
    certs = load_certificates(_read(args.cert, "certificate file"))
    if not certs:
        raise DaneError(f"no certificate found in {args.cert}")
    found = None
    if args.lookup:
        if args.records:
            raise DaneError("give either --records or --lookup, not both")
        found = _tlsa_lookup.lookup_from_args(args)
        parsed = list(found.parsed)
    elif args.records:
        text = _read(args.records, "records file").decode("utf-8", "replace")
        parsed = parse_records(text)
        if not parsed:
            raise DaneError(f"no TLSA record found in {args.records}")
    else:
        raise DaneError("give --records FILE or --lookup HOST")
    if args.next:
        return _check_next(args, certs, parsed, found)
    ders = [c.public_bytes(serialization.Encoding.DER) for c in certs]
    chain = [_Cert.load(i, d) for i, d in enumerate(ders)]
    records = [r for _, r in parsed]
    kept = select_usable(records)
    rows = []
    any_match = False
    for owner, rec in parsed:
        why = _unusable(rec)
        matches = _matches(rec, chain)
        ignored = why is None and rec not in kept
        if why is None and not ignored and matches:
            any_match = True
        rows.append({"rdata": rec.to_text(), "owner": owner, "usable": why is None,
                     "unusable_reason": why, "ignored_by_agility": ignored,
                     "matches": matches})
    verdict = None
    if args.host:
        when = args.at if args.at is not None else dt.datetime.now(dt.UTC)
        v = verify_chain(records, ders, args.host, now=when)
        verdict = {"ok": v.ok, "reason": v.reason, "detail": v.detail, "depth": v.depth,
                   "matched": v.matched.to_text() if v.matched else None,
                   "result_type": v.result_type}
    ok = verdict["ok"] if verdict is not None else any_match
    if args.json:
        out = {"ok": ok, "records": rows, "verdict": verdict}
        if found is not None:
            out["lookup"] = found.to_dict()
        print_json(out)
    else:
        if found is not None:
            print(found.summary())
        for i, cert in enumerate(certs):
            print(f"certificate {i}: {_subject(cert)}")
        for row in rows:
            state = ("unusable: " + row["unusable_reason"] if not row["usable"] else
                     "ignored (a stronger digest of the same kind is published, RFC 7671 §9)"
                     if row["ignored_by_agility"] else "usable")
            print(f"{row['rdata'][:60]}{'…' if len(row['rdata']) > 60 else ''}  [{state}]")
            if not row["matches"]:
                print("    matches nothing")
            for m in row["matches"]:
                print(f"    matches {m['how']} at depth {m['depth']}: {m['subject']}")
        if verdict is not None:
            print(f"DANE verification for {', '.join(args.host)}: "
                  f"{'ok' if verdict['ok'] else 'FAILED'} ({verdict['reason']}) "
                  f"- {verdict['detail']}")
        else:
            print("result: " + ("a usable record matches" if ok else "no usable record matches"))
    return EXIT_OK if ok else EXIT_NEGATIVE


def _wait(args: argparse.Namespace, found: _tlsa_lookup.LookedUp | None
          ) -> dict[str, Any]:
    """RFC 7671 §8.1: deploy only once every cache holds the new RRset: the TLSA TTL
    plus a margin (default: the TTL again, so twice the TTL in all)."""
    ttl = args.ttl if args.ttl is not None else (found.ttl if found is not None else None)
    source = "option" if args.ttl is not None else "dns" if ttl is not None else None
    if ttl is None:
        return {"ttl": None, "margin": args.margin, "seconds": None, "ttl_source": None}
    margin = args.margin if args.margin is not None else ttl
    return {"ttl": ttl, "margin": margin, "seconds": ttl + margin, "ttl_source": source}


def _duration(seconds: int) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds} s ({seconds // 3600} h)"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds} s ({seconds // 60} min)"
    return f"{seconds} s"


def _check_next(args: argparse.Namespace, certs: list[x509.Certificate],
                parsed: list[tuple[str | None, TLSARecord]],
                found: _tlsa_lookup.LookedUp | None) -> int:
    """``check CURRENT --next NEW``: is the staged certificate covered (RFC 7671 §8.1)?"""
    staged = load_certificates(_read(args.next, "staged certificate file"))
    if not staged:
        raise DaneError(f"no certificate found in {args.next}")
    records = [r for _, r in parsed]
    advice = rollover_advice(records, certs, staged)
    owner = found.name + "." if found is not None else next(
        (o for o, _ in parsed if o), None) or _owner(args.name)
    current_ok = bool(advice.current_matches)
    next_ok = bool(advice.next_matches)
    ok = current_ok and next_ok

    def line(rec: TLSARecord) -> str:
        return f"{owner} IN TLSA {rec.to_text()}" if owner else rec.to_text()

    publish = [line(r) for r in advice.to_publish]
    issuer = line(advice.issuer_option) if advice.issuer_option is not None else None
    wait = _wait(args, found)
    problems = [f for f in advice.findings if f.level == "error"
                and f.code not in ("current-not-covered", "next-not-published")]
    if args.json:
        out: dict[str, Any] = {
            "ok": ok,
            "current": {"file": args.cert, "subject": _subject(certs[0]), "covered": current_ok,
                        "covered_by": [r.to_text() for r in advice.current_matches]},
            "next": {"file": args.next, "subject": _subject(staged[0]), "covered": next_ok,
                     "covered_by": [r.to_text() for r in advice.next_matches]},
            "publish": publish, "issuer_option": issuer,
            "wait": wait if not next_ok else None,
            "findings": [{"level": f.level, "code": f.code, "message": f.message}
                         for f in advice.findings]}
        if found is not None:
            out["lookup"] = found.to_dict()
        print_json(out)
        return EXIT_OK if ok else EXIT_NEGATIVE
    if found is not None:
        print(found.summary())
    print(f"current: {args.cert}: {_subject(certs[0])}")
    if current_ok:
        print("    covered by " + ", ".join(r.describe() for r in advice.current_matches))
    else:
        print("    NOT covered: no usable record matches the certificate deployed now, so "
              "DANE clients cannot deliver to this server today; fix that first "
              "(RFC 7672 §2.2)")
    print(f"staged:  {args.next}: {_subject(staged[0])}")
    if next_ok:
        print("    covered by " + ", ".join(r.describe() for r in advice.next_matches))
    else:
        print("    NOT covered: deploying it now breaks delivery from DANE clients "
              "(RFC 7671 §8.1)")
    for f in problems:
        print(f"warning: {f.message}")
    if not next_ok:
        print("publish first, next to the current record(s):")
        for text in publish:
            print(f"    {text}")
        if issuer is not None:
            print("or instead a DANE-TA record for the issuing CA, which the current and the "
                  "staged chain share (send the full chain; it also covers later renewals "
                  "from that CA):")
            print(f"    {issuer}")
        if wait["seconds"] is not None:
            src = "the TLSA TTL" if wait["ttl_source"] == "dns" else "--ttl"
            print(f"then wait at least {_duration(wait['seconds'])} before deploying: "
                  f"{src} {wait['ttl']} s + margin {wait['margin']} s")
        else:
            print("then wait at least twice the TTL of the TLSA RRset before deploying "
                  "(the TTL is unknown with --records: give --ttl SECONDS to have it "
                  "computed)")
        print("result: the staged certificate is not covered: do not deploy it yet")
    elif not current_ok:
        print("result: the staged certificate is covered, the current one is not")
    else:
        print("result: both certificates are covered: the staged one can be deployed; "
              "remove the old record once it is no longer served and its TTL has passed")
    return EXIT_OK if ok else EXIT_NEGATIVE


def _when(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date/time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value <= 86400 * 30:
        raise argparse.ArgumentTypeError("seconds must be between 0 and 2592000")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tlsa", help="TLSA records for DANE (generate from certificates, check offline)",
        formatter_class=Formatter,
        description="Offline TLSA tools for DANE for SMTP (RFC 7672, RFC 7671, RFC 6698).",
        epilog="examples:\n"
        "  smtptls tlsa generate /etc/ssl/mx.pem --name mx.example.com\n"
        "  smtptls tlsa generate fullchain.pem --usage 2 --selector 1 --mtype 1\n"
        "  smtptls tlsa check fullchain.pem --records tlsa.zone --host mx.example.com\n"
        "exit codes: 0 ok / match, 1 no match, 2 error")
    ts = p.add_subparsers(dest="tlsa_command", metavar="ACTION", required=True)

    g = ts.add_parser(
        "generate", help="print TLSA records for a certificate, its chain or a key",
        formatter_class=Formatter,
        description="Print zone-file TLSA lines. Usage 3 (DANE-EE) uses the leaf (or a "
        "public/private key file: only the public key is used); usage 2 (DANE-TA) uses "
        "each issuer certificate of the chain. 3 1 1 is the recommended record "
        "(RFC 7671 §5.1).",
        epilog="examples:\n"
        "  smtptls tlsa generate cert.pem\n"
        "  smtptls tlsa generate next-key.pem --name mx.example.com   # before a rollover\n"
        "  smtptls tlsa generate fullchain.pem --usage 2 --json")
    g.add_argument("cert", metavar="CERT.pem", help="PEM (or DER) certificate(s) or key")
    g.add_argument("--usage", type=int, choices=[0, 1, 2, 3], default=3,
                   help="certificate usage (default 3, DANE-EE)")
    g.add_argument("--selector", type=int, choices=[0, 1], default=1,
                   help="0 full certificate, 1 public key (default)")
    g.add_argument("--mtype", type=int, choices=[0, 1, 2], default=1,
                   help="0 full, 1 SHA2-256 (default), 2 SHA2-512")
    g.add_argument("--name", metavar="NAME",
                   help="owner name, e.g. _25._tcp.mx.example.com (the _25._tcp. prefix "
                   "is added when missing)")
    g.add_argument("--json", action="store_true", help="machine-readable JSON output")
    g.set_defaults(func=_generate)

    c = ts.add_parser(
        "check", help="which published records match which certificate (offline)",
        formatter_class=Formatter,
        description="Compare TLSA records (a zone-file fragment or bare '3 1 1 <hex>' "
        "lines) with a certificate chain (PEM, leaf first). With --host, also run the "
        "full DANE verification for those reference names (RFC 7672 §3).",
        epilog="examples:\n"
        "  smtptls tlsa check fullchain.pem --records tlsa.txt\n"
        "  smtptls tlsa check fullchain.pem --records tlsa.zone --host mx.example.com "
        "--json\n"
        "  smtptls tlsa check fullchain.pem --lookup mx.example.com --nameserver 127.0.0.1\n"
        "  smtptls tlsa check live.pem --next staged.pem --lookup mx.example.com\n"
        "exit codes: 0 a usable record matches (or verification ok with --host; with "
        "--next: both certificates are covered), 1 none, 2 error")
    c.add_argument("cert", metavar="CERT.pem", help="PEM chain as the server sends it")
    c.add_argument("--records", metavar="FILE",
                   help="TLSA records, one per line (zone-file lines accepted)")
    _tlsa_lookup.add_arguments(c)
    c.add_argument("--host", metavar="NAME", action="append",
                   help="reference name for DANE-TA name checks (repeatable); runs the "
                   "full verification")
    c.add_argument("--at", metavar="WHEN", type=_when, default=None,
                   help="verify as of this ISO 8601 time (default: now)")
    c.add_argument("--next", metavar="NEW.pem",
                   help="the staged certificate (chain) about to be deployed: exit 0 only "
                   "when the records cover both, else print what to publish first "
                   "(RFC 7671 §8.1)")
    c.add_argument("--ttl", metavar="S", type=_seconds, default=None,
                   help="TTL of the TLSA RRset for the wait advice with --next (default: "
                   "from DNS with --lookup, unknown with --records)")
    c.add_argument("--margin", metavar="S", type=_seconds, default=None,
                   help="extra wait after the TTL with --next (default: the TTL again)")
    c.add_argument("--name", metavar="NAME",
                   help="owner name for the records printed with --next and --records "
                   "(the _25._tcp. prefix is added when missing)")
    c.add_argument("--json", action="store_true", help="machine-readable JSON output")
    c.set_defaults(func=_check)

