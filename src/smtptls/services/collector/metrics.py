"""Prometheus metrics of the collector, on its own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

# --- metrics ----------------------------------------------------------------------------------


class CollectorMetrics:
    """Prometheus counters of one collector (own registry)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.results = Counter("smtptls_tlsrpt_results", "TLS session results accepted, by "
                               "source", ["source"], registry=self.registry)
        self.stored = Counter("smtptls_tlsrpt_results_stored", "Results committed to the "
                              "store", registry=self.registry)
        self.dropped = Counter("smtptls_tlsrpt_results_dropped", "Results dropped, by reason",
                               ["reason"], registry=self.registry)
        self.bad_input = Counter("smtptls_tlsrpt_bad_input", "Datagrams or requests that did "
                                 "not decode, by source", ["source"], registry=self.registry)
        self.batches = Counter("smtptls_tlsrpt_batches", "Store transactions",
                               registry=self.registry)
        self.store_errors = Counter("smtptls_tlsrpt_store_errors", "Failed store "
                                    "transactions", registry=self.registry)
        self.pending = Gauge("smtptls_tlsrpt_pending", "Results waiting to be written",
                             registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
