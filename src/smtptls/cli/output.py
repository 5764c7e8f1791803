"""Shared CLI conventions: exit codes, JSON output, error rendering."""

from __future__ import annotations

import argparse
import enum
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

EXIT_OK = 0
EXIT_NEGATIVE = 1  # a finding or a negative result (no policy, verification failed)
EXIT_ERROR = 2  # bad input, bad usage, an error


def json_text(obj: Any) -> str:
    """``json.dumps(obj, indent=2, default=str)``, the same text, written by orjson.

    The standard encoder writes indented text in pure Python, slow on the long listings
    of an import; orjson writes it in C. orjson hands dates, times and dataclasses to
    ``default`` as the standard encoder does; where its text could differ (a non-ASCII
    character, which the standard encoder escapes; a float orjson writes in another
    form; a plain enum member, written by value; a value orjson refuses) the standard
    encoder writes it.
    """
    import orjson  # only once a command prints JSON

    try:
        text = orjson.dumps(obj, default=str, option=orjson.OPT_INDENT_2
                            | orjson.OPT_PASSTHROUGH_DATACLASS
                            | orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = ""
    if not text or not text.isascii() or not _orjson_same(obj, orjson.dumps):
        return json.dumps(obj, indent=2, sort_keys=False, default=str)
    return text


def _orjson_same(obj: Any, dumps: Callable[[Any], bytes]) -> bool:
    """Whether ``obj`` holds nothing orjson writes unlike the standard encoder."""
    todo = [obj]
    while todo:
        value = todo.pop()
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        if isinstance(value, dict):
            todo.extend(value.values())
        elif kind is tuple or isinstance(value, list):
            todo.extend(value)
        elif kind is float:
            # the same digits (1.5, 0.25), not another form (1e16 for 1e+16, null for nan)
            if dumps(value) != float.__repr__(value).encode():
                return False
        elif isinstance(value, (float, tuple)) or (  # a named tuple goes to ``default``
                isinstance(value, enum.Enum) and not isinstance(value, (str, int))):
            return False
    return True


def print_json(obj: Any) -> None:
    sys.stdout.write(json_text(obj) + "\n")


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
