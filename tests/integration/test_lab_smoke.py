"""The lab itself: DNSSEC answers, certificate chains, policy hosts and receivers.

These tests prove the lab behaves as tests/lab/API.md promises, so that a failure in a
test built on it points at the code under test, not at the lab.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import smtplib
import socket
import ssl
import subprocess
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL

from tests.lab import CertKind, LabDomain, LabError, LabMx, LabZone, PolicyHost, runtime

pytestmark = pytest.mark.lab

POLICY = "version: STSv1\nmode: enforce\nmx: mx1.smoke.secure.test\nmax_age: 86400\n"


@pytest.fixture(scope="module")
def smoke(lab):
    """A handful of domains covering the zones, cert kinds and policy behaviours."""
    domains = [
        LabDomain("smoke.secure.test",
                  mx=[LabMx("mx1.smoke.secure.test", cert="good", tlsa=["3 1 1 auto", "2 0 1 auto"])],
                  txt={"_mta-sts": ["v=STSv1; id=20240101"],
                       "_smtp._tls": [("v=TLSRPTv1; ", "rua=mailto:r@smoke.secure.test")],
                       "long": ["x" * 600]},
                  policy=PolicyHost(body=POLICY)),
        LabDomain("smoke.insecure.test", mx=[LabMx("mx.smoke.insecure.test", starttls=False)]),
        LabDomain("smoke.bogus.test", mx=[LabMx("mx.smoke.bogus.test")]),
        LabDomain("smoke.expired.test", mx=[LabMx("mx.smoke.expired.test")]),
    ]
    for kind in CertKind:
        domains.append(LabDomain(
            f"{kind.value}.https.insecure.test",
            policy=PolicyHost(body=POLICY, cert=kind),
            mx=[LabMx(f"{kind.value}.mx.insecure.test", cert=kind)]))
    behaviours = {
        "notfound": PolicyHost(body="gone\n", status=404),
        "redirect": PolicyHost(body="", redirect_to="https://mta-sts.smoke.secure.test/.well-known/mta-sts.txt"),
        "html": PolicyHost(body=POLICY, content_type="text/html"),
        "nocontenttype": PolicyHost(body=POLICY, content_type=None),
        "huge": PolicyHost(body=POLICY, body_size=200_000),
        "hugechunked": PolicyHost(body=POLICY, body_size=200_000, chunked=True),
        "slow": PolicyHost(body=POLICY, delay=1.0),
        "trickle": PolicyHost(body=POLICY, chunk_size=16, body_delay=0.05),
        "abort": PolicyHost(body=POLICY, abort_after=10),
        "cookie": PolicyHost(body=POLICY, headers={"Set-Cookie": "a=b"}),
        "refused": PolicyHost(body=POLICY, reachable=False),
    }
    for label, p in behaviours.items():
        domains.append(LabDomain(f"{label}.policy.insecure.test", policy=p))
    added = lab.add(*domains)
    return {d.name: d for d in added}


# --- DNS and DNSSEC ---------------------------------------------------------------------


@pytest.mark.rfc("7672 2.1.1")
@pytest.mark.parametrize(
    "name, rdtype, rcode, ad",
    [
        ("smoke.secure.test", "MX", "NOERROR", True),
        ("_25._tcp.mx1.smoke.secure.test", "TLSA", "NOERROR", True),
        ("nothing-here.secure.test", "A", "NXDOMAIN", True),
        ("smoke.insecure.test", "MX", "NOERROR", False),
        ("smoke.bogus.test", "MX", "SERVFAIL", False),
        ("smoke.expired.test", "MX", "SERVFAIL", False),
        ("test", "SOA", "NOERROR", True),
    ],
    ids=["secure-mx", "secure-tlsa", "secure-nxdomain", "insecure-mx", "bogus-mx",
         "expired-mx", "root-of-lab"],
)
def test_rfc7672_2_1_1_validator_status_per_zone(lab, smoke, name, rdtype, rcode, ad):
    r = lab.query(name, rdtype)
    assert dns.rcode.to_text(r.rcode()) == rcode
    assert bool(r.flags & dns.flags.AD) is ad


@pytest.mark.parametrize("zone", ["bogus.test", "expired.test"])
def test_bogus_zones_hold_data_behind_checking_disabled(lab, smoke, zone):
    """With CD set the validator hands the (unvalidated) data over: it is there, just bogus."""
    q = dns.message.make_query(f"smoke.{zone}", "MX", want_dnssec=True)
    q.flags |= dns.flags.CD
    r = dns.query.udp(q, lab.resolver[0], timeout=3)
    assert r.rcode() == dns.rcode.NOERROR
    assert any(rrs.rdtype == dns.rdatatype.MX for rrs in r.answer)


def test_dig_sees_the_ad_bit(lab, smoke):
    out = subprocess.run(["dig", "+dnssec", "+time=2", "+tries=1", f"@{lab.resolver[0]}",
                          "smoke.secure.test", "MX"],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith(";; flags:"))
    assert "ad" in line.split("flags:")[1].split(";")[0].split()
    assert "10 mx1.smoke.secure.test." in out


def test_names_outside_the_lab_are_refused(lab):
    r = lab.query("example.com", "A")
    assert r.rcode() == dns.rcode.REFUSED


def test_trust_anchor_is_the_ds_of_the_lab_root_key(lab):
    import dns.dnssec

    r = lab.query("test", "DNSKEY", server="authoritative")
    key = next(rr for rrs in r.answer if rrs.rdtype == dns.rdatatype.DNSKEY for rr in rrs)
    ds = dns.dnssec.make_ds("test.", key, "SHA256")
    assert lab.trust_anchor_file.read_text().split() == ["test.", "IN", "DS", *ds.to_text().split()]


def test_txt_strings_and_long_values(lab, smoke):
    r = lab.query("_smtp._tls.smoke.secure.test", "TXT")
    strings = [s for rrs in r.answer if rrs.rdtype == dns.rdatatype.TXT for rr in rrs
               for s in rr.strings]
    assert strings == [b"v=TLSRPTv1; ", b"rua=mailto:r@smoke.secure.test"]
    r = lab.query("long.smoke.secure.test", "TXT")
    parts = [s for rrs in r.answer if rrs.rdtype == dns.rdatatype.TXT for rr in rrs
             for s in rr.strings]
    assert [len(p) for p in parts] == [255, 255, 90]


def test_tlsa_auto_is_the_digest_of_the_served_chain(lab, smoke):
    mx = smoke["smoke.secure.test"].mx[0]
    chain = lab.issue(mx.host, "good")
    r = lab.query(f"_25._tcp.{mx.host}", "TLSA")
    got = {(rr.usage, rr.selector, rr.mtype, rr.cert.hex())
           for rrs in r.answer if rrs.rdtype == dns.rdatatype.TLSA for rr in rrs}
    spki = chain.leaf.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    assert got == {(3, 1, 1, hashlib.sha256(spki).hexdigest()),
                   (2, 0, 1, hashlib.sha256(chain.issuer_der).hexdigest())}


def test_add_replaces_and_remove_withdraws_without_stale_cache(lab):
    lab.add(LabDomain("churn.secure.test", mx=[LabMx("a.churn.secure.test", pref=10)]))
    first = lab.query("churn.secure.test", "MX")
    lab.add(LabDomain("churn.secure.test", mx=[LabMx("b.churn.secure.test", pref=20)]))
    second = lab.query("churn.secure.test", "MX")
    lab.remove("churn.secure.test")
    third = lab.query("churn.secure.test", "MX")
    assert "10 a.churn.secure.test." in first.answer[0].to_text()
    assert "20 b.churn.secure.test." in second.answer[0].to_text()
    assert third.rcode() == dns.rcode.NXDOMAIN and third.flags & dns.flags.AD


def test_add_batches_many_domains_quickly(lab):
    domains = [LabDomain(f"bulk{i}.secure.test", mx=[LabMx(f"mx{i}.bulk.insecure.test")],
                         txt={"_mta-sts": [f"v=STSv1; id={i}"]}) for i in range(200)]
    t0 = time.monotonic()
    added = lab.add(*domains)
    elapsed = time.monotonic() - t0
    assert len({m.address for d in added for m in d.mx}) == 200
    r = lab.query("_mta-sts.bulk199.secure.test", "TXT")
    assert r.answer and r.flags & dns.flags.AD
    assert elapsed < 10, f"lab.add of 200 domains took {elapsed:.2f}s"


def test_extra_zone_is_delegated_with_ds(lab):
    lab.add_zone(LabZone("hoster.test", "secure"))
    lab.add(LabDomain("customer.hoster.test", mx=[LabMx("mx.hoster.test")]))
    r = lab.query("customer.hoster.test", "MX")
    assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AD
    ds = lab.query("hoster.test", "DS")
    assert ds.answer and ds.flags & dns.flags.AD


@pytest.mark.parametrize("bad", [
    LabDomain("nowhere.example", mx=[]),
    LabDomain("bad-tlsa.secure.test", mx=[LabMx("mx.bad-tlsa.secure.test", tlsa=["3 1 1 zz"])]),
], ids=["outside-test", "malformed-tlsa"])
def test_add_rejects_what_it_cannot_publish(lab, bad):
    with pytest.raises(LabError):
        lab.add(bad)
    assert lab.query(bad.name, "MX").rcode() in (dns.rcode.NXDOMAIN, dns.rcode.REFUSED)


def test_lab_starts_within_budget(lab):
    assert lab.startup_seconds is not None and lab.startup_seconds < 15


# --- TLS: the chains the servers present ------------------------------------------------


def _chain_via_pyopenssl(address: str, port: int, sni: str, starttls: bool) -> list[x509.Certificate]:
    sock = socket.create_connection((address, port), timeout=5)
    try:
        if starttls:
            f = sock.makefile("rb")
            f.readline()
            sock.sendall(b"EHLO client.test\r\n")
            while not f.readline().startswith(b"250 "):
                pass
            sock.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
        sock.settimeout(None)  # pyOpenSSL wants a blocking socket
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        conn = SSL.Connection(ctx, sock)
        conn.set_tlsext_host_name(sni.encode())
        conn.set_connect_state()
        conn.do_handshake()
        return list(conn.get_peer_cert_chain(as_cryptography=True) or [])
    finally:
        sock.close()


EXPECT = {
    # kind: (chain length, stdlib verification error fragment or None)
    "good": (1, None),
    "intermediate": (2, None),
    "wrong-name": (1, "Hostname mismatch"),
    "expired": (1, "certificate has expired"),
    "not-yet-valid": (1, "certificate is not yet valid"),
    "self-signed": (1, "self-signed certificate"),
    "untrusted": (1, "unable to get local issuer certificate"),
}


@pytest.mark.parametrize("kind", list(EXPECT), ids=list(EXPECT))
def test_policy_host_presents_the_intended_chain(lab, smoke, kind):
    host = f"mta-sts.{kind}.https.insecure.test"
    length, error = EXPECT[kind]
    chain = _chain_via_pyopenssl(lab.policy_address, 443, host, starttls=False)
    assert len(chain) == length
    assert chain[0] == lab.issue(host, kind).leaf
    ctx = ssl.create_default_context(cafile=str(lab.ca_file))
    with socket.create_connection((lab.policy_address, 443), timeout=5) as raw:
        if error is None:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        else:
            with pytest.raises(ssl.SSLCertVerificationError, match=error):
                ctx.wrap_socket(raw, server_hostname=host)


@pytest.mark.parametrize("kind", list(EXPECT), ids=list(EXPECT))
def test_receiver_presents_the_intended_chain_after_starttls(lab, smoke, kind):
    host = f"{kind}.mx.insecure.test"
    chain = _chain_via_pyopenssl(lab.address_of(host), 25, host, starttls=True)
    assert len(chain) == EXPECT[kind][0]
    assert chain[0] == lab.issue(host, kind).leaf
    assert host in lab.receiver_sni(host)


def test_policy_host_without_sni_gets_the_fallback_certificate(lab, smoke):
    ctx = ssl.create_default_context(cafile=str(lab.ca_file))
    ctx.check_hostname = False
    with socket.create_connection((lab.policy_address, 443), timeout=5) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        ctx.wrap_socket(raw, server_hostname=None)


# --- HTTPS policy host behaviours -------------------------------------------------------


def _get(lab, domain: str, path: str = "/.well-known/mta-sts.txt", timeout: float = 10):
    """GET over TLS to the policy address with SNI and Host = mta-sts.<domain>."""
    host = f"mta-sts.{domain}"
    ctx = ssl.create_default_context(cafile=str(lab.ca_file))
    raw = socket.create_connection((lab.policy_address, 443), timeout=timeout)
    sock = ctx.wrap_socket(raw, server_hostname=host)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return sock, resp


@pytest.mark.rfc("8461 3.3")
def test_policy_host_serves_the_policy(lab, smoke):
    conn, resp = _get(lab, "smoke.secure.test")
    body = resp.read()
    conn.close()
    assert (resp.status, resp.getheader("Content-Type"), body) == (200, "text/plain", POLICY.encode())
    reqs = lab.policy_requests("smoke.secure.test")
    assert reqs and reqs[-1].sni == "mta-sts.smoke.secure.test"
    assert reqs[-1].target == "/.well-known/mta-sts.txt"


@pytest.mark.parametrize(
    "domain, status, header, value",
    [
        ("notfound", 404, None, None),
        ("redirect", 301, "Location", "https://mta-sts.smoke.secure.test/.well-known/mta-sts.txt"),
        ("html", 200, "Content-Type", "text/html"),
        ("nocontenttype", 200, "Content-Type", None),
        ("cookie", 200, "Set-Cookie", "a=b"),
        ("hugechunked", 200, "Transfer-Encoding", "chunked"),
        ("huge", 200, "Content-Length", "200000"),
    ],
    ids=["status-404", "redirect", "content-type-html", "no-content-type", "cookie",
         "chunked", "oversized"],
)
def test_policy_host_misbehaviours(lab, smoke, domain, status, header, value):
    conn, resp = _get(lab, f"{domain}.policy.insecure.test")
    body = resp.read()
    conn.close()
    assert resp.status == status
    if header is not None:
        assert resp.getheader(header) == value
    if domain.startswith("huge"):
        assert len(body) == 200_000 and body.startswith(POLICY.encode())


def test_policy_host_other_paths_are_404(lab, smoke):
    conn, resp = _get(lab, "smoke.secure.test", path="/.well-known/mta-sts.json")
    resp.read()
    conn.close()
    assert resp.status == 404


@pytest.mark.parametrize("domain, at_least", [("slow", 1.0), ("trickle", 0.2)],
                         ids=["slow-head", "trickling-body"])
def test_policy_host_delays(lab, smoke, domain, at_least):
    t0 = time.monotonic()
    conn, resp = _get(lab, f"{domain}.policy.insecure.test")
    body = resp.read()
    conn.close()
    assert body == POLICY.encode()
    assert time.monotonic() - t0 >= at_least


def test_policy_host_abort_cuts_the_body(lab, smoke):
    conn, resp = _get(lab, "abort.policy.insecure.test")
    with pytest.raises(http.client.IncompleteRead):
        resp.read()
    conn.close()


def test_unreachable_policy_host_refuses_connections(lab, smoke):
    r = lab.query("mta-sts.refused.policy.insecure.test", "A")
    address = r.answer[0][0].address
    assert address != lab.policy_address
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, 443), timeout=3)


# --- SMTP receivers ---------------------------------------------------------------------


def test_receiver_records_a_message_sent_over_starttls(lab, smoke):
    mx = smoke["smoke.secure.test"].mx[0]
    lab.clear_messages(mx.host)
    ctx = ssl.create_default_context(cafile=str(lab.ca_file))
    with smtplib.SMTP(mx.address, 25, local_hostname="client.test", timeout=10) as s:
        s._host = mx.host  # the name STARTTLS verifies (connected by address)
        s.starttls(context=ctx)
        s.sendmail("a@client.test", ["b@smoke.secure.test"],
                   b"Subject: lab smoke\r\n\r\nhello\r\n")
    msgs = lab.wait_for_messages(mx.host, 1, timeout=5)
    assert msgs[0].tls and msgs[0].tls_version in ("TLSv1.2", "TLSv1.3")
    assert msgs[0].rcpt_tos == ("b@smoke.secure.test",)
    assert msgs[0].message["Subject"] == "lab smoke"


def test_receiver_without_starttls_does_not_offer_it(lab, smoke):
    mx = smoke["smoke.insecure.test"].mx[0]
    with smtplib.SMTP(mx.address, 25, local_hostname="client.test", timeout=10) as s:
        s.ehlo()
        assert not s.has_extn("starttls")
        s.sendmail("a@client.test", ["b@smoke.insecure.test"], b"Subject: plain\r\n\r\nx\r\n")
    msg = lab.wait_for_messages(mx.host, 1, timeout=5)[-1]
    assert not msg.tls and msg.tls_version is None


def test_receiver_data_reply_is_configurable(lab):
    d = lab.add(LabDomain("tempfail.insecure.test",
                          mx=[LabMx("mx.tempfail.insecure.test", data_reply="451 4.3.0 try later")]))
    with smtplib.SMTP(d.mx[0].address, 25, local_hostname="client.test", timeout=10) as s, \
            pytest.raises(smtplib.SMTPDataError) as err:
        s.sendmail("a@client.test", ["b@tempfail.insecure.test"], b"Subject: x\r\n\r\nx\r\n")
    assert err.value.smtp_code == 451


# --- the sending Postfix ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pf_domains(lab):
    return {d.name: d for d in lab.add(
        LabDomain("pf-good.secure.test",
                  mx=[LabMx("mx.pf-good.secure.test", cert="good", tlsa=["3 1 1 auto"])]),
        LabDomain("pf-plain.insecure.test", mx=[LabMx("mx.pf-plain.insecure.test", starttls=False)]),
        LabDomain("pf-dane-bad.secure.test",
                  mx=[LabMx("mx.pf-dane-bad.secure.test", cert="good",
                            tlsa=["3 1 1 " + "00" * 32])]),
        LabDomain("pf-broken.bogus.test", mx=[LabMx("mx.pf-broken.bogus.test")]),
    )}


@pytest.fixture
def postfix(lab, pf_domains):
    pf = lab.postfix()
    yield pf
    pf.stop()


@pytest.mark.e2e
def test_postfix_delivers_opportunistically_over_tls(lab, postfix):
    resolv_before = open("/etc/resolv.conf", "rb").read()
    lab.clear_messages("mx.pf-good.secure.test")
    qid = postfix.submit("sender@lab.test", "rcpt@pf-good.secure.test",
                         "Subject: postfix smoke\r\n\r\nhello\r\n")
    d = postfix.wait_delivery(qid, timeout=20)
    assert d.status == "sent", d.line
    assert d.relay.startswith("mx.pf-good.secure.test[")
    assert d.tls is not None and d.tls.level == "Trusted"  # may + lab CA: chain trusted
    msg = lab.wait_for_messages("mx.pf-good.secure.test", 1, timeout=10)[-1]
    assert msg.tls and msg.peer[0] == lab.postfix_address
    assert msg.message["Subject"] == "postfix smoke"
    postfix.wait_queue_empty(timeout=10)
    assert open("/etc/resolv.conf", "rb").read() == resolv_before


@pytest.mark.e2e
def test_postfix_sendmail_path_and_plaintext_receiver(lab, postfix):
    lab.clear_messages("mx.pf-plain.insecure.test")
    postfix.sendmail("sender@lab.test", "rcpt@pf-plain.insecure.test",
                     b"Subject: via sendmail\r\n\r\nx\r\n")
    msg = lab.wait_for_messages("mx.pf-plain.insecure.test", 1, timeout=20)[-1]
    assert not msg.tls
    sent = [d for d in postfix.deliveries() if d.recipient == "rcpt@pf-plain.insecure.test"]
    assert sent and sent[-1].status == "sent" and sent[-1].tls is None


@pytest.mark.e2e
@pytest.mark.rfc("7672 2.1.1")
def test_postfix_resolves_through_the_lab_validator(lab, postfix):
    """A bogus MX RRset is a temporary failure: Postfix asks Unbound, not the host's DNS."""
    qid = postfix.submit("sender@lab.test", "rcpt@pf-broken.bogus.test", "Subject: x\r\n\r\nx\r\n")
    d = postfix.wait_delivery(qid, timeout=20)
    assert d.status == "deferred"
    assert "pf-broken.bogus.test" in d.detail and "try again" in d.detail.lower()
    postfix.delete_all()


