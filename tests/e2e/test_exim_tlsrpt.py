"""End to end: a real Exim 4.96 sends mail, its main log becomes RFC 8460 reports.

The lab's Exim (contrib/exim/ configuration, asking a real ``smtptls policyd``) delivers
to lab MXs under MTA-STS enforce (good certificate; wrong-name certificate: deferred),
MTA-STS testing (untrusted CA: delivered), DANE (matching TLSA; mismatching: deferred)
and no policy (good certificate; no STARTTLS: plaintext). The collector follows Exim's
main log (``log_format = "exim"``) and learns each domain's policy from the policy
daemon's own decision; the sender, its clock set to the next day, delivers one report
per domain to our own ``reports serve`` over HTTPS. The received numbers must match
what Exim logged (counted by the lab's own parser of Exim's log).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smtptls.config import CacheConfig, Config, DnsConfig, FetchConfig, ReportsConfig, TlsrptConfig
from smtptls.services.collector import CollectorService
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.services.sender import ReportSender
from smtptls.store.reports_sqlite import SqliteReportStore
from smtptls.store.results_base import DeliveryStatus
from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrptsend.aggregate import report_id
from tests.e2e.postfix_world import Policyd, sts_policy

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

_n = itertools.count()
SRC = str(Path(__file__).resolve().parents[2] / "src")
RUN = f"{os.getpid() % 10000}"


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}e{RUN}"


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory):
    from tests.lab import LabDomain, LabMx, PolicyHost

    workdir = tmp_path_factory.mktemp("exim-tlsrpt-e2e")
    daemon = Policyd(lab, workdir)
    daemon.start()
    ex = lab.exim(policyd=f"inet:127.0.0.1:{daemon.port}")
    try:
        yield lab, ex, workdir, LabDomain, LabMx, PolicyHost
    finally:
        ex.stop()
        daemon.stop()


def deliver(ex, domain: str, want: str) -> None:  # type: ignore[no-untyped-def]
    mid = ex.submit("sender@exim.lab.test", f"user@{domain}",
                    f"Subject: tlsrpt e2e {domain}\r\n\r\nhello\r\n")
    try:
        ex.wait_delivery(mid, timeout=40, statuses=(want,))
    finally:
        if want != "delivered":
            ex.remove(mid)


@pytest.mark.rfc("8460 4.3")
async def test_exim_log_to_reports_received_over_https(world, one_utc_day) -> None:
    lab, ex, workdir, LabDomain, LabMx, PolicyHost = world
    net = lab.exim_address.split(".")[1]
    https_intake = f"127.{net}.0.27"  # outside the lab's allocations (README address plan)
    secure, insecure = lab.ZONE_SECURE, lab.ZONE_INSECURE
    reports = f"{uniq('reports')}.{secure}"
    submitter = f"{uniq('mta')}.{secure}"
    lab.add(LabDomain(reports, records=[(reports, "A", https_intake)]))
    rua = f"v=TLSRPTv1; rua=https://{reports}/v1/tlsrpt"

    def d(prefix: str, zone: str) -> str:
        return f"{uniq(prefix)}.{zone}"

    sts_good, sts_test, sts_bad = d("stsgood", insecure), d("ststest", insecure), \
        d("stsbad", insecure)
    dane_good, dane_bad = d("danegood", secure), d("danebad", secure)
    plain, nopol = d("plain", insecure), d("nopol", insecure)
    txt = {"_mta-sts": ["v=STSv1; id=1"], "_smtp._tls": [rua]}
    lab.add(
        LabDomain(sts_good, mx=[LabMx(f"mx1.{sts_good}", cert="good")], txt=txt,
                  policy=PolicyHost(body=sts_policy(f"mx1.{sts_good}"))),
        LabDomain(sts_test, mx=[LabMx(f"mx1.{sts_test}", cert="untrusted")], txt=txt,
                  policy=PolicyHost(body=sts_policy(f"mx1.{sts_test}", mode="testing"))),
        LabDomain(sts_bad, mx=[LabMx(f"mx1.{sts_bad}", cert="wrong-name")], txt=txt,
                  policy=PolicyHost(body=sts_policy(f"mx1.{sts_bad}"))),
        LabDomain(dane_good, mx=[LabMx(f"mx1.{dane_good}", cert="self-signed",
                                       tlsa=["3 1 1 auto"])], txt={"_smtp._tls": [rua]}),
        LabDomain(dane_bad, mx=[LabMx(f"mx1.{dane_bad}", cert="self-signed",
                                      tlsa=["3 1 1 " + "ab" * 32])], txt={"_smtp._tls": [rua]}),
        LabDomain(plain, mx=[LabMx(f"mx1.{plain}", starttls=False)], txt={"_smtp._tls": [rua]}),
        LabDomain(nopol, mx=[LabMx(f"mx1.{nopol}", cert="good")], txt={"_smtp._tls": [rua]}),
    )

    host, port = lab.resolver
    cfg = Config(
        dns=DnsConfig(nameservers=(f"{host}:{port}",), timeout=3.0),
        fetch=FetchConfig(ca_file=str(lab.ca_file), connect_timeout=3.0, total_timeout=6.0),
        cache=CacheConfig(sqlite_path=str(workdir / "collector-cache.sqlite3")),
        reports=ReportsConfig(),
        tlsrpt=TlsrptConfig(
            submitter=submitter, organization_name="smtptls e2e",
            contact_info=f"tlsrpt@{submitter}",
            sqlite_path=str(workdir / "results.sqlite3"),
            log_files=(str(ex.log_file),), log_format="exim", http_listen=None,
            policy_source="policyd", sending_ip=lab.exim_address, flush_interval=0.1,
            ca_file=str(lab.ca_file), retention_days=0),
    )
    collector = CollectorService(cfg, from_start=True)
    await collector.start()
    store = SqliteReportStore(workdir / "received.sqlite3")
    await store.open()
    chain = lab.issue([reports], "good")
    service = ReportsService(cfg, ServeOptions(
        listen=f"{https_intake}:443", tls_cert=str(chain.chain_file),
        tls_key=str(chain.key_file), verify_dkim=False), store=store)
    await service.start()
    try:
        expect = {sts_good: "delivered", sts_test: "delivered", sts_bad: "deferred",
                  dane_good: "delivered", dane_bad: "deferred", plain: "delivered",
                  nopol: "delivered"}
        for domain, want in expect.items():
            await asyncio.to_thread(deliver, ex, domain, want)

        # what Exim did, from its log by the lab's parser: attempts that reached a host
        sessions = Counter(dl.recipient.rpartition("@")[2]
                           for dl in await asyncio.to_thread(ex.deliveries)
                           if dl.host is not None)
        assert all(sessions[dom] >= 1 for dom in expect), sessions

        today = datetime.now(UTC).date()

        async def collected() -> bool:
            await collector.collector.flush()
            tally = await collector.store.tally(today, domains=list(expect))
            got = Counter()
            for policy, (ok, bad) in tally.sessions.items():
                got[policy.policy_domain] += ok + bad
            return all(got[dom] == sessions[dom] for dom in expect)

        for _ in range(200):
            if await collected():
                break
            await asyncio.sleep(0.1)
        assert await collected()

        clock = datetime.now(UTC) + timedelta(days=1)
        sender = ReportSender(cfg, collector.store, dns=_resolver(cfg), clock=lambda: clock)
        summary = await sender.run_day(today, force=True)
        ours = [o for o in summary.outcomes if o.domain in expect]
        assert {o.domain for o in ours} == set(expect)
        assert all(o.status is DeliveryStatus.DELIVERED for o in ours), \
            [o.to_dict() for o in ours if o.status is not DeliveryStatus.DELIVERED]

        # Exim 4.96 with GnuTLS logs "certificate verification failed" without the cause
        # (docs/exim.md, TLSRPT): a wrong-name certificate under enforce is a
        # validation-failure; CV=no under testing is certificate-not-trusted
        failures = {
            sts_good: None, sts_test: "certificate-not-trusted",
            sts_bad: "validation-failure", dane_good: None, dane_bad: "tlsa-invalid",
            plain: "starttls-not-supported", nopol: None,
        }
        policy_types = {sts_good: "sts", sts_test: "sts", sts_bad: "sts", dane_good: "tlsa",
                        dane_bad: "tlsa", plain: "no-policy-found", nopol: "no-policy-found"}
        for domain, failure in failures.items():
            stored = await store.get_report(report_id(today, domain, submitter))
            assert stored is not None, (domain, await store.list_quarantine())
            n = sessions[domain]
            assert (stored.successful, stored.failed) == ((n, 0) if failure is None else (0, n))
            (policy,) = stored.policies
            assert policy.policy_type == policy_types[domain]
            assert policy.policy_domain == domain
            if failure is None:
                assert policy.failures == ()
            else:
                (detail,) = policy.failures
                assert detail.result_type == failure, ex.log_tail(60)
                assert detail.failed_session_count == n
                assert detail.receiving_mx_hostname == f"mx1.{domain}"
                assert detail.sending_mta_ip == lab.exim_address
    finally:
        await service.stop()
        await store.close()
        await collector.stop()


async def test_cli_collect_reads_exims_log(world) -> None:
    """``smtptls tlsrpt collect --log-format exim`` as a user runs it, over the log the
    lab's Exim wrote in this module (no policy source: every attempt no-policy-found)."""
    lab, ex, workdir, *_ = world
    attempts = [dl for dl in await asyncio.to_thread(ex.deliveries) if dl.host is not None]
    assert attempts, "the module's Exim delivered nothing"
    log = workdir / "cli-mainlog"
    log.write_text(ex.log())
    db = workdir / "cli-results.sqlite3"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", "tlsrpt", "collect", "--db", str(db),
        "--log-file", str(log), "--log-format", "exim", "--from-start", "--http", "off",
        "--policy-source", "none", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": SRC})
    try:
        total = 0
        for _ in range(200):
            await asyncio.sleep(0.1)
            if db.exists():
                async with SqliteResultStore(db) as store:
                    rows = await store.summaries()
                total = sum(r.successful + r.failed for r in rows)
                if total >= len(attempts):
                    break
        assert total == len(attempts)
        assert {r.policy_type for r in rows} == {"no-policy-found"}
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 20)
    assert proc.returncode == 0


def _resolver(cfg: Config):  # type: ignore[no-untyped-def]
    from smtptls.net.dns import DnsResolver

    return DnsResolver(cfg.dns)
