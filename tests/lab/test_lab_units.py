"""The lab's pure parts, without starting anything: model validation, TXT quoting,
signature corruption, certificate kinds, TLSA 'auto', address plan, log parsing."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.lab.model import (
    CertKind,
    LabDomain,
    LabError,
    LabMx,
    LabZone,
    PolicyHost,
    ZoneKind,
    normalize_name,
)
from tests.lab.pki import EXPIRING_CERT_DAYS, WRONG_NAME, LabPki
from tests.lab.postfix import parse_deliveries
from tests.lab.runtime import LabNet
from tests.lab.zones import corrupt_signatures, quote_txt

# --- model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [("Mx1.Example.TEST.", "mx1.example.test"), ("  a.test ", "a.test"), ("test", "test")],
    ids=["case-and-root-dot", "whitespace", "single-label"],
)
def test_normalize_name(raw, expected):
    assert normalize_name(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "a..test", "x" * 254, 5],
                         ids=["empty", "root", "empty-label", "too-long", "not-a-string"])
def test_normalize_name_rejects(raw):
    with pytest.raises(LabError):
        normalize_name(raw)


@pytest.mark.parametrize(
    "build",
    [
        lambda: LabMx("mx.a.test", pref=70000),
        lambda: LabMx("mx.a.test", port=0),
        lambda: LabMx("mx.a.test", tlsa="3 1 1 auto"),
        lambda: LabMx("mx.a.test", cert="nonsense"),
        lambda: PolicyHost(status=42),
        lambda: PolicyHost(chunk_size=0),
        lambda: LabDomain("a.test", txt={"_mta-sts": "v=STSv1; id=1"}),
        lambda: LabDomain("a.test", mx=["mx.a.test"]),
        lambda: LabDomain("a.test", records=[("a.test", "A")]),
        lambda: LabZone("z.test", kind="weird"),
    ],
    ids=["pref-range", "port-range", "tlsa-string", "cert-kind", "http-status", "chunk-size",
         "txt-not-list", "mx-not-labmx", "record-not-triple", "zone-kind"],
)
def test_model_rejects_bad_values(build):
    with pytest.raises(LabError):
        build()


def test_domain_normalises_and_fills_addresses():
    d = LabDomain("Shop.Secure.Test.", mx=[LabMx("MX1.shop.secure.test")],
                  txt={"_MTA-STS.": ["v=STSv1; id=1"]})
    assert d.name == "shop.secure.test" and d.policy_host == "mta-sts.shop.secure.test"
    assert list(d.txt) == ["_mta-sts"]
    filled = d.with_addresses({"mx1.shop.secure.test": "127.9.1.1"})
    assert filled.mx[0].address == "127.9.1.1" and d.mx[0].address is None


@pytest.mark.parametrize(
    "body, size, expected_len",
    [("abc", None, 3), ("abcdef", 4, 4), ("abc", 1000, 1000), (b"\x00\x01", 2, 2)],
    ids=["as-is", "truncated", "padded", "bytes"],
)
def test_policy_body_size(body, size, expected_len):
    out = PolicyHost(body=body, body_size=size).body_bytes()
    assert len(out) == expected_len
    raw = body.encode() if isinstance(body, str) else body
    assert out[: min(len(raw), expected_len)] == raw[: min(len(raw), expected_len)]


@settings(max_examples=50, deadline=None)
@given(body=st.text(max_size=200), size=st.integers(min_value=0, max_value=5000))
def test_policy_body_size_property(body, size):
    out = PolicyHost(body=body, body_size=size).body_bytes()
    assert len(out) == size
    assert out.startswith(body.encode()[:size])


# --- zones ------------------------------------------------------------------------------


def _txt_strings(rdata_text: str) -> list[bytes]:
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, rdata_text)
    return list(rd.strings)


@pytest.mark.parametrize(
    "value, strings",
    [
        ("v=STSv1; id=1", [b"v=STSv1; id=1"]),
        (("v=TLSRPTv1; ", "rua=mailto:a@b"), [b"v=TLSRPTv1; ", b"rua=mailto:a@b"]),
        ('quote " and \\ backslash', [b'quote " and \\ backslash']),
        ("", [b""]),
        ("x" * 300, [b"x" * 255, b"x" * 45]),
        ("caf\u00e9", ["caf\u00e9".encode()]),
    ],
    ids=["plain", "multi-string", "escapes", "empty", "split-255", "utf8"],
)
def test_quote_txt(value, strings):
    assert _txt_strings(quote_txt(value)) == strings


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=400), min_size=1, max_size=4))
def test_quote_txt_round_trip(parts):
    strings = _txt_strings(quote_txt(tuple(parts)))
    assert b"".join(strings) == "".join(parts).encode()
    assert all(len(s) <= 255 for s in strings)


SIGNED = """\
test. 30 IN DNSKEY 257 3 13 AAAA
test. 30 IN RRSIG DNSKEY 13 1 30 20300101000000 20200101000000 1 test. {sig}
a.test. 30 IN A 127.0.0.1
a.test. 30 IN RRSIG A 13 2 30 20300101000000 20200101000000 1 test. {half1} {half2}
"""


def test_corrupt_signatures_flips_one_bit_outside_dnskey():
    sig = base64.b64encode(bytes(range(64))).decode()
    text = SIGNED.format(sig=sig, half1=sig[:40], half2=sig[40:])
    out = corrupt_signatures(text).splitlines()
    assert out[1].split()[-1] == sig  # the DNSKEY RRset stays verifiable
    corrupted = base64.b64decode(out[3].split()[-1])
    diff = [a ^ b for a, b in zip(corrupted, bytes(range(64)), strict=True)]
    assert sum(bin(x).count("1") for x in diff) == 1
    assert out[0] == text.splitlines()[0] and out[2] == text.splitlines()[2]


# --- PKI --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return LabPki(tmp_path_factory.mktemp("pki"))


def _sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)


@pytest.mark.parametrize("kind", list(CertKind), ids=[k.value for k in CertKind])
def test_cert_kinds(pki, kind):
    c = pki.issue("mx.kind.test", kind)
    now = pki.now
    leaf = c.leaf
    expect_names = [WRONG_NAME] if kind is CertKind.WRONG_NAME else ["mx.kind.test"]
    assert _sans(leaf) == expect_names
    valid_now = leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc
    assert valid_now is (kind not in (CertKind.EXPIRED, CertKind.NOT_YET_VALID))
    issuer = {CertKind.SELF_SIGNED: leaf, CertKind.INTERMEDIATE: pki.intermediate.cert,
              CertKind.UNTRUSTED: pki.untrusted.cert}.get(kind, pki.root.cert)
    assert leaf.issuer == issuer.subject and c.issuer == issuer
    assert len(c.chain) == (2 if kind is CertKind.INTERMEDIATE else 1)
    assert c.chain_der[0] == c.leaf_der and c.chain_file.read_bytes() == c.chain_pem
    assert serialization.load_pem_private_key(c.key_pem, None).public_key() == leaf.public_key()
    if kind is CertKind.EXPIRING:
        expires = now + dt.timedelta(days=EXPIRING_CERT_DAYS)
        assert leaf.not_valid_after_utc == expires.replace(microsecond=0)


def test_issue_is_cached_and_full_chain_adds_the_issuer(pki):
    assert pki.issue("a.cache.test") is pki.issue(["a.cache.test"], "good")
    full = pki.issue("a.cache.test", "good", full_chain=True)
    assert full.chain[1] == pki.root.cert
    assert pki.issue("a.cache.test", "intermediate", full_chain=True).chain[2] == pki.root.cert


@pytest.mark.parametrize(
    "spec, which, selector, digest",
    [("3 1 1 auto", "leaf", 1, hashlib.sha256), ("3 0 2 auto", "leaf", 0, hashlib.sha512),
     ("2 0 1 auto", "issuer", 0, hashlib.sha256), ("1 1 1 AUTO", "leaf", 1, hashlib.sha256),
     ("0 1 2 auto", "issuer", 1, hashlib.sha512)],
    ids=["dane-ee-spki-sha256", "dane-ee-cert-sha512", "dane-ta-cert-sha256",
         "pkix-ee-upper-case", "pkix-ta-spki-sha512"],
)
def test_rfc6698_2_1_tlsa_auto(pki, spec, which, selector, digest):
    chain = pki.issue("mx.tlsa.test", "intermediate")
    cert = chain.leaf if which == "leaf" else chain.issuer
    raw = (cert.public_bytes(serialization.Encoding.DER) if selector == 0 else
           cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo))
    usage, sel, mtype, data = pki.tlsa_rdata(spec, chain).split()
    assert (usage, sel, mtype) == tuple(spec.split()[:3])
    assert data == digest(raw).hexdigest()


def test_tlsa_full_data_and_pass_through(pki):
    chain = pki.issue("mx.tlsa.test")
    assert pki.tlsa_rdata("3 0 0 auto", chain).split()[3] == chain.leaf_der.hex()
    assert pki.tlsa_rdata("3 1 1 abcd", chain) == "3 1 1 abcd"
    for bad in ("3 1 auto", "x 1 1 auto", "3 1 9 auto"):
        with pytest.raises(LabError):
            pki.tlsa_rdata(bad, chain)


# --- address plan -----------------------------------------------------------------------


@pytest.mark.parametrize("index, address", [(0, "127.7.1.1"), (253, "127.7.1.254"),
                                            (254, "127.7.2.1"), (63499, "127.7.250.254")],
                         ids=["first", "end-of-block", "next-block", "last"])
def test_mx_address_plan(index, address):
    assert LabNet(7, -1, None).mx(index) == address  # type: ignore[arg-type]


def test_mx_address_plan_is_bounded():
    with pytest.raises(LabError):
        LabNet(7, -1, None).mx(63500)  # type: ignore[arg-type]


def test_fixed_addresses():
    net = LabNet(7, -1, None)  # type: ignore[arg-type]
    assert (net.nsd, net.resolver, net.policy, net.unreachable, net.postfix) == (
        "127.7.0.1", "127.7.0.2", "127.7.0.3", "127.7.0.4", "127.7.0.9")


# --- Postfix log ------------------------------------------------------------------------

LOG = """\
Nov 23 12:17:19 postfix postfix/smtpd[2790]: CD90B20DF60: client=localhost[127.0.0.1]
Nov 23 12:17:19 postfix postfix/smtp[2795]: Verified TLS connection established to mx.a.test[127.9.1.1]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
Nov 23 12:17:19 postfix postfix/smtp[2795]: CD90B20DF60: to=<x@a.test>, relay=mx.a.test[127.9.1.1]:25, delay=0.03, delays=0.01/0.02/0.01/0, dsn=2.0.0, status=sent (250 OK)
Nov 23 12:17:19 postfix postfix/smtp[2795]: CD90B20DF60: to=<y@a.test>, relay=mx.a.test[127.9.1.1]:25, delay=0.03, delays=0.01/0.02/0.01/0, dsn=2.0.0, status=sent (250 OK)
Nov 23 12:17:20 postfix postfix/smtp[2795]: AB12: to=<z@b.test>, relay=mx.b.test[127.9.1.2]:25, delay=1, delays=0/0/1/0, dsn=4.7.5, status=deferred (TLS is required, but was not offered by host mx.b.test[127.9.1.2])
Nov 23 12:17:21 postfix postfix/smtp[2801]: EF34: to=<w@c.test>, relay=none, delay=0.1, delays=0/0/0.1/0, dsn=4.4.3, status=deferred (Host or domain name not found. Name service error for name=c.test type=MX: Host not found, try again)
Nov 23 12:17:22 postfix postfix/error[2802]: EF34: to=<w@c.test>, relay=none, delay=2, delays=2/0/0/0, dsn=4.4.3, status=deferred (delivery temporarily suspended)
"""


def test_parse_deliveries():
    got = parse_deliveries(LOG)
    assert [(d.queue_id, d.recipient, d.status, d.dsn) for d in got] == [
        ("CD90B20DF60", "x@a.test", "sent", "2.0.0"),
        ("CD90B20DF60", "y@a.test", "sent", "2.0.0"),
        ("AB12", "z@b.test", "deferred", "4.7.5"),
        ("EF34", "w@c.test", "deferred", "4.4.3"),
        ("EF34", "w@c.test", "deferred", "4.4.3"),
    ]
    assert got[0].tls is not None and got[0].tls.level == "Verified"
    assert got[1].tls == got[0].tls          # same session, same message
    assert got[2].tls is None                # same process, new message, no handshake
    assert got[2].detail.startswith("TLS is required")
    assert got[3].relay == "none" and got[3].tls is None


def test_parse_deliveries_filters_by_queue_id():
    assert [d.recipient for d in parse_deliveries(LOG, "AB12")] == ["z@b.test"]
    assert parse_deliveries(LOG, "NOPE") == []


def test_zone_kinds_are_closed():
    assert {k.value for k in ZoneKind} == {"secure", "insecure", "bogus", "expired",
                                           "expiring"}
    assert LabZone("X.Test", "bogus") == LabZone("x.test", ZoneKind.BOGUS)


# --- Postfix 3.10: mount namespace arguments and the cached root file system --------------


def test_mountns_arguments():
    from tests.lab.mountns import _parse

    assert _parse(["/r", "--", "postfix", "start-fg"]) == ("/r", None, [], ["postfix", "start-fg"])
    assert _parse(["/r", "--root", "/t", "--bind", "/tmp", "--", "x"]) == \
        ("/r", "/t", ["/tmp"], ["x"])
    for bad in ([], ["/r"], ["/r", "--"], ["--", "x"], ["/r", "--bind", "/tmp", "--", "x"],
                ["/r", "--root", "--", "x"], ["/r", "--other", "a", "--", "x"]):
        assert _parse(bad) is None, bad


def test_debroot_stamp_follows_the_package_list(monkeypatch):
    from tests.lab import debroot

    first = debroot.stamp()
    assert first == debroot.stamp() and len(first) == 12
    assert debroot.root_path().name == f"trixie-postfix-{first}"
    monkeypatch.setattr(debroot, "PACKAGES", (*debroot.PACKAGES, "postfix-pcre"))
    assert debroot.stamp() != first


def test_debroot_ids_from_the_trees_own_files(tmp_path):
    from tests.lab.debroot import DebRoot

    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n"
                                         "postfix:x:100:101:Postfix MTA:/var/spool/postfix:/x\n")
    (tmp_path / "etc/group").write_text("postfix:x:101:\npostdrop:x:102:\n")
    root = DebRoot(tmp_path, "3.10.13-0+deb13u1", "0.5.0rc1-2", 1, 1.0)
    assert root.passwd("postfix") == (100, 101)
    assert root.group("postdrop") == 102
    with pytest.raises(LabError):
        root.passwd("nobody")
