"""TLSRPT checks (pure): the ``_smtp._tls`` record and where its reports would go.

RFC 8460 §3 (record syntax, exactly one record, ``mailto:`` and ``https:`` URIs),
§5.3 (delivery by mail: the rua domain must receive mail), §5.4 (delivery by HTTPS
POST: the rua host must answer). A duplicated ``rua`` is a warning (corpus consensus).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from smtptls.check.facts import DomainFacts
from smtptls.check.findings import Area, Finding, Severity
from smtptls.dnssec import Security
from smtptls.errors import TlsrptRecordError
from smtptls.tlsrpt.record import TlsrptRecord, is_tlsrpt_record, parse_record

__all__ = ["TlsrptView", "check_tlsrpt", "tlsrpt_view"]

_EXTRA_SEMICOLONS = re.compile(r";[ \t]*;[ \t;]*$")


@dataclass(frozen=True, slots=True)
class TlsrptView:
    candidates: tuple[str, ...] = ()
    record: TlsrptRecord | None = None
    error: str | None = None
    lenient: bool = False

    @property
    def present(self) -> bool:
        return bool(self.candidates)

    def to_dict(self) -> dict[str, Any]:
        return {"record": None if self.record is None else self.record.to_text(),
                "rua": [] if self.record is None else list(self.record.rua),
                "error": self.error}


def tlsrpt_view(facts: DomainFacts) -> TlsrptView:
    txt = facts.tlsrpt_txt
    if txt is None or txt.failed:
        return TlsrptView()
    # RFC 8460 §3: records not beginning with v=TLSRPTv1 are discarded.
    candidates = tuple(r for r in txt.records if is_tlsrpt_record(r))
    if not candidates:
        return TlsrptView()
    if len(candidates) > 1:
        return TlsrptView(candidates, None, f"{len(candidates)} TXT records start with "
                          "v=TLSRPTv1; exactly one is required")
    text = candidates[0]
    try:
        return TlsrptView(candidates, parse_record(text))
    except TlsrptRecordError as exc:
        if _EXTRA_SEMICOLONS.search(text):
            try:
                return TlsrptView(candidates, parse_record(_EXTRA_SEMICOLONS.sub(";", text)),
                                  str(exc), True)
            except TlsrptRecordError:
                pass
        return TlsrptView(candidates, None, str(exc))


def _f(code: str, severity: Severity, subject: str, message: str, fix: str | None = None,
       rfc: str | None = None) -> Finding:
    return Finding(code, severity, Area.TLSRPT, subject, message, fix, rfc)


def check_tlsrpt(facts: DomainFacts, view: TlsrptView) -> list[Finding]:
    d = facts.domain
    txt = facts.tlsrpt_txt
    out: list[Finding] = []
    if txt is None or facts.null_mx or facts.mx.nxdomain:
        return out
    owner = f"_smtp._tls.{d}"
    example = f'{owner}. IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@{d}"'
    if txt.failed:
        why = ("fails DNSSEC validation" if txt.security is Security.BOGUS
               else f"failed ({txt.error})")
        out.append(_f("tlsrpt.lookup-failed", Severity.ERROR, owner,
                      f"the TXT lookup of {owner} {why}: senders cannot find where to report",
                      None, "RFC 8460 §3"))
        return out
    if not view.present:
        out.append(_f("tlsrpt.absent", Severity.INFO, d,
                      "no TLSRPT record: senders cannot report TLS failures to you",
                      example + "   (smtptls publish tlsrpt --rua ...)", "RFC 8460 §3"))
        return out
    if len(view.candidates) > 1:
        out.append(_f("tlsrpt.multiple", Severity.ERROR, owner,
                      f"{view.error}: senders treat the domain as having no TLSRPT",
                      "remove all but one v=TLSRPTv1 record", "RFC 8460 §3"))
        return out
    rec = view.record
    if rec is None:
        out.append(_f("tlsrpt.invalid", Severity.ERROR, owner,
                      f"the TLSRPT record is invalid ({view.error}): senders ignore it",
                      example, "RFC 8460 §3"))
        return out
    fixed = f'{owner}. IN TXT "{rec.to_text()}"'
    if view.lenient:
        out.append(_f("tlsrpt.extra-semicolon", Severity.WARNING, owner,
                      "the record ends in more than one ';' (an empty field): lenient senders "
                      "accept it, strict ones do not", fixed, "RFC 8460 §3"))
    for w in rec.warnings:
        if "given" in w and "times" in w:
            out.append(_f("tlsrpt.duplicate-rua", Severity.WARNING, owner,
                          f"{w}; some senders reject such a record",
                          f'{owner}. IN TXT "v=TLSRPTv1; rua={",".join(rec.rua)}"',
                          "RFC 8460 §3"))
        elif "cannot be delivered" in w:
            out.append(_f("tlsrpt.no-usable-rua", Severity.ERROR, owner,
                          f"{w}", example, "RFC 8460 §3"))
    for uri in rec.unsupported_rua[:4]:
        out.append(_f("tlsrpt.unsupported-scheme", Severity.WARNING, owner,
                      f"rua {uri[:80]!r} uses a scheme senders do not support (mailto, https)",
                      example, "RFC 8460 §3"))
    for r in facts.rua:
        if r.reachable is False:
            if r.scheme == "mailto":
                out.append(_f("tlsrpt.rua-mail-unreachable", Severity.ERROR, r.uri,
                              f"reports sent to {r.uri} cannot be delivered: {r.detail}",
                              "give the report address's domain an MX record, or use another "
                              "address", "RFC 8460 §5.3"))
            else:
                out.append(_f("tlsrpt.rua-https-unreachable", Severity.ERROR, r.uri,
                              f"the report endpoint does not answer: {r.detail}",
                              "serve the endpoint over HTTPS with a valid certificate (reports "
                              "are POSTed there)", "RFC 8460 §5.4"))
        elif r.reachable and r.status is not None and r.status in (404, 410):
            out.append(_f("tlsrpt.rua-https-not-found", Severity.WARNING, r.uri,
                          f"the report endpoint answers {r.status} to a probe: check that it "
                          "accepts POSTed reports", None, "RFC 8460 §5.4"))
    return out
