"""A private sending Exim 4.96 (Debian bookworm's ``exim4-daemon-heavy``) for the lab.

Debian's MTAs conflict with each other (every one ``Provides`` and ``Conflicts``
``mail-transport-agent``): installing exim4 on the machine would remove the Postfix the
rest of the lab uses. Exim therefore comes, like the Postfix 3.10 of postfix310.py, from
a root file system built from Debian packages only and cached outside the repository:
``mmdebstrap`` of bookworm with ``exim4-daemon-heavy`` and ``ca-certificates``, into
``/var/cache/smtptls-lab/bookworm-exim-<stamp>``. mmdebstrap keeps package scripts from
starting services (its own ``policy-rc.d``); the tree's ``/etc/exim4`` is never read,
because the instance runs with ``-C <config>``.

The instance runs in a private mount namespace (``unshare --mount`` + mountns.py
``--root``): the lab's resolv.conf over the tree's /etc/resolv.conf (Unbound with
``trust-ad``, which Exim's ``dnssec_request_domains`` needs), the machine's /tmp (this
instance's config, spool, logs and the lab CA) at /tmp inside the tree. Exim's daemon
listens on ``127.N.0.11:25`` and binds its outgoing SMTP there too.

Interface like postfix.Postfix: ``submit``, ``wait_delivery``, ``deliveries``,
``log``/``log_tail``, ``flush``, ``stop``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import daemons, debroot, runtime
from .model import LabError
from .tools import TOOL_TIMEOUT, run_tool, smtp_submit

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["EximDelivery", "EximRoot", "Exim", "ensure_root", "parse_deliveries"]

SUITE = "bookworm"
PACKAGES = ("exim4-daemon-heavy", "ca-certificates")
FORMAT = 3  # raise when the build below changes in a way the stamp does not see
STAMP_FILE = ".smtptls-lab-root.json"
# No debconf questions; "no configuration" keeps exim4-config from writing a site config
# (the lab's instance reads only its own -C file).
_PRESEED = "exim4-config exim4/dc_eximconfig_configtype select no configuration at this time"
_OPTIONS = ("--variant=minbase", "--mode=root", "--format=directory",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*")
BUILD_TIMEOUT = 900.0
START_TIMEOUT = 20.0
MAX_LOG = 64 * 1024 * 1024
TREE_TMP = "/tmp"  # noqa: S108 - the lab's runtime directories live under it (runtime.py)
#: Where the instance's configuration is inside its namespace (bind-mounted there).
TREE_CONFIG = "/etc/exim4/smtptls-lab.conf"


# --- the root file system -----------------------------------------------------------------

def stamp() -> str:
    key = json.dumps([FORMAT, SUITE, sorted(PACKAGES), _PRESEED, _OPTIONS])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def root_path() -> Path:
    return debroot.CACHE / f"{SUITE}-exim-{stamp()}"


@dataclass(frozen=True, slots=True)
class EximRoot:
    path: Path
    exim_version: str          # Debian version of exim4-daemon-heavy, e.g. 4.96-15+deb12u11
    download_bytes: int
    build_seconds: float

    def passwd(self, user: str) -> tuple[int, int]:
        for line in (self.path / "etc/passwd").read_text().splitlines():
            f = line.split(":")
            if len(f) >= 4 and f[0] == user:
                return int(f[2]), int(f[3])
        raise LabError(f"no user {user} in {self.path}/etc/passwd")


def _load(path: Path) -> EximRoot | None:
    try:
        data = json.loads((path / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return EximRoot(path=path, exim_version=data["exim4-daemon-heavy"],
                    download_bytes=int(data["download_bytes"]),
                    build_seconds=float(data["build_seconds"]))


def _build(target: Path, log: Path) -> tuple[int, float]:
    size_file = ".smtptls-lab-download-bytes"
    argv = [debroot._tool("mmdebstrap"), *_OPTIONS, f"--keyring={debroot.KEYRING}",
            f"--include={','.join(PACKAGES)}",
            f"--essential-hook=echo '{_PRESEED}' | chroot \"$1\" debconf-set-selections",
            "--skip=essential/unlink",
            f"--customize-hook=du -cb \"$1\"/var/cache/apt/archives/*.deb | tail -1"
            f" > \"$1\"/{size_file}",
            SUITE, str(target), debroot.MIRROR]
    t0 = time.monotonic()
    with open(log, "wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              timeout=BUILD_TIMEOUT, check=False)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise LabError(f"mmdebstrap failed ({done.returncode}):\n" + "\n".join(tail))
    size = int((target / size_file).read_text().split()[0])
    (target / size_file).unlink()
    for p in (target / "var/cache/apt/archives").glob("*.deb"):
        p.unlink()
    (target / "etc/resolv.conf").unlink(missing_ok=True)
    (target / "etc/resolv.conf").touch()
    # Exim keeps root privilege with -C only for files in TRUSTED_CONFIG_LIST (Debian:
    # /etc/exim4/trusted_configs, root-owned, not writable by others; Exim reads at
    # most 32 names from it): one fixed name, over which each lab's namespace
    # bind-mounts that lab's configuration
    (target / TREE_CONFIG.lstrip("/")).touch()
    trusted = target / "etc/exim4/trusted_configs"
    trusted.write_text(f"{TREE_CONFIG}\n")
    trusted.chmod(0o644)
    return size, seconds


def ensure_root() -> EximRoot:
    """The cached bookworm tree with Exim, built first if missing (one builder at a time)."""
    path = root_path()
    found = _load(path)
    if found is not None:
        return found
    debroot.CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(debroot.CACHE / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        found = _load(path)
        if found is not None:
            return found
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        size, seconds = _build(partial, debroot.CACHE / f"{path.name}.build.log")
        meta = {"exim4-daemon-heavy": debroot._dpkg_version(partial, "exim4-daemon-heavy"),
                "download_bytes": size, "build_seconds": round(seconds, 1),
                "suite": SUITE, "packages": list(PACKAGES), "mirror": debroot.MIRROR}
        (partial / STAMP_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        partial.rename(path)
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    found = _load(path)
    if found is None:
        raise LabError(f"{path} has no {STAMP_FILE} after building")
    return found


def config_path(lab_dir: Path) -> Path:
    """Where a lab's Exim configuration lives on the machine (seen by Exim as
    ``TREE_CONFIG``, the name the tree's trusted_configs lists)."""
    return lab_dir / "exim" / "exim.conf"


