"""``smtptls publish mta-sts|tlsrpt|tlsa``: the records and files a domain owner publishes.

- ``mta-sts``: writes the policy file (validated by our own parser), keeps its ``id``
  in a state file beside it (a new id only when the body changes: a UTC timestamp plus
  the first hex digits of the body's SHA-256) and prints the ``_mta-sts`` TXT record and
  the rollout order (RFC 8461 §3.3, §8.1-§8.3);
- ``tlsrpt``: the ``_smtp._tls`` TXT record, validated by the TLSRPT record parser
  (RFC 8460 §3);
- ``tlsa``: ``_25._tcp`` TLSA records for certificates or keys (RFC 7671 §5.1: ``3 1 1``
  by default) and the rollover advice of :func:`smtptls.dane.publish.rollover_advice`.

The pure parts (:func:`policy_state`, :func:`rollout_steps`) take the clock and the
previous state as arguments. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtptls.cli.output import EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.dane.publish import load_certificates, rollover_advice, tlsa_from_cert
from smtptls.dane.tlsa import MatchingType, Selector, Usage
from smtptls.errors import DaneError, PolicySyntaxError, SmtpTlsError, TlsrptRecordError
from smtptls.mtasts.policy import MAX_AGE_LIMIT, MAX_POLICY_BYTES, Mode, Policy, parse_policy
from smtptls.mtasts.record import StsRecord
from smtptls.net.dns import normalize_domain
from smtptls.tlsrpt.record import parse_record

POLICY_FILE = "mta-sts.txt"
STATE_FILE = "mta-sts.state.json"
MAX_STATE = 64 * 1024
MAX_CERT_FILE = 1024 * 1024

EPILOG = """\
examples:
  smtptls publish mta-sts --domain example.com --mx mx1.example.com --mx '*.mx.example.com' \\
      --mode testing --max-age 604800 --out /srv/mta-sts
  smtptls publish tlsrpt --domain example.com --rua mailto:tlsrpt@example.com
  smtptls publish tlsa current.pem next.pem --name mx1.example.com

exit status: 0 done (tlsa: the rollover is safe); 1 tlsa: the advice has an error;
  2 invalid input. Docs: docs/publish.md.
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


def policy_state(body: str, previous: PolicyState | None, now: dt.datetime) -> PolicyState:
    """The id for ``body``: the previous one if the body is unchanged, else a new one.

    RFC 8461 §3.1: the id changes whenever the policy changes (senders refetch only
    when it does). New ids are ``YYYYMMDDHHMMSS`` + 12 hex digits of the body's
    SHA-256: unique per body and increasing in time, 26 characters (the limit is 32).
    """
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    if previous is not None and previous.sha256 == digest:
        return previous
    stamp = now.astimezone(dt.UTC)
    new_id = stamp.strftime("%Y%m%d%H%M%S") + digest[:12]
    if previous is not None and previous.id == new_id:  # same second, same prefix
        new_id = stamp.strftime("%Y%m%d%H%M%S") + digest[12:24]
    return PolicyState(new_id, digest, stamp.strftime("%Y-%m-%dT%H:%M:%SZ"))


_STRENGTH = {Mode.NONE: 0, Mode.TESTING: 1, Mode.ENFORCE: 2}


def rollout_steps(domain: str, old: Policy | None, new: Policy, record: str) -> list[str]:
    """The safe order of publication (RFC 8461 §3.3, §8.1-§8.3)."""
    owner = f"_mta-sts.{domain}."
    steps = [f"1. publish the policy at https://mta-sts.{domain}/.well-known/mta-sts.txt "
             "(HTTPS, a valid certificate for mta-sts." + domain + ", text/plain) and check it "
             f"with: smtptls check {domain}",
             f"2. then publish (or update) the TXT record: {owner} IN TXT \"{record}\" - "
             "senders refetch the policy only when the id changes (RFC 8461 §3.3)"]
    if old is None:
        if new.mode is Mode.ENFORCE:
            steps.append("note: a first policy is safest in mode testing with a TLSRPT "
                         "record; switch to enforce when reports show no failures "
                         "(RFC 8461 §8.2)")
        return steps
    if _STRENGTH[new.mode] < _STRENGTH[old.mode]:
        steps.append(f"lowering security ({old.mode.value} -> {new.mode.value}): senders keep "
                     f"the cached {old.mode.value} policy until they refetch; keep every MX "
                     f"valid for the old policy for up to max_age {old.max_age} s "
                     "(RFC 8461 §5.1)")
        if new.mode is Mode.NONE:
            steps.append("to withdraw MTA-STS: keep serving this mode-none policy and the "
                         f"new id for at least the old max_age ({old.max_age} s), then "
                         "remove the TXT record and the policy host (RFC 8461 §8.3)")
    old_mx = set(old.mx)
    added = [m for m in new.mx if m not in old_mx]
    removed = [m for m in old.mx if m not in set(new.mx)]
    if added:
        steps.append(f"new mx entries ({', '.join(added)}): only put such hosts into the "
                     f"MX RRset after senders' cached policies expired (old max_age "
                     f"{old.max_age} s), or they refuse them (RFC 8461 §8.1)")
    if removed:
        steps.append(f"removed mx entries ({', '.join(removed)}): take these hosts out of "
                     "the MX RRset first (RFC 8461 §8.1)")
    if new.max_age < old.max_age:
        steps.append(f"max_age lowered ({old.max_age} -> {new.max_age} s): senders apply "
                     "the old value until they refetch")
    return steps


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


def _mta_sts(args: argparse.Namespace, now: dt.datetime) -> int:
    domain = normalize_domain(args.domain) if args.domain else None
    if not args.mx and args.mode != "none":
        raise PolicySyntaxError(f"mode {args.mode} needs at least one --mx")
    policy = Policy("STSv1", Mode(args.mode), args.max_age, tuple(args.mx or ()))
    body = policy.to_text()
    parse_policy(body)  # our own parser must accept what we publish (RFC 8461 §3.2)
    old_policy = previous = None
    path = state_path = None
    if args.out:
        base = Path(args.out) / domain if domain else Path(args.out)
        path, state_path = base / POLICY_FILE, base / STATE_FILE
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

