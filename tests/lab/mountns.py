"""Run a command with the lab's resolv.conf in place of /etc/resolv.conf.

Used as ``unshare --mount --propagation private -- python mountns.py RESOLV -- CMD...``:
inside the new (private) mount namespace this bind-mounts RESOLV over /etc/resolv.conf
and then becomes CMD, so CMD and everything it starts resolve through the lab's
Unbound while the machine's own /etc/resolv.conf stays untouched for everybody else.

With ``--root DIR [--bind PATH]...`` before ``--`` (the Postfix 3.10 root file system,
see debroot.py), RESOLV goes over DIR/etc/resolv.conf instead, each PATH of the machine
(the lab's runtime directory under /tmp) is bind-mounted at the same place under DIR
(``--bind SRC=DST``: SRC at DST under DIR; DST must exist there, file or directory),
/proc is mounted there, and CMD runs chrooted into DIR. The mounts exist only in the
namespace and vanish with its last process.
Standalone on purpose (run by path, imports nothing from the project).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

RESOLV = "/etc/resolv.conf"
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


USAGE = ("usage: mountns.py RESOLV_CONF [--root DIR [--bind PATH[=DEST]]...] -- "
         "COMMAND [ARG...]")


def _parse(argv: list[str]) -> tuple[str, str | None, list[str], list[str]] | None:
    if not argv or "--" not in argv:
        return None
    split = argv.index("--")
    head, command = argv[:split], argv[split + 1:]
    if not head or not command:
        return None
    resolv, root, binds = head[0], None, []
    rest = head[1:]
    while rest:
        if len(rest) < 2 or rest[0] not in ("--root", "--bind"):
            return None
        if rest[0] == "--root":
            root = rest[1]
        else:
            binds.append(rest[1])
        rest = rest[2:]
    if binds and root is None:
        return None
    return resolv, root, binds, command


def _mount(mount: str, *args: str) -> bool:
    done = subprocess.run([mount, *args], check=False, timeout=10)
    if done.returncode != 0:
        print(f"mountns: mount {' '.join(args)} failed", file=sys.stderr)
        return False
    return True


def main(argv: list[str]) -> int:
    parsed = _parse(argv)
    if parsed is None:
        print(USAGE, file=sys.stderr)
        return 2
    resolv, root, binds, command = parsed
    mount = shutil.which("mount", path=os.environ.get("PATH", "") + ":" + TOOL_PATH)
    if mount is None:
        print("mountns: mount(8) not found", file=sys.stderr)
        return 2
    target = RESOLV if root is None else os.path.join(root, RESOLV.lstrip("/"))
    if not _mount(mount, "--bind", resolv, target):
        return 2
    if root is not None:
        for path in binds:
            source, _, dest = path.partition("=")
            inside = os.path.join(root, (dest or source).lstrip("/"))
            if not dest:
                os.makedirs(inside, exist_ok=True)
            if not _mount(mount, "--bind", source, inside):
                return 2
        if not _mount(mount, "-t", "proc", "proc", os.path.join(root, "proc")):
            return 2
        os.chroot(root)
        os.chdir("/")
    exe = shutil.which(command[0], path=os.environ.get("PATH", "") + ":" + TOOL_PATH)
    if exe is None:
        print(f"mountns: {command[0]} not found", file=sys.stderr)
        return 2
    os.execv(exe, [exe, *command[1:]])  # noqa: S606 - argument list, no shell
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