# --- the instance -------------------------------------------------------------------------

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "exim"
CONTRIB_FILES = ("smtptls-macros.conf", "smtptls-acl.conf", "smtptls-routers.conf",
                 "smtptls-transports.conf")
LOG_SELECTOR = ("+tls_peerdn +tls_certificate_verified +tls_sni +outgoing_interface "
                "+outgoing_port +dnssec +smtp_confirmation +deliver_time "
                "+received_recipients")

MAIN = """\
# the lab's sending Exim (tests/lab/exim.py); the smtptls parts are contrib/exim/ as is
primary_hostname = exim.lab.test
domainlist local_domains = exim.lab.test
{macros}
.include {dir}/contrib/smtptls-macros.conf
spool_directory = {dir}/spool
log_file_path = {dir}/log/%slog
daemon_smtp_ports = 25
local_interfaces = <; {address}
acl_smtp_rcpt = lab_rcpt
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
keep_environment = {mark}
log_selector = {log_selector}
dns_dnssec_ok = 1
ignore_bounce_errors_after = 0s
timeout_frozen_after = 1m
{main_extra}

begin acl
lab_rcpt:
  accept hosts = 127.0.0.0/8
  deny   message = relay not permitted
.include {dir}/contrib/smtptls-acl.conf

begin routers
{routers}
dnslookup:
  driver = dnslookup
  domains = ! +local_domains
  transport = remote_smtp
  no_more

begin transports
{transports}
remote_smtp:
  driver = smtp
  interface = {address}

begin retry
*  *  F,1h,2s
"""

# 2026-12-02 03:49:20 1tAbcD-000123-Ef => a@b.test R=r T=t H=mx [1.2.3.4] X=... C="250 ok"
_LINE = re.compile(
    r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?P<mid>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}"
    r"-[0-9A-Za-z]{2,4}) (?P<flag>=>|->|\*>|==|\*\*) (?P<rcpt>\S+)(?: <[^>]*>)? (?P<rest>.*)$")
_FIELD = re.compile(r'(?:^| )(?P<k>[A-Za-z]+)=(?P<v>"(?:[^"\\]|\\.)*"|\[[^\]]*\](?::\d+)?|\S+)')
_HOST = re.compile(r"H=(?P<name>\S+)(?: DS)? \[(?P<addr>[^\]]+)\]")
_ID = re.compile(r"id=([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})")
_STATUS = {"=>": "delivered", "->": "delivered", "*>": "delivered", "==": "deferred",
           "**": "failed"}


