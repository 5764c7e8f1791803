"""End to end: the destinations a careful reviewer adds, through a real sending Postfix.

Each scenario publishes a destination in the lab, asks ``smtptls policyd query`` what
the daemon answers (the decision of :mod:`smtptls.engine.destination`), then submits a
message to the lab Postfix, which asks the same daemon over socketmap, and asserts
what Postfix did (delivered or deferred, the TLS status it logged, which MX it used).

- MX host names that are CNAMEs (RFC 7672 §2.2.2, §2.2.3; RFC 8461 §2): the TLSA
  records are found at the expanded name, the answer is ``dane-only`` and Postfix
  checks them, even when an MTA-STS ``enforce`` policy exists;
- an MX host in another signed zone, and in an unsigned zone (with and without
  MTA-STS);
- only some MX hosts with TLSA, the one with TLSA failing;
- an ``enforce`` policy with several patterns, one a wildcard, the first MX failing;
- an ``enforce`` policy no MX host matches (RFC 8461 §4.1): deferred;
- a bogus MX RRset (RFC 7672 §2.2.1): deferred;
- a policy host that stalls (RFC 8461 §3.3, §5), with and without a cached policy;
- an MX outside the policy beside a listed one, serving a certificate for the listed
  name: the residual risk of Postfix 3.7 (delivered through it), closed on 3.10.

Every row runs on both lab Postfix versions; on 3.10 the daemon runs with
``postfix_version = "3.10"``, so its ``secure`` answers carry the MTA-STS attributes
(policy type, domain, MX patterns, policy lines) and Postfix matches MX names itself.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest

from tests.e2e.postfix_world import (
    POSTFIX_VERSIONS,
    Policyd,
    deliver,
    postfix_with_policyd,
    sts_policy,
)

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

_n = itertools.count()
#: How long an answer waits for a policy fetch in these tests (config sts_wait): long
#: enough for a fetch on a busy machine, whose answers are expected to use the policy;
#: the stalling policy host waits longer than that, well under the fetch's total_timeout.
STS_WAIT = 3.0
STALL = 8.0
FETCH_TIMEOUT = 20.0
MISMATCH = "3 1 1 " + "ab" * 32


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}d{os.getpid() % 1000}"


@pytest.fixture(scope="module", params=POSTFIX_VERSIONS)
def world(lab, tmp_path_factory, request):
    from tests.lab import LabDomain, LabMx, PolicyHost

    version = request.param
    workdir = tmp_path_factory.mktemp(f"destinations-e2e-{version}")
    daemon = Policyd(lab, workdir, txt_recheck_interval=2.0, log_level="debug",
                     total_timeout=FETCH_TIMEOUT,
                     policyd_extra=f'sts_wait = {STS_WAIT}\npostfix_version = "{version}"\n')
    with postfix_with_policyd(lab, daemon, version=version) as pf:
        yield lab, pf, daemon, LabDomain, LabMx, PolicyHost


def secure(answer: str, match: str) -> bool:
    """A ``secure`` answer for ``match`` (on 3.10 followed by the MTA-STS attributes)."""
    base = f"OK secure match={match} servername=hostname"
    return answer == base or answer.startswith(base + " policy_type=sts ")


# --- CNAME'd MX hosts --------------------------------------------------------------------


@pytest.mark.rfc("7672 2.2.3")
def test_rfc7672_2_2_3_cname_mx_tlsa_mismatch_deferred_despite_mta_sts(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    u = uniq("cnbad")
    d = f"{u}.{lab.ZONE_SECURE}"
    alias, real = f"mx.{d}", f"real.{d}"
    # the MX name is an alias; the TLSA RRset at the expanded name does not match the
    # server's key; an MTA-STS enforce policy lists the MX name and the certificate is
    # CA-valid: DANE must still decide (RFC 8461 §2)
    lab.add(LabDomain(d, mx=[LabMx(real, cert="good", tlsa=[MISMATCH], publish_mx=False)],
                      records=[(d, "MX", f"10 {alias}."), (alias, "CNAME", f"{real}.")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(alias, real))))
    assert daemon.query(d) == "OK dane-only"
    result = deliver(pf, d, "deferred")
    assert result.detail == "Server certificate not verified"
    assert lab.messages(real) == []


@pytest.mark.rfc("7672 2.2.3")
def test_rfc7672_2_2_3_cname_mx_tlsa_match_delivered(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, _ = world
    u = uniq("cngood")
    d = f"{u}.{lab.ZONE_SECURE}"
    alias, real = f"mx.{d}", f"real.{d}"
    lab.add(LabDomain(d, mx=[LabMx(real, cert="self-signed", tlsa=["3 1 1 auto"],
                                   publish_mx=False)],
                      records=[(d, "MX", f"10 {alias}."), (alias, "CNAME", f"{real}.")]))
    assert daemon.query(d) == "OK dane-only"
    result = deliver(pf, d, "sent")
    assert result.tls is not None and result.tls.level in ("Verified", "Trusted")
    assert len(lab.messages(real)) == 1


# --- MX hosts in other zones -------------------------------------------------------------


@pytest.mark.rfc("7672 2.2.1")
def test_rfc7672_2_2_1_mx_host_in_another_signed_zone(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, _ = world
    u = uniq("other")
    d = f"{u}.{lab.ZONE_SECURE}"
    mx = f"mx1.{u}.{lab.ZONE_ROOT}"  # signed too, in the parent zone
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="self-signed", tlsa=["3 1 1 auto"])]))
    assert daemon.query(d) == "OK dane-only"
    result = deliver(pf, d, "sent")
    assert result.tls is not None and result.tls.level in ("Verified", "Trusted")


@pytest.mark.rfc("7672 2.2.2")
def test_rfc7672_2_2_2_mx_host_in_unsigned_zone_no_mta_sts(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, _ = world
    u = uniq("unsig")
    d = f"{u}.{lab.ZONE_SECURE}"
    mx = f"mx1.{u}.{lab.ZONE_INSECURE}"
    # TLSA records in an unsigned zone do not count: opportunistic TLS, delivered
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="self-signed", tlsa=[MISMATCH])]))
    assert daemon.query(d) == "NOTFOUND "
    result = deliver(pf, d, "sent")
    assert result.tls is not None


@pytest.mark.rfc("8461 4.2")
def test_rfc8461_4_2_mx_host_in_unsigned_zone_with_mta_sts(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    u = uniq("unsts")
    d = f"{u}.{lab.ZONE_SECURE}"
    good, bad = f"mx1.{u}.{lab.ZONE_INSECURE}", f"mx2.{u}.{lab.ZONE_INSECURE}"
    # not DANE (unsigned host zone), so MTA-STS enforce applies: the wrong-name MX is
    # refused, the good one used
    lab.add(LabDomain(d, mx=[LabMx(bad, pref=10, cert="wrong-name"),
                             LabMx(good, pref=20, cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(bad, good))))
    assert secure(daemon.query(d), f"{bad}:{good}")
    result = deliver(pf, d, "sent")
    assert result.relay is not None and result.relay.startswith(f"{good}[")
    assert result.tls is not None and result.tls.level == "Verified"
    assert lab.messages(bad) == []


# --- partial DANE ------------------------------------------------------------------------


@pytest.mark.rfc("7672 2.2")
def test_rfc7672_2_2_tlsa_host_fails_host_without_tlsa_used(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, _ = world
    d = f"{uniq('part')}.{lab.ZONE_SECURE}"
    # mx1 has TLSA that does not match: Postfix must not use it; mx2 has none:
    # opportunistic TLS there (the case Postfix 3.7's one-level syntax leaves open)
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", pref=10, cert="self-signed",
                                   tlsa=[MISMATCH]),
                             LabMx(f"mx2.{d}", pref=20, cert="self-signed")]))
    assert daemon.query(d) == "OK dane"
    result = deliver(pf, d, "sent")
    assert result.relay is not None and result.relay.startswith(f"mx2.{d}[")
    assert lab.messages(f"mx1.{d}") == []


# --- MTA-STS patterns --------------------------------------------------------------------


@pytest.mark.rfc("8461 5.1")
def test_rfc8461_5_1_several_patterns_first_mx_fails_later_one_valid(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('pat')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", pref=10, cert="wrong-name"),
                             LabMx(f"b.{d}", pref=20, cert="expired"),
                             LabMx(f"c.{d}", pref=30, cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}", f"*.{d}"))))
    assert secure(daemon.query(d), f"mx1.{d}:b.{d}:c.{d}")
    result = deliver(pf, d, "sent")
    assert result.relay is not None and result.relay.startswith(f"c.{d}[")
    assert result.tls is not None and result.tls.level == "Verified"
    assert lab.messages(f"mx1.{d}") == [] and lab.messages(f"b.{d}") == []


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_no_mx_matches_enforce_policy_deferred(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('nomatch')}.{lab.ZONE_INSECURE}"
    # the only MX is not in the policy and carries a certificate valid for a name the
    # policy lists: it MUST NOT be used, whatever its certificate says
    lab.add(LabDomain(d, mx=[LabMx(f"other.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}", f"other.{d}.example"))))
    assert daemon.query(d).startswith("TEMP MTA-STS enforce: no MX host matches")
    result = deliver(pf, d, "deferred")
    assert result.detail == "client TLS configuration problem"
    assert lab.messages(f"other.{d}") == []


# --- DNSSEC failures ---------------------------------------------------------------------


@pytest.mark.rfc("7672 2.2.1")
def test_rfc7672_2_2_1_bogus_mx_rrset_deferred(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('bogmx')}.{lab.ZONE_BOGUS}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    assert daemon.query(d).startswith("TEMP the MX lookup of")
    deliver(pf, d, "deferred")
    assert lab.messages(f"mx1.{d}") == []


# --- a policy host that stalls -----------------------------------------------------------


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_stalling_policy_host_nothing_cached_delivers_then_enforces(world
                                                                               ) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stall')}.{lab.ZONE_INSECURE}"
    # a certificate MTA-STS would refuse; the policy arrives only after STALL seconds
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"), delay=STALL)))
    started = time.monotonic()
    # nothing cached: answered as without MTA-STS within sts_wait, mail not held
    deliver(pf, d, "sent")
    assert time.monotonic() - started < STALL + 20
    # the fetch finishes in the background and the daemon recomputes its answer then:
    # the policy is enforced (asked as Postfix asks, from the daemon's own cache)
    deadline = time.monotonic() + 30
    while not secure(daemon.ask(d), f"mx1.{d}"):
        assert time.monotonic() < deadline, "the stalled fetch never reached the cache"
        time.sleep(1.0)
    result = deliver(pf, d, "deferred", timeout=60)
    assert result.detail == "Server certificate not verified"


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_stalling_policy_host_with_cached_policy_enforces(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stallc')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    deliver(pf, d, "sent")  # the enforce policy is cached
    delivered = len(lab.messages(f"mx1.{d}"))
    # a new id, a stalling policy host and a certificate the policy refuses: the
    # cached enforce policy keeps applying while the new fetch hangs (B8)
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=2"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"), delay=STALL)))
    time.sleep(2.5)  # past txt_recheck_interval: the daemon notices the new id
    result = deliver(pf, d, "deferred", timeout=60)
    assert result.detail == "Server certificate not verified"
    assert len(lab.messages(f"mx1.{d}")) == delivered


# --- the residual risk of Postfix 3.7 ----------------------------------------------------


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_unlisted_mx_with_listed_name_certificate(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('resid')}.{lab.ZONE_INSECURE}"
    body = sts_policy(f"mx1.{d}")
    sts = {"_mta-sts": ["v=STSv1; id=1"]}
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", pref=20, cert="good")], txt=sts,
                      policy=PolicyHost(body=body)))
    # the preferred MX is not in the policy; its address serves mx1's certificate
    address = lab.address_of(f"mx1.{d}")
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", pref=20, cert="good")], txt=sts,
                      policy=PolicyHost(body=body),
                      records=[(d, "MX", f"10 rogue.{d}."), (f"rogue.{d}", "A", address)]))
    answer = daemon.query(d)
    assert secure(answer, f"mx1.{d}")
    result = deliver(pf, d, "sent")
    assert result.relay is not None
    if pf.version == "3.7":
        # Postfix 3.7 checks the certificate against match= only: the unlisted MX is
        # used (the residual risk docs/postfix.md names)
        assert result.relay.startswith(f"rogue.{d}[")
    else:
        # 3.10 with the attributes matches the MX name against the policy's patterns
        # (smtp_tls_enforce_sts_mx_patterns, default yes): the unlisted MX is skipped
        assert "mx_host_pattern=" in answer
        assert result.relay.startswith(f"mx1.{d}[")
        assert f"MX name 'rogue.{d}' does not match STS MX pattern" in pf.log()


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_provider_multi_label_wildcard_delivers(world) -> None:
    # a large provider's policy style: "*.mail.protection.<d>", the MX one label below
    # (a 3.10 patch release once broke such patterns; both versions must deliver)
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('prov')}.{lab.ZONE_INSECURE}"
    tenant = f"tenant.mail.protection.{d}"
    lab.add(LabDomain(d, mx=[LabMx(tenant, cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"*.mail.protection.{d}"))))
    assert secure(daemon.query(d), tenant)
    result = deliver(pf, d, "sent")
    assert result.relay is not None and result.relay.startswith(f"{tenant}[")
    assert result.tls is not None and result.tls.level == "Verified"
