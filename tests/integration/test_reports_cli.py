"""``smtptls reports import|list|summary|show|quarantine`` over a folder of reports.

Each test runs on two samples: the project's own reports (tests/fixtures/tlsrpt, always
there) and the real-world corpus (skipped without it, see tests/conftest.py). The
expected totals are computed here straight from the files (json + email modules),
independently of the TLSRPT core and of the store.
"""

from __future__ import annotations

import csv
import email
import email.policy
import gzip
import io
import json
import mailbox
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from smtptls.cli.main import main
from tests.conftest import FIXTURES


@dataclass(frozen=True)
class Sample:
    """A folder of reports and what the tests look up in it."""

    folder: Path
    negative: str  # the one mail in it that is not a report (quarantined)
    report_id: str  # a report with certificate-expired failures ...
    report_successful: int  # ... and this many successful sessions
    domain: str  # a policy domain with successful sessions
    plain_json: str  # a report file, re-sent gzip-compressed


def _own() -> Sample:
    return Sample(FIXTURES / "tlsrpt", "cron-mail.eml", "9d4b6a2e-7c11-4c3f-9f0e-1a2b3c4d5e6f",
                  812, "example.net", "mx-host-string.json")


def _corpus(corpus: Path) -> Sample:
    return Sample(corpus / "tlsrpt-reports", "tlsrpt-rs__empty.eml",
                  "5065427c-23d3-47ca-b6e0-946ea0e8c4be", 5326, "company-y.example",
                  "parsedmarc__rfc8460.json")


@pytest.fixture(scope="module", params=["own", "corpus"])
def sample(request) -> Sample:
    if request.param == "corpus":
        return _corpus(request.getfixturevalue("corpus"))
    return _own()


