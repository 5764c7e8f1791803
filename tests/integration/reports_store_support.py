"""The report store tests' shared setup: a store of each kind (SQLite, a real PostgreSQL
in a schema of its own, dropped afterwards), report records and intakes."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from smtptls.errors import StoreError
from smtptls.store.reports_base import (
    Channel,
    DkimStatus,
    Intake,
    ReportRecord,
    ReportStore,
    StoreLimits,
)
from smtptls.store.reports_postgres import PostgresReportStore
from smtptls.store.reports_sqlite import SqliteReportStore

PG_DSN = os.environ.get("SMTPTLS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2024, 6, 2, 8, 0, tzinfo=UTC)


def record(report_id: str, ok: int, failed: int, org: str = "Reporter", *, indent: int | None = None) -> ReportRecord:
    import json

    data = {"organization-name": org, "report-id": report_id, "contact-info": "x@y",
            "date-range": {"start-datetime": "2024-06-01T00:00:00Z", "end-datetime": "2024-06-01T23:59:59Z"},
            "policies": [{"policy": {"policy-type": "sts", "policy-domain": "v.example"},
                          "summary": {"total-successful-session-count": ok,
                                      "total-failure-session-count": failed},
                          "failure-details": [{"result-type": "starttls-not-supported",
                                               "failed-session-count": failed}]}]}
    return ReportRecord.from_dict(data, raw_json=json.dumps(data, indent=indent))


def via(channel: Channel, dkim: DkimStatus = DkimStatus.NOT_CHECKED, at: datetime = T0) -> Intake:
    return Intake(channel, at, remote="192.0.2.1", dkim=dkim)


async def open_store(kind: str, tmp_path, limits: StoreLimits | None = None, *, schema: str | None = None
                     ) -> ReportStore:
    if kind == "sqlite":
        s: ReportStore = SqliteReportStore(tmp_path / "reports.sqlite3", limits=limits)
    else:
        s = PostgresReportStore(PG_DSN, schema=schema or f"test_conflicts_{uuid.uuid4().hex[:12]}",
                                limits=limits)
    try:
        await s.open()
    except StoreError as exc:
        pytest.fail(f"{kind} report store unavailable: {exc}")
    return s


async def close_store(s: ReportStore) -> None:
    if isinstance(s, PostgresReportStore):
        await s.drop_schema()
    await s.close()


KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@asynccontextmanager
async def opened(kind: str, tmp_path, limits: StoreLimits | None = None, *,
                 schema: str | None = None) -> AsyncIterator[ReportStore]:
    """:func:`open_store`, closed (its PostgreSQL schema dropped) on the way out."""
    s = await open_store(kind, tmp_path, limits, schema=schema)
    try:
        yield s
    finally:
        await close_store(s)
