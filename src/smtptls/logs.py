"""Structured logging: ``key=value`` text or one JSON object per line.

Use :func:`get_logger` and pass fields as keyword arguments::

    log = get_logger("policyd")
    log.info("answer", domain="example.com", answer="secure")

Secrets never go into a log call; values are rendered with ``repr`` only when they
contain spaces or quotes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


class _Formatter(logging.Formatter):
    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = fmt == "json"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        if self.json:
            obj = {"ts": ts + "Z", "level": record.levelname.lower(), "logger": record.name,
                   "event": record.getMessage(), **fields}
            return json.dumps(obj, default=str, separators=(",", ":"))
        parts = [f"{ts}Z", record.levelname.lower(), record.name, record.getMessage()]
        for k, v in fields.items():
            s = str(v)
            if not s or any(c in s for c in " \"'="):
                s = json.dumps(s)
            parts.append(f"{k}={s}")
        return " ".join(parts)


class StructLogger:
    """A thin wrapper that turns keyword arguments into structured fields."""

    __slots__ = ("_log",)

    def __init__(self, log: logging.Logger) -> None:
        self._log = log

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, event, extra={"fields": fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)


def get_logger(name: str) -> StructLogger:
    return StructLogger(logging.getLogger(f"smtptls.{name}"))


def setup(level: str = "info", fmt: str = "text") -> None:
    """Configure the ``smtptls`` logger tree to write to stderr."""
    root = logging.getLogger("smtptls")
    root.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(fmt))
    root.addHandler(handler)
    root.setLevel(_LEVELS.get(level, logging.INFO))
    root.propagate = False
