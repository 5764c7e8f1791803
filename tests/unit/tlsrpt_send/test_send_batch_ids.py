"""Client batch ids and log positions as values: checked when built, decided purely."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from smtptls.errors import ResultError, StoreError
from smtptls.store.results_base import (
    MAX_BATCH_ID,
    Batch,
    BatchOutcome,
    LogPosition,
    check_batch_id,
    fold,
    keyed_outcome,
)
from smtptls.tlsrpt.report import PolicyType
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

NOW = datetime(2024, 5, 1, 10, tzinfo=UTC)
STS = AppliedPolicy(PolicyType.STS, "example.com", ("version: STSv1", "mode: enforce"),
                    ("*.mail.example.com",))


def results(n: int, failed: int = 0) -> list[SessionResult]:
    return [SessionResult.success(NOW, STS) for _ in range(n)] + [
        SessionResult.failure(NOW, STS, "certificate-expired", mx_host="mx.example.com",
                              receiving_ip="192.0.2.1") for _ in range(failed)]


@pytest.mark.parametrize("batch_id, ok", [
    pytest.param("mta1-000042", True, id="plain"),
    pytest.param("0f8e2a1c-uuid-like", True, id="uuid"),
    pytest.param("x" * MAX_BATCH_ID, True, id="longest"),
    pytest.param("", False, id="empty"),
    pytest.param("x" * (MAX_BATCH_ID + 1), False, id="too-long"),
    pytest.param("a b", False, id="space"),
    pytest.param("é", False, id="not-ascii"),
    pytest.param("a\r\nb", False, id="control"),
])
def test_batch_id_shape(batch_id, ok):
    if ok:
        assert check_batch_id(batch_id) == batch_id
    else:
        with pytest.raises(ResultError, match="batch id"):
            check_batch_id(batch_id)


@pytest.mark.parametrize("stored, same, outcome", [
    pytest.param(None, True, BatchOutcome.STORED, id="new-id"),
    pytest.param("same", True, BatchOutcome.DUPLICATE, id="retry"),
    pytest.param("other", False, BatchOutcome.CONFLICT, id="reused-id"),
])
def test_keyed_outcome(stored, same, outcome):
    digest = fold(results(3)).digest()
    stored_digest = None if stored is None else (digest if same else fold(results(4)).digest())
    assert keyed_outcome(stored_digest, digest) is outcome


def test_digest_is_of_the_counters_not_their_order():
    a, b = fold(results(2, 1)), fold(list(reversed(results(2, 1))))
    assert a.digest() == b.digest()
    assert a.digest() != fold(results(2, 2)).digest()
    assert a.digest() != fold(results(3, 1)).digest()


def test_merge_and_unkeyed():
    batch = fold(results(2))
    assert batch.unkeyed() is batch  # nothing keyed: written as it is
    batch.keyed.append(("k", fold(results(1, 1))))
    work = batch.unkeyed()
    assert work is not batch and work.results == 2
    work.merge(batch.keyed[0][1])
    assert work == fold(results(3, 1))
    assert batch.results == 2  # the batch itself is left as it was


def test_empty_batch_and_positions():
    assert Batch().empty
    assert not Batch(positions={"log": LogPosition(1, 2, 0)}).empty
    assert not Batch(keyed=[("k", Batch())]).empty
    with pytest.raises(StoreError):
        LogPosition(1, 2, -1)
