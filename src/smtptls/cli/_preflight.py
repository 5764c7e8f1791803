"""Checks a command makes before it does any work, so that an operator's mistake is one
error line (exit 2) instead of a table of results that only look like findings.

- :func:`require_domains`: every name is a valid domain (no I/O);
- :func:`require_ca_file`: a ``--ca-file`` exists and holds certificates;
- :func:`require_resolver`: the configured resolver answers and validates DNSSEC (the
  AD bit on the signed probe name ``dns.dnssec_probe``), before any answer is trusted;
- :func:`require_existing_db`: read-only commands never create a database (or its
  folder): a missing SQLite file is an error naming the path;
- :func:`require_listen`: a service's listen address parses and is free.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from pathlib import Path

from smtptls.config import DnsConfig
from smtptls.errors import ConfigError, InvalidDomainError, StoreError

__all__ = ["require_ca_file", "require_domains", "require_existing_db", "require_listen",
           "require_resolver"]


def require_domains(names: Iterable[str]) -> list[str]:
    """The names normalized; the first invalid one raises :class:`InvalidDomainError`."""
    from smtptls.net.dns import normalize_domain  # dnspython loads only where it is used

    out = []
    for name in names:
        try:
            out.append(normalize_domain(name))
        except InvalidDomainError as exc:
            raise InvalidDomainError(f"{name[:100]!r} is not a domain name: {exc.message}",
                                     name=name[:100]) from None
    return out


def require_ca_file(path: str | None, option: str = "--ca-file") -> None:
    """A trust store the operator named must load (a missing or empty one is an error)."""
    if path is None:
        return
    try:
        ctx = ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigError(f"{option} {path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None
    except ssl.SSLError as exc:
        raise ConfigError(f"{option} {path}: not a PEM certificate file ({exc.reason})") \
            from None
    if not ctx.get_ca_certs():
        raise ConfigError(f"{option} {path}: no CA certificate in the file")


def require_resolver(dns_config: DnsConfig, *, validating: bool = True) -> None:
    """Raise :class:`~smtptls.errors.DnsError` unless the resolver answers for
    ``dns_config.dnssec_probe`` (with ``validating``: with the AD bit; MTA-STS alone
    needs no DNSSEC). Skipped when the probe name is empty."""
    if not dns_config.dnssec_probe:
        return
    from smtptls.net.dns import DnsResolver, run_sync

    resolver = DnsResolver(dns_config)
    run_sync(lambda: resolver.probe(dns_config.dnssec_probe, validating=validating))


def require_existing_db(path: str, what: str, option: str = "--db") -> None:
    """For commands that only read: the SQLite file must exist (nothing is created)."""
    if path == ":memory:":
        return
    p = Path(path)
    if not p.is_file():
        state = "is not a file" if p.exists() else "does not exist"
        raise StoreError(f"{what} {path} {state} (nothing stored yet? name it with "
                         f"{option} or in the configuration)")


def require_listen(spec: str, default_port: int, option: str) -> None:
    """A TCP listen address must parse and be free (``unix:`` paths are left to the
    service): a clean error before a service starts anything and has to stop it again.

    The trial bind uses ``SO_REUSEADDR`` as the services do, so only a port another
    process listens on is refused; port 0 (any free port) is always accepted.
    """
    from smtptls.services.policyd.socketmap import parse_listen

    text = spec.strip()
    if text.startswith("unix:"):
        return
    try:
        host, port = parse_listen(text, default_port)
    except ConfigError as exc:
        raise ConfigError(f"{option} {spec}: {exc.message}") from None
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_NUMERICHOST | socket.AI_PASSIVE)
    except socket.gaierror:
        raise ConfigError(f"{option} {spec}: not an IP address") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ConfigError(f"{option} {spec}: cannot listen: {exc.strerror or exc}") \
                from None
