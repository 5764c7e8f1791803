"""RFC 8460 §3, §5.3 (I5): a report mail gets through a receiver whose TLS is broken.

Our report mail carries ``TLS-Required: No`` (RFC 8689) and is handed to a relay; here
the relay is the lab's real Postfix asking a real ``smtptls policyd``. The recipient
domain publishes an ``enforce`` MTA-STS policy and its only MX presents a certificate
for another name, so ordinary mail to it is deferred
(test_rfc8461_4_2_enforce_wrong_name_certificate_deferred). Postfix 3.10 honours the
header (``tls_required_enable``, default yes: TLS level at most ``may``) and delivers the
report; Postfix 3.7 has no support for it and defers it like any other mail — the
documented limit of relaying report mail through an older Postfix.
"""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime

import pytest

from smtptls.tlsrpt import parse_report, reports_from_message
from smtptls.tlsrptsend.outgoing import compose_report_mail
from tests.e2e.postfix_world import POSTFIX_VERSIONS, Policyd, postfix_with_policyd, sts_policy

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

_n = itertools.count()
SUBMITTER = "mta.sender.example"


def _report(domain: str):  # type: ignore[no-untyped-def]
    data = (
        '{"organization-name":"Sender Inc.","date-range":{"start-datetime":'
        '"2024-05-01T00:00:00Z","end-datetime":"2024-05-01T23:59:59Z"},'
        '"contact-info":"tlsrpt@mta.sender.example","report-id":"r-' + domain + '",'
        '"policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1",'
        '"mode: enforce","mx: mx1.' + domain + '","max_age: 86400"],"policy-domain":"'
        + domain + '","mx-host":["mx1.' + domain + '"]},"summary":'
        '{"total-successful-session-count":0,"total-failure-session-count":1},'
        '"failure-details":[{"result-type":"certificate-host-mismatch","sending-mta-ip":'
        '"192.0.2.1","receiving-mx-hostname":"mx1.' + domain + '",'
        '"failed-session-count":1}]}]}'
    )
    return parse_report(data.encode(), strict=True)


@pytest.fixture(scope="module", params=POSTFIX_VERSIONS)
def world(lab, tmp_path_factory, request):  # type: ignore[no-untyped-def]
    from tests.lab import LabDomain, LabMx, PolicyHost

    workdir = tmp_path_factory.mktemp(f"i5-{request.param}")
    daemon = Policyd(lab, workdir, txt_recheck_interval=2.0)
    with postfix_with_policyd(lab, daemon, version=request.param) as pf:
        yield lab, pf, LabDomain, LabMx, PolicyHost


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_report_mail_to_a_domain_with_broken_tls(world) -> None:
    lab, pf, LabDomain, LabMx, PolicyHost = world
    d = f"rptbroken{next(_n)}e2e{os.getpid() % 1000}.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="wrong-name")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=sts_policy(f"mx1.{d}"))))
    report = _report(d)
    mail = compose_report_mail(report, submitter=SUBMITTER, mail_from=f"noreply@{SUBMITTER}",
                               rcpt_to=[f"tlsrpt@{d}"],
                               date=datetime(2024, 5, 2, 1, 0, tzinfo=UTC), unique="0")
    assert b"\r\nTLS-Required: No\r\n" in mail.message
    qid = pf.submit(mail.mail_from, list(mail.rcpt_to), mail.message)
    want = "deferred" if pf.version == "3.7" else "sent"
    try:
        result = pf.wait_delivery(qid, timeout=40.0, statuses=(want,))
    finally:
        if want != "sent":
            pf.delete_all()
    if pf.version == "3.7":
        # no RFC 8689 support: the policy's "secure" answer applies to the report too
        assert result.detail == "Server certificate not verified"
        assert lab.messages(f"mx1.{d}") == []
        return
    # Postfix >= 3.10: delivered over unverified TLS despite the enforce policy
    (received,) = lab.wait_for_messages(f"mx1.{d}", 1)
    assert received.tls, "the report still went over TLS, only unverified"
    assert reports_from_message(received.data, strict=True) == [report]
