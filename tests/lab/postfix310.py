"""Debian trixie's Postfix 3.10 (linked with libtlsrpt) as a second sending Postfix.

Same interface as ``postfix.Postfix`` (the machine's 3.7); what differs is where the
programs come from and how they are started:

* the programs are those of a Debian trixie root file system built from Debian packages
  only and cached outside the repository (debroot.py: ``postfix``, ``libtlsrpt0``,
  ``ca-certificates``);
* ``unshare --mount`` + mountns.py ``--root``: in a private mount namespace the lab's
  resolv.conf is bind-mounted over the tree's /etc/resolv.conf, the machine's /tmp (the
  lab's runtime directory with this instance's config, queue and log, and the lab CA) at
  the same path inside the tree, then ``postfix start-fg`` runs chrooted into the tree.
  The network is the machine's: only loopback addresses of the lab's /16 are used;
* the command-line tools (``postconf``, ``postqueue``, ``postsuper``, ``sendmail``,
  ``postfix reload/stop``) run in that same namespace and root through
  ``nsenter --target <pid> --mount --root --wd``;
* smtpd listens on ``127.N.0.10:25`` and outgoing SMTP is bound there too, so the 3.10
  instance can run next to the 3.7 one and a receiver can tell them apart;
* queue file owners are the tree's own ``postfix`` user and ``postdrop`` group.

TLSRPT: ``tlsrpt_socket`` (a path relative to the queue directory, as TLSRPT_README
recommends) turns on ``smtp_tlsrpt_enable`` with ``smtp_tlsrpt_socket_name`` set to it;
``pf.tlsrpt_socket_path`` is where that socket is on the machine. Like every service of
the lab's instances, ``smtp`` runs without Postfix's own chroot, unless
``smtp_chroot=True``: then ``smtp`` and ``relay`` are chrooted into the queue directory
as on a Debian installation, with the files a chrooted ``smtp`` reads copied in as
Debian's configure-instance.sh does (the lab's resolv.conf as ``etc/resolv.conf``; the
tree's ``services``, ``hosts``, ``host.conf``, ``nsswitch.conf``, ``localtime``). The
relative socket name works either way, which the end-to-end test proves.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from . import daemons, debroot
from .model import LabError
from .postfix import Postfix

if TYPE_CHECKING:
    from .lab import Lab

__all__ = ["Postfix310"]

TREE_TMP = "/tmp"  # noqa: S108 - the lab's runtime directories live under it (runtime.py)
CHROOT_ETC = ("services", "hosts", "host.conf", "nsswitch.conf", "localtime")
CHROOTED_SERVICES = ("smtp", "relay")


class Postfix310(Postfix):
    """Postfix 3.10 from the cached Debian trixie tree (start with ``lab.postfix(version="3.10")``)."""

    version = "3.10"
    dir_name = "postfix310"

    def __init__(self, lab: Lab, *, policy_map: str | None = None,
                 main_cf: Mapping[str, str] | None = None,
                 tlsrpt_socket: str | None = None, smtp_chroot: bool = False) -> None:
        self.root = debroot.ensure_root()
        self.tlsrpt_socket = tlsrpt_socket
        self.smtp_chroot = smtp_chroot
        super().__init__(lab, policy_map=policy_map, main_cf=main_cf)

    @property
    def package_version(self) -> str:
        """The Debian version of the tree's postfix package (e.g. ``3.10.13-0+deb13u1``)."""
        return self.root.postfix_version

    @property
    def tlsrpt_socket_path(self) -> Path | None:
        """The TLSRPT datagram socket's path on the machine (None: TLSRPT off)."""
        if self.tlsrpt_socket is None:
            return None
        return self.queue_dir / self.tlsrpt_socket

    def _address(self) -> str:
        return self.lab.postfix310_address

    def _ids(self) -> tuple[int, int]:
        return self.root.passwd("postfix")[0], self.root.group("postdrop")

    def main_cf(self) -> dict[str, str]:
        params = super().main_cf()
        params["compatibility_level"] = "3.10"
        if self.tlsrpt_socket is not None:
            params["smtp_tlsrpt_enable"] = "yes"
            params["smtp_tlsrpt_socket_name"] = self.tlsrpt_socket
        params.update(self.extra)
        return params

    def _write_config(self) -> None:
        super()._write_config()
        if not self.smtp_chroot:
            return
        master = self.config_dir / "master.cf"
        lines = []
        for line in master.read_text().splitlines():
            f = line.split()
            if len(f) >= 8 and f[0] in CHROOTED_SERVICES and f[1] == "unix":
                f[4] = "y"
                line = " ".join(f)
            lines.append(line)
        master.write_text("\n".join(lines) + "\n")
        etc = self.queue_dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_bytes(self.lab.resolv_conf.read_bytes())
        for name in CHROOT_ETC:
            src = self.root.path / "etc" / name
            if src.is_file():
                (etc / name).write_bytes(src.read_bytes())
        self._age_config()

    def _make_queue(self) -> None:
        super()._make_queue()
        if self.tlsrpt_socket_path is not None:
            # the collector (running on the machine, as root) binds the socket here
            self.tlsrpt_socket_path.parent.mkdir(parents=True, exist_ok=True)
            self.tlsrpt_socket_path.parent.chmod(0o755)

    def _start_argv(self) -> list[str]:
        return [daemons.tool("unshare"), "--mount", "--propagation", "private", "--",
                sys.executable, str(Path(__file__).with_name("mountns.py")),
                str(self.lab.resolv_conf), "--root", str(self.root.path),
                "--bind", TREE_TMP, "--",
                "/usr/sbin/postfix", "-c", str(self.config_dir), "start-fg"]

    def _cmd(self, name: str) -> list[str]:
        if self.daemon is None or not self.daemon.alive():
            raise LabError(f"postfix {self.version} is not running")
        return [daemons.tool("nsenter"), f"--target={self.daemon.pid}", "--mount",
                "--root", "--wd", "--", f"/usr/sbin/{name}"]