@pytest.mark.e2e
@pytest.mark.rfc("7672 2.2")
@pytest.mark.parametrize(
    "domain, status, level",
    [("pf-good.secure.test", "sent", "Verified"),
     ("pf-dane-bad.secure.test", "deferred", None),
     ("pf-plain.insecure.test", "sent", None)],
    ids=["dane-match", "dane-mismatch", "insecure-zone-no-dane"],
)
def test_postfix_dane_sees_the_ad_bit(lab, postfix, domain, status, level):
    """With smtp_tls_security_level=dane Postfix only verifies when the AD bit reached it."""
    postfix.reload(smtp_tls_security_level="dane")
    qid = postfix.submit("sender@lab.test", f"rcpt@{domain}", "Subject: dane\r\n\r\nx\r\n")
    d = postfix.wait_delivery(qid, timeout=20)
    assert d.status == status, d.line
    if level is not None:
        assert d.tls is not None and d.tls.level == level
    if status == "deferred":
        assert "Server certificate not verified" in d.detail or "TLSA" in d.detail, d.detail
        postfix.delete_all()


class _Socketmap:
    """Minimal socketmap server (netstrings) answering one fixed reply to every lookup."""

    def __init__(self, reply: bytes) -> None:
        import threading

        self.reply = reply
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                buf = b""
                try:
                    while True:
                        data = conn.recv(4096)
                        if not data:
                            break
                        buf += data
                        while b":" in buf:
                            size, rest = buf.split(b":", 1)
                            n = int(size)
                            if len(rest) < n + 1:
                                break
                            self.requests.append(rest[:n])
                            buf = rest[n + 1:]
                            conn.sendall(b"%d:%s," % (len(self.reply), self.reply))
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


