"""Check domains: gather the facts, evaluate them (one run, one :class:`Gatherer`)."""

from __future__ import annotations

from collections.abc import Sequence

from smtptls.check.evaluate import evaluate
from smtptls.check.gather import CheckOptions, Gatherer
from smtptls.check.report import CheckReport
from smtptls.net.dns import run_sync

__all__ = ["check_domain", "check_domains", "check_domains_sync"]


async def check_domain(domain: str, options: CheckOptions | None = None, *,
                       gatherer: Gatherer | None = None) -> CheckReport:
    """Check one domain. Raises only for a malformed name or an unusable CA file."""
    if gatherer is not None:
        return evaluate(await gatherer.gather(domain))
    async with Gatherer(options) as g:
        return evaluate(await g.gather(domain))


async def check_domains(domains: Sequence[str],
                        options: CheckOptions | None = None) -> list[CheckReport]:
    """Check several domains one after the other with one shared gatherer."""
    async with Gatherer(options) as g:
        return [evaluate(await g.gather(d)) for d in domains]


def check_domains_sync(domains: Sequence[str],
                       options: CheckOptions | None = None) -> list[CheckReport]:
    """Blocking twin of :func:`check_domains` for the CLI and scripts."""
    return run_sync(lambda: check_domains(domains, options))
