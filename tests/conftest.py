"""Shared pytest configuration: corpus location and the ``rfc`` marker helper."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["tests.lab.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.fail(f"conformance corpus not found at {CORPUS} (expected ../shared/corpus)")
    return CORPUS
