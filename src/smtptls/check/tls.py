"""STARTTLS and TLS checks per MX address (pure).

RFC 3207 (STARTTLS), RFC 8996 and RFC 8461 §4 (TLS 1.2 or later), RFC 9325 (cipher
suite recommendations), RFC 6125 / RFC 8461 §4.2 (certificate names, PKIX). The
severities here are those of plain opportunistic TLS: a certificate problem is a
warning, because without a policy senders encrypt anyway; the MTA-STS and DANE checks
raise it to an error where a policy makes senders refuse the MX.
"""

from __future__ import annotations

import datetime as dt

from smtptls.check.dane import DaneView
from smtptls.check.facts import DomainFacts, ProbeFacts
from smtptls.check.findings import Area, Finding, Severity

__all__ = ["EXPIRY_WARNING_DAYS", "check_tls", "cipher_problem", "expiry_findings",
           "pkix_problem"]

#: A certificate expiring within this many days is a warning.
EXPIRY_WARNING_DAYS = 14


def pkix_problem(p: ProbeFacts) -> str:
    """Why the chain fails WebPKI validation, in an operator's words.

    The verifier's own text (library wording, certificate reprs) stays in the facts
    (``--json``: ``mx.hosts[].tls[].pkix.reason``); findings say what is wrong with the server.
    """
    kind = p.pkix_result_type
    if not p.chain_der:
        return "the server sent no certificate"
    if kind == "certificate-host-mismatch":
        return f"the certificate is not valid for {p.server_name or 'this host name'}"
    if kind == "certificate-expired":
        if p.cert is None:
            return "the certificate is outside its validity period"
        return (f"the certificate is outside its validity period (valid "
                f"{p.cert.not_before:%Y-%m-%d} to {p.cert.not_after:%Y-%m-%d})")
    if p.cert is not None and p.cert.subject == p.cert.issuer:
        return "the certificate is self-signed: no certificate authority vouches for it"
    if kind == "certificate-not-trusted":
        if len(p.chain_der) == 1:
            return ("the certificate is not issued by a trusted certificate authority, or "
                    "the server does not send its intermediate certificates")
        return "the chain does not lead to a trusted certificate authority"
    return "the certificate chain is malformed"


def _f(code: str, severity: Severity, subject: str, message: str, fix: str | None = None,
       rfc: str | None = None) -> Finding:
    return Finding(code, severity, Area.TLS, subject, message, fix, rfc)


def cipher_problem(version: str | None, cipher: str | None) -> str | None:
    """Why a negotiated suite is weak (RFC 9325 §4.2), or None."""
    if not cipher or version == "TLSv1.3":
        return None  # every TLS 1.3 suite is AEAD with forward secrecy
    name = cipher.upper()
    for bad in ("NULL", "EXPORT", "RC4", "DES-CBC3", "3DES", "IDEA", "SEED", "MD5"):
        if bad in name:
            return f"{cipher} uses {bad}, which is broken or obsolete"
    if not (name.startswith("ECDHE") or name.startswith("DHE")):
        return f"{cipher} has no forward secrecy (static RSA key exchange)"
    if "GCM" not in name and "CHACHA20" not in name and "CCM" not in name:
        return f"{cipher} is not an AEAD suite (CBC mode)"
    return None


def expiry_findings(subject: str, probe: ProbeFacts, now: dt.datetime) -> list[Finding]:
    cert = probe.cert
    if cert is None:
        return []
    if now > cert.not_after:
        return [_f("tls.cert-expired", Severity.ERROR, subject,
                   f"the certificate expired on {cert.not_after:%Y-%m-%d}",
                   "renew the certificate and reload the mail server", "RFC 5280 §4.1.2.5")]
    if now < cert.not_before:
        return [_f("tls.cert-not-yet-valid", Severity.ERROR, subject,
                   f"the certificate is valid only from {cert.not_before:%Y-%m-%d %H:%M}Z",
                   "check the server clock and the certificate's validity dates",
                   "RFC 5280 §4.1.2.5")]
    left = cert.not_after - now
    if left < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        days = max(0, left.days)
        return [_f("tls.cert-expiring", Severity.WARNING, subject,
                   f"the certificate expires in {days} day(s), on {cert.not_after:%Y-%m-%d}",
                   "renew the certificate now (automate renewal, e.g. ACME)", None)]
    return []


