"""``smtptls reports import`` in bulk: reports parsed in worker processes, stored in group
commits, printed only once committed; ``kill -9`` in the middle loses nothing it printed
and a rerun stores the rest with no duplicates.

The report mails are built here with the standard library's e-mail package (RFC 8460
§5.3 form: multipart/report, application/tlsrpt+gzip), independently of the code under
test; the store is read back with sqlite3.
"""

from __future__ import annotations

import gzip
import json
import mailbox
import os
import signal
import sqlite3
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from smtptls.cli.main import main
from tests.conftest import FIXTURES, ROOT


def report_mail(i: int) -> bytes:
    report = {
        "organization-name": "Reporter Inc.", "contact-info": "tlsrpt@reporter.example",
        "report-id": f"batch-{i:05d}",
        "date-range": {"start-datetime": f"2024-05-{1 + i % 28:02d}T00:00:00Z",
                       "end-datetime": f"2024-05-{1 + i % 28:02d}T23:59:59Z"},
        "policies": [{"policy": {"policy-type": "sts", "policy-domain": f"d{i % 7}.example",
                                 "mx-host": ["mx.example"]},
                      "summary": {"total-successful-session-count": 10 + i,
                                  "total-failure-session-count": i % 3},
                      "failure-details": [{"result-type": "certificate-expired",
                                           "failed-session-count": i % 3}] if i % 3 else []}],
    }
    msg = EmailMessage()
    msg["From"] = "tlsrpt@reporter.example"
    msg["To"] = "reports@example.net"
    msg["Subject"] = (f"Report Domain: d{i % 7}.example Submitter: reporter.example "
                      f"Report-ID: <batch-{i:05d}@reporter.example>")
    msg["TLS-Report-Domain"] = f"d{i % 7}.example"
    msg["TLS-Report-Submitter"] = "reporter.example"
    msg.set_content("This is an aggregate TLS report.")
    msg.add_attachment(gzip.compress(json.dumps(report).encode(), mtime=0),
                       maintype="application", subtype="tlsrpt+gzip",
                       filename=f"reporter.example!d{i % 7}.example!1714521600!1714607999!{i}.json.gz")
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()


def maildir(path: Path, n: int) -> Path:
    box = mailbox.Maildir(str(path), create=True)
    for i in range(n):
        box.add(report_mail(i))
    return path


def stored_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT report_id FROM reports ORDER BY report_id")]


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(["reports", *argv])
    return code, capsys.readouterr().out


def test_rfc8460_5_3_workers_and_in_process_store_the_same(capsys, tmp_path):
    """The fixture mails and files, parsed in workers or here, give the same store."""
    summaries, items = [], []
    for workers in ("1", "2"):
        db = str(tmp_path / f"w{workers}.sqlite3")
        code, out = cli(capsys, "import", "--db", db, "--json", "--workers", workers,
                        "--batch", "3", str(FIXTURES / "tlsrpt"))
        result = json.loads(out)
        assert code == 1 and result["quarantined"] == 1  # the cron mail
        items.append(sorted((i["source"], i["status"], i.get("report_id") or i.get("reason"))
                            for i in result["items"]))
        code, out = cli(capsys, "summary", "--db", db, "--json")
        summaries.append(json.loads(out))
    assert items[0] == items[1]
    assert summaries[0] == summaries[1] and summaries[0]["totals"]["reports"] > 5


def test_group_commits_store_every_report_once_and_a_rerun_finds_duplicates(capsys, tmp_path):
    box = maildir(tmp_path / "Maildir", 230)
    db = tmp_path / "r.sqlite3"
    code, out = cli(capsys, "import", "--db", str(db), "--workers", "2", "--batch", "40",
                    str(box))
    assert code == 0
    lines = out.splitlines()
    assert lines[-1] == "230 stored, 0 duplicate, 0 conflict, 0 quarantined, 0 not readable"
    printed = sorted(line.split()[-1] for line in lines if line.startswith("stored"))
    assert printed == stored_ids(db) == [f"batch-{i:05d}" for i in range(230)]
    code, out = cli(capsys, "import", "--db", str(db), "--json", "--workers", "1", str(box))
    again = json.loads(out)
    assert (code, again["stored"], again["duplicate"]) == (0, 0, 230)
    assert len(stored_ids(db)) == 230


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_rerun_finds_what_it_quarantined_instead_of_keeping_it_twice(capsys, tmp_path, workers):
    db = str(tmp_path / "r.sqlite3")
    first = json.loads(cli(capsys, "import", "--db", db, "--json", "--workers", workers,
                           str(FIXTURES / "tlsrpt"))[1])
    code, out = cli(capsys, "import", "--db", db, "--json", "--workers", workers,
                    str(FIXTURES / "tlsrpt"))
    again = json.loads(out)
    assert code == 1 and again["quarantined"] == first["quarantined"] == 1  # the cron mail
    ids = {i["quarantine_id"] for i in first["items"] + again["items"] if "quarantine_id" in i}
    assert len(ids) == 1 and again["stored"] == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone() == (1,)
    # a different source with the same bytes is another entry: it says where it came from
    cron = next(i["source"] for i in first["items"] if "quarantine_id" in i)
    copy = tmp_path / "copy.eml"
    copy.write_bytes(Path(cron).read_bytes())
    cli(capsys, "import", "--db", db, "--json", "--workers", workers, str(copy))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM quarantine").fetchone() == (2,)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_kill_9_loses_no_report_printed_as_stored_and_a_rerun_completes(tmp_path, sig):
    n = 2000
    box = maildir(tmp_path / "Maildir", n)
    db = tmp_path / "r.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    argv = [sys.executable, "-m", "smtptls", "reports", "import", "--db", str(db),
            "--workers", "2", "--batch", "25", str(box)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    printed: list[str] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        for line in proc.stdout:
            if line.startswith(b"stored"):
                printed.append(line.split()[-1].decode())
            if len(printed) >= 100:
                break
        os.killpg(proc.pid, sig)  # the import and its parser processes, as a terminal does
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    printed += [line.split()[-1].decode() for line in rest.splitlines()
                if line.startswith(b"stored")]
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert err.decode().strip().splitlines()[-1] == "smtptls: interrupted"
        assert b"Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert len(printed) >= 100
    after_kill = stored_ids(db)
    assert set(printed) <= set(after_kill)  # everything printed was committed
    assert len(after_kill) < n  # it was interrupted, not finished
    done = subprocess.run(argv[:-1] + ["--json", str(box)], capture_output=True, env=env,
                          timeout=600, check=False)
    result = json.loads(done.stdout)
    assert done.returncode == 0
    assert result["stored"] + result["duplicate"] == n
    assert result["duplicate"] == len(after_kill)
    assert stored_ids(db) == [f"batch-{i:05d}" for i in range(n)]  # each once


