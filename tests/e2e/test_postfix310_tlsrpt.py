"""End to end on Postfix 3.10: real libtlsrpt datagrams into ``smtptls tlsrpt collect``.

The lab's second sending Postfix (Debian trixie's 3.10, linked with libtlsrpt; see
tests/lab/postfix310.py) reports every TLS handshake through libtlsrpt to the collector's
datagram socket, placed under the queue directory (``smtp_tlsrpt_socket_name =
run/tlsrpt/tlsrpt.sock``, the relative name TLSRPT_README recommends because it works
with or without a chrooted ``smtp``). Its TLS policy comes from a ``texthash`` table
written with the 3.10 answer renderer (``smtptls.services.policyd.postfix310``): the
MTA-STS attributes for ``secure`` answers, ``policy_failure`` for a policy that could
not be had, the attributes on ``may`` for a ``testing`` policy; DANE and plain
destinations get no entry (``smtp_tls_security_level = dane``).

What is checked, field by field, against Postfix's own ``TLSRPT: status=...`` log lines
for the same sessions (parsed here, independently of the project's parsers): the number
of successful and failed sessions per domain, each failure's result type, receiving MX
host name and IP, failure reason and sending address, and the policy (type, domain,
policy strings, MX patterns) Postfix was given — first in the collector's store, then in
the reports ``tlsrpt send`` delivers the next day to our own ``reports serve`` over
HTTPS (lab certificate, ``rua=https://...`` published in the lab DNS). Then, in a second scenario run on both
versions, the residual risk of docs/postfix.md: an MX outside the policy with a
certificate for a listed name is delivered to by 3.7 and refused by 3.10
(``smtp_tls_enforce_sts_mx_patterns = yes``), and a provider's multi-label wildcard
pattern works on both.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from smtptls.config import CacheConfig, Config, DnsConfig, FetchConfig, TlsrptConfig
from smtptls.mtasts.policy import Policy
from smtptls.services.collector import CollectorService
from smtptls.services.policyd.postfix310 import PolicyFailure, failure_answer, secure_answer
from smtptls.services.reports_server.server import ReportsService, ServeOptions
from smtptls.services.sender import ReportSender
from smtptls.store.reports_sqlite import SqliteReportStore
from smtptls.store.results_base import DeliveryStatus
from smtptls.tlsrptsend.aggregate import report_id
from tests.e2e.postfix_world import deliver, sts_policy

pytestmark = [pytest.mark.e2e, pytest.mark.lab]

_n = itertools.count()
RUN = f"{os.getpid() % 10000}"
TLSRPT_SOCKET = "run/tlsrpt/tlsrpt.sock"

# postfix/smtp[123]: TLSRPT: status=failure, domain=d, receiving_mx=host[ip],
#     failure_type=certificate_host_mismatch, failure_reason=...   (TLSRPT_README)
_TLSRPT_LINE = re.compile(
    r"postfix/\w+\[\d+\]: TLSRPT: status=(?P<status>success|failure), domain=(?P<domain>[^,]+),"
    r" receiving_mx=(?P<host>[^\[]+)\[(?P<ip>[^\]]+)\]"
    r"(?:, failure_type=(?P<type>[^,\s]+))?(?:, failure_reason=(?P<reason>\S+))?")


@dataclass(frozen=True)
class Logged:
    status: str
    domain: str
    host: str
    ip: str
    failure_type: str | None
    reason: str | None


def logged_sessions(log: str) -> list[Logged]:
    return [Logged(m["status"], m["domain"], m["host"], m["ip"], m["type"], m["reason"])
            for m in map(_TLSRPT_LINE.search, log.splitlines()) if m is not None]


def uniq(prefix: str) -> str:
    return f"{prefix}{next(_n)}p{RUN}"


def write_table(path: Path, answers: dict[str, str]) -> str:
    """A texthash policy table (key, whitespace, the answer to the end of the line)."""
    path.write_text("".join(f"{k} {v}\n" for k, v in answers.items()))
    return f"texthash:{path}"


def policy_line_base(*names: str) -> str:
    """The answer the daemon gives for an enforced policy today (docs/postfix.md)."""
    return f"secure match={':'.join(names)} servername=hostname"


@pytest.mark.parametrize("smtp_chroot", [False, True], ids=["smtp", "chrooted-smtp"])
async def test_postfix310_libtlsrpt_datagrams_match_the_log(lab, tmp_path, one_utc_day,
                                                            smtp_chroot: bool) -> None:
    from tests.lab import LabDomain, LabMx, PolicyHost

    zone, szone = lab.ZONE_INSECURE, lab.ZONE_SECURE
    # the reports go to our own "reports serve" over HTTPS, published in the lab DNS
    net = lab.postfix_address.split(".")[1]
    https_intake = f"127.{net}.0.27"  # outside the lab's allocations (README address plan)
    reports = f"{uniq('reports')}.{szone}"
    submitter = f"{uniq('mta')}.{szone}"
    lab.add(LabDomain(reports, records=[(reports, "A", https_intake)]))
    rua = {"_smtp._tls": [f"v=TLSRPTv1; rua=https://{reports}/v1/tlsrpt"]}

    def d(prefix: str, z: str = zone) -> str:
        return f"{uniq(prefix)}.{z}"

    sts_good, sts_bad, sts_untrusted = d("stsgood"), d("stsbad"), d("stsuntr")
    sts_fetch, sts_test = d("stsfetch"), d("ststest")
    dane_good, dane_bad, nopol = d("danegood", szone), d("danebad", szone), d("nopol")
    policies: dict[str, Policy] = {}
    domains = []
    for name, cert, mode in ((sts_good, "good", "enforce"), (sts_bad, "wrong-name", "enforce"),
                             (sts_untrusted, "untrusted", "enforce"),
                             (sts_test, "wrong-name", "testing")):
        body = sts_policy(f"mx1.{name}", mode=mode)
        policies[name] = Policy.parse(body)
        domains.append(LabDomain(name, mx=[LabMx(f"mx1.{name}", cert=cert)],
                                 txt={"_mta-sts": ["v=STSv1; id=1"], **rua},
                                 policy=PolicyHost(body=body)))
    domains += [
        LabDomain(sts_fetch, mx=[LabMx(f"mx1.{sts_fetch}", cert="good")],
                  txt={"_mta-sts": ["v=STSv1; id=1"], **rua},
                  policy=PolicyHost(body=sts_policy(f"mx1.{sts_fetch}"), status=500)),
        LabDomain(dane_good, mx=[LabMx(f"mx1.{dane_good}", cert="self-signed",
                                       tlsa=["3 1 1 auto"])], txt=rua),
        LabDomain(dane_bad, mx=[LabMx(f"mx1.{dane_bad}", cert="self-signed",
                                      tlsa=["3 1 1 " + "ab" * 32])], txt=rua),
        LabDomain(nopol, mx=[LabMx(f"mx1.{nopol}", cert="good")], txt=rua),
    ]
    lab.add(*domains)
    answers = {name: secure_answer(policy_line_base(f"mx1.{name}"), policies[name], name)
               for name in (sts_good, sts_bad, sts_untrusted)}
    # MTA-STS testing: Postfix 3.10 has no "verify, report, deliver anyway"; "may" with
    # the attributes reports the sessions under the testing policy (docs/postfix.md)
    answers[sts_test] = secure_answer("may", policies[sts_test], sts_test)
    # no policy could be had: policy_failure, which Postfix enforces at "secure"
    answers[sts_fetch] = failure_answer(policy_line_base(f"mx1.{sts_fetch}"), sts_fetch,
                                        PolicyFailure.STS_POLICY_FETCH_ERROR)
    table = write_table(tmp_path / "tls_policy", answers)

    pf = lab.postfix(policy_map=table, version="3.10", tlsrpt_socket=TLSRPT_SOCKET,
                     smtp_chroot=smtp_chroot, smtp_tls_security_level="dane",
                     smtp_tls_mandatory_protocols=">=TLSv1.2")
    assert pf.tlsrpt_socket_path is not None
    host, port = lab.resolver
    cfg = Config(
        dns=DnsConfig(nameservers=(f"{host}:{port}",), timeout=3.0),
        fetch=FetchConfig(ca_file=str(lab.ca_file), connect_timeout=3.0, total_timeout=6.0),
        cache=CacheConfig(sqlite_path=str(tmp_path / "cache.sqlite3")),
        tlsrpt=TlsrptConfig(socket_path=str(pf.tlsrpt_socket_path), socket_mode="0666",
                            sqlite_path=str(tmp_path / "results.sqlite3"),
                            http_listen=None, policy_source="none", flush_interval=0.1,
                            sending_ip=pf.address, retention_days=0,
                            submitter=submitter, organization_name="smtptls e2e 3.10",
                            contact_info=f"tlsrpt@{submitter}", ca_file=str(lab.ca_file)))
    collector = CollectorService(cfg)
    await collector.start()
    store = SqliteReportStore(tmp_path / "received.sqlite3")
    await store.open()
    chain = lab.issue([reports], "good")
    intake = ReportsService(cfg, ServeOptions(
        listen=f"{https_intake}:443", tls_cert=str(chain.chain_file),
        tls_key=str(chain.key_file), verify_dkim=False), store=store)
    await intake.start()
    try:
        expect = {sts_good: "sent", sts_bad: "deferred", sts_untrusted: "deferred",
                  sts_fetch: "deferred", sts_test: "sent", dane_good: "sent",
                  dane_bad: "deferred", nopol: "sent"}
        for name, want in expect.items():
            await asyncio.to_thread(deliver, pf, name, want, tag="tlsrpt 3.10")
        assert lab.messages(f"mx1.{sts_test}")  # testing: delivered despite the certificate

        today = datetime.now(UTC).date()

        async def tally_matches_log() -> tuple[bool, list[Logged], object]:
            await collector.collector.flush()
            logged = [s for s in logged_sessions(pf.log()) if s.domain in expect]
            tally = await collector.store.tally(today, domains=list(expect))
            got = Counter()
            for policy, (ok, bad) in tally.sessions.items():
                got[policy.policy_domain] += ok + bad
            return got == Counter(s.domain for s in logged), logged, tally

        for _ in range(150):
            same, logged, tally = await tally_matches_log()
            if same:
                break
            await asyncio.sleep(0.1)
        assert same, (logged, tally.sessions)  # type: ignore[attr-defined]
        # every destination was reported (a handshake happened for each)
        assert {s.domain for s in logged} == set(expect)

        by_domain = {p.policy_domain: (p, counts) for p, counts in tally.sessions.items()}  # type: ignore[attr-defined]
        assert set(by_domain) == set(expect)  # one applied policy per domain
        kinds = {sts_good: "sts", sts_bad: "sts", sts_untrusted: "sts", sts_fetch: "sts",
                 sts_test: "sts", dane_good: "tlsa", dane_bad: "tlsa",
                 nopol: "no-policy-found"}
        for name in expect:
            policy, (ok, bad) = by_domain[name]
            mine = [s for s in logged if s.domain == name]
            # counts: Postfix's log and the datagrams agree, session by session
            assert (ok, bad) == (sum(s.status == "success" for s in mine),
                                 sum(s.status == "failure" for s in mine)), name
            assert str(policy.policy_type) == kinds[name]
            if name in policies:
                # RFC 8460 §4.4: the policy strings and patterns Postfix was given
                assert policy.policy_strings == tuple(
                    line for line in policies[name].to_text().split("\r\n") if line)
                assert policy.mx_patterns == policies[name].mx
            elif name == sts_fetch:
                assert policy.policy_strings == () and policy.mx_patterns == ()
            elif kinds[name] == "tlsa":
                assert policy.policy_strings and all(
                    s.startswith("3 1 1 ") for s in policy.policy_strings)
            # failure details: type, MX host and IP, reason, sending address
            details = tally.details.get(policy, {})  # type: ignore[attr-defined]
            want = Counter(
                (s.failure_type.replace("_", "-") if s.failure_type else None,
                 s.host, s.ip, s.reason) for s in mine if s.status == "failure")
            got = Counter()
            for key, count in details.items():
                rtype, sending, host, helo, ip, _info, reason = key
                assert sending == pf.address
                assert helo == host  # the name the MX greeted with (libtlsrpt "h")
                got[(rtype, host, ip, reason)] += count
            assert got == want, name

        failures = {name: {k[0] for k in tally.details.get(by_domain[name][0], {})}  # type: ignore[attr-defined]
                    for name in expect}
        assert failures[sts_bad] == {"certificate-host-mismatch"}
        assert failures[sts_untrusted] == {"validation-failure"}
        assert failures[sts_fetch] == {"sts-policy-fetch-error"}
        assert failures[dane_bad] == {"certificate-not-trusted"}  # Postfix's code for TLSA
        assert failures[sts_good] == failures[sts_test] == failures[nopol] == set()
        assert collector.datagrams is not None

        # --- the next day: reports built from the datagrams, received over HTTPS -----------
        from smtptls.net.dns import DnsResolver

        clock = datetime.now(UTC) + timedelta(days=1)
        sender = ReportSender(cfg, collector.store, dns=DnsResolver(cfg.dns),
                              clock=lambda: clock)
        summary = await sender.run_day(today, force=True)
        ours = [o for o in summary.outcomes if o.domain in expect]
        assert {o.domain for o in ours} == set(expect)
        assert all(o.status is DeliveryStatus.DELIVERED for o in ours), \
            [o.to_dict() for o in ours if o.status is not DeliveryStatus.DELIVERED]
        for name in expect:
            stored = await store.get_report(report_id(today, name, submitter))
            assert stored is not None, name
            assert stored.channel == "https"
            mine = [s for s in logged if s.domain == name]
            # RFC 8460 §4.4: the received counts are Postfix's, per its log
            assert (stored.successful, stored.failed) == (
                sum(s.status == "success" for s in mine),
                sum(s.status == "failure" for s in mine)), name
            (row,) = stored.policies
            assert row.policy_type == kinds[name] and row.policy_domain == name
            if name in policies:
                assert row.policy_strings == by_domain[name][0].policy_strings
                assert row.mx_hosts == policies[name].mx
            assert Counter((f.result_type, f.receiving_mx_hostname, f.receiving_ip)
                           for f in row.failures for _ in range(f.failed_session_count)) == \
                Counter((s.failure_type.replace("_", "-"), s.host, s.ip)
                        for s in mine if s.status == "failure" and s.failure_type), name
            assert all(f.sending_mta_ip == pf.address for f in row.failures)
    finally:
        await intake.stop()
        await store.close()
        await collector.stop()
        pf.stop()


@pytest.mark.rfc("8461 4.1")
@pytest.mark.parametrize("version", ["3.7", "3.10"])
def test_rfc8461_4_1_mx_outside_policy_with_listed_name_certificate(lab, tmp_path,
                                                                     version: str) -> None:
    """The residual risk of docs/postfix.md, per version.

    The domain's MX record names ``rogue.<d>``, which is not in the policy; its address is
    the receiver of ``mx1.<d>``, whose certificate is valid for the listed ``mx1.<d>``.
    3.7 checks the certificate against ``match=mx1.<d>`` only and delivers (the risk
    Postfix's 3.7 syntax cannot close); 3.10 with the MTA-STS attributes and
    ``smtp_tls_enforce_sts_mx_patterns = yes`` (its default) does not connect.
    The provider wildcard row (``*.mail.protection.<d>``, one label below it) delivers
    on both.
    """
    from tests.lab import LabDomain, LabMx, PolicyHost

    rogue = f"{uniq('rogue' + version.replace('.', ''))}.{lab.ZONE_INSECURE}"
    wild = f"{uniq('wild' + version.replace('.', ''))}.{lab.ZONE_INSECURE}"
    tenant = f"tenant.mail.protection.{wild}"
    rogue_body = sts_policy(f"mx1.{rogue}")
    wild_body = sts_policy(f"*.mail.protection.{wild}")
    sts = {"_mta-sts": ["v=STSv1; id=1"]}
    lab.add(LabDomain(rogue, mx=[LabMx(f"mx1.{rogue}", cert="good", publish_mx=False)],
                      txt=sts, policy=PolicyHost(body=rogue_body)),
            LabDomain(wild, mx=[LabMx(tenant, cert="good")], txt=sts,
                      policy=PolicyHost(body=wild_body)))
    address = lab.address_of(f"mx1.{rogue}")
    lab.add(LabDomain(rogue, mx=[LabMx(f"mx1.{rogue}", cert="good", publish_mx=False)],
                      txt=sts, policy=PolicyHost(body=rogue_body),
                      records=[(rogue, "MX", f"10 rogue.{rogue}."),
                               (f"rogue.{rogue}", "A", address)]))
    rogue_base = policy_line_base(f"mx1.{rogue}")
    wild_base = policy_line_base(tenant)
    if version == "3.10":
        answers = {rogue: secure_answer(rogue_base, Policy.parse(rogue_body), rogue),
                   wild: secure_answer(wild_base, Policy.parse(wild_body), wild)}
    else:  # 3.7 refuses the 3.10 attributes ("invalid attribute name")
        answers = {rogue: rogue_base, wild: wild_base}
    table = write_table(tmp_path / "tls_policy", answers)
    pf = lab.postfix(policy_map=table, version=version, smtp_tls_security_level="dane",
                     smtp_tls_mandatory_protocols=">=TLSv1.2")
    try:
        lab.clear_messages(f"mx1.{rogue}")
        if version == "3.10":
            result = deliver(pf, rogue, "deferred", tag="mx patterns")
            assert result.relay in (None, "none")
            assert f"MX name 'rogue.{rogue}' does not match STS MX pattern" in pf.log()
            assert lab.messages(f"mx1.{rogue}") == []
        else:
            result = deliver(pf, rogue, "sent", tag="mx patterns")
            assert result.relay is not None and result.relay.startswith(f"rogue.{rogue}[")
            assert result.tls is not None and result.tls.level == "Verified"
        # RFC 8461 §4.1: "*.mail.protection.<d>" covers exactly one more label
        ok = deliver(pf, wild, "sent", tag="provider wildcard")
        assert ok.relay is not None and ok.relay.startswith(f"{tenant}[")
        assert ok.tls is not None and ok.tls.level == "Verified"
    finally:
        pf.stop()


def test_postfix37_refuses_the_310_attributes(lab, tmp_path) -> None:
    """Why ``postfix_version`` defaults to "3.7": Postfix before 3.10 defers the mail."""
    from tests.lab import LabDomain, LabMx, PolicyHost

    d = f"{uniq('attr37')}.{lab.ZONE_INSECURE}"
    body = sts_policy(f"mx1.{d}")
    lab.add(LabDomain(d, mx=[LabMx(f"mx1.{d}", cert="good")],
                      txt={"_mta-sts": ["v=STSv1; id=1"]}, policy=PolicyHost(body=body)))
    answer = secure_answer(policy_line_base(f"mx1.{d}"), Policy.parse(body), d)
    pf = lab.postfix(policy_map=write_table(tmp_path / "tls_policy", {d: answer}),
                     version="3.7", smtp_tls_security_level="dane")
    try:
        result = deliver(pf, d, "deferred", tag="3.10 attributes on 3.7")
        assert result.detail == "client TLS configuration problem"
        assert 'invalid attribute name: "policy_type"' in pf.log()
        assert lab.messages(f"mx1.{d}") == []
    finally:
        pf.stop()



@pytest.mark.rfc("8461 4.2")
@pytest.mark.parametrize("version", ["3.7", "3.10"])
def test_rfc8461_4_2_listed_mx_with_another_listed_hosts_certificate(lab, tmp_path,
                                                                    version: str) -> None:
    """The second residual risk of docs/postfix.md, per version.

    The policy and DNS list ``mx2.<d>`` (preference 10) and ``mx1.<d>`` (20); ``mx2``'s
    address serves ``mx1``'s certificate. RFC 8461 §4.2 wants the certificate valid for
    the host connected to. The answer is the same on both versions
    (``match=mx2.<d>:mx1.<d>``, the MX hosts matching the policy): 3.7 accepts ``mx1``'s
    certificate from ``mx2``; 3.10 with the attributes matches it against the MX host
    name, refuses ``mx2`` and delivers to ``mx1``.
    """
    from tests.lab import LabDomain, LabMx, PolicyHost

    d = f"{uniq('swap' + version.replace('.', ''))}.{lab.ZONE_INSECURE}"
    body = sts_policy(f"mx1.{d}", f"mx2.{d}")
    sts = {"_mta-sts": ["v=STSv1; id=1"]}
    mx1 = LabMx(f"mx1.{d}", cert="good", publish_mx=False)
    lab.add(LabDomain(d, mx=[mx1], txt=sts, policy=PolicyHost(body=body)))
    address = lab.address_of(f"mx1.{d}")
    lab.add(LabDomain(d, mx=[mx1], txt=sts, policy=PolicyHost(body=body),
                      records=[(d, "MX", f"10 mx2.{d}."), (d, "MX", f"20 mx1.{d}."),
                               (f"mx2.{d}", "A", address)]))
    base = policy_line_base(f"mx2.{d}", f"mx1.{d}")
    answer = secure_answer(base, Policy.parse(body), d) if version == "3.10" else base
    pf = lab.postfix(policy_map=write_table(tmp_path / "tls_policy", {d: answer}),
                     version=version, smtp_tls_security_level="dane",
                     smtp_tls_mandatory_protocols=">=TLSv1.2")
    try:
        result = deliver(pf, d, "sent", tag="certificate of another listed host")
        assert result.tls is not None and result.tls.level == "Verified"
        assert result.relay is not None
        if version == "3.10":
            assert result.relay.startswith(f"mx1.{d}[")  # mx2 refused: mx1's certificate
            assert f"server certificate verification failed for mx2.{d}[" in pf.log()
        else:
            assert result.relay.startswith(f"mx2.{d}[")  # the residual risk
    finally:
        pf.stop()
