"""Operator errors through the real command: one line on stderr, exit 2, no traceback, and
no table of results that were never obtained.

Each case runs ``python -m smtptls`` in a subprocess as an operator would: a resolver
that does not answer (a UDP socket that never replies) or does not validate (the lab's
NSD, which sets no AD bit), a bad domain, a missing trust store, a missing log file, an
unusable rua URI, a bad or taken listen address, a database that is not there. The last
test walks every sub-command of the argparse tree with bad inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smtptls.cli.main import build_parser
from tests.lab import LabDomain, LabMx

ROOT = Path(__file__).resolve().parents[2]


def smtptls(*args: str, cwd: Path | None = None, timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return subprocess.run([sys.executable, "-m", "smtptls", *args], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_operator_error(r: subprocess.CompletedProcess[str], *words: str,
                          json_out: bool = False) -> str:
    """Exit 2, one line on stderr (returned), no traceback, no results on stdout."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    if json_out:
        data = json.loads(r.stdout)
        assert set(data) == {"error", "type"} and data["error"]
    else:
        assert r.stdout == "", r.stdout
    return lines[0]


@pytest.fixture
def dead_resolver():
    """A loopback UDP port that receives queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def lab_ns(lab) -> str:
    ip, port = lab.resolver
    return f"{ip}:{port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- check -------------------------------------------------------------------------------


def test_check_with_a_dead_resolver_stops_before_checking(dead_resolver):
    r = smtptls("check", "example.com", "--nameserver", dead_resolver, "--timeout", "1")
    assert_operator_error(r, dead_resolver, "did not answer")


def test_check_json_with_a_dead_resolver_prints_the_error_as_json(dead_resolver):
    r = smtptls("check", "example.com", "--json", "--nameserver", dead_resolver,
                "--timeout", "1")
    assert_operator_error(r, "did not answer", json_out=True)


@pytest.mark.lab
def test_check_refuses_a_resolver_that_does_not_validate(lab):
    ip, port = lab.authoritative  # NSD answers, but sets no AD bit
    r = smtptls("check", "x.secure.test", "--nameserver", f"{ip}:{port}", "--timeout", "5")
    assert_operator_error(r, "does not validate DNSSEC", "test.")


@pytest.mark.lab
def test_check_probe_name_is_configurable(lab, tmp_path):
    # the default probe is the root zone; the lab resolver serves only test.: refused
    r = smtptls("check", "x.secure.test", "--nameserver", lab_ns(lab), "--dnssec-probe", ".",
                "--timeout", "5")
    assert_operator_error(r, "probe .")
    cfg = tmp_path / "c.toml"
    cfg.write_text('[dns]\ndnssec_probe = "secure.test."\n')
    r = smtptls("check", "nothing.secure.test", "--config", str(cfg), "--nameserver",
                lab_ns(lab), "--no-smtp", "--no-rua-probe", "--brief", "--timeout", "5",
                env={"SMTPTLS_DNSSEC_PROBE": "."})  # the file's key wins over the default
    assert r.returncode in (0, 1), r.stderr
    assert "nothing.secure.test" in r.stdout


def test_check_bad_domain_and_missing_ca_file():
    assert_operator_error(smtptls("check", "bad_domain!"), "bad_domain!")
    assert_operator_error(smtptls("check", "example.com", "--ca-file", "/nonexistent.pem"),
                          "/nonexistent.pem")


def test_check_bulk_with_a_dead_resolver_writes_no_results(dead_resolver, tmp_path):
    listing = tmp_path / "domains.txt"
    listing.write_text("a.example\nb.example\n")
    out = tmp_path / "results.jsonl"
    r = smtptls("check", "--bulk", str(listing), "--out", str(out), "--quiet",
                "--nameserver", dead_resolver, "--timeout", "1")
    assert_operator_error(r, "did not answer")
    assert not out.exists()


@pytest.mark.lab
def test_check_bulk_infrastructure_failure_is_retryable_and_checked_again(
        lab, dead_resolver, tmp_path):
    d = lab.add(LabDomain("retry.insecure.test",
                          mx=[LabMx("mx.retry.insecure.test", cert="good")]))
    listing = tmp_path / "domains.txt"
    listing.write_text(f"{d.name}\n")
    out = tmp_path / "results.jsonl"
    common = ("--out", str(out), "--no-smtp", "--no-rua-probe", "--quiet", "--timeout", "1")
    # the resolver dies after the probe: every domain fails on our side
    r = smtptls("check", "--bulk", str(listing), "--nameserver", dead_resolver,
                "--dnssec-probe", "", *common)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "run again with the same --out" in r.stderr.strip().splitlines()[-1]
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert [x.get("retryable") for x in first] == [True]
    # resumed with a working resolver: the retryable domain is checked again, not skipped
    r = smtptls("check", "--bulk", str(listing), "--nameserver", lab_ns(lab), "--json",
                *common[:-1], "5")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["checked_now"] == 1 and summary["resumed"] == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 2 and "retryable" not in lines[1]
    assert lines[1]["adoption"]["mx_dnssec"] == "insecure"
    # and once checked, a third run resumes it
    r = smtptls("check", "--bulk", str(listing), "--nameserver", lab_ns(lab), "--json",
                *common[:-1], "5")
    assert r.returncode == 0 and json.loads(r.stdout)["resumed"] == 1


@pytest.mark.lab
def test_self_signed_mx_certificate_is_reported_in_the_operators_words(lab):
    d = lab.add(LabDomain("selfsigned.insecure.test",
                          mx=[LabMx("mx.selfsigned.insecure.test", cert="self-signed")]))
    args = ("check", d.name, "--nameserver", lab_ns(lab), "--ca-file", str(lab.ca_file),
            "--no-rua-probe", "--timeout", "10", "--helo-name", "client.test")
    r = smtptls(*args, "--json")
    assert r.returncode == 1, r.stderr
    report = json.loads(r.stdout)
    finding = next(f for f in report["findings"] if f["code"] == "tls.cert-untrusted")
    assert "self-signed" in finding["message"]
    assert "<Certificate" not in finding["message"] and "2.5.29" not in finding["message"]
    # the library's own text stays in the facts, for whoever reads the JSON details
    probe = report["mx"]["hosts"][0]["tls"][0]
    assert probe["pkix"]["valid"] is False and probe["pkix"]["reason"]
    human = smtptls(*args)
    assert "self-signed" in human.stdout and "<Certificate" not in human.stdout


# --- mta-sts and dane --------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_mta_sts_operator_errors(dead_resolver, as_json):
    extra = ("--json",) if as_json else ()
    cases = [
        (("mta-sts", "bad_domain!", "--no-cache"), "bad_domain!"),
        (("mta-sts", "example.com", "--no-cache", "--ca-file", "/nonexistent.pem"),
         "/nonexistent.pem"),
        (("mta-sts", "example.com", "--no-cache", "--nameserver", dead_resolver,
          "--timeout", "1"), "did not answer"),
    ]
    for args, word in cases:
        r = smtptls(*args, *extra)
        assert_operator_error(r, word, json_out=as_json)
        assert "deliver as without MTA-STS" not in r.stdout


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_dane_with_a_dead_resolver(dead_resolver, as_json):
    extra = ("--json",) if as_json else ()
    r = smtptls("dane", "example.com", "--nameserver", dead_resolver, "--timeout", "1", *extra)
    assert_operator_error(r, "did not answer", json_out=as_json)


@pytest.mark.lab
def test_dane_refuses_a_resolver_that_does_not_validate(lab):
    ip, port = lab.authoritative
    r = smtptls("dane", "x.secure.test", "--nameserver", f"{ip}:{port}", "--json")
    assert_operator_error(r, "does not validate", json_out=True)


# --- tlsrpt collect, publish -------------------------------------------------------------


def test_tlsrpt_collect_missing_log_file_is_an_error(tmp_path):
    missing = tmp_path / "nonexistent.log"
    r = smtptls("tlsrpt", "collect", "--log-file", str(missing), "--http", "off",
                "--db", str(tmp_path / "r.sqlite3"), timeout=30)
    assert_operator_error(r, str(missing), "--wait")


def test_tlsrpt_collect_wait_warns_and_says_what_it_follows(tmp_path):
    missing = tmp_path / "later.log"
    present = tmp_path / "mail.log"
    present.write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtptls", "tlsrpt", "collect", "--wait", "--http", "off",
         "--log-file", str(missing), "--log-file", str(present),
         "--db", str(tmp_path / "r.sqlite3")],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        seen = ""
        while "stop with" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
        assert f"warning: log file {missing} does not exist yet" in seen, seen
        assert f"following log file {present}" in seen
        assert str(tmp_path / "r.sqlite3") in seen
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest[1]


def test_publish_tlsrpt_unusable_rua_is_an_error():
    assert_operator_error(smtptls("publish", "tlsrpt", "--domain", "example.com",
                                  "--rua", "ftp://x"), "ftp://x", "mailto:")
    ok = smtptls("publish", "tlsrpt", "--domain", "example.com",
                 "--rua", "mailto:tlsrpt@example.com")
    assert ok.returncode == 0 and "v=TLSRPTv1" in ok.stdout


# --- policyd -----------------------------------------------------------------------------


def test_policyd_bad_metrics_address_fails_before_starting(tmp_path):
    r = smtptls("policyd", "--listen", f"127.0.0.1:{free_port()}",
                "--metrics", "127.0.0.1:9461x", timeout=30)
    line = assert_operator_error(r, "--metrics", "9461x")
    assert "stopping" not in line


def test_policyd_taken_port_fails_before_starting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = smtptls("policyd", "--listen", f"127.0.0.1:{port}", "--metrics", "off",
                    timeout=30)
    line = assert_operator_error(r, f"127.0.0.1:{port}", "cannot listen")
    assert "stopping" not in line


def test_policyd_says_where_its_cache_is_and_what_to_put_in_main_cf(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtptls", "policyd", "--listen", f"127.0.0.1:{port}",
         "--metrics", "off"],
        env={**os.environ, "PYTHONPATH": str(ROOT / "src"),
             "SMTPTLS_STATE_DIR": str(tmp_path / "state")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        seen = ""
        deadline = time.monotonic() + 30
        while "stop with" not in seen and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert str(tmp_path / "state" / "smtptls.sqlite3") in seen
    assert f"smtp_tls_policy_maps = socketmap:inet:127.0.0.1:{port}:postfix" in seen
    assert "smtp_dns_support_level = dnssec" in seen and "Ctrl-C" in seen
    assert not (tmp_path / "var").exists()


# --- read-only commands never create files -----------------------------------------------


def test_reports_summary_with_a_typo_creates_nothing(tmp_path):
    r = smtptls("reports", "summary", "--db", "typo.sqlite3", cwd=tmp_path)
    assert_operator_error(r, "typo.sqlite3", "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_tlsrpt_results_does_not_create_a_folder(tmp_path):
    db = tmp_path / "nonexistent" / "x.sqlite3"
    assert_operator_error(smtptls("tlsrpt", "results", "--db", str(db)), str(db))
    assert not db.parent.exists()


def test_read_only_commands_on_the_default_store_create_nothing(tmp_path):
    state = tmp_path / "state"
    for args in (("reports", "list"), ("reports", "summary"), ("reports", "show", "1"),
                 ("reports", "quarantine"), ("tlsrpt", "results"),
                 ("tlsrpt", "send", "--dry-run")):
        r = smtptls(*args, cwd=tmp_path, env={"SMTPTLS_STATE_DIR": str(state)})
        assert_operator_error(r, str(state))
    assert list(tmp_path.iterdir()) == []


def test_demo_writes_to_the_state_dir_not_the_current_directory(tmp_path):
    state = tmp_path / "state"
    work = tmp_path / "work"
    work.mkdir()
    r = smtptls("demo", cwd=work, env={"SMTPTLS_STATE_DIR": str(state)})
    assert r.returncode == 0, r.stderr
    assert (state / "smtptls.sqlite3").is_file() and list(work.iterdir()) == []


# --- every sub-command -------------------------------------------------------------------


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for action in subs:
        for name, child in action.choices.items():
            yield from _leaves(child, (*path, name))


COMMANDS = dict(_leaves(build_parser()))


def _bad_invocations(path: tuple[str, ...], parser: argparse.ArgumentParser,
                     tmp: Path) -> list[list[str]]:
    required = [a for a in parser._actions if not a.option_strings
                and a.nargs not in ("?", "*") and a.choices is None]
    positionals = ["/nonexistent/bad input!"] * len(required)
    options = parser._option_string_actions
    out = [[*path, *positionals, "--no-such-option"]]
    if "--config" in options:
        out.append([*path, *positionals, "--config", str(tmp / "missing.toml")])
        bad = tmp / "bad.toml"
        bad.write_text("[dns]\nport = 'x'\n")
        out.append([*path, *positionals, "--config", str(bad)])
    if "--db" in options:
        blocker = tmp / "a-file"
        blocker.write_text("")
        out.append([*path, *positionals, "--db", str(blocker / "x.sqlite3")])
    if "--nameserver" in options and "--timeout" in options:
        out.append([*path, *positionals, "--nameserver", "not-an-ip"])
    return out


def test_the_walk_covers_every_command():
    names = {" ".join(p) for p in COMMANDS}
    for expected in ("check", "mta-sts", "dane", "policyd", "policy-server", "demo",
                     "config check", "reports summary", "tlsrpt collect", "publish tlsrpt"):
        assert expected in names


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_every_subcommand_bad_inputs_are_one_line_exit_2(path, tmp_path):
    for argv in _bad_invocations(path, COMMANDS[path], tmp_path):
        r = smtptls(*argv, cwd=tmp_path, timeout=60)
        assert r.returncode == 2, (argv, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, (argv, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (argv, r.stderr)
    assert not (tmp_path / "var").exists()


# --- services say what they do when they start --------------------------------------------


def _stderr_until(proc: subprocess.Popen, marker: str, timeout: float = 30) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
    return seen


def _start(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "smtptls", *args], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=30)


def test_reports_serve_prints_its_urls_and_the_token_state(tmp_path):
    db = tmp_path / "reports.sqlite3"
    proc = _start("reports", "serve", "--listen", "127.0.0.1:0", "--smtp", "127.0.0.1:0",
                  "--db", str(db), "--no-dkim")
    try:
        seen = _stderr_until(proc, "stop with")
    finally:
        _stop(proc)
    assert str(db) in seen
    for what in ("report intake", "/v1/tlsrpt", "dashboard: http://127.0.0.1:",
                 "token not set", "metrics: http://127.0.0.1:", "/metrics",
                 "report mail intake (SMTP): 127.0.0.1:"):
        assert what in seen, seen
    assert ":0/" not in seen  # the bound ports, not the requested 0


def test_policy_server_logs_each_skipped_folder_and_why(tmp_path):
    (tmp_path / "nopolicy.example").mkdir()
    (tmp_path / "bad_name!").mkdir()
    good = tmp_path / "good.example"
    good.mkdir()
    (good / "mta-sts.txt").write_text("version: STSv1\nmode: testing\nmx: mx.good.example\n"
                                      "max_age: 86400\n")
    proc = _start("policy-server", "--dir", str(tmp_path), "--plain", "--listen",
                  "127.0.0.1:0")
    try:
        time.sleep(3)
    finally:
        _, err = _stop(proc)
    assert "nopolicy.example" in err and "no mta-sts.txt" in err, err
    assert "bad_name!" in err and "not a domain name" in err
    assert "good.example" not in err.replace("nopolicy.example", "")


def test_a_log_file_that_disappears_is_followed_when_it_comes_back(tmp_path):
    from smtptls.services.collector import LogFollower

    log = tmp_path / "mail.log"
    log.write_text("old\n")
    # poll_once reads lines without ingesting them; no quiet wait after a rotation
    follower = LogFollower(None, log, rotate_quiet=0)
    try:
        assert follower.poll_once() == []  # starts at the end, as collect does
        with log.open("a") as f:
            f.write("one\n")
        assert follower.poll_once() == ["one"]
        log.unlink()
        assert follower.poll_once() == []  # gone: nothing, and no error
        log.write_text("two\n")  # back (a new file): read from its start
        assert follower.poll_once() == ["two"]
    finally:
        if follower._file is not None:
            follower._file.close()
