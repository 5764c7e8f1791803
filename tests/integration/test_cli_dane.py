"""``smtptls dane DOMAIN`` against the lab: the DANE scenario table, end to end.

Each scenario publishes a destination in the lab (signed, unsigned or broken zones,
TLSA records, receivers with chosen certificates), runs the real command in a
subprocess against the lab's validating resolver and checks the verdict, the reason a
postmaster reads and the exit status (0 pass, 1 DANE failure or not applicable).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from smtptls.cli import _tlsa_lookup
from smtptls.dane.verify import verify_chain
from smtptls.errors import DaneError, DnsError
from tests.lab import LabDomain, LabMx, LabZone

pytestmark = pytest.mark.lab

ZERO = "0" * 64


def run_dane(lab, domain: str, *extra: str) -> tuple[int, dict]:
    ip, port = lab.resolver
    proc = subprocess.run(
        [sys.executable, "-m", "smtptls", "dane", domain, "--json",
         "--nameserver", f"{ip}:{port}", "--timeout", "10", "--helo-name", "client.test",
         *extra],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def one_mx(name: str, **mx) -> LabDomain:
    return LabDomain(name, mx=[LabMx(f"mx.{name}", **mx)])


# id -> (domain, destination verdict, MX verdict, requirement, reason substring, exit)
SCENARIOS = {
    # RFC 7672 §3.1.1 / J7: DANE-EE matches the key; a self-signed leaf is fine.
    "ee-self-signed": (one_mx("ee.cli.secure.test", cert="self-signed", tlsa=["3 1 1 auto"]),
                       "pass", "pass", "dane-required",
                       "TLSA 3 1 1 matches the server certificate", 0),
    # J7: DANE-EE ignores names and dates.
    "ee-wrong-name": (one_mx("eewn.cli.secure.test", cert="wrong-name", tlsa=["3 1 1 auto"]),
                      "pass", "pass", "dane-required", "TLSA 3 1 1 matches", 0),
    "ee-expired": (one_mx("eeexp.cli.secure.test", cert="expired", tlsa=["3 0 1 auto"]),
                   "pass", "pass", "dane-required", "TLSA 3 0 1 matches", 0),
    # RFC 7672 §3.1.2 / J8: DANE-TA with the issuing intermediate, chain and name checked.
    "ta-intermediate": (one_mx("ta.cli.secure.test", cert="intermediate",
                               tlsa=["2 1 1 auto"]),
                        "pass", "pass", "dane-required",
                        "TLSA 2 1 1 matches the trust anchor at depth 1", 0),
    # A self-signed leaf matched by a DANE-TA record is its own anchor (depth 0).
    "ta-self-signed": (one_mx("tass.cli.secure.test", cert="self-signed", tlsa=["2 1 1 auto"]),
                       "pass", "pass", "dane-required",
                       "TLSA 2 1 1 matches the self-signed server certificate as trust anchor",
                       0),
    "ta-wrong-name": (one_mx("tawn.cli.secure.test", cert="wrong-name", full_chain=True,
                             tlsa=["2 1 1 auto"]),
                      "fail", "fail", "dane-required", "[name-mismatch]", 1),
    "ta-expired": (one_mx("taexp.cli.secure.test", cert="expired", full_chain=True,
                          tlsa=["2 1 1 auto"]),
                   "fail", "fail", "dane-required", "[expired]", 1),
    # Digest mismatch: the record matches nothing the server sent.
    "mismatch": (one_mx("mm.cli.secure.test", tlsa=[f"3 1 1 {ZERO}"]),
                 "fail", "fail", "dane-required", "[no-match]: do not deliver to this MX", 1),
    # RFC 7672 §2.2 / J5: usable TLSA but no STARTTLS: do not deliver.
    "no-starttls": (one_mx("nost.cli.secure.test", starttls=False, tlsa=["3 1 1 auto"]),
                    "fail", "fail", "dane-required",
                    "no STARTTLS offered although DANE requires authenticated TLS", 1),
    # RFC 7672 §2.1.2 / J1: MX host in a zone whose signatures are broken.
    "address-bogus": (LabDomain("ab.cli.secure.test",
                                mx=[LabMx("mx.ab.cli.bogus.test", tlsa=["3 1 1 auto"])]),
                      "fail", "fail", "defer", "is bogus: do not deliver to this host", 1),
    # RFC 7672 §2.2.1 / J2: insecure MX RRset, TLSA records or not: no DANE.
    "mx-insecure": (one_mx("mxi.cli.insecure.test", tlsa=["3 1 1 auto"]),
                    "not-applicable", "no-dane", "no-dane", "MX RRset of mxi.cli.insecure.test"
                    " is insecure: DANE does not apply", 1),
    # Secure MX, secure host, no TLSA records: DANE does not apply.
    "no-tlsa": (one_mx("nt.cli.secure.test"), "not-applicable", "no-dane", "no-dane",
                "no secure TLSA records", 1),
    # RFC 7672 §3.1.3 / J6: only PKIX usages and an unknown matching type: TLS mandatory,
    # unauthenticated.
    "unusable-only": (one_mx("un.cli.secure.test",
                             tlsa=["1 1 1 auto", "0 1 1 auto", "3 1 9 00ff"]),
                      "partial", "encrypt-only", "encrypt-only",
                      "established without authentication", 1),
    # J6: unusable records beside a usable one are ignored.
    "unusable-and-usable": (one_mx("uu.cli.secure.test", tlsa=["1 1 1 auto", "3 1 1 auto"]),
                            "pass", "pass", "dane-required", "TLSA 3 1 1 matches", 0),
    # RFC 7671 §9 / J9: digest agility; the stronger SHA2-512 record rules, and it
    # does not match.
    "digest-agility": (one_mx("da.cli.secure.test", tlsa=["3 1 1 auto", "3 1 2 " + "00" * 64]),
                       "fail", "fail", "dane-required", "[no-match]", 1),
    # RFC 7672 §2.2.2 / J4: no MX records: the domain's own address records.
    "non-mx": (LabDomain("amx.cli.secure.test",
                         mx=[LabMx("amx.cli.secure.test", publish_mx=False,
                                   tlsa=["3 1 1 auto"])]),
               "pass", "pass", "dane-required", "TLSA 3 1 1 matches", 0),
}


@pytest.fixture(scope="module")
def published(lab):
    lab.add_zone(LabZone("_tcp.mx.tb.cli.secure.test", "bogus"))
    lab.add(*(s[0] for s in SCENARIOS.values()), *EXTRA.values())
    return lab


# Published with the table, checked by their own tests.
EXTRA = {
    # RFC 7672 §2.1.2 / J1: secure MX host whose TLSA RRset sits in a broken zone.
    "tlsa-bogus": one_mx("tb.cli.secure.test", tlsa=["3 1 1 auto"]),
    # RFC 7672 §2.2.3 / J3: an MX host that is an alias; TLSA at the expanded name.
    "cname": LabDomain(
        "cn.cli.secure.test",
        mx=[LabMx("real.cn.cli.secure.test", publish_mx=False, cert="intermediate",
                  tlsa=["2 1 1 auto"])],
        records=[("cn.cli.secure.test", "MX", "10 alias.cn.cli.secure.test."),
                 ("alias.cn.cli.secure.test", "CNAME", "real.cn.cli.secure.test.")],
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS), ids=list(SCENARIOS))
def test_dane_lab_table(published, name):
    domain, dest_verdict, mx_verdict, requirement, reason, exit_code = SCENARIOS[name]
    code, out = run_dane(published, domain.name)
    assert out["domain"] == domain.name
    assert out["verdict"] == dest_verdict, out["reason"]
    (mx,) = out["mx"]
    assert mx["requirement"] == requirement, mx["decision"]
    assert mx["verdict"] == mx_verdict, mx["reason"]
    assert reason in mx["reason"]
    assert code == exit_code


@pytest.mark.rfc("7672 2.1.2")
def test_rfc7672_2_1_2_bogus_tlsa_for_a_secure_host_is_not_delivered_to(published):
    code, out = run_dane(published, "tb.cli.secure.test")
    (mx,) = out["mx"]
    assert mx["address_security"] == "secure"
    assert mx["tlsa"][0]["security"] == "bogus"
    assert mx["requirement"] == "defer" and mx["verdict"] == "fail"
    assert "TLSA lookup _25._tcp.mx.tb.cli.secure.test is bogus: do not deliver" in mx["reason"]
    assert mx["checks"] == []  # never connected
    assert (code, out["verdict"]) == (1, "fail")


@pytest.mark.rfc("7672 2.2.3")
def test_rfc7672_2_2_3_cname_mx_uses_the_expanded_name(published):
    code, out = run_dane(published, "cn.cli.secure.test")
    (mx,) = out["mx"]
    assert mx["host"] == "alias.cn.cli.secure.test"
    assert mx["cname_chain"] == ["real.cn.cli.secure.test"]
    assert mx["decision"]["tlsa_base"] == "real.cn.cli.secure.test"
    assert mx["decision"]["sni"] == "real.cn.cli.secure.test"
    assert set(mx["decision"]["reference_names"]) >= {"real.cn.cli.secure.test",
                                                      "alias.cn.cli.secure.test"}
    assert mx["verdict"] == "pass", mx["reason"]
    assert (code, out["verdict"]) == (0, "pass")
    # RFC 7672 §8.1: the receiver saw the TLSA base domain as SNI.
    assert "real.cn.cli.secure.test" in published.receiver_sni("real.cn.cli.secure.test")


@pytest.mark.rfc("7672 2.2.2")
def test_rfc7672_2_2_2_non_mx_destination(published):
    code, out = run_dane(published, "amx.cli.secure.test")
    assert out["has_mx"] is False
    assert "no MX records" in out["reason"] and "§2.2.2" in out["reason"]
    (mx,) = out["mx"]
    assert mx["host"] == "amx.cli.secure.test" and mx["preference"] is None
    assert code == 0


@pytest.mark.rfc("7672 2.2.1")
def test_rfc7672_2_2_1_insecure_mx_rrset_means_no_tlsa_lookups(published):
    code, out = run_dane(published, "mxi.cli.insecure.test")
    (mx,) = out["mx"]
    assert out["mx_security"] == "insecure"
    assert mx["tlsa"] == [] and mx["decision"]["reason"] == "mx-insecure"
    assert "sign the zone with DNSSEC" in mx["reason"]
    assert code == 1


def test_no_probe_is_dns_only(published):
    code, out = run_dane(published, "mm.cli.secure.test", "--no-probe")
    (mx,) = out["mx"]
    assert out["probed"] is False and mx["checks"] == []
    assert mx["verdict"] == "unchecked"
    assert mx["tlsa"][0]["records"] == [f"3 1 1 {ZERO}"]
    assert (code, out["verdict"]) == (0, "pass")


def test_human_output(published):
    ip, port = published.resolver
    proc = subprocess.run(
        [sys.executable, "-m", "smtptls", "dane", "ee.cli.secure.test",
         "--nameserver", f"{ip}:{port}", "--timeout", "10"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ee.cli.secure.test: PASS")
    assert any("TLSA _25._tcp.mx.ee.cli.secure.test (secure): 3 1 1" in x for x in lines)
    assert all(len(x) <= 100 for x in lines)


def test_unreachable_resolver_is_an_error():
    proc = subprocess.run(
        [sys.executable, "-m", "smtptls", "dane", "example.test", "--nameserver",
         "127.0.0.1:9", "--timeout", "1"],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "error" in proc.stderr


# --- '--lookup' for 'tlsa check' (smtptls.cli._tlsa_lookup) -------------------------------


def lookup_args(lab, host: str) -> argparse.Namespace:
    ip, port = lab.resolver
    return argparse.Namespace(lookup=host, port=25, nameserver=[f"{ip}:{port}"], timeout=5.0,
                              config=None)


def test_tlsa_lookup_secure_records_verify_the_receiver_chain(published):
    found = _tlsa_lookup.lookup_from_args(lookup_args(published, "mx.ee.cli.secure.test"))
    assert found.security == "secure"
    assert found.name == "_25._tcp.mx.ee.cli.secure.test"
    ((owner, rec),) = found.parsed
    assert owner == "_25._tcp.mx.ee.cli.secure.test."
    chain = published.issue("mx.ee.cli.secure.test", "self-signed")
    verdict = verify_chain([rec], [chain.leaf_der], ["mx.ee.cli.secure.test"])
    assert verdict.ok and verdict.reason == "dane-ee-match"
    assert "DNSSEC secure" in found.summary() and "not validated" not in found.summary()


@pytest.mark.rfc("7672 2.1.1")
def test_tlsa_lookup_insecure_records_are_flagged(published):
    found = _tlsa_lookup.lookup_from_args(lookup_args(published, "mx.mxi.cli.insecure.test"))
    assert found.security == "insecure" and len(found.records) == 1
    assert "not validated" in found.summary()
    assert found.to_dict()["security"] == "insecure"


@pytest.mark.parametrize(
    "host, error, message",
    [
        pytest.param("mx.tb.cli.secure.test", DnsError, "is bogus", id="bogus"),
        pytest.param("mx.nt.cli.secure.test", DaneError, "no TLSA records", id="none"),
    ],
)
def test_tlsa_lookup_errors(published, host, error, message):
    with pytest.raises(error, match=message):
        _tlsa_lookup.lookup_from_args(lookup_args(published, host))


def test_tlsa_check_lookup_cli_end_to_end(published, tmp_path):
    """``smtptls tlsa check CERT --lookup HOST``: records from DNS, matched to the chain."""
    chain = published.issue("mx.ee.cli.secure.test", "self-signed")
    pem = tmp_path / "chain.pem"
    pem.write_bytes(chain.chain_pem)
    ip, port = published.resolver
    base = [sys.executable, "-m", "smtptls", "tlsa", "check", str(pem),
            "--nameserver", f"{ip}:{port}", "--json"]
    ok = subprocess.run([*base, "--lookup", "mx.ee.cli.secure.test"], capture_output=True,
                        text=True, timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    out = json.loads(ok.stdout)
    assert out["ok"] is True and out["lookup"]["security"] == "secure"
    bad = subprocess.run([*base, "--lookup", "mx.nt.cli.secure.test"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "no TLSA records" in bad.stderr
    neither = subprocess.run([sys.executable, "-m", "smtptls", "tlsa", "check", str(pem)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert neither.returncode == 2 and "--records FILE or --lookup" in neither.stderr
