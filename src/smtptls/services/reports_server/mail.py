"""SMTP and LMTP intake of RFC 8460 §5.3 report mail (aiosmtpd).

The listeners run on the service's own event loop. A message is answered ``250`` only
after every report in it is stored, or the whole message is quarantined with the reason
(a message that cannot be read is never dropped). When the store is down the answer is
``451`` and the sending MTA keeps the message and retries.

The reply says what happened to each report: stored, a duplicate of one already stored,
or kept beside a different report under the same report-id and organization (a
conflict). Memory: a session reserves the bytes of its message (the RFC 1870 ``SIZE``
it declared, else the message size cap) from the receiver's in-flight budget before
``354``; when the budget is spent the answer is ``452 4.3.1`` and the sender retries
later. A message longer than the size it declared gets ``552`` (RFC 1870 §6.3).

LMTP (RFC 2033 §4.2) needs one reply per accepted recipient after DATA; the handler
gives the same reply for each, since the message is stored once for all of them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from smtptls.errors import StoreError
from smtptls.logs import get_logger
from smtptls.services.reports_server.intake import IntakeOutcome, Outcome, ReportIntake
from smtptls.services.reports_server.limits import InflightBudget
from smtptls.store.reports_base import Channel

__all__ = ["ReportMailHandler", "delivery_reply", "start_mail_listener"]

MAX_RECIPIENTS = 100
#: Line ends and dot-stuffing a declared SIZE does not count (RFC 1870 §4: "approximately").
SIZE_SLACK = 1.02
SIZE_SLACK_BYTES = 4096
BUSY_REPLY = "452 4.3.1 Too much mail in progress, try again later"


def delivery_reply(outcomes: list[IntakeOutcome]) -> str:
    """The 250 reply for a message: what happened to each report it carried."""
    counts = {o: sum(x.outcome is o for x in outcomes) for o in Outcome}
    parts = []
    if counts[Outcome.STORED]:
        parts.append(f"{counts[Outcome.STORED]} report(s) stored")
    if counts[Outcome.DUPLICATE]:
        parts.append(f"{counts[Outcome.DUPLICATE]} duplicate(s) of stored reports, "
                     "not stored again")
    if counts[Outcome.CONFLICT]:
        parts.append(f"{counts[Outcome.CONFLICT]} report(s) kept in conflict with a "
                     "different report of the same report-id")
    if counts[Outcome.QUARANTINED]:
        parts.append(f"{counts[Outcome.QUARANTINED]} kept in quarantine")
    if not parts:
        parts.append("message kept in quarantine")
    return "250 2.0.0 " + "; ".join(parts)


def declared_size(options: list[str] | None) -> int | None:
    """The RFC 1870 ``SIZE=`` value of MAIL FROM, if a sane one was given."""
    for option in options or ():
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit() and len(value) < 16:
            return int(value)
    return None


class _BudgetedDataMixin:
    """DATA reads only what the in-flight budget has room for (see the module docs)."""

    budget: InflightBudget | None = None

    async def smtp_DATA(self, arg: str) -> None:
        me: Any = self
        budget = self.budget
        envelope = me.envelope
        if budget is None or envelope is None or not envelope.rcpt_tos or arg:
            await super().smtp_DATA(arg)  # type: ignore[misc]
            return
        limit = me.data_size_limit
        size = declared_size(envelope.mail_options)
        want = limit if size is None else min(limit, int(size * SIZE_SLACK) + SIZE_SLACK_BYTES)
        reservation = budget.reserve(want)
        if reservation is None:
            _log.warning("mail refused", reason="in-flight budget spent", budget=budget.limit)
            await me.push(BUSY_REPLY)
            return
        me.data_size_limit = want
        try:
            await super().smtp_DATA(arg)  # type: ignore[misc]
        finally:
            me.data_size_limit = limit
            reservation.release()


class BudgetedSMTP(_BudgetedDataMixin, SMTP):
    pass


class BudgetedLMTP(_BudgetedDataMixin, LMTP):
    pass
_log = get_logger("reports.mail")


class ReportMailHandler:
    """aiosmtpd handler feeding :class:`ReportIntake`."""

    def __init__(self, intake: ReportIntake, *, channel: Channel) -> None:
        self.intake = intake
        self.channel = channel

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # pragma: no cover - decode_data=False gives bytes
            raw = raw.encode("utf-8", "surrogateescape")
        peer = session.peer
        remote = peer[0] if isinstance(peer, tuple) and peer else str(peer or "")
        try:
            outcomes = await self.intake.submit_message(raw, channel=self.channel,
                                                        remote=remote)
        except StoreError as exc:
            _log.error("store unavailable", channel=str(self.channel), error=str(exc))
            reply = "451 4.3.0 Report store unavailable, try again later"
        else:
            for o in outcomes:
                if o.outcome is Outcome.QUARANTINED:
                    _log.warning("message quarantined", channel=str(self.channel),
                                 remote=remote, reason=o.reason, quarantine_id=o.pk)
                else:
                    _log.info("report received", channel=str(self.channel), remote=remote,
                              report_id=o.report_id, outcome=str(o.outcome))
            reply = delivery_reply(outcomes)
        if self.channel is Channel.LMTP:
            # RFC 2033 §4.2: one reply line per recipient.
            return "\r\n".join([reply] * max(1, len(envelope.rcpt_tos)))
        return reply


async def start_mail_listener(intake: ReportIntake, host: str, port: int, *, lmtp: bool,
                              max_message: int, hostname: str = "smtptls-reports",
                              budget: InflightBudget | None = None) -> asyncio.Server:
    """Start an SMTP (or LMTP) listener on the running loop; close() the result to stop."""
    channel = Channel.LMTP if lmtp else Channel.SMTP
    handler = ReportMailHandler(intake, channel=channel)
    cls: Any = BudgetedLMTP if lmtp else BudgetedSMTP
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        server = cls(handler, data_size_limit=max_message, enable_SMTPUTF8=True,
                     decode_data=False, hostname=hostname, ident="smtptls TLSRPT intake",
                     loop=loop)
        server.budget = budget
        return server

    return await loop.create_server(factory, host=host, port=port)
