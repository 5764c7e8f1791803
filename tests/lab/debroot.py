"""A Debian trixie root file system with Postfix 3.10 and libtlsrpt, cached on disk.

Built once with ``mmdebstrap --variant=minbase`` from Debian packages only (``postfix``,
``libtlsrpt0``, ``ca-certificates``, no recommends) into
``/var/cache/smtptls-lab/trixie-postfix-<stamp>`` (``SMTPTLS_LAB_CACHE`` moves the
cache). The stamp is a hash of everything that decides the tree's content (suite, package
list, build options, this module's format number), so a later run finds the finished
tree and downloads nothing; change any of them and a new tree is built next to the old
one. A tree is complete only once ``STAMP_FILE`` is written in it (built under a
temporary name, renamed at the end, under an flock), so an interrupted build is never
used.

Nothing of the machine's /etc is touched: mmdebstrap works in the target directory only,
and the lab starts the instance in a private mount namespace (see mountns.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .model import LabError

__all__ = ["DebRoot", "ensure_root", "root_path"]

SUITE = "trixie"
PACKAGES = ("postfix", "libtlsrpt0", "ca-certificates")
FORMAT = 2  # raise when the build below changes in a way the stamp does not see
MIRROR = os.environ.get("SMTPTLS_LAB_DEBIAN_MIRROR", "http://deb.debian.org/debian")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
CACHE = Path(os.environ.get("SMTPTLS_LAB_CACHE", "/var/cache/smtptls-lab"))
STAMP_FILE = ".smtptls-lab-root.json"
_SIZE_FILE = ".smtptls-lab-download-bytes"
BUILD_TIMEOUT = 900.0  # a first build on a cold CI machine takes well under a minute
TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Package scripts must not ask questions or start services; "No configuration" keeps
# postfix's postinst from writing a main.cf (the lab writes its own config directory).
_PRESEED = "postfix postfix/main_mailer_type select No configuration"
_OPTIONS = ("--variant=minbase", "--mode=root", "--format=directory",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--dpkgopt=path-exclude=/usr/share/locale/*")


def stamp() -> str:
    """What decides the tree's content, hashed (the mirror does not: same archive)."""
    key = json.dumps([FORMAT, SUITE, sorted(PACKAGES), _PRESEED, _OPTIONS])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def root_path() -> Path:
    return CACHE / f"{SUITE}-postfix-{stamp()}"


@dataclass(frozen=True, slots=True)
class DebRoot:
    """A finished tree and what was measured when it was built."""

    path: Path
    postfix_version: str        # Debian version of the postfix package, e.g. 3.10.5-1
    libtlsrpt_version: str
    download_bytes: int         # .deb archives fetched for the build
    build_seconds: float

    def passwd(self, user: str) -> tuple[int, int]:
        """uid and gid of ``user`` in the tree's own /etc/passwd."""
        for line in (self.path / "etc/passwd").read_text().splitlines():
            f = line.split(":")
            if len(f) >= 4 and f[0] == user:
                return int(f[2]), int(f[3])
        raise LabError(f"no user {user} in {self.path}/etc/passwd")

    def group(self, name: str) -> int:
        for line in (self.path / "etc/group").read_text().splitlines():
            f = line.split(":")
            if len(f) >= 3 and f[0] == name:
                return int(f[2])
        raise LabError(f"no group {name} in {self.path}/etc/group")


def _load(path: Path) -> DebRoot | None:
    try:
        data = json.loads((path / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None
    return DebRoot(path=path, postfix_version=data["postfix"],
                   libtlsrpt_version=data["libtlsrpt0"],
                   download_bytes=int(data["download_bytes"]),
                   build_seconds=float(data["build_seconds"]))


def _tool(name: str) -> str:
    exe = shutil.which(name, path=os.environ.get("PATH", "") + ":" + TOOL_PATH)
    if exe is None:
        raise LabError(f"{name} not found (scripts/install-system.sh installs it)")
    return exe


def _dpkg_version(tree: Path, package: str) -> str:
    out = subprocess.run(
        [_tool("dpkg-query"), f"--admindir={tree}/var/lib/dpkg", "-W", "-f=${Version}",
         package], capture_output=True, text=True, timeout=30, check=False)
    if out.returncode != 0 or not out.stdout:
        raise LabError(f"{package} is not installed in {tree}: {out.stderr.strip()}")
    return out.stdout


def _build(target: Path, log: Path) -> tuple[int, float]:
    archives = target / "var/cache/apt/archives"
    argv = [_tool("mmdebstrap"), *_OPTIONS, f"--keyring={KEYRING}",
            f"--include={','.join(PACKAGES)}",
            f"--essential-hook=echo '{_PRESEED}' | chroot \"$1\" debconf-set-selections",
            # the archives stay until counted (before mmdebstrap's own clean-up)
            "--skip=essential/unlink",
            f"--customize-hook=du -cb \"$1\"/var/cache/apt/archives/*.deb | tail -1"
            f" > \"$1\"/{_SIZE_FILE}",
            SUITE, str(target), MIRROR]
    t0 = time.monotonic()
    with open(log, "wb") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                              timeout=BUILD_TIMEOUT, check=False)
    seconds = time.monotonic() - t0
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-20:]
        raise LabError(f"mmdebstrap failed ({done.returncode}):\n" + "\n".join(tail))
    size_file = target / _SIZE_FILE
    size = int(size_file.read_text().split()[0])
    size_file.unlink()
    for p in archives.glob("*.deb"):
        p.unlink()
    # mount points and files the lab binds over at start-up (mountns.py)
    for name in ("etc/resolv.conf",):
        (target / name).unlink(missing_ok=True)
        (target / name).touch()
    return size, seconds


def ensure_root() -> DebRoot:
    """The cached tree, built first if it is missing (one builder at a time)."""
    path = root_path()
    found = _load(path)
    if found is not None:
        return found
    CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        found = _load(path)  # somebody else built it while we waited
        if found is not None:
            return found
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir()
        size, seconds = _build(partial, CACHE / f"{path.name}.build.log")
        meta = {"postfix": _dpkg_version(partial, "postfix"),
                "libtlsrpt0": _dpkg_version(partial, "libtlsrpt0"),
                "download_bytes": size, "build_seconds": round(seconds, 1),
                "suite": SUITE, "packages": list(PACKAGES), "mirror": MIRROR}
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


if __name__ == "__main__":
    r = ensure_root()
    print(json.dumps({"path": str(r.path), "postfix": r.postfix_version,
                      "libtlsrpt0": r.libtlsrpt_version, "download_bytes": r.download_bytes,
                      "build_seconds": r.build_seconds}))
