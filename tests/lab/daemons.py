"""The lab's daemons: NSD (authoritative), Unbound (validating resolver), and the
bookkeeping that makes sure only processes the lab started are ever stopped.

Every daemon runs in the foreground (``nsd -d``, ``unbound -d``, ``postfix start-fg``)
as a child in its own session, so the lab knows its PID and can end its whole process
group; nothing is ever looked up or killed by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from .model import LabError

__all__ = ["Daemon", "Nsd", "Unbound", "control", "spawn", "tool", "wait_dns"]

CONTROL_TIMEOUT = 10.0
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def tool(name: str) -> str:
    """Absolute path of a system tool (sbin included even when PATH lacks it)."""
    path = os.environ.get("PATH", "") + ":" + TOOL_PATH
    found = shutil.which(name, path=path)
    if found is None:
        raise LabError(f"{name} not found (install the lab packages: scripts/install-system.sh)")
    return found


@dataclass
class Daemon:
    """A child process the lab started (its own process group)."""

    name: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout)
        # Children that outlived their leader (same process group) end too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(name: str, argv: Sequence[str], log: Path, cwd: Path,
          env: dict[str, str] | None = None) -> Daemon:
    """Start ``argv`` in its own session, marked with ``SMTPTLS_LAB_DIR=<lab dir>``."""
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env.setdefault("SMTPTLS_LAB_DIR", str(cwd))
    fh = open(log, "ab")  # noqa: SIM115 - the child keeps it; closed after Popen
    try:
        proc = subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True,
                                env=child_env)
    finally:
        fh.close()
    return Daemon(name, proc, log)


def run_tool(argv: Sequence[str], what: str, timeout: float = CONTROL_TIMEOUT) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                         check=False)
    if out.returncode != 0:
        raise LabError(f"{what} failed ({out.returncode}): {out.stderr.strip() or out.stdout}")
    return out.stdout


def control(sock_path: Path, magic: bytes, command: str, timeout: float = CONTROL_TIMEOUT) -> str:
    """One command over an NSD/Unbound unix control socket (``NSDCT1``/``UBCT1`` header).

    Both daemons accept a plain-text command line after the magic when the control
    interface is a local socket (no TLS); the reply is read until the daemon closes.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(sock_path))
        s.sendall(magic + b" " + command.encode() + b"\n")
        chunks, total = [], 0
        while total < 1 << 20:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            total += len(data)
    reply = b"".join(chunks).decode(errors="replace")
    if reply.startswith("error"):
        raise LabError(f"{command!r}: {reply.strip()}")
    return reply


def query(server: str, name: str, rdtype: str = "A", *, dnssec: bool = True,
          timeout: float = 2.0) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, want_dnssec=dnssec)
    q.flags |= dns.flags.AD | dns.flags.RD
    return dns.query.udp(q, server, timeout=timeout, port=53)


def wait_dns(server: str, name: str, daemon: Daemon, *, deadline: float,
             serial: int | None = None, want_ad: bool = False) -> None:
    """Poll ``server`` until it answers the SOA of ``name`` (with ``serial``, AD)."""
    last = "no answer"
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise LabError(f"{daemon.name} exited ({daemon.proc.returncode}):\n{daemon.tail()}")
        try:
            r = query(server, name, "SOA", timeout=0.5)
        except (OSError, dns.exception.Timeout) as exc:
            last = repr(exc)
        else:
            ok = r.rcode() == dns.rcode.NOERROR and r.answer
            if ok and serial is not None:
                soa = [rr for rrs in r.answer if rrs.rdtype == dns.rdatatype.SOA for rr in rrs]
                ok = bool(soa) and soa[0].serial == serial
            if ok and want_ad:
                ok = bool(r.flags & dns.flags.AD)
            if ok:
                return
            last = f"rcode {dns.rcode.to_text(r.rcode())}, flags {dns.flags.to_text(r.flags)}"
        time.sleep(0.02)
    raise LabError(f"{daemon.name} on {server} did not answer {name} SOA: {last}\n{daemon.tail()}")


