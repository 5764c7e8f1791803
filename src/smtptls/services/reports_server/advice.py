"""What each RFC 8460 result type means for the domain owner, and what to do about it.

One place for the console's explanations: the domain page's failures table, the alert
texts and ``reports alerts`` all call :func:`advice`. The certificate fixes say what
``smtptls check`` says for the same fault (``check/tls.py``: "renew the certificate
and reload the mail server", "use a certificate from a public CA and send the full
chain"), here phrased for a failure a reporter saw rather than one the check found.

RFC 8460 §4.3 result types: negotiation failures (§4.3.1), DANE policy failures
(§4.3.2.1), MTA-STS policy failures (§4.3.2.2). An unknown type gets a general text.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtptls.tlsrpt.report import ResultType

__all__ = ["Advice", "advice"]


@dataclass(frozen=True, slots=True)
class Advice:
    explanation: str
    fix: str


def _on(mx: str) -> str:
    return f"on {mx}" if mx else "on your MX host"


def advice(result_type: str, *, mx: str = "", policy_type: str = "",
           last_seen: str = "") -> Advice:
    """Plain words for one failure group (result type, receiving MX, policy type)."""
    host = _on(mx)
    since = f" (last reported {last_seen})" if last_seen else ""
    tlsa = policy_type == "tlsa"
    match result_type:
        case ResultType.CERTIFICATE_EXPIRED:
            return Advice(
                f"The certificate {host} had expired when senders connected{since}.",
                "Renew the certificate and reload the mail server"
                + ("; you publish TLSA: publish the new key's TLSA record first, wait for "
                   "its TTL, then switch" if tlsa else
                   "; if you publish TLSA, publish the new key's record first") + ".")
        case ResultType.CERTIFICATE_HOST_MISMATCH:
            return Advice(
                f"The certificate {host} does not name the host senders connected to"
                f"{since}.",
                f"Issue a certificate whose subjectAltName includes DNS:{mx or 'your MX name'}"
                " and reload the mail server; the names in your MTA-STS policy's mx lines "
                "must match it.")
        case ResultType.CERTIFICATE_NOT_TRUSTED:
            return Advice(
                f"Senders could not build a trusted chain for the certificate {host}{since}: "
                "self-signed, from a private CA, or sent without its intermediates.",
                "Use a certificate from a public CA and send the full chain (leaf then "
                "intermediates).")
        case ResultType.STARTTLS_NOT_SUPPORTED:
            return Advice(
                f"The server {host} did not offer STARTTLS{since}, so mail could not be "
                "delivered securely.",
                "Enable STARTTLS with a certificate for this host (Postfix: "
                "smtpd_tls_security_level = may, smtpd_tls_chain_files = key.pem, "
                "fullchain.pem); check that no middlebox strips it.")
        case ResultType.VALIDATION_FAILURE:
            return Advice(
                f"The TLS session {host} failed for a reason the reporter did not classify"
                f"{since}.",
                "Run smtptls check for the domain and look at the reporter's failure "
                "reason code and additional information in the report.")
        case ResultType.TLSA_INVALID:
            return Advice(
                f"No TLSA record for {mx or 'your MX host'} matched the certificate it "
                f"presented{since}.",
                "Publish a TLSA record that matches the current key (3 1 1 <sha256 of the "
                "public key>), keep the old one until its TTL has passed, and publish the "
                "next key's record before every rollover.")
        case ResultType.DNSSEC_INVALID:
            return Advice(
                f"Senders got no valid DNSSEC answer for the TLSA or MX records{since}.",
                "Check the DNSSEC chain (DS at the parent, unexpired signatures) with "
                "smtptls check; a bogus zone blocks all DANE-protected mail.")
        case ResultType.DANE_REQUIRED:
            return Advice(
                f"The sender requires DANE for your domain, but no usable TLSA records were "
                f"found{since}.",
                "Publish TLSA records in a DNSSEC-signed zone for every MX host, or ask the "
                "sender to drop the requirement.")
        case ResultType.STS_POLICY_FETCH_ERROR:
            return Advice(
                f"Senders could not fetch your MTA-STS policy over HTTPS{since}.",
                "Make https://mta-sts.<your domain>/.well-known/mta-sts.txt answer 200 with "
                "a text/plain policy and a certificate valid for that name "
                "(smtptls policy-server can serve it).")
        case ResultType.STS_POLICY_INVALID:
            return Advice(
                f"Senders fetched your MTA-STS policy but could not parse it{since}.",
                "Fix the policy file (version: STSv1, mode, mx and max_age lines; CRLF or "
                "LF line ends) and change the id in the _mta-sts TXT record.")
        case ResultType.STS_WEBPKI_INVALID:
            return Advice(
                f"The certificate of the MTA-STS policy host (or {mx or 'an MX host'}) did "
                f"not validate{since}.",
                "Use a certificate from a public CA for mta-sts.<your domain> and each MX, "
                "sent with its full chain.")
        case _:
            return Advice(
                f"Senders reported {result_type or 'an unnamed failure'} {host}{since}.",
                "Run smtptls check for the domain and read the reporter's additional "
                "information in the report.")
