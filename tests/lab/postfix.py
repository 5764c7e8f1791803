"""A private sending Postfix for end-to-end tests.

Own ``config_directory``, ``queue_directory`` and ``data_directory`` under the lab's
runtime directory; started as ``postfix -c <dir> start-fg`` (no postmulti), chroot off
for every service, smtpd only on ``127.N.0.9:25``, outgoing SMTP bound to that address,
logs to a file through postlogd (``maillog_file``), and DNS through the lab's Unbound.

DNS: Postfix resolves with the libc stub resolver, which reads /etc/resolv.conf and
knows no port. The instance therefore runs in a private mount namespace
(``unshare --mount --propagation private``) where the lab's resolv.conf
(``nameserver 127.N.0.2`` + ``options trust-ad``, so glibc passes the AD bit on and
``smtp_dns_support_level = dnssec`` sees validated answers) is bind-mounted over
/etc/resolv.conf; see mountns.py. The rest of the machine never sees it, the receivers
stay reachable on loopback, and nothing has to be undone at teardown. (A network
namespace would also work but needs veth plumbing to reach the lab's loopback servers.)
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import daemons, runtime
from .model import LabError
from .tools import run_tool, smtp_submit

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Delivery", "Postfix", "TlsSession", "parse_deliveries"]

START_TIMEOUT = 20.0
MAX_LOG = 64 * 1024 * 1024

QUEUE_DIRS = ("active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming",
              "private", "saved", "trace")

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{address}:25 inet n      -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# postfix/smtp[123]: 4ABCD12: to=<a@b>, relay=mx[1.2.3.4]:25, ..., dsn=2.0.0, status=sent (..)
_STATUS = re.compile(
    r"postfix/(?P<svc>[\w-]+)\[(?P<pid>\d+)\]: (?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>,"
    r"(?:.*? relay=(?P<relay>[^,]+),)?.*? dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+)"
    r"(?: \((?P<detail>.*)\))?$")
# postfix/smtp[123]: Verified TLS connection established to mx[1.2.3.4]:25: TLSv1.3 with ...
_TLS = re.compile(
    r"postfix/(?P<svc>[\w-]+)\[(?P<pid>\d+)\]: (?P<level>Verified|Trusted|Untrusted|Anonymous)"
    r" TLS connection established to (?P<peer>\S+): (?P<detail>.*)$")
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")


@dataclass(frozen=True, slots=True)
class TlsSession:
    """One "... TLS connection established to ..." line of the smtp client."""

    level: str          # Verified | Trusted | Untrusted | Anonymous
    peer: str           # host[addr]:port
    detail: str         # protocol, cipher, ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery attempt's outcome for one recipient, from the log."""

    queue_id: str
    recipient: str
    status: str          # sent | deferred | bounced | expired
    relay: str | None
    dsn: str
    detail: str
    tls: TlsSession | None
    line: str


