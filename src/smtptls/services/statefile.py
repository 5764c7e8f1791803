"""A small JSON state file: read back bounded, replaced atomically, never fatal.

What the alert dispatcher (:mod:`smtptls.services.alerts`) and the monitor
(:mod:`smtptls.monitor.state`) keep between runs. A missing, unreadable, oversized or
invalid file reads as None (the caller starts empty, and says so in the log); a write
goes to a temporary file in the same folder, then replaces the old one, so a crash
leaves the old state or the new one, never half of either; a failed write is logged.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from smtptls.logs import get_logger

__all__ = ["read_state", "write_state"]

_log = get_logger("state")


def read_state(path: Path, max_bytes: int, what: str) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None (absent: silently; otherwise logged)."""
    try:
        with path.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.warning(f"{what} unreadable, starting empty", path=str(path), error=exc.strerror)
        return None
    try:
        if len(raw) > max_bytes:
            raise ValueError("too large")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except (ValueError, RecursionError) as exc:
        _log.warning(f"{what} not valid, starting empty", path=str(path), error=str(exc)[:200])
        return None
    return data


def write_state(path: Path, data: dict[str, Any], what: str, prefix: str) -> None:
    """Replace ``path`` with ``data`` as JSON; an unwritable file is logged, not raised."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".json")
    except OSError as exc:
        _log.error(f"{what} not saved", path=str(path), error=exc.strerror)
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _log.error(f"{what} not saved", path=str(path), error=exc.strerror)
