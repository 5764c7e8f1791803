"""Where a lab lives: its loopback /16, its runtime directory, its lock and state file.

Address plan inside ``127.N.0.0/16`` (N from ``SMTPTLS_LAB_NET``, else a free one among
100..250):

    127.N.0.1    NSD (authoritative for test. and the zones below it), port 53
    127.N.0.2    Unbound (validating resolver), port 53
    127.N.0.3    HTTPS policy hosts (every mta-sts.<domain>), port 443
    127.N.0.4    nothing listens (policy hosts with reachable=False)
    127.N.0.9    the sending Postfix's smtpd, port 25
    127.N.0.10   the sending Postfix 3.10's smtpd, port 25 (postfix310.py)
    127.N.0.11   the sending Exim 4.96, port 25 (exim.py)
    127.N.1.1..  STARTTLS receivers, one address per MX host, in order of first use

A lab holds ``/tmp/smtptls-lab-N.lock`` (flock) for its lifetime, so a free lock with a
directory beside it means a lab whose owner died: its processes (found by the
``SMTPTLS_LAB_DIR`` variable every lab process carries) are ended and the directory
removed before the number is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from .model import LabError

__all__ = ["ENV_MARK", "LabNet", "acquire_net", "find_lab_processes", "reap_stale",
           "read_state", "write_state"]

TMP = Path("/tmp")  # noqa: S108 - a fixed, documented place for lab runtimes
PREFIX = "smtptls-lab-"
ENV_NET = "SMTPTLS_LAB_NET"
ENV_MARK = "SMTPTLS_LAB_DIR"
NET_RANGE = range(100, 251)
MAX_MX = 250 * 254


@dataclass(frozen=True, slots=True)
class LabNet:
    """One lab's /16 and runtime directory."""

    n: int
    lock_fd: int
    dir: Path

    def ip(self, third: int, fourth: int) -> str:
        return f"127.{self.n}.{third}.{fourth}"

    @property
    def nsd(self) -> str:
        return self.ip(0, 1)

    @property
    def resolver(self) -> str:
        return self.ip(0, 2)

    @property
    def policy(self) -> str:
        return self.ip(0, 3)

    @property
    def unreachable(self) -> str:
        return self.ip(0, 4)

    @property
    def postfix(self) -> str:
        return self.ip(0, 9)

    @property
    def postfix310(self) -> str:
        return self.ip(0, 10)

    @property
    def exim(self) -> str:
        return self.ip(0, 11)

    def mx(self, index: int) -> str:
        if not 0 <= index < MAX_MX:
            raise LabError(f"out of MX addresses ({MAX_MX} per lab)")
        return self.ip(1 + index // 254, 1 + index % 254)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)


def lock_path(n: int) -> Path:
    return TMP / f"{PREFIX}{n}.lock"


def lab_dir(n: int) -> Path:
    return TMP / f"{PREFIX}{n}"


def _try_lock(n: int) -> int | None:
    fd = os.open(lock_path(n), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _ports_free(n: int) -> bool:
    checks = [(socket.SOCK_DGRAM, f"127.{n}.0.1", 53), (socket.SOCK_STREAM, f"127.{n}.0.1", 53),
              (socket.SOCK_DGRAM, f"127.{n}.0.2", 53), (socket.SOCK_STREAM, f"127.{n}.0.2", 53),
              (socket.SOCK_STREAM, f"127.{n}.0.3", 443), (socket.SOCK_STREAM, f"127.{n}.0.9", 25),
              (socket.SOCK_STREAM, f"127.{n}.1.1", 25)]
    for kind, addr, port in checks:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def acquire_net(requested: int | None = None) -> LabNet:
    """Lock a free /16 (``requested``, ``$SMTPTLS_LAB_NET`` or a random free one)."""
    if requested is None and os.environ.get(ENV_NET):
        try:
            requested = int(os.environ[ENV_NET])
        except ValueError as exc:
            raise LabError(f"{ENV_NET} must be a number in 1..254") from exc
    candidates = [requested] if requested is not None else random.sample(NET_RANGE, len(NET_RANGE))
    for n in candidates:
        if not 1 <= n <= 254:
            raise LabError(f"lab network number out of range: {n}")
        fd = _try_lock(n)
        if fd is None:
            continue
        if lab_dir(n).exists():
            reap_stale(n)
        if not _ports_free(n):
            os.close(fd)
            continue
        d = lab_dir(n)
        d.mkdir(mode=0o755)
        d.chmod(0o755)  # Postfix's unprivileged daemons must traverse it
        return LabNet(n, fd, d)
    what = f"127.{requested}.0.0/16" if requested is not None else "any of 127.100-250.0.0/16"
    raise LabError(f"no free lab network: {what} is in use")


def find_lab_processes(directory: Path) -> list[int]:
    """PIDs whose environment carries ``SMTPTLS_LAB_DIR=<directory>``."""
    mark = b"\0" + f"{ENV_MARK}={directory}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if mark in b"\0" + env + b"\0":
            found.append(int(entry.name))
    return found


def kill_pids(pids: list[int], timeout: float = 3.0) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if Path(f"/proc/{p}").exists() and not _zombie(p)]
        time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def reap_stale(n: int) -> None:
    """End what a dead lab on ``n`` left behind and remove its directory (lock held)."""
    d = lab_dir(n)
    state = read_state(d)
    umount = state.get("netns") if state else None
    kill_pids(find_lab_processes(d))
    if umount:
        with contextlib.suppress(OSError):
            shutil.rmtree(Path("/etc/netns") / umount)
    shutil.rmtree(d, ignore_errors=True)


def reap_all_stale() -> list[int]:
    """Clean every lab directory whose lock is free; returns the numbers cleaned."""
    cleaned = []
    for lock in TMP.glob(f"{PREFIX}*.lock"):
        try:
            n = int(lock.stem[len(PREFIX):])
        except ValueError:
            continue
        fd = _try_lock(n)
        if fd is None:
            continue
        try:
            if lab_dir(n).exists():
                reap_stale(n)
                cleaned.append(n)
            # The lock file stays: unlinking it could let two labs lock two inodes
            # under one name.
        finally:
            os.close(fd)
    return cleaned


def write_state(directory: Path, state: dict) -> None:
    tmp = directory / "state.json.tmp"
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(directory / "state.json")


def read_state(directory: Path) -> dict | None:
    try:
        return json.loads((directory / "state.json").read_text())
    except (OSError, ValueError):
        return None


def running_labs() -> list[dict]:
    """State of every lab whose owner still holds its lock."""
    labs = []
    for d in sorted(TMP.glob(f"{PREFIX}*")):
        if not d.is_dir():
            continue
        state = read_state(d)
        if state and _pid_alive(state.get("owner_pid", -1)):
            labs.append(state)
    return labs


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    return Path(f"/proc/{pid}").exists() and not _zombie(pid)