def check_tls(facts: DomainFacts, dane: DaneView, now: dt.datetime) -> list[Finding]:
    out: list[Finding] = []
    for host in facts.hosts:
        if not host.probed:
            continue
        hd = dane.host(host.host)
        dane_ok = hd is not None and hd.protected and hd.passed is True
        for p in host.probes:
            subject = f"{host.host} [{p.address}]"
            if p.error_stage == "connect":
                out.append(_f("tls.unreachable", Severity.ERROR, subject,
                              f"cannot open an SMTP session: {p.error}",
                              "make port 25 reachable on this address, or remove the MX/"
                              "address record", "RFC 5321 §5.1"))
                continue
            if not p.starttls_offered:
                if p.error_stage in ("banner", "ehlo"):
                    out.append(_f("tls.smtp-failed", Severity.ERROR, subject,
                                  f"the SMTP session failed before STARTTLS: {p.error}",
                                  None, "RFC 5321 §4.2"))
                else:
                    out.append(_f("tls.starttls-missing", Severity.WARNING, subject,
                                  "the server does not offer STARTTLS: mail to it travels "
                                  "in clear text",
                                  "enable STARTTLS with a certificate for this host "
                                  "(Postfix: smtpd_tls_security_level = may, "
                                  "smtpd_tls_chain_files = key.pem, fullchain.pem)",
                                  "RFC 3207 §4"))
                continue
            if not p.handshake_done:
                out.append(_f("tls.handshake-failed", Severity.ERROR, subject,
                              f"STARTTLS is offered but no TLS 1.2+ session can be "
                              f"established: {p.error}",
                              "enable TLS 1.2 and 1.3 with current cipher suites",
                              "RFC 8996, RFC 8461 §4"))
                continue
            if p.error_stage is not None:
                out.append(_f("tls.session-failed", Severity.WARNING, subject,
                              f"TLS was established but the session then failed: {p.error}",
                              None, "RFC 3207 §4.2"))
            if p.tls_version == "TLSv1.2":
                out.append(_f("tls.no-tls13", Severity.INFO, subject,
                              "TLS 1.2 negotiated; TLS 1.3 is not offered",
                              "enable TLS 1.3 (OpenSSL 1.1.1 or later)", "RFC 8446"))
            weak = cipher_problem(p.tls_version, p.cipher)
            if weak is not None:
                out.append(_f("tls.cipher-weak", Severity.WARNING, subject, weak,
                              "prefer ECDHE with AES-GCM or ChaCha20-Poly1305 suites",
                              "RFC 9325 §4.2"))
            expiry = expiry_findings(subject, p, now)
            out.extend(expiry)
            if p.pkix_ok is False and not expiry:
                if dane_ok:
                    severity = Severity.INFO  # DANE authenticates it; WebPKI is optional
                else:
                    severity = Severity.WARNING
                names = ", ".join(p.cert.dns_names[:6]) if p.cert and p.cert.dns_names \
                    else "none"
                if p.pkix_result_type == "certificate-host-mismatch":
                    out.append(_f("tls.cert-name-mismatch", severity, subject,
                                  f"the certificate is not valid for {host.host} "
                                  f"(names: {names})",
                                  f"issue a certificate whose subjectAltName includes "
                                  f"DNS:{host.host}", "RFC 6125 §6, RFC 8461 §4.2"))
                elif p.pkix_result_type != "certificate-expired":
                    out.append(_f("tls.cert-untrusted", severity, subject,
                                  f"the certificate chain does not validate: "
                                  f"{pkix_problem(p)}",
                                  "use a certificate from a public CA and send the full chain "
                                  "(leaf then intermediates)", "RFC 8461 §4.2"))
    return out
