"""Exim 4.96 main-log lines to RFC 8460 results: the parser, then the one mapping.

The lines are what the lab's Exim logged (tests/e2e/test_exim_destinations.py); each
row gives the session the parser must rebuild and the RFC 8460 §4.3 result
:func:`session_result` gives it under the policy that applied.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.exim_log import EximLogParser
from smtptls.tlsrptsend.postfix_lines import TlsLevel
from smtptls.tlsrptsend.postfix_results import PolicyContext, session_result

NOW = datetime(2026, 12, 2, 4, 0, tzinfo=UTC)
T = "2026-12-02 03:54:13 1xYbQ5-0000P3-2Q"
X = "X=TLS1.3:ECDHE_SECP256R1__ECDSA_SECP256R1_SHA256__AES_256_GCM:256"

OK_STS = (f"{T} => u@ok.test R=smtptls_mta_sts T=smtptls_mta_sts_smtp H=mx1.ok.test "
          f'[127.1.1.1]:25 {X} CV=yes DN="CN=mx1.ok.test" C="250 OK" DT=0s')
OK_DANE = (f"{T} => u@dn.test R=smtptls_dane T=smtptls_dane_smtp H=mx1.dn.test DS "
           f'[127.1.1.6]:25 {X} CV=dane DN="CN=mx1.dn.test" C="250 OK" DT=0s')
OK_NOVERIFY = (f"{T} => u@op.test R=dnslookup T=remote_smtp H=mx1.op.test [127.1.1.8]:25 "
               f'{X} CV=no DN="CN=wrong-name.lab.invalid" C="250 OK" DT=0s')
OK_PLAIN = (f"{T} => u@pl.test R=dnslookup T=remote_smtp H=mx1.pl.test [127.1.1.9]:25 "
            'C="250 OK" DT=0s')
WRONG_NAME = (f"{T} == u@wn.test R=smtptls_mta_sts T=smtptls_mta_sts_smtp defer (-37) "
              "H=mx1.wn.test [127.1.1.2]:25 DT=0s: TLS session: (certificate verification "
              "failed)")
EXPIRED = (f"{T} == u@ex.test R=smtptls_mta_sts T=smtptls_mta_sts_smtp defer (-37) "
           "H=mx1.ex.test [127.1.1.3]:25 DT=0s: TLS session: (certificate verification "
           "failed): certificate invalid")
NO_TLS = (f"{T} == u@np.test R=smtptls_mta_sts T=smtptls_mta_sts_smtp defer (-38) "
          "H=mx1.np.test [127.1.1.5]:25 DT=0s: a TLS session is required, but the server "
          "did not offer TLS support")
DANE_BAD = (f"{T} == u@db.test R=smtptls_dane T=smtptls_dane_smtp defer (-37) "
            "H=mx1.db.test DS [127.1.1.7]:25 DT=0s: TLS session: (certificate verification "
            "failed): Verification failed. The certificate differs. ")
RETRY = (f"{T} == u@wn.test R=smtptls_mta_sts T=smtptls_mta_sts_smtp defer (-54) DT=0s: "
         "retry time not reached for any host for 'wn.test'")
ROUTER = (f"{T} == u@mx.test R=smtptls_defer defer (-1) DT=0s: smtptls: MTA-STS enforce: "
          "no MX host matches the policy (RFC 8461 4.1): defer delivery")
REFUSED = (f"{T} == u@rf.test R=dnslookup T=remote_smtp defer (111): Connection refused "
           "H=mx1.rf.test [127.1.1.10]:25 DT=0s")

def sts(domain: str, mode: str = "enforce") -> PolicyContext:
    return PolicyContext(domain, kind="sts", sts_mode=mode, mx_patterns=(f"mx1.{domain}",))


def dane(domain: str) -> PolicyContext:
    return PolicyContext(domain, kind="tlsa",
                         tlsa_records={f"mx1.{domain}": ("3 1 1 " + "ab" * 32,)})


@pytest.mark.parametrize(("line", "tls", "delivered"), [
    (OK_STS, TlsLevel.VERIFIED, True), (OK_DANE, TlsLevel.VERIFIED, True),
    (OK_NOVERIFY, TlsLevel.UNTRUSTED, True), (OK_PLAIN, None, True),
    (WRONG_NAME, None, None), (NO_TLS, None, None)])
def test_sessions_rebuilt(line: str, tls: TlsLevel | None, delivered: bool | None) -> None:
    (s,) = EximLogParser().feed(line, NOW)
    assert s.tls is tls and s.delivered is delivered
    assert s.mx_host is not None and s.mx_host.startswith("mx1.")
    assert s.receiving_ip is not None and s.receiving_ip.startswith("127.1.1.")
    assert s.time == datetime(2026, 12, 2, 3, 54, 13, tzinfo=UTC)


@pytest.mark.parametrize("line", [RETRY, ROUTER, REFUSED, "garbage", "x" * 100_000,
                                  f"{T} -> v@ok.test R=r T=t H=h [127.0.0.1]:25 {X} CV=yes",
                                  f"{T} <= s@exim.lab.test H=(x) [127.0.0.1] P=esmtp S=1"])
def test_lines_that_are_no_tls_session(line: str) -> None:
    assert EximLogParser().feed(line, NOW) == []


def test_several_recipients_of_one_attempt_count_once() -> None:
    second = WRONG_NAME.replace("u@wn.test", "v@wn.test")
    assert len(EximLogParser().feed_many([WRONG_NAME, second], NOW)) == 1


def test_time_offset_from_log_selector_tz() -> None:
    line = OK_STS.replace("03:54:13 ", "03:54:13 +0100 ")
    (s,) = EximLogParser().feed(line, NOW)
    assert s.time == datetime(2026, 12, 2, 2, 54, 13, tzinfo=UTC)


@pytest.mark.rfc("8460 4.3")
@pytest.mark.parametrize(("line", "context", "ptype", "result"), [
    (OK_STS, sts("ok.test"), PolicyType.STS, None),
    (OK_DANE, dane("dn.test"), PolicyType.TLSA, None),
    (OK_NOVERIFY, PolicyContext("op.test"), PolicyType.NO_POLICY_FOUND, None),
    (OK_NOVERIFY, sts("op.test", "testing"), PolicyType.STS,
     ResultType.CERTIFICATE_NOT_TRUSTED),
    (OK_PLAIN, PolicyContext("pl.test"), PolicyType.NO_POLICY_FOUND,
     ResultType.STARTTLS_NOT_SUPPORTED),
    (WRONG_NAME, sts("wn.test"), PolicyType.STS, ResultType.VALIDATION_FAILURE),
    (EXPIRED, sts("ex.test"), PolicyType.STS, ResultType.VALIDATION_FAILURE),
    (NO_TLS, sts("np.test"), PolicyType.STS, ResultType.STARTTLS_NOT_SUPPORTED),
    (DANE_BAD, dane("db.test"), PolicyType.TLSA,
     ResultType.TLSA_INVALID),
])
def test_rfc8460_4_3_result_types(line, context, ptype, result) -> None:  # type: ignore[no-untyped-def]
    (s,) = EximLogParser().feed(line, NOW)
    r = session_result(s, context, sending_ip="127.0.0.11")
    assert r is not None
    assert r.policy.policy_type is ptype
    assert r.mx_host == s.mx_host and r.receiving_ip == s.receiving_ip
    if result is None:
        assert not r.failed and r.failures == ()
    else:
        assert r.failed
        assert [f.result_type for f in r.failures] == [result]
