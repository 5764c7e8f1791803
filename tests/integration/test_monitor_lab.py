"""``smtptls monitor --once --json`` against lab domains, alerts to a real webhook receiver.

The lab's certificates are valid for 90 days, so ``warn_days = 100`` makes each of them
"expiring". One domain's policy body is then changed in the lab while its ``_mta-sts``
id stays (RFC 8461 §3.1), and one domain has a staged certificate with a new key that
its TLSA RRset does not cover (RFC 7671 §8.1).
"""

from __future__ import annotations

import asyncio

import pytest

from smtptls.dane.publish import tlsa_from_cert
from tests.integration.monitor_support import alerts_of as _alerts
from tests.integration.monitor_support import run_monitor as _monitor
from tests.integration.monitor_support import webhook_receiver
from tests.lab import LabDomain, LabMx, PolicyHost

pytestmark = pytest.mark.lab

N, S = "insecure.test", "secure.test"
EXPIRING = f"mon-expiring.{N}"
IDCHANGE = f"mon-idchange.{N}"
ROLLOVER = f"mon-rollover.{S}"
UNCOVERED = f"mon-uncovered.{N}"


def _body(domain: str, max_age: int = 604800) -> str:
    return f"version: STSv1\nmode: enforce\nmx: mx1.{domain}\nmax_age: {max_age}\n"


def _domain(name: str, *, max_age: int = 604800, tlsa: list[str] | None = None,
            extra_mx: tuple[str, ...] = ()) -> LabDomain:
    return LabDomain(name, mx=[LabMx(f"mx1.{name}", tlsa=tlsa or []),
                               *(LabMx(m, pref=20) for m in extra_mx)],
                     txt={"_mta-sts": ["v=STSv1; id=20261201T000000"]},
                     policy=PolicyHost(body=_body(name, max_age)))


@pytest.fixture
async def webhook():
    async with webhook_receiver() as got:
        yield got


async def test_monitor_alerts_expiry_rollover_and_unchanged_id(lab, webhook, tmp_path):
    received, url = webhook
    await asyncio.to_thread(lab.add, _domain(EXPIRING), _domain(IDCHANGE),
                            _domain(ROLLOVER, tlsa=["3 1 1 auto"]),
                            _domain(UNCOVERED, extra_mx=(f"mx2.{UNCOVERED}",)))
    # the renewal: a new key (another name set, so not the cached chain the MX serves)
    staged = lab.issue([f"mx1.{ROLLOVER}", f"next.{ROLLOVER}"], "good")
    config = tmp_path / "smtptls.toml"
    config.write_text(
        f'[dns]\nnameservers = ["{lab.resolver[0]}"]\nport = {lab.resolver[1]}\n'
        f'[fetch]\nca_file = "{lab.ca_file}"\n'
        f'[alerts]\nlog = false\nwebhook_url = "{url}"\n'
        f'state_path = "{tmp_path / "alerts.json"}"\n'
        f'[monitor]\ndomains = ["{EXPIRING}", "{IDCHANGE}", "{ROLLOVER}", "{UNCOVERED}"]\n'
        f'warn_days = 100\ntimeout = 10.0\nstate_path = "{tmp_path / "monitor.json"}"\n'
        f'[monitor.staged]\n"mx1.{ROLLOVER}" = "{staged.chain_file}"\n')

    code, first = await _monitor(config)
    assert code == 1 and first["schema"] == "smtptls.monitor/1"
    got = _alerts(first, EXPIRING)
    mx_cert = [a for (c, s), a in got.items()
               if c == "monitor.cert-expiring" and s.startswith(f"mx1.{EXPIRING} [")]
    assert len(mx_cert) == 1 and mx_cert[0]["fix"]
    policy_cert = got[("monitor.cert-expiring", f"mta-sts.{EXPIRING}")]
    assert "policy host" in policy_cert["message"] and policy_cert["fix"]
    rollover = _alerts(first, ROLLOVER)[("monitor.tlsa-next-not-covered", f"mx1.{ROLLOVER}")]
    assert rollover["fix"] == (f"_25._tcp.mx1.{ROLLOVER}. IN TLSA "
                               f"{tlsa_from_cert(staged.leaf).to_text()}")
    # RFC 8461 §4.1: an MX added outside the enforced policy, before any sender fails
    uncovered = _alerts(first, UNCOVERED)[("monitor.mx-not-covered", f"mx2.{UNCOVERED}")]
    assert uncovered["severity"] == "critical" and uncovered["fix"] == f"mx: mx2.{UNCOVERED}"
    assert "monitor.policy-id-unchanged" not in {c for c, _ in _alerts(first, IDCHANGE)}
    sent_first = {(a["alert"]["domain"], a["alert"]["code"], a["alert"]["subject"])
                  for a in received}
    assert len(sent_first) == len(received) == len(first["sent"])
    assert (EXPIRING, "monitor.cert-expiring", f"mta-sts.{EXPIRING}") in sent_first

    # RFC 8461 §3.1: the body changes, the id does not
    await asyncio.to_thread(lab.add, _domain(IDCHANGE, max_age=1209600))
    received.clear()
    code, second = await _monitor(config)
    assert code == 1
    changed = _alerts(second, IDCHANGE)[("monitor.policy-id-unchanged", f"_mta-sts.{IDCHANGE}")]
    assert "id=20261201T000000" in changed["message"] and "v=STSv1; id=" in changed["fix"]
    # only the new condition reaches the webhook: the others were sent by the first run
    assert [(a["alert"]["domain"], a["alert"]["code"]) for a in received] == [
        (IDCHANGE, "monitor.policy-id-unchanged")]
    assert second["suppressed"] >= len(sent_first)


async def test_policy_bodies_fetched_from_each_address_of_the_policy_host(lab):
    """Each address is fetched on its own (pinned), with RFC 8461 §3.3's request; one
    that does not answer is left out (check reports the failure)."""
    from smtptls.config import FetchConfig
    from smtptls.monitor.rules import policy_digest
    from smtptls.monitor.runner import policy_bodies
    from smtptls.net.memory import MemoryResolver

    domain = f"mon-bodies.{N}"
    await asyncio.to_thread(lab.add, _domain(domain))
    dead = f"127.{lab.net.n}.254.254"
    dns = MemoryResolver()
    dns.set(f"mta-sts.{domain}", "A", lab.policy_address, dead)
    got = await policy_bodies(dns, domain, FetchConfig(ca_file=str(lab.ca_file),
                                                      connect_timeout=2.0, total_timeout=5.0))
    assert got == {lab.policy_address: policy_digest(_body(domain))}
