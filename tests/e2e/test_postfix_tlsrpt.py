"""End to end: a real Postfix sends mail, its log becomes RFC 8460 reports, we receive them.

The lab (tests/lab) runs DNS (NSD + validating Unbound), MTA-STS policy hosts, STARTTLS
receivers and a private Postfix asking a real ``smtptls policyd`` process for its TLS
policy (``smtp_tls_security_level = dane``, ``smtp_tls_loglevel = 1``). Then:

1. Postfix delivers to lab MXs under several policies: MTA-STS enforce (good
   certificate; wrong-name certificate: deferred), MTA-STS testing (certificate from
   an untrusted CA: delivered), DANE (matching TLSA; mismatching TLSA: deferred), and no
   policy (good certificate; no STARTTLS: plaintext);
2. the collector follows Postfix's log file and learns each domain's policy from the
   policy daemon's own decision (``policy_source = "policyd"``);
3. the sender, with its clock set to the next day, builds one report per domain and
   delivers it to the ``rua`` of each domain's ``_smtp._tls`` record: to our own
   ``reports serve`` over HTTPS (lab certificate), or by DKIM-signed mail through that
   same Postfix as relay to our own SMTP intake, which verifies the signature against
   the key published in a lab zone;
4. the receivers' numbers must match what Postfix did (counted from its log by the
   lab's own parser, independently of ours), and the deliveries of the report mails
   themselves must not be reported on.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from smtptls.config import (
    CacheConfig,
    Config,
    DnsConfig,
    FetchConfig,
    ReportsConfig,
    TlsrptConfig,
)
from smtptls.services.collector import CollectorService
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.services.sender import ReportSender
from smtptls.store.reports_base import DkimStatus
from smtptls.store.reports_sqlite import SqliteReportStore
from smtptls.store.results_base import DeliveryStatus
from smtptls.tlsrptsend.aggregate import report_id
from tests.e2e.postfix_world import Policyd, deliver, postfix_with_policyd, sts_policy

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

_n = itertools.count()
RUN = f"{os.getpid() % 10000}"


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}r{RUN}"


def dkim_key() -> tuple[bytes, str]:
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM,
                          serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


@pytest.fixture(scope="module")
def world(lab, tmp_path_factory):
    from tests.lab import LabDomain, LabMx, PolicyHost

    workdir = tmp_path_factory.mktemp("tlsrpt-e2e")
    with postfix_with_policyd(lab, Policyd(lab, workdir)) as pf:
        yield lab, pf, workdir, LabDomain, LabMx, PolicyHost


@pytest.mark.rfc("8460 5.3")
async def test_postfix_log_to_reports_received_over_https_and_mail(world, one_utc_day) -> None:
    lab, pf, workdir, LabDomain, LabMx, PolicyHost = world
    net = lab.postfix_address.split(".")[1]
    smtp_intake = f"127.{net}.0.25"  # outside the lab's allocations (README address plan)
    https_intake = f"127.{net}.0.26"
    secure, insecure = lab.ZONE_SECURE, lab.ZONE_INSECURE

    # --- the receiving side: our own intake, published in the lab DNS ------------------
    reports = f"{uniq('reports')}.{secure}"
    submitter = f"{uniq('mta')}.{secure}"
    pem, pub = dkim_key()
    (workdir / "dkim.pem").write_bytes(pem)
    lab.add(
        LabDomain(reports, records=[
            (reports, "A", https_intake),
            (reports, "MX", f"10 mx.{reports}."),
            (f"mx.{reports}", "A", smtp_intake)]),
        # RFC 8460 §5.3 / RFC 6376: the submitter's key, service type tlsrpt
        LabDomain(submitter, txt={"rpt._domainkey": [f"v=DKIM1; k=rsa; s=tlsrpt; p={pub}"]}),
    )
    https_rua = f"v=TLSRPTv1; rua=https://{reports}/v1/tlsrpt"
    mail_rua = f"v=TLSRPTv1; rua=mailto:tlsrpt@{reports}"

    # --- the destinations, one per policy --------------------------------------------------
    def d(prefix: str, zone: str) -> str:
        return f"{uniq(prefix)}.{zone}"

    sts_good, sts_test, sts_bad = d("stsgood", insecure), d("ststest", insecure), \
        d("stsbad", insecure)
    dane_good, dane_bad = d("danegood", secure), d("danebad", secure)
    plain, nopol = d("plain", insecure), d("nopol", insecure)
    lab.add(
        LabDomain(sts_good, mx=[LabMx(f"mx1.{sts_good}", cert="good")],
                  txt={"_mta-sts": ["v=STSv1; id=1"], "_smtp._tls": [https_rua]},
                  policy=PolicyHost(body=sts_policy(f"mx1.{sts_good}"))),
        LabDomain(sts_test, mx=[LabMx(f"mx1.{sts_test}", cert="untrusted")],
                  txt={"_mta-sts": ["v=STSv1; id=1"], "_smtp._tls": [mail_rua]},
                  policy=PolicyHost(body=sts_policy(f"mx1.{sts_test}", mode="testing"))),
        LabDomain(sts_bad, mx=[LabMx(f"mx1.{sts_bad}", cert="wrong-name")],
                  txt={"_mta-sts": ["v=STSv1; id=1"], "_smtp._tls": [https_rua]},
                  policy=PolicyHost(body=sts_policy(f"mx1.{sts_bad}"))),
        LabDomain(dane_good, mx=[LabMx(f"mx1.{dane_good}", cert="self-signed",
                                       tlsa=["3 1 1 auto"])],
                  txt={"_smtp._tls": [mail_rua]}),
        LabDomain(dane_bad, mx=[LabMx(f"mx1.{dane_bad}", cert="self-signed",
                                      tlsa=["3 1 1 " + "ab" * 32])],
                  txt={"_smtp._tls": [https_rua]}),
        LabDomain(plain, mx=[LabMx(f"mx1.{plain}", starttls=False)],
                  txt={"_smtp._tls": [https_rua]}),
        LabDomain(nopol, mx=[LabMx(f"mx1.{nopol}", cert="good")],
                  txt={"_smtp._tls": [mail_rua]}),
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
            log_files=(str(pf.log_file),), http_listen=None, policy_source="policyd",
            sending_ip=lab.postfix_address, flush_interval=0.1,
            ca_file=str(lab.ca_file), smtp_relay=f"{lab.postfix_address}:25",
            dkim_selector="rpt", dkim_key_file=str(workdir / "dkim.pem"),
            retention_days=0),
    )

    # the collector follows Postfix's log from its start
    collector = CollectorService(cfg, from_start=True)
    await collector.start()
    https_store = SqliteReportStore(workdir / "received-https.sqlite3")
    mail_store = SqliteReportStore(workdir / "received-mail.sqlite3")
    await https_store.open()
    await mail_store.open()
    chain = lab.issue([reports], "good")
    https_service = ReportsService(cfg, ServeOptions(
        listen=f"{https_intake}:443", tls_cert=str(chain.chain_file),
        tls_key=str(chain.key_file), verify_dkim=False), store=https_store)
    mail_service = ReportsService(cfg, ServeOptions(
        listen=None, smtp=f"{smtp_intake}:25", verify_dkim=True, require_dkim=True),
        store=mail_store)
    await https_service.start()
    await mail_service.start()
    try:
        # --- 1. Postfix delivers (one destination at a time) -------------------------------
        expect = {sts_good: "sent", sts_test: "sent", sts_bad: "deferred",
                  dane_good: "sent", dane_bad: "deferred", plain: "sent", nopol: "sent"}
        for domain, want in expect.items():
            await asyncio.to_thread(deliver, pf, domain, want, tag="tlsrpt e2e")

        # what Postfix did, from its log, by the lab's parser: sessions per domain
        sessions = Counter(dl.recipient.rpartition("@")[2]
                           for dl in await asyncio.to_thread(pf.deliveries)
                           if dl.relay and dl.relay != "none")
        assert all(sessions[dom] >= 1 for dom in expect), sessions

        # --- 2. the collector has them all --------------------------------------------------
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

        # --- 3. the next day, the sender delivers the reports --------------------------------
        clock = datetime.now(UTC) + timedelta(days=1)
        sender = ReportSender(cfg, collector.store, dns=_resolver(cfg), clock=lambda: clock)
        summary = await sender.run_day(today, force=True)
        ours = [o for o in summary.outcomes if o.domain in expect]
        assert {o.domain for o in ours} == set(expect)
        assert all(o.status is DeliveryStatus.DELIVERED for o in ours), \
            [o.to_dict() for o in ours if o.status is not DeliveryStatus.DELIVERED]

        # the mail reports travel through Postfix to the SMTP intake
        mailed = [sts_test, dane_good, nopol]
        for _ in range(300):
            if len(await mail_store.list_reports(limit=100)) >= len(mailed):
                break
            await asyncio.sleep(0.1)

        # --- 4. the receivers' numbers are what Postfix did ----------------------------------
        # MTA-STS testing: Postfix delivers at its opportunistic level and logs only
        # "Untrusted TLS connection" (no verification detail): certificate-not-trusted
        failures = {
            sts_good: None, sts_test: "certificate-not-trusted",
            sts_bad: "certificate-host-mismatch", dane_good: None, dane_bad: "tlsa-invalid",
            plain: "starttls-not-supported", nopol: None,
        }
        policy_types = {sts_good: "sts", sts_test: "sts", sts_bad: "sts", dane_good: "tlsa",
                        dane_bad: "tlsa", plain: "no-policy-found", nopol: "no-policy-found"}
        for domain, failure in failures.items():
            store = mail_store if domain in mailed else https_store
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
                assert detail.result_type == failure, _log_of(pf, domain)
                assert detail.failed_session_count == n
                assert detail.receiving_mx_hostname == f"mx1.{domain}"
                assert detail.sending_mta_ip == lab.postfix_address
            if domain in mailed:
                # RFC 8460 §5.3: DKIM-signed by the submitter, verified against lab DNS
                assert stored.dkim == str(DkimStatus.PASS)
                assert stored.dkim_domain == submitter
                assert stored.submitter == submitter
            else:
                assert stored.channel == "https"
        assert {p.policy_strings[1] for d2 in (sts_good, sts_bad)
                for p in (await https_store.get_report(report_id(today, d2, submitter))
                          ).policies} == {"mode: enforce"}

        # --- 5. no loops: the report mails' own deliveries are not reported ----------------
        report_deliveries = [dl for dl in await asyncio.to_thread(pf.deliveries)
                             if dl.recipient == f"tlsrpt@{reports}" and dl.status == "sent"]
        assert len(report_deliveries) == len(mailed)
        for _ in range(100):
            await collector.collector.flush()
            if collector.ingest.parser.stats["own_dropped"] >= len(mailed):
                break
            await asyncio.sleep(0.1)
        assert collector.ingest.parser.stats["own_dropped"] >= len(mailed)
        assert reports not in await collector.store.domains(today)
    finally:
        await https_service.stop()
        await mail_service.stop()
        await https_store.close()
        await mail_store.close()
        await collector.stop()


def _log_of(pf, domain: str) -> str:  # type: ignore[no-untyped-def]
    """Postfix's log lines about ``domain`` and its smtp processes (for failures)."""
    lines = pf.log().splitlines()
    pids = {line.split("[", 1)[1].split("]", 1)[0] for line in lines
            if domain in line and "postfix/smtp[" in line}
    return "\n".join(line for line in lines
                     if domain in line or any(f"smtp[{p}]" in line for p in pids))


def _resolver(cfg: Config):  # type: ignore[no-untyped-def]
    from smtptls.net.dns import DnsResolver

    return DnsResolver(cfg.dns)
