"""HTTPS fetch of an MTA-STS policy with the limits of RFC 8461 §3.3.

:func:`fetch_policy` GETs ``https://mta-sts.<domain>/.well-known/mta-sts.txt`` and
returns the body text. What it enforces, and where the RFC says so:

- B1 (§3.3): HTTPS only, GET, that exact URL; the policy domain is validated first.
- B2 (§3.3, RFC 6125): SNI sent, certificate chain verified against the configured CA
  file (the system store when none), host name checked, expiry checked. Verification
  is never disabled; a failure is a :class:`~smtptls.errors.FetchTlsError` whose
  ``reason`` is ``expired``, ``not-yet-valid``, ``wrong-name``, ``untrusted`` or
  ``handshake``.
- B3 (§3.3): redirects are not followed; any status but 200 is a
  :class:`~smtptls.errors.FetchStatusError` carrying the status.
- B4 (§3.3): the media type must be ``text/plain`` (parameters allowed), else
  :class:`~smtptls.errors.FetchContentTypeError`.
- B5 (§3.3): connect and total timeouts (:class:`~smtptls.errors.FetchTimeoutError`)
  and a body cap enforced while streaming, whatever Content-Length claims and with
  chunked encoding too (:class:`~smtptls.errors.FetchTooLargeError`).
- B6 (§3.3): no cookies are sent or kept, no credentials, a distinct User-Agent.

Host names are resolved through :mod:`smtptls.net.dns` (the configured resolver), not
the system's, so a fetch sees the same DNS as the rest of the decision.

The HTTP client (aiohttp) is imported by the first fetch, not by importing this module:
``smtptls policyd`` answers its first requests before it has loaded it.

The body must be UTF-8 (RFC 8461 §3.2 policies are ASCII in practice). A body that is
not valid UTF-8 is a policy defect, not a transport one: it raises
:class:`~smtptls.errors.PolicySyntaxError` with the line of the first bad byte, which
TLSRPT reports as ``sts-policy-invalid`` (RFC 8460 §4.3.2.2).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from smtptls.config import FetchConfig
from smtptls.dnssec import Security
from smtptls.errors import (
    FetchContentTypeError,
    FetchError,
    FetchStatusError,
    FetchTimeoutError,
    FetchTlsError,
    FetchTooLargeError,
    PolicySyntaxError,
    SmtpTlsError,
)
from smtptls.mtasts.policy import is_text_plain
from smtptls.net.dns import normalize_domain
from smtptls.net.protocols import Resolver

if TYPE_CHECKING:
    import aiohttp
    from aiohttp.abc import AbstractResolver, ResolveResult

# DnsAiohttpResolver comes from the module's __getattr__ (built on first use)
__all__ = ["FetchResult", "TlsFailure", "fetch_policy", "policy_url",
           "DnsAiohttpResolver"]  # noqa: F822

WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"  # RFC 8461 §3.3
_CHUNK = 8192


class TlsFailure(StrEnum):
    """Why the policy host's certificate was refused (maps to TLSRPT result types)."""

    EXPIRED = "expired"  # certificate-expired
    NOT_YET_VALID = "not-yet-valid"  # certificate-not-trusted / validation-failure
    WRONG_NAME = "wrong-name"  # certificate-host-mismatch
    UNTRUSTED = "untrusted"  # certificate-not-trusted
    HANDSHAKE = "handshake"  # validation-failure / other TLS error


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A successfully fetched policy body (not yet parsed)."""

    text: str
    content_type: str
    status: int
    url: str
    elapsed: float  # seconds
    security: Security = Security.INSECURE  # DNSSEC status of the policy host's address


def policy_url(domain: str) -> str:
    """RFC 8461 §3.3: ``https://mta-sts.<domain>/.well-known/mta-sts.txt``."""
    return f"https://mta-sts.{normalize_domain(domain)}{WELL_KNOWN_PATH}"