class Postfix:
    """One running sending Postfix (start with ``lab.postfix(...)``).

    This is the machine's own Postfix (Debian bookworm: 3.7); ``postfix310.Postfix310``
    is the same interface for Debian trixie's 3.10 in a cached root file system.
    """

    version = "3.7"
    dir_name = "postfix"

    def __init__(self, lab: Lab, *, policy_map: str | None = None,
                 main_cf: Mapping[str, str] | None = None) -> None:
        self.lab = lab
        self.policy_map = policy_map
        self.extra = dict(main_cf or {})
        self.dir = lab.dir / self.dir_name
        self.config_dir = self.dir / "etc"
        self.queue_dir = self.dir / "spool"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "maillog"
        self.address = self._address()
        self.daemon: daemons.Daemon | None = None

    def _address(self) -> str:
        return self.lab.postfix_address

    def _cmd(self, name: str) -> list[str]:
        """The argv prefix that runs Postfix command ``name`` for this instance."""
        return [daemons.tool(name)]

    def _ids(self) -> tuple[int, int]:
        """uid of ``mail_owner`` and gid of ``setgid_group``, as Postfix will see them."""
        return pwd.getpwnam("postfix").pw_uid, grp.getgrnam("postdrop").gr_gid

    def _start_argv(self) -> list[str]:
        return [daemons.tool("unshare"), "--mount", "--propagation", "private", "--",
                sys.executable, str(Path(__file__).with_name("mountns.py")),
                str(self.lab.resolv_conf), "--",
                daemons.tool("postfix"), "-c", str(self.config_dir), "start-fg"]

    # --- configuration ------------------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        lab_dir = self.lab.dir
        params = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_dir),
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": "postfix.lab.test",
            "mydomain": "lab.test",
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_transport": "error:local delivery is disabled in the lab",
            "alias_maps": "",
            "alias_database": "",
            "relay_domains": "",
            "relayhost": "",
            # inet_interfaces must name an interface address, which 127.N.0.9 is not;
            # the smtpd service binds 127.N.0.9:25 explicitly in master.cf instead.
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "smtp_bind_address": self.address,
            "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtputf8_enable": "yes",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(lab_dir),
            "import_environment": (f"MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C "
                                   f"POSTLOG_SERVICE POSTLOG_HOSTNAME "
                                   f"{runtime.ENV_MARK}={lab_dir}"),
            "smtp_host_lookup": "dns",
            "smtp_address_preference": "ipv4",
            "smtp_dns_support_level": "dnssec",
            "smtp_tls_security_level": "may",
            "smtp_tls_CAfile": str(self.lab.ca_file),
            "smtp_tls_loglevel": "1",
            "smtp_tls_policy_maps": self.policy_map or "",
            "smtp_connect_timeout": "5s",
            "smtp_helo_timeout": "10s",
            # Quick queue turns: a deferred message is retried within seconds.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "delay_warning_time": "0h",
            "bounce_queue_lifetime": "1h",
            "maximal_queue_lifetime": "1h",
            "smtpd_banner": "$myhostname ESMTP lab",
        }
        params.update(self.extra)
        return params

    def _write_config(self) -> None:
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.config_dir.chmod(0o755)
        self.queue_dir.chmod(0o755)
        text = "".join(f"{k} = {v}\n" for k, v in self.main_cf().items())
        (self.config_dir / "main.cf").write_text(text)
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(address=self.address))
        self._age_config()
        self.log_file.touch()

    # --- life cycle ---------------------------------------------------------------------

    def _age_config(self) -> None:
        # Postfix waits (in 300 ms steps) until main.cf is a couple of seconds old before
        # trusting it is completely written; ours is, so date it back.
        past = time.time() - 10
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_dir / name, (past, past))

    def _make_queue(self) -> None:
        """The queue layout of /etc/postfix/postfix-files, made directly.

        ``postfix set-permissions`` does the same in ~3 s; this takes milliseconds.
        """
        owner, postdrop = self._ids()
        layout = [(name, owner, 0, 0o700) for name in QUEUE_DIRS]
        layout += [("maildrop", owner, postdrop, 0o730), ("public", owner, postdrop, 0o710),
                   ("pid", 0, 0, 0o755)]
        for name, uid, gid, mode in layout:
            d = self.queue_dir / name
            d.mkdir(exist_ok=True)
            os.chown(d, uid, gid)
            d.chmod(mode)
        os.chown(self.data_dir, owner, 0)
        self.data_dir.chmod(0o700)
        # postfix-script's integrity checks add seconds and check what was just made.
        (self.queue_dir / "quick-start").touch()

    @property
    def running(self) -> bool:
        return self.daemon is not None and self.daemon.alive()

    def start(self) -> Postfix:
        if self.running:
            return self
        self._write_config()
        self._make_queue()
        argv = self._start_argv()
        self.daemon = daemons.spawn("postfix", argv, self.dir / "postfix.out", self.lab.dir)
        self.daemon.log = self.dir / "postfix.out"
        self.lab._write_state(**{f"{self.dir_name}_pid": self.daemon.pid})
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.daemon.alive():
                raise LabError(f"postfix exited ({self.daemon.proc.returncode}):\n"
                               f"{self.daemon.tail()}\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.address, 25), 1) as s:
                if s.recv(512).startswith(b"220"):
                    break
            if time.monotonic() > deadline:
                raise LabError(f"postfix smtpd on {self.address}:25 not answering:\n"
                               f"{self.daemon.tail()}\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.daemon is None:
            return
        if self.daemon.alive():
            with contextlib.suppress(Exception):
                self._run([*self._cmd("postfix"), "-c", str(self.config_dir), "stop"], "stop")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.daemon.proc.wait(10)
        self.daemon.stop()
        # Postfix daemons run in sessions of their own; they carry the lab mark.
        pids = [p for p in runtime.find_lab_processes(self.lab.dir)
                if self._is_postfix(p)]
        runtime.kill_pids(pids)

    @staticmethod
    def _is_postfix(pid: int) -> bool:
        try:
            exe = Path(f"/proc/{pid}/exe").resolve()
        except OSError:
            return False
        return "postfix" in str(exe)

    def reload(self, **params: str) -> None:
        """Change main.cf parameters (``postconf -e``) and ``postfix reload``."""
        if params:
            self.extra.update(params)
            self._run([*self._cmd("postconf"), "-c", str(self.config_dir), "-e",
                       *(f"{k}={v}" for k, v in params.items())], "postconf -e")
            self._age_config()
        self._run([*self._cmd("postfix"), "-c", str(self.config_dir), "reload"], "reload")

    def _run(self, argv: list[str], what: str, stdin: bytes | None = None) -> str:
        return run_tool(argv, f"postfix {what}", stdin)

    # --- submission ---------------------------------------------------------------------

    def submit(self, sender: str, recipients: str | Iterable[str], data: bytes | str) -> str:
        """Send a message to the instance over SMTP; returns its queue ID."""
        return smtp_submit(self.address, sender, recipients, data, mta="postfix",
                           queue_id=_QUEUED)

    def sendmail(self, sender: str, recipients: str | Iterable[str], data: bytes | str) -> None:
        """Submit through ``sendmail -C <config>`` (postdrop/pickup path)."""
        rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
        raw = data.encode() if isinstance(data, str) else data
        self._run([*self._cmd("sendmail"), "-C", str(self.config_dir), "-i", "-f", sender,
                   "--", *rcpts], "sendmail", stdin=raw)

    def flush(self) -> None:
        """Attempt delivery of everything queued now (``postqueue -f``)."""
        self._run([*self._cmd("postqueue"), "-c", str(self.config_dir), "-f"], "postqueue -f")

    def queue(self) -> list[dict]:
        """The queue as ``postqueue -j`` objects."""
        out = self._run([*self._cmd("postqueue"), "-c", str(self.config_dir), "-j"],
                        "postqueue -j")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_queue_empty(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queue():
            if time.monotonic() > deadline:
                raise LabError(f"queue not empty after {timeout}s: {self.queue()}")
            time.sleep(0.2)

    def delete_all(self) -> None:
        """Drop every queued message (``postsuper -d ALL``)."""
        self._run([*self._cmd("postsuper"), "-c", str(self.config_dir), "-d", "ALL"],
                  "postsuper -d ALL")

    # --- the log ------------------------------------------------------------------------

    def log(self) -> str:
        with open(self.log_file, "rb") as fh:
            return fh.read(MAX_LOG).decode(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log().splitlines()[-lines:])
        except OSError:
            return ""

    def deliveries(self, queue_id: str | None = None) -> list[Delivery]:
        """Every delivery status line (with its TLS line, if any), oldest first."""
        return parse_deliveries(self.log(), queue_id)

    def wait_delivery(self, queue_id: str, timeout: float = 30.0,
                      statuses: Iterable[str] = ("sent", "deferred", "bounced", "expired"),
                      ) -> Delivery:
        """The first delivery outcome for ``queue_id`` whose status is in ``statuses``."""
        wanted = set(statuses)
        deadline = time.monotonic() + timeout
        while True:
            for d in self.deliveries(queue_id):
                if d.status in wanted:
                    return d
            if time.monotonic() > deadline:
                raise LabError(f"no {sorted(wanted)} for {queue_id} after {timeout}s:\n"
                               f"{self.log_tail()}")
            time.sleep(0.1)


def parse_deliveries(log: str, queue_id: str | None = None) -> list[Delivery]:
    """Delivery outcomes in a Postfix log, each with the TLS line its smtp process
    logged before it (``smtp_tls_loglevel = 1``), oldest first."""
    pending: dict[str, TlsSession] = {}             # pid -> TLS line not yet claimed
    claimed: dict[str, tuple[str, TlsSession]] = {}  # pid -> (queue ID, its TLS line)
    out = []
    for line in log.splitlines():
        t = _TLS.search(line)
        if t is not None:
            pending[t["pid"]] = TlsSession(t["level"], t["peer"], t["detail"])
            claimed.pop(t["pid"], None)
            continue
        m = _STATUS.search(line)
        if m is None:
            continue
        tls = None
        if m["svc"] in ("smtp", "relay", "lmtp"):
            pid = m["pid"]
            if pid in pending:
                # The first status line after a handshake is that session's message;
                # further recipients of the same message share the session.
                tls = pending.pop(pid)
                claimed[pid] = (m["qid"], tls)
            elif pid in claimed and claimed[pid][0] == m["qid"]:
                tls = claimed[pid][1]
        if queue_id is not None and m["qid"] != queue_id:
            continue
        out.append(Delivery(queue_id=m["qid"], recipient=m["rcpt"], status=m["status"],
                            relay=m["relay"], dsn=m["dsn"], detail=m["detail"] or "",
                            tls=tls, line=line))
    return out
