"""Answers for Exim: the destination decision as a line Exim's string expansion reads.

Exim (4.96, Debian 12) has DANE but no MTA-STS. It asks ``smtptls policyd`` with
``${readsocket}`` on the same socketmap listener Postfix uses, under a second map name
(``[policyd] exim_map_name``, default ``exim``): the request is the netstring
``exim <domain>``, the reply ``OK <fields>``, always ``OK`` so that Exim can tell "no
policy" (``policy=none``) from "no answer" (the daemon cannot be reached, or any other
reply: Exim then delivers as without a policy and logs it, see docs/exim.md). The
fields are ``key=value`` pairs separated by one space, for ``${extract{key}{...}}``:

- ``policy``: what Exim's routers do (one of :class:`EximPolicy`):
  ``dane-required`` (every MX has usable TLSA: Exim's ``hosts_require_dane``),
  ``dane`` (some do: ``hosts_try_dane``, Exim checks each host's TLSA itself),
  ``enforce`` (MTA-STS enforce: only the hosts in ``mx``, TLS required, certificate
  verified against the CA store and the MX host name, SNI sent), ``testing``
  (MTA-STS testing: Exim's defaults), ``none`` (no policy: Exim's defaults),
  ``defer`` (no MX host may be used now: the router defers, with ``reason``);
- ``mode``: the MTA-STS policy's mode (``enforce``/``testing``/``none``; ``-``: none),
  shown also when DANE decides (RFC 8461 §2: DANE is never downgraded by MTA-STS);
- ``mx``: for ``enforce``, the MX hosts that match the policy (RFC 8461 §4.1;
  ``*.example.com`` covers exactly one label), in MX preference order, as an Exim
  colon list; ``-`` otherwise;
- ``domain``: the policy domain; ``reason``: the engine's reason, double-quoted.

The decision itself is the engine's (:meth:`PolicyEngine.explain`,
:func:`smtptls.engine.destination.decide`): this module only renders it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from enum import StrEnum

from smtptls.engine.destination import Decision, DecisionKind, DestinationFacts
from smtptls.logs import get_logger
from smtptls.mtasts.policy import Mode
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.services.policyd.socketmap import Reply

__all__ = ["DEFAULT_MAP_NAME", "EximAnswers", "EximPolicy", "exim_answer"]

log = get_logger("policyd")

DEFAULT_MAP_NAME = "exim"
#: ``reason`` is cut to this many characters (Exim logs it in a defer line).
MAX_REASON = 200
#: An answer is recomputed at the latest after this many seconds.
MAX_ANSWER_TTL = 3600.0
#: A TEMP/failed computation is answered for this long before the next try.
MIN_ANSWER_TTL = 2.0
#: The empty value of a field (Exim's ``${extract}`` cannot tell "" from absent).
EMPTY = "-"


class EximPolicy(StrEnum):
    DANE_REQUIRED = "dane-required"
    DANE = "dane"
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"
    DEFER = "defer"


def _override_policy(text: str | None) -> EximPolicy:
    # a configured per-domain answer is Postfix policy syntax: its DANE levels have an
    # Exim equivalent; any other level leaves Exim's defaults (docs/exim.md)
    word = (text or "").split(" ", 1)[0].lower()
    if word == "dane-only":
        return EximPolicy.DANE_REQUIRED
    if word == "dane":
        return EximPolicy.DANE
    return EximPolicy.NONE


_BY_KIND = {
    DecisionKind.DANE_ONLY: EximPolicy.DANE_REQUIRED,
    DecisionKind.DANE: EximPolicy.DANE,
    DecisionKind.SECURE: EximPolicy.ENFORCE,
    DecisionKind.TESTING: EximPolicy.TESTING,
    DecisionKind.TEMP: EximPolicy.DEFER,
}


def _quote(text: str) -> str:
    # Exim's ${extract} reads a double-quoted value up to the next unescaped quote;
    # one line of printable ASCII (Exim's log escapes other octets), no quotes or
    # backslashes inside, bounded
    text = text.replace("§", "")
    clean = "".join(c if " " <= c <= "~" and c not in '"\\' else " " for c in text)
    return '"' + clean[:MAX_REASON] + '"'


def exim_answer(decision: Decision, facts: DestinationFacts | None) -> str:
    """The reply text (after ``OK``) for Exim for one decision (pure)."""
    if decision.kind is DecisionKind.OVERRIDE:
        policy = _override_policy(decision.policy)
    elif decision.kind is DecisionKind.NOTFOUND:
        policy = EximPolicy.NONE
        if facts is not None and facts.policy is not None:
            # a testing (or mode none) policy: Exim's defaults, shown as such
            policy = (EximPolicy.TESTING if facts.policy.mode is Mode.TESTING
                      else EximPolicy.NONE)
    else:
        policy = _BY_KIND[decision.kind]
    mode = EMPTY
    domain = EMPTY
    if facts is not None:
        if facts.policy is not None:
            mode = facts.policy.mode.value
        domain = facts.nexthop.policy_domain or EMPTY
    mx = ":".join(decision.match) if policy is EximPolicy.ENFORCE and decision.match else EMPTY
    return (f"policy={policy.value} mode={mode} mx={mx} domain={domain} "
            f"reason={_quote(decision.reason)}")


class EximAnswers:
    """The socketmap :class:`~.socketmap.Handler` for the Exim map name: the engine's
    explanation of a destination, rendered by :func:`exim_answer`, kept in memory until
    the engine's recheck time (at most ``max_answers`` destinations), then computed
    again at the next lookup (the MTA-STS policy itself comes from the policy cache:
    fetched again only when discovery says so, RFC 8461 §3.3)."""

    def __init__(self, engine: PolicyEngine, *, clock: Callable[[], float] = time.time,
                 max_answers: int | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.max_answers = max_answers or engine.max_answers
        self._answers: dict[str, tuple[bytes, float]] = {}
        self._inflight: dict[str, asyncio.Task[bytes]] = {}

    def lookup_cached(self, key: str) -> bytes | None:
        entry = self._answers.get(key.strip().lower())
        if entry is not None and self.clock() < entry[1]:
            return entry[0]
        return None

    async def lookup(self, key: str) -> bytes:
        norm = key.strip().lower()
        task = self._inflight.get(norm)
        if task is None:
            task = asyncio.ensure_future(self._compute(norm))
            self._inflight[norm] = task
            task.add_done_callback(lambda t, k=norm: self._inflight.pop(k, None))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.engine.compute_timeout)
        except TimeoutError:
            decision = Decision(DecisionKind.TEMP, None, "policy lookup still in progress")
            return Reply.ok(exim_answer(decision, None)).to_bytes()

    async def _compute(self, key: str) -> bytes:
        try:
            explanation = await self.engine.explain(key)
            wire = Reply.ok(exim_answer(explanation.decision, explanation.facts)).to_bytes()
            ttl = explanation.ttl if explanation.ttl is not None else MIN_ANSWER_TTL
        except Exception as exc:  # never crash the connection; Exim defers
            log.error("exim answer computation crashed", key=key[:100],
                      error=f"{type(exc).__name__}: {exc}")
            decision = Decision(DecisionKind.TEMP, None, "internal error")
            wire = Reply.ok(exim_answer(decision, None)).to_bytes()
            ttl = MIN_ANSWER_TTL
        ttl = min(max(ttl, MIN_ANSWER_TTL), MAX_ANSWER_TTL)
        answers = self._answers
        if key not in answers and len(answers) >= self.max_answers:
            answers.pop(next(iter(answers)))  # bounded memory: oldest insertion goes
        answers[key] = (wire, self.clock() + ttl)
        return wire

    def reconfigure(self) -> None:
        """Configuration reloaded (SIGHUP): every answer is recomputed."""
        self._answers.clear()
