"""One intake path for every channel: parse, verify, then store or quarantine.

HTTPS bodies (RFC 8460 §5.4), mail messages (§5.3, over SMTP, LMTP or from files) and
imported files all end here. The rules:

* a submission that parses is stored, idempotently on (report-id, organization);
* a submission that does not parse is **quarantined** with the reason and its raw
  bytes (nothing received is lost), and the caller is told why;
* the caller acknowledges only after the store has committed: :class:`StoreError`
  propagates so HTTP can answer 503 and SMTP 451 (the sender retries, §5.4).
"""

from __future__ import annotations

import email.parser
import email.policy
import enum
import inspect
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from smtptls.errors import (
    NoReportAttachmentError,
    ReportError,
    ReportTooLargeError,
    SmtpTlsError,
)
from smtptls.net.dkim import DkimResult, TxtLookup, verify_report_mail
from smtptls.services.reports_server.metrics import IntakeMetrics
from smtptls.store.reports_base import (
    Channel,
    DkimStatus,
    Intake,
    ReportRecord,
    ReportStore,
)

__all__ = ["IntakeOutcome", "Outcome", "ReportIntake", "bounded_gunzip"]


class Outcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


@dataclass(frozen=True, slots=True)
class IntakeOutcome:
    """What happened to one submission (or one report of a mail message)."""

    outcome: Outcome
    pk: int | None = None  # report row, or quarantine row when quarantined
    report_id: str | None = None
    reason: str = ""
    kind: str = ""  # error kind for quarantined submissions (metrics label)
    too_large: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": str(self.outcome)}
        if self.outcome is Outcome.QUARANTINED:
            out.update(quarantine_id=self.pk, reason=self.reason)
        else:
            out.update(id=self.pk, report_id=self.report_id)
        return out


def bounded_gunzip(data: bytes, limit: int) -> bytes:
    """Decompress gzip ``data`` to at most ``limit`` bytes; raise ReportTooLargeError."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ReportError(f"not valid gzip: {exc}") from None
    if len(out) > limit:
        raise ReportTooLargeError(f"report decompresses to more than {limit} bytes")
    return out


def _core() -> Any:
    try:
        from smtptls import tlsrpt
        from smtptls.tlsrpt import mail as tlsrpt_mail
        from smtptls.tlsrpt import report as tlsrpt_report
    except ImportError as exc:  # pragma: no cover - the core ships with the package
        raise SmtpTlsError(f"TLSRPT core unavailable: {exc}") from None
    return tlsrpt, tlsrpt_report, tlsrpt_mail


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _kind(exc: SmtpTlsError) -> str:
    return "too-large" if isinstance(exc, ReportTooLargeError) else "parse"


class ReportIntake:
    """Parse + verify + store; shared by the HTTP app, the mail listeners and the importer.

    ``dkim_lookup`` (a TXT lookup) switches DKIM verification of mail on;
    ``require_dkim`` quarantines mail whose signature does not pass.
    """

    def __init__(
        self,
        store: ReportStore,
        *,
        max_decompressed: int = 50 * 1024 * 1024,
        dkim_lookup: TxtLookup | None = None,
        require_dkim: bool = False,
        metrics: IntakeMetrics | None = None,
    ) -> None:
        self.store = store
        self.max_decompressed = max_decompressed
        self.dkim_lookup = dkim_lookup
        self.require_dkim = require_dkim
        self.metrics = metrics

    # --- parsing (the TLSRPT core does the RFC 8460 §4 work) ---------------------------

    def parse_body(self, body: bytes) -> ReportRecord:
        """RFC 8460 §4 JSON or its gzip form -> a :class:`ReportRecord`; ReportError."""
        _, report_mod, _ = _core()
        parse = report_mod.parse_report
        kwargs: dict[str, Any] = {"strict": False}
        if _accepts(parse, "max_decompressed"):
            kwargs["max_decompressed"] = self.max_decompressed
        report = parse(body, **kwargs)
        # Keep the report JSON as received (the parser has bounded the decompression).
        text = bounded_gunzip(body, self.max_decompressed) if body[:2] == b"\x1f\x8b" else body
        raw_json = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        return ReportRecord.from_report(report, raw_json=raw_json)

    def parse_message(self, raw: bytes) -> list[ReportRecord]:
        """Reports of an RFC 8460 §5.3 mail message; ReportError when there are none."""
        _, _, mail_mod = _core()
        found = mail_mod.extract_reports_from_message(raw)
        records = []
        for item in _as_reports(found):
            records.append(ReportRecord.from_report(item))
        if not records:
            raise NoReportAttachmentError("message carries no TLSRPT report")
        return records

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
        result = await self.store.add_report(record, intake)
        outcome = Outcome.STORED if result.created else Outcome.DUPLICATE
        if self.metrics:
            self.metrics.received(str(intake.channel), str(outcome))
            if result.created:
                failures: dict[str, int] = {}
                for p in record.policies:
                    for f in p.failures:
                        failures[f.result_type] = (failures.get(f.result_type, 0)
                                                   + f.failed_session_count)
                self.metrics.count_sessions(record.successful, failures)
        return IntakeOutcome(outcome, result.pk, record.report_id)

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
            record = self.parse_body(body)
        except ReportError as exc:
            return await self._quarantine(body, str(exc), intake, _kind(exc),
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
        dkim = DkimResult(DkimStatus.NOT_CHECKED)
        if verify_dkim and self.dkim_lookup is not None:
            dkim = await verify_report_mail(raw, self.dkim_lookup)
        intake = Intake(channel, received, remote=remote, submitter=submitter,
                        dkim=dkim.status, dkim_domain=dkim.domain)
        if self.require_dkim and dkim.status is not DkimStatus.PASS:
            # RFC 8460 §5.3: receivers SHOULD verify; with require_dkim a report whose
            # signature does not pass is kept aside, not counted.
            reason = f"DKIM {dkim.status}" + (f": {dkim.reason}" if dkim.reason else "")
            return [await self._quarantine(raw, reason, intake, "dkim")]
        try:
            records = self.parse_message(raw)
        except ReportError as exc:
            kind = "no-report" if isinstance(exc, NoReportAttachmentError) else _kind(exc)
            return [await self._quarantine(raw, str(exc), intake, kind,
                                           too_large=isinstance(exc, ReportTooLargeError))]
        except Exception as exc:  # a parser defect must not lose the message
            return [await self._quarantine(raw, f"parser failure: {type(exc).__name__}",
                                           intake, "other")]
        return [await self._store(record, intake) for record in records]


def _as_reports(found: Any) -> Iterable[Any]:
    if found is None:
        return []
    if hasattr(found, "to_dict"):
        return [found]
    out = []
    for item in found:
        if hasattr(item, "to_dict"):
            out.append(item)
        elif isinstance(item, tuple):
            out.extend(x for x in item if hasattr(x, "to_dict"))
        elif hasattr(item, "report") and hasattr(item.report, "to_dict"):
            out.append(item.report)
    return out


def _header(raw: bytes, name: str) -> str | None:
    try:
        msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        value = msg.get(name)
    except Exception:  # unparsable headers: the mail path quarantines it anyway
        return None
    if value is None:
        return None
    return " ".join(str(value).split())[:255] or None
