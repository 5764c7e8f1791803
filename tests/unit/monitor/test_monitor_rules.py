"""The monitor's rules (pure): hand-built facts and last-run states in, alerts out."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest

from smtptls.check import evaluate
from smtptls.check.facts import DomainFacts, FetchFacts, LookupFacts
from smtptls.check.tls import expiry_findings
from smtptls.monitor.rules import DomainState, RunFacts, judge, policy_digest
from smtptls.services.alerts import Severity
from tests.unit.check.builders import (
    NOW,
    facts,
    host,
    leaf,
    leaf_der,
    policy_body,
    probe,
    tlsa_311,
)

MX1 = "mx1.example.com"
STS = ("v=STSv1; id=20250601",)


def _run(f: DomainFacts, previous: DomainState | None = None, **kw):
    return judge(RunFacts(f, evaluate(f), **kw), previous)


def _codes(judgement) -> set[str]:
    return {a.code for a in judgement.alerts}


def _one(judgement, code: str):
    found = [a for a in judgement.alerts if a.code == code]
    assert len(found) == 1, [a.code for a in judgement.alerts]
    return found[0]


# --- certificate expiry ------------------------------------------------------------------------


@pytest.mark.parametrize(("days_left", "warn_days", "code"), [
    pytest.param(90, 14, None, id="far-from-expiry"),
    pytest.param(10, 14, "monitor.cert-expiring", id="within-default-horizon"),
    pytest.param(20, 14, None, id="beyond-default-horizon"),
    pytest.param(20, 30, "monitor.cert-expiring", id="within-configured-horizon"),
    pytest.param(-1, 14, "monitor.cert-expired", id="already-expired"),
])
@pytest.mark.rfc
def test_rfc5280_4_1_2_5_mx_certificate_expiry_horizon(days_left, warn_days, code):
    p = probe(MX1, not_after=NOW + dt.timedelta(days=days_left))
    f = facts(hosts=(host(MX1, probes=(p,)),))
    got = {c for c in _codes(_run(f, warn_days=warn_days)) if c.startswith("monitor.cert")}
    assert got == ({code} if code else set())


def test_expiring_alert_carries_checks_fix_even_beyond_checks_horizon():
    p = probe(MX1, not_after=NOW + dt.timedelta(days=25))
    f = facts(hosts=(host(MX1, probes=(p,)),))
    alert = _one(_run(f, warn_days=30), "monitor.cert-expiring")
    check_fix = expiry_findings("x", p, p.cert.not_after - dt.timedelta(days=1))[0].fix
    assert check_fix and alert.fix == check_fix
    assert alert.severity is Severity.WARNING and "25 day(s)" in alert.message
    assert alert.subject == f"{MX1} [192.0.2.1]" and alert.last_seen == NOW


def test_expired_alert_is_critical_with_checks_renewal_fix():
    p = probe(MX1, not_after=NOW - dt.timedelta(days=2))
    f = facts(hosts=(host(MX1, probes=(p,)),))
    alert = _one(_run(f), "monitor.cert-expired")
    assert alert.severity is Severity.CRITICAL
    assert alert.fix == expiry_findings("x", p, NOW)[0].fix


@pytest.mark.rfc
def test_rfc8461_3_3_policy_host_certificate_expiring():
    cert = replace(probe(MX1).cert, not_after=NOW + dt.timedelta(days=5))
    f = facts(sts=STS)
    alert = _one(_run(f, policy_cert=cert), "monitor.cert-expiring")
    assert alert.subject == "mta-sts.example.com" and "policy host" in alert.message
    assert alert.fix


# --- TLSA rollover -----------------------------------------------------------------------------


def _dane_facts(records):
    return facts(hosts=(host(MX1, tlsa=tuple(records), probes=(probe(MX1),)),))


@pytest.mark.rfc
def test_rfc7671_8_1_staged_key_not_published_alerts_with_its_record():
    staged = leaf_der(MX1)  # a renewal with a new key
    alert = _one(_run(_dane_facts([tlsa_311(MX1)]), staged={MX1: (staged,)}),
                 "monitor.tlsa-next-not-covered")
    from smtptls.dane.publish import tlsa_from_cert
    want = tlsa_from_cert(staged).to_text()
    assert alert.fix == f"_25._tcp.{MX1}. IN TLSA {want}"
    assert want in alert.message and alert.subject == MX1


@pytest.mark.rfc
def test_rfc7672_4_both_keys_published_is_safe():
    staged = leaf_der(MX1)
    from smtptls.dane.publish import tlsa_from_cert
    j = _run(_dane_facts([tlsa_311(MX1), tlsa_from_cert(staged)]), staged={MX1: (staged,)})
    assert "monitor.tlsa-next-not-covered" not in _codes(j)


def test_no_staged_certificate_no_rollover_alert():
    assert "monitor.tlsa-next-not-covered" not in _codes(_run(_dane_facts([tlsa_311(MX1)])))


def test_tlsa_broken_today_is_left_to_check():
    """No live match: check's dane.mismatch says it (a worse finding), not the rollover."""
    from smtptls.dane.tlsa import TLSARecord
    bad = TLSARecord.from_text("3 1 1 " + "ab" * 32)
    j = _run(_dane_facts([bad]), staged={MX1: (leaf(MX1),)})
    assert "monitor.tlsa-next-not-covered" not in _codes(j)


