"""End to end on Postfix 3.10 with ``smtptls policyd``: the daemon's answers carry the
MTA-STS attributes, Postfix's own TLSRPT client (libtlsrpt) reports every handshake to
``smtptls tlsrpt collect --socket``, and the next day's reports reach our own
``reports serve`` over HTTPS and by DKIM-signed mail relayed through that same Postfix.

1. ``smtptls policyd`` runs with ``postfix_version = "3.10"`` and ``testing_reports =
   true``; Postfix 3.10 asks it over socketmap (``smtp_tls_security_level = dane``) and
   sends its TLSRPT datagrams to the collector's socket under the queue directory;
2. Postfix delivers to lab MXs under several policies: MTA-STS enforce (good
   certificate; wrong-name certificate: deferred), MTA-STS testing (certificate from an
   untrusted CA: delivered, reported under the testing policy), DANE (matching TLSA;
   mismatching TLSA: deferred), no policy;
3. the collector's results, per domain, equal Postfix's own ``TLSRPT:`` log lines, and
   carry the policy Postfix reported (type, policy strings, MX patterns): the policy
   the daemon named;
4. the sender, its clock on the next day, delivers one report per domain to the
   ``rua`` of its ``_smtp._tls`` record; the receivers' numbers are Postfix's, and the
   mailed ones are DKIM-verified against the key in the lab DNS; the report mails' own
   deliveries are not reported on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from smtptls.config import CacheConfig, Config, DnsConfig, FetchConfig, TlsrptConfig
from smtptls.mtasts.policy import Policy
from smtptls.net.dns import DnsResolver
from smtptls.services.collector import CollectorService
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.services.sender import ReportSender
from smtptls.store.reports_base import DkimStatus
from smtptls.store.reports_sqlite import SqliteReportStore
from smtptls.store.results_base import DeliveryStatus
from smtptls.tlsrptsend.aggregate import report_id
from tests.e2e.postfix_world import Policyd, deliver, sts_policy
from tests.e2e.test_postfix310_tlsrpt import TLSRPT_SOCKET, logged_sessions
from tests.e2e.test_postfix_tlsrpt import dkim_key

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

_n = itertools.count()
RUN = f"{os.getpid() % 10000}"


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}q{RUN}"


@pytest.mark.rfc("8460 4.4")
async def test_postfix310_policyd_datagrams_to_reports_over_https_and_mail(lab, tmp_path, one_utc_day
                                                                            ) -> None:
    from tests.lab import LabDomain, LabMx, PolicyHost

    net = lab.postfix_address.split(".")[1]
    smtp_intake, https_intake = f"127.{net}.0.28", f"127.{net}.0.29"  # README address plan
    secure, insecure = lab.ZONE_SECURE, lab.ZONE_INSECURE
    reports = f"{uniq('reports')}.{secure}"
    submitter = f"{uniq('mta')}.{secure}"
    pem, pub = dkim_key()
    (tmp_path / "dkim.pem").write_bytes(pem)
    lab.add(
        LabDomain(reports, records=[(reports, "A", https_intake),
                                    (reports, "MX", f"10 mx.{reports}."),
                                    (f"mx.{reports}", "A", smtp_intake)]),
        # RFC 8460 §3 / RFC 6376 §3.6.1: the submitter's key, usable for email and tlsrpt
        LabDomain(submitter, txt={"rpt._domainkey": [
            f"v=DKIM1; k=rsa; s=email:tlsrpt; p={pub}"]}),
    )
    https_rua = {"_smtp._tls": [f"v=TLSRPTv1; rua=https://{reports}/v1/tlsrpt"]}
    mail_rua = {"_smtp._tls": [f"v=TLSRPTv1; rua=mailto:tlsrpt@{reports}"]}

    def d(prefix: str, zone: str = insecure) -> str:
        return f"{uniq(prefix)}.{zone}"

    sts_good, sts_bad, sts_test = d("stsgood"), d("stsbad"), d("ststest")
    dane_good, dane_bad, nopol = d("danegood", secure), d("danebad", secure), d("nopol")
    policies: dict[str, Policy] = {}
    domains = []
    for name, cert, mode, rua in ((sts_good, "good", "enforce", https_rua),
                                  (sts_bad, "wrong-name", "enforce", https_rua),
                                  (sts_test, "untrusted", "testing", mail_rua)):
        body = sts_policy(f"mx1.{name}", mode=mode)
        policies[name] = Policy.parse(body)
        domains.append(LabDomain(name, mx=[LabMx(f"mx1.{name}", cert=cert)],
                                 txt={"_mta-sts": ["v=STSv1; id=1"], **rua},
                                 policy=PolicyHost(body=body)))
    domains += [
        LabDomain(dane_good, mx=[LabMx(f"mx1.{dane_good}", cert="self-signed",
                                       tlsa=["3 1 1 auto"])], txt=mail_rua),
        LabDomain(dane_bad, mx=[LabMx(f"mx1.{dane_bad}", cert="self-signed",
                                      tlsa=["3 1 1 " + "ab" * 32])], txt=https_rua),
        LabDomain(nopol, mx=[LabMx(f"mx1.{nopol}", cert="good")], txt=mail_rua),
    ]
    lab.add(*domains)

    daemon = Policyd(lab, tmp_path, policyd_extra='postfix_version = "3.10"\n'
                                                  "testing_reports = true\n")
    daemon.start()
    pf = lab.postfix(policy_map=f"socketmap:inet:127.0.0.1:{daemon.port}:postfix",
                     version="3.10", tlsrpt_socket=TLSRPT_SOCKET,
                     smtp_tls_security_level="dane",
                     smtp_tls_mandatory_protocols=">=TLSv1.2")
    host, port = lab.resolver
    cfg = Config(
        dns=DnsConfig(nameservers=(f"{host}:{port}",), timeout=3.0),
        fetch=FetchConfig(ca_file=str(lab.ca_file), connect_timeout=3.0, total_timeout=6.0),
        cache=CacheConfig(sqlite_path=str(tmp_path / "collector-cache.sqlite3")),
        tlsrpt=TlsrptConfig(
            socket_path=str(pf.tlsrpt_socket_path), socket_mode="0666",
            sqlite_path=str(tmp_path / "results.sqlite3"), http_listen=None,
            policy_source="none",  # the datagrams carry the policy Postfix was given
            flush_interval=0.1, sending_ip=pf.address, retention_days=0,
            submitter=submitter, organization_name="smtptls e2e 3.10 policyd",
            contact_info=f"tlsrpt@{submitter}", ca_file=str(lab.ca_file),
            smtp_relay=f"{pf.address}:25", dkim_selector="rpt",
            dkim_key_file=str(tmp_path / "dkim.pem")))
    collector = CollectorService(cfg)
    await collector.start()
    https_store = SqliteReportStore(tmp_path / "received-https.sqlite3")
    mail_store = SqliteReportStore(tmp_path / "received-mail.sqlite3")
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
        # --- 1-2. Postfix asks the daemon and delivers ----------------------------------
        assert daemon.query(sts_good).startswith(
            f"OK secure match=mx1.{sts_good} servername=hostname policy_type=sts ")
        assert daemon.query(sts_test).startswith("OK may policy_type=sts ")
        expect = {sts_good: "sent", sts_bad: "deferred", sts_test: "sent",
                  dane_good: "sent", dane_bad: "deferred", nopol: "sent"}
        for name, want in expect.items():
            await asyncio.to_thread(deliver, pf, name, want, tag="policyd tlsrpt 3.10")

        # --- 3. the collector's results are Postfix's log lines --------------------------
        today = datetime.now(UTC).date()

        async def matches() -> tuple[bool, list, object]:
            await collector.collector.flush()
            logged = [s for s in logged_sessions(pf.log()) if s.domain in expect]
            tally = await collector.store.tally(today, domains=list(expect))
            got: Counter[str] = Counter()
            for policy, (ok, bad) in tally.sessions.items():
                got[policy.policy_domain] += ok + bad
            return got == Counter(s.domain for s in logged), logged, tally

        for _ in range(150):
            same, logged, tally = await matches()
            if same:
                break
            await asyncio.sleep(0.1)
        assert same, (logged, tally.sessions)  # type: ignore[attr-defined]
        assert {s.domain for s in logged} == set(expect)
        by_domain = {p.policy_domain: (p, c) for p, c in tally.sessions.items()}  # type: ignore[attr-defined]
        kinds = {sts_good: "sts", sts_bad: "sts", sts_test: "sts", dane_good: "tlsa",
                 dane_bad: "tlsa", nopol: "no-policy-found"}
        for name in expect:
            policy, (ok, bad) = by_domain[name]
            mine = [s for s in logged if s.domain == name]
            assert (ok, bad) == (sum(s.status == "success" for s in mine),
                                 sum(s.status == "failure" for s in mine)), name
            assert str(policy.policy_type) == kinds[name], name
            if name in policies:
                # RFC 8460 §4.4: the policy the daemon named, as Postfix reported it
                assert policy.policy_strings == policies[name].lines()
                assert policy.mx_patterns == policies[name].mx
        failures = {name: {k[0] for k in tally.details.get(by_domain[name][0], {})}  # type: ignore[attr-defined]
                    for name in expect}
        assert failures[sts_bad] == {"certificate-host-mismatch"}
        assert failures[dane_bad] == {"certificate-not-trusted"}  # libtlsrpt's TLSA code
        # testing through "may": Postfix verifies nothing, so it reports a success
        assert failures[sts_good] == failures[sts_test] == failures[nopol] == set()

        # --- 4. the next day: reports over HTTPS and by DKIM-signed mail -----------------
        clock = datetime.now(UTC) + timedelta(days=1)
        sender = ReportSender(cfg, collector.store, dns=DnsResolver(cfg.dns),
                              clock=lambda: clock)
        summary = await sender.run_day(today, force=True)
        ours = [o for o in summary.outcomes if o.domain in expect]
        assert {o.domain for o in ours} == set(expect)
        assert all(o.status is DeliveryStatus.DELIVERED for o in ours), \
            [o.to_dict() for o in ours if o.status is not DeliveryStatus.DELIVERED]
        mailed = [sts_test, dane_good, nopol]
        for _ in range(300):
            if len(await mail_store.list_reports(limit=100)) >= len(mailed):
                break
            await asyncio.sleep(0.1)
        for name in expect:
            store = mail_store if name in mailed else https_store
            stored = await store.get_report(report_id(today, name, submitter))
            assert stored is not None, (name, await store.list_quarantine())
            ok, bad = by_domain[name][1]
            assert (stored.successful, stored.failed) == (ok, bad), name
            (row,) = stored.policies
            assert row.policy_type == kinds[name] and row.policy_domain == name
            if name in policies:
                assert row.policy_strings == policies[name].lines()
            if name in mailed:
                # RFC 8460 §3, §5.3: DKIM-signed by the submitter, verified against DNS
                assert stored.dkim == str(DkimStatus.PASS)
                assert stored.dkim_domain == submitter
            else:
                assert stored.channel == "https"
        # RFC 8460 §3: the report mails' own deliveries are not reported on
        report_deliveries = [dl for dl in await asyncio.to_thread(pf.deliveries)
                             if dl.recipient == f"tlsrpt@{reports}" and dl.status == "sent"]
        assert len(report_deliveries) == len(mailed)
        await asyncio.sleep(0.5)
        await collector.collector.flush()
        assert reports not in await collector.store.domains(today)
    finally:
        await https_service.stop()
        await mail_service.stop()
        await https_store.close()
        await mail_store.close()
        await collector.stop()
        pf.stop()
        daemon.stop()
