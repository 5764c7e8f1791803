"""One destination decision, four entry points: they agree on every destination.

The destination engine (:mod:`smtptls.engine.destination` over the facts
:mod:`smtptls.engine.gather` finds) is rendered by ``smtptls policyd query`` (the
Postfix answer), ``smtptls check`` (``decision`` in its JSON), ``smtptls dane`` (its
DANE part) and the TLSRPT collector's ``policy_source = "policyd"`` (the policy a
result is filed under). Each destination below runs through all four, as a user runs
them (subprocesses of the real command; the collector's lookup as its service builds
it), and the test asserts one decision.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from smtptls import config as config_mod
from tests.lab import LabDomain, LabMx, PolicyHost

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
MISMATCH = "3 1 1 " + "ab" * 32


def _policy(*mx: str, mode: str = "enforce") -> str:
    return "\n".join(["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx),
                      "max_age: 86400"]) + "\n"


def _sts(d: str, *mx: str, mode: str = "enforce") -> dict:
    return {"txt": {"_mta-sts": ["v=STSv1; id=1"]},
            "policy": PolicyHost(body=_policy(*mx, mode=mode))}


def _destinations(lab) -> dict[str, tuple[LabDomain, str]]:
    """id -> (lab domain, the decision kind every entry point must give)."""
    s, i, b = lab.ZONE_SECURE, lab.ZONE_INSECURE, lab.ZONE_BOGUS
    out: dict[str, tuple[LabDomain, str]] = {}

    def add(key: str, domain: LabDomain, kind: str) -> None:
        out[key] = (domain, kind)

    d = f"agr-dane.{s}"
    add("dane-all-hosts", LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="self-signed",
                                                 tlsa=["3 1 1 auto"])]), "dane-only")
    d = f"agr-cname.{s}"
    add("cname-mx-with-mta-sts", LabDomain(
        d, mx=[LabMx(f"real.{d}", tlsa=[MISMATCH], publish_mx=False)],
        records=[(d, "MX", f"10 mx.{d}."), (f"mx.{d}", "CNAME", f"real.{d}.")],
        **_sts(d, f"mx.{d}")), "dane-only")
    d = f"agr-part.{s}"
    add("some-hosts-tlsa", LabDomain(d, mx=[
        LabMx(f"mx1.{d}", pref=10, tlsa=["3 1 1 auto"]), LabMx(f"mx2.{d}", pref=20)],
        **_sts(d, f"mx1.{d}", f"mx2.{d}")), "dane")
    d = f"agr-bogmx.{b}"
    add("bogus-mx-rrset", LabDomain(d, mx=[LabMx(f"mx1.{d}")], **_sts(d, f"mx1.{d}")), "temp")
    d = f"agr-boghost.{s}"
    add("only-host-bogus", LabDomain(d, mx=[LabMx(f"mx1.agr-boghost.{b}",
                                                  tlsa=["3 1 1 auto"])]), "temp")
    d = f"agr-enf.{i}"
    add("mta-sts-enforce", LabDomain(d, mx=[LabMx(f"mx1.{d}")], **_sts(d, f"mx1.{d}")),
        "secure")
    d = f"agr-nomatch.{i}"
    add("enforce-no-mx-matches", LabDomain(d, mx=[LabMx(f"other.{d}")],
                                           **_sts(d, f"mx1.{d}")), "temp")
    d = f"agr-unsig.{s}"
    add("mx-in-unsigned-zone", LabDomain(d, mx=[LabMx(f"mx1.agr-unsig.{i}",
                                                      tlsa=[MISMATCH])]), "notfound")
    d = f"agr-test.{i}"
    add("mta-sts-testing", LabDomain(d, mx=[LabMx(f"mx1.{d}")],
                                     **_sts(d, f"mx1.{d}", mode="testing")), "notfound")
    d = f"agr-null.{i}"
    add("null-mx", LabDomain(d, records=[(d, "MX", "0 .")]), "notfound")
    d = f"agr-nonmx.{s}"
    add("non-mx-destination", LabDomain(d, mx=[LabMx(d, cert="self-signed",
                                                     tlsa=["3 1 1 auto"],
                                                     publish_mx=False)]), "dane-only")
    return out


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory):
    table = _destinations(lab)
    lab.add(*(d for d, _ in table.values()))
    work = tmp_path_factory.mktemp("agreement")
    host, port = lab.resolver
    cfg = work / "smtptls.toml"
    cfg.write_text(f'[dns]\nnameservers = ["{host}:{port}"]\ntimeout = 3.0\n\n'
                   f'[fetch]\nca_file = "{lab.ca_file}"\ntotal_timeout = 6.0\n\n'
                   f'[cache]\nsqlite_path = "{work / "cache.sqlite3"}"\n')
    return lab, table, cfg


def _run(*args: str, cwd: Path, codes: tuple[int, ...] = (0, 1)) -> dict:
    proc = subprocess.run([sys.executable, "-m", "smtptls", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)
    assert proc.returncode in codes, proc.stderr
    return json.loads(proc.stdout)


#: The policy the collector files a domain's results under, per destination.
COLLECTOR_KIND = {"dane-all-hosts": "tlsa", "cname-mx-with-mta-sts": "tlsa",
                  "some-hosts-tlsa": "tlsa", "non-mx-destination": "tlsa",
                  "mta-sts-enforce": "sts", "enforce-no-mx-matches": "sts",
                  "mta-sts-testing": "sts"}


IDS = ["dane-all-hosts", "cname-mx-with-mta-sts", "some-hosts-tlsa", "bogus-mx-rrset",
       "only-host-bogus", "mta-sts-enforce", "enforce-no-mx-matches", "mx-in-unsigned-zone",
       "mta-sts-testing", "null-mx", "non-mx-destination"]


@pytest.mark.rfc("8461 2")
@pytest.mark.parametrize("key", IDS)
async def test_rfc8461_2_four_entry_points_one_decision(world, key: str) -> None:
    lab, table, cfg = world
    domain_obj, want = table[key]
    domain = domain_obj.name
    cwd = cfg.parent
    ip = lab.resolver[0]

    # policyd query exits 0 (OK), 1 (NOTFOUND) or 2 (TEMP: Postfix defers)
    policyd = _run("policyd", "query", domain, "--json", "--config", str(cfg), cwd=cwd,
                   codes=(0, 1, 2))
    check = _run("check", domain, "--json", "--no-smtp", "--nameserver", ip, "--ca-file",
                 str(lab.ca_file), "--timeout", "5", cwd=cwd)
    dane = _run("dane", domain, "--json", "--no-probe", "--nameserver", ip, cwd=cwd)

    answer = policyd["decision"]
    assert answer["kind"] == want, answer
    # smtptls check renders the same decision, answer text included
    assert check["decision"]["kind"] == answer["kind"], check["decision"]
    assert check["decision"]["policy"] == answer["policy"]
    # smtptls dane shows the DANE part: the same decision when DANE decides, else none
    dane_part = dane["decision"]
    if answer["kind"] in ("dane", "dane-only"):
        assert dane_part == answer
    elif dane_part is not None:
        assert dane_part["kind"] == answer["kind"] == "temp"
        assert dane_part["reason"] == answer["reason"]
    if key in ("bogus-mx-rrset", "only-host-bogus"):
        assert dane["verdict"] == "fail"  # and policyd defers: they agree

    # the collector files results under the policy the same decision applied
    from smtptls.services.collector.policy import make_policy_lookup

    conf = config_mod.load(cfg)
    conf = replace(conf, tlsrpt=replace(conf.tlsrpt, policy_source="policyd"))
    lookup, closers = await make_policy_lookup(conf)
    try:
        context = await lookup.context(domain)
    finally:
        for c in closers:
            await c.close()
    assert context.kind == COLLECTOR_KIND.get(key, "none"), context
    assert (context.kind == "tlsa") == (answer["kind"] in ("dane", "dane-only"))
