"""``smtptls check`` against lab domains: every outcome, with a golden JSON per domain.

Each domain below is published in the lab (DNS, policy hosts, STARTTLS receivers) and
checked with SMTP probes; the report (schema ``smtptls.check/1``) is compared with
``tests/integration/golden/<domain>.json`` after volatile fields are normalised (times,
durations, lab addresses, certificate dates and digests). Regenerate the files with
``SMTPTLS_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smtptls.check import CheckOptions, Gatherer, evaluate
from smtptls.config import DnsConfig
from tests.lab import LabDomain, LabMx, PolicyHost

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("SMTPTLS_UPDATE_GOLDEN") == "1"

S, N = "secure.test", "insecure.test"


def _policy(mode: str, *mx: str, max_age: int = 604800) -> str:
    return "\n".join(["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx),
                      f"max_age: {max_age}"]) + "\n"


def _domain(label: str, zone: str, *, mx: list | None = None, sts: str | None = None,
            policy: PolicyHost | None = None, tlsrpt: str | None = None,
            records: list | None = None) -> LabDomain:
    name = f"chk-{label}.{zone}"
    txt = {}
    if sts is not None:
        txt["_mta-sts"] = [sts]
    if tlsrpt is not None:
        txt["_smtp._tls"] = [tlsrpt.replace("{d}", name)]
    mxs = mx if mx is not None else [LabMx(f"mx1.{name}")]
    return LabDomain(name, mx=[m if isinstance(m, LabMx) else LabMx(m.format(d=name))
                               for m in mxs], txt=txt, policy=policy,
                     records=[tuple(x.format(d=name) for x in r) for r in records or []])


def _p(mode: str = "enforce", *, mx: tuple[str, ...] = ("mx1.{d}",), max_age: int = 604800,
       **kw) -> PolicyHost:
    return PolicyHost(body=_policy(mode, *mx, max_age=max_age), **kw)


RPT = "v=TLSRPTv1; rua=mailto:tlsrpt@{d}"
STS = "v=STSv1; id=20250601T000000"


def _specs() -> list[tuple[LabDomain, set[str]]]:
    """Lab domains and finding codes each report must contain."""
    def fixpolicy(d: LabDomain) -> LabDomain:
        if d.policy is None:
            return d
        body = d.policy.body
        text = body.replace("{d}", d.name) if isinstance(body, str) else body
        from dataclasses import replace
        return replace(d, policy=replace(d.policy, body=text))

    rows = [
        (_domain("clean", S, mx=[LabMx("mx1.chk-clean.secure.test", tlsa=["3 1 1 auto"])],
                 sts=STS, policy=_p(), tlsrpt=RPT), {"dane.rollover.no-next-key"}),
        (_domain("plain", N, mx=[LabMx("mx1.chk-plain.insecure.test", cert="self-signed")]),
         {"tls.cert-untrusted", "mx.unsigned", "mta-sts.absent", "tlsrpt.absent"}),
        (_domain("nostarttls", N, mx=[LabMx("mx1.chk-nostarttls.insecure.test",
                                            starttls=False)]),
         {"tls.starttls-missing"}),
        (_domain("expired", N, mx=[LabMx("mx1.chk-expired.insecure.test", cert="expired")],
                 sts=STS, policy=_p(), tlsrpt=RPT),
         {"tls.cert-expired", "mta-sts.mx-cert-invalid"}),
        (_domain("wrongname", N, mx=[LabMx("mx1.chk-wrongname.insecure.test",
                                           cert="wrong-name")],
                 sts=STS, policy=_p("testing"), tlsrpt=RPT),
         {"tls.cert-name-mismatch", "mta-sts.mx-cert-invalid", "mta-sts.mode-testing"}),
        (_domain("uncovered", N, mx=["mx1.{d}", LabMx("mx2.chk-uncovered.insecure.test",
                                                       pref=20)],
                 sts=STS, policy=_p(), tlsrpt=RPT), {"mta-sts.mx-not-covered"}),
        (_domain("p404", N, sts=STS, policy=_p(status=404), tlsrpt=RPT),
         {"mta-sts.policy-status"}),
        (_domain("predirect", N, sts=STS, tlsrpt=RPT,
                 policy=_p(redirect_to="https://mta-sts.chk-clean.secure.test/"
                           ".well-known/mta-sts.txt")), {"mta-sts.policy-redirect"}),
        (_domain("pctype", N, sts=STS, tlsrpt=RPT, policy=_p(content_type="text/html")),
         {"mta-sts.policy-content-type"}),
        (_domain("pcert", N, sts=STS, tlsrpt=RPT, policy=_p(cert="expired")),
         {"mta-sts.policy-tls"}),
        (_domain("plarge", N, sts=STS, tlsrpt=RPT, policy=_p(body_size=70000)),
         {"mta-sts.policy-too-large"}),
        (_domain("pinvalid", N, sts=STS, tlsrpt=RPT,
                 policy=PolicyHost(body="version: STSv1\nmode: enforce\nmax_age: 99999999\n"
                                   "mx: mx1.chk-pinvalid.insecure.test\n")),
         {"mta-sts.policy-invalid"}),
        (_domain("pnohost", N, sts=STS, tlsrpt=RPT), {"mta-sts.policy-host-dns"}),
        (_domain("shortage", N, sts=STS, tlsrpt=RPT, policy=_p(max_age=3600)),
         {"mta-sts.max-age-short"}),
        (_domain("disputed", N, sts="v=STSv1; id=20160831085700Z;;;", tlsrpt=(
            "v=TLSRPTv1; rua=mailto:a@{d}; rua=mailto:b@{d}"),
            policy=PolicyHost(body="version: STSv1\r\nmode: enforce\r\nmode: testing\r\n"
                              "max_age: 604800\r\nmx: mx1.chk-disputed.insecure.test\r\n"
                              "badkey: badvalue\r\n")),
         {"mta-sts.txt-extra-semicolon", "mta-sts.policy-duplicate-key",
          "mta-sts.policy-unknown-key", "tlsrpt.duplicate-rua"}),
        (_domain("testing", N, sts=STS, policy=_p("testing")),
         {"consistency.testing-without-tlsrpt"}),
        (_domain("ruabad", N, tlsrpt="v=TLSRPTv1; rua=mailto:r@nowhere.insecure.test,"
                 "https://mta-sts.chk-ruabad.insecure.test/report"),
         {"tlsrpt.rua-mail-unreachable", "tlsrpt.rua-https-unreachable"}),
        (_domain("danemismatch", S, mx=[LabMx("mx1.chk-danemismatch.secure.test",
                                              tlsa=["3 1 1 " + "ab" * 32])]),
         {"dane.mismatch"}),
        (_domain("danepkix", S, mx=[LabMx("mx1.chk-danepkix.secure.test",
                                          tlsa=["1 1 1 auto"])]),
         {"dane.no-usable-tlsa", "dane.pkix-usage"}),
        (_domain("daneta", S, mx=[LabMx("mx1.chk-daneta.secure.test", cert="intermediate",
                                        tlsa=["2 1 1 auto"], full_chain=True)]),
         {"dane.rollover.prefer-3-1-1"}),
        (_domain("danewebpki", S, mx=[LabMx("mx1.chk-danewebpki.secure.test",
                                            cert="self-signed", tlsa=["3 1 1 auto"])],
                 sts=STS, policy=_p(), tlsrpt=RPT),
         {"consistency.dane-pass-webpki-fail"}),
        (_domain("danenotinpolicy", S, mx=[
            "mx1.{d}", LabMx("mx2.chk-danenotinpolicy.secure.test", pref=20,
                             tlsa=["3 1 1 auto"])], sts=STS, policy=_p(), tlsrpt=RPT),
         {"consistency.dane-mx-not-in-policy", "dane.partial"}),
        (_domain("daneinsecuremx", N, mx=[LabMx("mx1.chk-daneinsecuremx.secure.test",
                                                tlsa=["3 1 1 auto"])]),
         {"dane.tlsa-ignored"}),
        (_domain("nullmx", N, mx=[], records=[("{d}", "MX", "0 .")]), {"mx.null"}),
        (_domain("implicit", N, mx=[LabMx("chk-implicit.insecure.test", publish_mx=False)]),
         {"mx.none"}),
        (_domain("alias", N, mx=[], records=[
            ("{d}", "MX", "10 alias.{d}."), ("alias.{d}", "CNAME", "mx1.chk-plain.insecure.test.")]),
         {"mx.host-is-alias"}),
        (_domain("noaddr", N, mx=[], records=[("{d}", "MX", "10 gone.{d}.")]),
         {"mx.host-no-address"}),
    ]
    return [(fixpolicy(d), codes) for d, codes in rows]


def _normalise(doc: dict, lab) -> str:
    text = json.dumps(doc, indent=2, sort_keys=True)
    # Lab addresses depend on what other tests published first: number them in order
    # of first appearance in this document instead.
    seen: dict[str, str] = {}
    text = re.sub(rf"127\.{lab.net.n}\.\d+\.\d+",
                  lambda m: seen.setdefault(m.group(0), f"<lab-address-{len(seen) + 1}>"),
                  text)
    text = re.sub(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"', '"<time>"', text)
    text = re.sub(r"\d{4}-\d\d-\d\d( \d\d:\d\dZ?)?", "<date>", text)
    text = re.sub(r'"elapsed": [0-9.e-]+', '"elapsed": 0', text)
    text = re.sub(r"\b[0-9a-f]{12,}\b", "<hex>", text)
    text = re.sub(r"\bin \d+ day\(s\)", "in <n> day(s)", text)
    return text + "\n"


@pytest.fixture(scope="module")
async def reports(lab):
    specs = _specs()
    await asyncio.to_thread(lab.add, *[d for d, _ in specs])
    options = CheckOptions(dns=DnsConfig(nameservers=(lab.resolver[0],), timeout=5.0),
                           ca_file=str(lab.ca_file), timeout=5.0, domain_timeout=30.0)
    async with Gatherer(options) as g:
        facts = await asyncio.gather(*(g.gather(d.name) for d, _ in specs))
    return {f.domain: evaluate(f) for f in facts}, specs


@pytest.fixture(scope="module")
async def bulk_reports(lab, reports):
    """The same domains checked the way ``check --bulk`` checks them: one shared UDP
    socket for DNS (``check.dnsbulk``) and the bulk policy fetch (``check.fetch``)."""
    _, specs = reports
    options = CheckOptions(dns=DnsConfig(nameservers=(lab.resolver[0],), timeout=5.0),
                           ca_file=str(lab.ca_file), timeout=5.0, domain_timeout=30.0,
                           bulk_dns=True)
    async with Gatherer(options) as g:
        facts = await asyncio.gather(*(g.gather(d.name) for d, _ in specs))
    return {f.domain: evaluate(f) for f in facts}


def _ids() -> list[str]:
    return [d.name for d, _ in _specs()]


@pytest.mark.parametrize("name", _ids())
def test_check_lab_outcome_and_golden(reports, lab, name):
    got, specs = reports
    codes = dict((d.name, c) for d, c in specs)[name]
    report = got[name]
    found = {f.code for f in report.findings}
    assert codes <= found, f"missing {codes - found}; got {sorted(found)}"
    path = GOLDEN / f"{name}.json"
    text = _normalise(report.to_dict(), lab)
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"no golden file {path.name}: run with SMTPTLS_UPDATE_GOLDEN=1")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name}: differs from {path} (SMTPTLS_UPDATE_GOLDEN=1)"


@pytest.mark.parametrize("name", _ids())
def test_check_lab_bulk_mode_gives_the_golden_report(bulk_reports, lab, name):
    """Bulk mode changes how DNS is asked and the policy fetched, never a finding: every
    report equals the golden file of the one-domain check."""
    text = _normalise(bulk_reports[name].to_dict(), lab)
    assert text == (GOLDEN / f"{name}.json").read_text(), f"{name}: bulk mode differs"


def test_check_lab_clean_domain_passes(reports):
    got, _ = reports
    r = got["chk-clean.secure.test"]
    assert not r.failed, [(f.code, f.message) for f in r.findings]
    assert r.adoption.dane == "pass" and r.adoption.mta_sts == "enforce"


@pytest.mark.parametrize(("domain", "code"), [
    ("chk-clean.secure.test", 0), ("chk-nostarttls.insecure.test", 1),
    ("chk-expired.insecure.test", 1)])
def test_check_cli_exit_status(reports, lab, domain, code):
    proc = subprocess.run(
        [sys.executable, "-m", "smtptls", "check", domain, "--nameserver", lab.resolver[0],
         "--ca-file", str(lab.ca_file), "--timeout", "5"], capture_output=True, text=True,
        timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert proc.returncode == code, proc.stderr
    assert domain in proc.stdout
    assert all(len(line) <= 100 for line in proc.stdout.splitlines())


def test_check_cli_usage_error_is_exit_2():
    proc = subprocess.run([sys.executable, "-m", "smtptls", "check", "-bad-..name"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))
    assert proc.returncode == 2


def test_check_bulk_resumes_and_summarises(reports, lab, tmp_path):
    listing = tmp_path / "domains.txt"
    names = ["chk-clean.secure.test", "chk-plain.insecure.test", "chk-p404.insecure.test",
             "not a domain!"]
    listing.write_text("\n".join(names[:2]) + "\n")
    out = tmp_path / "results.jsonl"
    base = [sys.executable, "-m", "smtptls", "check", "--bulk", str(listing), "--out",
            str(out), "--nameserver", lab.resolver[0], "--ca-file", str(lab.ca_file),
            "--no-smtp", "--timeout", "5", "--json"]
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    first = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert first.returncode == 0, first.stderr
    assert len(out.read_text().splitlines()) == 2
    with out.open("a") as fh:
        fh.write('{"schema": "smtptls.check/1", "domain": "trunc')  # an interrupted write
    listing.write_text("\n".join(names) + "\n")
    second = subprocess.run(base, capture_output=True, text=True, timeout=120, env=env)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["schema"] == "smtptls.check-summary/1"
    assert summary["domains"] == 3 and summary["resumed"] == 2
    assert summary["checked_now"] == 1 and summary["invalid"] == 1
    assert summary["adoption"]["mta_sts_record"]["count"] == 2
    assert any(t["code"] == "mta-sts.policy-status" for t in summary["top_failures"])
    lines = [json.loads(x) for x in out.read_text().splitlines()[-1:]]
    assert lines[0]["domain"] == "chk-p404.insecure.test"
    # Several processes: same reports, one file, one summary.
    out2 = tmp_path / "parallel.jsonl"
    third = subprocess.run([*base[:7], str(out2), *base[8:], "--workers", "2"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert third.returncode == 0, third.stderr
    assert json.loads(third.stdout)["checked_now"] == 3
    assert sorted(json.loads(x)["domain"] for x in out2.read_text().splitlines()) == \
        sorted(names[:3])


async def test_bulk_resolver_agrees_with_the_project_resolver(lab, reports):
    """Same answers and DNSSEC statuses through the shared-socket bulk resolver."""
    from smtptls.check.dnsbulk import BulkResolver
    from smtptls.net.dns import DnsResolver

    cfg = DnsConfig(nameservers=(lab.resolver[0],), timeout=5.0)
    bulk, plain = BulkResolver(cfg), DnsResolver(cfg)
    try:
        for name, rdtype in [("chk-clean.secure.test", "MX"), ("chk-plain.insecure.test", "MX"),
                             ("_mta-sts.chk-clean.secure.test", "TXT"),
                             ("_25._tcp.mx1.chk-clean.secure.test", "TLSA"),
                             ("nothing-here.secure.test", "A"), ("broken.bogus.test", "MX"),
                             ("alias.chk-alias.insecure.test", "A")]:
            a, b = await bulk.try_query(name, rdtype), await plain.try_query(name, rdtype)
            assert (a.records, a.security, a.nxdomain, a.cname_chain) == \
                (b.records, b.security, b.nxdomain, b.cname_chain), name
    finally:
        bulk.close()
