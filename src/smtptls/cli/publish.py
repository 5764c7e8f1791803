"""``smtptls publish mta-sts|tlsrpt|tlsa``: the records and files a domain owner publishes.

- ``mta-sts``: writes the policy file (validated by our own parser), keeps its ``id``
  in a state file beside it (a new id only when the body changes: a UTC timestamp plus
  the first hex digits of the body's SHA-256) and prints the ``_mta-sts`` TXT record and
  the rollout order (RFC 8461 §3.3, §8.1-§8.3); with ``--check-change`` it writes
  nothing and judges the change against the live policy (fetched by the sender's
  discovery, :func:`smtptls.engine.mtasts_discovery.discover`) and the MX RRset
  (:func:`smtptls.engine.gather.lookup_destination`) with the pure
  :func:`smtptls.mtasts.change.compare`: exit 0 safe, 1 unsafe, 2 error;
- ``tlsrpt``: the ``_smtp._tls`` TXT record, validated by the TLSRPT record parser
  (RFC 8460 §3);
- ``tlsa``: ``_25._tcp`` TLSA records for certificates or keys (RFC 7671 §5.1: ``3 1 1``
  by default) and the rollover advice of :func:`smtptls.dane.publish.rollover_advice`.

The pure parts (:func:`policy_state`, :func:`rollout_steps`) take the clock and the
previous state as arguments. Only ``--check-change`` touches the network.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtptls.cli.output import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.dane.publish import load_certificates, rollover_advice, tlsa_from_cert
from smtptls.dane.tlsa import MatchingType, Selector, Usage
from smtptls.errors import DaneError, PolicySyntaxError, SmtpTlsError, TlsrptRecordError
from smtptls.mtasts.change import ChangeVerdict, compare
from smtptls.mtasts.policy import MAX_AGE_LIMIT, MAX_POLICY_BYTES, Mode, Policy, parse_policy
from smtptls.mtasts.record import StsRecord
from smtptls.net.dns import normalize_domain
from smtptls.tlsrpt.record import parse_record

POLICY_FILE = "mta-sts.txt"
STATE_FILE = "mta-sts.state.json"
MAX_STATE = 64 * 1024
MAX_CERT_FILE = 1024 * 1024
WIDTH = 100  # human output stays within 100 columns

EPILOG = """\
examples:
  smtptls publish mta-sts --domain example.com --mx mx1.example.com --mx '*.mx.example.com' \\
      --mode testing --max-age 604800 --out /srv/mta-sts
  smtptls publish mta-sts --domain example.com --mx mx1.example.com --mx mx2.example.com \\
      --mode enforce --max-age 604800 --check-change
  smtptls publish mta-sts --domain example.com --mx mx1.example.com --mx mx2.example.com \\
      --mode enforce --check-change --planned-mx mx2.example.com --json
  smtptls publish tlsrpt --domain example.com --rua mailto:tlsrpt@example.com
  smtptls publish tlsa current.pem next.pem --name mx1.example.com

--check-change writes nothing: it fetches the live policy as senders do (_mta-sts TXT,
  then HTTPS), looks up the MX RRset, and says whether publishing this policy is safe
  for senders holding the live one, with the rollout order.

exit status: 0 done (tlsa: the rollover is safe; --check-change: the change is safe);
  1 tlsa: the advice has an error; --check-change: the change is unsafe (the reason is
  printed); 2 invalid input or a lookup/fetch error (one line on stderr).
  Docs: docs/publish.md.
"""


# --- MTA-STS: pure parts --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyState:
    """The published policy's id and the digest of the body it belongs to."""

    id: str
    sha256: str
    created: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "sha256": self.sha256, "created": self.created}

    @classmethod
    def from_dict(cls, data: object) -> PolicyState:
        if not isinstance(data, dict):
            raise SmtpTlsError("policy state must be a JSON object")
        values = [data.get(k) for k in ("id", "sha256", "created")]
        if not all(isinstance(v, str) for v in values):
            raise SmtpTlsError("policy state needs string fields id, sha256, created")
        state = cls(*values)  # type: ignore[arg-type]
        StsRecord(state.id)  # RFC 8461 §3.1: 1-32 letters or digits (StsRecordError)
        return state


