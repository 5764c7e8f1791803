"""Third-party DANE vectors from the shared corpus: OpenSSL's danetest suite, real
chains captured by Stalwart, and the mox / Postfix scenario descriptions (certificates
generated here)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from dane_certs import DAY, NOW, Issued, key, make_cert, rec, zeros

from smtptls.dane import (
    HostLookup,
    Requirement,
    Security,
    TlsaLookup,
    TLSARecord,
    decide_host,
    verify_chain,
)
from smtptls.dane.publish import load_certificates
from tests.conftest import corpus_params

# Parametrization reads the corpus at collection through ``corpus_params``; every test
# that needs it also takes the ``corpus`` fixture, which skips (or, in CI, fails) without it.
VECTORS = "vectors"  # below the corpus folder


def _openssl_cases(corpus: Path) -> list[Any]:
    data = json.loads((corpus / VECTORS / "openssl" / "danetest.json").read_text())
    cases = []
    for fname, entries in data["files"].items():
        for case in entries:
            if case["smtp_applicable"]:
                cases.append(pytest.param(case, id=f"{fname}-{case['id']}"))
    return cases


OPENSSL_CASES = corpus_params(_openssl_cases)


def test_openssl_vectors_present(corpus: Path) -> None:
    assert (corpus / VECTORS / "openssl" / "danetest.json").is_file()
    assert len(_openssl_cases(corpus)) == 35


@pytest.mark.rfc("7672 3.1")
@pytest.mark.parametrize("case", OPENSSL_CASES)
def test_rfc7672_3_openssl_danetest(case: dict, corpus: Path) -> None:
    """OpenSSL's DANE suite (test/danetest.in, dane-cross.in), SMTP-applicable cases.

    Mapping of OpenSSL's expectations to a DANE verdict for SMTP:

    - ``X509_V_OK`` → ``ok``, and our ``depth`` equals OpenSSL's match depth
      (0 for the leaf; for a "2 x 0" anchor carried in the record, one above the top
      certificate used, or that certificate's depth for a bare key).
    - ``X509_V_ERR_DANE_NO_MATCH`` → not ok, reason ``no-match``.
    - ``X509_V_ERR_HOSTNAME_MISMATCH`` → not ok, ``name-mismatch``, same depth, when
      the match was a DANE-TA(2) record. When the match was DANE-EE(3) (case 54),
      OpenSSL fails only because its name checks for DANE-EE are on unless
      ``DANE_FLAG_NO_DANE_EE_NAMECHECKS`` is set, as Postfix sets it; RFC 7672 §3.2.1
      says DANE-EE ignores names, so for SMTP the expected verdict is ``ok``.
    - The records are those the driver loads: the header of cases 43-46 declares
      one record, so the second TLSA line of those blocks is never read by OpenSSL
      (the parsed json shows it in the chain metadata); neither is it here.
    - ``now`` is 2030-01-01: inside every certificate's validity except the
      "never valid" leaves of cases 1-10, which only DANE-EE records match.
    - The CA file of the driver (PKIX trust store) plays no part: PKIX usages are
      unusable for SMTP and those cases are not in this set.
    """
    records = [TLSARecord(t["usage"], t["selector"], t["mtype"], bytes.fromhex(t["data_hex"]))
               for t in case["tlsa"]]
    chain = [x509.load_pem_x509_certificate(c["pem"].encode()).public_bytes(Encoding.DER)
             for c in case["chain"]]
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    v = verify_chain(records, chain, [case["reference_name"]], now)
    expected = case["expected_verify_result_name"]
    if expected == "X509_V_OK":
        assert v.ok, v.detail
        assert v.depth == case["expected_match_depth"]
    elif expected == "X509_V_ERR_DANE_NO_MATCH":
        assert not v.ok and v.reason == "no-match", v.detail
    elif expected == "X509_V_ERR_HOSTNAME_MISMATCH":
        if all(r.usage == 3 for r in records) and not case["no_dane_ee_namechecks"]:
            assert v.ok and v.reason == "dane-ee-match"  # RFC 7672 §3.2.1
        else:
            assert not v.ok and v.reason == "name-mismatch", v.detail
            assert v.depth == case["expected_match_depth"]
    else:
        pytest.fail(f"unmapped OpenSSL result {expected}")


# --- Stalwart: real chains ------------------------------------------------------------------


def _scenarios(corpus: Path) -> dict:
    return json.loads((corpus / VECTORS / "dane_scenarios.json").read_text())


def _stalwart_hosts(corpus: Path) -> list[Any]:
    hosts = _scenarios(corpus)["stalwart_realworld"]["hosts"]
    return [pytest.param(h, id=h["reference_name"]) for h in hosts]


def _stalwart_chain(corpus: Path, host: dict) -> list[bytes]:
    base = corpus / VECTORS / "stalwart-mail-server" / "dane"
    return [(base / f).read_bytes() for f in host["chain_files"]]


@pytest.mark.parametrize("host", corpus_params(_stalwart_hosts))
def test_rfc7672_3_1_1_real_chains_expired_leaf_still_verifies(host: dict,
                                                              corpus: Path) -> None:
    records = [TLSARecord.from_text(t) for t in host["tlsa"]]
    chain = _stalwart_chain(corpus, host)
    later = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    leaf = x509.load_der_x509_certificate(chain[0])
    assert leaf.not_valid_after_utc < later  # the leaf really is expired
    v = verify_chain(records, chain, [host["reference_name"]], later)
    assert v.ok and v.reason == "dane-ee-match", v.detail
    # "chain_without_leaf": fail.
    assert not verify_chain(records, chain[1:], [host["reference_name"]], later).ok


def test_rfc7672_3_1_2_real_chain_dane_ta_only(corpus: Path) -> None:
    host = next(h for h in _scenarios(corpus)["stalwart_realworld"]["hosts"]
                if h["reference_name"] == "internet.nl")
    ta_only = [TLSARecord.from_text(t) for t in host["tlsa"] if t.startswith("2 ")]
    chain = _stalwart_chain(corpus, host)
    ok = verify_chain(ta_only, chain, ["internet.nl"], dt.datetime(2023, 6, 1, tzinfo=dt.UTC))
    assert ok.ok and ok.reason == "dane-ta-match" and ok.depth == 1
    late = verify_chain(ta_only, chain, ["internet.nl"], dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert not late.ok and late.reason == "expired"


def test_real_chain_with_zero_serial_loads(corpus: Path) -> None:
    host = next(h for h in _scenarios(corpus)["stalwart_realworld"]["hosts"]
                if h["reference_name"] == "mail.ietf.org")
    der = _stalwart_chain(corpus, host)[3]
    assert load_certificates(der)  # tolerated despite cryptography's warning


# --- mox: dane/dane_test.go scenarios -----------------------------------------------------


class MoxPki:
    """mox's setup: a TA certificate signing the leaf for "localhost"."""

    def __init__(self, leaf_not_after: dt.datetime = NOW + 365 * DAY) -> None:
        self.ta = make_cert("mox TA", key("ec", 50), ca=True, key_usage="ca")
        self.leaf = make_cert("localhost", key("ec", 51), self.ta, san=["localhost"],
                              not_after=leaf_not_after)
        self.chain = [self.leaf.der, self.ta.der]

    def record(self, name: str) -> TLSARecord:
        leaf_spki = self.leaf.spki
        return {
            "EE_SPKI_256": rec(3, 1, 1, self.leaf),
            "EE_SPKI_512": rec(3, 1, 2, self.leaf),
            "EE_SPKI_FULL": rec(3, 1, 0, self.leaf),
            "EE_SPKI_256_MISMATCH": zeros(3, 1, 1),
            "EE_SPKI_256_SHORT": TLSARecord(3, 1, 1, hashlib.sha256(leaf_spki).digest()[:16]),
            "USAGE10_SPKI_256": TLSARecord(10, 1, 1, hashlib.sha256(leaf_spki).digest()),
            "TA_CERT_256": rec(2, 0, 1, self.ta),
            "TA_CERT_FULL": rec(2, 0, 0, self.ta),
            "TA_CERT_FULL_MALFORMED": TLSARecord(2, 0, 0, self.ta.der[1:]),
            "TA_CERT_256_MISMATCH": zeros(2, 0, 1),
            "PKIXEE_SPKI_256": rec(1, 1, 1, self.leaf),
            "PKIXTA_CERT_256": rec(0, 0, 1, self.ta),
        }[name]


# Scenarios whose interest is DNS (lookups, CNAMEs): run through decide_host first.
MOX_DNS = {5, 6, 7, 8, 9, 10}
# mox's allowedUsages option: a filter the caller applies before verification.
MOX_ALLOWED = {2: {0}, 3: {3}}


def _mox_cases(corpus: Path) -> list[Any]:
    return [pytest.param(c, id=f"mox-{c['id']}") for c in _scenarios(corpus)["mox_dial"]["cases"]]


def _mox_record_names(case: dict) -> list[tuple[str | None, str]]:
    out = []
    for item in case["tlsa"]:
        if item.startswith("TLSA at _port._tcp."):
            where, _, name = item[len("TLSA at _port._tcp."):].partition(": ")
            out.append((where, name))
        else:
            out.append((None, item))
    return out


def _mox_decision(case: dict, pki: MoxPki) -> tuple[Requirement, tuple, list[str]]:
    """The DNS part of mox's Dial scenarios, as HostLookup/TlsaLookup inputs."""
    named = _mox_record_names(case)
    at: dict[str, list[TLSARecord]] = {}
    for where, name in named:
        at.setdefault(where or "localhost", []).append(pki.record(name))
    cid = case["id"]
    if cid == 7:  # the first CNAME lookup of the host is not authentic
        host = HostLookup("localhost", Security.INSECURE, ("example",), Security.INSECURE)
    elif cid == 8:  # localhost -> example1 (secure) -> example2 (insecure)
        host = HostLookup("localhost", Security.INSECURE, ("example1", "example2"),
                          first_security=Security.SECURE)
    elif cid in (9, 10):
        host = HostLookup("localhost", Security.SECURE, ("example",))
    else:
        host = HostLookup("localhost", Security.SECURE)
    tlsa_security = Security.INSECURE if cid == 6 else Security.SECURE
    lookups = {name: TlsaLookup(tlsa_security, tuple(at.get(name, ())))
               for name in ("localhost", "example", "example1", "example2")}
    d = decide_host(host, lookups)
    return d.requirement, d.records, list(d.reference_names)


@pytest.mark.parametrize("case", corpus_params(_mox_cases))
def test_rfc7672_mox_dial_scenarios(case: dict, corpus: Path) -> None:
    cid = case["id"]
    pki = MoxPki(leaf_not_after=NOW - DAY if cid == 17 else NOW + 365 * DAY)
    names = ["example"] if cid == 16 else ["localhost"]
    if cid in MOX_DNS:
        requirement, records, names = _mox_decision(case, pki)
        if case["expected"].startswith("Err"):
            assert requirement is Requirement.NO_DANE
            return
        assert requirement is Requirement.DANE_REQUIRED
    else:
        records = tuple(pki.record(n) for _, n in _mox_record_names(case))
        if cid in MOX_ALLOWED:
            records = tuple(r for r in records if r.usage in MOX_ALLOWED[cid])
    v = verify_chain(list(records), pki.chain, names, NOW)
    expected = case["expected"]
    if expected.startswith("verified"):
        want = pki.record(expected.split()[1])
        assert v.ok and v.matched == want, v.detail
    else:
        assert not v.ok, v.detail
        if cid == 16:
            assert v.reason == "name-mismatch"
        if cid == 17:
            assert v.reason == "expired"
        if cid in (18, 20, 24, 25):
            assert v.reason == "no-usable-records"


# --- Postfix: src/tls/tls_dane.sh scenarios --------------------------------------------------


class PostfixPki:
    """tls_dane.sh's setup: EE(mail.example.com) <- CA 2 <- CA 1 <- Root CA, P-256."""

    def __init__(self) -> None:
        self.root = make_cert("Root CA", key("ec", 60), ca=True, key_usage="ca")
        self.ca1 = make_cert("CA 1", key("ec", 61), self.root, ca=True, key_usage="ca")
        self.ca2 = make_cert("CA 2", key("ec", 62), self.ca1, ca=True, key_usage="ca")
        self.ee = make_cert("mail.example.com", key("ec", 63), self.ca2,
                            san=["mail.example.com"], key_usage="ee")
        self.ss = make_cert("mail.example.com", key("ec", 64), ca=True)
        self.acert = make_cert(None, key("ec", 65), not_before=NOW - 2 * DAY,
                               not_after=NOW - DAY)
        self.chain = [self.ee.der, self.ca2.der, self.ca1.der, self.root.der]
        self.chain1 = self.chain[:3]


SM = [(s, m) for s in (0, 1) for m in (0, 1, 2)]
# (row name, [(usage, selector, mtype, which cert, which chain, reference names)])
POSTFIX_PASS = {
    "OOB root TA": [(2, s, 0, "root", "chain1", ["mail.example.com"]) for s in (0, 1)],
    "OOB TA": [(2, s, 0, "ca2", "ee", ["mail.example.com"]) for s in (0, 1)],
    "in-chain root TA": [(2, s, 1, "root", "chain", ["mail.example.com"]) for s in (0, 1)],
    "valid TA (root)": [(2, s, m, "root", "chain", ["mail.example.com"]) for s, m in SM],
    "valid TA (intermediate)": [(2, s, m, ca, ch, ["mail.example.com"]) for s, m in SM
                                for ca in ("ca1", "ca2") for ch in ("chain", "chain1")],
    "valid TA+CA": [(2, s, m, ca, "chain1", ["mail.example.com"]) for s, m in SM
                    for ca in ("ca1", "ca2")],
    "sub-domain": [(2, s, m, ca, "chain1", ["whatever", ".example.com"]) for s, m in SM
                   for ca in ("ca1", "ca2")],
    "depth 0 TA": [(2, s, m, "ss", "ss", ["mail.example.com"]) for s, m in SM],
    "valid EE": [(3, s, m, "ee", "chain", ["whatever"]) for s, m in SM],
    "key-only EE": [(3, s, m, "acert", "acert", ["whatever"]) for s, m in SM],
}
POSTFIX_FAIL = {
    "wrong name": [(2, s, m, ca, "chain1", ["whatever"]) for s, m in SM
                   for ca in ("ca1", "ca2")],
    "missing TA": [(2, s, 1, "root", "chain1", ["mail.example.com"]) for s in (0, 1)],
    "non-TA": [(2, s, m, "ee", "chain", ["mail.example.com"]) for s, m in SM],
    "depth 0 TA namecheck": [(2, s, m, "ss", "ss", ["whatever"]) for s, m in SM],
    "wrong EE": [(3, s, m, "ca2", "chain", ["whatever"]) for s, m in SM],
}


def test_postfix_scenario_rows_all_covered(corpus: Path) -> None:
    rows = _scenarios(corpus)["postfix_tls_dane_sh"]
    assert {r[0] for r in rows["pass"]} == set(POSTFIX_PASS)
    assert {r[0] for r in rows["fail"]} == set(POSTFIX_FAIL)


def _postfix_params() -> list[Any]:
    out = []
    for table, ok in ((POSTFIX_PASS, True), (POSTFIX_FAIL, False)):
        for row, variants in table.items():
            out.append(pytest.param(row, variants, ok, id=f"{'pass' if ok else 'fail'}-{row}"))
    return out


@pytest.mark.parametrize(("row", "variants", "ok"), _postfix_params())
def test_rfc7672_postfix_tls_dane_scenarios(row: str, variants: list, ok: bool) -> None:
    pk = PostfixPki()
    chains = {"chain": pk.chain, "chain1": pk.chain1, "ee": [pk.ee.der], "ss": [pk.ss.der],
              "acert": [pk.acert.der]}
    for usage, selector, mtype, which, chain, names in variants:
        cert: Issued = getattr(pk, which)
        v = verify_chain([rec(usage, selector, mtype, cert)], chains[chain], names, NOW)
        assert v.ok is ok, (row, usage, selector, mtype, which, chain, v.detail)
