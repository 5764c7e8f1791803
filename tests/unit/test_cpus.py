"""Every worker pool sizes itself from one count: the CPUs this process may run on."""

from __future__ import annotations

import os

import pytest

from smtptls.cpus import usable_cpus
from smtptls.services import report_import
from smtptls.services.reports_server import parse_pool


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux affinity")
def test_pools_follow_the_affinity_mask() -> None:
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(saved)})  # as `taskset -c N` or a cgroup would
        assert usable_cpus() == 1
        assert report_import.default_workers() == 1  # one parser process
        assert parse_pool.default_workers() == 0  # the event loop keeps the one CPU
    finally:
        os.sched_setaffinity(0, saved)
    assert usable_cpus() == len(saved)
    assert parse_pool.default_workers() == len(saved) - 1
