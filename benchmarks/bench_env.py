"""The environment a benchmark starts a command in: byte-code caches kept, as installed.

A package installed by pip has its byte code compiled at install time (every peer in
``.peers/`` has); smtptls runs from ``src/``. With ``PYTHONDONTWRITEBYTECODE`` set (some
machines set it) every start of ours would compile each module again and the benchmark
would time the compiler, so it is unset and the caches go to the git-ignored
``.peers/pycache`` (a source tree that cannot be written still gets them).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bytecode_env(**extra: str) -> dict[str, str]:
    """``os.environ`` with byte-code caches on, plus ``extra``."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(ROOT / ".peers" / "pycache"), **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
