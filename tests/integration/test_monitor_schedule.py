"""The monitor as a service against the lab: runs on its interval, and a resolver
outage neither clears nor raises anything (the domain is retried once, then left as it
was), and a restarted monitor does not send again.

The outage is a :class:`Resolver` wrapper in front of the lab's validating resolver
that times out every query while it is down. The service's ``sleep`` seam decides
when: down from the second run on; back during the second run's retry delay (so that
run is judged at its retry); still down through the third run and its retry (so that
run is not judged).
"""

from __future__ import annotations

import asyncio

import pytest

from smtptls.check.gather import Gatherer
from smtptls.config import Config, DnsConfig, FetchConfig, MonitorConfig
from smtptls.dnssec import Security
from smtptls.errors import DnsTimeout
from smtptls.monitor.runner import ResolverFront, check_options, run_forever, run_once
from smtptls.net.dns import Answer, DnsResolver
from smtptls.services.alerts import AlertDispatcher, MemoryAlertState, MemoryChannel
from smtptls.store.monitor_open import open_monitor_store
from tests.lab import LabDomain, LabMx, PolicyHost

pytestmark = pytest.mark.lab

D = "mon-schedule.insecure.test"
INTERVAL, RETRY = 0.02, 0.01


class OutageResolver(ResolverFront):
    """The lab resolver, or a timeout for every query while ``down``."""

    def __init__(self, base: DnsResolver) -> None:
        super().__init__(base)
        self.down = False
        self.failed = 0

    def _fail(self, name: str, rdtype: str) -> DnsTimeout:
        self.failed += 1
        return DnsTimeout("resolver outage", name=name, rdtype=rdtype)

    async def query(self, name: str, rdtype: str) -> Answer:
        if self.down:
            raise self._fail(name, rdtype)
        return await super().query(name, rdtype)

    async def try_query(self, name: str, rdtype: str) -> Answer:
        if self.down:
            return Answer(name, rdtype, (), Security.INDETERMINATE,
                          error=self._fail(name, rdtype))
        return await super().try_query(name, rdtype)


def _cfg(lab, tmp_path) -> Config:
    # the lab's certificates are valid for 90 days: warn_days = 100 makes them "expiring"
    return Config(dns=DnsConfig(nameservers=(lab.resolver[0],), port=lab.resolver[1]),
                  fetch=FetchConfig(ca_file=str(lab.ca_file)),
                  monitor=MonitorConfig(domains=(D,), warn_days=100, timeout=10.0,
                                        interval=INTERVAL, retry_delay=RETRY,
                                        store=str(tmp_path / "monitor.sqlite3")))


async def test_outage_is_retried_then_left_as_it_was_and_nothing_is_sent_twice(lab, tmp_path):
    await asyncio.to_thread(lab.add, LabDomain(
        D, mx=[LabMx(f"mx1.{D}")], txt={"_mta-sts": ["v=STSv1; id=20261201T000000"]},
        policy=PolicyHost(body=f"version: STSv1\nmode: enforce\nmx: mx1.{D}\n"
                               "max_age: 604800\n")))
    cfg = _cfg(lab, tmp_path)
    dns = OutageResolver(DnsResolver(cfg.dns))
    waits: list[float] = []

    async def sleep(delay: float) -> None:
        waits.append(delay)
        intervals, retries = waits.count(INTERVAL), waits.count(RETRY)
        if delay == INTERVAL:
            dns.down = True  # runs 2 and 3 start in an outage
        elif retries == 1:
            dns.down = False  # back before run 2's retry; run 3's retry finds it down
        assert intervals <= 2
        await asyncio.sleep(0)

    channel = MemoryChannel()
    dispatcher = AlertDispatcher([channel], state=MemoryAlertState())
    store = open_monitor_store(cfg.monitor)
    await store.open()
    try:
        async with Gatherer(check_options(cfg), resolver=dns) as g:
            assert await run_forever(cfg, dispatcher, store, gatherer=g, runs=3,
                                     sleep=sleep) == 3
        assert waits == [INTERVAL, RETRY, INTERVAL, RETRY] and dns.failed > 0
        runs = list(reversed(await store.runs(D)))
        state = (await store.load())[D]
    finally:
        await store.close()

    first, second, third = runs
    expiring = {a.key for a in first.alerts if a.code == "monitor.cert-expiring"}
    assert {f"{D}|monitor.cert-expiring|mta-sts.{D}"} < expiring  # and the MX's
    assert first.judged and set(first.raised) == {a.key for a in first.alerts}
    # run 2: down at first, judged at its retry: the same alerts, none sent or cleared
    assert second.judged and second.retried
    assert {a.key for a in second.alerts} == {a.key for a in first.alerts}
    assert second.raised == () and second.cleared == ()
    # run 3: down at its retry too: not judged; the last alerts stand, no "worse" alert
    # from the missing data, none cleared
    assert not third.judged and third.retried
    assert {a.key for a in third.alerts} == {a.key for a in second.alerts}
    assert third.raised == () and third.cleared == ()
    assert not any(a.code == "monitor.worse" for a in third.alerts)
    assert {a.key for a in state.alerts} == {a.key for a in second.alerts}
    assert [a.key for a in channel.sent] == list(first.raised)  # each condition once

    # a restart: a new dispatcher and store object on the same file, the resolver back
    dns.down = False
    store = open_monitor_store(cfg.monitor)
    await store.open()
    try:
        restarted = AlertDispatcher([channel], state=MemoryAlertState())
        async with Gatherer(check_options(cfg), resolver=dns) as g:
            fourth = await run_once(cfg, restarted, store, gatherer=g)
    finally:
        await store.close()
    assert fourth.judgements[D].judged and fourth.dispatch.sent == ()
    assert fourth.dispatch.cleared == () and {a.key for a in fourth.alerts} >= expiring
    assert len(channel.sent) == len(first.raised)
