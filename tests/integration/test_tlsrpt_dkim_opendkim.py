"""Report mail signed by ``tlsrpt send`` verifies with OpenDKIM, given the key record the
docs recommend (``s=email:tlsrpt``), and does not with ``s=tlsrpt`` alone.

RFC 8460 §3: the DKIM key record SHOULD carry the service type ``tlsrpt``. RFC 6376
§3.6.1: a verifier ignores a key whose ``s=`` names neither ``email`` nor ``*``; it is a
colon-separated list, so ``s=email:tlsrpt`` satisfies both. OpenDKIM is such a verifier:
``opendkim-testmsg`` (Debian ``opendkim-tools``) reads a message on stdin, looks the key
up in DNS with the system resolver and exits 0 with no output when a signature
verifies. It runs here in a private mount namespace where /etc/resolv.conf is the lab's
(tests/lab/mountns.py), so the key comes from the lab's signed zone and the machine's
own resolver is untouched.

The message is the one the sender builds (``MailDelivery.compose``: the RFC 8460 §5.3
mail, DKIM-signed with the configured selector and key).
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtptls.config import DnsConfig, TlsrptConfig
from smtptls.net.dkim import dns_txt_lookup, verify_report_mail
from smtptls.net.dns import DnsResolver
from smtptls.net.report_delivery import MailDelivery
from smtptls.store.reports_base import DkimStatus
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

pytestmark = [pytest.mark.lab, pytest.mark.rfc("8460 3")]

TESTMSG = shutil.which("opendkim-testmsg", path="/usr/sbin:/usr/bin:/sbin:/bin")
UNSHARE = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
MOUNTNS = Path(__file__).resolve().parents[1] / "lab" / "mountns.py"
SELECTOR = "tlsrpt"
DAY = date(2024, 5, 1)
NOW = datetime(2024, 5, 2, 3, 4, 5, tzinfo=UTC)
#: RFC 1035 §3.3: one TXT character-string holds at most 255 octets
TXT_STRING = 255

if TESTMSG is None:
    pytest.skip("opendkim-testmsg not found: install Debian's opendkim-tools "
                "(scripts/install-system.sh does)", allow_module_level=True)


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM,
                          serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


def _record(services: str, pub: str) -> tuple[str, ...]:
    text = f"v=DKIM1; k=rsa; s={services}; p={pub}"
    return tuple(text[i:i + TXT_STRING] for i in range(0, len(text), TXT_STRING))


@pytest.fixture(scope="module")
def submitters(lab, key) -> dict[str, str]:
    """One submitter domain in the lab's signed zone per key record under test."""
    from tests.lab import LabDomain

    _, pub = key
    cases = {"email:tlsrpt": "dkim-email-tlsrpt.secure.test",
             "tlsrpt": "dkim-tlsrpt-only.secure.test"}
    lab.add(*[LabDomain(domain, txt={f"{SELECTOR}._domainkey": [_record(services, pub)]})
              for services, domain in cases.items()])
    return cases


def _signed_mail(tmp_path: Path, pem: bytes, submitter: str) -> bytes:
    key_file = tmp_path / "dkim-tlsrpt.pem"
    key_file.write_bytes(pem)
    cfg = TlsrptConfig(submitter=submitter, organization_name="Example Networks",
                       contact_info=f"tlsrpt@{submitter}", dkim_selector=SELECTOR,
                       dkim_key_file=str(key_file))
    identity = ReportIdentity(cfg.organization_name, cfg.contact_info, submitter)
    policy = AppliedPolicy(PolicyType.STS, "example.com",
                           ("version: STSv1", "mode: enforce", "mx: mx.example.com",
                            "max_age: 86400"), ("mx.example.com",))
    result = SessionResult.success(datetime(2024, 5, 1, 10, tzinfo=UTC), policy,
                                   mx_host="mx.example.com", receiving_ip="192.0.2.10",
                                   sending_mta_ip="198.51.100.25")
    (report,) = aggregate([result], DAY, identity)
    _, signed, _ = MailDelivery(cfg, identity).compose(
        report, "mailto:tlsrpt@example.com", unique="0", now=NOW)
    return signed


def _opendkim_verify(lab, message: bytes) -> subprocess.CompletedProcess:
    """opendkim-testmsg in verify mode, resolving through the lab's Unbound."""
    assert UNSHARE is not None, "unshare (util-linux) is needed to give it the lab resolver"
    return subprocess.run([UNSHARE, "--mount", "--propagation", "private", "--",
                           sys.executable, str(MOUNTNS), str(lab.resolv_conf), "--",
                           TESTMSG], input=message, capture_output=True, timeout=60)


def test_rfc8460_3_key_with_email_and_tlsrpt_verifies_in_opendkim(lab, key, submitters,
                                                                   tmp_path):
    pem, _ = key
    signed = _signed_mail(tmp_path, pem, submitters["email:tlsrpt"])
    assert b"DKIM-Signature:" in signed.split(b"\r\n\r\n", 1)[0]
    done = _opendkim_verify(lab, signed)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_rfc6376_3_6_1_key_with_tlsrpt_alone_is_ignored_by_opendkim(lab, key, submitters,
                                                                    tmp_path):
    # why the docs do not recommend s=tlsrpt alone: an RFC 6376 verifier skips the key
    pem, _ = key
    signed = _signed_mail(tmp_path, pem, submitters["tlsrpt"])
    done = _opendkim_verify(lab, signed)
    # the key was found (the receiver test below fetches the same record); the failure
    # comes from the verification step (dkim_eom), not from reading the message
    assert done.returncode != 0 and b"dkim_eom()" in done.stderr


def test_opendkim_rejects_the_recommended_key_for_an_altered_report(lab, key, submitters,
                                                                    tmp_path):
    # the pass above is a verification, not an accept-all: a changed body fails
    pem, _ = key
    signed = _signed_mail(tmp_path, pem, submitters["email:tlsrpt"])
    head, body = signed.split(b"\r\n\r\n", 1)
    altered = head + b"\r\n\r\n" + body.replace(b"Successful sessions:    1",
                                                b"Successful sessions:    9", 1)
    assert altered != signed
    done = _opendkim_verify(lab, altered)
    assert done.returncode != 0 and b"dkim_eom()" in done.stderr


async def test_rfc8460_5_3_our_receiver_accepts_both_key_records(lab, key, submitters,
                                                                 tmp_path):
    # smtptls reports serve verifies either form (net/dkim.py), with the lab's DNS
    pem, _ = key
    host, port = lab.resolver
    lookup = dns_txt_lookup(DnsResolver(DnsConfig(nameservers=(f"{host}:{port}",), timeout=5)))
    for services, submitter in submitters.items():
        signed = _signed_mail(tmp_path, pem, submitter)
        result = await verify_report_mail(signed, lookup)
        assert (result.status, result.tlsrpt_service) == (DkimStatus.PASS, True), services
