"""SMTP and LMTP intake of RFC 8460 §5.3 report mail (aiosmtpd).

The listeners run on the service's own event loop. A message is answered ``250`` only
after every report in it is stored, or the whole message is quarantined with the reason
(a message that cannot be read is never dropped). When the store is down the answer is
``451`` and the sending MTA keeps the message and retries.

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
from smtptls.services.reports_server.intake import Outcome, ReportIntake
from smtptls.store.reports_base import Channel

__all__ = ["ReportMailHandler", "start_mail_listener"]

MAX_RECIPIENTS = 100
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
            stored = sum(o.outcome is not Outcome.QUARANTINED for o in outcomes)
            reply = (f"250 2.0.0 {stored} report(s) stored" if stored
                     else "250 2.0.0 Message kept in quarantine")
        if self.channel is Channel.LMTP:
            # RFC 2033 §4.2: one reply line per recipient.
            return "\r\n".join([reply] * max(1, len(envelope.rcpt_tos)))
        return reply


async def start_mail_listener(intake: ReportIntake, host: str, port: int, *, lmtp: bool,
                              max_message: int, hostname: str = "smtptls-reports"
                              ) -> asyncio.Server:
    """Start an SMTP (or LMTP) listener on the running loop; close() the result to stop."""
    channel = Channel.LMTP if lmtp else Channel.SMTP
    handler = ReportMailHandler(intake, channel=channel)
    cls: Any = LMTP if lmtp else SMTP
    loop = asyncio.get_running_loop()

    def factory() -> SMTP:
        return cls(handler, data_size_limit=max_message, enable_SMTPUTF8=True,
                   decode_data=False, hostname=hostname, ident="smtptls TLSRPT intake",
                   loop=loop)

    return await loop.create_server(factory, host=host, port=port)
