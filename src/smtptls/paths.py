"""Where smtptls keeps its state and where it looks for its configuration.

One function decides each, and every command asks it:

- :func:`state_dir`: ``$SMTPTLS_STATE_DIR``; else ``/var/lib/smtptls`` when running as
  root (what systemd's ``StateDirectory=smtptls`` gives a service); else the XDG state
  directory, ``$XDG_STATE_HOME/smtptls`` or ``~/.local/state/smtptls``. The SQLite
  defaults (policy cache, report store, result store) are files in it. Nothing is ever
  written to the current directory unless the operator names a relative path.
- :func:`default_config_path`: ``$SMTPTLS_CONFIG``; else ``/etc/smtptls/smtptls.toml``
  when that file exists; else none (every key has a default).

These functions only compute paths; they create nothing. Stores create the directory
of a database they are asked to create; read-only commands refuse a missing one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "CONFIG_ENV",
    "SYSTEM_CONFIG",
    "SYSTEM_STATE_DIR",
    "STATE_ENV",
    "default_config_path",
    "state_dir",
    "state_file",
]

STATE_ENV = "SMTPTLS_STATE_DIR"
CONFIG_ENV = "SMTPTLS_CONFIG"
SYSTEM_STATE_DIR = Path("/var/lib/smtptls")  # FHS §5.8; systemd StateDirectory=smtptls
SYSTEM_CONFIG = Path("/etc/smtptls/smtptls.toml")
_XDG_STATE_ENV = "XDG_STATE_HOME"  # XDG Base Directory Specification 0.8


def state_dir(env: Mapping[str, str] | None = None, *, euid: int | None = None,
              home: Path | None = None) -> Path:
    """The directory for smtptls's databases (see the module docstring)."""
    env = os.environ if env is None else env
    explicit = env.get(STATE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    if (os.geteuid() if euid is None else euid) == 0:
        return SYSTEM_STATE_DIR
    xdg = env.get(_XDG_STATE_ENV)
    # XDG: a relative $XDG_STATE_HOME is invalid and must be ignored
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "smtptls"
    return (home or Path.home()) / ".local" / "state" / "smtptls"


def state_file(name: str) -> str:
    """``name`` inside :func:`state_dir`, as the string a config value holds."""
    return str(state_dir() / name)


def default_config_path(env: Mapping[str, str] | None = None, *,
                        system_config: Path | None = None) -> Path | None:
    """The configuration file used when no ``--config`` is given, or None."""
    env = os.environ if env is None else env
    explicit = env.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    system_config = SYSTEM_CONFIG if system_config is None else system_config
    return system_config if system_config.is_file() else None
