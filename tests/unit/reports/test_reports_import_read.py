"""How ``reports import`` reads a file and lists a maildir: bounded, one read per file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smtptls.errors import ReportError
from smtptls.services.report_import import ImportSummary, _maildir_sources, _read_capped
from smtptls.services.reports_server.intake import IntakeOutcome, Outcome


def test_a_file_is_read_whole_up_to_the_cap(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"x" * 1000)
    assert _read_capped(path, 1000) == b"x" * 1000
    assert _read_capped(path, 10**9) == b"x" * 1000
    (tmp_path / "empty").write_bytes(b"")
    assert _read_capped(tmp_path / "empty", 10) == b""


def test_one_byte_past_the_cap_is_refused(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"x" * 1001)
    with pytest.raises(ReportError, match="larger than 1000 bytes"):
        _read_capped(path, 1000)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_a_file_longer_than_its_stat_size_is_read_to_its_end_and_still_capped():
    # /proc files say 0 bytes and hold more: the reader must not trust the size.
    status = Path("/proc/self/status")
    data = _read_capped(status, 10**6)
    assert data.startswith(b"Name:") and len(data) > 100
    with pytest.raises(ReportError, match="larger than 50 bytes"):
        _read_capped(status, 50)


def test_what_cannot_be_read_is_a_report_error(tmp_path):
    with pytest.raises(ReportError, match="cannot read"):
        _read_capped(tmp_path, 100)  # a directory
    with pytest.raises(ReportError, match="cannot read"):
        _read_capped(tmp_path / "missing", 100)


def test_a_maildir_lists_its_messages_in_name_order_without_hidden_or_folders(tmp_path):
    for sub in ("new", "cur", "tmp"):
        (tmp_path / sub).mkdir()
    for name in ("b", "a", ".hidden"):
        (tmp_path / "cur" / name).write_bytes(b"m")
    (tmp_path / "new" / "z").write_bytes(b"m")
    (tmp_path / "cur" / "folder").mkdir()
    (tmp_path / "tmp" / "partial").write_bytes(b"m")
    os.symlink(tmp_path / "cur" / "a", tmp_path / "cur" / "c-link")
    names = [s.name for s in _maildir_sources(tmp_path, 100)]
    assert names == [str(tmp_path / "new" / "z"), str(tmp_path / "cur" / "a"),
                     str(tmp_path / "cur" / "b"), str(tmp_path / "cur" / "c-link")]


def test_an_import_summary_repr_leaves_out_its_listing():
    # asyncio's runner formats the repr of its task's result when it puts back the
    # SIGINT handler: a listing of every source there would cost a write of it all.
    outcome = IntakeOutcome(Outcome.STORED, 1, "r")
    summary = ImportSummary(sources=10_000, stored=10_000,
                            outcomes=[("/m/cur/x", outcome)] * 10_000,
                            errors=[("/m/cur/y", "cannot read")] * 10_000)
    assert "stored=10000" in repr(summary) and len(repr(summary)) < 200


async def test_an_import_prepared_under_other_limits_than_the_stores_is_refused_at_once(
        tmp_path):
    from smtptls.services.report_import import ImportOptions, import_paths
    from smtptls.store.reports_base import StoreLimits
    from smtptls.store.reports_sqlite import SqliteReportStore

    store = SqliteReportStore(tmp_path / "r.sqlite3", limits=StoreLimits(max_failure_rows=5))
    await store.open()
    try:
        options = ImportOptions(max_body=1000, max_decompressed=1000, limits=StoreLimits())
        with pytest.raises(ValueError, match="the store keeps"):
            await import_paths([tmp_path], store, options)
        assert (await store.counts())["reports"] == 0
    finally:
        await store.close()
