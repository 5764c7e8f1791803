"""Report mail from an IMAP mailbox, through the same intake as SMTP (DKIM included).

For each unseen message not handled before (net/imap.py): read its size, fetch it
without marking it read, hand it to :meth:`ReportIntake.submit_message` (DKIM checked
as for SMTP, the report stored or the mail quarantined with the reason), and only once
the store has committed mark it handled: ``\\Seen`` plus a keyword, and moved to
``done_folder`` (stored reports) or ``quarantine_folder`` (quarantined mail) when set.
A failure before the commit (the store down) leaves the message untouched for the next
run; a crash after it makes the next run fetch it again, which the store answers as a
duplicate: runs are idempotent. A message over ``max_message`` is not fetched; it is
quarantined by its size alone (the store keeps the reason) and moved aside.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from smtptls.config import ReportsImapConfig
from smtptls.errors import ConfigError, ImapError, StoreError
from smtptls.logs import get_logger
from smtptls.net.imap import ImapMailbox, ImapSecurity, ImapSettings
from smtptls.services.reports_server.intake import IntakeOutcome, Outcome, ReportIntake
from smtptls.store.reports_base import Channel

__all__ = ["FetchResult", "fetch_reports", "imap_poller", "settings_from_config"]

_log = get_logger("reports.imap")


@dataclass(slots=True)
class FetchResult:
    messages: int = 0
    stored: int = 0
    duplicate: int = 0
    conflict: int = 0
    quarantined: int = 0
    left: int = 0  # not handled (the store failed): fetched again next time
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "stored": self.stored, "duplicate": self.duplicate,
                "conflict": self.conflict, "quarantined": self.quarantined, "left": self.left,
                "errors": list(self.errors)}


def settings_from_config(cfg: ReportsImapConfig) -> ImapSettings:
    password = cfg.password
    if cfg.password_file:
        try:
            with open(cfg.password_file, encoding="utf-8") as f:
                password = f.read(4097).strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {cfg.password_file}: {exc.strerror}",
                              key="reports.imap.password_file") from None
    if not password:
        raise ConfigError("set password_file (or password)", key="reports.imap.password")
    try:
        security = ImapSecurity(cfg.security)
    except ValueError:
        raise ConfigError("must be imaps or starttls", key="reports.imap.security") from None
    return ImapSettings(host=cfg.host, port=cfg.port, username=cfg.username,
                        password=password, security=security, ca_file=cfg.ca_file,
                        folder=cfg.folder, done_folder=cfg.done_folder,
                        quarantine_folder=cfg.quarantine_folder, timeout=cfg.timeout,
                        max_message=cfg.max_message)


def _count(result: FetchResult, outcomes: list[IntakeOutcome]) -> None:
    for o in outcomes:
        if o.outcome is Outcome.STORED:
            result.stored += 1
        elif o.outcome is Outcome.DUPLICATE:
            result.duplicate += 1
        elif o.outcome is Outcome.CONFLICT:
            result.conflict += 1
        else:
            result.quarantined += 1


async def fetch_reports(intake: ReportIntake, settings: ImapSettings, *,
                        mailbox_factory: Callable[[ImapSettings], ImapMailbox] = ImapMailbox
                        ) -> FetchResult:
    """One pass over the folder; raises :class:`ImapError` when the mailbox fails."""
    result = FetchResult()
    box = mailbox_factory(settings)
    run = asyncio.to_thread
    await run(box.open)
    try:
        for folder in {settings.done_folder, settings.quarantine_folder} - {""}:
            await run(box.ensure_folder, folder)
        for uid in await run(box.pending):
            result.messages += 1
            where = f"{settings.where()};UID={uid}"
            size = await run(box.size, uid)
            try:
                if size is not None and size > settings.max_message:
                    outcomes = [await intake.quarantine(
                        b"", f"message of {size} bytes, over the {settings.max_message}-byte "
                        "limit; not fetched", channel=Channel.IMAP, remote=where,
                        kind="too-large")]
                else:
                    raw = await run(box.fetch, uid)
                    if raw is None:  # expunged meanwhile
                        continue
                    outcomes = await intake.submit_message(raw, channel=Channel.IMAP,
                                                           remote=where)
            except StoreError as exc:
                # Nothing committed: leave the message as it is for the next run.
                result.left += 1
                result.errors.append(f"UID {uid}: {exc}")
                _log.error("report mail not stored", where=where, error=str(exc))
                break
            _count(result, outcomes)
            quarantined = any(o.outcome is Outcome.QUARANTINED for o in outcomes)
            target = settings.quarantine_folder if quarantined else settings.done_folder
            await run(box.done, uid, folder=target)
            _log.info("report mail fetched", where=where,
                      outcomes=",".join(str(o.outcome) for o in outcomes),
                      reasons="; ".join(o.reason for o in outcomes if o.reason)[:500])
    finally:
        await run(box.close)
    return result


async def imap_poller(intake: ReportIntake, settings: ImapSettings, *, interval: float,
                      stop: asyncio.Event) -> None:
    """``reports serve``: fetch every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            result = await fetch_reports(intake, settings)
            if result.messages:
                _log.info("mailbox polled", where=settings.where(), **{
                    k: v for k, v in result.to_dict().items() if k != "errors"})
        except (ImapError, ConfigError) as exc:
            _log.error("mailbox poll failed", where=settings.where(), error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(1.0, interval))
        except TimeoutError:
            pass
