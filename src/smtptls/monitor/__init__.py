"""``smtptls monitor``: watch own domains and alert before mail breaks.

- :mod:`.rules` (pure): the facts of one run and the last run's state in, alerts out;
- :mod:`.dnssec`: the RRSIG expirations of the domain's mail RRsets, from the resolver;
- :mod:`.state`: the last run's state (the monitor store of :mod:`smtptls.store.monitor_base`
  keeps it with the run history and the alerts sent; the JSON file of earlier versions);
- :mod:`.runner`: the async driver, with check's :class:`~smtptls.check.gather.Gatherer`
  and the ``[alerts]`` dispatcher.
"""

from smtptls.monitor.rules import DomainState, Judgement, RunFacts, judge

__all__ = ["DomainState", "Judgement", "RunFacts", "judge"]
