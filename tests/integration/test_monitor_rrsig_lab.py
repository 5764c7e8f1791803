"""``smtptls monitor --once --json`` against a lab zone whose signer stopped (RRSIGs that
expire three days after signing) and a domain whose MX certificate expires in five days,
both at the default ``warn_days`` (14); and the real resolver reading the RRSIG
expiration from the lab's validating Unbound (RFC 4034 §3.1.5, RFC 7672 §2.1)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from smtptls.config import DnsConfig
from smtptls.net.dns import DnsResolver
from tests.integration.monitor_support import alerts_of as _alerts
from tests.integration.monitor_support import run_monitor as _monitor
from tests.lab import LabDomain, LabMx, LabZone, PolicyHost

pytestmark = pytest.mark.lab

ZONE = "sig-expiring.test"           # kind "expiring": RRSIGs end 3 days after signing
SIGNED = f"mon-rrsig.{ZONE}"
CERT5 = "mon-cert5.secure.test"      # MX certificate of kind "expiring": 5 days left
STEADY = "mon-rrsig-steady.secure.test"  # lab default: signatures valid for 14 days
UNSIGNED = "mon-rrsig-unsigned.insecure.test"


def _domain(name: str, *, cert: str = "good") -> LabDomain:
    mx = f"mx1.{name}"
    return LabDomain(name, mx=[LabMx(mx, cert=cert, tlsa=["3 1 1 auto"])],
                     txt={"_mta-sts": ["v=STSv1; id=20261201T000000"]},
                     policy=PolicyHost(body=f"version: STSv1\nmode: enforce\nmx: {mx}\n"
                                            "max_age: 604800\n"))


@pytest.fixture(scope="module")
def domains(lab):
    lab.add_zone(LabZone(ZONE, "expiring"))
    lab.add(_domain(SIGNED), _domain(CERT5, cert="expiring"), _domain(STEADY),
            _domain(UNSIGNED))
    return lab


def _resolver(lab) -> DnsResolver:
    host, port = lab.resolver
    return DnsResolver(DnsConfig(nameservers=(f"{host}:{port}",), timeout=5))


@pytest.mark.rfc
async def test_rfc4034_3_1_5_resolver_reads_signature_expiration_from_unbound(domains):
    lab = domains
    r = _resolver(lab)
    now = dt.datetime.now(dt.UTC)
    mx = await r.mx(SIGNED)
    tlsa = await r.tlsa(f"_25._tcp.mx1.{SIGNED}")
    for answer in (mx, tlsa):
        assert answer.secure and answer.records
        assert answer.sig_expires is not None
        # signed at most now, valid for 3 days from then (zones.EXPIRING_SIG_DAYS)
        assert now + dt.timedelta(days=2) < answer.sig_expires <= now + dt.timedelta(days=3)
    steady = await r.mx(STEADY)
    assert steady.secure and steady.sig_expires is not None
    assert now + dt.timedelta(days=13) < steady.sig_expires <= now + dt.timedelta(days=14)
    unsigned = await r.mx(UNSIGNED)
    assert unsigned.records and not unsigned.secure and unsigned.sig_expires is None


@pytest.fixture
def config(domains, tmp_path) -> Path:
    lab = domains
    path = tmp_path / "smtptls.toml"
    # no warn_days / rrsig_warn_days: the defaults (14 and 3 days) decide
    path.write_text(
        f'[dns]\nnameservers = ["{lab.resolver[0]}"]\nport = {lab.resolver[1]}\n'
        f'[fetch]\nca_file = "{lab.ca_file}"\n'
        f'[alerts]\nlog = false\nstate_path = "{tmp_path / "alerts.json"}"\n'
        f'[monitor]\ndomains = ["{SIGNED}", "{CERT5}"]\ntimeout = 10.0\n'
        f'state_path = "{tmp_path / "monitor.json"}"\n')
    return path


@pytest.mark.rfc
async def test_rfc7672_2_1_monitor_alerts_before_rrsigs_over_mx_tlsa_and_mta_sts_expire(
        config):
    code, doc = await _monitor(config)
    assert code == 1
    got = _alerts(doc, SIGNED)
    mx1 = f"mx1.{SIGNED}"
    wanted = {f"{SIGNED} MX", f"_mta-sts.{SIGNED} TXT", f"_25._tcp.{mx1} TLSA", f"{mx1} A"}
    rrsig = {s: a for (c, s), a in got.items() if c == "monitor.rrsig-expiring"}
    assert wanted <= set(rrsig), sorted(got)
    for subject in wanted:
        alert = rrsig[subject]
        assert alert["severity"] == "warning"   # within rrsig_warn_days, over a day left
        assert "2 day(s)" in alert["message"]
        assert alert["fix"].startswith("re-sign the zone of ") and "cron" in alert["fix"]
    # the lab's certificates are valid for 90 days: nothing to say about them here
    assert not any(c.startswith("monitor.cert-") for c, _ in got)


@pytest.mark.rfc
async def test_rfc5280_4_1_2_5_mx_certificate_expiring_in_5_days_alerts_at_default_horizon(
        config):
    _, doc = await _monitor(config)
    got = _alerts(doc, CERT5)
    mx_cert = [a for (c, s), a in got.items()
               if c == "monitor.cert-expiring" and s.startswith(f"mx1.{CERT5} [")]
    assert len(mx_cert) == 1, sorted(got)
    assert mx_cert[0]["severity"] == "warning" and mx_cert[0]["fix"]
    assert "day(s)" in mx_cert[0]["message"]
    # the policy host's certificate (kind "good") is far from expiry
    assert ("monitor.cert-expiring", f"mta-sts.{CERT5}") not in got
    # the secure.test zone is signed for 14 days, as a signer with its default lifetime
    # does: outside rrsig_warn_days (3), so no signature alert for this domain
    assert not any(c == "monitor.rrsig-expiring" for c, _ in got), sorted(got)
