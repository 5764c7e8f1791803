"""The systemd units in contrib/systemd: one per long-running service plus the send timer,
sandboxed, pointing at the fixed config and state places, and accepted by systemd itself.

``systemd-analyze verify`` checks each unit as systemd would load it (unknown keys, bad
values, missing executables, the timer's service). The only change made to a unit before
the check is its ``ExecStart`` binary: ``/usr/local/bin/smtptls`` (where docs/install.md
links the installed command) becomes this checkout's ``smtptls`` entry point, so the check
needs nothing installed in /usr/local. ``systemd-analyze security --offline`` then scores
the sandbox of each service.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smtptls import paths
from smtptls.cli.main import build_parser
from tests.conftest import ROOT

UNITS = ROOT / "contrib" / "systemd"
BINARY = "/usr/local/bin/smtptls"
#: every long-running service of the CLI -> its unit (docs/install.md lists the same)
SERVICES = {
    "policyd": "smtptls-policyd.service",
    "reports serve": "smtptls-reports.service",
    "tlsrpt collect": "smtptls-tlsrpt-collect.service",
    "policy-server": "smtptls-policy-server.service",
}
TIMER = "smtptls-tlsrpt-send.timer"
ONESHOT = "smtptls-tlsrpt-send.service"
#: the only unit that binds a port below 1024 (MTA-STS is fetched from 443, RFC 8461 §3.3)
PRIVILEGED_PORT_UNITS = {"smtptls-policy-server.service"}
#: systemd-analyze security's exposure scale is 0 (locked down) .. 10; 'OK' is below 4
MAX_EXPOSURE = 3.0
SANDBOX = {
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "StateDirectory": None,  # checked below: includes smtptls
    "ConfigurationDirectory": "smtptls",
    "CapabilityBoundingSet": None,
}
ANALYZE = shutil.which("systemd-analyze")
NO_ANALYZE = ("systemd-analyze not found: install Debian's systemd package "
              "(scripts/install-system.sh does)")


def _read(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def _service_units() -> list[str]:
    return [*SERVICES.values(), ONESHOT]


def _exec_argv(unit: configparser.RawConfigParser) -> list[str]:
    argv = shlex.split(unit["Service"]["ExecStart"])
    env = dict(item.split("=", 1) for line in
               unit["Service"].get("Environment", "").splitlines() for item in shlex.split(line))
    env = {k: v.replace("%S", "/var/lib") for k, v in env.items()}
    return [env.get(a[2:-1], a) if a.startswith("${") else a for a in argv]


def test_every_long_running_service_has_a_unit_and_the_sender_a_timer():
    present = {p.name for p in UNITS.iterdir()}
    assert set(SERVICES.values()) | {TIMER, ONESHOT} <= present
    assert not list((ROOT / "contrib").glob("*.service")), "units live in contrib/systemd/"
    timer = _read(TIMER)
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "yes"
    assert _read(ONESHOT)["Service"]["Type"] == "oneshot"


@pytest.mark.parametrize("command, name", [*SERVICES.items(), ("tlsrpt send", ONESHOT)])
def test_unit_runs_that_command_with_arguments_the_cli_accepts(command, name):
    argv = _exec_argv(_read(name))
    assert argv[0] == BINARY
    args = build_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown option
    assert " ".join(argv[1:]).find(command) >= 0
    if hasattr(args, "config"):
        assert args.config == str(paths.SYSTEM_CONFIG)


@pytest.mark.parametrize("name", _service_units())
def test_unit_is_sandboxed_with_fixed_config_and_state(name):
    service = _read(name)["Service"]
    for key, value in SANDBOX.items():
        assert key in service, f"{name}: {key} missing"
        if value is not None:
            assert service[key] == value, f"{name}: {key}={service[key]}"
    assert "smtptls" in service["StateDirectory"].split()
    assert service["User"] == "smtptls" or service.get("DynamicUser") == "yes"
    env = service["Environment"]
    assert f"{paths.STATE_ENV}=%S/smtptls" in env
    assert f"{paths.CONFIG_ENV}={paths.SYSTEM_CONFIG}" in env
    caps = service["CapabilityBoundingSet"].split()
    if name in PRIVILEGED_PORT_UNITS:
        assert caps == ["CAP_NET_BIND_SERVICE"]
        assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
        port = int(_exec_argv(_read(name))[-1].rsplit(":", 1)[1])
        assert port < 1024
    else:
        assert caps == [] and "AmbientCapabilities" not in service


def test_sockets_go_to_the_runtime_directory():
    for name in ("smtptls-policyd.service", "smtptls-tlsrpt-collect.service"):
        service = _read(name)["Service"]
        assert service["RuntimeDirectory"] == "smtptls"
        # two units share /run/smtptls: stopping one must not delete the other's socket
        assert service["RuntimeDirectoryPreserve"] == "yes"


def _checkable_copies(tmp_path: Path) -> list[Path]:
    exe = shutil.which("smtptls", path=str(Path(sys.executable).parent))
    assert exe, "the smtptls entry point is not installed beside this Python"
    out = []
    for unit in sorted(UNITS.glob("*.service")) + sorted(UNITS.glob("*.timer")):
        text = unit.read_text()
        copy = tmp_path / unit.name
        copy.write_text(text.replace(BINARY, exe))
        out.append(copy)
    return out


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
def test_systemd_analyze_verify_accepts_every_unit(tmp_path):
    units = _checkable_copies(tmp_path)
    done = subprocess.run([ANALYZE, "verify", "--man=no", *map(str, units)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr.strip()) == (0, "")


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    # the check above is not vacuous: a misspelled sandbox key is reported
    (unit,) = [u for u in _checkable_copies(tmp_path) if u.name == "smtptls-policyd.service"]
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    done = subprocess.run([ANALYZE, "verify", "--man=no", str(unit)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "ProtectSytem" in done.stderr


@pytest.mark.skipif(ANALYZE is None, reason=NO_ANALYZE)
@pytest.mark.parametrize("name", _service_units())
def test_systemd_analyze_security_exposure_is_low(tmp_path, name):
    (unit,) = [u for u in _checkable_copies(tmp_path) if u.name == name]
    done = subprocess.run([ANALYZE, "security", "--offline=yes", "--no-pager",
                           f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Overall exposure level" in done.stdout


SYSUSERS = shutil.which("systemd-sysusers")


@pytest.mark.skipif(SYSUSERS is None, reason=NO_ANALYZE.replace("systemd-analyze",
                                                                "systemd-sysusers"))
def test_sysusers_file_creates_the_service_user(tmp_path):
    # applied to an empty root: only tmp_path/etc is written, never the machine's /etc
    (tmp_path / "etc").mkdir()
    for name in ("passwd", "group"):
        (tmp_path / "etc" / name).write_text("")
    done = subprocess.run([SYSUSERS, f"--root={tmp_path}",
                           str(UNITS / "smtptls.sysusers.conf")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    users = {line.split(":")[0]: line.split(":") for line in
             (tmp_path / "etc" / "passwd").read_text().splitlines()}
    user = users["smtptls"]
    assert user[5] == str(paths.SYSTEM_STATE_DIR) and user[6].endswith("nologin")
    assert 0 < int(user[2]) < 1000  # a system user
    assert "smtptls:" in (tmp_path / "etc" / "group").read_text()