class _ResolveFailed(OSError):
    """Carries a typed DNS failure through aiohttp's connector (which wants OSError)."""

    def __init__(self, error: SmtpTlsError) -> None:
        super().__init__(socket.EAI_NONAME, str(error))
        self.error = error


class _DnsResolverMethods:
    """The methods of :class:`DnsAiohttpResolver` (the class itself is built with
    aiohttp's ``AbstractResolver`` as a base when first used: see ``__getattr__``)."""

    def __init__(self, dns: Resolver) -> None:
        self._dns = dns
        self.last_security: Security | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        wanted = []
        if family in (socket.AF_INET, socket.AF_UNSPEC):
            wanted.append((socket.AF_INET, "A"))
        if family in (socket.AF_INET6, socket.AF_UNSPEC):
            wanted.append((socket.AF_INET6, "AAAA"))
        # A and AAAA together; one of them failing is fine if the other has addresses
        answers = await asyncio.gather(*(self._dns.try_query(host, t) for _, t in wanted))
        results: list[ResolveResult] = []
        for (fam, _), answer in zip(wanted, answers, strict=True):
            for address in answer.records:
                # aiohttp's ResolveResult (a TypedDict: a dict at run time)
                results.append({"hostname": host, "host": address, "port": port,
                                "family": fam, "proto": 0, "flags": socket.AI_NUMERICHOST})
        usable = [a for a in answers if a.records]
        secure = bool(usable) and all(a.security is Security.SECURE for a in usable)
        self.last_security = Security.SECURE if secure else Security.INSECURE
        if not results:
            errors = [a.error for a in answers if a.error is not None]
            if errors:
                raise _ResolveFailed(errors[0])
            nx = any(a.nxdomain for a in answers)
            what = "does not exist (NXDOMAIN)" if nx else "has no address records"
            raise _ResolveFailed(FetchError(f"{host} {what}"))
        return results

    async def close(self) -> None:
        return None


_resolver_class: type | None = None


def _dns_aiohttp_resolver() -> type[AbstractResolver]:
    global _resolver_class
    if _resolver_class is None:
        from aiohttp.abc import AbstractResolver

        _resolver_class = type("DnsAiohttpResolver", (_DnsResolverMethods, AbstractResolver),
                               {"__module__": __name__, "__doc__": _DNS_RESOLVER_DOC})
    return _resolver_class


_DNS_RESOLVER_DOC = """An aiohttp resolver backed by :class:`~smtptls.net.dns.DnsResolver`.

    Returns the A and AAAA records of the host (A first); NXDOMAIN/NODATA and DNS
    failures are raised as :class:`OSError` for aiohttp, with the typed error kept.
    """


