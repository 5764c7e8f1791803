"""pytest plugin: the session-scoped ``lab`` fixture (loaded from tests/conftest.py).

The lab starts on first use only, so test runs that need no lab pay nothing. It is
stopped by the fixture finalizer, and by an ``atexit`` hook if the session dies early.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from .daemons import TOOL_PATH
from .lab import Lab
from .model import LabError

REQUIRED = ("nsd", "unbound", "dnssec-signzone", "dnssec-keygen")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    missing = [t for t in REQUIRED if shutil.which(t, path=os.environ.get("PATH", "") + ":" + TOOL_PATH) is None]
    if missing:
        pytest.fail(f"the lab needs {', '.join(missing)} (run scripts/install-system.sh)")
    instance = Lab()
    try:
        instance.start()
    except LabError as exc:
        pytest.fail(f"lab did not start: {exc}")
    try:
        yield instance
    finally:
        instance.close()
