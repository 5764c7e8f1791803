"""``smtptls tlsa check LIVE --next STAGED --lookup MX`` against a lab domain whose
DNSSEC-signed TLSA RRset first pins only the old key, then both (RFC 7671 §8.1)."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from smtptls.dane.publish import tlsa_from_cert
from tests.lab import LabDomain, LabMx

pytestmark = pytest.mark.lab

DOMAIN = "tlsa-next.secure.test"
MX = f"mx1.{DOMAIN}"
OWNER = f"_25._tcp.{MX}."


def _domain(tlsa: list[str]) -> LabDomain:
    return LabDomain(DOMAIN, mx=[LabMx(MX, tlsa=tlsa)])


async def _check(lab, live: str, staged: str, *extra: str) -> tuple[int, str, str]:
    ns = f"{lab.resolver[0]}:{lab.resolver[1]}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", "tlsa", "check", live, "--next", staged,
        "--lookup", MX, "--nameserver", ns, *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_rfc7671_8_1_lookup_refuses_until_the_staged_key_is_published(lab):
    await asyncio.to_thread(lab.add, _domain(["3 1 1 auto"]))
    live = lab.issue([MX], "good")  # the chain the lab MX serves
    # the renewal: a new key (another name set, so not the cached chain of the MX)
    staged = lab.issue([MX, f"next.{DOMAIN}"], "good")
    new_rec = tlsa_from_cert(staged.leaf).to_text()
    assert new_rec != tlsa_from_cert(live.leaf).to_text()

    code, out, err = await _check(lab, str(live.chain_file), str(staged.chain_file))
    assert code == 1, out + err
    assert "DNSSEC secure" in out
    assert f"{OWNER} IN TLSA {new_rec}" in out
    assert "do not deploy" in out

    code, out, err = await _check(lab, str(live.chain_file), str(staged.chain_file),
                                  "--json")
    assert code == 1, err
    doc = json.loads(out)
    assert doc["current"]["covered"] is True and doc["next"]["covered"] is False
    assert doc["publish"] == [f"{OWNER} IN TLSA {new_rec}"]
    wait = doc["wait"]
    assert wait["ttl_source"] == "dns" and 0 < wait["ttl"] <= 30  # the lab's TTL
    assert wait["seconds"] == wait["ttl"] + wait["margin"]

    # publish the new key next to the old one: re-adding replaces the domain
    await asyncio.to_thread(lab.add, _domain(["3 1 1 auto", new_rec]))
    code, out, err = await _check(lab, str(live.chain_file), str(staged.chain_file))
    assert code == 0, out + err
    assert "both certificates are covered" in out
