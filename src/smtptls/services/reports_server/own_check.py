"""``smtptls check`` from the console, for the owner's own domains only.

The domain page of an own domain (``[reports] domains``) has a button that runs the
same check as ``smtptls check DOMAIN`` (:mod:`smtptls.check`: gather, evaluate,
render) against its live DNS, policy host and MX hosts, with the receiver's ``[dns]``
and ``[fetch]`` settings. Targets never come from the browser: a name that is not a
configured own domain is refused before anything is looked up. One check runs at a
time (another request meanwhile is told to wait), each bounded by ``DOMAIN_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from smtptls.config import Config

__all__ = ["DOMAIN_TIMEOUT", "CheckBusy", "make_own_check"]

#: Everything about one domain (DNS, HTTPS, SMTP probes), as ``smtptls check --timeout``.
DOMAIN_TIMEOUT = 60.0


class CheckBusy(Exception):  # noqa: N818 - a state, not a failure
    """Another check is running."""


def make_own_check(config: Config) -> Callable[[str], Awaitable[str]]:
    """An async ``check(domain) -> report text`` for the configured own domains."""
    own = frozenset(d.lower().rstrip(".") for d in config.reports.domains)
    lock = asyncio.Lock()

    async def check(domain: str) -> str:
        name = domain.lower().rstrip(".")
        if name not in own:
            raise KeyError(name)
        if lock.locked():
            raise CheckBusy(name)
        async with lock:
            from smtptls.check import CheckOptions, Gatherer, evaluate
            from smtptls.check.render import render_report

            options = CheckOptions(dns=config.dns, ca_file=config.fetch.ca_file,
                                   timeout=min(config.dns.timeout * 4, 30.0),
                                   domain_timeout=DOMAIN_TIMEOUT)
            async with Gatherer(options) as gatherer:
                report = evaluate(await gatherer.gather(name))
            return render_report(report)

    return check
