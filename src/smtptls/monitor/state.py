"""The monitor's memory between runs: one :class:`DomainState` per domain.

A JSON file (``monitor.state_path``, by default in the state directory of
:mod:`smtptls.paths`), replaced atomically on every save, bounded when read back. A
missing, unreadable or malformed file starts empty (logged): the next run is then a
first run, which raises no "changed" or "worse" alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from smtptls.errors import SmtpTlsError
from smtptls.logs import get_logger
from smtptls.monitor.rules import DomainState
from smtptls.services.statefile import read_state, write_state

__all__ = ["FileMonitorState", "MAX_STATE_FILE", "MemoryMonitorState", "MonitorState"]

_log = get_logger("monitor")

#: Size of a state file read back; a larger one is ignored (and rewritten).
MAX_STATE_FILE = 16 * 1024 * 1024


class MonitorState(Protocol):
    def load(self) -> dict[str, DomainState]: ...

    def save(self, state: Mapping[str, DomainState]) -> None: ...


class MemoryMonitorState:
    """The in-memory twin."""

    def __init__(self) -> None:
        self.state: dict[str, DomainState] = {}

    def load(self) -> dict[str, DomainState]:
        return dict(self.state)

    def save(self, state: Mapping[str, DomainState]) -> None:
        self.state = dict(state)


class FileMonitorState:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def load(self) -> dict[str, DomainState]:
        data = read_state(self.path, MAX_STATE_FILE, "monitor state")
        if data is None:
            return {}
        try:
            return {str(k): DomainState.from_dict(v) for k, v in data.items()}
        except (ValueError, SmtpTlsError) as exc:
            _log.warning("monitor state not valid, starting empty", path=str(self.path),
                         error=str(exc)[:200])
            return {}

    def save(self, state: Mapping[str, DomainState]) -> None:
        """Write the state; an unwritable file is logged, never fatal."""
        write_state(self.path, {k: v.to_dict() for k, v in state.items()},
                    "monitor state", ".monitor-")
