"""Postfix 3.x log lines -> SMTP sessions -> RFC 8460 §4.3 results (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from send_helpers import STS_LINES

from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.postfix_lines import (
    Problem,
    TlsLevel,
    is_report_message_id,
    parse_syslog_line,
    problems_in,
    report_message_id,
)
from smtptls.tlsrptsend.postfix_log import PostfixLogParser
from smtptls.tlsrptsend.postfix_results import PolicyContext, results_for, session_result

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SENDING_IP = "198.51.100.25"
CIPHER = ("TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
          "server-signature RSA-PSS (2048 bits) server-digest SHA256")
MX1 = "mx1.mail.example.com[192.0.2.10]:25"
MX2 = "mx2.mail.example.com[192.0.2.11]:25"
DANE_MX = "mx1.example.net[192.0.2.20]:25"
TLSA = ("3 1 1 0f2c1b3a4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8",)

STS_ENFORCE = PolicyContext("example.com", "sts", "enforce", STS_LINES, ("*.mail.example.com",))
STS_TESTING = PolicyContext("example.com", "sts", "testing", STS_LINES, ("*.mail.example.com",))
DANE = PolicyContext("example.net", "tlsa", tlsa_records={"mx1.example.net": TLSA})
NONE = PolicyContext("example.org")
FETCH_ERROR = PolicyContext("example.com", sts_failure=ResultType.STS_POLICY_FETCH_ERROR)
CONTEXTS = {c.domain: c for c in (STS_ENFORCE, DANE, NONE)}


def log(*lines: str, start: datetime = datetime(2024, 5, 1, 10, 0, 0)) -> list[str]:
    """Syslog lines as Postfix 3.7 writes them (one second apart)."""
    out = []
    for i, text in enumerate(lines):
        t = start + timedelta(seconds=i)
        out.append(f"{t:%b} {t.day:2d} {t:%H:%M:%S} mta {text}")
    return out


def status(qid: str, rcpt: str, relay: str, state: str, text: str, dsn: str = "2.0.0") -> str:
    return (f"{qid}: to=<{rcpt}>, relay={relay}, delay=0.42, delays=0.05/0.01/0.2/0.16, "
            f"dsn={dsn}, status={state} ({text})")


def sessions_of(lines: list[str], parser: PostfixLogParser | None = None):
    parser = parser or PostfixLogParser()
    out = []
    for line in lines:
        out += parser.feed(line, NOW)
    return out


def results_of(lines, context: PolicyContext | None = None):
    sessions = sessions_of(lines)
    return [session_result(s, context or CONTEXTS.get(s.domain), sending_ip=SENDING_IP)
            for s in sessions]


def summary(result):
    """(policy-type, result-type or 'ok', MX host, receiving IP)"""
    rtype = "ok" if not result.failed else str(result.failures[0].result_type)
    return (str(result.policy.policy_type), rtype, result.mx_host, result.receiving_ip)


# --- the mapping table -------------------------------------------------------------------------

SCENARIOS = [
    pytest.param(log(
        "postfix/qmgr[900]: 4F2A1C0B3D: from=<alice@sender.example>, size=1234, nrcpt=2 "
        "(queue active)",
        f"postfix/smtp[1234]: Verified TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1234]: " + status("4F2A1C0B3D", "bob@example.com", MX1, "sent",
                                        "250 2.0.0 Ok: queued as 9C1D2E3F4A"),
        "postfix/smtp[1234]: " + status("4F2A1C0B3D", "carol@example.com", MX1, "sent",
                                        "250 2.0.0 Ok: queued as 9C1D2E3F4A"),
    ), STS_ENFORCE, [("sts", "ok", "mx1.mail.example.com", "192.0.2.10")],
        id="verified-two-recipients-one-session"),
    pytest.param(log(
        f"postfix/smtp[1235]: server certificate verification failed for {MX1}: "
        "certificate has expired",
        f"postfix/smtp[1235]: Untrusted TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1235]: " + status("5A6B7C8D9E", "bob@example.com", MX1, "sent",
                                        "250 2.0.0 Ok: queued as 1A2B3C4D5E"),
    ), STS_TESTING, [("sts", "certificate-expired", "mx1.mail.example.com", "192.0.2.10")],
        id="sts-testing-expired-delivered"),
    pytest.param(log(
        f"postfix/smtp[1236]: certificate verification failed for {MX1}: untrusted issuer "
        "/C=XX/O=Evil CA/CN=Evil Root",
        f"postfix/smtp[1236]: Untrusted TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1236]: 5B3C2D1E0F: Server certificate not verified",
        f"postfix/smtp[1236]: Verified TLS connection established to {MX2}: {CIPHER}",
        "postfix/smtp[1236]: " + status("5B3C2D1E0F", "bob@example.com", MX2, "sent",
                                        "250 2.0.0 Ok: queued as 7F6E5D4C3B"),
    ), STS_ENFORCE, [("sts", "certificate-not-trusted", "mx1.mail.example.com", "192.0.2.10"),
                     ("sts", "ok", "mx2.mail.example.com", "192.0.2.11")],
        id="enforce-untrusted-then-next-mx"),
    pytest.param(log(
        f"postfix/smtp[1237]: Trusted TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1237]: " + status("6C5D4E3F2A", "bob@example.com", MX1, "deferred",
                                        "Server certificate not verified", "4.7.5"),
    ), STS_ENFORCE, [("sts", "certificate-host-mismatch", "mx1.mail.example.com", "192.0.2.10")],
        id="enforce-trusted-name-mismatch"),
    pytest.param(log(
        f"postfix/smtp[1238]: server certificate verification failed for {MX1}: "
        "num=62:hostname mismatch",
        f"postfix/smtp[1238]: Untrusted TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1238]: " + status("6C5D4E3F2B", "bob@example.com", MX1, "deferred",
                                        "Server certificate not verified", "4.7.5"),
    ), STS_ENFORCE, [("sts", "certificate-host-mismatch", "mx1.mail.example.com", "192.0.2.10")],
        id="enforce-openssl-hostname-mismatch"),
    pytest.param(log(
        "postfix/smtp[1239]: " + status(
            "7D6E5F4A3B", "bob@example.com", MX1, "deferred",
            "TLS is required, but was not offered by host mx1.mail.example.com[192.0.2.10]",
            "4.7.4"),
    ), STS_ENFORCE, [("sts", "starttls-not-supported", "mx1.mail.example.com", "192.0.2.10")],
        id="enforce-no-starttls"),
    pytest.param(log(
        "postfix/smtp[1240]: 8E7F6A5B4C: TLS is required, but host "
        "mx1.mail.example.com[192.0.2.10] refused to start TLS: 454 4.7.0 TLS not available",
        f"postfix/smtp[1240]: Verified TLS connection established to {MX2}: {CIPHER}",
        "postfix/smtp[1240]: " + status("8E7F6A5B4C", "bob@example.com", MX2, "sent", "250 Ok"),
    ), STS_ENFORCE, [("sts", "starttls-not-supported", "mx1.mail.example.com", "192.0.2.10"),
                     ("sts", "ok", "mx2.mail.example.com", "192.0.2.11")],
        id="starttls-refused-non-final"),
    pytest.param(log(
        "postfix/smtp[1241]: " + status("9F8A7B6C5D", "dave@example.org",
                                        "mx.example.org[203.0.113.5]:25", "sent", "250 Ok"),
    ), NONE, [("no-policy-found", "starttls-not-supported", "mx.example.org", "203.0.113.5")],
        id="plaintext-delivery"),
    pytest.param(log(
        "postfix/smtp[1242]: Untrusted TLS connection established to "
        f"mx.example.org[203.0.113.5]:25: {CIPHER}",
        "postfix/smtp[1242]: " + status("9F8A7B6C5E", "dave@example.org",
                                        "mx.example.org[203.0.113.5]:25", "sent", "250 Ok"),
    ), NONE, [("no-policy-found", "ok", "mx.example.org", "203.0.113.5")],
        id="opportunistic-untrusted-is-success"),
    pytest.param(log(
        "postfix/smtp[1243]: " + status("AB12CD34EF", "erin@example.net", "none", "deferred",
                                        "TLSA lookup error for mx1.example.net:25", "4.7.5"),
    ), DANE, [("tlsa", "dnssec-invalid", "mx1.example.net", None)],
        id="dane-tlsa-lookup-error"),
    pytest.param(log(
        f"postfix/smtp[1244]: certificate verification failed for {DANE_MX}: not trusted by "
        "local or TLSA policy",
        f"postfix/smtp[1244]: Untrusted TLS connection established to {DANE_MX}: {CIPHER}",
        "postfix/smtp[1244]: " + status("BC23DE45F0", "erin@example.net", DANE_MX, "deferred",
                                        "Server certificate not verified", "4.7.5"),
    ), DANE, [("tlsa", "tlsa-invalid", "mx1.example.net", "192.0.2.20")],
        id="dane-certificate-matches-no-tlsa"),
    pytest.param(log(
        f"postfix/smtp[1245]: warning: {DANE_MX}: all TLSA records unusable, fallback to "
        "unauthenticated TLS",
        f"postfix/smtp[1245]: Untrusted TLS connection established to {DANE_MX}: {CIPHER}",
        "postfix/smtp[1245]: " + status("CD34EF56A1", "erin@example.net", DANE_MX, "sent",
                                        "250 Ok"),
    ), DANE, [("tlsa", "tlsa-invalid", "mx1.example.net", "192.0.2.20")],
        id="dane-all-records-unusable"),
    pytest.param(log(
        "postfix/smtp[1246]: " + status("DE45F067B2", "erin@example.net", "none", "deferred",
                                        "mx1.example.net: no TLSA records found", "4.7.5"),
    ), DANE, [("tlsa", "dane-required", "mx1.example.net", None)],
        id="dane-only-no-tlsa"),
    pytest.param(log(
        f"postfix/smtp[1247]: Verified TLS connection established to {DANE_MX}: {CIPHER}",
        "postfix/smtp[1247]: " + status("EF56A178C3", "erin@example.net", DANE_MX, "sent",
                                        "250 Ok"),
    ), DANE, [("tlsa", "ok", "mx1.example.net", "192.0.2.20")], id="dane-verified"),
    pytest.param(log(
        f"postfix/smtp[1248]: Verified TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1248]: " + status("F067B289D4", "bob@example.com", MX1, "sent", "250 Ok"),
    ), FETCH_ERROR, [("sts", "sts-policy-fetch-error", "mx1.mail.example.com", "192.0.2.10")],
        id="sts-fetch-error-every-session"),
    pytest.param(log(
        f"postfix/smtp[1249]: Anonymous TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1249]: " + status("A178C39AE5", "bob@example.com", MX1, "sent", "250 Ok"),
    ), STS_TESTING, [("sts", "validation-failure", "mx1.mail.example.com", "192.0.2.10")],
        id="sts-anonymous-tls"),
    pytest.param(log(
        "postfix/smtp[1250]: Verified TLS connection established to "
        f"mx.elsewhere.example[192.0.2.99]:25: {CIPHER}",
        "postfix/smtp[1250]: " + status("B289D4AF06", "bob@example.com",
                                        "mx.elsewhere.example[192.0.2.99]:25", "sent", "250 Ok"),
    ), STS_TESTING, [("sts", "validation-failure", "mx.elsewhere.example", "192.0.2.99")],
        id="sts-testing-mx-outside-policy"),
    pytest.param(log(
        f"postfix/smtp[1251]: Verified TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1251]: C39AE5B017: host mx1.mail.example.com[192.0.2.10] said: 451 4.3.0 "
        "try again later (in reply to end of DATA command)",
        f"postfix/smtp[1251]: Verified TLS connection established to {MX2}: {CIPHER}",
        "postfix/smtp[1251]: " + status("C39AE5B017", "bob@example.com", MX2, "sent", "250 Ok"),
    ), STS_ENFORCE, [("sts", "ok", "mx1.mail.example.com", "192.0.2.10"),
                     ("sts", "ok", "mx2.mail.example.com", "192.0.2.11")],
        id="tls-fine-then-smtp-error"),
    pytest.param(log(
        "postfix/smtp[1252]: " + status("D4AF06C128", "bob@example.com", MX1, "deferred",
                                        "Cannot start TLS: handshake failure", "4.7.5"),
    ), STS_ENFORCE, [("sts", "validation-failure", "mx1.mail.example.com", "192.0.2.10")],
        id="handshake-failure"),
    pytest.param(log(
        "postfix/smtp[1253]: CA certificate verification failed for "
        f"{MX1}: num=24:invalid CA certificate",
        f"postfix/smtp[1253]: Untrusted TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1253]: " + status("E5B017D239", "bob@example.com", MX1, "deferred",
                                        "Server certificate not verified", "4.7.5"),
    ), STS_ENFORCE, [("sts", "certificate-not-trusted", "mx1.mail.example.com", "192.0.2.10")],
        id="other-x509-error-untrusted"),
]


# Lines as the lab's Postfix 3.7.11 wrote them (tests/e2e/test_postfix_tlsrpt.py), with the
# host names shortened: at the opportunistic level (MTA-STS testing) Postfix logs only the
# trust level; where it verifies (enforce, DANE) it logs the OpenSSL reason first.
REAL_37 = [
    pytest.param(log(
        "postfix/smtp[32030]: Untrusted TLS connection established to mx1.mail.example.com"
        "[127.225.1.2]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
        "key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256",
        "postfix/smtp[32030]: B5C2E212672: to=<user@example.com>, relay=mx1.mail.example.com"
        "[127.225.1.2]:25, delay=0.02, delays=0/0/0.01/0, dsn=2.0.0, status=sent (250 OK)",
    ), STS_TESTING, [("sts", "certificate-not-trusted", "mx1.mail.example.com", "127.225.1.2")],
        id="postfix37-sts-testing-untrusted"),
    pytest.param(log(
        "postfix/smtp[32030]: server certificate verification failed for mx1.mail.example.com"
        "[127.225.1.3]:25: num=62:hostname mismatch",
        "postfix/smtp[32030]: Untrusted TLS connection established to mx1.mail.example.com"
        "[127.225.1.3]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
        "key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256",
        "postfix/smtp[32030]: D017F212672: to=<user@example.com>, relay=mx1.mail.example.com"
        "[127.225.1.3]:25, delay=0.02, delays=0/0/0.02/0, dsn=4.7.5, status=deferred "
        "(Server certificate not verified)",
    ), STS_ENFORCE, [("sts", "certificate-host-mismatch", "mx1.mail.example.com",
                      "127.225.1.3")], id="postfix37-sts-enforce-hostname-mismatch"),
    pytest.param(log(
        "postfix/smtp[32030]: server certificate verification failed for mx1.example.net"
        "[127.225.1.5]:25: num=65:no matching DANE TLSA records",
        "postfix/smtp[32030]: Untrusted TLS connection established to mx1.example.net"
        "[127.225.1.5]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
        "key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256",
        "postfix/smtp[32030]: 13DEA2126D2: to=<user@example.net>, relay=mx1.example.net"
        "[127.225.1.5]:25, delay=0.03, delays=0/0/0.03/0, dsn=4.7.5, status=deferred "
        "(Server certificate not verified)",
    ), DANE, [("tlsa", "tlsa-invalid", "mx1.example.net", "127.225.1.5")],
        id="postfix37-dane-no-matching-tlsa"),
    pytest.param(log(
        "postfix/smtp[32030]: 316032126D2: to=<user@example.org>, relay=mx1.example.org"
        "[127.225.1.6]:25, delay=0.01, delays=0/0/0.01/0, dsn=2.0.0, status=sent (250 OK)",
    ), NONE, [("no-policy-found", "starttls-not-supported", "mx1.example.org", "127.225.1.6")],
        id="postfix37-plaintext"),
    pytest.param(log(
        "postfix/smtp[32030]: Trusted TLS connection established to mx1.example.org"
        "[127.225.1.7]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
        "key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256",
        "postfix/smtp[32030]: 4B9962126D2: to=<user@example.org>, relay=mx1.example.org"
        "[127.225.1.7]:25, delay=0.01, delays=0/0/0.01/0, dsn=2.0.0, status=sent (250 OK)",
    ), NONE, [("no-policy-found", "ok", "mx1.example.org", "127.225.1.7")],
        id="postfix37-opportunistic-trusted"),
]


@pytest.mark.rfc("8460 4.3")
@pytest.mark.parametrize(("lines", "context", "expected"), SCENARIOS + REAL_37)
def test_rfc8460_4_3_postfix_log_mapping(lines, context, expected):
    got = results_of(lines, context)
    assert [summary(r) for r in got] == expected
    for r in got:
        assert r.sending_mta_ip == SENDING_IP
        assert r.policy.policy_domain == context.domain


@pytest.mark.rfc("8460 4.3.1")
def test_rfc8460_4_3_1_failure_reason_code_from_postfix_text():
    (r,) = results_of(SCENARIOS[1].values[0], STS_TESTING)
    assert r.failures[0].failure_reason_code == \
        "certificate verification failed: certificate has expired"
    (r,) = results_of(SCENARIOS[-1].values[0], STS_ENFORCE)
    assert r.failures[0].failure_reason_code == "X509 error 24: invalid CA certificate"


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_applied_policy_strings():
    (r,) = results_of(SCENARIOS[0].values[0], STS_ENFORCE)
    assert r.policy.policy_type is PolicyType.STS
    assert r.policy.policy_strings == STS_LINES
    assert r.policy.mx_patterns == ("*.mail.example.com",)
    (r,) = results_of(SCENARIOS[13].values[0], DANE)
    assert r.policy.policy_type is PolicyType.TLSA and r.policy.policy_strings == TLSA


def test_dane_host_without_tlsa_is_no_policy():
    lines = log(
        "postfix/smtp[1260]: Untrusted TLS connection established to "
        f"mx2.example.net[192.0.2.21]:25: {CIPHER}",
        "postfix/smtp[1260]: " + status("A1B2C3D4E5", "erin@example.net",
                                        "mx2.example.net[192.0.2.21]:25", "sent", "250 Ok"))
    (r,) = results_of(lines, DANE)
    assert r.policy.policy_type is PolicyType.NO_POLICY_FOUND and r.succeeded


# --- what is not a session ------------------------------------------------------------------------

@pytest.mark.parametrize("lines", [
    pytest.param(log("postfix/smtp[1300]: " + status(
        "1A2B3C4D5E", "bob@example.com", "none", "deferred",
        "Host or domain name not found. Name service error for name=example.com type=MX: "
        "Host not found, try again", "4.4.3")), id="dns-failure"),
    pytest.param(log(
        "postfix/smtp[1301]: connect to mx1.mail.example.com[192.0.2.10]:25: Connection refused",
        "postfix/smtp[1301]: " + status("1A2B3C4D5F", "bob@example.com", "none", "deferred",
                                        "connect to mx1.mail.example.com[192.0.2.10]:25: "
                                        "Connection refused", "4.4.1")), id="connection-refused"),
    pytest.param(log("postfix/smtp[1302]: " + status(
        "1A2B3C4D60", "bob@example.com", "127.0.0.1[127.0.0.1]:10025", "sent", "250 Ok")),
        id="content-filter-ip-relay"),
    pytest.param(log(
        f"postfix/smtp[1303]: Verified TLS connection reused to {MX1}: {CIPHER}",
        "postfix/smtp[1303]: " + status("1A2B3C4D61", "bob@example.com", MX1, "sent", "250 Ok")),
        id="connection-cache-reuse"),
    pytest.param(log(
        f"postfix/lmtp[1304]: Verified TLS connection established to {MX1}: {CIPHER}",
        "postfix/lmtp[1304]: " + status("1A2B3C4D62", "bob@example.com", MX1, "sent", "250 Ok")),
        id="lmtp-not-smtp"),
    pytest.param(log(
        "postfix/smtpd[1305]: Anonymous TLS connection established from "
        f"client.example[192.0.2.50]: {CIPHER}"), id="inbound-smtpd"),
    pytest.param(log("postfix/smtp[1306]: " + status(
        "1A2B3C4D63", "bob@example.com", "none", "deferred",
        "delivery temporarily suspended: connect to mx1[192.0.2.10]:25: Connection refused",
        "4.4.1")), id="delivery-suspended"),
])
def test_not_a_tls_session(lines):
    assert sessions_of(lines) == []


def test_own_report_mail_is_never_reported():
    mid = report_message_id("d19286edd37f57beb128a64faa1c361e.0", "mta.sender.example")
    lines = log(
        f"postfix/cleanup[901]: 2B3C4D5E6F: message-id=<{mid}>",
        f"postfix/smtp[1400]: Verified TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1400]: " + status("2B3C4D5E6F", "tlsrpt@example.com", MX1, "sent", "250"),
        "postfix/cleanup[901]: 3C4D5E6F7A: message-id=<20240501.abc@sender.example>",
        f"postfix/smtp[1401]: Verified TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[1401]: " + status("3C4D5E6F7A", "bob@example.com", MX1, "sent", "250"),
    )
    parser = PostfixLogParser()
    got = sessions_of(lines, parser)
    assert [s.queue_id for s in got] == ["3C4D5E6F7A"]
    assert parser.stats["own_dropped"] == 1


def test_report_message_id_recognised_only_for_our_submitter():
    mid = report_message_id("abc.1", "mta.sender.example")
    assert is_report_message_id(f"<{mid}>")
    assert is_report_message_id(mid, "MTA.sender.example.")
    assert not is_report_message_id(mid, "other.example")


def test_parallel_processes_kept_apart():
    lines = log(
        f"postfix/smtp[2001]: server certificate verification failed for {MX1}: "
        "certificate has expired",
        f"postfix/smtp[2002]: Verified TLS connection established to {MX2}: {CIPHER}",
        f"postfix/smtp[2001]: Untrusted TLS connection established to {MX1}: {CIPHER}",
        "postfix/smtp[2002]: " + status("4D5E6F7A8B", "x@example.com", MX2, "sent", "250"),
        "postfix/smtp[2001]: " + status("5E6F7A8B9C", "y@example.com", MX1, "sent", "250"),
    )
    got = [summary(r) for r in results_of(lines, STS_TESTING)]
    assert got == [("sts", "ok", "mx2.mail.example.com", "192.0.2.11"),
                   ("sts", "certificate-expired", "mx1.mail.example.com", "192.0.2.10")]


def test_session_time_and_queue_id_and_level():
    (s,) = sessions_of(SCENARIOS[0].values[0])
    assert s.time == datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC)
    assert (s.queue_id, s.tls, s.delivered) == ("4F2A1C0B3D", TlsLevel.VERIFIED, True)


def test_pending_sessions_expire():
    parser = PostfixLogParser()
    sessions_of(log("postfix/smtp[3001]: 6F7A8B9CAD: Server certificate not verified"), parser)
    logged = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert parser.expire(logged + timedelta(minutes=5)) == 0
    assert parser.expire(logged + timedelta(hours=1)) == 1
    assert sessions_of(log("postfix/smtp[3001]: " + status(
        "6F7A8B9CAD", "bob@example.com", MX1, "deferred", "lost connection")), parser) == []


# --- lines --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "expected"), [
    pytest.param("May  1 10:00:01 mta postfix/smtp[1234]: hello",
                 (datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC), "postfix/smtp", 1234, "hello"),
                 id="bsd"),
    pytest.param("2024-05-01T12:00:01.123456+02:00 mta postfix/smtp[7]: x",
                 (datetime(2024, 5, 1, 10, 0, 1, 123456, tzinfo=UTC), "postfix/smtp", 7, "x"),
                 id="rfc3339"),
    pytest.param("2024-05-01T10:00:01.123456789Z mta postfix-out/relay[7]: x",
                 (datetime(2024, 5, 1, 10, 0, 1, 123456, tzinfo=UTC), "postfix-out/relay", 7,
                  "x"), id="rfc3339-nanoseconds"),
    pytest.param("Dec 31 23:59:59 mta postfix/smtp[1]: y",
                 (datetime(2023, 12, 31, 23, 59, 59, tzinfo=UTC), "postfix/smtp", 1, "y"),
                 id="last-years-line"),
])
def test_syslog_line_forms(line, expected):
    parsed = parse_syslog_line(line, now=datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
                               if "Dec" in line else NOW)
    assert (parsed.time, parsed.program, parsed.pid, parsed.message) == expected


def test_syslog_local_time_zone():
    tz = timezone(timedelta(hours=2))
    parsed = parse_syslog_line("May  1 12:00:00 mta postfix/smtp[1]: z", now=NOW, tz=tz)
    assert parsed.time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize("line", ["", "garbage", "May 99 10:00:00 mta postfix/smtp[1]: x",
                                  "Foo  1 10:00:00 mta postfix/smtp[1]: x",
                                  "2024-05-01T10:00:00 mta postfix/smtp[1]: no zone"])
def test_syslog_line_not_postfix(line):
    assert parse_syslog_line(line, now=NOW) is None


def test_journald_entries():
    parser = PostfixLogParser()
    base = 1714557600_000000  # 2024-05-01T10:00:00Z
    entries = [
        {"SYSLOG_IDENTIFIER": "postfix/smtp", "SYSLOG_PID": "42", "__REALTIME_TIMESTAMP":
         str(base), "MESSAGE": f"Verified TLS connection established to {MX1}: {CIPHER}"},
        {"SYSLOG_IDENTIFIER": "postfix/smtp", "_PID": "42", "__REALTIME_TIMESTAMP":
         str(base + 1000), "MESSAGE": list(status("7A8B9CADBE", "bob@example.com", MX1, "sent",
                                                  "250").encode())},
    ]
    got = []
    for e in entries:
        got += parser.feed_journal(e, NOW)
    (s,) = got
    assert s.time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC) and s.tls is TlsLevel.VERIFIED
    assert parser.feed_journal({"MESSAGE": "x"}, NOW) == []
    assert parser.feed_journal({"SYSLOG_IDENTIFIER": "postfix/smtp", "_PID": "x",
                                "MESSAGE": "y"}, NOW) == []


@pytest.mark.parametrize(("text", "problems"), [
    ("TLS is required, but was not offered by host mx[192.0.2.1]", [Problem.NO_STARTTLS]),
    ("Server certificate not trusted", [Problem.NOT_VERIFIED]),
    ("TLSA lookup error for mx.example.net:25", [Problem.TLSA_LOOKUP_ERROR]),
    ("warning: DANE TLSA lookup problem: Host not found", [Problem.TLSA_LOOKUP_ERROR]),
    ("mx: DANE TLSA 3 1 1 records: no usable TLSA", [Problem.TLSA_UNUSABLE]),
    ("certificate name mismatch", [Problem.CERT_NAME_MISMATCH]),
    ("host mx[192.0.2.1] said: 550 no", []),
])
def test_problem_table(text, problems):
    assert problems_in(text) == problems


def test_results_for_skips_silent_sessions():
    sessions = sessions_of(SCENARIOS[0].values[0] + SCENARIOS[7].values[0])
    got = results_for(sessions, lambda d: CONTEXTS.get(d), sending_ip=SENDING_IP)
    assert [summary(r)[:2] for r in got] == [("sts", "ok"),
                                            ("no-policy-found", "starttls-not-supported")]


# --- properties ---------------------------------------------------------------------------------

_FRAGMENTS = [
    f"Verified TLS connection established to {MX1}: {CIPHER}",
    f"Untrusted TLS connection established to {MX2}: {CIPHER}",
    f"Trusted TLS connection reused to {MX1}: {CIPHER}",
    f"certificate verification failed for {MX1}: untrusted issuer /CN=x",
    f"server certificate verification failed for {DANE_MX}: certificate has expired",
    "ABCDEF1234: Server certificate not verified",
    status("ABCDEF1234", "bob@example.com", MX1, "sent", "250 Ok"),
    status("ABCDEF1234", "bob@example.net", "none", "deferred", "TLSA lookup error for a.b:25"),
    status("ABCDEF1235", "x@[192.0.2.1]", MX2, "bounced", "550 no"),
    "ABCDEF1234: TLS is required, but was not offered by host mx[192.0.2.1]",
    "warning: mx1.example.net: all TLSA records unusable",
    "ABCDEF1234: message-id=<tlsrpt.x.0@mta.sender.example>",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["smtp", "cleanup", "relay", "qmgr"]),
                          st.integers(1, 4),
                          st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=80))),
                max_size=40))
def test_property_any_line_sequence_is_safe(events):
    parser = PostfixLogParser()
    for service, pid, text in events:
        line = f"May  1 10:00:00 mta postfix/{service}[{pid}]: {text}"
        for s in parser.feed(line, NOW):
            context = CONTEXTS.get(s.domain) or PolicyContext(s.domain)
            r = session_result(s, context, sending_ip=SENDING_IP)
            assert r is None or r.policy.policy_domain == s.domain
    assert parser.expire(NOW + timedelta(days=1)) >= 0
    assert parser.stats["lines"] == len(events)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_property_parse_line_never_raises(text):
    parsed = parse_syslog_line(text, now=NOW)
    assert parsed is None or parsed.pid >= 0
