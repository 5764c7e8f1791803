"""The collector on real sockets and files: libtlsrpt datagrams, HTTP, log tailing, API."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
import tempfile
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from smtptls.config import Config, TlsrptConfig
from smtptls.errors import ConfigError, StoreError
from smtptls.services.collector import (
    Collector,
    CollectorService,
    DatagramListener,
    JournalFollower,
    LogFollower,
    LogIngest,
    SendingAddress,
    StaticPolicyLookup,
    context_from_explanation,
    parse_http_results,
)
from smtptls.store.results_sqlite import SqliteResultStore
from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate, build_reports
from smtptls.tlsrptsend.libtlsrpt import datagram_for, encode_datagram
from smtptls.tlsrptsend.postfix_lines import report_message_id
from smtptls.tlsrptsend.postfix_results import PolicyContext
from smtptls.tlsrptsend.results import AppliedPolicy, SessionResult

#: Results made here carry NOW, so their day is TODAY whenever the test runs.
NOW = datetime.now(UTC).replace(microsecond=0)
TODAY = NOW.date()
IDENTITY = ReportIdentity.with_defaults("mta.sender.example")
STS_LINES = ("version: STSv1", "mode: enforce", "mx: *.mail.example.com", "max_age: 86400")
STS = AppliedPolicy(PolicyType.STS, "example.com", STS_LINES, ("*.mail.example.com",))
CONTEXT = PolicyContext("example.com", "sts", "enforce", STS_LINES, ("*.mail.example.com",))
CIPHER = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 108 bytes: pytest's tmp_path can be longer
    d = tempfile.mkdtemp(prefix="tlsrpt-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def store(tmp_path):
    s = SqliteResultStore(tmp_path / "results.sqlite3")
    await s.open()
    yield s
    await s.close()


def results(n: int) -> list[SessionResult]:
    out = []
    for i in range(n):
        if i % 4 == 3:
            out.append(SessionResult.failure(NOW, STS, "certificate-expired",
                                             mx_host="mx1.mail.example.com",
                                             receiving_ip="192.0.2.10",
                                             sending_mta_ip="198.51.100.1"))
        else:
            out.append(SessionResult.success(NOW, STS))
    return out


# --- libtlsrpt datagrams ---------------------------------------------------------------------------


async def test_libtlsrpt_datagrams_over_a_unix_socket(store, short_dir):
    collector = Collector(store, flush_interval=0.05)
    collector.start()
    listener = DatagramListener(collector, short_dir / "tlsrpt.sock", mode=0o620,
                                clock=lambda: NOW)
    await listener.start()
    assert oct(os.stat(short_dir / "tlsrpt.sock").st_mode & 0o777) == "0o620"
    sent = results(40)

    def mta() -> None:
        # another process in real life (blocking sends, as libtlsrpt in blocking mode)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            for r in sent:
                client.sendto(encode_datagram(datagram_for(r)), str(short_dir / "tlsrpt.sock"))
            client.sendto(b'{"d": "not json', str(short_dir / "tlsrpt.sock"))
        finally:
            client.close()

    await asyncio.to_thread(mta)
    for _ in range(100):
        if listener.datagrams == 41:
            break
        await asyncio.sleep(0.02)
    await collector.flush()
    await collector.stop()
    await listener.stop()
    assert not (short_dir / "tlsrpt.sock").exists()
    assert (listener.datagrams, listener.bad) == (41, 1)
    assert build_reports(await store.tally(TODAY), IDENTITY) == aggregate(sent, TODAY, IDENTITY)


async def test_datagram_socket_path_taken_by_a_file(store, short_dir):
    (short_dir / "x.sock").write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        await DatagramListener(Collector(store), short_dir / "x.sock").start()


async def test_stale_socket_replaced(store, short_dir):
    path = short_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.close()  # the file stays behind, as after a crash
    listener = DatagramListener(Collector(store), path)
    await listener.start()
    await listener.stop()
    assert listener.bad == 0


# --- Python API and the writer ---------------------------------------------------------------------


async def test_api_record_returns_after_commit(store):
    collector = Collector(store, flush_interval=10.0)  # a waiter is written at once
    collector.start()
    try:
        await asyncio.wait_for(collector.record(results(1)[0]), 5)
        assert (await store.tally(TODAY)).total() == (1, 0)
        # many concurrent callers share transactions (group commit)
        await asyncio.gather(*(collector.record(r) for r in results(200)))
        assert (await store.tally(TODAY)).total() == (151, 50)
        assert collector.metrics.batches._value.get() < 200
    finally:
        await collector.stop()


async def test_api_drops_our_own_report_mail(store):
    collector = Collector(store)
    collector.start()
    try:
        mid = report_message_id("abc.0", "mta.sender.example")
        assert await collector.record_many(results(3), message_id=f"<{mid}>") == 0
        assert await collector.record_many(results(3), message_id="<other@x>") == 3
    finally:
        await collector.stop()


async def test_fire_and_forget_batched_by_interval(store):
    collector = Collector(store, flush_interval=0.2, batch_size=1000)
    collector.start()
    try:
        for r in results(30):
            collector.submit([r])
        await asyncio.sleep(0.05)
        assert (await store.tally(TODAY)).total() == (0, 0)  # still gathering
        await collector.flush()
        assert (await store.tally(TODAY)).total() == (23, 7)
        assert collector.metrics.batches._value.get() == 1
    finally:
        await collector.stop()


async def test_backlog_bounded(store):
    collector = Collector(store, max_pending=10, flush_interval=5)
    collector.start()
    try:
        assert collector.submit(results(8)) == 8
        assert collector.submit(results(5)) == 0  # dropped, counted
        assert collector.metrics.dropped.labels("backlog")._value.get() == 5
        with pytest.raises(StoreError, match="backlog"):
            await collector.record_many(results(5))
    finally:
        await collector.stop()
    assert (await store.tally(TODAY)).total() == (6, 2)


class FlakyStore:
    """Fails its first writes, then works: fire-and-forget results must survive."""

    def __init__(self, inner, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def add_batch(self, batch):
        if self.failures:
            self.failures -= 1
            raise StoreError("database is down")
        return await self.inner.add_batch(batch)


async def test_store_outage_retries_queued_and_fails_waiters(store):
    collector = Collector(FlakyStore(store, failures=2), flush_interval=0.01)
    collector.start()
    try:
        with pytest.raises(StoreError, match="not stored"):
            await collector.record(results(1)[0])
        collector.submit(results(4))
        await asyncio.wait_for(collector.flush(), 10)
        assert (await store.tally(TODAY)).total() == (3, 1)
        assert collector.metrics.store_errors._value.get() == 2
    finally:
        await collector.stop()


# --- HTTP ----------------------------------------------------------------------------------------------


def config(tmp_path, **tlsrpt) -> Config:
    base = {"http_listen": "127.0.0.1:0", "sqlite_path": str(tmp_path / "r.sqlite3"),
            "flush_interval": 0.05, "policy_source": "none"}
    return Config(tlsrpt=TlsrptConfig(**(base | tlsrpt)))


async def test_http_endpoint(tmp_path, store):
    service = CollectorService(config(tmp_path, http_token="s3cret"), store=store)
    await service.start()
    url = f"http://127.0.0.1:{service.http_port}"
    auth = {"Authorization": "Bearer s3cret"}
    try:
        async with aiohttp.ClientSession() as http:
            body = {"results": [r.to_dict() for r in results(8)]}
            async with http.post(f"{url}/v1/results", json=body) as resp:
                assert resp.status == 401
            async with http.post(f"{url}/v1/results", json=body, headers=auth) as resp:
                assert resp.status == 200
                assert (await resp.json())["stored"] == 8
            # 200 means committed: the store has it already
            assert (await store.tally(TODAY)).total() == (6, 2)
            one = results(1)[0].to_dict()
            async with http.post(f"{url}/v1/results", json=one, headers=auth) as resp:
                assert (await resp.json())["stored"] == 1
            own = dict(one, **{"message-id": "<" + report_message_id("x.1",
                                                                     "mta.sender.example")
                               + ">"})
            async with http.post(f"{url}/v1/results", json=[own], headers=auth) as resp:
                assert (await resp.json()) == {"status": "stored", "stored": 0,
                                               "dropped_own": 1}
            bad = [one, {"time": "2024-05-01T00:00:00Z", "policy": {"policy-type": "x",
                                                                    "policy-domain": "a.b"}}]
            async with http.post(f"{url}/v1/results", json=bad, headers=auth) as resp:
                assert resp.status == 400
                assert "results[1]" in (await resp.json())["reason"]
            async with http.post(f"{url}/v1/results", data=b"x" * (5 * 1024 * 1024),
                                 headers=auth) as resp:
                assert resp.status == 413
            async with http.get(f"{url}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"{url}/metrics", headers=auth) as resp:
                assert b"smtptls_tlsrpt_results_stored_total 9.0" in await resp.read()
    finally:
        await service.stop()
    assert (await store.tally(TODAY)).total() == (7, 2)


async def test_http_503_when_store_is_down(tmp_path, store):
    service = CollectorService(config(tmp_path), store=FlakyStore(store, failures=10**6))
    await service.start()
    try:
        async with aiohttp.ClientSession() as http, http.post(
                f"http://127.0.0.1:{service.http_port}/v1/results",
                json=results(1)[0].to_dict()) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "30"
    finally:
        await service.stop()


def test_http_beyond_loopback_needs_a_token(tmp_path):
    service = CollectorService(config(tmp_path, http_listen="0.0.0.0:8462"))
    with pytest.raises(ConfigError, match="token"):
        service.check()
    with pytest.raises(ConfigError, match="nothing to collect"):
        CollectorService(config(tmp_path, http_listen=None)).check()


def test_parse_http_results_forms():
    one = results(1)[0].to_dict()
    assert len(parse_http_results(json.dumps(one).encode(), NOW)[0]) == 1
    assert len(parse_http_results(json.dumps([one, one]).encode(), NOW)[0]) == 2
    no_time = {k: v for k, v in one.items() if k != "time"}
    (r,), own = parse_http_results(json.dumps({"results": [no_time]}).encode(), NOW)
    assert r.time == NOW and own == 0


# --- Postfix logs --------------------------------------------------------------------------------------


def pf(pid: int, text: str) -> str:
    t = datetime.now().astimezone()
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S} mta postfix/smtp[{pid}]: {text}\n"


def delivered(pid: int, qid: str, mx: str = "mx1.mail.example.com[192.0.2.10]:25") -> str:
    return (pf(pid, f"Verified TLS connection established to {mx}: {CIPHER}")
            + pf(pid, f"{qid}: to=<bob@example.com>, relay={mx}, delay=0.4, "
                      "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)"))


async def until(predicate, limit: float = 5.0) -> None:
    for _ in range(int(limit / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def collect_whole_log(store, log, lookup, sessions: int, limit: float = 5.0) -> None:
    """Follow ``log`` from its start through a collector into ``store`` until it holds
    ``sessions`` sessions, then stop both."""
    collector = Collector(store, flush_interval=0.01)
    collector.start()
    ingest = LogIngest(collector, lookup, sending=SendingAddress("198.51.100.1"))
    follower = LogFollower(ingest, log, poll=0.01, from_start=True)
    follower.start()

    async def done():
        await collector.flush()
        return await _sum(store, sessions)

    try:
        await until(done, limit)
    finally:
        await follower.stop()
        await collector.stop()


async def test_log_follower_rotation_and_truncation(store, tmp_path):
    log = tmp_path / "mail.log"
    log.write_text(delivered(1, "AAAA000001"))  # before start: not read (tail from the end)
    collector = Collector(store, flush_interval=0.01)
    collector.start()
    ingest = LogIngest(collector, StaticPolicyLookup([CONTEXT]),
                       sending=SendingAddress("198.51.100.1"))
    follower = LogFollower(ingest, log, poll=0.01)
    follower.start()

    async def total(n):
        await collector.flush()
        return await _sum(store, n)

    try:
        with log.open("a") as f:
            f.write(delivered(2, "AAAA000002"))
        await until(lambda: total(1))
        # logrotate: rename, the writer still appends to the old file, then a new file
        os.rename(log, tmp_path / "mail.log.1")
        with (tmp_path / "mail.log.1").open("a") as f:
            f.write(delivered(3, "AAAA000003"))
        log.write_text(delivered(4, "AAAA000004"))
        await until(lambda: total(3))
        assert follower.rotations == 1
        # copytruncate: the file is emptied in place
        with log.open("r+") as f:
            f.truncate(0)
        await asyncio.sleep(0.05)
        log.write_text(delivered(5, "AAAA000005"))
        await until(lambda: total(4))
        assert follower.truncations == 1
        # a line written in two parts is read once it is complete
        line = delivered(6, "AAAA000006")
        with log.open("a") as f:
            f.write(line[:50])
            f.flush()
            await asyncio.sleep(0.05)
            f.write(line[50:])
        await until(lambda: total(5))
    finally:
        await follower.stop()
        await collector.stop()
    tally = await _latest_tally(store)
    (policy,) = tally.sessions
    assert policy == STS


async def test_log_follower_from_start_and_failures(store, tmp_path):
    log = tmp_path / "mail.log"
    mx = "mx1.mail.example.com[192.0.2.10]:25"
    log.write_text(
        pf(7, f"server certificate verification failed for {mx}: certificate has expired")
        + pf(7, f"Untrusted TLS connection established to {mx}: {CIPHER}")
        + pf(7, "BBBB000001: to=<bob@example.com>, relay=" + mx + ", delay=1, delays=1/0/0/0, "
                "dsn=4.7.5, status=deferred (Server certificate not verified)")
        + delivered(8, "BBBB000002"))
    await collect_whole_log(store, log, StaticPolicyLookup([CONTEXT]), 2)
    (report,) = build_reports(await _latest_tally(store), IDENTITY)
    (p,) = report.policies
    assert (p.total_successful_session_count, p.total_failure_session_count) == (1, 1)
    assert p.failure_details[0].result_type is ResultType.CERTIFICATE_EXPIRED
    assert p.failure_details[0].sending_mta_ip == "198.51.100.1"


def _recent_days() -> tuple[date, date]:
    """Yesterday and today (UTC), read now: log lines are stamped by the wall clock when
    written, so a test running over midnight finds its sessions on either day."""
    today = datetime.now(UTC).date()
    return today - timedelta(days=1), today


async def _sum(store, n):
    return sum([sum((await store.tally(d)).total()) for d in _recent_days()]) == n


async def _latest_tally(store):
    """The tally of the most recent day that holds sessions (see ``_recent_days``)."""
    yesterday, today = _recent_days()
    tally = await store.tally(today)
    return tally if sum(tally.total()) else await store.tally(yesterday)


FAKE_JOURNALCTL = textwrap.dedent("""
    import json, sys, time
    now = int(time.time() * 1e6)
    mx = "mx1.mail.example.com[192.0.2.10]:25"
    for i, msg in enumerate([
        f"Verified TLS connection established to {mx}: TLSv1.3 with cipher X (256/256 bits)",
        f"CCCC000001: to=<bob@example.com>, relay={mx}, delay=1, delays=1/0/0/0, dsn=2.0.0, "
        "status=sent (250 Ok)",
    ]):
        print(json.dumps({"SYSLOG_IDENTIFIER": "postfix/smtp", "_PID": "99",
                          "__REALTIME_TIMESTAMP": str(now + i), "MESSAGE": msg}), flush=True)
    print("not json", flush=True)
    time.sleep(30)