@dataclass(frozen=True, slots=True)
class EximDelivery:
    """One delivery line of Exim's main log (``=>`` delivered, ``==`` deferred, ``**``
    failed) with its fields: ``R`` router, ``T`` transport, ``X`` TLS cipher, ``CV``
    certificate verified (yes/no/dane), ``SNI``, ``DN``, ``C`` confirmation."""

    message_id: str
    recipient: str
    status: str
    host: str | None
    address: str | None
    fields: dict[str, str]
    detail: str
    line: str

    @property
    def router(self) -> str | None:
        return self.fields.get("R")

    @property
    def tls(self) -> str | None:
        return self.fields.get("X")

    @property
    def verified(self) -> str | None:
        return self.fields.get("CV")


def parse_deliveries(log: str, message_id: str | None = None) -> list[EximDelivery]:
    """Delivery outcomes in an Exim main log, oldest first."""
    out = []
    for line in log.splitlines():
        m = _LINE.match(line)
        if m is None or (message_id is not None and m["mid"] != message_id):
            continue
        rest = m["rest"]
        fields = {}
        for f in _FIELD.finditer(rest):
            v = f["v"]
            fields.setdefault(f["k"], v[1:-1] if v.startswith('"') else v)
        h = _HOST.search(rest)
        detail = rest.split(": ", 1)[1] if ": " in rest else ""
        out.append(EximDelivery(m["mid"], m["rcpt"], _STATUS[m["flag"]],
                                h["name"] if h else None, h["addr"] if h else None,
                                fields, detail, line))
    return out


