"""``smtptls tlsa check CURRENT --next NEW``: is the staged certificate covered before
it is deployed (RFC 7671 §8.1)? Through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dane_certs import Issued, key, make_cert, pki

from smtptls.cli.main import main
from smtptls.dane import tlsa_from_cert

OWNER = "_25._tcp.mx.example.com."


def staged_leaf(issuer: Issued | None = None, slot: int = 7) -> Issued:
    p = pki()
    return make_cert("mx.example.com", key("ec", slot), issuer or p.inter,
                     san=["mx.example.com"], key_usage="ee")


def write_chain(path: Path, *certs: Issued) -> Path:
    path.write_bytes(b"".join(c.pem for c in certs))
    return path


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    p = pki()
    return {
        "current": write_chain(tmp_path / "current.pem", p.leaf, p.inter, p.root),
        "next": write_chain(tmp_path / "next.pem", staged_leaf(), p.inter, p.root),
        "dir": tmp_path,
    }


def records(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{OWNER} 3600 IN TLSA {line}\n" for line in lines))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["tlsa", "check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def ee(cert: Issued) -> str:
    return tlsa_from_cert(cert.cert).to_text()


def ta(cert: Issued) -> str:
    return tlsa_from_cert(cert.cert, 2, 1, 1).to_text()


def test_rfc7671_8_1_new_key_not_covered_exit_1_prints_record_and_wait(capsys, files) -> None:
    rr = records(files["dir"] / "old.txt", ee(pki().leaf))
    code, out, err = run(capsys, str(files["current"]), "--next", str(files["next"]),
                         "--records", str(rr), "--ttl", "3600", "--margin", "600")
    assert code == 1, err
    assert f"{OWNER} IN TLSA {ee(staged_leaf())}" in out
    assert f"{OWNER} IN TLSA {ta(pki().inter)}" in out  # the same CA: 2 1 1 fits both
    assert "wait at least 4200 s (70 min)" in out
    assert "do not deploy" in out


def test_rfc7671_8_1_records_without_ttl_say_ttl_unknown(capsys, files) -> None:
    rr = records(files["dir"] / "old.txt", ee(pki().leaf))
    code, out, _ = run(capsys, str(files["current"]), "--next", str(files["next"]),
                       "--records", str(rr))
    assert code == 1
    assert "TTL is unknown with --records" in out
    assert "--ttl" in out


def test_rfc7671_8_1_both_keys_published_exit_0(capsys, files) -> None:
    rr = records(files["dir"] / "both.txt", ee(pki().leaf), ee(staged_leaf()))
    code, out, err = run(capsys, str(files["current"]), "--next", str(files["next"]),
                         "--records", str(rr))
    assert code == 0, out + err
    assert "both certificates are covered" in out
    assert "publish first" not in out


def test_rfc7671_8_1_issuer_2_1_1_covers_both_exit_0(capsys, files) -> None:
    rr = records(files["dir"] / "ta.txt", ta(pki().inter))
    code, out, err = run(capsys, str(files["current"]), "--next", str(files["next"]),
                         "--records", str(rr))
    assert code == 0, out + err
    assert out.count("covered by DANE-TA(2) SPKI(1) SHA2-256(1)") == 2


def test_rfc7671_8_1_other_ca_gets_no_issuer_advice(capsys, files) -> None:
    other_root = make_cert("Other Root CA", key("ec", 11), ca=True, key_usage="ca")
    other = staged_leaf(other_root, slot=12)
    nxt = write_chain(files["dir"] / "other.pem", other, other_root)
    rr = records(files["dir"] / "old.txt", ee(pki().leaf))
    code, out, _ = run(capsys, str(files["current"]), "--next", str(nxt),
                       "--records", str(rr), "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["publish"] == [f"{OWNER} IN TLSA {ee(other)}"]
    assert doc["issuer_option"] is None


def test_rfc7672_2_2_current_not_covered_is_said_clearly(capsys, files) -> None:
    rr = records(files["dir"] / "next-only.txt", ee(staged_leaf()))
    code, out, _ = run(capsys, str(files["current"]), "--next", str(files["next"]),
                       "--records", str(rr))
    assert code == 1
    assert "NOT covered: no usable record matches the certificate deployed now" in out
    assert "the staged certificate is covered, the current one is not" in out


def test_rfc7671_8_1_json_schema(capsys, files) -> None:
    rr = records(files["dir"] / "old.txt", ee(pki().leaf))
    code, out, _ = run(capsys, str(files["current"]), "--next", str(files["next"]),
                       "--records", str(rr), "--ttl", "300", "--json")
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["current"]["covered"] is True
    assert doc["current"]["covered_by"] == [ee(pki().leaf)]
    assert doc["next"]["covered"] is False
    assert doc["publish"] == [f"{OWNER} IN TLSA {ee(staged_leaf())}"]
    assert doc["wait"] == {"ttl": 300, "margin": 300, "seconds": 600, "ttl_source": "option"}
    assert "next-not-published" in {f["code"] for f in doc["findings"]}


@pytest.mark.parametrize("which", ["next", "current"])
def test_rfc7671_8_1_malformed_pem_exit_2_one_line(capsys, files, which) -> None:
    bad = files["dir"] / "bad.pem"
    bad.write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                    b"-----END CERTIFICATE-----\n")
    rr = records(files["dir"] / "old.txt", ee(pki().leaf))
    cur, nxt = (files["current"], bad) if which == "next" else (bad, files["next"])
    code, out, err = run(capsys, str(cur), "--next", str(nxt), "--records", str(rr))
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
