"""Every check outcome from hand-built facts: the right finding, severity and fix."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from smtptls.check import evaluate
from smtptls.check.facts import FetchFacts, LookupFacts, RuaFacts
from smtptls.check.findings import Severity
from smtptls.check.render import render_report
from smtptls.dane.tlsa import TLSARecord

from .builders import INS, NOW, B, S, facts, host, leaf, policy_body, probe, tlsa_311

MX1 = "mx1.example.com"
MX2 = "mx2.example.com"
URL = "https://mta-sts.example.com/.well-known/mta-sts.txt"
STS = ("v=STSv1; id=20250601",)
RPT = ("v=TLSRPTv1; rua=mailto:tlsrpt@example.com",)


def good_host(name: str = MX1, pref: int = 10, **kw) -> object:
    return host(name, pref, probes=(probe(name),), **kw)


def dane_host(name: str = MX1, pref: int = 10, **kw) -> object:
    return host(name, pref, tlsa=(tlsa_311(name),), probes=(probe(name, **kw),))


def fetch_error(kind: str, status: int | None = None, reason: str | None = None):
    return FetchFacts(URL, None, status, None, kind, f"{kind} failure", reason)


# (id, facts, code, severity)
CASES = [
    # --- MX ---------------------------------------------------------------------------
    ("mx-bogus", lambda: facts(mx_sec=B, mx_records=(), mx_error="SERVFAIL", hosts=()),
     "mx.bogus", Severity.ERROR),
    ("mx-lookup-timeout", lambda: facts(mx_sec=Security_ind(), mx_records=(),
                                        mx_error="timeout", hosts=()),
     "mx.lookup-failed", Severity.ERROR),
    ("mx-nxdomain", lambda: facts(mx_records=(), nxdomain=True, hosts=()),
     "mx.nxdomain", Severity.ERROR),
    ("mx-null", lambda: facts(mx_records=("0 .",), hosts=()), "mx.null", Severity.INFO),
    ("mx-none-implicit", lambda: facts(mx_records=(), hosts=(
        host("example.com", None, probes=(probe("example.com"),)),)),
     "mx.none", Severity.WARNING),
    ("mx-unsigned", lambda: facts(mx_sec=INS, hosts=(good_host(sec=INS),)),
     "mx.unsigned", Severity.INFO),
    ("mx-invalid-target", lambda: facts(mx_records=("10 mx1.example.com.", "20 -bad-.x."),
                                        hosts=(good_host(),)),
     "mx.invalid-target", Severity.ERROR),
    ("mx-host-no-address", lambda: facts(hosts=(host(MX1, addresses=()),)),
     "mx.host-no-address", Severity.ERROR),
    ("mx-host-bogus", lambda: facts(hosts=(host(MX1, sec=B, addresses=()),)),
     "mx.host-address-bogus", Severity.ERROR),
    ("mx-host-alias", lambda: facts(hosts=(host(MX1, cname=("real.example.net",),
                                                probes=(probe(MX1),)),)),
     "mx.host-is-alias", Severity.WARNING),
    # --- TLS --------------------------------------------------------------------------
    ("tls-unreachable", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, starttls=False, version=None, stage="connect", error="refused"),)),)),
     "tls.unreachable", Severity.ERROR),
    ("tls-banner-failure", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, starttls=False, version=None, stage="banner", error="tarpit"),)),)),
     "tls.smtp-failed", Severity.ERROR),
    ("tls-no-starttls", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, starttls=False, version=None, stage="starttls", error="not offered"),)),)),
     "tls.starttls-missing", Severity.WARNING),
    ("tls-handshake-failed", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, version=None, stage="handshake", error="protocol version"),)),)),
     "tls.handshake-failed", Severity.ERROR),
    ("tls-1.2", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, version="TLSv1.2", cipher="ECDHE-RSA-AES256-GCM-SHA384"),)),)),
     "tls.no-tls13", Severity.INFO),
    ("tls-cipher-no-pfs", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, version="TLSv1.2", cipher="AES256-GCM-SHA384"),)),)),
     "tls.cipher-weak", Severity.WARNING),
    ("tls-cert-expired", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, pkix=False, pkix_type="certificate-expired",
        not_after=NOW - dt.timedelta(days=1)),)),)),
     "tls.cert-expired", Severity.ERROR),
    ("tls-cert-expiring", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, not_after=NOW + dt.timedelta(days=13)),)),)),
     "tls.cert-expiring", Severity.WARNING),
    ("tls-cert-name", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, pkix=False, pkix_type="certificate-host-mismatch"),)),)),
     "tls.cert-name-mismatch", Severity.WARNING),
    ("tls-cert-untrusted", lambda: facts(hosts=(host(MX1, probes=(probe(MX1, pkix=False),)),)),
     "tls.cert-untrusted", Severity.WARNING),
    ("tls-session-after-tls", lambda: facts(hosts=(host(MX1, probes=(probe(
        MX1, stage="ehlo-tls", error="closed"),)),)),
     "tls.session-failed", Severity.WARNING),
    # --- MTA-STS ----------------------------------------------------------------------
    ("sts-absent", lambda: facts(), "mta-sts.absent", Severity.INFO),
    ("sts-multiple", lambda: facts(sts=("v=STSv1; id=1", "v=STSv1; id=2")),
     "mta-sts.txt-multiple", Severity.ERROR),
    ("sts-invalid", lambda: facts(sts=("v=STSv1; id=not-valid!",)),
     "mta-sts.txt-invalid", Severity.ERROR),
    ("sts-extra-semicolon", lambda: facts(sts=("v=STSv1; id=20160831085700Z;;;",)),
     "mta-sts.txt-extra-semicolon", Severity.WARNING),
    ("sts-duplicate-id", lambda: facts(sts=("v=STSv1; id=foo; id=bar",)),
     "mta-sts.txt-duplicate-id", Severity.WARNING),
    ("sts-extension", lambda: facts(sts=("v=STSv1; id=1; ext=x",)),
     "mta-sts.txt-extension", Severity.INFO),
    ("sts-lookup-bogus", lambda: facts(sts=()) and _sts_bogus(),
     "mta-sts.txt-lookup-failed", Severity.ERROR),
    ("sts-fetch-tls", lambda: facts(sts=STS, policy=fetch_error("tls", reason="expired")),
     "mta-sts.policy-tls", Severity.ERROR),
    ("sts-fetch-404", lambda: facts(sts=STS, policy=fetch_error("status", 404)),
     "mta-sts.policy-status", Severity.ERROR),
    ("sts-fetch-redirect", lambda: facts(sts=STS, policy=fetch_error("status", 301)),
     "mta-sts.policy-redirect", Severity.ERROR),
    ("sts-fetch-content-type", lambda: facts(sts=STS, policy=fetch_error("content-type")),
     "mta-sts.policy-content-type", Severity.ERROR),
    ("sts-fetch-too-large", lambda: facts(sts=STS, policy=fetch_error("too-large")),
     "mta-sts.policy-too-large", Severity.ERROR),
    ("sts-fetch-timeout", lambda: facts(sts=STS, policy=fetch_error("timeout")),
     "mta-sts.policy-timeout", Severity.ERROR),
    ("sts-fetch-dns", lambda: facts(sts=STS, policy=fetch_error("dns")),
     "mta-sts.policy-host-dns", Severity.ERROR),
    ("sts-policy-invalid", lambda: facts(sts=STS, policy="version: STSv1\nmode: bad\n"),
     "mta-sts.policy-invalid", Severity.ERROR),
    ("sts-max-age-over-limit", lambda: facts(sts=STS, policy=policy_body(max_age=99999999)),
     "mta-sts.policy-invalid", Severity.ERROR),
    ("sts-duplicate-key", lambda: facts(sts=STS, policy=(
        "version: STSv1\r\nmode: enforce\r\nmode: testing\r\nmax_age: 604800\r\n"
        f"mx: {MX1}\r\n")), "mta-sts.policy-duplicate-key", Severity.WARNING),
    ("sts-unknown-key", lambda: facts(sts=STS, policy=policy_body(extra="badkey: badvalue\n")),
     "mta-sts.policy-unknown-key", Severity.INFO),
    ("sts-mode-none", lambda: facts(sts=STS, policy=policy_body("none")),
     "mta-sts.mode-none", Severity.INFO),
    ("sts-mode-testing", lambda: facts(sts=STS, tlsrpt=RPT, policy=policy_body("testing")),
     "mta-sts.mode-testing", Severity.INFO),
    ("sts-max-age-short", lambda: facts(sts=STS, policy=policy_body(max_age=3600)),
     "mta-sts.max-age-short", Severity.WARNING),
    ("sts-max-age-advice", lambda: facts(sts=STS, policy=policy_body(max_age=86400)),
     "mta-sts.max-age-advice", Severity.INFO),
    ("sts-mx-not-covered-enforce", lambda: facts(
        sts=STS, hosts=(good_host(), good_host(MX2, 20)), policy=policy_body()),
     "mta-sts.mx-not-covered", Severity.ERROR),
    ("sts-mx-not-covered-testing", lambda: facts(
        sts=STS, tlsrpt=RPT, hosts=(good_host(), good_host(MX2, 20)),
        policy=policy_body("testing")), "mta-sts.mx-not-covered", Severity.WARNING),
    ("sts-mx-unused", lambda: facts(sts=STS, policy=policy_body(mx=(MX1, "old.example.com"))),
     "mta-sts.mx-unused", Severity.INFO),
    ("sts-mx-cert-invalid", lambda: facts(sts=STS, hosts=(host(MX1, probes=(probe(
        MX1, pkix=False),)),)), "mta-sts.mx-cert-invalid", Severity.ERROR),
    ("sts-mx-no-tls", lambda: facts(sts=STS, hosts=(host(MX1, probes=(probe(
        MX1, starttls=False, version=None, stage="starttls", error="not offered"),)),)),
     "mta-sts.mx-no-tls", Severity.ERROR),
    ("sts-no-mx", lambda: facts(sts=STS, mx_records=(), hosts=(
        host("example.com", None, probes=(probe("example.com"),)),),
        policy=policy_body(mx=("example.com",))), "mta-sts.no-mx", Severity.WARNING),
    # --- TLSRPT -----------------------------------------------------------------------
    ("rpt-absent", lambda: facts(), "tlsrpt.absent", Severity.INFO),
    ("rpt-multiple", lambda: facts(tlsrpt=RPT * 2), "tlsrpt.multiple", Severity.ERROR),
    ("rpt-invalid", lambda: facts(tlsrpt=("v=TLSRPTv1; rua=nonsense",)),
     "tlsrpt.invalid", Severity.ERROR),
    ("rpt-duplicate-rua", lambda: facts(tlsrpt=(
        "v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com",)),
     "tlsrpt.duplicate-rua", Severity.WARNING),
    ("rpt-extra-semicolon", lambda: facts(tlsrpt=(
        "v=TLSRPTv1; rua=mailto:a@example.com;;",)), "tlsrpt.extra-semicolon", Severity.WARNING),
    ("rpt-no-usable-rua", lambda: facts(tlsrpt=("v=TLSRPTv1; rua=ftp://x.example.com/r",)),
     "tlsrpt.no-usable-rua", Severity.ERROR),
    ("rpt-unsupported-scheme", lambda: facts(tlsrpt=(
        "v=TLSRPTv1; rua=ftp://x.example.com/r,mailto:a@example.com",)),
     "tlsrpt.unsupported-scheme", Severity.WARNING),
    ("rpt-mailto-unreachable", lambda: facts(tlsrpt=RPT, rua=(RuaFacts(
        "mailto:tlsrpt@example.com", "mailto", False, "null MX"),)),
     "tlsrpt.rua-mail-unreachable", Severity.ERROR),
    ("rpt-https-unreachable", lambda: facts(tlsrpt=("v=TLSRPTv1; rua=https://r.example.com/",),
                                            rua=(RuaFacts("https://r.example.com/", "https",
                                                          False, "refused"),)),
     "tlsrpt.rua-https-unreachable", Severity.ERROR),
    ("rpt-https-404", lambda: facts(tlsrpt=("v=TLSRPTv1; rua=https://r.example.com/",),
                                    rua=(RuaFacts("https://r.example.com/", "https", True,
                                                  "404", 404),)),
     "tlsrpt.rua-https-not-found", Severity.WARNING),
    # --- DANE -------------------------------------------------------------------------
    ("dane-tlsa-bogus", lambda: facts(hosts=(host(MX1, tlsa_sec=B, probes=(probe(MX1),)),)),
     "dane.tlsa-bogus", Severity.ERROR),
    ("dane-no-usable", lambda: facts(hosts=(host(MX1, tlsa=(TLSARecord(
        1, 1, 1, tlsa_311(MX1).data),), probes=(probe(MX1),)),)),
     "dane.no-usable-tlsa", Severity.ERROR),
    ("dane-pkix-usage", lambda: facts(hosts=(host(MX1, tlsa=(
        TLSARecord(1, 1, 1, tlsa_311(MX1).data), tlsa_311(MX1)), probes=(probe(MX1),)),)),
     "dane.pkix-usage", Severity.WARNING),
    ("dane-mismatch", lambda: facts(hosts=(host(MX1, tlsa=(tlsa_311(MX2),),
                                                probes=(probe(MX1),)),)),
     "dane.mismatch", Severity.ERROR),
    ("dane-starttls-missing", lambda: facts(hosts=(host(MX1, tlsa=(tlsa_311(MX1),), probes=(
        probe(MX1, starttls=False, version=None, stage="starttls", error="not offered"),)),)),
     "dane.starttls-missing", Severity.ERROR),
    ("dane-tls-failed", lambda: facts(hosts=(host(MX1, tlsa=(tlsa_311(MX1),), probes=(
        probe(MX1, version=None, stage="handshake", error="alert"),)),)),
     "dane.tls-failed", Severity.ERROR),
    ("dane-partial", lambda: facts(hosts=(dane_host(), good_host(MX2, 20))),
     "dane.partial", Severity.WARNING),
    ("dane-ignored-insecure-mx", lambda: facts(mx_sec=INS, hosts=(dane_host(),)),
     "dane.tlsa-ignored", Severity.WARNING),
    ("dane-rollover-no-next-key", lambda: facts(hosts=(dane_host(),)),
     "dane.rollover.no-next-key", Severity.INFO),
    ("dane-rollover-prefer-311", lambda: facts(hosts=(host(MX1, tlsa=(TLSARecord(
        3, 0, 1, __import__("hashlib").sha256(leaf(MX1)).digest()),), probes=(probe(MX1),)),)),
     "dane.rollover.prefer-3-1-1", Severity.INFO),
    # --- consistency ------------------------------------------------------------------
    ("dane-mx-not-in-policy", lambda: facts(sts=STS, hosts=(good_host(), dane_host(MX2, 20)),
                                            policy=policy_body()),
     "consistency.dane-mx-not-in-policy", Severity.ERROR),
    ("dane-pass-webpki-fail", lambda: facts(sts=STS, hosts=(dane_host(pkix=False),)),
     "consistency.dane-pass-webpki-fail", Severity.ERROR),
    ("dane-without-mta-sts", lambda: facts(hosts=(dane_host(),)),
     "consistency.dane-without-mta-sts", Severity.INFO),
    ("testing-without-tlsrpt", lambda: facts(sts=STS, policy=policy_body("testing")),
     "consistency.testing-without-tlsrpt", Severity.WARNING),
    ("enforce-without-tlsrpt", lambda: facts(sts=STS),
     "consistency.policy-without-tlsrpt", Severity.INFO),
    ("dane-without-tlsrpt", lambda: facts(hosts=(dane_host(),)),
     "consistency.dane-without-tlsrpt", Severity.INFO),
]


def Security_ind():  # noqa: N802 - reads like the enum member it returns
    from smtptls.dnssec import Security
    return Security.INDETERMINATE


def _sts_bogus():
    from dataclasses import replace
    f = facts()
    return replace(f, sts_txt=LookupFacts(f"_mta-sts.{f.domain}", B, (), "SERVFAIL"))


@pytest.mark.parametrize(("make", "code", "severity"),
                         [pytest.param(m, c, s, id=i) for i, m, c, s in CASES])
def test_check_outcome(make, code, severity):
    report = evaluate(make())
    found = [f for f in report.findings if f.code == code]
    assert found, f"{code} not in {[f.code for f in report.findings]}"
    assert found[0].severity is severity
    # Every report renders within 100 columns and serializes to JSON.
    text = render_report(report)
    assert max(len(line) for line in text.splitlines()) <= 100
    json.dumps(report.to_dict())


def test_clean_domain_has_only_info():
    f = facts(sts=STS, tlsrpt=RPT, hosts=(dane_host(),))
    report = evaluate(f)
    assert report.worst in (None, Severity.INFO), [x.code for x in report.findings]
    assert not report.failed
    assert report.adoption.mta_sts == "enforce"
    assert report.adoption.tlsrpt is True
    assert report.adoption.dane == "pass"


def test_findings_sorted_worst_first():
    report = evaluate(facts(sts=STS, hosts=(good_host(), good_host(MX2, 20)),
                            policy=policy_body(max_age=3600)))
    ranks = [f.severity.rank for f in report.findings]
    assert ranks == sorted(ranks, reverse=True)


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_auditor_severity_follows_corpus_consensus(corpus):
    """Disputed vectors: the auditor severity is the corpus' consensus.auditor."""
    data = json.loads((corpus / "vectors" / "mtasts_tlsrpt_conformance.json").read_text())
    wanted = {"warn": Severity.WARNING, "info": Severity.INFO, "error": Severity.ERROR}
    checked = 0
    for section in ("txt_record", "policy", "tlsrpt_txt"):
        for v in data[section]:
            consensus = v.get("consensus")
            if not consensus or "auditor" not in consensus:
                continue
            if section == "txt_record":
                f = facts(sts=(v["input"],))
                area = "mta-sts"
            elif section == "policy":
                f = facts(sts=STS, policy=v["input"],
                          hosts=(good_host("mail.example.com"),))
                area = "mta-sts"
            else:
                f = facts(tlsrpt=(v["input"],))
                area = "tlsrpt"
            report = evaluate(f)
            mine = [x for x in report.findings if x.area.value == area
                    and x.code not in ("mta-sts.mode-testing", "mta-sts.max-age-advice")]
            worst = max((x.severity for x in mine), key=lambda s: s.rank)
            assert worst is wanted[consensus["auditor"]], (v["input"], [x.code for x in mine])
            checked += 1
    assert checked == 7


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_max_age_advice_thresholds():
    rows = [(3600, "enforce", "mta-sts.max-age-short"),
            (86399, "enforce", "mta-sts.max-age-short"),
            (86400, "enforce", "mta-sts.max-age-advice"),
            (3600, "testing", "mta-sts.max-age-advice"),
            (604800, "enforce", None)]
    for max_age, mode, code in rows:
        report = evaluate(facts(sts=STS, tlsrpt=RPT, policy=policy_body(mode, max_age=max_age)))
        codes = {f.code for f in report.findings if f.code.startswith("mta-sts.max-age")}
        assert codes == ({code} if code else set()), (max_age, mode, codes)


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_fix_names_the_missing_mx_line():
    report = evaluate(facts(sts=STS, hosts=(good_host(), good_host(MX2, 20)),
                            policy=policy_body()))
    f = next(x for x in report.findings if x.code == "mta-sts.mx-not-covered")
    assert f.subject == MX2
    assert f.fix == f"mx: {MX2}"