class Exim:
    """One running sending Exim (start with ``lab.exim(...)``).

    ``policyd``: where smtptls policyd listens (``inet:127.0.0.1:PORT``; None: the
    smtptls routers are left out, Exim's defaults only); ``macros``: more macro
    definitions (``SMTPTLS_TIMEOUT``...), ``main``: more main-section lines.
    """

    version = "4.96"
    dir_name = "exim"

    def __init__(self, lab: Lab, *, policyd: str | None = None,
                 macros: Mapping[str, str] | None = None, main: str = "") -> None:
        self.lab = lab
        self.root = ensure_root()
        self.policyd = policyd
        self.macros = dict(macros or {})
        self.main_extra = main
        self.dir = lab.dir / self.dir_name
        self.config_file = config_path(lab.dir)
        self.spool_dir = self.dir / "spool"
        self.log_dir = self.dir / "log"
        self.log_file = self.log_dir / "mainlog"
        self.address = lab.exim_address
        self.daemon: daemons.Daemon | None = None

    @property
    def package_version(self) -> str:
        return self.root.exim_version

    # --- configuration ------------------------------------------------------------------

    def config_text(self) -> str:
        macros = {"SMTPTLS_CAFILE": str(self.lab.ca_file),
                  "SMTPTLS_INTERFACE": self.address, **self.macros}
        if self.policyd is not None:
            macros["SMTPTLS_SOCKET"] = self.policyd
        with_policy = self.policyd is not None
        inc = f".include {self.dir}/contrib/"
        return MAIN.format(
            macros="\n".join(f"{k} = {v}" for k, v in macros.items()),
            dir=self.dir, address=self.address, mark=runtime.ENV_MARK,
            log_selector=LOG_SELECTOR, main_extra=self.main_extra,
            routers=inc + "smtptls-routers.conf" if with_policy else "",
            transports=inc + "smtptls-transports.conf" if with_policy else "")

    def _write_config(self) -> None:
        uid, gid = self.root.passwd("Debian-exim")
        for d in (self.dir, self.dir / "contrib", self.spool_dir, self.log_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        for d in (self.spool_dir, self.log_dir):
            os.chown(d, uid, gid)
            d.chmod(0o750)
        for name in CONTRIB_FILES:  # as shipped: the test runs what operators install
            (self.dir / "contrib" / name).write_bytes((CONTRIB / name).read_bytes())
            (self.dir / "contrib" / name).chmod(0o644)
        self.config_file.write_text(self.config_text())
        self.config_file.chmod(0o644)

    # --- life cycle ---------------------------------------------------------------------

    def _ns(self, *args: str) -> list[str]:
        """argv running the tree's exim4 with this config in the lab's namespace."""
        return [daemons.tool("unshare"), "--mount", "--propagation", "private", "--",
                sys.executable, str(Path(__file__).with_name("mountns.py")),
                str(self.lab.resolv_conf), "--root", str(self.root.path),
                "--bind", TREE_TMP, "--bind", f"{self.config_file}={TREE_CONFIG}", "--",
                "/usr/sbin/exim4", "-C", TREE_CONFIG, *args]

    @property
    def running(self) -> bool:
        return self.daemon is not None and self.daemon.alive()

    def check_config(self) -> str:
        """``exim -bV`` with this configuration (raises LabError when Exim rejects it)."""
        self._write_config()
        return self._run(self._ns("-bV"), "-bV")

    def start(self) -> Exim:
        if self.running:
            return self
        self._write_config()
        self.log_file.touch()
        uid, gid = self.root.passwd("Debian-exim")
        os.chown(self.log_file, uid, gid)
        # -bdf: daemon in the foreground (a child of the lab), -q1s: queue runs
        self.daemon = daemons.spawn("exim", self._ns("-bdf", "-q1s"), self.dir / "exim.out",
                                    self.lab.dir)
        self.lab._write_state(exim_pid=self.daemon.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.daemon.alive():
                raise LabError(f"exim exited ({self.daemon.proc.returncode}):\n"
                               f"{self.daemon.tail()}\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.address, 25), 1) as s:
                if s.recv(512).startswith(b"220"):
                    break
            if time.monotonic() > deadline:
                raise LabError(f"exim on {self.address}:25 not answering:\n"
                               f"{self.daemon.tail()}\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.daemon is None:
            return
        self.daemon.stop()
        # delivery processes Exim forked carry the lab mark (keep_environment)
        pids = [p for p in runtime.find_lab_processes(self.lab.dir) if _is_exim(p)]
        runtime.kill_pids(pids)

    def _run(self, argv: list[str], what: str, stdin: bytes | None = None) -> str:
        return run_tool(argv, f"exim {what}", stdin)

    # --- submission ---------------------------------------------------------------------

    def submit(self, sender: str, recipients: str | Iterable[str], data: bytes | str) -> str:
        """Send a message to the instance over SMTP; returns its Exim message ID."""
        return smtp_submit(self.address, sender, recipients, data, mta="exim",
                           queue_id=_ID)

    def flush(self) -> None:
        """A queue run that tries every message now, retry times ignored (``-qff``)."""
        self._run(self._ns("-qff"), "-qff")

    def remove(self, *message_ids: str) -> None:
        """Drop messages from the queue (``-Mrm``): a deferred one is not retried.
        A message being delivered is locked: tried again until the attempt is over."""
        deadline = time.monotonic() + TOOL_TIMEOUT
        for mid in message_ids:
            while True:
                out = subprocess.run(self._ns("-Mrm", mid), capture_output=True,
                                     timeout=TOOL_TIMEOUT, check=False)
                text = (out.stdout + out.stderr).decode(errors="replace")
                if out.returncode == 0 or "does not exist" in text:
                    break
                if "is locked" not in text or time.monotonic() > deadline:
                    raise LabError(f"exim -Mrm {mid} failed ({out.returncode}): {text.strip()}")
                time.sleep(0.1)

    def queue(self) -> str:
        """``exim -bp`` (the queue listing)."""
        return self._run(self._ns("-bp"), "-bp")

    # --- the log ------------------------------------------------------------------------

    def log(self) -> str:
        with open(self.log_file, "rb") as fh:
            return fh.read(MAX_LOG).decode(errors="replace")

    def panic_log(self) -> str:
        """Exim's panic log ("" when there is none: nothing went wrong)."""
        try:
            with open(self.log_dir / "paniclog", "rb") as fh:
                return fh.read(MAX_LOG).decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log().splitlines()[-lines:])
        except OSError:
            return ""

    def deliveries(self, message_id: str | None = None) -> list[EximDelivery]:
        return parse_deliveries(self.log(), message_id)

    def wait_delivery(self, message_id: str, timeout: float = 30.0,
                      statuses: Iterable[str] = ("delivered", "deferred", "failed"),
                      ) -> EximDelivery:
        """The first delivery line for ``message_id`` whose status is in ``statuses``."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            for d in self.deliveries(message_id):
                if d.status in wanted:
                    return d
            if time.monotonic() > deadline:
                raise LabError(f"no {sorted(wanted)} for {message_id} after {timeout}s:\n"
                               f"{self.log_tail()}")
            time.sleep(0.1)

    def log_lines(self, message_id: str) -> list[str]:
        """Every main-log line of one message (the smtptls lookup notes included)."""
        return [line for line in self.log().splitlines() if f" {message_id} " in line]


def _is_exim(pid: int) -> bool:
    try:
        exe = Path(f"/proc/{pid}/exe").resolve()
    except OSError:
        return False
    return "exim" in exe.name