def body_digest(body: str) -> str:
    """The SHA-256 (hex) a :class:`PolicyState` keeps of the body its id belongs to."""
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def policy_state(body: str, previous: PolicyState | None, now: dt.datetime) -> PolicyState:
    """The id for ``body``: the previous one if the body is unchanged, else a new one.

    RFC 8461 §3.1: the id changes whenever the policy changes (senders refetch only
    when it does). New ids are ``YYYYMMDDHHMMSS`` + 12 hex digits of the body's
    SHA-256: unique per body and increasing in time, 26 characters (the limit is 32).
    """
    digest = body_digest(body)
    if previous is not None and previous.sha256 == digest:
        return previous
    stamp = now.astimezone(dt.UTC)
    new_id = stamp.strftime("%Y%m%d%H%M%S") + digest[:12]
    if previous is not None and previous.id == new_id:  # same second, same prefix
        new_id = stamp.strftime("%Y%m%d%H%M%S") + digest[12:24]
    return PolicyState(new_id, digest, stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))


def rollout_steps(domain: str, old: Policy | None, new: Policy, record: str) -> list[str]:
    """The safe order of publication (RFC 8461 §3.3, §8.1-§8.3), without looking at DNS:
    the steps of :func:`smtptls.mtasts.change.compare`."""
    return list(compare(domain, new, "", old=old, record=record).steps)


# --- MTA-STS: command -----------------------------------------------------------------


def _read_small(path: Path, limit: int) -> str | None:
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SmtpTlsError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise SmtpTlsError(f"{path} is larger than {limit} bytes")
    return data.decode("utf-8", errors="replace")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise SmtpTlsError(f"cannot write {path}: {exc.strerror}") from None


def _read_state(args: argparse.Namespace, domain: str | None
                ) -> tuple[Path | None, Path | None, PolicyState | None, Policy | None]:
    """The policy file and state paths under ``--out``, the state and the policy there."""
    if not args.out:
        return None, None, None, None
    base = Path(args.out) / domain if domain else Path(args.out)
    path, state_path = base / POLICY_FILE, base / STATE_FILE
    previous = old_policy = None
    text = _read_small(state_path, MAX_STATE)
    if text is not None:
        try:
            previous = PolicyState.from_dict(json.loads(text))
        except (ValueError, SmtpTlsError) as exc:
            raise SmtpTlsError(f"{state_path}: unusable state ({exc}); remove it to "
                               "start a new id") from None
    old_text = _read_small(path, MAX_POLICY_BYTES)
    if old_text is not None:
        try:
            old_policy = parse_policy(old_text)
        except PolicySyntaxError:
            old_policy = None
    return path, state_path, previous, old_policy


def _mta_sts(args: argparse.Namespace, now: dt.datetime) -> int:
    domain = normalize_domain(args.domain) if args.domain else None
    if not args.mx and args.mode != "none":
        raise PolicySyntaxError(f"mode {args.mode} needs at least one --mx")
    if args.check_change and domain is None:
        raise SmtpTlsError("--check-change needs --domain (the live policy is looked up)")
    if args.planned_mx and not args.check_change:
        raise SmtpTlsError("--planned-mx is only used with --check-change")
    policy = Policy("STSv1", Mode(args.mode), args.max_age, tuple(args.mx or ()))
    body = policy.to_text()
    parse_policy(body)  # our own parser must accept what we publish (RFC 8461 §3.2)
    path, state_path, previous, old_policy = _read_state(args, domain)
    if args.check_change:
        assert domain is not None
        return _check_change(args, domain, policy, previous, now)
    state = policy_state(body, previous, now)
    changed = previous is None or previous.id != state.id
    record = StsRecord(state.id).to_text().rstrip(";")
    StsRecord.parse(record)
    name = domain or "<domain>"
    steps = rollout_steps(name, old_policy, policy, record)
    if path is not None and state_path is not None:
        _write_atomic(path, body)
        _write_atomic(state_path, json.dumps(state.to_dict(), indent=2) + "\n")
    txt = f'_mta-sts.{name}. IN TXT "{record}"'
    if args.json:
        print_json({"domain": domain, "policy": body, "policy_file": str(path) if path else None,
                    "id": state.id, "changed": changed, "txt_record": txt, "record": record,
                    "steps": steps})
        return EXIT_OK
    if path is None:
        print(f"# policy for https://mta-sts.{name}/.well-known/mta-sts.txt")
        sys.stdout.write(body.replace("\r\n", "\n"))
    else:
        print(f"# policy written to {path} ({'new id' if changed else 'unchanged, same id'})")
    print(f"# TXT record\n{txt}\n# rollout")
    for s in steps:
        print(s)
    return EXIT_OK