def __getattr__(name: str) -> Any:
    # ``DnsAiohttpResolver`` (a subclass of aiohttp's AbstractResolver) imports aiohttp
    # when first named, so importing this module does not
    if name == "DnsAiohttpResolver":
        return _dns_aiohttp_resolver()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def https_ssl_context(config: FetchConfig) -> ssl.SSLContext:
    """The verifying TLS context of policy fetches (chain, name, expiry, TLS >= 1.2)."""
    # RFC 8461 §3.3: the certificate MUST be valid for mta-sts.<domain> and chain to a
    # trusted root; create_default_context checks the chain, the expiry and the name.
    try:
        ctx = ssl.create_default_context(cafile=config.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise FetchError(f"cannot load CA file {config.ca_file}: {exc}") from exc
    ctx.check_hostname = True
    # RFC 8461 §3.3 (RFC 6125): a DNS-ID only, never the subject CN as a fallback
    ctx.hostname_checks_common_name = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _tls_failure(exc: BaseException) -> tuple[TlsFailure, str]:
    cert_error = getattr(exc, "certificate_error", None) or exc
    code = getattr(cert_error, "verify_code", None)
    message = getattr(cert_error, "verify_message", None) or str(cert_error)
    # OpenSSL X509_V_ERR_* codes.
    if code == 10:  # CERT_HAS_EXPIRED
        return TlsFailure.EXPIRED, message
    if code == 9:  # CERT_NOT_YET_VALID
        return TlsFailure.NOT_YET_VALID, message
    if code == 62:  # HOSTNAME_MISMATCH
        return TlsFailure.WRONG_NAME, message
    if code in (2, 18, 19, 20, 21, 24, 27, 28):  # no issuer / self-signed / untrusted
        return TlsFailure.UNTRUSTED, message
    if code is not None:
        return TlsFailure.HANDSHAKE, message
    text = str(cert_error)
    if "expired" in text:
        return TlsFailure.EXPIRED, text
    if "hostname" in text.lower() or "match" in text.lower():
        return TlsFailure.WRONG_NAME, text
    return TlsFailure.HANDSHAKE, text


def _tls_error(exc: BaseException, url: str) -> FetchTlsError:
    reason, message = _tls_failure(exc)
    err = FetchTlsError(f"TLS verification failed ({reason}): {_short(message)}", url=url)
    err.reason = reason  # type: ignore[attr-defined]
    return err


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = body.count(b"\n", 0, exc.start) + 1
        raise PolicySyntaxError("policy is not valid UTF-8", line=line) from exc


async def _read_capped(resp: aiohttp.ClientResponse, cap: int, url: str) -> bytes:
    # RFC 8461 §3.3 (B5): bound the body. A declared length over the cap fails at once;
    # the streamed length is checked too, whatever the header said or if chunked.
    declared = resp.content_length
    if declared is not None and declared > cap:
        raise FetchTooLargeError(f"Content-Length {declared} exceeds the {cap} byte cap",
                                 url=url)
    buf = bytearray()
    while True:
        chunk = await resp.content.read(_CHUNK)
        if not chunk:
            break
        buf += chunk
        if len(buf) > cap:
            raise FetchTooLargeError(f"body exceeds the {cap} byte cap", url=url)
    return bytes(buf)


async def fetch_policy_with(session: aiohttp.ClientSession, domain: str,
                            config: FetchConfig) -> FetchResult:
    """The policy request of :func:`fetch_policy` through a caller's session.

    For callers that fetch many policies (``smtptls check --bulk``): one session, one TLS
    context. The session must be built like :func:`fetch_policy`'s: the verifying
    context of :func:`https_ssl_context`, no cookies, ``trust_env=False``, the
    configured timeouts. Same request (``GET``, no redirects, only 200, ``text/plain``,
    the body cap enforced while streaming: RFC 8461 §3.3) and the same typed errors.
    """
    import aiohttp  # loaded already: the caller's session is an aiohttp one

    url = policy_url(domain)  # validates the domain first (no I/O on a bad name)
    headers = {"User-Agent": config.user_agent, "Accept": "text/plain"}
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.total_timeout + 1):
            text, content_type, status = await _get(session, url, headers, config)
    except SmtpTlsError:
        raise
    except aiohttp.ClientConnectorCertificateError as exc:
        raise _tls_error(exc, url) from exc
    except aiohttp.ClientConnectorDNSError as exc:
        raise _dns_fetch_error(exc, url) from exc
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise _tls_error(exc, url) from exc
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, _ResolveFailed):
            raise _dns_fetch_error(exc, url) from exc
        raise FetchError(f"cannot connect: {_short(exc.os_error.strerror or exc.os_error)}",
                         url=url) from exc
    except TimeoutError as error:
        raise FetchTimeoutError(
            f"no complete answer within the limits (connect {config.connect_timeout:g} s, "
            f"total {config.total_timeout:g} s)", url=url) from error
    except aiohttp.TooManyRedirects as error:  # pragma: no cover - redirects are never followed
        raise FetchStatusError("redirect not followed", url=url) from error
    except aiohttp.ClientResponseError as exc:
        raise FetchError(f"bad HTTP response: {_short(exc.message)}", url=url) from exc
    except aiohttp.ClientError as exc:
        raise FetchError(f"HTTP failure: {_short(exc)}", url=url) from exc
    except OSError as exc:
        raise FetchError(f"network failure: {_short(exc.strerror or exc)}", url=url) from exc
    except (ValueError, LookupError) as exc:  # malformed headers, unknown encodings, ...
        raise FetchError(f"malformed response: {_short(exc)}", url=url) from exc
    return FetchResult(text=text, content_type=content_type, status=status, url=url,
                       elapsed=time.monotonic() - started)


