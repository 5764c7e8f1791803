"""One intake path for every channel: parse, verify, then store or quarantine.

HTTPS bodies (RFC 8460 §5.4), mail messages (§5.3, over SMTP, LMTP or from files) and
imported files all end here. The rules:

* a submission that parses is stored: a byte-identical resubmission is a duplicate, a
  different body under a known (report-id, organization) is kept too and marked as a
  conflict (the store decides which one the summaries count);
* the report JSON stored is exactly the text that was parsed (one decompressor);
* at most ``max_parallel_parses`` submissions are decompressed and parsed at once in
  threads, so the memory a crowd of gzip bombs can take is bounded; a report that is at
  most ``INLINE_PARSE_MAX`` bytes once decompressed (most are) is parsed on the event
  loop instead, since handing it to a thread costs more than parsing it, or, with a
  :class:`~.parse_pool.ParsePool` (``[reports] parse_workers``), in a worker process,
  so the loop's one core is left to HTTP, TLS and storing;
* a submission that does not parse is **quarantined** with the reason and its raw
  bytes (nothing received is lost), and the caller is told why;
* the caller acknowledges only after the store has committed: :class:`StoreError`
  propagates so HTTP can answer 503 and SMTP 451 (the sender retries, §5.4);
* with a :class:`~.commit_queue.GroupCommitter` (what ``reports serve`` uses) the
  reports of concurrent submissions share one transaction and one fsync, each caller
  still answered only after the commit that holds its report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.parser
import email.policy
import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from smtptls.errors import (
    NoReportAttachmentError,
    ReportError,
    ReportTooLargeError,
    SmtpTlsError,
)
from smtptls.net.dkim import DkimResult, TxtLookup, verify_report_mail
from smtptls.services.reports_server.commit_queue import GroupCommitter
from smtptls.services.reports_server.parse_pool import ParsePool, ParsePoolUnavailable
from smtptls.store.reports_base import (
    AddResult,
    AddStatus,
    Channel,
    DkimStatus,
    Intake,
    ReportRecord,
    ReportStore,
)
from smtptls.tlsrpt.mail import extract_reports_from_message
from smtptls.tlsrpt.reader import parse_report_body

if TYPE_CHECKING:  # prometheus_client loads with the server's metrics, not with an import
    from smtptls.services.reports_server.metrics import IntakeMetrics

__all__ = ["IntakeOutcome", "Outcome", "ReportIntake", "parse_submission"]

MAX_ATTACHMENTS = 20  # reports taken from one message at most
#: Reports that decompress to at most this many bytes are parsed on the event loop: a
#: millisecond at most, and cheaper than a thread hand-off (its locks, the GIL changing
#: hands); a larger one is found out after this many bytes and goes to a thread.
INLINE_PARSE_MAX = 64 * 1024


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same report was already stored
    CONFLICT = "conflict"  # another report with this key was stored: both kept
    QUARANTINED = "quarantined"


_OUTCOME = {AddStatus.STORED: Outcome.STORED, AddStatus.DUPLICATE: Outcome.DUPLICATE,
            AddStatus.CONFLICT: Outcome.CONFLICT}


@dataclass(frozen=True, slots=True)
class IntakeOutcome:
    """What happened to one submission (or one report of a mail message)."""

    outcome: Outcome
    pk: int | None = None  # report row, or quarantine row when quarantined
    report_id: str | None = None
    reason: str = ""
    kind: str = ""  # error kind for quarantined submissions (metrics label)
    too_large: bool = False
    counted: bool = True  # the report of its key the summaries use
    conflicts_with: tuple[int, ...] = ()  # other reports stored under the same key

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": str(self.outcome)}
        if self.outcome is Outcome.QUARANTINED:
            out.update(quarantine_id=self.pk, reason=self.reason)
        else:
            out.update(id=self.pk, report_id=self.report_id)
        if self.outcome is Outcome.CONFLICT or self.conflicts_with:
            out.update(counted=self.counted, conflicts_with=list(self.conflicts_with))
        return out


def error_kind(exc: BaseException) -> str:
    """The metrics label of why a submission was quarantined."""
    if isinstance(exc, NoReportAttachmentError):
        return "no-report"
    if isinstance(exc, ReportTooLargeError):
        return "too-large"
    return "parse" if isinstance(exc, SmtpTlsError) else "other"


def stored_outcome(result: AddResult, report_id: str) -> IntakeOutcome:
    """The outcome of a report the store took (stored, duplicate or conflict)."""
    return IntakeOutcome(_OUTCOME[result.status], result.pk, report_id, counted=result.counted,
                         conflicts_with=result.conflicts_with)


def parse_submission(body: bytes, *, max_body: int, max_decompressed: int) -> ReportRecord:
    """RFC 8460 §4 JSON or its gzip form -> a :class:`ReportRecord`; ReportError.

    The one parse of a submitted report, on the event loop, in a thread or in a worker
    process of a :class:`~.parse_pool.ParsePool`."""
    # Keep the report JSON exactly as parsed (decompressed once, every gzip member).
    parsed = parse_report_body(body, strict=False, max_size=max(max_body, len(body)),
                               max_decompressed=max_decompressed)
    return ReportRecord.from_report(parsed.report, raw_json=parsed.text, tree=parsed.tree)


class ReportIntake:
    """Parse + verify + store; shared by the HTTP app, the mail listeners and the importer.

    ``dkim_lookup`` (a TXT lookup) switches DKIM verification of mail on;
    ``require_dkim`` quarantines mail whose signature does not pass; ``committer``
    stores reports in group commits (None: one transaction per report); ``pool``
    parses small reports in worker processes (None: on the event loop).
    """

    def __init__(
        self,
        store: ReportStore,
        *,
        max_body: int = 5 * 1024 * 1024,
        max_decompressed: int = 50 * 1024 * 1024,
        dkim_lookup: TxtLookup | None = None,
        require_dkim: bool = True,
        metrics: IntakeMetrics | None = None,
        max_parallel_parses: int = 2,
        committer: GroupCommitter | None = None,
        pool: ParsePool | None = None,
    ) -> None:
        self.store = store
        self.committer = committer
        self.pool = pool
        self.max_body = max_body
        self.max_message = max_body * 2  # base64 grows a gzip attachment by a third
        self.max_decompressed = max_decompressed
        self.dkim_lookup = dkim_lookup
        self.require_dkim = require_dkim
        self.metrics = metrics
        self._parsing = asyncio.Semaphore(max(1, max_parallel_parses))

    # --- parsing (the TLSRPT core does the RFC 8460 §4 and §5.3 work) -----------------

    def parse_body(self, body: bytes, *, max_decompressed: int | None = None) -> ReportRecord:
        """RFC 8460 §4 JSON or its gzip form -> a :class:`ReportRecord`; ReportError.

        ``max_decompressed`` lowers the decompressed size cap for this call."""
        cap = (self.max_decompressed if max_decompressed is None
               else min(self.max_decompressed, max_decompressed))
        return parse_submission(body, max_body=self.max_body, max_decompressed=cap)

    async def _parse(self, body: bytes) -> ReportRecord:
        if len(body) <= INLINE_PARSE_MAX and self.max_decompressed > INLINE_PARSE_MAX:
            try:
                return await self._parse_small(body)
            except ReportTooLargeError:
                pass  # larger once decompressed: parsed in a thread below
        async with self._parsing:  # bounded: decompression and parse trees cost memory
            return await asyncio.to_thread(self.parse_body, body)  # off the loop

    async def _parse_small(self, body: bytes) -> ReportRecord:
        """A body of at most INLINE_PARSE_MAX bytes, decompressed to at most as many: in a
        worker process of the pool, or on the event loop without one (or while none of
        its workers is ready)."""
        if self.pool is not None:
            try:
                return await self.pool.parse(body, max_body=self.max_body,
                                             max_decompressed=INLINE_PARSE_MAX)
            except ParsePoolUnavailable:
                pass
        return self.parse_body(body, max_decompressed=INLINE_PARSE_MAX)

    def message_attachments(self, raw: bytes) -> list[tuple[str, bytes]]:
        """(filename, payload) of each report in a §5.3 mail; ReportError if none."""
        found = extract_reports_from_message(raw, strict=False,
                                             max_size=max(self.max_message, len(raw)))
        return [(a.filename, a.payload) for a in found]

    # --- intake --------------------------------------------------------------------------

    async def _quarantine(self, raw: bytes, reason: str, intake: Intake, kind: str,
                          *, too_large: bool = False) -> IntakeOutcome:
        pk = await self.store.add_quarantine(raw, reason, intake)
        if self.metrics:
            self.metrics.error(str(intake.channel), kind)
            self.metrics.received(str(intake.channel), "quarantined")
        return IntakeOutcome(Outcome.QUARANTINED, pk, reason=reason, kind=kind,
                             too_large=too_large)

    async def _store(self, record: ReportRecord, intake: Intake) -> IntakeOutcome:
        if self.committer is not None:
            result = await self.committer.add(record, intake)
        else:
            result = await self.store.add_report(record, intake)
        outcome = stored_outcome(result, record.report_id)
        if self.metrics:
            self.metrics.received(str(intake.channel), str(outcome.outcome))
            if result.created and result.counted:
                failures: dict[str, int] = {}
                for p in record.policies:
                    for f in p.failures:
                        failures[f.result_type] = (failures.get(f.result_type, 0)
                                                   + f.failed_session_count)
                self.metrics.count_sessions(record.successful, failures)
                for p in record.policies:
                    by_type: dict[str, int] = {}
                    for f in p.failures:
                        by_type[f.result_type] = (by_type.get(f.result_type, 0)
                                                  + f.failed_session_count)
                    self.metrics.count_domain(p.policy_domain, p.successful, p.failed, by_type,
                                              received=intake.received_at.timestamp())
        return outcome

    async def quarantine(self, raw: bytes, reason: str, *, channel: Channel,
                         remote: str | None = None, kind: str = "other") -> IntakeOutcome:
        """Keep something that is refused before parsing (wrong media type, too large)."""
        intake = Intake(channel, datetime.now(UTC), remote=remote)
        return await self._quarantine(raw, reason, intake, kind,
                                      too_large=kind == "too-large")

    async def submit_body(self, body: bytes, *, channel: Channel = Channel.HTTPS,
                          remote: str | None = None) -> IntakeOutcome:
        """An HTTPS POST body or a .json / .json.gz file."""
        intake = Intake(channel, datetime.now(UTC), remote=remote)
        try:
            record = await self._parse(body)
        except ReportError as exc:
            return await self._quarantine(body, str(exc), intake, error_kind(exc),
                                          too_large=isinstance(exc, ReportTooLargeError))
        except Exception as exc:  # a parser defect must not lose the submission
            return await self._quarantine(body, f"parser failure: {type(exc).__name__}",
                                          intake, "other")
        return await self._store(record, intake)

    async def submit_message(self, raw: bytes, *, channel: Channel = Channel.SMTP,
                             remote: str | None = None, verify_dkim: bool = True
                             ) -> list[IntakeOutcome]:
        """A §5.3 report mail: verify DKIM, then store each report it carries."""
        received = datetime.now(UTC)
        submitter = _header(raw, "TLS-Report-Submitter")
        header_domain = _header(raw, "TLS-Report-Domain")
        dkim = DkimResult(DkimStatus.NOT_CHECKED)
        if verify_dkim and self.dkim_lookup is not None:
            dkim = await verify_report_mail(raw, self.dkim_lookup)
        intake = Intake(channel, received, remote=remote, submitter=submitter,
                        dkim=dkim.status, dkim_domain=dkim.domain)
        if self.require_dkim and dkim.status is not DkimStatus.PASS:
            # RFC 8460 §3: "Reports lacking such a signature MUST be ignored by the
            # recipient": kept aside (quarantine), never counted.
            reason = f"DKIM {dkim.status}" + (f": {dkim.reason}" if dkim.reason else "")
            return [await self._quarantine(raw, reason, intake, "dkim")]
        if self.require_dkim and not signed_by_submitter(dkim.domain, submitter):
            # RFC 8460 §3: the signature must be "by the reporting domain": the domain
            # of TLS-Report-Submitter (§5.3), or one above or below it
            reason = f"DKIM signature by {dkim.domain}, not by the submitter {submitter}"
            return [await self._quarantine(raw, reason, intake, "dkim")]
        try:
            attachments = await asyncio.to_thread(self.message_attachments, raw)
        except ReportError as exc:
            return [await self._quarantine(raw, str(exc), intake, error_kind(exc),
                                           too_large=isinstance(exc, ReportTooLargeError))]
        except Exception as exc:  # a parser defect must not lose the message
            return [await self._quarantine(raw, f"parser failure: {type(exc).__name__}",
                                           intake, "other")]
        outcomes = []
        for i, (filename, payload) in enumerate(attachments[:MAX_ATTACHMENTS]):
            try:
                record = await self._parse(payload)
            except Exception as exc:
                # Keep the whole message (its headers give the context), say which part.
                what = str(exc) if isinstance(exc, ReportError) else type(exc).__name__
                reason = f"attachment {i + 1} ({filename or 'no name'}): {what}"
                outcomes.append(await self._quarantine(
                    raw, reason, intake, error_kind(exc),
                    too_large=isinstance(exc, ReportTooLargeError)))
                continue
            outcomes.append(await self._store(file_under_header_domain(record, header_domain),
                                              intake))
        return outcomes


def signed_by_submitter(signer: str | None, submitter: str | None) -> bool:
    """Is the DKIM signing domain the reporting domain (RFC 8460 §3, §5.3)? Equal, or
    one a subdomain of the other; a mail without ``TLS-Report-Submitter`` is judged
    by its signature alone."""
    if not submitter:
        return True
    if not signer:
        return False
    a, b = signer.lower().rstrip("."), submitter.lower().rstrip(".")
    return a == b or a.endswith("." + b) or b.endswith("." + a)


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*"
                     r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def file_under_header_domain(record: ReportRecord, header: str | None) -> ReportRecord:
    """A mailed report's policies without ``policy-domain`` filed under the domain of the
    mail's ``TLS-Report-Domain`` header (RFC 8460 §5.3), with a warning saying so.

    The report JSON is kept as received; a header that is not a domain name changes
    nothing (the policy stays under the empty domain).
    """
    domain = (header or "").strip().lower().rstrip(".")
    if not domain or not _DOMAIN.match(domain):
        return record
    missing = [i for i, p in enumerate(record.policies) if not p.policy_domain]
    if not missing:
        return record
    policies = tuple(dataclasses.replace(p, policy_domain=domain) if not p.policy_domain else p
                     for p in record.policies)
    note = (f"$.policies: {len(missing)} polic{'ies' if len(missing) != 1 else 'y'} without "
            f"policy-domain filed under {domain}, from the TLS-Report-Domain header")
    return dataclasses.replace(record, policies=policies, warnings=(*record.warnings, note))


def _header(raw: bytes, name: str) -> str | None:
    try:
        msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        value = msg.get(name)
    except Exception:  # unparsable headers: the mail path quarantines it anyway
        return None
    if value is None:
        return None
    return " ".join(str(value).split())[:255] or None