def test_staged_file_that_is_no_certificate_is_an_alert_not_a_traceback():
    j = _run(_dane_facts([tlsa_311(MX1)]), staged={MX1: (b"not a certificate",)})
    assert "monitor.staged-unusable" in _codes(j)


# --- MTA-STS coverage and policy changes -------------------------------------------------------


@pytest.mark.rfc
@pytest.mark.parametrize(("mode", "severity"), [("enforce", Severity.CRITICAL),
                                                ("testing", Severity.WARNING)])
def test_rfc8461_4_1_mx_outside_the_live_policy(mode, severity):
    hosts = (host(MX1, probes=(probe(MX1),)),
             host("mx2.example.com", 20, probes=(probe("mx2.example.com"),)))
    f = facts(hosts=hosts, sts=STS, policy=policy_body(mode, mx=(MX1,)))
    alert = _one(_run(f), "monitor.mx-not-covered")
    assert alert.subject == "mx2.example.com" and alert.severity is severity
    check = {x.fix for x in evaluate(f).findings if x.code == "mta-sts.mx-not-covered"}
    assert check == {alert.fix}


def test_policy_mode_none_covers_nothing_and_alerts_nothing():
    hosts = (host(MX1, probes=(probe(MX1),)), host("mx2.example.com", 20))
    f = facts(hosts=hosts, sts=STS, policy=policy_body("none", mx=(MX1,)))
    assert "monitor.mx-not-covered" not in _codes(_run(f))


def _sts(sts_id: str, body: str) -> DomainFacts:
    f = facts(sts=(f"v=STSv1; id={sts_id}",), policy=body)
    return replace(f, sts_txt=LookupFacts("_mta-sts.example.com", f.sts_txt.security,
                                          (f"v=STSv1; id={sts_id}",)))


OLD, NEW = policy_body(max_age=604800), policy_body(max_age=1209600)


@pytest.mark.rfc
@pytest.mark.parametrize(("first", "second", "alerts"), [
    pytest.param(("1", OLD), ("1", OLD), False, id="nothing-changed"),
    pytest.param(("1", OLD), ("1", NEW), True, id="body-changed-id-kept"),
    pytest.param(("1", OLD), ("2", NEW), False, id="body-and-id-changed"),
    pytest.param(("1", OLD), ("2", OLD), False, id="only-id-changed"),
])
def test_rfc8461_3_1_id_must_change_with_the_policy(first, second, alerts):
    state = _run(_sts(*first)).state
    j = _run(_sts(*second), state)
    assert ("monitor.policy-id-unchanged" in _codes(j)) is alerts


@pytest.mark.rfc
def test_rfc8461_3_1_unchanged_id_alert_lasts_until_a_new_id():
    s1 = _run(_sts("1", OLD)).state
    j2 = _run(_sts("1", NEW), s1)
    alert = _one(j2, "monitor.policy-id-unchanged")
    assert alert.subject == "_mta-sts.example.com" and "id=1" in alert.message
    j3 = _run(_sts("1", NEW), j2.state)  # body stays new, id still old: still active
    assert "monitor.policy-id-unchanged" in _codes(j3)
    j4 = _run(_sts("2", NEW), j3.state)
    assert "monitor.policy-id-unchanged" not in _codes(j4)


def test_first_run_has_no_baseline_for_changes():
    assert _run(_sts("1", NEW), None).state.policy_digest == policy_digest(NEW)
    assert "monitor.policy-id-unchanged" not in _codes(_run(_sts("1", NEW), None))


def test_failed_fetch_keeps_the_last_known_body():
    s1 = _run(_sts("1", OLD)).state
    broken = replace(_sts("1", OLD), policy=FetchFacts("https://x/", None, 503, None,
                                                        "status", "503"))
    s2 = _run(broken, s1).state
    assert s2.policy_digest == s1.policy_digest
    assert "monitor.policy-id-unchanged" not in _codes(_run(_sts("1", OLD), s2))