# --- MTA-STS: --check-change (the live policy and MX RRset against the new policy) -------


async def _live(domain: str, cfg: Any) -> tuple[Any, Any]:
    """The sender's discovery of the live policy (empty cache: always fetched) and the
    MX RRset, both through the configured resolver."""
    from smtptls.engine.gather import lookup_destination
    from smtptls.engine.mtasts_discovery import discover
    from smtptls.net.dns import DnsResolver
    from smtptls.store import MemoryPolicyCache

    resolver = DnsResolver(cfg.dns)
    cache = MemoryPolicyCache()
    try:
        return await asyncio.gather(
            discover(domain, dns=resolver, cache=cache, fetch_config=cfg.fetch,
                     now=time.time()),
            lookup_destination(resolver, domain))
    finally:
        await cache.close()


def _live_policy(domain: str, found: Any) -> tuple[Policy | None, str | None]:
    """The live policy and its TXT id; (None, None) when there is no record."""
    owner = f"_mta-sts.{domain}"
    if found.txt_error is not None:
        raise SmtpTlsError(f"{owner} TXT: {found.txt_error}; the live policy is unknown, "
                           "fix the record or the resolver first")
    if found.record is None:
        return None, None  # RFC 8461 §3.1: no record, no policy: a first publication
    if found.policy is None:
        raise SmtpTlsError(f"{owner} has id={found.record_id} but the policy cannot be "
                           f"fetched: {found.fetch_error}")
    return found.policy, found.record_id


def _mx_hosts(domain: str, dest: Any) -> tuple[str, ...]:
    if dest.mx_error is not None:
        raise SmtpTlsError(f"MX lookup of {domain} failed: {dest.mx_error}")
    if dest.null_mx or dest.nxdomain or not dest.has_mx:
        return ()
    return tuple(dest.hosts)


def _check_change(args: argparse.Namespace, domain: str, policy: Policy,
                  previous: PolicyState | None, now: dt.datetime) -> int:
    from smtptls.cli._preflight import require_ca_file, require_domains, require_resolver
    from smtptls.cli.mta_sts import build_configs
    from smtptls.mtasts.policy import ONE_DAY

    planned = tuple(require_domains(args.planned_mx)) if args.planned_mx else None
    cfg = build_configs(args)
    require_ca_file(cfg.fetch.ca_file)
    require_resolver(cfg.dns, validating=False)  # MTA-STS itself needs no DNSSEC
    found, dest = asyncio.run(_live(domain, cfg))
    old, old_id = _live_policy(domain, found)
    current = _mx_hosts(domain, dest)
    if previous is None and old is not None and old_id is not None:
        # the live body under its live id: the id rule of policy_state keeps it exactly
        # when the new body is the same (RFC 8461 §3.1)
        previous = PolicyState(old_id, body_digest(old.to_text()), "")
    new_id = policy_state(policy.to_text(), previous, now).id
    record = StsRecord(new_id).to_text().rstrip(";")
    verdict = compare(domain, policy, new_id, old=old, old_id=old_id, current_mx=current,
                      planned_mx=planned, record=record, min_max_age=ONE_DAY)
    code = EXIT_OK if verdict.safe else EXIT_NEGATIVE
    if args.json:
        data = verdict.to_dict()
        data["txt_record"] = f'_mta-sts.{domain}. IN TXT "{record}"'
        data["exit"] = code
        print_json(data)
        return code
    for line in _verdict_lines(verdict):
        print(line)
    return code


def _wrap(text: str, indent: str = "  ") -> str:
    return textwrap.fill(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False,
                         break_long_words=False)


def _policy_text(policy: Policy, policy_id: str | None) -> str:
    return (f"id {policy_id or '-'}, mode {policy.mode.value}, max_age {policy.max_age}, "
            f"mx {', '.join(policy.mx) or '-'}")


