"""RFC 8460 §3: report mail "MUST contain a valid DKIM signature by the reporting
domain. Reports lacking such a signature MUST be ignored by the recipient."

The receiver quarantines such mail by default (``[reports] require_dkim = true``);
``signed_by_submitter`` decides whether the signing domain is the reporting domain.
"""

from __future__ import annotations

import pytest

from smtptls.config import Config
from smtptls.services.reports_server.intake import signed_by_submitter
from smtptls.services.reports_server.server import ServeOptions


@pytest.mark.rfc("8460 3")
@pytest.mark.parametrize(("signer", "submitter", "ok"), [
    ("mail.example", "mail.example", True),
    ("Mail.Example.", "mail.example", True),
    ("example", "mail.example", True),        # the organisation above the submitter
    ("rpt.mail.example", "mail.example", True),  # a subdomain of it
    ("other.example", "mail.example", False),
    ("ample", "example", False),              # a suffix of the name is no parent
    (None, "mail.example", False),
    ("mail.example", None, True),              # no submitter header: the signature alone
])
def test_rfc8460_3_signature_by_the_reporting_domain(signer: str | None,
                                                     submitter: str | None,
                                                     ok: bool) -> None:
    assert signed_by_submitter(signer, submitter) is ok


@pytest.mark.rfc("8460 3")
def test_rfc8460_3_unsigned_report_mail_ignored_by_default() -> None:
    assert Config().reports.require_dkim is True
    assert ServeOptions().require_dkim is True
