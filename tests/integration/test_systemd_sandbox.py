"""The services run, and answer, under the units' ``MemoryDenyWriteExecute=yes``.

systemd enforces that option with a seccomp filter: no memory mapping may become both
writable and executable. Linux ≥ 6.3 offers the same rule to any process
(``prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN)``, inherited across fork and exec), so
each service is started here with the rule in force and the ``ExecStart`` arguments of
its unit (the binary, the config path and the listen addresses pointed at this test),
then asked one real question on loopback. The first test shows the rule is in force:
a cffi callback (what pyOpenSSL's verify callbacks need, and the services never use)
cannot be made under it.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.e2e.socketmap_client import socketmap_exchange

UNITS = ROOT / "contrib" / "systemd"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1  # include/uapi/linux/prctl.h (Linux 6.3)
MDWE = f"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_MDWE): " + os.strerror(ctypes.get_errno()))
os.execv(sys.argv[1], sys.argv[1:])
"""
START_TIMEOUT = 30.0


def _mdwe_supported() -> bool:
    done = subprocess.run([sys.executable, "-c", MDWE, "/bin/true"], capture_output=True,
                          timeout=30)
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not _mdwe_supported(),
                                reason="this kernel has no PR_SET_MDWE (Linux < 6.3)")


def _exe() -> str:
    exe = shutil.which("smtptls", path=str(Path(sys.executable).parent))
    assert exe, "the smtptls entry point is not installed beside this Python"
    return exe


