"""Sample TLSRPT reports for the tests, and an independent walk of raw report JSON.

``rfc8460_example()`` is the RFC 8460 §4.5 example with erratum 6241 applied (``mx-host``
an array): every member the §4.4 schema lists, so it is strictly valid. Nothing here
uses smtptls, so the expected values it computes are independent of the parser.
``corpus_files`` lists the shared corpus' reports; ``OWN_REPORTS`` holds the project's own.
"""

from __future__ import annotations

import copy
import email
import email.policy
import gzip
import json
from typing import Any

import pytest

from tests.conftest import FIXTURES, corpus_params

#: The corpus folder of real reports, below the ``corpus`` fixture's folder.
REPORTS = "tlsrpt-reports"
#: The project's own reports, one (or a few) per quirk of the corpus (README.md there).
OWN_REPORTS = FIXTURES / "tlsrpt"

_EXAMPLE: dict[str, Any] = {
    "organization-name": "Company-X",
    "date-range": {
        "start-datetime": "2016-04-01T00:00:00Z",
        "end-datetime": "2016-04-01T23:59:59Z",
    },
    "contact-info": "sts-reporting@company-x.example",
    "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
    "policies": [
        {
            "policy": {
                "policy-type": "sts",
                "policy-string": [
                    "version: STSv1",
                    "mode: testing",
                    "mx: *.mail.company-y.example",
                    "max_age: 86400",
                ],
                "policy-domain": "company-y.example",
                "mx-host": ["*.mail.company-y.example"],
            },
            "summary": {
                "total-successful-session-count": 5326,
                "total-failure-session-count": 303,
            },
            "failure-details": [
                {
                    "result-type": "certificate-expired",
                    "sending-mta-ip": "2001:db8:abcd:0012::1",
                    "receiving-mx-hostname": "mx1.mail.company-y.example",
                    "failed-session-count": 100,
                },
                {
                    "result-type": "starttls-not-supported",
                    "sending-mta-ip": "2001:db8:abcd:0013::1",
                    "receiving-mx-hostname": "mx2.mail.company-y.example",
                    "receiving-ip": "203.0.113.56",
                    "failed-session-count": 200,
                    "additional-information": "https://reports.company-x.example/"
                    "report_info?id=5065427c-23d3#StarttlsNotSupported",
                },
                {
                    "result-type": "validation-failure",
                    "sending-mta-ip": "198.51.100.62",
                    "receiving-ip": "203.0.113.58",
                    "receiving-mx-hostname": "mx-backup.mail.company-y.example",
                    "failed-session-count": 3,
                    "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
                },
            ],
        }
    ],
}


def rfc8460_example() -> dict[str, Any]:
    """A fresh deep copy of the strictly valid §4.5 example (erratum 6241 applied)."""
    return copy.deepcopy(_EXAMPLE)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def corpus_files(suffix: str, *, exclude: tuple[str, ...] = ()) -> list[Any]:
    """One parameter per corpus report file ending in ``suffix`` (id: its stem).

    Without a corpus, one placeholder that the ``corpus`` fixture skips (tests/conftest.py).
    """
    return corpus_params(lambda corpus: [
        pytest.param(p, id=p.stem) for p in sorted((corpus / REPORTS).glob(f"*{suffix}"))
        if p.name not in exclude])


def own_files(suffix: str, *, exclude: tuple[str, ...] = ()) -> list[Any]:
    """One parameter per own fixture report ending in ``suffix`` (id: ``own-`` + its stem)."""
    return [pytest.param(p, id=f"own-{p.stem}") for p in sorted(OWN_REPORTS.glob(f"*{suffix}"))
            if p.name not in exclude]


def raw_totals(doc: Any) -> tuple[int, int]:
    """(successful, failed) summed straight from the raw JSON, missing counts as 0."""
    ok = failed = 0
    for entry in doc.get("policies") or []:
        summary = entry.get("summary") or {}
        ok += int(summary.get("total-successful-session-count") or 0)
        failed += int(summary.get("total-failure-session-count") or 0)
    return ok, failed


def raw_reports_in_eml(raw: bytes) -> list[Any]:
    """Report JSON documents in a mail, found with the standard library only."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    docs = []
    for part in message.walk():
        if part.is_multipart() or not part.get_content_type().startswith("application/"):
            continue
        data = part.get_payload(decode=True)
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        docs.append(json.loads(data))
    return docs
