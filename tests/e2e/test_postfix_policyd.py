"""End to end: a real sending Postfix asks a real ``smtptls policyd`` process.

The lab (tests/lab) runs NSD + a validating Unbound, HTTPS policy hosts, STARTTLS
receivers and a private Postfix with ``smtp_dns_support_level = dnssec`` and
``smtp_tls_policy_maps = socketmap:inet:127.0.0.1:PORT:postfix``, configured as
docs/postfix.md says (``smtp_tls_security_level = dane``, ``smtp_tls_mandatory_protocols
= >=TLSv1.2``). ``smtptls policyd`` runs as a subprocess resolving through the lab's
Unbound and trusting the lab CA. Each scenario submits a message and asserts what
Postfix did — delivered (``status=sent``) or deferred — and the TLS status it logged.
Every row runs on both lab Postfix versions (the machine's 3.7 and Debian trixie's 3.10,
tests/lab/postfix310.py), with the daemon's default (3.7-compatible) answers.
"""

from __future__ import annotations

import itertools
import os

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


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}e2e{os.getpid() % 1000}"


@pytest.fixture(scope="module", params=POSTFIX_VERSIONS)
def world(lab, tmp_path_factory, request):
    """Every row runs on each lab Postfix (3.7 and 3.10), same answers, same outcome."""
    from tests.lab import LabDomain, LabMx, PolicyHost

    workdir = tmp_path_factory.mktemp(f"policyd-e2e-{request.param}")
    daemon = Policyd(lab, workdir, txt_recheck_interval=2.0, log_level="debug")
    with postfix_with_policyd(lab, daemon, version=request.param) as pf:
        yield lab, pf, daemon, LabDomain, LabMx, PolicyHost


# --- MTA-STS ---------------------------------------------------------------------------


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_enforce_good_certificate_delivered_verified(world) -> None:
    lab, pf, _, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsgood')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    result = deliver(pf, d, "sent")
    assert result.tls is not None and result.tls.level == "Verified"
    # RFC 8461 §4 (E3): TLS 1.2 or later (smtp_tls_mandatory_protocols = >=TLSv1.2)
    assert result.tls.detail.startswith(("TLSv1.2", "TLSv1.3"))
    assert lab.receiver_sni(f"mx1.{d}")[-1] == f"mx1.{d}"  # servername=hostname