def test_bad_workers_value_is_a_usage_error(capsys, tmp_path):
    code = main(["reports", "import", "--db", str(tmp_path / "r.sqlite3"), "--workers", "0",
                 str(tmp_path)])
    assert code == 2
    assert "--workers" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_mbox_and_json_files_import_in_workers(capsys, tmp_path, workers):
    box = mailbox.mbox(str(tmp_path / "reports.mbox"))
    for i in range(12):
        box.add(report_mail(i))
    box.flush()
    report = json.loads(gzip.decompress(
        mailbox.mboxMessage(report_mail(99)).get_payload()[1].get_payload(decode=True)))
    (tmp_path / "one.json").write_text(json.dumps(report))
    code, out = cli(capsys, "import", "--db", str(tmp_path / "r.sqlite3"), "--json",
                    "--workers", workers, str(tmp_path / "reports.mbox"), str(tmp_path / "one.json"))
    result = json.loads(out)
    assert (code, result["stored"], result["sources"]) == (0, 13, 13)
    assert {i["report_id"] for i in result["items"]} == {f"batch-{i:05d}" for i in [*range(12), 99]}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_files_over_the_configured_cap_are_reported_not_read(capsys, tmp_path, workers):
    (tmp_path / "smtptls.toml").write_text("[reports]\nmax_body = 1000\n")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.json").write_text(json.dumps({"report-id": "x" * 2000}))
    (tmp_path / "in" / "cron.eml").write_bytes((FIXTURES / "tlsrpt" / "cron-mail.eml").read_bytes())
    db = tmp_path / "r.sqlite3"
    code, out = cli(capsys, "import", "--config", str(tmp_path / "smtptls.toml"), "--db", str(db),
                    "--json", "--workers", workers, str(tmp_path / "in"))
    result = json.loads(out)
    assert code == 1
    assert result["errors"] == [{"source": str(tmp_path / "in" / "big.json"),
                                 "reason": "larger than 1000 bytes"}]
    assert result["quarantined"] == 1
    with sqlite3.connect(db) as conn:  # the quarantined mail is kept whole
        (raw,) = conn.execute("SELECT raw FROM quarantine").fetchone()
    assert raw == (FIXTURES / "tlsrpt" / "cron-mail.eml").read_bytes()


@pytest.mark.parametrize("workers", [1, 2])
async def test_rfc8460_5_3_verify_dkim_records_the_signature_of_each_mail(tmp_path, workers):
    from smtptls.services.report_import import ImportOptions, import_paths
    from smtptls.store.reports_sqlite import SqliteReportStore
    from tests.unit.reports.test_reports_dkim import lookup_from, sign
    from tests.unit.reports.test_reports_dkim import report_mail as dkim_mail

    rsa = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.rsa")
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    import base64

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM,
                            serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    box = tmp_path / "in"
    box.mkdir()
    (box / "signed.eml").write_bytes(sign(dkim_mail(), pem))
    (box / "unsigned.eml").write_bytes(report_mail(7))
    lookup = lookup_from({"rpt._domainkey.sender.example": [f"v=DKIM1; k=rsa; p={pub}"]})
    options = ImportOptions(max_body=1 << 20, max_decompressed=1 << 22, workers=workers,
                            verify_dkim=True, dkim_lookup=lookup)
    store = SqliteReportStore(tmp_path / "r.sqlite3")
    await store.open()
    try:
        result = await import_paths([box], store, options)
        assert (result.stored, result.errors) == (2, [])
        dkim = {r.report_id: (r.dkim, r.dkim_domain, r.provenance)
                for r in await store.list_reports()}
    finally:
        await store.close()
    assert dkim == {"dkim-1": ("pass", "sender.example", "dkim"),
                    "batch-00007": ("none", "", "import")}
