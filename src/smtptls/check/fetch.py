"""The MTA-STS policy fetch of :mod:`smtptls.net.https`, on a session shared by a run.

:func:`smtptls.net.https.fetch_policy` builds a TLS context and an HTTP session for
every fetch, which is right for a sender fetching now and then and costs most of the
fetch's CPU time in a bulk run. :func:`fetch_policy_with` makes the same request
through a caller's session, with the same request step (``GET``, no redirects, only
200, ``text/plain``, the body cap enforced while streaming: RFC 8461 §3.3, B1-B5) and
the same typed errors; the session must be built as
:meth:`smtptls.check.gather.Gatherer` builds it (verified TLS context from
:func:`https_ssl_context`, no cookies, no environment proxies, the config's timeouts).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import aiohttp
from aiohttp.abc import ResolveResult

from smtptls.config import FetchConfig
from smtptls.errors import (
    FetchError,
    FetchStatusError,
    FetchTimeoutError,
    SmtpTlsError,
)
from smtptls.net import https as _https
from smtptls.net.https import FetchResult, policy_url

__all__ = ["AddressFirstResolver", "fetch_policy_with", "https_ssl_context"]


class AddressFirstResolver(_https.DnsAiohttpResolver):
    """Asks A first and AAAA only when there is no A record.

    A connection goes to the first address anyway (A first, as in the parent class);
    the AAAA lookup it skips is a third of a fetch's DNS work in a bulk run.
    """

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if family in (socket.AF_INET, socket.AF_UNSPEC):
            answer = await self._dns.try_query(host, "A")
            if answer.records:
                return [ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET,
                                      proto=0, flags=socket.AI_NUMERICHOST)
                        for a in answer.records]
        return await super().resolve(host, port, family)


def https_ssl_context(config: FetchConfig) -> ssl.SSLContext:
    """The verifying TLS context of :mod:`smtptls.net.https` (chain, name, expiry)."""
    return _https._ssl_context(config)


async def fetch_policy_with(session: aiohttp.ClientSession, domain: str,
                            config: FetchConfig) -> FetchResult:
    """Fetch the policy of ``domain`` through ``session``; errors as ``fetch_policy``'s."""
    url = policy_url(domain)  # validates the domain before any I/O
    headers = {"User-Agent": config.user_agent, "Accept": "text/plain"}
    started = time.monotonic()
    try:
        async with asyncio.timeout(config.total_timeout + 1):
            text, content_type, status = await _https._get(session, url, headers, config)
    except SmtpTlsError:
        raise
    except aiohttp.ClientConnectorCertificateError as exc:
        raise _https._tls_error(exc, url) from None
    except aiohttp.ClientConnectorDNSError as exc:
        raise _https._dns_fetch_error(exc, url) from None
    except (aiohttp.ClientSSLError, ssl.SSLError) as exc:
        raise _https._tls_error(exc, url) from None
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, _https._ResolveFailed):
            raise _https._dns_fetch_error(exc, url) from None
        raise FetchError(f"cannot connect: {_https._short(exc.os_error.strerror or exc.os_error)}",
                         url=url) from None
    except TimeoutError:
        raise FetchTimeoutError(
            f"no complete answer within the limits (connect {config.connect_timeout:g} s, "
            f"total {config.total_timeout:g} s)", url=url) from None
    except aiohttp.TooManyRedirects:  # pragma: no cover - redirects are never followed
        raise FetchStatusError("redirect not followed", url=url) from None
    except aiohttp.ClientResponseError as exc:
        raise FetchError(f"bad HTTP response: {_https._short(exc.message)}", url=url) from None
    except aiohttp.ClientError as exc:
        raise FetchError(f"HTTP failure: {_https._short(exc)}", url=url) from None
    except OSError as exc:
        raise FetchError(f"network failure: {_https._short(exc.strerror or exc)}",
                         url=url) from None
    except (ValueError, LookupError) as exc:
        raise FetchError(f"malformed response: {_https._short(exc)}", url=url) from None
    return FetchResult(text=text, content_type=content_type, status=status, url=url,
                       elapsed=time.monotonic() - started)