class Nsd:
    """NSD serving the lab zones on ``address``:53, controlled through a unix socket."""

    def __init__(self, directory: Path, address: str, zones_dir: Path) -> None:
        self.dir = directory
        self.address = address
        self.zones_dir = zones_dir
        self.conf = directory / "nsd.conf"
        self.ctl = directory / "nsd.ctl"
        self.log = directory / "nsd.log"
        self.daemon: Daemon | None = None

    def write_config(self, zones: Sequence[str]) -> None:
        d = self.dir
        lines = [
            "server:",
            f"  ip-address: {self.address}",
            "  port: 53",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{self.zones_dir}"',
            f'  pidfile: "{d}/nsd.pid"',
            '  database: ""',
            f'  zonelistfile: "{d}/zone.list"',
            f'  xfrdfile: "{d}/xfrd.state"',
            f'  xfrdir: "{d}"',
            f'  logfile: "{self.log}"',
            "  server-count: 1",
            "  verbosity: 1",
            "  hide-version: yes",
            "  refuse-any: no",
            "remote-control:",
            "  control-enable: yes",
            f"  control-interface: {self.ctl}",
            "pattern:",
            "  name: lab",
            '  zonefile: "%szone"',  # %s is the zone name with its trailing dot
        ]
        for z in zones:
            lines += ["zone:", f'  name: "{z}."', "  include-pattern: lab"]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Daemon:
        run_tool([tool("nsd-checkconf"), str(self.conf)], "nsd-checkconf")
        self.daemon = spawn("nsd", [tool("nsd"), "-d", "-c", str(self.conf)], self.dir / "nsd.out",
                            self.dir)
        self.daemon.log = self.log
        return self.daemon

    def reload(self, zone: str) -> None:
        control(self.ctl, b"NSDCT1", f"reload {zone}.")

    def addzone(self, zone: str) -> None:
        control(self.ctl, b"NSDCT1", f"addzone {zone}. lab")


class Unbound:
    """Unbound validating for ``test.`` with the lab trust anchor, NSD as its stub."""

    def __init__(self, directory: Path, address: str, nsd_address: str,
                 trust_anchor: Path) -> None:
        self.dir = directory
        self.address = address
        self.nsd_address = nsd_address
        self.trust_anchor = trust_anchor
        self.conf = directory / "unbound.conf"
        self.ctl = directory / "unbound.ctl"
        self.log = directory / "unbound.log"
        self.hints = directory / "root.hints"
        self.daemon: Daemon | None = None

    def write_config(self) -> None:
        d = self.dir
        # Root hints name NSD: a query for anything outside the lab never leaves it.
        self.hints.write_text(f". 3600000 IN NS a.root.lab.invalid.\n"
                              f"a.root.lab.invalid. 3600000 IN A {self.nsd_address}\n")
        lines = [
            "server:",
            f"  interface: {self.address}",
            f"  outgoing-interface: {self.address}",
            "  port: 53",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{d}"',
            f'  pidfile: "{d}/unbound.pid"',
            f'  logfile: "{self.log}"',
            "  use-syslog: no",
            "  log-time-ascii: yes",
            "  verbosity: 1",
            "  val-log-level: 2",
            "  num-threads: 1",
            "  do-not-query-localhost: no",
            f'  root-hints: "{self.hints}"',
            f'  trust-anchor-file: "{self.trust_anchor}"',
            # Everything outside the lab is refused; test. is resolved (not the RFC 6761
            # static default) through the stub below.
            '  local-zone: "." refuse',
            '  local-zone: "test." transparent',
            "  access-control: 127.0.0.0/8 allow",
            "  cache-max-ttl: 30",
            "  cache-max-negative-ttl: 5",
            "  val-bogus-ttl: 5",
            "  infra-host-ttl: 60",
            "  aggressive-nsec: no",
            "  prefetch: no",
            "  serve-expired: no",
            "  qname-minimisation: no",
            # Validity windows are judged exactly (the expired zone ended two days ago).
            "  val-sig-skew-min: 10",
            "  val-sig-skew-max: 60",
            "remote-control:",
            "  control-enable: yes",
            f"  control-interface: {self.ctl}",
            "  control-use-cert: no",
            "stub-zone:",
            '  name: "test."',
            f"  stub-addr: {self.nsd_address}",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Daemon:
        run_tool([tool("unbound-checkconf"), str(self.conf)], "unbound-checkconf")
        self.daemon = spawn("unbound", [tool("unbound"), "-d", "-c", str(self.conf)],
                            self.dir / "unbound.out", self.dir)
        self.daemon.log = self.log
        return self.daemon

    def flush(self, zone: str = "test") -> None:
        # flush_zone drops rrsets, messages and keys at and below the name; bogus and
        # negative entries go with flush_bogus / flush_negative.
        for cmd in (f"flush_zone {zone}.", "flush_bogus", "flush_negative"):
            control(self.ctl, b"UBCT1", cmd)
