"""``smtptls mta-sts`` and ``smtptls demo`` run as a user runs them: in a subprocess.

``mta-sts parse`` and ``demo`` need nothing else; ``mta-sts DOMAIN`` runs against the
test lab (its validating resolver and CA passed with --nameserver and --ca-file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SUITE_ENV

ROOT = Path(__file__).resolve().parents[2]

VALID = "version: STSv1\nmode: enforce\nmx: mx1.example.com\nmx: *.example.net\nmax_age: 86400\n"


def smtptls(*args: str, cwd: Path | None = None, stdin: bytes | None = None,
            timeout: float = 60, state: Path | None = None) -> subprocess.CompletedProcess[str]:
    # the suite's own settings (tests/conftest.py) stay; nothing else from SMTPTLS_*
    keep = {*SUITE_ENV, "SMTPTLS_STATE_DIR"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPTLS_") or k in keep}
    if state is not None:
        env["SMTPTLS_STATE_DIR"] = str(state)
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run(
        [sys.executable, "-m", "smtptls", *args], cwd=cwd, env=env, input=stdin,
        capture_output=True, timeout=timeout, check=False,
    )
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode("utf-8", "replace"),
                                       proc.stderr.decode("utf-8", "replace"))


def narrow(text: str) -> bool:
    return all(len(line) <= 100 for line in text.splitlines())


# --- mta-sts parse FILE --------------------------------------------------------------------


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_cli_parse_valid_json(tmp_path):
    f = tmp_path / "mta-sts.txt"
    f.write_text(VALID)
    r = smtptls("mta-sts", "parse", str(f), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"version": "STSv1", "mode": "enforce", "max_age": 86400,
                                    "mx": ["mx1.example.com", "*.example.net"]}


def test_cli_parse_valid_human(tmp_path):
    f = tmp_path / "mta-sts.txt"
    f.write_text(VALID.replace("\n", "\r\n"))
    r = smtptls("mta-sts", "parse", str(f))
    assert r.returncode == 0
    assert "valid MTA-STS policy" in r.stdout and "*.example.net" in r.stdout
    assert narrow(r.stdout)


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "body, line, fragment",
    [
        ("version: STSv1\nmode: enforce\nmx: mx1.example.com\nmax_age: 99999999\n", 4,
         "max_age"),
        ("version: STSv1\nmode: sometimes\nmx: mx.example.com\nmax_age: 1\n", 2, "mode"),
        ("version: STSv2\nmode: enforce\nmx: mx.example.com\nmax_age: 1\n", 1, "version"),
        ("version: STSv1\nmode: enforce\nmx: mx.*.example.com\nmax_age: 1\n", 3, "mx"),
    ],
    ids=["max-age-too-large", "bad-mode", "bad-version", "bad-wildcard"],
)
def test_rfc8461_3_2_cli_parse_invalid_names_the_line(tmp_path, body, line, fragment):
    f = tmp_path / "bad.txt"
    f.write_text(body)
    r = smtptls("mta-sts", "parse", str(f), "--json")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert out["line"] == line and fragment in out["error"]
    human = smtptls("mta-sts", "parse", str(f))
    assert human.returncode == 2
    assert f"bad.txt:{line}: invalid MTA-STS policy" in human.stderr
    assert "Traceback" not in human.stderr


def test_cli_parse_missing_field_has_null_line(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("version: STSv1\nmode: enforce\nmx: mx.example.com\n")
    r = smtptls("mta-sts", "parse", str(f), "--json")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert out["line"] is None and "max_age" in out["error"]


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"version: STSv1\nmode: enforce\n\xff\xfe\n", "UTF-8"),
        (b"version: STSv1\n" + b"x" * (64 * 1024 + 10), "larger than"),
    ],
    ids=["not-utf8", "oversized"],
)
def test_cli_parse_rejects_undecodable_and_oversized(tmp_path, content, fragment):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    r = smtptls("mta-sts", "parse", str(f), "--json")
    assert r.returncode == 2 and fragment in json.loads(r.stdout)["error"]


def test_cli_parse_missing_file_and_stdin(tmp_path):
    r = smtptls("mta-sts", "parse", str(tmp_path / "nope.txt"), "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout) == {
        "error": f"cannot read {tmp_path / 'nope.txt'}: No such file or directory",
        "line": None}
    r = smtptls("mta-sts", "parse", "-", "--json", stdin=VALID.encode())
    assert r.returncode == 0 and json.loads(r.stdout)["mode"] == "enforce"


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_cli_parse_corpus_policies(corpus, tmp_path):
    vectors = json.loads((corpus / "vectors" / "mtasts_tlsrpt_conformance.json").read_text())
    # a handful end to end through the CLI; the pure core runs every vector in-process
    chosen = [v for v in vectors["policy"] if not v.get("disputed")][:8]
    assert chosen
    for i, vector in enumerate(chosen):
        f = tmp_path / f"p{i}.txt"
        f.write_bytes(vector["input"].encode("utf-8"))
        r = smtptls("mta-sts", "parse", str(f), "--json")
        assert r.returncode == (0 if vector["valid"] else 2), (vector, r.stdout)
        if vector["valid"]:
            expected = {k: vector["expected"][k] for k in ("version", "mode", "max_age", "mx")}
            assert json.loads(r.stdout) == expected


@pytest.mark.parametrize(
    "args, fragment",
    [(["mta-sts", "parse"], "needs a FILE"),
     (["mta-sts", "example.com", "extra"], "unexpected argument")],
    ids=["parse-without-file", "domain-with-extra"],
)
def test_cli_usage_errors(args, fragment):
    r = smtptls(*args)
    assert r.returncode == 2 and fragment in r.stderr


def test_cli_help_has_examples_and_fits():
    r = smtptls("mta-sts", "--help")
    assert r.returncode == 0
    assert "smtptls mta-sts parse mta-sts.txt --json" in r.stdout
    assert "exit status" in r.stdout and narrow(r.stdout)


def test_cli_invalid_domain_is_error_without_io(tmp_path):
    r = smtptls("mta-sts", ".good.loc", "--no-cache", "--nameserver", "127.0.0.1:9",
                "--json")
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert out["type"] == "InvalidDomainError" and "outcome" not in out
    assert len(r.stderr.strip().splitlines()) == 1


# --- demo ----------------------------------------------------------------------------------


def test_demo_runs_offline_and_caches_across_runs(tmp_path):
    first = smtptls("demo", cwd=tmp_path, state=tmp_path / "state")
    assert first.returncode == 0, first.stderr
    assert "policy stored" in first.stdout and "try-next-mx" in first.stdout
    # the cache is in the state directory, never in the directory the command runs in
    assert (tmp_path / "state" / "smtptls.sqlite3").is_file()
    assert not (tmp_path / "var").exists()
    second = smtptls("demo", cwd=tmp_path, state=tmp_path / "state")
    assert second.returncode == 0
    assert "use-cached" in second.stdout  # the SQLite cache survived the restart
    assert narrow(first.stdout) and narrow(second.stdout)


def test_demo_uses_configured_sqlite_path(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[cache]\nsqlite_path = "{tmp_path / "elsewhere" / "c.sqlite3"}"\n')
    r = smtptls("demo", "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 0
    assert (tmp_path / "elsewhere" / "c.sqlite3").is_file()


# --- mta-sts DOMAIN against the lab --------------------------------------------------------


@pytest.fixture(scope="module")
def lab_env(request):
    try:
        lab = request.getfixturevalue("lab")
    except pytest.FixtureLookupError:
        pytest.skip("test lab not available (tests/lab fixtures)")
    from tests.lab import LabDomain, PolicyHost

    return lab, LabDomain, PolicyHost


def _lab_args(lab) -> list[str]:
    host, port = lab.resolver
    return ["--nameserver", f"{host}:{port}", "--ca-file", str(lab.ca_file), "--timeout", "5"]


def _publish(lab_env, prefix, *, txt=("v=STSv1; id=1",), body=None, **host):
    import random

    lab, LabDomain, PolicyHost = lab_env
    name = f"{prefix}-{random.randint(0, 10**8):08d}.{lab.ZONE_INSECURE}"
    body = body if body is not None else (
        f"version: STSv1\nmode: enforce\nmx: mx1.{name}\nmx: *.mx.{name}\nmax_age: 86400\n")
    lab.add(LabDomain(name, txt={"_mta-sts": list(txt)} if txt else {},
                      policy=PolicyHost(body=body, **host)))
    return name


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_cli_domain_valid_policy(lab_env):
    lab = lab_env[0]
    name = _publish(lab_env, "cli-valid")
    r = smtptls("mta-sts", name, "--no-cache", "--json", *_lab_args(lab))
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["outcome"] == "fetched" and out["record_id"] == "1"
    assert out["policy"] == {"version": "STSv1", "mode": "enforce", "max_age": 86400,
                             "mx": [f"mx1.{name}", f"*.mx.{name}"]}
    assert out["fetch"]["status"] == 200
    human = smtptls("mta-sts", name, "--no-cache", *_lab_args(lab))
    assert human.returncode == 0 and "enforce" in human.stdout and narrow(human.stdout)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_cli_no_record_is_exit_1(lab_env):
    name = _publish(lab_env, "cli-norecord", txt=())
    r = smtptls("mta-sts", name, "--no-cache", "--json", *_lab_args(lab_env[0]))
    assert r.returncode == 1
    assert json.loads(r.stdout)["outcome"] == "no-policy"


@pytest.mark.lab
@pytest.mark.rfc("8461 8.3")
def test_rfc8461_8_3_cli_mode_none_is_exit_1(lab_env):
    name = _publish(lab_env, "cli-none", body="version: STSv1\nmode: none\nmax_age: 600\n")
    r = smtptls("mta-sts", name, "--no-cache", "--json", *_lab_args(lab_env[0]))
    assert r.returncode == 1 and json.loads(r.stdout)["policy"]["mode"] == "none"


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "host, kind",
    [({"status": 404}, "status"), ({"cert": "expired"}, "tls"),
     ({"content_type": "text/html"}, "content-type")],
    ids=["http-404", "expired-cert", "text-html"],
)
def test_rfc8461_3_3_cli_fetch_failure_is_exit_2(lab_env, host, kind):
    name = _publish(lab_env, "cli-fail", **host)
    r = smtptls("mta-sts", name, "--no-cache", "--json", *_lab_args(lab_env[0]))
    assert r.returncode == 2
    out = json.loads(r.stdout)
    assert out["outcome"] == "fetch-failed" and out["errors"]["fetch"]["kind"] == kind
    human = smtptls("mta-sts", name, "--no-cache", *_lab_args(lab_env[0]))
    assert human.returncode == 2 and "fetch error" in human.stdout and narrow(human.stdout)


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_cli_uses_sqlite_cache_across_runs(lab_env, tmp_path):
    lab = lab_env[0]
    name = _publish(lab_env, "cli-cache")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[cache]\nsqlite_path = "{tmp_path / "cache.sqlite3"}"\n')
    first = smtptls("mta-sts", name, "--json", "--config", str(cfg), *_lab_args(lab))
    second = smtptls("mta-sts", name, "--json", "--config", str(cfg), *_lab_args(lab))
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert json.loads(first.stdout)["outcome"] == "fetched"
    assert json.loads(second.stdout)["outcome"] == "cached"
