"""Prometheus metrics of the report intake (one registry per running service)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "IntakeMetrics"]

# Labels take values from these closed sets only (attacker data never becomes a label).
CHANNELS = ("https", "smtp", "lmtp", "import", "imap")
#: The domain label for a policy domain outside ``reports.domains``.
OTHER_DOMAIN = "other"
OUTCOMES = ("stored", "duplicate", "conflict", "quarantined")
ERROR_KINDS = ("parse", "too-large", "media-type", "no-report", "dkim", "store", "busy",
               "rate-limited", "other")
KNOWN_RESULT_TYPES = (
    # RFC 8460 §4.3 result types; anything else is counted as "other".
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure", "tlsa-invalid", "dnssec-invalid",
    "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
)


class IntakeMetrics:
    """Counters: reports received, sessions by result, intake errors."""

    def __init__(self, registry: CollectorRegistry | None = None, *,
                 domains: Iterable[str] = ()) -> None:
        self.registry = registry or CollectorRegistry()
        # Per-domain series only for the configured own domains (a bounded label set that
        # report contents cannot grow); every other policy domain is "other".
        self.domains = frozenset(d.lower().rstrip(".") for d in domains)
        self.domain_sessions = Counter(
            "smtptls_report_domain_sessions", "Sessions in newly stored, counted reports per "
            "own policy domain, by outcome (successful, failed: the summaries' totals)",
            ["domain", "outcome"], registry=self.registry)
        self.domain_failures = Counter(
            "smtptls_report_domain_failure_details", "Failed sessions per own policy domain "
            "and result type, from the failure details (types may overlap, RFC 8460 §4.3)",
            ["domain", "result"], registry=self.registry)
        self.domain_last = Gauge(
            "smtptls_report_domain_last_received_timestamp_seconds", "When the last counted "
            "report for an own policy domain was received (Unix time)", ["domain"],
            registry=self.registry)
        self._last: dict[str, float] = {}
        for d in sorted(self.domains):  # present from the start, so absence can alert
            for outcome in ("successful", "failed"):
                self.domain_sessions.labels(d, outcome)
        self.reports = Counter(
            "smtptls_reports_received", "TLSRPT reports received, by channel and outcome",
            ["channel", "outcome"], registry=self.registry)
        self.sessions = Counter(
            "smtptls_report_sessions", "Sessions counted in newly stored reports, by result "
            "(success, or the failure result type)", ["result"], registry=self.registry)
        self.errors = Counter(
            "smtptls_report_intake_errors", "Submissions that could not be stored as a "
            "report, by channel and kind", ["channel", "kind"], registry=self.registry)

    def watch_inflight(self, read: Callable[[], int]) -> None:
        """Export the bytes held by uploads and mail in progress (read when scraped)."""
        gauge = Gauge("smtptls_reports_inflight_bytes", "Bytes of request bodies and mail "
                      "held in memory by intake in progress", registry=self.registry)
        gauge.set_function(read)

    def watch_parse_workers(self, ready: Callable[[], int], deaths: Callable[[], int]) -> None:
        """Export the parse workers taking requests and those that ended unasked (both
        read when scraped)."""
        gauge = Gauge("smtptls_reports_parse_workers_ready", "Parse worker processes taking "
                      "requests (parse_workers; 0: reports are parsed in the server)",
                      registry=self.registry)
        gauge.set_function(ready)
        self.registry.register(_ReadCounter(
            "smtptls_reports_parse_worker_deaths", "Parse worker processes that ended "
            "without being asked to (each replaced; what it held sent to another)", deaths))

    def received(self, channel: str, outcome: str) -> None:
        self.reports.labels(_pick(channel, CHANNELS), _pick(outcome, OUTCOMES)).inc()

    def count_sessions(self, successful: int, failures: dict[str, int]) -> None:
        if successful:
            self.sessions.labels("success").inc(successful)
        for result_type, n in failures.items():
            if n:
                self.sessions.labels(_pick(result_type, KNOWN_RESULT_TYPES)).inc(n)

    def count_domain(self, domain: str, successful: int, failed: int,
                     failures: dict[str, int], *, received: float) -> None:
        """One counted policy of a newly stored report, under its (own) domain."""
        label = domain if domain in self.domains else OTHER_DOMAIN
        if successful:
            self.domain_sessions.labels(label, "successful").inc(successful)
        if failed:
            self.domain_sessions.labels(label, "failed").inc(failed)
        for result_type, n in failures.items():
            if n:
                self.domain_failures.labels(label, _pick(result_type, KNOWN_RESULT_TYPES)).inc(n)
        if received > self._last.get(label, 0.0):
            self._last[label] = received
            self.domain_last.labels(label).set(received)

    def error(self, channel: str, kind: str) -> None:
        self.errors.labels(_pick(channel, CHANNELS), _pick(kind, ERROR_KINDS)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ReadCounter:
    """A counter whose value is read from its owner when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, value=self.read())]


def _pick(value: str, allowed: tuple[str, ...]) -> str:
    return value if value in allowed else "other"