def _unit_argv(name: str, config: Path, **replace: str) -> list[str]:
    """The unit's ExecStart, with this checkout's binary and ``config``; ``replace``
    maps an option (``--listen``) to the value used here."""
    text = (UNITS / name).read_text()
    line = re.search(r"^ExecStart=(.+)$", text, re.M).group(1)
    argv = shlex.split(line)
    out = [_exe()]
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            out += [arg, str(config)]
            i += 2
            continue
        if arg in replace:
            out += [arg, replace[arg]]
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def _start(argv: list[str], state: Path) -> subprocess.Popen:
    env = {**os.environ, "SMTPTLS_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", MDWE, *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for(proc: subprocess.Popen, pattern: str) -> re.Match[str]:
    """The first match of ``pattern`` in the service's output (stdout and stderr)."""
    seen = b""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + START_TIMEOUT
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            if not sel.select(left):
                continue
            chunk = os.read(fd, 65536)  # unbuffered: select() sees what is still unread
            if not chunk:
                break
            seen += chunk
            m = re.search(pattern, seen.decode("utf-8", "replace"))
            if m:
                return m
    proc.kill()
    raise AssertionError(f"no {pattern!r} in the service's output:\n"
                         f"{seen.decode('utf-8', 'replace')[-3000:]}")


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
    return proc.returncode


def test_the_rule_is_in_force_in_the_child():
    code = ("from cffi import FFI\n"
            "try:\n    FFI().callback('int(void)', lambda: 0)\n"
            "except MemoryError:\n    print('refused')\n")
    done = subprocess.run([sys.executable, "-c", MDWE, sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused", done.stderr


def _socketmap(address: tuple[str, int], query: str) -> str:
    with socket.create_connection(address, timeout=30) as s:
        data = socketmap_exchange(s, query.encode())
    length, _, rest = data.partition(b":")
    return rest[: int(length)].decode()


@pytest.mark.lab
def test_policyd_answers_under_the_sandbox_rule(lab, tmp_path):
    from tests.lab import LabDomain, LabMx, PolicyHost

    domain = f"mdwe-sts.{lab.ZONE_INSECURE}"
    lab.add(LabDomain(domain, mx=[LabMx(f"mx.{domain}")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]},
                      policy=PolicyHost(body=f"version: STSv1\nmode: enforce\nmx: mx.{domain}\n"
                                             "max_age: 86400\n")))
    host, port = lab.resolver
    config = tmp_path / "smtptls.toml"
    config.write_text(f'[dns]\nnameservers = ["{host}:{port}"]\ntimeout = 3.0\n'
                      f'[fetch]\nca_file = "{lab.ca_file}"\n')
    argv = _unit_argv("smtptls-policyd.service", config) + ["--listen", "127.0.0.1:0",
                                                              "--metrics", ""]
    proc = _start(argv, tmp_path)
    try:
        m = _wait_for(proc, r'"socketmap":\s*"127\.0\.0\.1:(\d+)"')
        answer = _socketmap(("127.0.0.1", int(m.group(1))), f"postfix {domain}")
    finally:
        code = _stop(proc)
    # the MTA-STS policy was fetched over HTTPS (aiohttp, ssl) and cached in SQLite
    assert answer == f"OK secure match=mx.{domain} servername=hostname"
    assert code == 0 and (tmp_path / "smtptls.sqlite3").is_file()


def _report_gzip() -> bytes:
    from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate
    from smtptls.tlsrptsend.outgoing import gzip_report
    from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

    result = SessionResult.success(datetime(2024, 5, 1, 10, tzinfo=UTC),
                                   AppliedPolicy.none_found("example.com"),
                                   mx_host="mx.example.com", receiving_ip="192.0.2.10",
                                   sending_mta_ip="198.51.100.25")
    (report,) = aggregate([result], date(2024, 5, 1),
                          ReportIdentity("Example", "tlsrpt@example.net", "example.net"))
    return gzip_report(report)


def _post(url: str, body: bytes, content_type: str) -> int:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=30) as resp:  # loopback only
        return resp.status


def test_reports_serve_stores_a_report_under_the_sandbox_rule(tmp_path):
    config = tmp_path / "smtptls.toml"
    config.write_text('[reports]\nlisten = "127.0.0.1:0"\n')
    proc = _start(_unit_argv("smtptls-reports.service", config), tmp_path)
    try:
        m = _wait_for(proc, r"(http://127\.0\.0\.1:\d+/v1/tlsrpt)")
        status = _post(m.group(1), _report_gzip(), "application/tlsrpt+gzip")
    finally:
        code = _stop(proc)
    assert (status, code) == (201, 0)
    assert (tmp_path / "smtptls-reports.sqlite3").is_file()


def test_tlsrpt_collect_stores_a_result_under_the_sandbox_rule(tmp_path):
    config = tmp_path / "smtptls.toml"
    config.write_text('[tlsrpt]\nhttp_listen = "127.0.0.1:0"\nlog_files = []\n'
                      'policy_source = "none"\nsubmitter = "example.net"\n')
    proc = _start(_unit_argv("smtptls-tlsrpt-collect.service", config), tmp_path)
    result = {"time": "2024-05-01T10:00:00Z",
              "policy": {"policy-type": "no-policy-found", "policy-domain": "example.com"},
              "receiving-mx-hostname": "mx.example.com", "receiving-ip": "192.0.2.10",
              "sending-mta-ip": "198.51.100.7", "failures": []}
    try:
        m = _wait_for(proc, r"(http://127\.0\.0\.1:\d+/v1/results)")
        status = _post(m.group(1), json.dumps(result).encode(), "application/json")
    finally:
        code = _stop(proc)
    assert (status, code) == (200, 0)
    assert (tmp_path / "smtptls-tlsrpt.sqlite3").is_file()


def test_policy_server_serves_a_policy_under_the_sandbox_rule(tmp_path):
    policies = tmp_path / "mta-sts"
    (policies / "example.com").mkdir(parents=True)
    body = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n"
    (policies / "example.com" / "mta-sts.txt").write_text(body)
    argv = _unit_argv("smtptls-policy-server.service", tmp_path / "unused.toml",
                      **{"--listen": "127.0.0.1:0"})
    argv = [a.replace("${SMTPTLS_POLICY_DIR}", str(policies)) for a in argv] + ["--plain"]
    proc = _start(argv, tmp_path)
    try:
        m = _wait_for(proc, r'"address":\s*"127\.0\.0\.1:(\d+)"')
        req = urllib.request.Request(f"http://127.0.0.1:{m.group(1)}/.well-known/mta-sts.txt",
                                     headers={"Host": "mta-sts.example.com"})
        with urllib.request.urlopen(req, timeout=30) as resp:  # loopback only
            got = (resp.status, resp.read().decode())
    finally:
        code = _stop(proc)
    assert got == (200, body) and code == 0
