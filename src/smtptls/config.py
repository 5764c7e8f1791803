"""Typed configuration with a default for every key, loaded from one TOML file.

Every section is a frozen dataclass; :func:`load` reads a TOML file, rejects unknown
keys and wrong types with a :class:`~smtptls.errors.ConfigError` naming the file and
the key, and fills in defaults for everything not given. Without a file it reads the
default one (:func:`smtptls.paths.default_config_path`); the SQLite files default to
the state directory (:func:`smtptls.paths.state_dir`). ``smtptls config check`` uses
it, and ``smtptls config show`` prints the effective configuration as TOML.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtptls import paths
from smtptls.errors import ConfigError

DNSSEC_PROBE_ENV = "SMTPTLS_DNSSEC_PROBE"
#: Signed name whose answer must carry the AD bit before DNS is trusted (Postfix:
#: ``dnssec_probe = ns:.``); the root zone is signed on the Internet.
DEFAULT_DNSSEC_PROBE = "."


def _dnssec_probe_default() -> str:
    return os.environ.get(DNSSEC_PROBE_ENV, DEFAULT_DNSSEC_PROBE)


def _state(name: str) -> Any:
    return field(default_factory=lambda: paths.state_file(name))


@dataclass(frozen=True, slots=True)
class DnsConfig:
    """Where and how to ask DNS. Empty ``nameservers`` means the system's resolv.conf."""

    nameservers: tuple[str, ...] = ()
    port: int = 53
    timeout: float = 5.0
    max_cname_chain: int = 8
    max_records: int = 64
    # checked before check, mta-sts and dane trust any answer; "" skips the probe
    dnssec_probe: str = field(default_factory=_dnssec_probe_default)