@pytest.mark.e2e
def test_postfix_policy_map_hook(lab, pf_domains):
    """lab.postfix(policy_map=...) makes Postfix ask that socketmap for every next hop."""
    server = _Socketmap(b"OK encrypt")
    pf = lab.postfix(policy_map=f"socketmap:inet:127.0.0.1:{server.port}:postfix")
    try:
        qid = pf.submit("sender@lab.test", "rcpt@pf-plain.insecure.test", "Subject: x\r\n\r\nx\r\n")
        d = pf.wait_delivery(qid, timeout=20)
        assert d.status == "deferred"
        assert "TLS is required, but was not offered" in d.detail
        assert b"postfix pf-plain.insecure.test" in server.requests
    finally:
        pf.stop()
        server.close()
    # Nothing of that Postfix is left: the lab's marked processes are NSD and Unbound only.
    left = {os.path.basename(os.readlink(f"/proc/{p}/exe"))
            for p in runtime.find_lab_processes(lab.dir) if os.path.exists(f"/proc/{p}")}
    assert left <= {"nsd", "unbound"}, left


# --- running by hand and cleaning up after a dead owner ---------------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_python_m_tests_lab_up_and_down():
    import json
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "tests.lab", "up"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("stop with"):
                break
        text = "".join(lines)
        info = json.loads(text[: text.index("\n}\n") + 2])
        resolver = info["resolver"].split(":")[0]
        r = dns.query.udp(dns.message.make_query("good.secure.test", "MX", want_dnssec=True),
                          resolver, timeout=3)
        assert r.answer and r.flags & dns.flags.AD
        assert info["startup_seconds"] < 15 and os.path.exists(info["ca_file"])
        net = info["net"].split(".")[1]  # only this lab: others may be up on the machine
        down = subprocess.run([sys.executable, "-m", "tests.lab", "down", "--net", net], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
        assert "stopped lab" in down.stdout
        assert proc.wait(15) == 0
        assert not os.path.exists(info["dir"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_leftovers_of_a_killed_lab_are_reaped():
    import signal
    import sys

    code = ("import sys, time; from tests.lab import Lab; lab = Lab().start(); "
            "print(lab.net.n, flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    try:
        n = int(proc.stdout.readline())
        lab_dir = runtime.lab_dir(n)
        assert len(runtime.find_lab_processes(lab_dir)) >= 2  # NSD and Unbound
        proc.send_signal(signal.SIGKILL)  # no finalizer, no atexit: daemons are orphaned
        proc.wait(10)
        assert runtime.find_lab_processes(lab_dir)
        assert n in runtime.reap_all_stale()
        assert runtime.find_lab_processes(lab_dir) == []
        assert not lab_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
