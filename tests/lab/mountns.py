"""Run a command with the lab's resolv.conf in place of /etc/resolv.conf.

Used as ``unshare --mount --propagation private -- python mountns.py RESOLV -- CMD...``:
inside the new (private) mount namespace this bind-mounts RESOLV over /etc/resolv.conf
and then becomes CMD, so CMD and everything it starts resolve through the lab's
Unbound while the machine's own /etc/resolv.conf stays untouched for everybody else.
Standalone on purpose (run by path, imports nothing from the project).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

RESOLV = "/etc/resolv.conf"
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: mountns.py RESOLV_CONF -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    resolv, command = argv[0], argv[2:]
    mount = shutil.which("mount", path=os.environ.get("PATH", "") + ":" + TOOL_PATH)
    if mount is None:
        print("mountns: mount(8) not found", file=sys.stderr)
        return 2
    done = subprocess.run([mount, "--bind", resolv, RESOLV], check=False, timeout=10)
    if done.returncode != 0:
        print(f"mountns: bind mount of {resolv} failed", file=sys.stderr)
        return 2
    exe = shutil.which(command[0], path=os.environ.get("PATH", "") + ":" + TOOL_PATH)
    if exe is None:
        print(f"mountns: {command[0]} not found", file=sys.stderr)
        return 2
    os.execv(exe, [exe, *command[1:]])  # noqa: S606 - argument list, no shell
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
