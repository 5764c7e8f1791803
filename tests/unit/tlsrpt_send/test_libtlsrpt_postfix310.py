"""Datagrams of the real libtlsrpt linked into Debian trixie's Postfix 3.10, decoded.

Each constant is one datagram exactly as received on ``smtp_tlsrpt_socket_name`` from
Postfix 3.10.13 + libtlsrpt 0.5.0rc1 in the loopback lab (tests/lab/postfix310.py), for
the delivery named after it; tests/e2e/test_postfix310_tlsrpt.py produces the same
datagrams live. What they taught the decoder (smtptls.tlsrptsend.libtlsrpt docstring): no
``dpv``; ``h`` is the whole multi-line EHLO reply; TLSA blocks name the MX host as their
``policy-domain``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.libtlsrpt import FailureCode, decode_datagram, helo_name

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)

# --- captured from the real library (lab net 127.100) ------------------------------------
STSGOOD = b'{"d": "stsgood.insecure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":2,"policy-domain": "stsgood.insecure.test","policy-string":["version: STSv1","mode: enforce","mx: mx1.stsgood.insecure.test","max_age: 86400"],"mx-host":["mx1.stsgood.insecure.test"],"t":0,"f":0}]}'
STSBAD = b'{"d": "stsbad.insecure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":2,"policy-domain": "stsbad.insecure.test","policy-string":["version: STSv1","mode: enforce","mx: mx1.stsbad.insecure.test","max_age: 86400"],"mx-host":["mx1.stsbad.insecure.test"],"failure-details":[{"c":202,"s": "127.100.0.10","n": "mx1.stsbad.insecure.test","h": "250-mx1.stsbad.insecure.test\\r\\n250-SIZE 10485760\\r\\n250-8BITMIME\\r\\n250-SMTPUTF8\\r\\n250-STARTTLS\\r\\n250 HELP","r": "127.100.1.2"}],"t":1,"f":1}]}'
STSUNTR = b'{"d": "stsuntr.insecure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":2,"policy-domain": "stsuntr.insecure.test","policy-string":["version: STSv1","mode: enforce","mx: mx1.stsuntr.insecure.test","max_age: 86400"],"mx-host":["mx1.stsuntr.insecure.test"],"failure-details":[{"c":205,"s": "127.100.0.10","n": "mx1.stsuntr.insecure.test","h": "250-mx1.stsuntr.insecure.test\\r\\n250-SIZE 10485760\\r\\n250-8BITMIME\\r\\n250-SMTPUTF8\\r\\n250-STARTTLS\\r\\n250 HELP","r": "127.100.1.3","f": "unable_to_get_local_issuer_certificate"}],"t":1,"f":1}]}'
STSFAIL = b'{"d": "stsfail.insecure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":2,"policy-domain": "stsfail.insecure.test","failure-details":[{"c":301,"s": "127.100.0.10","n": "mx1.stsfail.insecure.test","h": "250-mx1.stsfail.insecure.test\\r\\n250-SIZE 10485760\\r\\n250-8BITMIME\\r\\n250-SMTPUTF8\\r\\n250-STARTTLS\\r\\n250 HELP","r": "127.100.1.4"}],"t":1,"f":1}]}'
DANEGOOD = b'{"d": "danegood.secure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":1,"policy-domain": "mx1.danegood.secure.test","policy-string":["3 1 1 D890378F37211442033FFDD7BE331924A7A170D42F0E27C46108C15C77549B14"],"t":0,"f":0}]}'
DANEBAD = b'{"d": "danebad.secure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":1,"policy-domain": "mx1.danebad.secure.test","policy-string":["3 1 1 ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB"],"failure-details":[{"c":203,"s": "127.100.0.10","n": "mx1.danebad.secure.test","h": "250-mx1.danebad.secure.test\\r\\n250-SIZE 10485760\\r\\n250-8BITMIME\\r\\n250-SMTPUTF8\\r\\n250-STARTTLS\\r\\n250 HELP","r": "127.100.1.9"}],"t":1,"f":1}]}'
NOPOL = b'{"d": "nopol.insecure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":9,"policy-domain": "nopol.insecure.test","t":0,"f":0}]}'
TMAY = b'{"d": "tmay.insecure.test","pr": "v=TLSRPTv1; rua=mailto:r@reports.test","policies":[{"policy-type":2,"policy-domain": "tmay.insecure.test","policy-string":["version: STSv1","mode: testing","mx: mx1.tmay.insecure.test","max_age: 86400"],"mx-host":["mx1.tmay.insecure.test"],"t":0,"f":0}]}'


def one(data: bytes):  # type: ignore[no-untyped-def]
    (result,) = decode_datagram(data).to_results(NOW)
    return result


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_sts_success_carries_the_policy_postfix_was_given() -> None:
    d = decode_datagram(STSGOOD)
    assert d.version is None  # libtlsrpt 0.5 sends no "dpv"
    assert d.tlsrpt_record == "v=TLSRPTv1; rua=mailto:r@reports.test"
    r = one(STSGOOD)
    assert r.policy.policy_type is PolicyType.STS
    assert r.policy.policy_domain == "stsgood.insecure.test"
    assert r.policy.policy_strings == ("version: STSv1", "mode: enforce",
                                       "mx: mx1.stsgood.insecure.test", "max_age: 86400")
    assert r.policy.mx_patterns == ("mx1.stsgood.insecure.test",)
    assert not r.failed and r.failures == ()


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_receiving_mx_helo_is_the_greeting_name_not_the_ehlo_reply() -> None:
    # "h" is "250-mx1...\r\n250-SIZE ...\r\n250 HELP": a report field has no CR/LF
    raw = decode_datagram(STSBAD).policies[0].failures[0]
    assert "\r\n" in (raw.receiving_mx_helo or "")
    r = one(STSBAD)
    (f,) = r.failures
    assert f.result_type is ResultType.CERTIFICATE_HOST_MISMATCH
    assert f.receiving_mx_helo == "mx1.stsbad.insecure.test"
    assert f.receiving_mx_hostname == "mx1.stsbad.insecure.test"
    assert f.receiving_ip == "127.100.1.2"
    assert f.sending_mta_ip == "127.100.0.10"
    assert r.failed


@pytest.mark.rfc("8460 4.3")
def test_rfc8460_4_3_untrusted_chain_is_validation_failure_with_openssl_reason() -> None:
    (f,) = one(STSUNTR).failures
    assert f.result_type is ResultType.VALIDATION_FAILURE
    assert f.failure_reason_code == "unable_to_get_local_issuer_certificate"


@pytest.mark.rfc("8460 4.3")
def test_rfc8460_4_3_policy_failure_attribute_reported_as_sts_policy_fetch_error() -> None:
    r = one(STSFAIL)
    assert r.policy.policy_type is PolicyType.STS
    assert r.policy.policy_strings == ()  # none were given with policy_failure
    (f,) = r.failures
    assert f.result_type is ResultType.STS_POLICY_FETCH_ERROR


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_tlsa_result_belongs_to_the_recipient_domain() -> None:
    # Postfix puts the TLSA base domain (the MX host) in "policy-domain"; the report is
    # for the recipient domain "d", whose TLSRPT record "pr" is
    assert decode_datagram(DANEGOOD).policies[0].policy_domain == "mx1.danegood.secure.test"
    r = one(DANEGOOD)
    assert r.policy.policy_type is PolicyType.TLSA
    assert r.policy.policy_domain == "danegood.secure.test"
    assert r.policy.policy_strings[0].startswith("3 1 1 ")
    assert not r.failed


@pytest.mark.rfc("8460 4.3")
def test_rfc8460_4_3_tlsa_mismatch_postfix_reports_certificate_not_trusted() -> None:
    r = one(DANEBAD)
    assert r.policy.policy_domain == "danebad.secure.test"
    (f,) = r.failures
    assert decode_datagram(DANEBAD).policies[0].failures[0].code is \
        FailureCode.CERTIFICATE_NOT_TRUSTED
    assert f.result_type is ResultType.CERTIFICATE_NOT_TRUSTED
    assert f.receiving_mx_hostname == "mx1.danebad.secure.test"


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_no_policy_found_names_the_recipient_domain() -> None:
    r = one(NOPOL)
    assert r.policy.policy_type is PolicyType.NO_POLICY_FOUND
    assert r.policy.policy_domain == "nopol.insecure.test"
    assert not r.failed


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_testing_policy_at_may_reported_as_success_with_its_strings() -> None:
    r = one(TMAY)
    assert r.policy.policy_type is PolicyType.STS
    assert "mode: testing" in r.policy.policy_strings
    assert not r.failed


@pytest.mark.parametrize(("reply", "name"), [
    ("250-mx1.example\r\n250-SIZE 10485760\r\n250 HELP", "mx1.example"),
    ("250 mx1.example ESMTP ready", "mx1.example"),
    ("mx1.example", "mx1.example"),
    ("250-\r\n250 HELP", None),
    ("", None),
    (None, None),
])
def test_helo_name_from_ehlo_reply(reply: str | None, name: str | None) -> None:
    assert helo_name(reply) == name
