"""End to end: a real Exim 4.96 asking ``smtptls policyd``, configured from contrib/exim/.

The lab's sending Exim (tests/lab/exim.py: Debian bookworm's ``exim4-daemon-heavy``, the
lab resolver and CA) includes contrib/exim/'s four files as shipped; ``smtptls
policyd`` runs as a subprocess. Each row publishes a destination, checks what the
daemon answers Exim (``policyd query`` gives the same decision to Postfix), submits a
message to Exim and asserts what Exim logged: delivered (``=>``) or deferred (``==``),
the router that chose the hosts, the host used, and the TLS fields (``X=`` cipher,
``CV=`` certificate verification, ``SNI=``).
"""

from __future__ import annotations

import itertools
import os
import socket

import pytest

from tests.e2e.postfix_world import Policyd, sts_policy

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

_n = itertools.count()
MISMATCH = "3 1 1 " + "ab" * 32
SENDER = "sender@exim.lab.test"


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}x{os.getpid() % 1000}"


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory):
    from tests.lab import LabDomain, LabMx, PolicyHost

    workdir = tmp_path_factory.mktemp("exim-e2e")
    daemon = Policyd(lab, workdir, txt_recheck_interval=2.0, policyd_extra="sts_wait = 2.0\n")
    daemon.start()
    ex = lab.exim(policyd=f"inet:127.0.0.1:{daemon.port}")
    try:
        yield lab, ex, daemon, LabDomain, LabMx, PolicyHost
    finally:
        ex.stop()
        daemon.stop()


def ask(daemon: Policyd, domain: str) -> dict[str, str]:
    """The daemon's answer for Exim, over the socketmap as Exim's ${readsocket} asks."""
    from smtptls.services.policyd.socketmap import NetstringDecoder, Reply, Request

    with socket.create_connection(("127.0.0.1", daemon.port), timeout=30) as s:
        s.sendall(Request("exim", domain).to_bytes())
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    (frame,) = NetstringDecoder(4096).feed(data)
    reply = Reply.parse(frame.decode())
    assert reply.status.value == "OK"
    fields = {}
    for part in reply.data.split(' reason="')[0].split():
        k, _, v = part.partition("=")
        fields[k] = v
    return fields


def send(ex, domain: str, want: str, *, timeout: float = 40.0):  # type: ignore[no-untyped-def]
    """Submit to user@domain and wait for ``want`` (delivered / deferred); a deferred
    message is then dropped (no retries in the background)."""
    mid = ex.submit(SENDER, f"user@{domain}", f"Subject: exim e2e {domain}\r\n\r\nhello\r\n")
    try:
        return mid, ex.wait_delivery(mid, timeout=timeout, statuses=(want,))
    finally:
        if want != "delivered":
            ex.remove(mid)


# --- MTA-STS enforce ---------------------------------------------------------------------