@pytest.mark.rfc("8461 4.2")
def test_rfc8461_4_2_enforce_wrong_name_certificate_deferred(world) -> None:
    lab, pf, _, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stswrong')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    result = deliver(pf, d, "deferred")
    assert result.detail == "Server certificate not verified"
    # differs by version: a CA-valid chain for another name is logged "Untrusted" by
    # 3.7 and "Trusted" by 3.10 (the chain is trusted, the name check fails); both defer
    expected = "Untrusted" if pf.version == "3.7" else "Trusted"
    assert result.tls is not None and result.tls.level == expected
    assert lab.messages(f"mx1.{d}") == []


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_enforce_mx_not_in_policy_deferred(world) -> None:
    lab, pf, _, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsmx')}.{lab.ZONE_INSECURE}"
    # the MX the DNS names is not in the policy; its certificate is valid for itself
    lab.add(LabDomain(d, mx=[LabMx(f"rogue.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    # RFC 8461 §4.1: the one MX matches no pattern, so it MUST NOT be used at all: the
    # daemon answers TEMP, which Postfix logs as a TLS configuration problem and defers
    result = deliver(pf, d, "deferred")
    assert result.detail == "client TLS configuration problem"
    assert lab.messages(f"rogue.{d}") == []


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_wildcard_policy_covers_one_label_only(world) -> None:
    lab, pf, _, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stswild')}.{lab.ZONE_INSECURE}"
    # "*.d" must not cover "a.b.d" (Postfix's ".d" would); its cert is valid for itself
    lab.add(LabDomain(d, mx=[LabMx(f"a.b.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"*.{d}"))))
    # no MX matches and only a wildcard is listed: the daemon answers TEMP, which
    # Postfix reports as a TLS configuration problem and defers
    result = deliver(pf, d, "deferred")
    assert result.detail == "client TLS configuration problem"
    assert lab.messages(f"a.b.{d}") == []


@pytest.mark.rfc("8461 4")
def test_rfc8461_4_enforce_without_starttls_deferred(world) -> None:
    lab, pf, _, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsnotls')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", starttls=False)],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    result = deliver(pf, d, "deferred")
    assert result.detail.startswith("TLS is required, but was not offered")


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_testing_bad_certificate_delivered(world) -> None:
    lab, pf, _, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('ststest')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}", mode="testing"))))
    result = deliver(pf, d, "sent")
    assert result.tls is not None and result.tls.level in ("Trusted", "Untrusted")


def test_no_policy_delivered(world) -> None:
    lab, pf, _, LabDomain, LabMx, _ = world
    d = f"{uniq('plain')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="self-signed")]))
    result = deliver(pf, d, "sent")
    assert result.tls is not None  # opportunistic TLS, unauthenticated


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_fetch_failure_nothing_cached_delivered(world) -> None:
    lab, pf, _, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsfail')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"), status=500)))
    deliver(pf, d, "sent")
    assert lab.policy_requests(d)  # the fetch was tried (and failed)


@pytest.mark.rfc("8461 5.1")
def test_rfc8461_5_1_fetch_failure_with_cached_enforce_policy_still_applies(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stscache')}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    deliver(pf, d, "sent")  # the enforce policy is now in the policy cache (SQLite)
    # restart the daemon (empty memory), publish a new id, break the policy host and
    # the MX certificate: only the cached enforce policy can make Postfix refuse it
    daemon.stop()
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=2"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"), status=503)))
    before = len(lab.policy_requests(d))
    daemon.start()
    result = deliver(pf, d, "deferred")
    assert result.detail == "Server certificate not verified"
    assert len(lab.policy_requests(d)) > before  # the new id was fetched, and failed
    assert daemon.query(d) == f"OK secure match=mx1.{d} servername=hostname"


# --- DANE ------------------------------------------------------------------------------


@pytest.mark.rfc("7672 3.1.1")
def test_rfc7672_3_1_1_dane_ee_self_signed_delivered(world) -> None:
    lab, pf, _, LabDomain, LabMx, _ = world
    d = f"{uniq('dane')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="self-signed", tlsa=["3 1 1 auto"])]))
    result = deliver(pf, d, "sent")
    assert result.tls is not None and result.tls.level in ("Verified", "Trusted")


@pytest.mark.rfc("7672 2.2")
def test_rfc7672_2_2_dane_mismatch_deferred(world) -> None:
    lab, pf, _, LabDomain, LabMx, _ = world
    d = f"{uniq('danebad')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="self-signed", tlsa=["3 1 1 " + "ab" * 32])]))
    result = deliver(pf, d, "deferred")
    assert result.detail == "Server certificate not verified"
    assert lab.messages(f"mx1.{d}") == []


@pytest.mark.rfc("7672 2.1.1")
def test_rfc7672_2_1_1_bogus_tlsa_deferred(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, _ = world
    u = uniq("danebog")
    d = f"{u}.{lab.ZONE_SECURE}"
    target = f"t.{u}.{lab.ZONE_BOGUS}"
    # the MX host and its address are secure; its TLSA RRset is reached through a CNAME
    # into the bogus zone, so the TLSA lookup fails validation (SERVFAIL)
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="good")],
                      records=[(f"_25._tcp.mx1.{d}", "CNAME", f"{target}."),
                               (target, "TLSA", "3 1 1 " + "cd" * 32)]))
    # RFC 7672 §2.1.2: the one MX host cannot be used; the daemon defers itself, so the
    # outcome does not depend on Postfix's own DNSSEC settings
    assert daemon.query(d).startswith("TEMP no MX host can be used: TLSA lookup")
    result = deliver(pf, d, "deferred")
    assert result.detail == "client TLS configuration problem"
    assert lab.messages(f"mx1.{d}") == []


@pytest.mark.rfc("8461 2")
def test_rfc8461_2_dane_and_mta_sts_dane_applies(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('both')}.{lab.ZONE_SECURE}"
    # self-signed: MTA-STS (PKIX) would refuse it; DANE-EE accepts it
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="self-signed", tlsa=["3 1 1 auto"])],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    assert daemon.query(d) == "OK dane-only"
    result = deliver(pf, d, "sent")
    assert result.tls is not None and result.tls.level in ("Verified", "Trusted")


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_unlisted_mx_skipped_listed_mx_used(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsskip')}.{lab.ZONE_INSECURE}"
    # the preferred MX is not in the policy (valid certificate for its own name): Postfix
    # must skip it and deliver to the listed one
    lab.add(LabDomain(d, mx=[LabMx(f"rogue.{d}", pref=10, cert="good"),
                             LabMx(f"mx1.{d}", pref=20, cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    assert daemon.query(d) == f"OK secure match=mx1.{d} servername=hostname"
    result = deliver(pf, d, "sent")
    assert result.relay is not None and result.relay.startswith(f"mx1.{d}[")
    assert lab.messages(f"rogue.{d}") == []
    assert len(lab.messages(f"mx1.{d}")) == 1


@pytest.mark.rfc("7672 2.2")
def test_rfc7672_2_2_some_mx_with_tlsa_is_dane(world) -> None:
    lab, pf, daemon, LabDomain, LabMx, _ = world
    d = f"{uniq('danemix')}.{lab.ZONE_SECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", pref=10, cert="self-signed",
                                   tlsa=["3 1 1 auto"]),
                             LabMx(f"mx2.{d}", pref=20, cert="good")]))
    assert daemon.query(d) == "OK dane"
    result = deliver(pf, d, "sent")
    assert result.relay is not None and result.relay.startswith(f"mx1.{d}[")
    assert result.tls is not None and result.tls.level == "Verified"