@pytest.mark.rfc("7672 3.1.3")
def test_rfc7672_3_1_3_fix_is_a_311_record_for_the_served_key():
    report = evaluate(facts(hosts=(host(MX1, tlsa=(TLSARecord(1, 1, 1, b"\0" * 32),),
                                        probes=(probe(MX1),)),)))
    f = next(x for x in report.findings if x.code == "dane.no-usable-tlsa")
    assert f.fix == f"_25._tcp.{MX1}. IN TLSA {tlsa_311(MX1).to_text()}"


@pytest.mark.rfc("7672 2.2")
def test_rfc7672_2_2_dane_pass_makes_pkix_failure_informational():
    report = evaluate(facts(hosts=(dane_host(pkix=False),)))
    f = next(x for x in report.findings if x.code == "tls.cert-untrusted")
    assert f.severity is Severity.INFO


def test_time_limited_gathering_is_a_warning():
    from dataclasses import replace
    report = evaluate(replace(facts(), timed_out=True))
    assert any(f.code == "check.time-limit" and f.severity is Severity.WARNING
               for f in report.findings)


def test_no_smtp_means_no_tls_findings():
    report = evaluate(facts(smtp=False, hosts=(host(MX1),)))
    assert not [f for f in report.findings if f.area.value == "tls"]
    assert report.to_dict()["smtp_probed"] is False