def _verdict_lines(v: ChangeVerdict) -> list[str]:
    if v.safe:
        head = "verdict: safe" + (" (first publication)" if v.first_publication else "")
    else:
        head = f"verdict: UNSAFE - {v.reasons[0]}"
    lines = [_wrap(head)]
    lines.append(_wrap("live policy: " + ("none (no _mta-sts record)" if v.old is None
                                          else _policy_text(v.old, v.old_id))))
    lines.append(_wrap("new policy:  " + _policy_text(v.new, v.new_id)))
    lines.append(_wrap("MX in DNS:   " + (", ".join(v.current_mx or ()) or "none")))
    if v.planned_mx is not None:
        lines.append(_wrap("planned MX:  " + ", ".join(v.planned_mx)))
    if v.findings:
        lines.append("findings:")
        lines.extend(_wrap(f"  {f.level.value}: {f.message} ({f.rfc}) [{f.code}]", "    ")
                     for f in v.findings)
    lines.append("rollout order:")
    lines.extend(_wrap(f"  {s}", "     ") for s in v.steps)
    return lines


# --- TLSRPT ---------------------------------------------------------------------------


def _tlsrpt(args: argparse.Namespace) -> int:
    domain = normalize_domain(args.domain) if args.domain else "<domain>"
    text = "v=TLSRPTv1; rua=" + ",".join(args.rua)
    record = parse_record(text)  # RFC 8460 §3 (TlsrptRecordError names the problem)
    unusable = [u for u in record.rua if u not in record.report_uris]
    if unusable:
        # RFC 8460 §3 defines only mailto: and https: rua URIs; a sender skips any other
        raise TlsrptRecordError(f"rua {unusable[0]!r}: senders deliver reports only to "
                                "mailto: and https: URIs", record=text)
    txt = f'_smtp._tls.{domain}. IN TXT "{record.to_text()}"'
    if args.json:
        print_json({"domain": args.domain, "record": record.to_text(), "txt_record": txt,
                    "warnings": list(record.warnings)})
        return EXIT_OK
    print(txt)
    for w in record.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return EXIT_OK


# --- TLSA -----------------------------------------------------------------------------


def _read_cert(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CERT_FILE + 1)
    except OSError as exc:
        raise DaneError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_CERT_FILE:
        raise DaneError(f"{path} is larger than {MAX_CERT_FILE} bytes")
    return data


def _tlsa(args: argparse.Namespace) -> int:
    if args.usage in (Usage.PKIX_TA, Usage.PKIX_EE):
        raise DaneError("usages 0 and 1 (PKIX) are unusable for SMTP (RFC 7672 §3.1.3); "
                        "use 3 (DANE-EE) or 2 (DANE-TA)")
    owner = None
    if args.name:
        owner = f"_{args.port}._tcp.{normalize_domain(args.name)}."
    sources: list[tuple[str, Any]] = []
    chains: list[list[Any]] = []
    for path in args.certs:
        data = _read_cert(path)
        certs = load_certificates(data)
        chains.append(certs or [data])
        if args.usage == Usage.DANE_TA:
            if len(certs) < 2:
                raise DaneError(f"{path}: usage 2 needs the chain (leaf, then issuers)")
            sources.append((f"{path} issuer", certs[1]))
        else:
            sources.append((path, certs[0] if certs else data))
    records = []
    for label, src in sources:
        rec = tlsa_from_cert(src, args.usage, args.selector, args.mtype)
        if rec not in records:
            records.append(rec)
        line = f"{owner} IN TLSA {rec.to_text()}" if owner else rec.to_text()
        if not args.json:
            print(f"; {label}\n{line}")
    advice = None
    if chains and _is_chain(chains[0]):
        nxt = chains[1] if len(chains) > 1 else None
        advice = rollover_advice(records, chains[0], nxt)
    if args.json:
        print_json({"records": [{"owner": owner, "rdata": r.to_text()} for r in records],
                    "rollover": None if advice is None else {
                        "safe": advice.safe,
                        "findings": [{"level": f.level, "code": f.code, "message": f.message}
                                     for f in advice.findings]}})
    elif advice is not None:
        print(f"; rollover: {'safe' if advice.safe else 'NOT safe'} (RFC 7671 §8)")
        for f in advice.findings:
            print(f";   {f.level}: {f.message}")
    if advice is not None and advice.errors:
        return EXIT_NEGATIVE
    return EXIT_OK


