"""``smtptls tlsa generate|check`` (offline): output, JSON schema, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from dane_certs import NOW, key, pki, rec, zeros

from smtptls.cli.main import main
from smtptls.dane import tlsa_from_cert

AT = NOW.isoformat()  # the generated certificates' validity is around NOW


@pytest.fixture()
def chain_pem(tmp_path: Path) -> Path:
    p = pki()
    path = tmp_path / "fullchain.pem"
    path.write_bytes(p.leaf.pem + p.inter.pem + p.root.pem)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_default_3_1_1(capsys, chain_pem: Path) -> None:
    code, out, _ = run(capsys, "tlsa", "generate", str(chain_pem))
    assert code == 0
    assert tlsa_from_cert(pki().leaf.cert).to_text() in out.splitlines()


def test_generate_with_owner_name(capsys, chain_pem: Path) -> None:
    code, out, _ = run(capsys, "tlsa", "generate", str(chain_pem), "--name", "mx.example.com")
    assert code == 0
    line = f"_25._tcp.mx.example.com. IN TLSA {tlsa_from_cert(pki().leaf.cert).to_text()}"
    assert line in out.splitlines()
    code, out, _ = run(capsys, "tlsa", "generate", str(chain_pem), "--name",
                       "_25._tcp.mx.example.com.")
    assert line in out.splitlines()


def test_generate_usage_2_lists_issuers(capsys, chain_pem: Path) -> None:
    p = pki()
    code, out, _ = run(capsys, "tlsa", "generate", str(chain_pem), "--usage", "2",
                       "--selector", "0", "--mtype", "2")
    assert code == 0
    lines = [ln for ln in out.splitlines() if not ln.startswith(";")]
    assert lines == [rec(2, 0, 2, p.inter).to_text(), rec(2, 0, 2, p.root).to_text()]


def test_generate_json_schema(capsys, chain_pem: Path) -> None:
    code, out, _ = run(capsys, "tlsa", "generate", str(chain_pem), "--json", "--name", "mx.x")
    assert code == 0
    row = json.loads(out)["records"][0]
    assert set(row) == {"owner", "usage", "selector", "mtype", "data", "rdata", "line",
                        "source"}
    assert row["owner"] == "_25._tcp.mx.x." and row["usage"] == 3
    assert row["source"]["depth"] == 0 and "mx.example.com" in row["source"]["subject"]


def test_generate_from_public_key(capsys, tmp_path: Path) -> None:
    k = key("ec", 80)
    path = tmp_path / "next.pub"
    path.write_bytes(k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    code, out, _ = run(capsys, "tlsa", "generate", str(path))
    assert code == 0 and tlsa_from_cert(k).to_text() in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        pytest.param(["--usage", "2"], "issuer", id="usage-2-leaf-only"),
        pytest.param(["--selector", "0"], "Cert(0)", id="key-with-cert-selector"),
    ],
)
def test_generate_errors_exit_2(capsys, tmp_path: Path, argv: list[str], needle: str) -> None:
    p = pki()
    path = tmp_path / "leaf.pem"
    path.write_bytes(p.leaf.pem if "--usage" in argv else
                     key("ec", 81).public_key().public_bytes(
                         serialization.Encoding.PEM,
                         serialization.PublicFormat.SubjectPublicKeyInfo))
    code, _, err = run(capsys, "tlsa", "generate", str(path), *argv)
    assert code == 2 and needle in err


def test_generate_missing_file_exit_2(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "tlsa", "generate", str(tmp_path / "nope.pem"))
    assert code == 2 and "cannot read" in err


def test_generate_pkix_usage_warns(capsys, chain_pem: Path) -> None:
    code, _, err = run(capsys, "tlsa", "generate", str(chain_pem), "--usage", "1")
    assert code == 0 and "RFC 7672 §3.1.3" in err


def test_generate_output_feeds_check(capsys, chain_pem: Path, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "tlsa", "generate", str(chain_pem), "--usage", "2",
                       "--name", "mx.example.com")
    records = tmp_path / "tlsa.zone"
    records.write_text(out)
    code, out, _ = run(capsys, "tlsa", "check", str(chain_pem), "--records", str(records),
                       "--host", "mx.example.com", "--at", AT)
    assert code == 0 and "dane-ta-match" in out


@pytest.mark.parametrize(
    ("records", "extra", "code"),
    [
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf)], [], 0, id="ee-match"),
        pytest.param(lambda p: [zeros(3, 1, 1)], [], 1, id="no-match"),
        pytest.param(lambda p: [rec(1, 1, 1, p.leaf)], [], 1, id="pkix-only-unusable"),
        pytest.param(lambda p: [rec(3, 1, 1, p.leaf), zeros(3, 1, 2)], [], 1,
                     id="agility-ignored-match"),
        pytest.param(lambda p: [rec(2, 1, 1, p.inter)], ["--host", "mx.example.com", "--at", AT], 0,
                     id="ta-verify-ok"),
        pytest.param(lambda p: [rec(2, 1, 1, p.inter)], ["--host", "other.example", "--at", AT],
                     1,
                     id="ta-verify-name-mismatch"),
        pytest.param(lambda p: [rec(2, 1, 1, p.inter)],
                     ["--host", "mx.example.com", "--at", "2000-01-01"], 1,
                     id="ta-verify-before-validity"),
    ],
)
def test_check_exit_codes(capsys, chain_pem: Path, tmp_path: Path, records, extra: list[str],
                          code: int) -> None:
    path = tmp_path / "records.txt"
    path.write_text("".join(r.to_text() + "\n" for r in records(pki())))
    got, out, _ = run(capsys, "tlsa", "check", str(chain_pem), "--records", str(path), *extra)
    assert got == code, out


def test_check_json_schema(capsys, chain_pem: Path, tmp_path: Path) -> None:
    p = pki()
    path = tmp_path / "records.zone"
    path.write_text(f"_25._tcp.mx.example.com. IN TLSA {rec(2, 1, 1, p.inter).to_text()}\n"
                    f"{rec(1, 1, 1, p.leaf).to_text()}\n")
    code, out, _ = run(capsys, "tlsa", "check", str(chain_pem), "--records", str(path),
                       "--host", "mx.example.com", "--at", AT, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    first, second = doc["records"]
    assert set(first) == {"rdata", "owner", "usable", "unusable_reason",
                          "ignored_by_agility", "matches"}
    assert first["owner"] == "_25._tcp.mx.example.com."
    assert first["matches"] == [{"depth": 1, "subject": p.inter.cert.subject.rfc4514_string(),
                                 "how": "issuer"}]
    assert second["usable"] is False and "PKIX" in second["unusable_reason"]
    assert doc["verdict"]["reason"] == "dane-ta-match" and doc["verdict"]["depth"] == 1
    assert set(doc["verdict"]) == {"ok", "reason", "detail", "depth", "matched", "result_type"}


def test_check_record_anchor_not_sent(capsys, tmp_path: Path) -> None:
    p = pki()
    leaf_only = tmp_path / "leaf.pem"
    leaf_only.write_bytes(p.leaf.pem)
    path = tmp_path / "records.txt"
    path.write_text(rec(2, 1, 0, p.inter).to_text() + "\n")
    code, out, _ = run(capsys, "tlsa", "check", str(leaf_only), "--records", str(path),
                       "--json")
    doc = json.loads(out)
    assert code == 0 and doc["records"][0]["matches"][0]["how"] == "record-anchor"


@pytest.mark.parametrize(
    "content",
    [pytest.param("3 1 1 zz\n", id="bad-record"), pytest.param("; nothing\n", id="empty")],
)
def test_check_bad_records_file_exit_2(capsys, chain_pem: Path, tmp_path: Path,
                                       content: str) -> None:
    path = tmp_path / "records.txt"
    path.write_text(content)
    code, _, err = run(capsys, "tlsa", "check", str(chain_pem), "--records", str(path))
    assert code == 2 and err.startswith("smtptls: error:")


def test_help_has_examples(capsys) -> None:
    for argv in (["tlsa", "--help"], ["tlsa", "generate", "--help"], ["tlsa", "check", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and "smtptls tlsa" in out
