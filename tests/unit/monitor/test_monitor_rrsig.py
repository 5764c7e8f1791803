"""monitor.rrsig-expiring (pure rule, and its gathering over the in-memory resolver):
RRSIGs over the mail RRsets that expire within rrsig_warn_days (RFC 4034 §3.1.5), before the
validating resolvers of senders start answering SERVFAIL (RFC 7672 §2.1.1)."""

from __future__ import annotations

import datetime as dt

import pytest

from smtptls.check import evaluate
from smtptls.dnssec import Security
from smtptls.monitor.dnssec import gather_signatures, lookups_for
from smtptls.monitor.rules import RunFacts, SignedRRset, judge
from smtptls.net.memory import MemoryResolver
from smtptls.services.alerts import Severity
from tests.unit.check.builders import NOW, facts

MX1 = "mx1.example.com"
TLSA = f"_25._tcp.{MX1}"
CODE = "monitor.rrsig-expiring"


def _judge(*signatures: SignedRRset, rrsig_warn_days: int = 3):
    f = facts()
    return judge(RunFacts(f, evaluate(f), signatures=signatures,
                          rrsig_warn_days=rrsig_warn_days), None)


def _rrsig_alerts(judgement):
    return [a for a in judgement.alerts if a.code == CODE]


def _in(days: float) -> dt.datetime:
    return NOW + dt.timedelta(days=days)


@pytest.mark.rfc
def test_rfc4034_3_1_5_signatures_expiring_in_3_days_alert_with_the_resign_fix():
    (alert,) = _rrsig_alerts(_judge(SignedRRset(TLSA, "TLSA", _in(3))))
    assert alert.severity is Severity.WARNING and alert.subject == f"{TLSA} TLSA"
    assert "3 day(s)" in alert.message and f"{_in(3):%Y-%m-%d %H:%M}" in alert.message
    assert alert.fix.startswith(f"re-sign the zone of {TLSA} before ")
    assert "cron" in alert.fix and alert.first_seen == NOW


@pytest.mark.parametrize(("days", "severity"), [
    pytest.param(20, None, id="beyond-the-certificate-horizon"),
    pytest.param(10, None, id="within-the-certificate-horizon-only"),
    pytest.param(3.5, None, id="beyond-rrsig-warn-days"),
    pytest.param(3, Severity.WARNING, id="at-rrsig-warn-days"),
    pytest.param(2.5, Severity.WARNING, id="within-rrsig-warn-days"),
    pytest.param(0.5, Severity.CRITICAL, id="within-critical-days"),
])
@pytest.mark.rfc
def test_rfc4034_3_1_5_severity_by_days_left(days, severity):
    got = _rrsig_alerts(_judge(SignedRRset("example.com", "MX", _in(days))))
    assert [a.severity for a in got] == ([severity] if severity else [])


def test_rrsig_horizon_follows_rrsig_warn_days_not_warn_days():
    assert _rrsig_alerts(_judge(SignedRRset("example.com", "MX", _in(20)), rrsig_warn_days=30))
    f = facts()
    judged = judge(RunFacts(f, evaluate(f), signatures=(SignedRRset("example.com", "MX",
                                                                    _in(10)),),
                            warn_days=30), None)
    assert _rrsig_alerts(judged) == []


def test_no_signatures_no_alert():
    assert _rrsig_alerts(_judge()) == []


@pytest.mark.rfc
def test_rfc4034_3_1_5_one_alert_per_rrset_with_the_earliest_expiration():
    got = _rrsig_alerts(_judge(SignedRRset(MX1, "A", _in(9)), SignedRRset(MX1, "A", _in(4)),
                               SignedRRset(MX1, "AAAA", _in(12)),
                               SignedRRset("example.com", "MX", _in(30)),
                               rrsig_warn_days=14))
    assert {a.subject: a.severity for a in got} == {f"{MX1} A": Severity.WARNING,
                                                     f"{MX1} AAAA": Severity.WARNING}
    (a_alert,) = [a for a in got if a.subject == f"{MX1} A"]
    assert "4 day(s)" in a_alert.message


def test_lookups_cover_mx_mta_sts_tlsa_and_mx_addresses():
    assert lookups_for(facts()) == [("example.com", "MX"), ("_mta-sts.example.com", "TXT"),
                                    (TLSA, "TLSA"), (MX1, "A"), (MX1, "AAAA")]


def _world() -> MemoryResolver:
    world = MemoryResolver()
    world.mx("example.com", MX1, security=Security.SECURE)
    world.txt_record("_mta-sts.example.com", "v=STSv1; id=1", security=Security.SECURE)
    world.host(MX1, security=Security.SECURE)
    return world


@pytest.mark.rfc
async def test_rfc7672_2_1_gathered_signatures_of_validated_rrsets():
    world = _world()
    world.set(TLSA, "TLSA", "3 1 1 00", security=Security.SECURE)
    for name, rdtype, days in (("example.com", "MX", 20), ("_mta-sts.example.com", "TXT", 3),
                               (TLSA, "TLSA", 3), (MX1, "A", 3), (MX1, "AAAA", 1)):
        world.sign(name, rdtype, _in(days))
    got = await gather_signatures(world, facts())
    # the AAAA RRset is empty (NODATA): its denial is not followed
    assert {(s.name, s.rdtype): s.expires for s in got} == {
        ("example.com", "MX"): _in(20), ("_mta-sts.example.com", "TXT"): _in(3),
        (TLSA, "TLSA"): _in(3), (MX1, "A"): _in(3)}
    alerts = _rrsig_alerts(_judge(*got))
    assert {a.subject for a in alerts} == {"_mta-sts.example.com TXT", f"{TLSA} TLSA",
                                          f"{MX1} A"}


async def test_unsigned_or_unvalidated_rrsets_are_not_gathered():
    world = MemoryResolver()
    world.mx("example.com", MX1)                        # unsigned zone
    world.txt_record("_mta-sts.example.com", "v=STSv1; id=1")
    world.sign("_mta-sts.example.com", "TXT", _in(1))   # signed, but no chain of trust
    world.host(MX1)
    assert await gather_signatures(world, facts()) == ()
