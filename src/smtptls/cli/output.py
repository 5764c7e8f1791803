"""Shared CLI conventions: exit codes, JSON output, error rendering."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

EXIT_OK = 0
EXIT_NEGATIVE = 1  # a finding or a negative result (no policy, verification failed)
EXIT_ERROR = 2  # bad input, bad usage, an error


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def add_common(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """Options most commands share."""
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable JSON output")


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written."""


def cut(text: str, width: int) -> str:
    """``text`` shortened to ``width`` characters with an ellipsis (human output)."""
    return text if len(text) <= width else text[: width - 1] + "…"


class _Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...


S = TypeVar("S", bound=_Store)


def run_with_store(store: S, fn: Callable[[S], Awaitable[T]]) -> T:
    """Open ``store``, run ``fn(store)`` on a fresh event loop, and always close it."""

    import asyncio  # here: `smtptls --help` and the parsers do not need it

    async def run() -> T:
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())