@pytest.mark.rfc("8461 4.2")
def test_rfc8461_4_2_enforce_good_certificate_delivered_verified(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsok')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="good")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(mx))))
    assert ask(daemon, d)["policy"] == "enforce"
    _, result = send(ex, d, "delivered")
    assert result.router == "smtptls_mta_sts"
    assert result.host == mx
    assert result.verified == "yes"
    assert result.tls is not None and result.tls.startswith("TLS1.")
    assert lab.receiver_sni(mx) == [mx]
    assert len(lab.messages(mx)) == 1


@pytest.mark.rfc("8461 4.2")
def test_rfc8461_4_2_enforce_wrong_name_certificate_deferred(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsname')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]}, policy=PolicyHost(body=sts_policy(mx))))
    assert ask(daemon, d)["policy"] == "enforce"
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_mta_sts"
    assert result.host == mx
    assert "certificate" in result.detail.lower(), result.line
    assert lab.messages(mx) == []


@pytest.mark.rfc("8461 4.2")
@pytest.mark.parametrize("cert", ["untrusted", "expired", "self-signed"])
def test_rfc8461_4_2_enforce_certificate_not_valid_deferred(world, cert: str) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsca')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, cert=cert)],
                      txt={"_mta-sts": ["v=STSv1; id=1"]}, policy=PolicyHost(body=sts_policy(mx))))
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_mta_sts"
    assert "certificate" in result.detail.lower(), result.line
    assert lab.messages(mx) == []


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_enforce_without_starttls_deferred(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsplain')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, starttls=False)],
                      txt={"_mta-sts": ["v=STSv1; id=1"]}, policy=PolicyHost(body=sts_policy(mx))))
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_mta_sts"
    assert "tls" in result.detail.lower(), result.line
    assert lab.messages(mx) == []


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_mx_not_in_policy_deferred(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsmx')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="good")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"other.{d}"))))
    assert ask(daemon, d)["policy"] == "defer"
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_defer"
    assert result.host is None
    assert "RFC 8461 4.1" in result.detail
    assert lab.messages(mx) == []


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_mx_outside_policy_never_tried(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stsspoof')}.{lab.ZONE_INSECURE}"
    listed, spoof = f"mx2.{d}", f"evil.{d}"
    # the preferred MX is not in the policy and even holds a certificate valid for
    # its own name: it must not be used (Postfix 3.7 cannot prevent this, see
    # docs/postfix.md; Exim's route list names only the policy's hosts)
    lab.add(LabDomain(d, mx=[LabMx(spoof, pref=5, cert="good"), LabMx(listed, pref=10)],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(listed))))
    assert ask(daemon, d)["mx"] == listed
    _, result = send(ex, d, "delivered")
    assert result.host == listed and result.verified == "yes"
    assert lab.messages(spoof) == []


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_one_label_wildcard_and_mx_fallback(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stswild')}.{lab.ZONE_INSECURE}"
    first, second, deep = f"mx1.{d}", f"mx2.{d}", f"a.b.{d}"
    # *.d covers mx1 and mx2, not a.b (two labels); mx1 fails the certificate check,
    # Exim falls back to mx2
    lab.add(LabDomain(d, mx=[LabMx(deep, pref=1), LabMx(first, pref=10, cert="wrong-name"),
                             LabMx(second, pref=20)],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"*.{d}"))))
    assert ask(daemon, d)["mx"] == f"{first}:{second}"
    _, result = send(ex, d, "delivered")
    assert result.host == second and result.verified == "yes"
    assert lab.messages(deep) == [] and lab.messages(first) == []


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_testing_policy_delivered_with_exims_defaults(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('ststest')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    # a testing policy never blocks delivery: a wrong-name certificate is accepted
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="wrong-name")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(mx, mode="testing"))))
    assert ask(daemon, d)["policy"] == "testing"
    _, result = send(ex, d, "delivered")
    assert result.router == "dnslookup"
    assert result.tls is not None and result.verified == "no"
    assert len(lab.messages(mx)) == 1


def test_no_policy_delivered_with_exims_defaults(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, _ = world
    d = f"{uniq('plain')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, starttls=False)]))
    assert ask(daemon, d)["policy"] == "none"
    _, result = send(ex, d, "delivered")
    assert result.router == "dnslookup" and result.tls is None


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_cached_policy_applies_after_policy_host_disappears(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('stscache')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    domain = LabDomain(d, mx=[LabMx(mx, cert="wrong-name")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                       policy=PolicyHost(body=sts_policy(mx)))
    lab.add(domain)
    assert ask(daemon, d)["policy"] == "enforce"
    lab.add(LabDomain(d, mx=domain.mx, txt={}, policy=None))  # TXT and policy host gone
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_mta_sts"
    assert lab.messages(mx) == []


# --- DANE beside MTA-STS -----------------------------------------------------------------


@pytest.mark.rfc("8461 2")
def test_rfc8461_2_dane_ee_self_signed_delivered_by_dane_despite_enforce(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('daneok')}.{lab.ZONE_SECURE}"
    mx = f"mx1.{d}"
    # the certificate fails every WebPKI check MTA-STS makes; DANE-EE(3) matches it
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="self-signed", tlsa=["3 1 1 auto"])],
                      txt={"_mta-sts": ["v=STSv1; id=1"]}, policy=PolicyHost(body=sts_policy(mx))))
    got = ask(daemon, d)
    assert (got["policy"], got["mode"]) == ("dane-required", "enforce")
    _, result = send(ex, d, "delivered")
    assert result.router == "smtptls_dane"
    assert result.host == mx
    assert result.verified == "dane", result.line
    assert len(lab.messages(mx)) == 1