@dataclass(frozen=True, slots=True)
class FetchConfig:
    """HTTPS policy fetch limits (RFC 8461 §3.3)."""

    ca_file: str | None = None  # None: the system trust store
    connect_timeout: float = 10.0
    total_timeout: float = 60.0  # the RFC suggests about a minute at most in total
    max_body: int = 64 * 1024
    user_agent: str = "smtptls-mta-sts/0.1 (+https://github.com/smtptls)"


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Policy cache backend: sqlite (default), postgres or redis, with an LRU in front."""

    backend: str = "sqlite"
    sqlite_path: str = _state("smtptls.sqlite3")
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/smtptls"
    redis_url: str = "redis://127.0.0.1:6379/0"
    lru_size: int = 10000


@dataclass(frozen=True, slots=True)
class PolicydConfig:
    """The Postfix socketmap policy daemon."""

    listen: str = "127.0.0.1:8461"
    metrics: str | None = "127.0.0.1:9461"
    map_name: str = "postfix"
    # the map name Exim's ${readsocket} asks on the same listeners (docs/exim.md);
    # "" turns the Exim answers off
    exim_map_name: str = "exim"
    # "3.7": answers every Postfix >= 3.4 reads; "3.10": secure answers carry the
    # MTA-STS attributes and failures the policy_failure attribute (Postfix >= 3.10,
    # TLSRPT_README), see services/policyd/postfix310.py and docs/postfix.md
    postfix_version: str = "3.7"
    # Postfix >= 3.10 only: answer MTA-STS testing domains "may" with the policy's
    # attributes, so Postfix's TLSRPT client reports them (docs/postfix.md)
    testing_reports: bool = False
    testing_answer: str | None = None  # None: NOTFOUND (Postfix's own default applies)
    strict_testing: bool = False
    txt_recheck_interval: float = 300.0
    refresh_before_expiry: float = 3600.0
    max_request: int = 1024
    # Time budgets, well under Postfix's own socketmap timeout (100 s, hard-coded in
    # dict_sockmap.c as DICT_SOCKMAP_DEF_TIMEOUT): an answer waits at most sts_wait for
    # an MTA-STS policy fetch with nothing cached, then answers as without MTA-STS
    # (RFC 8461 §3.3, §5) while the fetch goes on; answer_timeout bounds the whole answer.
    sts_wait: float = 5.0
    answer_timeout: float = 15.0
    # memory for cached answers (about 0.5 kB each): the cap on cached next hops
    answer_memory_mib: float = 128.0
    idle_timeout: float = 300.0  # a connection with no request for this long is closed
    request_timeout: float = 10.0  # a request complete this long after its first octet
    max_connections: int = 4096  # lowered to the file descriptor limit less a reserve
    # "auto": uvloop when installed (smtptls[uvloop]), else asyncio's own loop
    event_loop: str = "auto"
    overrides: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReportsImapConfig:
    """``[reports.imap]``: fetch report mail from a mailbox (``reports fetch``; ``serve``
    polls every ``interval`` seconds when ``host`` is set). TLS is always verified."""

    host: str = ""  # "": no mailbox
    port: int = 0  # 0: 993 (imaps) or 143 (starttls)
    security: str = "imaps"  # imaps | starttls (never plain text)
    username: str = ""
    password_file: str = ""  # the password, alone in a file readable only by smtptls
    password: str = ""  # or here (keep the file private)
    ca_file: str | None = None  # None: the system trust store
    folder: str = "INBOX"
    done_folder: str = ""  # "": handled mail stays in the folder, marked \Seen
    quarantine_folder: str = ""  # "": mail that is not a report is marked like the rest
    interval: float = 300.0
    timeout: float = 60.0
    max_message: int = 10 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReportsConfig:
    """TLSRPT report intake."""

    listen: str = "127.0.0.1:8460"
    smtp_listen: str | None = None
    lmtp_listen: str | None = None
    # RFC 8460 §3: report mail lacking a valid DKIM signature by the reporting domain
    # MUST be ignored: kept in quarantine, never counted (false: store it anyway)
    require_dkim: bool = True
    backend: str = "sqlite"
    sqlite_path: str = _state("smtptls-reports.sqlite3")
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/smtptls"
    max_body: int = 5 * 1024 * 1024
    max_decompressed: int = 50 * 1024 * 1024
    token: str | None = None
    # Memory: bytes of request bodies and mail held at once over all HTTPS requests and
    # SMTP/LMTP sessions (beyond it: HTTP 503, SMTP 452), and reports parsed at once.
    max_inflight: int = 128 * 1024 * 1024
    max_parallel_parses: int = 2
    # Worker processes parsing reports of at most 64 KiB off the event loop (unset: one
    # fewer than the CPUs; 0: parse in the server process).
    parse_workers: int | None = None
    # Reports stored per transaction (one fsync) at most, from concurrent submissions:
    # enough that one commit serves a busy moment, few enough that it stays short
    # (1: one transaction per report).
    commit_batch: int = 256
    # Reports POSTed per source address (IPv6: per /64); beyond it HTTP 429. 0: off.
    rate_limit_per_minute: float = 60.0
    rate_limit_burst: int = 60
    # Storage (0: no limit): failure-detail rows per report (the rest folded per result
    # type), quarantine kept whole up to a total size and an age (beyond: a digest and
    # an excerpt), failure details per dashboard page.
    max_failure_rows: int = 1000
    quarantine_max_bytes: int = 100 * 1024 * 1024
    quarantine_max_age_days: int = 30
    quarantine_excerpt: int = 4096
    failure_page_size: int = 200
    # The owner's own domains (the console lists them even before any report) and the
    # rua URIs this receiver is reachable at (shown in the record to publish).
    domains: tuple[str, ...] = ()
    rua: tuple[str, ...] = ()
    stale_days: int = 3  # "no reports for N days" once a domain's reports stop this long
    imap: ReportsImapConfig = field(default_factory=ReportsImapConfig)


@dataclass(frozen=True, slots=True)
class TlsrptConfig:
    """TLSRPT for senders: session results in, one daily report per policy domain out.

    Identity (RFC 8460 §4.4, §5.3): ``submitter`` is the domain named in report-ids,
    the Subject, the file name and ``TLS-Report-Submitter`` (empty: this host's FQDN);
    ``organization_name`` and ``contact_info`` default from it. Collection: a libtlsrpt
    datagram socket, Postfix log files or journald, and an HTTP endpoint. Delivery:
    HTTPS POST and DKIM-signed mail through ``smtp_relay``, the first attempt at a
    random moment within ``send_window`` seconds after 00:00 UTC, retries with
    exponential back-off from ``retry_initial`` up to ``retry_max`` for ``give_up_after``.
    """

    organization_name: str = ""
    contact_info: str = ""
    submitter: str = ""
    backend: str = "sqlite"
    sqlite_path: str = _state("smtptls-tlsrpt.sqlite3")
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/smtptls"
    postgres_schema: str | None = None
    retention_days: int = 14
    socket_path: str | None = None
    socket_mode: str = "0660"
    http_listen: str | None = "127.0.0.1:8462"
    http_token: str | None = None
    log_files: tuple[str, ...] = ()
    # what log_files hold: "postfix" (any Postfix) or "exim" (Exim's main log,
    # docs/exim.md)
    log_format: str = "postfix"
    journald: bool = False
    policy_source: str = "policyd"
    sending_ip: str | None = None
    flush_interval: float = 1.0
    batch_size: int = 2000
    max_pending: int = 100000
    send_window: float = 14400.0
    retry_initial: float = 300.0
    retry_max: float = 7200.0
    give_up_after: float = 86400.0
    http_timeout: float = 60.0
    ca_file: str | None = None
    smtp_relay: str = "127.0.0.1:25"
    smtp_starttls: bool = False
    smtp_timeout: float = 60.0
    mail_from: str = ""
    dkim_selector: str = ""
    dkim_domain: str = ""
    dkim_key_file: str = ""
    rua_cache_size: int = 10000
    max_report_size: int = 5 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Alerts to domain owners (services/alerts.py, docs/configuration.md).

    Channels: a log line (``log``), a JSON webhook POST (``webhook_url``; Slack and
    Mattermost incoming webhooks read its ``text``), mail to ``mail_to`` through
    ``smtp_relay`` (STARTTLS verified with the system store or ``ca_file``). Each
    condition is sent once while it lasts, again after it clears and returns, never
    twice within ``quiet_period`` seconds. Rules: failure rate over
    ``failure_rate_percent`` from a reporter with at least ``min_sessions`` sessions in
    the ``window``, a new failure type, any of ``critical_result_types``, and no report
    for ``stale_days`` from a reporter that used to send daily.
    """

    enabled: bool = True
    log: bool = True
    webhook_url: str | None = None
    mail_to: tuple[str, ...] = ()
    mail_from: str = ""
    smtp_relay: str = "127.0.0.1:25"
    smtp_starttls: bool = True
    ca_file: str | None = None
    timeout: float = 30.0
    quiet_period: float = 86400.0
    state_path: str = _state("smtptls-alerts.json")
    interval: float = 900.0  # how often `reports serve` evaluates the rules
    window: str = "7d"
    failure_rate_percent: float = 5.0
    min_sessions: int = 10
    new_failure_type: bool = True
    critical_result_types: tuple[str, ...] = (
        "sts-policy-fetch-error", "sts-webpki-invalid", "tlsa-invalid", "dnssec-invalid")
    stale_days: int = 3


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """``smtptls monitor``: own domains watched ahead of failures (docs/monitor.md).

    ``staged`` maps an MX host name to the PEM file of its next (staged) certificate
    chain, judged against the published TLSA records (RFC 7671 §8.1). Alerts go
    through the ``[alerts]`` channels.
    """

    domains: tuple[str, ...] = ()
    interval: float = 3600.0  # seconds between runs of the service
    warn_days: int = 14  # same horizon as check's tls.cert-expiring
    rrsig_warn_days: int = 3  # DNSSEC signatures: signers re-sign days ahead, not weeks
    staged: dict[str, str] = field(default_factory=dict)
    smtp: bool = True  # probe the MX hosts (certificates, TLSA match)
    timeout: float = 30.0  # per network step, as `smtptls check --timeout`
    state_path: str = _state("smtptls-monitor.json")  # the JSON state of older versions
    # Where the state, the run history and the sent alerts live: "" the SQLite file
    # smtptls-monitor.sqlite3 in the state directory, a path for another SQLite file,
    # or postgresql://... (the [postgres] extra).
    store: str = ""
    keep_runs: int = 500  # runs kept per domain in the history (the console's timeline)
    # Seconds before the one retry of a domain whose lookups failed (resolver outage);
    # only then is it judged or left as it was. 0: retry at once.
    retry_delay: float = 60.0


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    level: str = "info"
    format: str = "text"  # text | json


@dataclass(frozen=True, slots=True)
class Config:
    dns: DnsConfig = field(default_factory=DnsConfig)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    policyd: PolicydConfig = field(default_factory=PolicydConfig)
    reports: ReportsConfig = field(default_factory=ReportsConfig)
    tlsrpt: TlsrptConfig = field(default_factory=TlsrptConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


_CHOICES: dict[str, tuple[str, ...]] = {
    "cache.backend": ("sqlite", "postgres", "redis"),
    "reports.backend": ("sqlite", "postgres"),
    "reports.imap.security": ("imaps", "starttls"),
    "tlsrpt.backend": ("sqlite", "postgres"),
    "tlsrpt.policy_source": ("policyd", "cache", "none"),
    "tlsrpt.log_format": ("postfix", "exim"),
    "policyd.postfix_version": ("3.7", "3.10"),
    "policyd.event_loop": ("auto", "asyncio", "uvloop"),
    "logging.level": ("debug", "info", "warning", "error"),
    "logging.format": ("text", "json"),
}


def _section(value: Any, cls: Any, key: str) -> Any:
    """A table (``[reports.imap]``) as its dataclass, keys and types checked."""
    if not isinstance(value, dict):
        raise ConfigError("expected a table", key=key)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for name, item in value.items():
        dotted = f"{key}.{name}"
        if name not in hints:
            raise ConfigError("unknown key", key=dotted)
        values[name] = _coerce(item, hints[name], dotted)
        if dotted in _CHOICES and values[name] not in _CHOICES[dotted]:
            raise ConfigError(f"must be one of {', '.join(_CHOICES[dotted])}", key=dotted)
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _section(value, hint, key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"expected true/false, got {value!r}", key=key)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"expected an integer, got {value!r}", key=key)
        if value < 0:
            raise ConfigError("must not be negative", key=key)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"expected a number, got {value!r}", key=key)
        if value < 0:
            raise ConfigError("must not be negative", key=key)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"expected a string, got {value!r}", key=key)
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError("expected a list of strings", key=key)
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError("expected a table of strings", key=key)
        return {str(k).lower().rstrip("."): v for k, v in value.items()}
    raise ConfigError(f"unsupported type {hint!r}", key=key)  # pragma: no cover