def fetch_session(config: FetchConfig, resolver: AbstractResolver, *,
                  limit: int = 1) -> aiohttp.ClientSession:
    """An HTTP session for policy fetches: verifying TLS, no cookies, no environment."""
    import aiohttp

    timeout = aiohttp.ClientTimeout(
        total=config.total_timeout,
        connect=config.connect_timeout,
        sock_connect=config.connect_timeout,
    )
    connector = aiohttp.TCPConnector(
        resolver=resolver, ssl=https_ssl_context(config), use_dns_cache=False,
        force_close=True, limit=limit,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),  # RFC 8461 §3.3 (B6): no cookies
        timeout=timeout,
        auto_decompress=True,
        trust_env=False,  # no proxies or .netrc credentials from the environment
        raise_for_status=False,
    )


async def fetch_policy(
    domain: str, *, config: FetchConfig | None = None, resolver: Resolver
) -> FetchResult:
    """Fetch the MTA-STS policy body of ``domain`` (RFC 8461 §3.3).

    Raises :class:`~smtptls.errors.InvalidDomainError` before any I/O for a name that
    cannot be a policy domain, a :class:`~smtptls.errors.FetchError` subclass for
    transport failures, and :class:`~smtptls.errors.PolicySyntaxError` for a body that
    is not UTF-8. Never disables certificate verification, never follows redirects.
    """
    config = config or FetchConfig()
    policy_url(domain)  # validates the domain first (no I/O on a bad name)
    dns_resolver = _dns_aiohttp_resolver()(resolver)
    async with fetch_session(config, dns_resolver) as session:
        result = await fetch_policy_with(session, domain, config)
    return dataclasses.replace(result,
                               security=dns_resolver.last_security or Security.INSECURE)


def _short(value: object, limit: int = 200) -> str:
    """Peer-controlled text in error messages is cut to a bounded length."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def _dns_fetch_error(exc: Any, url: str) -> FetchError:
    os_error = getattr(exc, "os_error", None)
    inner = getattr(os_error, "error", None)
    if isinstance(inner, SmtpTlsError):
        return FetchError(f"cannot resolve the policy host: {inner}", url=url)
    return FetchError(f"cannot resolve the policy host: {_short(os_error or exc)}", url=url)


async def _get(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], config: FetchConfig
) -> tuple[str, str, int]:
    # RFC 8461 §3.3 (B3): "HTTP 3xx redirects MUST NOT be followed".
    async with session.get(url, headers=headers, allow_redirects=False) as resp:
        status = resp.status
        content_type = resp.headers.get("Content-Type", "")
        check_response(url, status, resp.reason, resp.headers.get("Location", ""),
                       content_type)
        body = await _read_capped(resp, config.max_body, url)
    return _decode(body), content_type, status


def check_response(url: str, status: int, reason: str | None, location: str,
                   content_type: str) -> None:
    """RFC 8461 §3.3 on a response head: no redirect followed (B3), only 200, and
    ``text/plain`` (B4); the typed error otherwise."""
    if 300 <= status < 400:
        raise FetchStatusError(
            f"HTTP {status} redirect to {location[:200]!r} not followed (RFC 8461 §3.3)",
            url=url, status=status)
    if status != 200:
        raise FetchStatusError(f"HTTP {status} {_short(reason or '', 80)}".rstrip(),
                               url=url, status=status)
    if not is_text_plain(content_type):
        raise FetchContentTypeError(
            f"media type {content_type[:100]!r} is not text/plain", url=url)
