"""The monitor's memory between runs: one :class:`DomainState` per domain.

The service keeps it in the monitor store (:mod:`smtptls.store.monitor_base`: SQLite
by default, PostgreSQL with ``monitor.store = "postgresql://..."``), with the run
history and the alerts sent. :class:`MonitorState` is the older, smaller interface
(the latest state only): :class:`MemoryMonitorState`, and :class:`FileMonitorState`,
the JSON file (``monitor.state_path``) of earlier versions. :func:`as_store` lets the
runner drive one as a store (no history; the dispatcher keeps its own sent-set), and
:func:`import_legacy` copies that file and the alerts' state file into an empty store,
once, so that an upgrade is not a first run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from smtptls.config import Config
from smtptls.errors import SmtpTlsError
from smtptls.logs import get_logger
from smtptls.monitor.rules import DomainState
from smtptls.services.alerts import FileAlertState, SentRecord
from smtptls.services.statefile import read_state, write_state
from smtptls.store.monitor_base import DomainSummary, MonitorStore, RunRecord

__all__ = ["FileMonitorState", "MAX_STATE_FILE", "MemoryMonitorState", "MonitorState",
           "StateStore", "as_store", "import_legacy"]

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


class StateStore:
    """A :class:`MonitorState` driven as a :class:`MonitorStore`: the latest state only.

    ``keeps_sent`` is False: the dispatcher's own :class:`AlertState` stays the memory
    of what was sent."""

    keeps_sent = False

    def __init__(self, state: MonitorState) -> None:
        self.state = state

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def load(self) -> dict[str, DomainState]:
        return self.state.load()

    async def load_sent(self) -> dict[str, SentRecord]:
        return {}

    async def is_empty(self) -> bool:
        return not self.state.load()

    async def save_run(self, states: Mapping[str, DomainState], records: Sequence[RunRecord],
                       sent: Mapping[str, SentRecord], *, keep_runs: int) -> None:
        merged = self.state.load()
        merged.update(states)
        self.state.save(merged)

    async def runs(self, domain: str, *, limit: int = 100) -> list[RunRecord]:
        return []

    async def domains(self) -> list[DomainSummary]:
        return []


def as_store(store: MonitorStore | MonitorState) -> MonitorStore:
    """``store`` as a :class:`MonitorStore` (a :class:`MonitorState` wrapped)."""
    return store if hasattr(store, "save_run") else StateStore(store)  # type: ignore[return-value]


async def import_legacy(store: MonitorStore, cfg: Config) -> bool:
    """Copy the JSON state files of earlier versions into ``store`` when it is empty.

    ``monitor.state_path`` gives the domains' states and ``alerts.state_path`` the keys
    already sent, so the first run on the store neither repeats alerts nor counts as a
    first run. The files are left in place (read, never written). True when something
    was imported."""
    if not await store.is_empty():
        return False
    states = FileMonitorState(cfg.monitor.state_path).load()
    sent = FileAlertState(cfg.alerts.state_path).load() if cfg.alerts.state_path else {}
    if not states and not sent:
        return False
    await store.save_run(states, (), sent, keep_runs=max(1, cfg.monitor.keep_runs))
    _log.info("monitor state imported", path=cfg.monitor.state_path, domains=len(states),
              alerts=len(sent))
    return True
