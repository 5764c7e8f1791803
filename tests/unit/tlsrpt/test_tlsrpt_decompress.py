"""The one bounded decompressor of TLSRPT bodies: what the parser reads is what is kept."""

from __future__ import annotations

import gzip
import io
import json
import zipfile

import pytest

from smtptls.errors import ReportParseError, ReportTooLargeError
from smtptls.tlsrpt.decode import decompress_report
from smtptls.tlsrpt.reader import parse_report

REPORT = {"organization-name": "Org", "report-id": "dec-1", "contact-info": "a@b.example",
          "date-range": {"start-datetime": "2024-06-01T00:00:00Z", "end-datetime": "2024-06-01T23:59:59Z"},
          "policies": [{"policy": {"policy-type": "sts", "policy-domain": "d.example"},
                        "summary": {"total-successful-session-count": 3, "total-failure-session-count": 0}}]}
TEXT = json.dumps(REPORT).encode()


def zipped(data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("report.json", data)
    return out.getvalue()


@pytest.mark.rfc("1952 2.2")
@pytest.mark.parametrize(("name", "body"), [
    ("plain", TEXT),
    ("gzip", gzip.compress(TEXT)),
    ("two gzip members", gzip.compress(TEXT[:100]) + gzip.compress(TEXT[100:])),
    ("five gzip members", b"".join(gzip.compress(TEXT[i:i + 50]) for i in range(0, len(TEXT), 50))),
    ("byte order mark", b"\xef\xbb\xbf" + TEXT),
    ("zip", zipped(TEXT)),
])
def test_rfc1952_2_2_decompressed_text_is_what_the_parser_reads(name, body):
    assert decompress_report(body) == TEXT, name
    assert parse_report(body).report_id == "dec-1"
    assert json.loads(decompress_report(body)) == REPORT


@pytest.mark.parametrize(("name", "body", "error"), [
    ("truncated gzip", gzip.compress(TEXT)[:-10], ReportParseError),
    ("bomb", gzip.compress(b" " * 2_000), ReportTooLargeError),
    ("input over the cap", b" " * 3_000, ReportTooLargeError),
])
def test_decompressor_bounds_and_errors(name, body, error):
    with pytest.raises(error):
        decompress_report(body, max_size=2_500, max_decompressed=1_000)