def _is_chain(chain: list[Any]) -> bool:
    """True for certificates (a key file gives records but no rollover advice)."""
    return bool(chain) and not isinstance(chain[0], bytes | bytearray)


# --- registration ---------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    if args.what == "mta-sts":
        return _mta_sts(args, dt.datetime.now(dt.UTC))
    if args.what == "tlsrpt":
        return _tlsrpt(args)
    if args.what == "tlsa":
        return _tlsa(args)
    return EXIT_ERROR  # pragma: no cover - argparse requires a choice


def _max_age(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("max_age is a number of seconds") from None
    if not 0 <= value <= MAX_AGE_LIMIT:
        raise argparse.ArgumentTypeError(f"max_age must be 0..{MAX_AGE_LIMIT} (RFC 8461 §3.2)")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="produce MTA-STS, TLSRPT and TLSA records to publish",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Write an MTA-STS policy and print the DNS records to "
                       "publish, in a safe order.")
    ps = p.add_subparsers(dest="what", metavar="KIND", required=True)
    m = ps.add_parser("mta-sts", help="policy file + _mta-sts TXT record + rollout order",
                      formatter_class=Formatter, epilog=EPILOG)
    m.add_argument("--domain", metavar="D", help="policy domain (names the files and records)")
    m.add_argument("--mx", action="append", metavar="PATTERN",
                   help="MX host or *.suffix pattern (repeatable)")
    m.add_argument("--mode", choices=[x.value for x in Mode], default="testing",
                   help="enforce | testing | none (default testing)")
    m.add_argument("--max-age", type=_max_age, default=604800, metavar="S",
                   help="seconds senders cache the policy (default 604800, one week)")
    m.add_argument("--out", metavar="DIR",
                   help="write DIR[/DOMAIN]/mta-sts.txt and the id state beside it (the "
                   "policy-server layout)")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    c = m.add_argument_group("checking the change against the live policy and MX RRset")
    c.add_argument("--check-change", action="store_true",
                   help="compare with the live policy and MX RRset (needs --domain); writes "
                   "nothing; exit 0 safe, 1 unsafe")
    c.add_argument("--planned-mx", action="append", metavar="HOST",
                   help="an MX host after the change (repeatable; default: the MX RRset "
                   "stays as it is)")
    c.add_argument("--config", metavar="FILE", help="TOML configuration file")
    c.add_argument("--nameserver", metavar="IP[:PORT]", action="append",
                   help="resolver to ask (repeatable; default: config, then resolv.conf)")
    c.add_argument("--ca-file", metavar="FILE",
                   help="PEM trust store for the policy host (default: system store)")
    c.add_argument("--dnssec-probe", metavar="NAME",
                   help="name the resolver must answer for first ('' skips the probe)")
    c.add_argument("--timeout", metavar="SECONDS", type=float,
                   help="DNS timeout and total fetch timeout")
    t = ps.add_parser("tlsrpt", help="the _smtp._tls TXT record", formatter_class=Formatter,
                      epilog=EPILOG)
    t.add_argument("--domain", metavar="D", help="policy domain")
    t.add_argument("--rua", action="append", required=True, metavar="URI",
                   help="mailto: or https: report destination (repeatable)")
    t.add_argument("--json", action="store_true", help="machine-readable output")
    a = ps.add_parser("tlsa", help="TLSA records for certificates, with rollover advice",
                      formatter_class=Formatter, epilog=EPILOG)
    a.add_argument("certs", nargs="+", metavar="CERT",
                   help="PEM/DER certificate (chain) or key files: the current one first, "
                   "then the next")
    a.add_argument("--name", metavar="HOST", help="MX host name (owner _25._tcp.HOST)")
    a.add_argument("--port", type=int, default=25, help="TCP port of the owner name")
    a.add_argument("--usage", type=int, default=int(Usage.DANE_EE), choices=[2, 3],
                   help="3 DANE-EE (default) or 2 DANE-TA")
    a.add_argument("--selector", type=int, default=int(Selector.SPKI), choices=[0, 1])
    a.add_argument("--mtype", type=int, default=int(MatchingType.SHA256), choices=[0, 1, 2])
    a.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)