# --- findings that got worse; failed runs --------------------------------------------------------


def test_a_new_error_finding_is_worse_with_checks_fix():
    good = facts(hosts=(host(MX1, probes=(probe(MX1),)),))
    bad = facts(hosts=(host(MX1, probes=(probe(MX1, pkix=False,
                                                pkix_type="certificate-host-mismatch"),)),))
    j = _run(bad, _run(good).state)
    worse = [a for a in j.alerts if a.code == "monitor.worse"]
    fixes = {f"{x.code}|{x.subject}": x.fix for x in evaluate(bad).findings}
    assert worse and all(a.fix == (fixes[a.subject] or "") for a in worse)
    assert any(a.subject.startswith("tls.cert-name-mismatch|") for a in worse)


def test_same_findings_again_are_not_worse():
    bad = facts(hosts=(host(MX1, probes=(probe(MX1, pkix=False),)),))
    first = _run(bad)
    assert "monitor.worse" not in _codes(first)  # no baseline on a first run
    assert "monitor.worse" not in _codes(_run(bad, first.state))


def test_resolver_outage_keeps_the_last_alerts_without_flapping():
    p = probe(MX1, not_after=NOW + dt.timedelta(days=3))
    ok = facts(hosts=(host(MX1, probes=(p,)),))
    first = _run(ok)
    assert "monitor.cert-expiring" in _codes(first)
    outage = replace(ok, mx=LookupFacts("example.com", ok.mx.security, (), "timeout"),
                     hosts=())
    j = _run(outage, first.state)
    assert not j.judged and j.alerts == first.alerts and j.state == first.state
    assert "monitor.worse" not in _codes(_run(ok, j.state))


def test_state_round_trips_through_json():
    import json
    p = probe(MX1, not_after=NOW + dt.timedelta(days=3))
    state = _run(_sts("1", OLD), None).state
    state = replace(state, alerts=_run(facts(hosts=(host(MX1, probes=(p,)),))).alerts)
    again = DomainState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again.to_dict() == state.to_dict()


@pytest.mark.parametrize("bad", [[], "x", {"findings": ["x"]}, {"alerts": [{"code": ""}]}])
def test_malformed_state_entry_is_a_typed_error(bad):
    from smtptls.errors import SmtpTlsError
    with pytest.raises(SmtpTlsError):
        DomainState.from_dict(bad)


# --- TLSRPT rua ----------------------------------------------------------------------------------


@pytest.mark.rfc
def test_rfc8460_5_3_unreachable_rua_alerts_with_checks_fix():
    from smtptls.check.facts import RuaFacts
    uri = "mailto:tlsrpt@nowhere.example"
    f = facts(tlsrpt=(f"v=TLSRPTv1; rua={uri}",),
              rua=(RuaFacts(uri, "mailto", False, "no MX for nowhere.example"),))
    alert = _one(_run(f), "monitor.rua-unreachable")
    check = [x for x in evaluate(f).findings if x.code == "tlsrpt.rua-mail-unreachable"]
    assert alert.subject == uri and alert.fix == check[0].fix and alert.fix


# --- policy hosts --------------------------------------------------------------------------------


@pytest.mark.rfc
@pytest.mark.parametrize(("bodies", "alerts"), [
    pytest.param({}, False, id="one-address-not-compared"),
    pytest.param({"192.0.2.3": "a", "192.0.2.4": "a"}, False, id="same-body"),
    pytest.param({"192.0.2.3": "a", "192.0.2.4": "b"}, True, id="different-bodies"),
])
def test_rfc8461_3_3_every_policy_host_address_serves_one_policy(bodies, alerts):
    j = _run(facts(sts=STS), policy_bodies=bodies)
    assert ("monitor.policy-hosts-differ" in _codes(j)) is alerts
    if alerts:
        alert = _one(j, "monitor.policy-hosts-differ")
        assert "192.0.2.3" in alert.message and "192.0.2.4" in alert.message
        assert alert.subject == "mta-sts.example.com"


def test_an_alert_keeps_the_time_it_was_first_seen():
    p = probe(MX1, not_after=NOW + dt.timedelta(days=3))
    f = facts(hosts=(host(MX1, probes=(p,)),))
    first = _run(f)
    later = replace(f, checked_at=NOW + dt.timedelta(hours=1))
    alert = _one(_run(later, first.state), "monitor.cert-expiring")
    assert alert.first_seen == NOW and alert.last_seen == NOW + dt.timedelta(hours=1)
