"""The async driver of ``smtptls monitor``: gather with check's engine, judge, alert.

One run: for every configured domain, :class:`~smtptls.check.gather.Gatherer` gathers
the facts ``smtptls check`` gathers and :func:`~smtptls.check.evaluate.evaluate` judges
them; the certificate of ``mta-sts.<domain>`` is read in a verified TLS handshake; the
staged next certificates are read from disk. :func:`smtptls.monitor.rules.judge`
decides the alerts (pure); an :class:`~smtptls.services.alerts.AlertDispatcher` sends
each condition once through the ``[alerts]`` channels. The service repeats runs every
``monitor.interval`` seconds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from smtptls.check.evaluate import evaluate
from smtptls.check.facts import CertFacts, DomainFacts, cert_facts
from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.config import Config, FetchConfig
from smtptls.dane.publish import MAX_INPUT, load_certificates
from smtptls.errors import ConfigError, DaneError, SmtpTlsError
from smtptls.logs import get_logger
from smtptls.monitor.dnssec import gather_signatures
from smtptls.monitor.rules import DomainState, Judgement, RunFacts, judge, policy_digest
from smtptls.monitor.state import MonitorState, as_store
from smtptls.net.dns import Answer
from smtptls.net.https import fetch_policy
from smtptls.net.protocols import Resolver
from smtptls.services.alerts import Alert, AlertDispatcher, DispatchResult
from smtptls.store.monitor_base import MonitorStore, RunRecord

__all__ = ["MonitorRun", "ResolverFront", "check_options", "load_staged", "lookups_failed",
           "policy_bodies", "policy_host_cert", "run_forever", "run_once"]

_log = get_logger("monitor")

#: Seconds for the TLS handshake with the policy host (RFC 8461 §3.3 fetch budget).
POLICY_TLS_TIMEOUT = 10.0
#: Domains one configuration may watch (every run checks each of them).
MAX_DOMAINS = 1000
#: Addresses of the policy host fetched one by one to compare their bodies.
MAX_POLICY_ADDRESSES = 4


class ResolverFront:
    """A :class:`Resolver` in front of ``base``: a subclass answers :meth:`query` and
    :meth:`try_query`; the typed look-ups go through its :meth:`query`."""

    def __init__(self, base: Resolver) -> None:
        self._base = base

    async def query(self, name: str, rdtype: str) -> Answer:
        return await self._base.query(name, rdtype)

    async def try_query(self, name: str, rdtype: str) -> Answer:
        return await self._base.try_query(name, rdtype)

    async def txt(self, name: str) -> Answer:
        return await self.query(name, "TXT")

    async def a(self, name: str) -> Answer:
        return await self.query(name, "A")

    async def aaaa(self, name: str) -> Answer:
        return await self.query(name, "AAAA")


class _PinnedResolver(ResolverFront):
    """A :class:`Resolver` that answers one name's A query with one address (and no
    AAAA), so that a fetch reaches exactly that address; every other query goes to
    ``base``."""

    def __init__(self, base: Resolver, name: str, address: str) -> None:
        super().__init__(base)
        self._name, self._address = name.lower().rstrip("."), address

    async def query(self, name: str, rdtype: str) -> Answer:
        if name.lower().rstrip(".") == self._name and rdtype in ("A", "AAAA"):
            real = await self._base.try_query(name, "A")
            records = (self._address,) if rdtype == "A" else ()
            return Answer(self._name, rdtype, records, real.security, ttl=real.ttl)
        return await self._base.query(name, rdtype)

    async def try_query(self, name: str, rdtype: str) -> Answer:
        if name.lower().rstrip(".") == self._name and rdtype in ("A", "AAAA"):
            return await self.query(name, rdtype)
        return await self._base.try_query(name, rdtype)


async def policy_bodies(resolver: Resolver, domain: str,
                        fetch: FetchConfig) -> dict[str, str]:
    """The policy body digest served by each address of ``mta-sts.<domain>`` (only
    when it has several; a failed fetch is left out: check reports it)."""
    name = f"mta-sts.{domain}"
    answer = await resolver.try_query(name, "A")
    addresses = [str(a) for a in answer.records][:MAX_POLICY_ADDRESSES]
    if len(addresses) < 2:
        return {}
    out: dict[str, str] = {}
    for address in addresses:
        try:
            got = await fetch_policy(domain, config=fetch,
                                     resolver=_PinnedResolver(resolver, name, address))
        except SmtpTlsError as exc:
            _log.info("policy fetch from one address failed", host=name, address=address,
                      error=str(exc)[:200])
            continue
        out[address] = policy_digest(got.text)
    return out


@dataclass(frozen=True, slots=True)
class MonitorRun:
    """One run: the judgement per domain, and what the dispatcher did."""

    judgements: Mapping[str, Judgement]
    dispatch: DispatchResult

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return tuple(a for j in self.judgements.values() for a in j.alerts)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "smtptls.monitor/1",
                "domains": [{"domain": d, "judged": j.judged,
                             "alerts": [a.to_dict() for a in j.alerts]}
                            for d, j in self.judgements.items()],
                "sent": [a.to_dict() for a in self.dispatch.sent],
                "failed": [{"code": a.code, "domain": a.domain, "channel": ch, "error": err}
                           for a, ch, err in self.dispatch.failed],
                "suppressed": self.dispatch.suppressed,
                "cleared": list(self.dispatch.cleared)}


def check_options(cfg: Config) -> CheckOptions:
    mon = cfg.monitor
    return CheckOptions(dns=cfg.dns, ca_file=cfg.fetch.ca_file, smtp=mon.smtp,
                        timeout=mon.timeout, domain_timeout=max(mon.timeout * 4, 60.0))


def load_staged(staged: Mapping[str, str]) -> dict[str, tuple[bytes, ...]]:
    """The staged next chains (PEM files, leaf first) as DER, per MX host name."""
    out: dict[str, tuple[bytes, ...]] = {}
    for host, name in staged.items():
        key = f"monitor.staged.{host}"
        try:
            with Path(name).open("rb") as f:
                data = f.read(MAX_INPUT + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror}", key=key) from None
        if len(data) > MAX_INPUT:
            raise ConfigError(f"{name}: larger than {MAX_INPUT} bytes", key=key)
        try:
            certs = load_certificates(data)
        except DaneError as exc:
            raise ConfigError(f"{name}: {exc}", key=key) from None
        if not certs:
            raise ConfigError(f"{name}: no certificate found", key=key)
        out[host] = tuple(c.public_bytes(serialization.Encoding.DER) for c in certs)
    return out


async def policy_host_cert(resolver: Resolver, domain: str,
                           ca_file: str | None) -> CertFacts | None:
    """The leaf certificate of ``mta-sts.<domain>``:443, from a verified handshake.

    None when there is no address or the handshake fails: check's policy fetch findings
    say why (``mta-sts.policy-tls`` and the like)."""
    name = f"mta-sts.{domain}"
    answer = await resolver.try_query(name, "A")
    if not answer.records:
        return None
    context = ssl.create_default_context(cafile=ca_file)
    for address in list(answer.records)[:2]:
        writer = None
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(
                str(address), 443, ssl=context, server_hostname=name), POLICY_TLS_TIMEOUT)
            obj = writer.get_extra_info("ssl_object")
            der = obj.getpeercert(binary_form=True) if obj is not None else None
            if der:
                return cert_facts(der)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            _log.info("policy host handshake failed", host=name, address=str(address),
                      error=str(exc)[:200])
        finally:
            if writer is not None:
                writer.close()
    return None


def lookups_failed(facts: DomainFacts) -> bool:
    """Did a DNS lookup of this gathering fail (timeout, SERVFAIL) or the time limit
    cut it short? Such a domain is gathered once more before it is judged."""
    if facts.timed_out or facts.mx.failed:
        return True
    if any(t is not None and t.failed for t in (facts.sts_txt, facts.tlsrpt_txt)):
        return True
    return any(h.a.failed or h.aaaa.failed or any(t.error for t in h.tlsa)
               for h in facts.hosts)


async def _judge_domain(cfg: Config, g: Gatherer, domain: str,
                        staged: Mapping[str, tuple[bytes, ...]],
                        previous: Mapping[str, DomainState]) -> tuple[DomainFacts, Judgement]:
    mon = cfg.monitor
    facts = await g.gather(domain)
    report = evaluate(facts)
    cert, bodies = None, {}
    if facts.sts_txt is not None and facts.sts_txt.records:
        cert = await policy_host_cert(g.resolver, facts.domain, cfg.fetch.ca_file)
        bodies = await policy_bodies(g.resolver, facts.domain, g.options.fetch)
    sigs = await gather_signatures(g.resolver, facts)
    judgement = judge(RunFacts(facts, report, staged=staged, policy_cert=cert,
                               warn_days=mon.warn_days, policy_bodies=bodies,
                               rrsig_warn_days=mon.rrsig_warn_days,
                               signatures=sigs),
                      previous.get(facts.domain))
    return facts, judgement


async def run_once(cfg: Config, dispatcher: AlertDispatcher,
                   store: MonitorStore | MonitorState, *,
                   gatherer: Gatherer | None = None,
                   clock: Callable[[], dt.datetime] | None = None,
                   sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> MonitorRun:
    """Check every configured domain once, judge, dispatch, and keep the state.

    A domain whose lookups failed is gathered again after ``monitor.retry_delay``
    seconds (once); if its MX lookup still fails it is not judged: its last state and
    alerts stand (nothing cleared, nothing raised from missing data). The state, the
    run's history rows and the dispatcher's sent-set are written in one transaction of
    the store after the alerts went out."""
    mon = cfg.monitor
    if not mon.domains:
        raise ConfigError("no domains to watch", key="monitor.domains")
    if len(mon.domains) > MAX_DOMAINS:
        raise ConfigError(f"at most {MAX_DOMAINS} domains", key="monitor.domains")
    if mon.keep_runs < 1:
        raise ConfigError("must be at least 1", key="monitor.keep_runs")
    if mon.retry_delay < 0:
        raise ConfigError("must be 0 or more", key="monitor.retry_delay")
    staged = load_staged(mon.staged)
    st = as_store(store)
    previous = await st.load()
    keeps_sent = getattr(st, "keeps_sent", True)
    judgements: dict[str, Judgement] = {}
    retried: set[str] = set()
    own = gatherer is None
    g = gatherer or Gatherer(check_options(cfg), clock=clock)
    try:
        failed: list[str] = []
        for domain in mon.domains:
            facts, judgement = await _judge_domain(cfg, g, domain, staged, previous)
            judgements[facts.domain] = judgement
            if lookups_failed(facts):
                failed.append(domain)
        if failed:
            _log.warning("lookups failed, retrying", domains=len(failed),
                         delay=mon.retry_delay)
            await sleep(mon.retry_delay)
            # a fresh gatherer on the same resolver: the first remembers this run's
            # failed host lookups
            again = Gatherer(g.options, resolver=g.resolver, clock=clock)
            try:
                for domain in failed:
                    facts, judgement = await _judge_domain(cfg, again, domain, staged,
                                                           previous)
                    judgements[facts.domain] = judgement
                    retried.add(facts.domain)
            finally:
                await again.close()
        for domain, judgement in judgements.items():
            if not judgement.judged:
                _log.warning("monitor run not judged (lookup failed or time limit)",
                             domain=domain)
    finally:
        if own:
            await g.close()
    # a domain never judged keeps no state: its next judged run is its first
    new_state: dict[str, DomainState] = {d: j.state for d, j in judgements.items()
                                         if j.judged or d in previous}
    if keeps_sent:  # the store is the memory of what was sent, across restarts
        dispatcher.state.save(await st.load_sent())
    result = await dispatcher.dispatch(a for j in judgements.values() for a in j.alerts)
    now = (clock or (lambda: dt.datetime.now(dt.UTC)))()
    sent_keys = {a.key for a in result.sent}
    records = [RunRecord(domain=d, run_at=now, judged=j.judged, retried=d in retried,
                         alerts=j.alerts,
                         raised=tuple(a.key for a in j.alerts if a.key in sent_keys),
                         cleared=tuple(k for k in result.cleared
                                       if k.split("|", 1)[0] == d),
                         findings=j.state.findings)
               for d, j in judgements.items()]
    await st.save_run(new_state, records, dispatcher.state.load() if keeps_sent else {},
                      keep_runs=mon.keep_runs)
    return MonitorRun(judgements, result)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def run_forever(cfg: Config, dispatcher: AlertDispatcher,
                      store: MonitorStore | MonitorState, *,
                      stop: asyncio.Event | None = None, gatherer: Gatherer | None = None,
                      runs: int | None = None,
                      sleep: Callable[[float], Awaitable[object]] | None = None) -> int:
    """Run every ``monitor.interval`` seconds until ``stop`` is set (or ``runs`` runs
    are done); returns the number of runs. A store error fails that run only.
    ``sleep`` waits between runs and before a retry (default: that long, or until
    ``stop``)."""
    stop = stop or asyncio.Event()
    wait = sleep or (lambda delay: _wait(stop, delay))
    done = 0
    while not stop.is_set() and (runs is None or done < runs):
        done += 1
        try:
            run = await run_once(cfg, dispatcher, store, gatherer=gatherer,
                                 sleep=wait)
            _log.info("monitor run", alerts=len(run.alerts), sent=len(run.dispatch.sent))
        except ConfigError:
            raise
        except Exception as exc:  # one failed run never ends the service
            _log.error("monitor run failed", error=f"{type(exc).__name__}: {exc}"[:300])
        if runs is not None and done >= runs:
            break
        await wait(cfg.monitor.interval)
    return done
