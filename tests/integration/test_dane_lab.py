"""The DANE destination engine against the lab: DNSSEC statuses, aliases, several MX
hosts, SNI, and the verdict per MX host (RFC 7672 §2, §3, §8.1)."""

from __future__ import annotations

import pytest

from smtptls.config import DnsConfig
from smtptls.dane.decide import Requirement
from smtptls.engine.dane_destination import DestinationVerdict, Verdict, check_destination
from smtptls.errors import DnsError
from smtptls.net.smtp import ProbeLimits
from tests.lab import LabDomain, LabMx, LabZone

pytestmark = pytest.mark.lab

LIMITS = ProbeLimits(connect_timeout=5, step_timeout=5, total_timeout=10)


def tlsa_for(lab, host: str, spec: str = "3 1 1 auto", kind: str = "good") -> str:
    """TLSA rdata for the certificate the lab receiver of ``host`` sends."""
    return lab.pki.tlsa_rdata(spec, lab.issue(host, kind))


@pytest.fixture(scope="module")
def dl(lab):
    """The destinations of this module, published in one update."""
    lab.add_zone(LabZone("dlexp.secure.test", "expired"))
    real_ins = "real.ci.insecure.test"
    lab.add(
        # Two MX hosts, one passing and one with a stale TLSA record.
        LabDomain("two.dl.secure.test", mx=[
            LabMx("mx1.two.dl.secure.test", pref=10, tlsa=["3 1 1 auto"]),
            LabMx("mx2.two.dl.secure.test", pref=20, tlsa=["3 1 1 " + "ab" * 32]),
        ]),
        # DANE on one MX host only: the other is in an unsigned zone.
        LabDomain("mixed.dl.secure.test", mx=[
            LabMx("mx1.mixed.dl.secure.test", pref=10, tlsa=["3 1 1 auto"]),
            LabMx("mx.mixed.dl.insecure.test", pref=20),
        ]),
        # MX RRset in a zone whose signatures are corrupted / expired.
        LabDomain("dlmb.bogus.test", mx=[LabMx("mx.mb.dl.secure.test", tlsa=["3 1 1 auto"])]),
        LabDomain("me.dlexp.secure.test", mx=[LabMx("mx.me.dl.secure.test",
                                                  tlsa=["3 1 1 auto"])]),
        # RFC 7505 null MX.
        LabDomain("null.dl.secure.test", records=[("null.dl.secure.test", "MX", "0 .")]),
        # Alias whose target is in an unsigned zone: only the original name counts
        # (RFC 7672 §2.2.3), and its TLSA records live at the original name.
        LabDomain("ci.dl.secure.test", mx=[LabMx(real_ins, publish_mx=False)], records=[
            ("ci.dl.secure.test", "MX", "10 alias.ci.dl.secure.test."),
            ("alias.ci.dl.secure.test", "CNAME", real_ins + "."),
            ("_25._tcp.alias.ci.dl.secure.test", "TLSA", tlsa_for(lab, real_ins)),
        ]),
        # Secure alias; TLSA records only at the original name: the fallback (RFC 7671 §7).
        LabDomain("co.dl.secure.test", mx=[LabMx("real.co.dl.secure.test", publish_mx=False)],
                  records=[
            ("co.dl.secure.test", "MX", "10 alias.co.dl.secure.test."),
            ("alias.co.dl.secure.test", "CNAME", "real.co.dl.secure.test."),
            ("_25._tcp.alias.co.dl.secure.test", "TLSA",
             tlsa_for(lab, "real.co.dl.secure.test")),
        ]),
    )
    return lab


async def check(lab, domain: str, **kw):
    ip, port = lab.resolver
    return await check_destination(domain, dns_config=DnsConfig(nameservers=(ip,), port=port,
                                                                timeout=5),
                                   limits=LIMITS, helo_name="client.test", **kw)


async def test_each_mx_gets_its_own_verdict(dl):
    report = await check(dl, "two.dl.secure.test")
    assert [m.host for m in report.mx] == ["mx1.two.dl.secure.test", "mx2.two.dl.secure.test"]
    assert [m.preference for m in report.mx] == [10, 20]
    assert [m.verdict for m in report.mx] == [Verdict.PASS, Verdict.FAIL]
    assert "[no-match]" in report.mx[1].reason
    assert report.verdict is DestinationVerdict.FAIL
    assert "mx2.two.dl.secure.test" in report.reason


