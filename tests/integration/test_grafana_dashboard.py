"""contrib/grafana/smtptls-reports.json is valid Grafana JSON and queries only metrics
that a real ``reports serve`` exports (scraped here from its /metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp

from smtptls.config import Config, ReportsConfig
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "smtptls-reports.json"
#: Prometheus functions and keywords are lower-case words too; metric names start here
METRIC = re.compile(r"\bsmtptls_[a-z0-9_]+\b")


def _exprs(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def test_dashboard_is_valid_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["title"] and dashboard["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        assert p["targets"] and all(t["expr"] for t in p["targets"])


async def test_every_metric_the_dashboard_queries_is_exported(tmp_path) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queried = {m for e in _exprs(dashboard) for m in METRIC.findall(e)}
    assert queried
    store = SqliteReportStore(tmp_path / "reports.sqlite3")
    await store.open()
    cfg = Config(reports=ReportsConfig(domains=("example.com",)))
    svc = ReportsService(cfg, ServeOptions(listen="127.0.0.1:0", verify_dkim=False),
                         store=store)
    await svc.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{svc.http_port}/metrics") as r:
                assert r.status == 200
                text = await r.text()
    finally:
        await svc.stop()
        await store.close()
    exported = {line.split("{")[0].split(" ")[0]
                for line in text.splitlines() if line and not line.startswith("#")}
    declared = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    missing = sorted(m for m in queried
                     if m not in exported and m not in declared
                     and m.removesuffix("_total") not in declared)
    assert missing == []
