"""Findings: what an audit says about a domain, with a severity and a concrete fix.

A :class:`Finding` is one observation an operator can act on: a stable ``code``
(``mta-sts.max-age-short``), a :class:`Severity`, the :class:`Area` it belongs to, the
``subject`` it is about (the domain, an MX host, an address, a URI), a message, the
``fix`` (the record or policy line to publish, where there is one) and the RFC section
behind the rule.

Severities and the exit status of ``smtptls check`` (see docs/check.md):

- ``error``: mail is or will be refused, unprotected against downgrade, or a record is
  unusable (senders ignore it);
- ``warning``: works today but fragile, or a disputed syntax some senders reject;
- ``info``: advice; a domain with only ``info`` findings passes (exit 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from smtptls.errors import SmtpTlsError

__all__ = ["Area", "Finding", "Severity", "count_by_severity", "worst_severity"]

#: Bounds on what a finding carries (texts come partly from peers).
MAX_TEXT = 2000
MAX_CODE = 64


class Severity(StrEnum):
    """How bad a finding is; ordered by :attr:`rank` (error worst)."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.INFO: 1, Severity.WARNING: 2, Severity.ERROR: 3}


class Area(StrEnum):
    """Which part of the audit produced a finding."""

    MX = "mx"
    TLS = "tls"
    MTA_STS = "mta-sts"
    TLSRPT = "tlsrpt"
    DANE = "dane"
    CONSISTENCY = "consistency"
    CHECK = "check"  # the audit itself (time limit reached, internal limits)


def _text(value: object, what: str, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise SmtpTlsError(f"finding {what} must be text, not {type(value).__name__}")
    text = value.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class Finding:
    """One observation. Construction validates and bounds every field."""

    code: str
    severity: Severity
    area: Area
    subject: str
    message: str
    fix: str | None = None
    rfc: str | None = None

    def __post_init__(self) -> None:
        code = _text(self.code, "code", MAX_CODE)
        if not code or not all(c.isascii() and (c.isalnum() or c in ".-_") for c in code):
            raise SmtpTlsError(f"finding code {self.code!r} is not a stable identifier")
        try:
            severity = Severity(self.severity)
            area = Area(self.area)
        except ValueError as exc:
            raise SmtpTlsError(f"finding {code}: {exc}") from None
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "severity", severity)
        object.__setattr__(self, "area", area)
        object.__setattr__(self, "subject", _text(self.subject, "subject", 300))
        object.__setattr__(self, "message", _text(self.message, "message"))
        if self.fix is not None:
            # A fix may span lines (a policy body): keep line breaks, bound the size.
            if not isinstance(self.fix, str):
                raise SmtpTlsError("finding fix must be text")
            object.__setattr__(self, "fix", self.fix[:MAX_TEXT])
        if self.rfc is not None:
            object.__setattr__(self, "rfc", _text(self.rfc, "rfc", 80))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.severity.value, "area": self.area.value,
                "subject": self.subject, "message": self.message, "fix": self.fix,
                "rfc": self.rfc}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        """Inverse of :meth:`to_dict`; raises :class:`SmtpTlsError` for anything else."""
        if not isinstance(data, Mapping):
            raise SmtpTlsError("a finding must be a JSON object")
        try:
            return cls(code=data["code"], severity=data["severity"], area=data["area"],
                       subject=data["subject"], message=data["message"],
                       fix=data.get("fix"), rfc=data.get("rfc"))
        except KeyError as exc:
            raise SmtpTlsError(f"finding without {exc.args[0]!r}") from None
        except TypeError as exc:
            raise SmtpTlsError(f"malformed finding: {exc}") from None


def worst_severity(findings: Iterable[Finding]) -> Severity | None:
    """The worst severity among ``findings``; None when there are none."""
    worst: Severity | None = None
    for f in findings:
        if worst is None or f.severity.rank > worst.rank:
            worst = f.severity
    return worst


def count_by_severity(findings: Iterable[Finding]) -> dict[str, int]:
    counts = {s.value: 0 for s in Severity}
    for f in findings:
        counts[f.severity.value] += 1
    return counts
