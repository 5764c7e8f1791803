"""The console's "run smtptls check" button: own domains only, the real check, live.

A lab domain is configured as an own domain of ``reports serve``; its domain page
offers the button; posting it runs :mod:`smtptls.check` against the lab (DNS through
the lab resolver, the policy host and MX with the lab CA) and shows the report. A name
that is not an own domain is refused before anything is looked up.
"""

from __future__ import annotations

import aiohttp
import pytest

from smtptls.config import Config, DnsConfig, FetchConfig, ReportsConfig
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.store.reports_sqlite import SqliteReportStore

pytestmark = pytest.mark.lab


async def test_own_domain_check_from_the_console(lab, tmp_path) -> None:
    from tests.lab import LabDomain, LabMx, PolicyHost

    d = f"console-check.{lab.ZONE_INSECURE}"
    body = f"version: STSv1\nmode: enforce\nmx: mx1.{d}\nmax_age: 86400\n"
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]}, policy=PolicyHost(body=body)))
    host, port = lab.resolver
    cfg = Config(dns=DnsConfig(nameservers=(f"{host}:{port}",), timeout=3.0),
                 fetch=FetchConfig(ca_file=str(lab.ca_file)),
                 reports=ReportsConfig(domains=(d,)))
    store = SqliteReportStore(tmp_path / "reports.sqlite3")
    await store.open()
    svc = ReportsService(cfg, ServeOptions(listen="127.0.0.1:0", verify_dkim=False),
                         store=store)
    await svc.start()
    base = f"http://127.0.0.1:{svc.http_port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/domain", params={"name": d}) as r:
                page = await r.text()
            assert 'action="/domain/check"' in page  # the button, on an own domain
            async with session.post(f"{base}/domain/check", data={"name": d}) as r:
                assert r.status == 200
                text = await r.text()
            assert 'id="check-report"' in text and d in text
            assert "error(s)" in text and "MTA-STS: enforce" in text
            # never a target from the browser: other names are refused, nothing looked up
            async with session.post(f"{base}/domain/check",
                                    data={"name": "elsewhere.example"}) as r:
                assert r.status == 404
    finally:
        await svc.stop()
        await store.close()