def _payloads(path):
    """Report JSON objects in one file, decoded by hand."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return [json.loads(data)]
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    out = []
    for part in msg.walk():
        ctype = part.get_content_type()
        name = part.get_filename() or part.get_param("name") or ""
        if part.is_multipart() or not (ctype.startswith("application/tlsrpt")
                                        or str(name).endswith((".json", ".json.gz", ".gz"))):
            continue
        body = part.get_payload(decode=True)
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        out.append(json.loads(body))
    return out


def _start_day(text: str) -> str:
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).date().isoformat()


@pytest.fixture(scope="module")
def expected(sample):
    reports = {}
    files = sorted(p for p in sample.folder.iterdir() if p.suffix in (".json", ".eml"))
    for path in files:
        for r in _payloads(path):
            reports.setdefault((r["report-id"], r["organization-name"]), r)
    ok = failed = 0
    per_day: dict[str, list[int]] = {}
    for r in reports.values():
        day = _start_day(r["date-range"]["start-datetime"])
        for p in r.get("policies") or []:
            s = p.get("summary") or {}
            a = s.get("total-successful-session-count") or 0
            b = s.get("total-failure-session-count") or 0
            ok, failed = ok + a, failed + b
            slot = per_day.setdefault(day, [0, 0])
            slot[0] += a
            slot[1] += b
    return {"files": files, "reports": reports, "successful": ok, "failed": failed, "per_day": per_day}


def run(capsys, *argv):
    code = main(["reports", *argv])
    out = capsys.readouterr().out
    return code, out


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "reports.sqlite3")


def test_corpus_imports_and_summary_totals_are_right(capsys, sample, db, expected):
    """The name docs/conformance.md cites; runs on the own folder and on the corpus."""
    code, out = run(capsys, "import", "--db", db, "--json", str(sample.folder))
    result = json.loads(out)
    assert code == 1  # one negative sample (a cron mail) is quarantined: a finding
    assert result["stored"] == len(expected["reports"])
    assert result["quarantined"] == 1 and result["errors"] == []
    (bad,) = [i for i in result["items"] if i["status"] == "quarantined"]
    assert bad["source"].endswith(sample.negative)
    every_source = {i["source"] for i in result["items"]}
    assert every_source == {str(p) for p in expected["files"]}  # every file was read

    code, out = run(capsys, "summary", "--db", db, "--json")
    summary = json.loads(out)
    assert code == 0
    assert summary["totals"] == {"reports": len(expected["reports"]),
                                 "successful_sessions": expected["successful"],
                                 "failed_sessions": expected["failed"]}
    per_day = {d["date"]: [d["successful_sessions"], d["failed_sessions"]] for d in summary["days"]}
    assert per_day == expected["per_day"]


def test_reimport_is_idempotent(capsys, sample, db, expected):
    run(capsys, "import", "--db", db, str(sample.folder))
    code, out = run(capsys, "import", "--db", db, "--json", str(sample.folder))
    result = json.loads(out)
    assert result["stored"] == 0
    assert result["duplicate"] == sum(len(_payloads(p)) for p in expected["files"]
                                      if p.name != sample.negative)
    code, out = run(capsys, "list", "--db", db, "--json", "--limit", "1000")
    listed = json.loads(out)
    # Different bodies under one key (the RFC example as two projects wrote it) are kept
    # side by side as a conflict; each key is counted once.
    assert {(r["report_id"], r["organization"]) for r in listed} == set(expected["reports"])
    counted = [(r["report_id"], r["organization"]) for r in listed if r["counted"]]
    assert sorted(counted) == sorted(expected["reports"])
    assert all(r["conflict"] for r in listed if not r["counted"])


def test_summary_csv_and_domain_filter(capsys, sample, db, expected):
    run(capsys, "import", "--db", db, str(sample.folder))
    code, out = run(capsys, "summary", "--db", db, "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert sum(int(r["successful_sessions"]) for r in rows if r["record"] == "summary") == expected["successful"]
    assert sum(int(r["failed_sessions"]) for r in rows if r["record"] == "summary") == expected["failed"]
    domain = sample.domain
    want = sum(p["summary"]["total-successful-session-count"] for r in expected["reports"].values()
               for p in r["policies"] if (p["policy"].get("policy-domain") or "").lower() == domain)
    code, out = run(capsys, "summary", "--db", db, "--json", "--domain", domain)
    assert json.loads(out)["totals"]["successful_sessions"] == want > 0
    code, out = run(capsys, "summary", "--db", db, "--json", "--since", "2100-01-01")
    assert json.loads(out)["totals"]["reports"] == 0
    code, out = run(capsys, "summary", "--db", db)
    assert "successful" in out and all(len(line) <= 100 for line in out.splitlines())


def test_list_show_and_quarantine(capsys, sample, db):
    run(capsys, "import", "--db", db, str(sample.folder))
    code, out = run(capsys, "list", "--db", db, "--domain", sample.domain, "--json")
    listed = json.loads(out)
    assert code == 0 and listed and all(sample.domain in r["policy_domains"] for r in listed)
    rid = sample.report_id
    code, out = run(capsys, "show", "--db", db, rid, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["report"]["report-id"] == rid
    assert shown["successful_sessions"] == sample.report_successful
    code, out = run(capsys, "show", "--db", db, str(shown["id"]))
    assert code == 0 and "certificate-expired" in out
    code, _ = run(capsys, "show", "--db", db, "no-such-report")
    assert code == 1
    code, out = run(capsys, "quarantine", "--db", db, "--json")
    (entry,) = json.loads(out)
    assert "no tlsrpt report" in entry["reason"].lower()
    assert main(["reports", "quarantine", "--db", db, "--raw", str(entry["id"])]) == 0
    captured = capsys.readouterr()
    raw = (sample.folder / sample.negative).read_bytes()
    assert captured.out.encode("utf-8", "surrogateescape") == raw


def test_maildir_mbox_and_gzip_files(capsys, sample, tmp_path, db):
    emls = sorted(sample.folder.glob("*.eml"))
    md = mailbox.Maildir(str(tmp_path / "Maildir"), create=True)
    box = mailbox.mbox(str(tmp_path / "reports.mbox"), create=True)
    for p in emls:
        md.add(p.read_bytes())
        box.add(p.read_bytes())
    box.flush()
    box.close()
    gz = tmp_path / "files" / "rfc.json.gz"
    gz.parent.mkdir()
    rfc = json.loads((sample.folder / sample.plain_json).read_bytes())
    rfc["report-id"] = "gz-1"
    gz.write_bytes(gzip.compress(json.dumps(rfc).encode()))
    code, out = run(capsys, "import", "--db", db, "--json", str(tmp_path / "Maildir"))
    first = json.loads(out)
    assert first["stored"] + first["duplicate"] + first["quarantined"] >= len(emls)
    assert first["quarantined"] == 1
    code, out = run(capsys, "import", "--db", db, "--json", str(tmp_path / "reports.mbox"), str(gz))
    second = json.loads(out)
    assert second["stored"] == 1  # only the .json.gz is new; the mbox repeats the maildir
    assert second["quarantined"] == 1  # the negative sample, again kept
    assert second["sources"] == len(emls) + 1


def test_unreadable_paths_are_reported(capsys, tmp_path, db):
    big = tmp_path / "big.json"
    big.write_bytes(b"{" + b" " * (6 * 1024 * 1024) + b"}")
    code, out = run(capsys, "import", "--db", db, "--json", str(tmp_path / "missing.json"), str(big))
    result = json.loads(out)
    assert code == 1
    assert [e["reason"] for e in result["errors"]] == ["no such file or directory",
                                                       "larger than 5242880 bytes"]
