"""Judge one monitoring run of an own domain (pure): facts and the last run in, alerts out.

The facts are those of ``smtptls check`` (:class:`~smtptls.check.facts.DomainFacts` and
its :class:`~smtptls.check.report.CheckReport`), plus what only the owner has: the
certificate chains staged on disk for the next renewal, and the certificate of the
``mta-sts.<domain>`` policy host. Each alert carries the fix in the words of
``check``: the functions that write check's findings write the fixes here too.

Rules, each ahead of the failure it names:

- ``monitor.cert-expiring`` / ``monitor.cert-expired``: an MX or ``mta-sts`` host
  certificate that expires within ``warn_days`` (RFC 5280 §4.1.2.5; RFC 8461 §3.3 for
  the policy host: senders refuse a policy fetched over an invalid certificate).
- ``monitor.tlsa-next-not-covered``: the published TLSA RRset matches the live chain
  but not the staged next one: deploying it breaks every DANE sender (RFC 7671 §8.1,
  RFC 7672 §4).
- ``monitor.mx-not-covered``: an MX host the live MTA-STS policy does not match
  (RFC 8461 §4.1).
- ``monitor.policy-id-unchanged``: the policy body changed while the ``_mta-sts``
  record's id did not, so senders holding the old policy never fetch the new one
  (RFC 8461 §3.1). The alert lasts until the id changes.
- ``monitor.policy-hosts-differ``: the addresses of ``mta-sts.<domain>`` serve
  different policy bodies, so what a sender caches depends on the address it reached
  (RFC 8461 §3.3).
- ``monitor.rua-unreachable``: a TLSRPT ``rua`` destination that cannot take reports
  (RFC 8460 §5.3, §5.4): check's ``tlsrpt.rua-*-unreachable`` findings, with their fix.
- ``monitor.rrsig-expiring``: the RRSIGs over the MX, ``_mta-sts`` TXT, TLSA or MX
  address RRset expire within ``rrsig_warn_days`` (RFC 4034 §3.1.5): past that instant the
  validating resolvers of senders answer SERVFAIL and DANE senders defer (RFC 7672
  §2.1.1); critical within ``RRSIG_CRITICAL_DAYS``. One alert per RRset.
- ``monitor.worse``: a warning or error finding of ``check`` that is new or more
  severe than at the last run.

A run whose MX lookup failed (resolver outage) or that hit the time limit is not
judged: the alerts of the last run stand, so one failed run neither clears nor raises
anything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from smtptls.check.facts import CertFacts, DomainFacts, MxFacts, ProbeFacts
from smtptls.check.findings import Finding
from smtptls.check.findings import Severity as FindingSeverity
from smtptls.check.mtasts import sts_view
from smtptls.check.report import CheckReport
from smtptls.check.tls import expiry_findings
from smtptls.dane.publish import rollover_advice
from smtptls.dnssec import Security
from smtptls.errors import DaneError, SmtpTlsError
from smtptls.mtasts.policy import Mode
from smtptls.services.alerts import Alert, Severity

__all__ = ["DEFAULT_RRSIG_WARN_DAYS", "DEFAULT_WARN_DAYS", "DomainState", "Judgement",
           "RunFacts", "SignedRRset", "judge", "signature_alerts"]

#: Days ahead a certificate expiry is announced (check warns at the same horizon).
DEFAULT_WARN_DAYS = 14
#: Findings judged by "worse" (the audit's own notes are not about the domain).
_NOT_JUDGED = ("check.",)
#: Bounds on what a state entry keeps (findings and alerts per domain).
MAX_STATE_FINDINGS = 500
MAX_STATE_ALERTS = 200
#: Days ahead expiring RRSIGs are announced. Shorter than the certificates' horizon:
#: signers re-sign days, not weeks, ahead (BIND's dnssec-policy refreshes signatures 5
#: days before they expire, Knot 7 days), so a healthy zone never has less left.
DEFAULT_RRSIG_WARN_DAYS = 3
#: Days left at which expiring RRSIGs are critical.
RRSIG_CRITICAL_DAYS = 1
_RANK = {FindingSeverity.INFO.value: 1, FindingSeverity.WARNING.value: 2,
         FindingSeverity.ERROR.value: 3}


@dataclass(frozen=True, slots=True)
class DomainState:
    """What one run leaves for the next: the policy seen, findings, alerts raised."""

    policy_id: str | None = None
    policy_digest: str | None = None
    stale_id: str | None = None  # the id kept across a body change (until it changes)
    findings: Mapping[str, str] = field(default_factory=dict)  # "code|subject" -> severity
    alerts: tuple[Alert, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"policy_id": self.policy_id, "policy_digest": self.policy_digest,
                "stale_id": self.stale_id, "findings": dict(self.findings),
                "alerts": [a.to_dict() for a in self.alerts]}

    @classmethod
    def from_dict(cls, data: Any) -> DomainState:
        """Inverse of :meth:`to_dict`; raises :class:`SmtpTlsError` for anything else."""
        if not isinstance(data, Mapping):
            raise SmtpTlsError("a monitor state entry must be a JSON object")
        try:
            findings = data.get("findings") or {}
            if not isinstance(findings, Mapping):
                raise TypeError("findings")
            alerts = tuple(Alert.from_dict(a) for a in
                           list(data.get("alerts") or [])[:MAX_STATE_ALERTS])
            return cls(policy_id=_opt_str(data.get("policy_id")),
                       policy_digest=_opt_str(data.get("policy_digest")),
                       stale_id=_opt_str(data.get("stale_id")),
                       findings={str(k): str(v) for k, v in
                                 list(findings.items())[:MAX_STATE_FINDINGS]},
                       alerts=alerts)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SmtpTlsError(f"malformed monitor state entry: {exc}") from None


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class SignedRRset:
    """One validated RRset and the earliest Signature Expiration of its RRSIGs."""

    name: str
    rdtype: str
    expires: dt.datetime

    @property
    def subject(self) -> str:
        return f"{self.name} {self.rdtype}"


@dataclass(frozen=True, slots=True)
class RunFacts:
    """Everything one run learnt about one domain."""

    facts: DomainFacts
    report: CheckReport
    staged: Mapping[str, tuple[bytes, ...]] = field(default_factory=dict)  # MX -> DER chain
    policy_cert: CertFacts | None = None  # leaf of mta-sts.<domain>, None if not fetched
    warn_days: int = DEFAULT_WARN_DAYS
    policy_bodies: Mapping[str, str] = field(default_factory=dict)  # address -> body digest
    signatures: tuple[SignedRRset, ...] = ()  # monitor.dnssec.gather_signatures
    rrsig_warn_days: int = DEFAULT_RRSIG_WARN_DAYS


@dataclass(frozen=True, slots=True)
class Judgement:
    alerts: tuple[Alert, ...]
    state: DomainState
    judged: bool = True  # False: the run failed; the last run's alerts stand


def judge(run: RunFacts, previous: DomainState | None) -> Judgement:
    """The alerts active after this run, and the state to keep for the next one."""
    facts = run.facts
    if facts.mx.failed or facts.timed_out:
        kept = previous or DomainState()
        return Judgement(kept.alerts, kept, judged=False)
    when = facts.checked_at
    alerts: list[Alert] = []
    alerts += expiry_alerts(run)
    alerts += tlsa_rollover_alerts(run)
    alerts += coverage_alerts(run)
    policy_alerts, policy_state = policy_change(run, previous)
    alerts += policy_alerts
    alerts += policy_host_alerts(run)
    alerts += rua_alerts(run.report)
    alerts += signature_alerts(run)
    alerts += worse_alerts(run.report, previous)
    seen = {a.key: a.first_seen or a.last_seen for a in (previous.alerts if previous else ())}
    alerts = [replace(a, first_seen=seen.get(a.key) or when, last_seen=when) for a in alerts]
    findings = {_key(f): f.severity.value for f in run.report.findings
                if not f.code.startswith(_NOT_JUDGED)}
    state = replace(policy_state,
                    findings=dict(list(findings.items())[:MAX_STATE_FINDINGS]),
                    alerts=tuple(alerts[:MAX_STATE_ALERTS]))
    return Judgement(tuple(alerts), state)


def _key(f: Finding) -> str:
    return f"{f.code}|{f.subject}"


def _alert(facts: DomainFacts, severity: Severity, code: str, subject: str, message: str,
           fix: str | None) -> Alert:
    return Alert(severity=severity, domain=facts.domain, code=code, subject=subject,
                 message=message, fix=fix or "")


# --- certificates ---------------------------------------------------------------------------


def _renewal_fix(subject: str, probe: ProbeFacts, now: dt.datetime) -> str | None:
    """check's fix for this certificate's expiry; asked at a time check would warn."""
    found = expiry_findings(subject, probe, now)
    if not found and probe.cert is not None:
        found = expiry_findings(subject, probe, probe.cert.not_after - dt.timedelta(days=1))
    return next((f.fix for f in found if f.fix), None)


def _expiry_alert(facts: DomainFacts, subject: str, what: str, probe: ProbeFacts,
                  warn_days: int) -> Alert | None:
    cert = probe.cert
    now = facts.checked_at
    if cert is None:
        return None
    left = cert.not_after - now
    if left >= dt.timedelta(days=warn_days):
        return None
    fix = _renewal_fix(subject, probe, now)
    if left <= dt.timedelta(0):
        return _alert(facts, Severity.CRITICAL, "monitor.cert-expired", subject,
                      f"the {what} certificate of {subject} expired on "
                      f"{cert.not_after:%Y-%m-%d}", fix)
    return _alert(facts, Severity.WARNING, "monitor.cert-expiring", subject,
                  f"the {what} certificate of {subject} expires in {left.days} day(s), on "
                  f"{cert.not_after:%Y-%m-%d}", fix)


def expiry_alerts(run: RunFacts) -> list[Alert]:
    """RFC 5280 §4.1.2.5: certificates of every MX address and of the policy host."""
    facts = run.facts
    out: list[Alert] = []
    for host in facts.hosts:
        for probe in host.probes:
            alert = _expiry_alert(facts, f"{host.host} [{probe.address}]", "MX", probe,
                                  run.warn_days)
            if alert is not None:
                out.append(alert)
    if run.policy_cert is not None:
        name = f"mta-sts.{facts.domain}"
        probe = ProbeFacts(address="", server_name=name, starttls_offered=False,
                           cert=run.policy_cert)
        alert = _expiry_alert(facts, name, "MTA-STS policy host", probe, run.warn_days)
        if alert is not None:
            out.append(alert)
    return out


# --- TLSA rollover --------------------------------------------------------------------------


def _live_probe(host: MxFacts) -> ProbeFacts | None:
    return next((p for p in host.probes if p.chain_der), None)


def tlsa_rollover_alerts(run: RunFacts) -> list[Alert]:
    """RFC 7671 §8.1, RFC 7672 §4: the next certificate must be covered before it is
    deployed. Judged where DANE works today (a secure TLSA RRset matching the live
    chain) and a next chain is staged for the host."""
    facts = run.facts
    out: list[Alert] = []
    for host in facts.hosts:
        staged = run.staged.get(host.host)
        probe = _live_probe(host)
        tlsa = next((t for t in host.tlsa if t.records), None)
        if not staged or probe is None or tlsa is None or tlsa.security is not Security.SECURE:
            continue
        try:
            advice = rollover_advice(tlsa.records, list(probe.chain_der), list(staged))
        except DaneError as exc:
            out.append(_alert(facts, Severity.WARNING, "monitor.staged-unusable", host.host,
                              f"the staged certificate for {host.host} cannot be judged: "
                              f"{exc}", None))
            continue
        if not advice.current_matches or advice.next_matches:
            continue  # broken today (check says so), or the rollover is prepared
        message = next((f.message for f in advice.findings if f.code == "next-not-published"),
                       "no usable record matches the next certificate")
        # the records to publish come from the same judgement as `tlsa check --next`
        fix = "\n".join(f"{tlsa.name.rstrip('.')}. IN TLSA {r.to_text()}"
                        for r in advice.to_publish) or None
        out.append(_alert(facts, Severity.WARNING, "monitor.tlsa-next-not-covered", host.host,
                          f"TLSA {tlsa.name} matches the live certificate of {host.host} "
                          f"but not the staged one: {message}", fix))
    return out


# --- MTA-STS --------------------------------------------------------------------------------


def coverage_alerts(run: RunFacts) -> list[Alert]:
    """RFC 8461 §4.1: every MX host must match an ``mx`` line of the live policy."""
    facts = run.facts
    policy = sts_view(facts).policy
    if policy is None or policy.mode is Mode.NONE:
        return []
    severity = Severity.CRITICAL if policy.mode is Mode.ENFORCE else Severity.WARNING
    fixes = {f.subject: f.fix for f in run.report.findings
             if f.code in ("mta-sts.mx-not-covered", "consistency.dane-mx-not-in-policy")}
    out: list[Alert] = []
    for host in facts.hosts:
        if host.preference is None or policy.matches_mx(host.host):
            continue
        out.append(_alert(facts, severity, "monitor.mx-not-covered", host.host,
                          f"MX host {host.host} matches no mx line of the live MTA-STS "
                          f"policy (mode {policy.mode.value})", fixes.get(host.host)))
    return out


def policy_digest(body: str) -> str:
    return hashlib.sha256(body.encode("utf-8", "surrogateescape")).hexdigest()


def policy_change(run: RunFacts, previous: DomainState | None
                  ) -> tuple[list[Alert], DomainState]:
    """RFC 8461 §3.1: the id must change whenever the policy changes."""
    facts = run.facts
    view = sts_view(facts)
    sts_id = view.record.id if view.record is not None else None
    fetched = facts.policy
    digest = policy_digest(fetched.body) if fetched is not None and fetched.ok \
        and fetched.body is not None else None
    if previous is None:
        return [], DomainState(policy_id=sts_id, policy_digest=digest)
    stale = previous.stale_id
    if (digest is not None and previous.policy_digest is not None
            and digest != previous.policy_digest and sts_id is not None
            and sts_id == previous.policy_id):
        stale = sts_id
    if stale is not None and sts_id != stale:
        stale = None  # a new id was published: senders fetch the new body
    state = DomainState(policy_id=sts_id, policy_digest=digest or previous.policy_digest,
                        stale_id=stale)
    if stale is None:
        return [], state
    owner = f"_mta-sts.{facts.domain}"
    return [_alert(facts, Severity.WARNING, "monitor.policy-id-unchanged", owner,
                   f"the MTA-STS policy changed but {owner} still says id={stale}: senders "
                   "that cached the old policy keep it until max_age runs out",
                   f'{owner}. IN TXT "v=STSv1; id=<a new id, e.g. the date and time>"')], state


def policy_host_alerts(run: RunFacts) -> list[Alert]:
    """RFC 8461 §3.3: every address of the policy host must serve the same policy."""
    bodies = run.policy_bodies
    if len(set(bodies.values())) < 2:
        return []
    name = f"mta-sts.{run.facts.domain}"
    groups: dict[str, list[str]] = {}
    for address, digest in sorted(bodies.items()):
        groups.setdefault(digest, []).append(address)
    shown = "; ".join(", ".join(a) for a in groups.values())
    return [_alert(run.facts, Severity.WARNING, "monitor.policy-hosts-differ", name,
                   f"the addresses of {name} serve {len(groups)} different policy bodies "
                   f"({shown}): senders cache whichever they reach",
                   f"serve one policy file from every address of {name}, then publish a "
                   "new id in _mta-sts")]


# --- DNSSEC signatures ---------------------------------------------------------------------


def _resign_fix(rrset: SignedRRset) -> str:
    return (f"re-sign the zone of {rrset.name} before {rrset.expires:%Y-%m-%d %H:%M} UTC, "
            "then check the signer's schedule (its cron job or re-sign interval) so that "
            "signatures are renewed well before they expire")


def signature_alerts(run: RunFacts) -> list[Alert]:
    """RFC 4034 §3.1.5, RFC 7672 §2.1.1: signatures that expire within
    ``rrsig_warn_days`` (inclusive)."""
    facts = run.facts
    now = facts.checked_at
    earliest: dict[str, SignedRRset] = {}
    for rrset in run.signatures:
        kept = earliest.get(rrset.subject)
        if kept is None or rrset.expires < kept.expires:
            earliest[rrset.subject] = rrset
    out: list[Alert] = []
    for subject, rrset in sorted(earliest.items()):
        left = rrset.expires - now
        if left > dt.timedelta(days=run.rrsig_warn_days):
            continue
        severity = Severity.CRITICAL if left <= dt.timedelta(days=RRSIG_CRITICAL_DAYS) \
            else Severity.WARNING
        when = "expired" if left <= dt.timedelta(0) else \
            f"expire in {_days_hours(left)}"
        out.append(_alert(facts, severity, "monitor.rrsig-expiring", subject,
                          f"the DNSSEC signatures (RRSIG) over {subject} {when}, on "
                          f"{rrset.expires:%Y-%m-%d %H:%M} UTC: then validating senders "
                          "get SERVFAIL for it and defer mail", _resign_fix(rrset)))
    return out


def _days_hours(left: dt.timedelta) -> str:
    hours = int(left.total_seconds() // 3600)
    return f"{hours // 24} day(s) {hours % 24} hour(s)"


# --- TLSRPT --------------------------------------------------------------------------------

_RUA_FINDINGS = ("tlsrpt.rua-mail-unreachable", "tlsrpt.rua-https-unreachable")


def rua_alerts(report: CheckReport) -> list[Alert]:
    """RFC 8460 §5.3, §5.4: reports sent to an unreachable ``rua`` are lost."""
    return [Alert(severity=Severity.WARNING, domain=report.domain,
                  code="monitor.rua-unreachable", subject=f.subject, message=f.message,
                  fix=f.fix or "") for f in report.findings if f.code in _RUA_FINDINGS]


# --- findings that got worse ----------------------------------------------------------------


def worse_alerts(report: CheckReport, previous: DomainState | None) -> list[Alert]:
    """A warning or error finding that is new, or more severe than at the last run."""
    if previous is None:
        return []
    out: list[Alert] = []
    for f in report.findings:
        if f.code.startswith(_NOT_JUDGED) or f.severity is FindingSeverity.INFO:
            continue
        before = previous.findings.get(_key(f))
        if before is not None and _RANK.get(before, 0) >= _RANK[f.severity.value]:
            continue
        was = f"was {before}" if before else "new"
        out.append(Alert(severity=Severity.CRITICAL if f.severity is FindingSeverity.ERROR
                         else Severity.WARNING, domain=report.domain, code="monitor.worse",
                         subject=_key(f), message=f"{f.code} ({f.severity.value}, {was}): "
                         f"{f.message}", fix=f.fix or ""))
    return out