def test_expiry_horizon_boundaries():
    from smtptls.check.tls import expiry_findings
    for days, code in [(-1, "tls.cert-expired"), (0, "tls.cert-expiring"),
                       (13, "tls.cert-expiring"), (15, None)]:
        p = probe(MX1, not_after=NOW + dt.timedelta(days=days, hours=1 if days >= 0 else 0))
        got = [f.code for f in expiry_findings("x", p, NOW)]
        assert got == ([code] if code else []), days


@pytest.mark.parametrize(("version", "cipher", "weak"), [
    ("TLSv1.3", "TLS_AES_128_GCM_SHA256", False),
    ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256", False),
    ("TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", False),
    ("TLSv1.2", "ECDHE-RSA-AES256-SHA384", True),
    ("TLSv1.2", "AES128-GCM-SHA256", True),
    ("TLSv1.2", "DES-CBC3-SHA", True),
    ("TLSv1.2", "RC4-SHA", True),
], ids=lambda v: str(v))
def test_rfc9325_cipher_advice(version, cipher, weak):
    from smtptls.check.tls import cipher_problem
    assert (cipher_problem(version, cipher) is not None) is weak


def test_secure_everything_reports_dnssec_statuses():
    d = evaluate(facts(hosts=(dane_host(),))).to_dict()
    assert d["mx"]["lookup"]["security"] == "secure"
    assert d["dane"]["hosts"][0]["requirement"] == "dane-required"
    assert d["dane"]["hosts"][0]["live"][0]["match"] is True
    assert S.value == "secure"
