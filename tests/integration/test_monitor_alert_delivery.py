"""Each alert of ``smtptls monitor`` reaches a real webhook receiver and a real mail
relay (aiosmtpd on loopback, STARTTLS verified) with its fix, once: a second process on
the same monitor store sends nothing again.

The lab's certificates are valid for 90 days, so ``warn_days = 100`` makes the MX's and
the policy host's certificates "expiring" (RFC 5280 §4.1.2.5, RFC 8461 §3.3).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import sys

import pytest

from tests.integration.monitor_support import webhook_receiver
from tests.integration.test_alerts import ca, ca_file, smtp_relay  # noqa: F401 (fixtures)
from tests.lab import LabDomain, LabMx, PolicyHost

pytestmark = pytest.mark.lab

D = "mon-delivery.insecure.test"
OWNER = "owner@example.org"


@pytest.fixture
async def webhook():
    async with webhook_receiver("/hook/secret") as got:
        yield got


async def _monitor(config) -> dict:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", "monitor", "--once", "--json", "--config",
        str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode == 1, err.decode()  # alerts are active
    return json.loads(out)


async def test_alert_reaches_webhook_and_mail_with_its_fix_once(
        lab, webhook, smtp_relay, ca_file, tmp_path):  # noqa: F811 (the imported fixtures)
    received, url = webhook
    handler, relay = smtp_relay
    await asyncio.to_thread(lab.add, LabDomain(
        D, mx=[LabMx(f"mx1.{D}")], txt={"_mta-sts": ["v=STSv1; id=20261201T000000"]},
        policy=PolicyHost(body=f"version: STSv1\nmode: enforce\nmx: mx1.{D}\n"
                               "max_age: 604800\n")))
    config = tmp_path / "smtptls.toml"
    config.write_text(
        f'[dns]\nnameservers = ["{lab.resolver[0]}"]\nport = {lab.resolver[1]}\n'
        f'[fetch]\nca_file = "{lab.ca_file}"\n'
        f'[alerts]\nlog = false\nwebhook_url = "{url}"\nmail_to = ["{OWNER}"]\n'
        f'mail_from = "monitor@example.org"\nsmtp_relay = "{relay}"\nca_file = "{ca_file}"\n'
        f'state_path = "{tmp_path / "alerts.json"}"\n'
        f'[monitor]\ndomains = ["{D}"]\nwarn_days = 100\ntimeout = 10.0\n'
        f'state_path = "{tmp_path / "monitor.json"}"\n')

    first = await _monitor(config)
    sent = {(a["code"], a["subject"]): a for a in first["sent"]}
    policy = sent[("monitor.cert-expiring", f"mta-sts.{D}")]
    assert policy["fix"] and first["failed"] == []
    # the webhook: one POST per alert, the alert and its fix in the chat text
    hooked = {(b["alert"]["code"], b["alert"]["subject"]): b for b in received}
    assert set(hooked) == set(sent)
    assert hooked[("monitor.cert-expiring", f"mta-sts.{D}")]["alert"]["fix"] == policy["fix"]
    assert f"Fix: {policy['fix']}" in hooked[("monitor.cert-expiring", f"mta-sts.{D}")]["text"]
    # the mail: one message per alert, over STARTTLS, to the owner, the fix in its body
    assert len(handler.messages) == len(sent)
    bodies = []
    for mail_from, rcpts, content, tls in handler.messages:
        assert mail_from == "monitor@example.org" and rcpts == [OWNER] and tls
        msg = email.message_from_bytes(content, policy=email.policy.default)
        assert msg["Subject"].startswith("smtptls alert: [warning]")
        bodies.append(msg.get_content())
    assert any(f"Fix: {policy['fix']}" in b and f"mta-sts.{D}" in b for b in bodies)
    assert (tmp_path / "smtptls-monitor.sqlite3").exists()

    # a second process on the same store: every alert still active, none sent again
    second = await _monitor(config)
    active = {(a["code"], a["subject"]) for d in second["domains"] for a in d["alerts"]}
    assert set(sent) <= active
    assert second["sent"] == [] and second["suppressed"] >= len(sent)
    assert len(received) == len(sent) and len(handler.messages) == len(sent)