def from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from parsed TOML, rejecting unknown keys and bad types."""
    if not isinstance(data, dict):
        raise ConfigError("configuration must be a table")
    sections: dict[str, Any] = {}
    top_hints = typing.get_type_hints(Config)
    for name, raw in data.items():
        if name not in top_hints:
            raise ConfigError("unknown section", key=name)
        if not isinstance(raw, dict):
            raise ConfigError("expected a table", key=name)
        cls = top_hints[name]
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in raw.items():
            dotted = f"{name}.{key}"
            if key not in hints:
                raise ConfigError("unknown key", key=dotted)
            values[key] = _coerce(value, hints[key], dotted)
            if dotted in _CHOICES and values[key] not in _CHOICES[dotted]:
                raise ConfigError(f"must be one of {', '.join(_CHOICES[dotted])}", key=dotted)
        sections[name] = cls(**values)
    return Config(**sections)


def load(path: str | Path | None) -> Config:
    """Load a TOML config file; ``None`` reads the default file
    (:func:`smtptls.paths.default_config_path`), or gives the all-defaults
    configuration when there is none. Every error names the file once."""
    if path is None:
        path = paths.default_config_path()
        if path is None:
            return Config()
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    if len(raw) > 1024 * 1024:
        raise ConfigError(f"{p}: file larger than 1 MiB")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None
    try:
        return from_dict(data)
    except ConfigError as exc:
        named = ConfigError(f"{p}: {exc}")
        named.key = exc.key
        raise named from None


def to_dict(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data (for ``config show``)."""
    return dataclasses.asdict(config)


def to_toml(config: Config) -> str:
    """The effective configuration as a TOML file that :func:`load` reads back equal.

    TOML has no null: a key whose value is unset (``None``, e.g. ``fetch.ca_file``) is
    left out, which is what loading gives it back.
    """
    import tomli_w

    def plain(values: dict[str, Any]) -> dict[str, Any]:
        return {k: plain(v) if isinstance(v, dict) and k != "overrides" else
                list(v) if isinstance(v, tuple) else v
                for k, v in values.items() if v is not None}

    return tomli_w.dumps({section: plain(values)
                          for section, values in to_dict(config).items()})


def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    """Parse ``IP``, ``IP:PORT``, ``[IPv6]:PORT`` or ``IPv6``; raise ConfigError."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ConfigError(f"bad address {text!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not host:
        raise ConfigError(f"bad address {text!r}")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"bad port in {text!r}")
    return host, int(port_text)