""")


async def test_journal_follower_runs_journalctl_with_an_argument_list(store, tmp_path):
    script = tmp_path / "journalctl.py"
    script.write_text(FAKE_JOURNALCTL)
    collector = Collector(store, flush_interval=0.01)
    collector.start()
    ingest = LogIngest(collector, StaticPolicyLookup([CONTEXT]), source="journal")
    follower = JournalFollower(ingest, argv=[sys.executable, str(script)])
    follower.start()
    try:
        async def done():
            await collector.flush()
            return await _sum(store, 1)
        await until(done, 10)
    finally:
        await follower.stop()
        await collector.stop()
    assert follower.entries == 2


# --- policy contexts from a policy daemon decision -----------------------------------------------------


def test_context_from_policyd_explanation():
    from smtptls.dane.decide import MxDecision, Requirement
    from smtptls.dane.tlsa import TLSARecord
    from smtptls.engine.destination import (
        Decision,
        DecisionKind,
        DestinationFacts,
        HostFacts,
        NextHop,
    )
    from smtptls.engine.mtasts_discovery import Discovery, Outcome
    from smtptls.errors import FetchStatusError, FetchTlsError, PolicySyntaxError
    from smtptls.mtasts import Mode, Policy
    from smtptls.mtasts.cache_logic import Action
    from smtptls.mtasts.record import StsRecord
    from smtptls.services.policyd.decide import Explanation

    hop = NextHop.parse("example.net")
    usable = MxDecision("mx1.example.net", Requirement.DANE_REQUIRED, "usable-tlsa", "",
                        all_records=(TLSARecord.from_text("3 1 1 aabb"),))
    insecure = MxDecision("mx2.example.net", Requirement.NO_DANE, "address-insecure", "")
    facts = DestinationFacts(hop, hosts=(HostFacts("mx1.example.net", 10, usable),
                                         HostFacts("mx2.example.net", 20, insecure)))
    dane = Decision(DecisionKind.DANE, "dane", "tlsa")
    ctx = context_from_explanation("example.net", Explanation("example.net", dane, None, facts))
    assert ctx.kind == "tlsa" and ctx.tlsa_records == {"mx1.example.net": ("3 1 1 aabb",)}
    assert ctx.applied("mx1.example.net").policy_type is PolicyType.TLSA
    assert ctx.applied("mx2.example.net").policy_type is PolicyType.NO_POLICY_FOUND

    policy = Policy("STSv1", Mode.TESTING, 86400, ("*.mail.example.com",))
    disc = Discovery("example.com", Outcome.FETCHED, Action.FETCH, policy=policy, policy_id="1")
    testing = Decision(DecisionKind.TESTING, None, "testing")
    ctx = context_from_explanation("example.com", Explanation("example.com", testing, None,
                                                              None, disc))
    assert (ctx.kind, ctx.sts_mode, ctx.mx_patterns) == ("sts", "testing",
                                                         ("*.mail.example.com",))
    assert ctx.sts_strings == ("version: STSv1", "mode: testing", "mx: *.mail.example.com",
                               "max_age: 86400")

    record = StsRecord.parse("v=STSv1; id=1")
    notfound = Decision(DecisionKind.NOTFOUND, None, "fetch failed")
    for error, expected in ((FetchTlsError("x"), ResultType.STS_WEBPKI_INVALID),
                            (FetchStatusError("404", status=404),
                             ResultType.STS_POLICY_FETCH_ERROR),
                            (PolicySyntaxError("bad"), ResultType.STS_POLICY_INVALID)):
        disc = Discovery("example.com", Outcome.FETCH_FAILED, Action.FETCH, record=record,
                         fetch_error=error)
        ctx = context_from_explanation("example.com", Explanation("example.com", notfound,
                                                                  None, None, disc))
        assert ctx.sts_failure is expected
        assert ctx.applied("mx.example.com").policy_type is PolicyType.STS
    nothing = Discovery("example.org", Outcome.NO_POLICY, Action.NO_POLICY)
    ctx = context_from_explanation("example.org", Explanation("example.org", notfound, None,
                                                              None, nothing))
    assert ctx == PolicyContext("example.org")


@pytest.fixture
def lab_env(request):
    try:
        lab = request.getfixturevalue("lab")
    except pytest.FixtureLookupError:  # pragma: no cover - the lab plugin is loaded
        pytest.skip("test lab not available")
    from tests.lab import LabDomain, LabMx, PolicyHost

    return lab, LabDomain, LabMx, PolicyHost


@pytest.mark.lab
@pytest.mark.rfc("8461 6")
async def test_rfc8461_6_failed_refresh_under_cached_policy_reported(lab_env, store, tmp_path):
    """A policy is cached, a new id is published and its policy host answers 503: the
    sessions of the day are judged under the cached policy (RFC 8461 §3.3) and the
    report also carries the fetch failure (§6, RFC 8460 §4.3.2.2) under that policy."""
    from smtptls.config import CacheConfig, DnsConfig, FetchConfig, PolicydConfig
    from smtptls.engine.mtasts_discovery import Outcome
    from smtptls.net.dns import DnsResolver
    from smtptls.services.collector import EnginePolicyLookup
    from smtptls.services.policyd.decide import PolicyEngine
    from smtptls.store import MemoryPolicyCache

    lab, LabDomain, LabMx, PolicyHost = lab_env
    d = f"refresh{os.getpid()}.{lab.ZONE_INSECURE}"
    mx = f"mx1.{d}"
    body = f"version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n"

    def publish(record_id: str, status: int) -> None:
        lab.add(LabDomain(d, mx=[LabMx(mx)], txt={"_mta-sts": [f"v=STSv1; id={record_id}"]},
                          policy=PolicyHost(body=body, status=status)))

    host, port = lab.resolver
    cfg = Config(dns=DnsConfig(nameservers=(f"{host}:{port}",), timeout=3.0),
                 fetch=FetchConfig(ca_file=str(lab.ca_file), connect_timeout=3.0,
                                   total_timeout=5.0),
                 cache=CacheConfig(lru_size=1000), policyd=PolicydConfig(testing_answer=None))
    cache = MemoryPolicyCache()
    engine = PolicyEngine(cfg, dns=DnsResolver(cfg.dns), cache=cache)
    publish("1", 200)
    first = await engine.explain(d)
    assert first.discovery.outcome is Outcome.FETCHED
    publish("2", 503)  # a new policy announced, its host failing

    address = lab.address_of(mx)
    relay = f"{mx}[{address}]:25"
    log = tmp_path / "mail.log"
    log.write_text("".join(
        pf(20 + i, f"Verified TLS connection established to {relay}: {CIPHER}")
        + pf(20 + i, f"EEEE00000{i}: to=<bob@{d}>, relay={relay}, delay=0.4, "
                     "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)")
        for i in range(3)))
    await collect_whole_log(store, log, EnginePolicyLookup(engine), 3, limit=20)
    assert (await cache.get(d)).policy_id == "1"  # the cached policy stayed in force
    (report,) = build_reports(await _latest_tally(store), IDENTITY)
    (p,) = report.policies
    assert (p.policy_type, p.policy_domain) == (PolicyType.STS, d)
    assert p.policy_string == tuple(body.splitlines())  # the cached policy, id 1
    assert p.mx_host == (mx,)
    # RFC 8460 §4.4: three TLS negotiations, all successful under the cached policy
    assert (p.total_successful_session_count, p.total_failure_session_count) == (3, 0)
    (detail,) = p.failure_details
    assert detail.result_type is ResultType.STS_POLICY_FETCH_ERROR
    assert detail.failed_session_count == 3  # the sessions sent while it failed
    assert "503" in detail.failure_reason_code
    assert detail.failure_reason_code.endswith("; cached policy applied")
    assert detail.sending_mta_ip == "198.51.100.1"


def test_sending_address_configured_or_routed():
    assert SendingAddress("198.51.100.1").for_destination("192.0.2.1") == "198.51.100.1"
    assert SendingAddress(None).for_destination("127.0.0.1") == "127.0.0.1"
    assert SendingAddress(None).for_destination(None) is None


def test_log_backlog_taken_in_bounded_steps(tmp_path):
    log = tmp_path / "big.log"
    log.write_text("".join(delivered(i, f"DDDD{i:06d}") for i in range(50)))
    follower = LogFollower(None, log, from_start=True,  # type: ignore[arg-type]
                           max_read=256, max_chunks=2)
    steps, total = 0, 0
    while True:
        lines = follower.poll_once()
        if not lines and follower.poll_once() == []:
            break
        assert sum(len(x) + 1 for x in lines) <= 2 * 256 + 512  # bounded per step
        steps += 1
        total += len(lines)
    assert total == 100 and steps > 10
