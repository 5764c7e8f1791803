"""DANE and MTA-STS together, and TLSRPT beside them (pure).

A sender that validates DNSSEC uses DANE for an MX host with usable TLSA records and
ignores MTA-STS for it (RFC 8461 §2); a sender without DNSSEC uses MTA-STS only. A
domain that publishes both must satisfy both kinds of sender:

- every DANE MX host must be listed in the MTA-STS policy, or MTA-STS-only senders
  refuse it (enforce) or report it (testing) (RFC 8461 §4.1);
- a certificate that passes DANE must also pass WebPKI validation under an ``enforce``
  policy, or MTA-STS-only senders refuse it (RFC 8461 §4.2);
- a ``testing`` policy is pointless without TLSRPT, which carries its reports
  (RFC 8461 §5, RFC 8460).
"""

from __future__ import annotations

from smtptls.check.dane import DaneStatus, DaneView
from smtptls.check.facts import DomainFacts
from smtptls.check.findings import Area, Finding, Severity
from smtptls.check.mtasts import StsView
from smtptls.check.tls import pkix_problem
from smtptls.check.tlsrpt import TlsrptView
from smtptls.mtasts.policy import Mode

__all__ = ["check_consistency"]


def _f(code: str, severity: Severity, subject: str, message: str, fix: str | None = None,
       rfc: str | None = None) -> Finding:
    return Finding(code, severity, Area.CONSISTENCY, subject, message, fix, rfc)


def check_consistency(facts: DomainFacts, sts: StsView, dane: DaneView,
                      tlsrpt: TlsrptView) -> list[Finding]:
    d = facts.domain
    out: list[Finding] = []
    if facts.null_mx or facts.mx.nxdomain or facts.mx.failed:
        return out
    policy = sts.policy
    active = policy is not None and policy.mode in (Mode.ENFORCE, Mode.TESTING)
    if policy is not None and active:
        severity = Severity.ERROR if policy.mode is Mode.ENFORCE else Severity.WARNING
        verb = "refuse" if policy.mode is Mode.ENFORCE else "report"
        by_name = {h.host: h for h in facts.hosts}
        for h in dane.hosts:
            if not h.protected:
                continue
            if not policy.matches_mx(h.host):
                out.append(_f("consistency.dane-mx-not-in-policy", severity, h.host,
                              f"DANE protects {h.host}, but the MTA-STS policy does not list "
                              f"it: senders without DNSSEC {verb} this MX",
                              f"mx: {h.host}", "RFC 8461 §4.1"))
                continue
            if h.passed is not True:
                continue
            for p in by_name[h.host].probes if h.host in by_name else ():
                if p.pkix_ok is False:
                    out.append(_f("consistency.dane-pass-webpki-fail",
                                  severity, f"{h.host} [{p.address}]",
                                  f"the certificate passes DANE but fails WebPKI validation "
                                  f"({pkix_problem(p)}): under the {policy.mode.value} policy "
                                  f"senders without DNSSEC {verb} this MX",
                                  f"install a publicly trusted certificate for {h.host} (and "
                                  "publish its 3 1 1 TLSA record first), or remove the host "
                                  "from the policy", "RFC 8461 §4.2"))
    if dane.status in (DaneStatus.PASS, DaneStatus.PARTIAL) and not sts.present:
        out.append(_f("consistency.dane-without-mta-sts", Severity.INFO, d,
                      "DANE is deployed but MTA-STS is not: senders that do not validate "
                      "DNSSEC get no downgrade protection",
                      "publish an MTA-STS policy listing the same MX hosts "
                      "(smtptls publish mta-sts)", "RFC 8461 §2"))
    if active and policy is not None and not tlsrpt.present:
        if policy.mode is Mode.TESTING:
            out.append(_f("consistency.testing-without-tlsrpt", Severity.WARNING, d,
                          "the MTA-STS policy is in testing mode but there is no TLSRPT record: "
                          "the failures testing mode exists to reveal are reported nowhere",
                          f'_smtp._tls.{d}. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{d}"',
                          "RFC 8461 §5, RFC 8460 §3"))
        else:
            out.append(_f("consistency.policy-without-tlsrpt", Severity.INFO, d,
                          "no TLSRPT record: you will not hear about senders failing your "
                          "MTA-STS policy",
                          f'_smtp._tls.{d}. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{d}"',
                          "RFC 8460 §3"))
    elif dane.status in (DaneStatus.PASS, DaneStatus.PARTIAL) and not tlsrpt.present:
        out.append(_f("consistency.dane-without-tlsrpt", Severity.INFO, d,
                      "no TLSRPT record: you will not hear about senders failing DANE",
                      f'_smtp._tls.{d}. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{d}"',
                      "RFC 8460 §3"))
    return out
