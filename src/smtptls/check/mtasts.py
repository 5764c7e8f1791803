"""MTA-STS checks (pure): record, policy fetch, policy, MX coverage, MX certificates.

RFC 8461 §3.1 (TXT record), §3.2 (policy), §3.3 (fetch limits), §4 (MX and
certificate matching), §5 (modes), §8 (operational advice). Where implementations
disagree on syntax, the severity follows the conformance corpus' ``consensus.auditor``
(duplicate keys and a duplicated ``id``: warning; unknown keys: info; a trailing
``;;`` in the record: warning; ``max_age`` over the limit: error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from smtptls.check.dane import DaneView
from smtptls.check.facts import DomainFacts
from smtptls.check.findings import Area, Finding, Severity
from smtptls.check.tls import pkix_problem
from smtptls.dnssec import Security
from smtptls.errors import PolicySyntaxError, StsRecordError
from smtptls.mtasts.match import mx_matches, normalize_host
from smtptls.mtasts.policy import ONE_WEEK, Mode, Policy, parse_policy, short_enforced_max_age
from smtptls.mtasts.record import StsRecord, is_sts_candidate

__all__ = ["StsView", "check_mtasts", "sts_view"]

# RFC 8461 §3.1 ABNF: at most one trailing delimiter; "id=x;;" has an empty field.
_EXTRA_SEMICOLONS = re.compile(r";[ \t]*;[ \t;]*$")


@dataclass(frozen=True, slots=True)
class StsView:
    """What the MTA-STS facts amount to, parsed once for every check."""

    candidates: tuple[str, ...] = ()
    record: StsRecord | None = None
    record_error: str | None = None
    lenient: bool = False  # the record parsed only without its extra ';'
    policy: Policy | None = None
    policy_error: str | None = None
    policy_line: int | None = None

    @property
    def present(self) -> bool:
        return bool(self.candidates)

    @property
    def mode(self) -> Mode | None:
        return None if self.policy is None else self.policy.mode

    def to_dict(self) -> dict[str, Any]:
        return {"record": None if self.record is None else self.record.to_text(),
                "record_id": None if self.record is None else self.record.id,
                "record_error": self.record_error,
                "policy": None if self.policy is None else self.policy.to_dict(),
                "policy_error": self.policy_error,
                "mode": None if self.mode is None else self.mode.value}


def sts_view(facts: DomainFacts) -> StsView:
    txt = facts.sts_txt
    if txt is None or txt.failed:
        return StsView()
    # RFC 8461 §3.1: records not beginning with "v=STSv1;" are discarded.
    candidates = tuple(r for r in txt.records if is_sts_candidate(r))
    if not candidates:
        return StsView()
    if len(candidates) > 1:
        return StsView(candidates, None,
                       f"{len(candidates)} TXT records start with v=STSv1; exactly one is "
                       "required")
    text = candidates[0]
    record, error, lenient = None, None, False
    try:
        record = StsRecord.parse(text)
    except StsRecordError as exc:
        error = str(exc)
        if _EXTRA_SEMICOLONS.search(text):
            try:
                record = StsRecord.parse(_EXTRA_SEMICOLONS.sub(";", text))
                lenient = True
            except StsRecordError:
                record = None
    policy, perror, pline = None, None, None
    fetched = facts.policy
    if record is not None and fetched is not None and fetched.ok and fetched.body is not None:
        try:
            policy = parse_policy(fetched.body)
        except PolicySyntaxError as exc:
            perror, pline = exc.reason, exc.line
    return StsView(candidates, record, error, lenient, policy, perror, pline)


def _f(code: str, severity: Severity, subject: str, message: str, fix: str | None = None,
       rfc: str | None = None) -> Finding:
    return Finding(code, severity, Area.MTA_STS, subject, message, fix, rfc)


def _example_policy(facts: DomainFacts, mode: str = "testing") -> str:
    mx = [h.host for h in facts.hosts if h.preference is not None] or [f"mail.{facts.domain}"]
    lines = ["version: STSv1", f"mode: {mode}"] + [f"mx: {m}" for m in mx[:8]]
    return "\n".join(lines + ["max_age: 604800"])


_FETCH = {
    "tls": ("mta-sts.policy-tls", "the policy host's certificate is not valid",
            "serve mta-sts.{d} with a publicly trusted certificate valid for that name"),
    "status": ("mta-sts.policy-status", "the policy host does not answer 200",
               "serve the policy at https://mta-sts.{d}/.well-known/mta-sts.txt with "
               "status 200, without redirects"),
    "content-type": ("mta-sts.policy-content-type", "the policy is not served as text/plain",
                     "serve the policy with Content-Type: text/plain"),
    "too-large": ("mta-sts.policy-too-large", "the policy body is larger than senders read",
                  "keep the policy small (a few hundred bytes)"),
    "timeout": ("mta-sts.policy-timeout", "the policy host did not answer in time",
                "make the policy host answer within seconds"),
    "dns": ("mta-sts.policy-host-dns", "the policy host name does not resolve",
            "mta-sts.{d}. IN A <address of the HTTPS server>"),
    "encoding": ("mta-sts.policy-invalid", "the policy is not valid UTF-8",
                 "serve an ASCII policy file"),
}


def _mode_severity(mode: Mode) -> Severity | None:
    # RFC 8461 §5: enforce refuses failing MX hosts; testing only reports; none is off.
    return {Mode.ENFORCE: Severity.ERROR, Mode.TESTING: Severity.WARNING}.get(mode)


def check_mtasts(facts: DomainFacts, view: StsView, dane: DaneView) -> list[Finding]:
    d = facts.domain
    txt = facts.sts_txt
    out: list[Finding] = []
    if txt is None or facts.null_mx or facts.mx.nxdomain:
        return out
    owner = f"_mta-sts.{d}"
    if txt.failed:
        why = ("fails DNSSEC validation" if txt.security is Security.BOGUS
               else f"failed ({txt.error})")
        out.append(_f("mta-sts.txt-lookup-failed", Severity.ERROR, owner,
                      f"the TXT lookup of {owner} {why}: senders cannot discover the policy",
                      None, "RFC 8461 §3.1"))
        return out
    if not view.present:
        out.append(_f("mta-sts.absent", Severity.INFO, d,
                      "no MTA-STS record: senders that do not validate DNSSEC cannot "
                      "detect a TLS downgrade",
                      f"publish the policy first (smtptls publish mta-sts), then\n"
                      f'{owner}. IN TXT "v=STSv1; id=<id>"\n{_example_policy(facts)}',
                      "RFC 8461 §3"))
        return out
    if len(view.candidates) > 1:
        out.append(_f("mta-sts.txt-multiple", Severity.ERROR, owner,
                      f"{view.record_error}: senders treat the domain as having no policy",
                      "remove all but one v=STSv1 record", "RFC 8461 §3.1"))
        return out
    if view.record is None:
        out.append(_f("mta-sts.txt-invalid", Severity.ERROR, owner,
                      f"the MTA-STS record is invalid ({view.record_error}): senders ignore it",
                      f'{owner}. IN TXT "v=STSv1; id=<1-32 letters or digits>"',
                      "RFC 8461 §3.1"))
        return out
    record = view.record
    if view.lenient:
        out.append(_f("mta-sts.txt-extra-semicolon", Severity.WARNING, owner,
                      "the record ends in more than one ';' (an empty field): lenient senders "
                      "accept it, strict ones (and the RFC's ABNF) do not",
                      f'{owner}. IN TXT "{record.to_text()}"', "RFC 8461 §3.1"))
    for w in record.warnings:
        out.append(_f("mta-sts.txt-duplicate-id", Severity.WARNING, owner,
                      f"{w}; some senders reject the record",
                      f'{owner}. IN TXT "{record.to_text()}"', "RFC 8461 §3.1"))
    if record.extensions:
        names = ", ".join(n for n, _ in record.extensions[:4])
        out.append(_f("mta-sts.txt-extension", Severity.INFO, owner,
                      f"unknown field(s) {names} are ignored by senders", None,
                      "RFC 8461 §3.1"))
    fetched = facts.policy
    url = f"https://mta-sts.{d}/.well-known/mta-sts.txt"
    if fetched is None:
        return out
    if not fetched.ok:
        code, what, fix = _FETCH.get(fetched.error_kind or "",
                                     ("mta-sts.policy-fetch", "the policy cannot be fetched",
                                      "serve the policy over HTTPS at " + url))
        if fetched.error_kind == "status" and fetched.status and 300 <= fetched.status < 400:
            code, what = "mta-sts.policy-redirect", "the policy host redirects"
            fix = "serve the policy directly: senders MUST NOT follow redirects"
        out.append(_f(code, Severity.ERROR, url,
                      f"{what}: {fetched.error}; senders find no policy (if they have none "
                      "cached)", fix.format(d=d), "RFC 8461 §3.3"))
        return out
    policy = view.policy
    if policy is None:
        where = f" (line {view.policy_line})" if view.policy_line else ""
        out.append(_f("mta-sts.policy-invalid", Severity.ERROR, url,
                      f"the policy is invalid{where}: {view.policy_error}; senders treat "
                      "the domain as having no policy",
                      _example_policy(facts), "RFC 8461 §3.2"))
        return out
    for w in policy.warnings:
        if "duplicate" in w:
            out.append(_f("mta-sts.policy-duplicate-key", Severity.WARNING, url,
                          f"{w}; some senders reject the whole policy",
                          "remove the repeated line", "RFC 8461 §3.2"))
        else:
            out.append(_f("mta-sts.policy-blank-line", Severity.INFO, url, w,
                          "remove blank lines", "RFC 8461 §3.2"))
    for key, _value in policy.extensions[:8]:
        out.append(_f("mta-sts.policy-unknown-key", Severity.INFO, url,
                      f"unknown key {key!r} is ignored by senders", None, "RFC 8461 §3.2"))
    mode = policy.mode
    if mode is Mode.NONE:
        out.append(_f("mta-sts.mode-none", Severity.INFO, url,
                      "mode none: the domain withdraws MTA-STS; senders apply no policy",
                      None, "RFC 8461 §5"))
        return out
    if mode is Mode.TESTING:
        out.append(_f("mta-sts.mode-testing", Severity.INFO, url,
                      "mode testing: failures are only reported (TLSRPT), mail is still "
                      "delivered without authentication",
                      "when TLSRPT reports show no failures: mode: enforce (new policy id)",
                      "RFC 8461 §5"))
    # RFC 8461 §3.2, §8: max_age in seconds; weeks are recommended so a policy survives
    # an attacker blocking its refresh.
    if (short := short_enforced_max_age(policy)) is not None:
        out.append(_f("mta-sts.max-age-short", Severity.WARNING, url, short,
                      "max_age: 604800", "RFC 8461 §3.2"))
    elif policy.max_age < ONE_WEEK:
        out.append(_f("mta-sts.max-age-advice", Severity.INFO, url,
                      f"max_age {policy.max_age} s; one week or more (up to 31557600) is "
                      "recommended once the policy is stable",
                      "max_age: 604800", "RFC 8461 §3.2"))
    out.extend(_coverage(facts, policy, dane, url))
    return out


def _coverage(facts: DomainFacts, policy: Policy, dane: DaneView, url: str) -> list[Finding]:
    out: list[Finding] = []
    severity = _mode_severity(policy.mode)
    if severity is None:
        return out
    mx_hosts = [h for h in facts.hosts if h.preference is not None]
    if not mx_hosts and facts.hosts:
        out.append(_f("mta-sts.no-mx", Severity.WARNING, facts.domain,
                      "the domain has a policy but no MX records: senders match policies "
                      "against MX host names only", f"{facts.domain}. IN MX 10 mail."
                      f"{facts.domain}.", "RFC 8461 §4.1"))
    for h in mx_hosts:
        hd = dane.host(h.host)
        dane_host = hd is not None and hd.protected
        # RFC 8461 §4.1: an MX host not matching any mx pattern fails validation.
        if not policy.matches_mx(h.host):
            if dane_host:
                continue  # reported by the consistency checks
            out.append(_f("mta-sts.mx-not-covered", severity, h.host,
                          f"MX host {h.host} matches no mx line of the policy: senders "
                          f"{'refuse' if policy.mode is Mode.ENFORCE else 'report'} it",
                          f"mx: {h.host}", "RFC 8461 §4.1"))
            continue
        if dane_host and hd is not None and hd.passed is not False:
            continue  # DANE-authenticated: WebPKI findings belong to the consistency area
        for p in h.probes:
            subject = f"{h.host} [{p.address}]"
            if p.error_stage == "connect":
                continue  # reported by the TLS checks
            if not p.handshake_done:
                # RFC 8461 §4: STARTTLS and TLS 1.2+ are required for policy delivery.
                out.append(_f("mta-sts.mx-no-tls", severity, subject,
                              f"no TLS 1.2+ session with a policy MX host ({p.error}): "
                              f"senders {'refuse' if policy.mode is Mode.ENFORCE else 'report'}"
                              " it", "enable STARTTLS with TLS 1.2 or later",
                              "RFC 8461 §4"))
            elif p.pkix_ok is False:
                out.append(_f("mta-sts.mx-cert-invalid", severity, subject,
                              f"the MX certificate fails WebPKI validation under the policy "
                              f"({pkix_problem(p)})",
                              f"install a publicly trusted certificate valid for {h.host} "
                              "and send the full chain", "RFC 8461 §4.2"))
    used = {p for p in policy.mx if any(_match(p, h.host) for h in mx_hosts)}
    for pattern in policy.mx:
        if pattern not in used and mx_hosts:
            out.append(_f("mta-sts.mx-unused", Severity.INFO, url,
                          f"mx pattern {pattern!r} matches no current MX host",
                          "remove it when the host is retired (publish a new policy id)",
                          "RFC 8461 §3.2"))
    return out


def _match(pattern: str, host: str) -> bool:
    norm = normalize_host(host)
    return norm is not None and mx_matches(pattern, norm)
