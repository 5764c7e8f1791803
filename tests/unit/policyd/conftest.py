"""An in-memory DNS world and HTTPS fetcher for the policy engine (no network): the
package's twins, :class:`~smtptls.net.memory.MemoryResolver` and
:class:`~smtptls.net.memory.MemoryFetcher`.

Both are passed to :class:`PolicyEngine` through its ``dns`` and ``fetcher`` seams;
nothing is monkeypatched. Every lookup and fetch is counted, so tests can prove that a
cached answer caused no I/O.
"""

from __future__ import annotations

from collections import Counter

import pytest

from smtptls.dnssec import Security
from smtptls.net.memory import MemoryFetcher, MemoryResolver


class World(MemoryResolver):
    """The package's in-memory resolver plus an MTA-STS host (:class:`MemoryFetcher`):
    ``world`` is passed as ``dns`` and ``world.fetch`` as ``fetcher``."""

    def __init__(self) -> None:
        super().__init__()
        self.fetch = MemoryFetcher()

    @property
    def policies(self) -> dict[str, str | Exception]:
        return self.fetch.policies

    @property
    def fetches(self) -> Counter:
        return self.fetch.fetches

    @property
    def fetch_delay(self) -> float:
        return self.fetch.fetch_delay

    @fetch_delay.setter
    def fetch_delay(self, value: float) -> None:
        self.fetch.fetch_delay = value

    def sts(self, domain: str, record: str | None, body: str | Exception | None = None,
            *, ttl: int = 300) -> None:
        if record is not None:
            self.records[(f"_mta-sts.{domain}", "TXT")] = ((record,), Security.INSECURE, ttl)
        else:
            self.records.pop((f"_mta-sts.{domain}", "TXT"), None)
        if body is not None:
            self.policies[domain] = body

    @staticmethod
    def policy(*mx: str, mode: str = "enforce", max_age: int = 86400) -> str:
        lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx),
                 f"max_age: {max_age}"]
        return "\n".join(lines) + "\n"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def clock() -> Clock:
    return Clock()
