"""Explicit PKIX (WebPKI) verification of a certificate chain captured by a probe.

:func:`smtptls.net.smtp.probe_starttls` returns the server's chain unverified; this is
the check MTA-STS needs afterwards (RFC 8461 §4.2: the certificate chains to a trusted
root, is not expired and is valid for the MX host name per RFC 6125, wildcards only as
the whole left-most label). It uses ``cryptography.x509.verification`` with the given CA
file, or the system's CA bundle when none is given.

It returns a :class:`PkixVerdict` (never raises for a bad chain) whose ``result_type``
is the RFC 8460 §4.3.2.1 failure type a TLSRPT report would use.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
import ssl
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from smtptls.errors import ConfigError

__all__ = ["PkixVerdict", "load_roots", "verify_pkix"]

MAX_CA_FILE = 16 * 1024 * 1024
MAX_CHAIN = 16
MAX_CHAIN_DEPTH = 8
MAX_ROOTS = 4096
_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


@dataclass(frozen=True, slots=True)
class PkixVerdict:
    """``ok`` and why; ``result_type`` is None on success, else an RFC 8460 result type."""

    ok: bool
    reason: str
    result_type: str | None = None


def _system_ca_file() -> Path:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ConfigError("no system CA bundle found; give a CA file", key="ca_file")


@functools.lru_cache(maxsize=8)
def _roots_cached(path: str, mtime_ns: int, size: int) -> tuple[x509.Certificate, ...]:
    with open(path, "rb") as fh:
        data = fh.read(MAX_CA_FILE + 1)
    if len(data) > MAX_CA_FILE:
        raise ConfigError(f"{path}: CA file larger than {MAX_CA_FILE} bytes", key="ca_file")
    certs = []
    # One by one, bounded: a single odd root (e.g. a zero serial, which cryptography
    # warns about) must not make the whole bundle unusable.
    for block in _PEM_BLOCK.findall(data)[:MAX_ROOTS]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                certs.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    if not certs:
        raise ConfigError(f"{path}: no PEM certificate found", key="ca_file")
    return tuple(certs)


def load_roots(ca_file: str | Path | None = None) -> tuple[x509.Certificate, ...]:
    """Trust anchors from ``ca_file`` (PEM), or from the system bundle when None."""
    path = Path(ca_file) if ca_file is not None else _system_ca_file()
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read CA file {path}: {exc.strerror}", key="ca_file") from exc
    try:
        return _roots_cached(str(path), st.st_mtime_ns, st.st_size)
    except OSError as exc:
        raise ConfigError(f"cannot read CA file {path}: {exc.strerror}", key="ca_file") from exc


def _subject(hostname: str) -> x509.DNSName | x509.IPAddress:
    name = hostname.rstrip(".")
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    return x509.DNSName(name.lower())


def _verify(certs: list[x509.Certificate], hostname: str,
            roots: Sequence[x509.Certificate], now: dt.datetime) -> str | None:
    """None when valid, else the verifier's reason."""
    try:
        verifier = (PolicyBuilder().store(Store(list(roots))).time(now)
                    .max_chain_depth(MAX_CHAIN_DEPTH).build_server_verifier(_subject(hostname)))
        verifier.verify(certs[0], certs[1:])
    except VerificationError as exc:
        return str(exc) or "verification failed"
    except (ValueError, TypeError) as exc:
        return f"cannot verify for {hostname!r}: {exc}"
    return None


def _other_name_of(leaf: x509.Certificate) -> str | None:
    """A name the leaf is valid for, to tell 'wrong name' from 'untrusted'."""
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for name in san.get_values_for_type(x509.DNSName):
        return "x" + name[1:] if name.startswith("*.") else name
    for ip in san.get_values_for_type(x509.IPAddress):
        return str(ip)
    return None


def verify_pkix(
    chain: Sequence[bytes],
    hostname: str,
    ca_file: str | Path | None = None,
    now: dt.datetime | None = None,
) -> PkixVerdict:
    """Verify a DER chain (leaf first, as sent) for ``hostname`` against PKIX roots.

    ``now`` defaults to the current time. Raises only :class:`ConfigError` (unreadable
    CA file); everything about the chain is in the verdict.
    """
    when = now or dt.datetime.now(dt.UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if not chain:
        return PkixVerdict(False, "the server sent no certificate", "certificate-not-trusted")
    if len(chain) > MAX_CHAIN:
        return PkixVerdict(False, f"chain longer than {MAX_CHAIN} certificates",
                           "validation-failure")
    certs: list[x509.Certificate] = []
    for i, der in enumerate(chain):
        try:
            certs.append(x509.load_der_x509_certificate(bytes(der)))
        except ValueError:
            return PkixVerdict(False, f"certificate {i} is not valid DER", "validation-failure")
    roots = load_roots(ca_file)
    problem = _verify(certs, hostname, roots, when)
    if problem is None:
        return PkixVerdict(True, f"PKIX chain valid for {hostname}")
    leaf = certs[0]
    if when > leaf.not_valid_after_utc or when < leaf.not_valid_before_utc:
        return PkixVerdict(False, f"certificate not valid at {when:%Y-%m-%d %H:%M}Z "
                           f"(valid {leaf.not_valid_before_utc:%Y-%m-%d} to "
                           f"{leaf.not_valid_after_utc:%Y-%m-%d})", "certificate-expired")
    other = _other_name_of(leaf)
    if other is not None and _verify(certs, other, roots, when) is None:
        return PkixVerdict(False, f"certificate not valid for {hostname}",
                           "certificate-host-mismatch")
    return PkixVerdict(False, f"certificate not trusted: {problem}", "certificate-not-trusted")
