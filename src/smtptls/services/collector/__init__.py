"""``smtptls tlsrpt collect``: TLS session results in, counters in the result store out.

Sources (any combination, all feeding one :class:`Collector`):

- **libtlsrpt datagrams** (Postfix >= 3.10, ``smtp_tlsrpt_socket_name``): an
  ``AF_UNIX``/``SOCK_DGRAM`` socket; one JSON datagram per delivery attempt
  (:mod:`smtptls.tlsrptsend.libtlsrpt`). The protocol is fire and forget: the MTA never
  waits, so datagrams are batched and written every ``flush_interval`` seconds (or
  every ``batch_size`` results). A crash loses at most the last interval.
- **Postfix logs**, for any Postfix version: files followed like ``tail -F``
  (:class:`LogFollower`: a rotated file is read until it is quiet, then the new one
  from its start; a truncated file from its start, after the rest of its copy), or
  journald through ``journalctl -o json -f`` (an argument list, never a shell). Lines
  become sessions (:class:`~smtptls.tlsrptsend.postfix_log.PostfixLogParser`) and sessions
  results under the policy that applied (:class:`PolicyLookup`). Batched like
  datagrams; each file's read position is committed in the transaction of the results
  its lines gave, so a restart (clean or not) resumes after the last counted line:
  nothing lost, nothing counted twice.
- **Python API** for other MTAs: ``await collector.record(result)`` returns once the
  result is committed.
- **HTTP** ``POST /v1/results`` (JSON, the form of
  :meth:`~smtptls.tlsrptsend.results.SessionResult.to_dict`; one object, a list, or
  ``{"results": [...]}``): answered ``200`` only after the commit, ``400`` with the
  reason for a bad result, ``503`` when the store is down. A ``Bearer`` token is
  required when one is configured (and when listening beyond loopback). With an
  ``Idempotency-Key`` (the client's batch id) a retried batch is counted once
  (``duplicate``; ``409`` when the key comes back with other results); without one a
  retry after a lost answer counts twice (at-least-once).
  :func:`smtptls.net.results_client.post_results` is the client.

Report mails of our own are never counted (their Message-ID is recognised in
Postfix's log; API and HTTP callers may pass ``message-id``), so reports never loop.

The package:

- :mod:`.writer`: :class:`Collector`, the one writer: batches, the pending bound, commits;
- sources: :mod:`.datagram` (libtlsrpt socket), :mod:`.logfile` (:class:`LogFollower`),
  :mod:`.journal` (journald), :mod:`.http` (the HTTP API); the Python API is
  :meth:`Collector.record`;
- :mod:`.ingest`: log sessions to results (:class:`LogIngest`, :class:`SendingAddress`);
- :mod:`.policy`: which policy applied (:class:`PolicyLookup` and its implementations);
- :mod:`.service`: the life cycle (:class:`CollectorService`, :func:`run_collector`);
- :mod:`.limits` and :mod:`.metrics`: the bounds, each with why, and the metrics.
"""

from smtptls.services.collector.datagram import DatagramListener
from smtptls.services.collector.http import create_app, parse_http_results
from smtptls.services.collector.ingest import LogIngest, SendingAddress
from smtptls.services.collector.journal import JournalFollower
from smtptls.services.collector.logfile import LogFollower, position_name
from smtptls.services.collector.metrics import CollectorMetrics
from smtptls.services.collector.policy import (
    CachePolicyLookup,
    EnginePolicyLookup,
    NoPolicyLookup,
    PolicyLookup,
    StaticPolicyLookup,
    context_from_explanation,
    make_policy_lookup,
)
from smtptls.services.collector.service import CollectorService, run_collector
from smtptls.services.collector.writer import Collector

__all__ = [
    "CachePolicyLookup",
    "Collector",
    "CollectorMetrics",
    "CollectorService",
    "DatagramListener",
    "EnginePolicyLookup",
    "JournalFollower",
    "LogFollower",
    "LogIngest",
    "NoPolicyLookup",
    "PolicyLookup",
    "SendingAddress",
    "StaticPolicyLookup",
    "context_from_explanation",
    "create_app",
    "make_policy_lookup",
    "parse_http_results",
    "position_name",
    "run_collector",
]