@pytest.mark.rfc("7672 2.2")
def test_rfc7672_2_2_some_mx_with_tlsa_try_dane_each_host_as_it_publishes(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, _ = world
    d = f"{uniq('danesome')}.{lab.ZONE_SECURE}"
    first, second = f"mx1.{d}", f"mx2.{d}"
    # mx1 has TLSA that does not match: Exim skips it (DANE failure), mx2 has none:
    # opportunistic TLS, as RFC 7672 allows for a host without TLSA
    lab.add(LabDomain(d, mx=[LabMx(first, pref=10, cert="good", tlsa=[MISMATCH]),
                             LabMx(second, pref=20, cert="self-signed")]))
    assert ask(daemon, d)["policy"] == "dane"
    _, result = send(ex, d, "delivered")
    assert result.router == "smtptls_dane"
    assert result.host == second and result.verified == "no"
    assert lab.messages(first) == []


@pytest.mark.rfc("7672 2.2")
def test_rfc7672_2_2_dane_mismatch_deferred(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('danebad')}.{lab.ZONE_SECURE}"
    mx = f"mx1.{d}"
    # a CA-valid certificate with the right name does not help when TLSA does not match
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="good", tlsa=[MISMATCH])],
                      txt={"_mta-sts": ["v=STSv1; id=1"]}, policy=PolicyHost(body=sts_policy(mx))))
    assert ask(daemon, d)["policy"] == "dane-required"
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_dane"
    assert lab.messages(mx) == []


@pytest.mark.rfc("7672 2.2.1")
def test_rfc7672_2_2_1_bogus_mx_deferred(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, _ = world
    d = f"{uniq('bogus')}.{lab.ZONE_BOGUS}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="good", tlsa=["3 1 1 auto"])]))
    assert ask(daemon, d)["policy"] == "defer"
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_defer"
    assert lab.messages(mx) == []


@pytest.mark.rfc("7672 2.1.2")
def test_rfc7672_2_1_2_only_mx_host_in_bogus_zone_deferred(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, _ = world
    u = uniq("bogushost")
    d = f"{u}.{lab.ZONE_SECURE}"
    mx = f"mx1.{u}.{lab.ZONE_BOGUS}"
    # a secure MX RRset naming a host whose address and TLSA lookups fail validation:
    # the host cannot be used, nor can delivery fall back to unauthenticated TLS
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="self-signed", tlsa=["3 1 1 auto"])]))
    assert ask(daemon, d)["policy"] == "defer"
    _, result = send(ex, d, "deferred")
    assert result.router == "smtptls_defer"
    assert lab.messages(mx) == []


# --- the daemon down ---------------------------------------------------------------------


def test_daemon_down_delivered_as_without_policy_and_logged(world) -> None:
    lab, ex, daemon, LabDomain, LabMx, PolicyHost = world
    d = f"{uniq('down')}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    lab.add(LabDomain(d, mx=[LabMx(mx, cert="good")], txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(mx))))
    daemon.stop()
    try:
        mid, result = send(ex, d, "delivered")
    finally:
        daemon.start()
    assert result.router == "dnslookup"
    notes = [line for line in ex.log_lines(mid) if "smtptls:" in line]
    assert notes and f"no policy answer for {d} (policyd unreachable)" in notes[0], notes
    assert "delivering as without a policy" in notes[0]


def test_exim_keeps_its_privileges_and_logs_no_panic(world) -> None:
    _, ex, _, _, _, _ = world
    # the lab's -C configuration is trusted (TRUSTED_CONFIG_LIST): Exim runs as a
    # packaged installation does, not as a user who gave up root for -C
    assert "lost privilege" not in ex.log()
    assert ex.panic_log() == ""
    assert ex.package_version.startswith("4.96")