async def test_dane_on_some_mx_hosts_only_is_partial(dl):
    report = await check(dl, "mixed.dl.secure.test")
    assert [m.verdict for m in report.mx] == [Verdict.PASS, Verdict.NO_DANE]
    assert report.mx[1].decision.reason == "address-insecure"
    # No-DANE hosts are still probed, for what opportunistic TLS would get.
    assert report.mx[1].checks[0].probe.tls_version is not None
    assert report.verdict is DestinationVerdict.PARTIAL and not report.ok


@pytest.mark.rfc("7672 2.2.1")
@pytest.mark.parametrize("domain", ["dlmb.bogus.test", "me.dlexp.secure.test"],
                         ids=["corrupted-signatures", "expired-signatures"])
async def test_rfc7672_2_2_1_bogus_mx_rrset_defers_the_destination(dl, domain):
    report = await check(dl, domain)
    assert str(report.mx_security) == "bogus"
    assert report.mx == ()
    assert report.verdict is DestinationVerdict.FAIL
    assert f"the MX lookup of {domain} is bogus: defer delivery" in report.reason


@pytest.mark.rfc("7672 8.1")
async def test_rfc7672_8_1_sni_is_the_tlsa_base_domain(dl):
    report = await check(dl, "two.dl.secure.test")
    assert report.mx[0].checks[0].probe.server_name == "mx1.two.dl.secure.test"
    assert "mx1.two.dl.secure.test" in dl.receiver_sni("mx1.two.dl.secure.test")


@pytest.mark.rfc("7672 2.2.3")
async def test_rfc7672_2_2_3_alias_into_an_unsigned_zone_uses_the_original_name(dl):
    report = await check(dl, "ci.dl.secure.test")
    (mx,) = report.mx
    assert mx.cname_chain == ("real.ci.insecure.test",)
    assert str(mx.address_security) == "insecure"
    assert [t.name for t in mx.tlsa] == ["_25._tcp.alias.ci.dl.secure.test"]
    assert mx.decision.tlsa_base == "alias.ci.dl.secure.test"
    assert mx.decision.requirement is Requirement.DANE_REQUIRED
    # The expanded name is not trusted, so it is not a reference name either.
    assert "real.ci.insecure.test" not in mx.decision.reference_names
    assert mx.verdict is Verdict.PASS, mx.reason
    assert "alias.ci.dl.secure.test" in dl.receiver_sni("real.ci.insecure.test")


@pytest.mark.rfc("7671 7")
async def test_rfc7671_7_secure_alias_falls_back_to_the_original_name(dl):
    report = await check(dl, "co.dl.secure.test")
    (mx,) = report.mx
    assert [t.name for t in mx.tlsa] == ["_25._tcp.real.co.dl.secure.test",
                                         "_25._tcp.alias.co.dl.secure.test"]
    assert mx.tlsa[0].records == ()
    assert mx.decision.tlsa_base == "alias.co.dl.secure.test"
    assert mx.verdict is Verdict.PASS, mx.reason
    assert report.ok


async def test_null_mx_accepts_no_mail(dl):
    report = await check(dl, "null.dl.secure.test")
    assert report.null_mx and report.mx == ()
    assert report.verdict is DestinationVerdict.NOT_APPLICABLE
    assert "null MX" in report.reason


async def test_nonexistent_domain(dl):
    report = await check(dl, "nothing-here.dl.secure.test")
    assert report.verdict is DestinationVerdict.NOT_APPLICABLE
    assert "does not exist" in report.reason


async def test_no_probe_reads_dns_only(dl):
    report = await check(dl, "two.dl.secure.test", probe=False)
    assert all(m.checks == () for m in report.mx)
    assert [m.verdict for m in report.mx] == [Verdict.UNCHECKED, Verdict.UNCHECKED]
    assert report.ok and not report.probed


async def test_unreachable_resolver_raises_a_dns_error():
    with pytest.raises(DnsError):
        await check_destination("two.dl.secure.test",
                                dns_config=DnsConfig(nameservers=("127.0.0.1",), port=9,
                                                     timeout=0.5))
