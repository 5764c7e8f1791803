"""`check --bulk` tunes the cyclic garbage collector for its run and puts it back."""

from __future__ import annotations

import gc

from smtptls.cli.check import BULK_GC_THRESHOLD, _bulk_collector


def test_bulk_collector_settings_are_put_back_after_the_run() -> None:
    before, frozen = gc.get_threshold(), gc.get_freeze_count()
    with _bulk_collector():
        assert gc.get_threshold() == BULK_GC_THRESHOLD
        assert gc.get_freeze_count() >= frozen
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0  # unfrozen: the caller's objects are collectable again
