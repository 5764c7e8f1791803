"""Backends whose client library is an optional extra of the ``smtptls`` package.

``pip install smtptls`` brings what policyd needs on its embedded SQLite cache and no
more; the PostgreSQL and Redis clients come with the extras of the same names
(``pip install 'smtptls[postgres]'``, ``'smtptls[redis]'``, or ``'smtptls[all]'``).
The backend modules import their library at the top, and the store openers import a
backend module only when a configuration asks for it: :func:`import_backend` does that
import and turns a missing library into a :class:`~smtptls.errors.ConfigError` naming
the key that asked for it and the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from smtptls.errors import ConfigError

__all__ = ["EXTRA_OF", "import_backend", "missing_extra"]

#: top-level import name of an optional library -> the extra that installs it
EXTRA_OF = {"psycopg": "postgres", "psycopg_pool": "postgres", "redis": "redis"}


def missing_extra(exc: ImportError, *, key: str) -> ConfigError | None:
    """The error for an optional library that is not installed, else None."""
    top = (exc.name or "").partition(".")[0]
    extra = EXTRA_OF.get(top)
    if extra is None:
        return None
    return ConfigError(f"this backend needs the Python package {top!r}, which is not "
                       f"installed: install smtptls[{extra}] "
                       f"(pip install 'smtptls[{extra}]')", key=key)


def import_backend(module: str, *, key: str) -> ModuleType:
    """Import the backend ``module``; a missing optional library is a ConfigError."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = missing_extra(exc, key=key)
        if error is None:
            raise
        raise error from exc
