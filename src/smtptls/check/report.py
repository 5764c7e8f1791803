"""The result of checking one domain, and its versioned JSON form ``smtptls.check/1``.

:meth:`CheckReport.to_dict` is the documented schema (docs/check.md);
:meth:`CheckReport.from_dict` reads it back (bulk resume, summaries), refusing other
schemas with an :class:`~smtptls.errors.SmtpTlsError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from smtptls.check.findings import Finding, Severity, count_by_severity, worst_severity
from smtptls.errors import SmtpTlsError

__all__ = ["SCHEMA", "Adoption", "CheckReport", "format_time", "parse_time"]

SCHEMA = "smtptls.check/1"
MAX_FINDINGS = 500


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> dt.datetime:
    if not isinstance(text, str):
        raise SmtpTlsError("checked_at must be an RFC 3339 UTC time")
    try:
        when = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        raise SmtpTlsError(f"checked_at {text[:40]!r} is not YYYY-MM-DDTHH:MM:SSZ") from None
    return when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Adoption:
    """What the domain deploys, for bulk statistics."""

    mta_sts: str | None = None  # the policy mode in force, None without a valid policy
    mta_sts_record: bool = False  # a v=STSv1 record exists (valid or not)
    tlsrpt: bool = False  # one valid TLSRPT record
    dane: str = "not-applicable"  # pass | fail | partial | not-applicable
    mx_dnssec: str | None = None  # the MX RRset's DNSSEC status

    def to_dict(self) -> dict[str, Any]:
        return {"mta_sts": self.mta_sts, "mta_sts_record": self.mta_sts_record,
                "tlsrpt": self.tlsrpt, "dane": self.dane, "mx_dnssec": self.mx_dnssec}

    @classmethod
    def from_dict(cls, data: object) -> Adoption:
        if not isinstance(data, Mapping):
            raise SmtpTlsError("adoption must be an object")
        mode, dane, sec = data.get("mta_sts"), data.get("dane", "not-applicable"), \
            data.get("mx_dnssec")
        if mode is not None and not isinstance(mode, str) or not isinstance(dane, str) \
                or sec is not None and not isinstance(sec, str):
            raise SmtpTlsError("adoption fields have the wrong types")
        return cls(mode, bool(data.get("mta_sts_record", False)),
                   bool(data.get("tlsrpt", False)), dane, sec)


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Findings for one domain plus the facts behind them (``sections``, plain data)."""

    domain: str
    checked_at: dt.datetime
    findings: tuple[Finding, ...]
    adoption: Adoption = field(default_factory=Adoption)
    elapsed: float = 0.0
    smtp_probed: bool = False
    timed_out: bool = False
    sections: Mapping[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> Severity | None:
        return worst_severity(self.findings)

    @property
    def failed(self) -> bool:
        """A warning or an error: what makes ``smtptls check`` exit 1."""
        w = self.worst
        return w is not None and w.rank >= Severity.WARNING.rank

    def to_dict(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "schema": SCHEMA,
            "domain": self.domain,
            "checked_at": format_time(self.checked_at),
            "elapsed": round(self.elapsed, 3),
            "smtp_probed": self.smtp_probed,
            "timed_out": self.timed_out,
            "worst": None if worst is None else worst.value,
            "counts": count_by_severity(self.findings),
            "adoption": self.adoption.to_dict(),
            **{k: v for k, v in self.sections.items()},
            "findings": [f.to_dict() for f in self.findings],
        }

    @classmethod
    def from_dict(cls, data: object) -> CheckReport:
        """Read a ``smtptls.check/1`` object; raises :class:`SmtpTlsError` otherwise."""
        if not isinstance(data, Mapping):
            raise SmtpTlsError("a check report must be a JSON object")
        if data.get("schema") != SCHEMA:
            raise SmtpTlsError(f"not a {SCHEMA} report (schema {str(data.get('schema'))[:40]!r})")
        domain = data.get("domain")
        if not isinstance(domain, str) or not domain:
            raise SmtpTlsError("report without a domain")
        raw = data.get("findings", [])
        if not isinstance(raw, list) or len(raw) > MAX_FINDINGS:
            raise SmtpTlsError("findings must be a list")
        elapsed = data.get("elapsed", 0.0)
        if isinstance(elapsed, bool) or not isinstance(elapsed, int | float):
            raise SmtpTlsError("elapsed must be a number")
        known = {"schema", "domain", "checked_at", "elapsed", "smtp_probed", "timed_out",
                 "worst", "counts", "adoption", "findings"}
        return cls(domain=domain, checked_at=parse_time(data.get("checked_at")),
                   findings=tuple(Finding.from_dict(f) for f in raw),
                   adoption=Adoption.from_dict(data.get("adoption", {})),
                   elapsed=float(elapsed), smtp_probed=bool(data.get("smtp_probed")),
                   timed_out=bool(data.get("timed_out")),
                   sections={k: v for k, v in data.items() if k not in known})
