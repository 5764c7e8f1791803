"""Human-readable report: a short facts overview, then findings grouped by code.

Lines fit 100 columns; each group shows its severity, the RFC section, every subject
with its message, and the fix (once when every instance shares it).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

from smtptls.check.findings import Finding
from smtptls.check.report import CheckReport

__all__ = ["WIDTH", "render_report"]

WIDTH = 100


def _wrap(text: str, indent: str, width: int = WIDTH) -> list[str]:
    out: list[str] = []
    for i, line in enumerate(text.splitlines() or [""]):
        first = indent if i == 0 else indent + "     "
        out.extend(textwrap.wrap(line, width=width, initial_indent=first,
                                 subsequent_indent=first + "  ", break_on_hyphens=False,
                                 break_long_words=True) or [first])
    return out


def _tls_line(t: Mapping[str, Any]) -> str:
    if t.get("tls_version"):
        pkix = t.get("pkix") or {}
        cert = t.get("certificate") or {}
        trust = "PKIX ok" if pkix.get("valid") else f"PKIX {pkix.get('result_type') or 'n/a'}"
        until = f", cert until {cert['not_after'][:10]}" if cert.get("not_after") else ""
        return f"{t['address']}: {t['tls_version']} {t.get('cipher') or ''}, {trust}{until}"
    err = t.get("error") or {}
    return f"{t['address']}: no TLS ({err.get('message', 'STARTTLS not offered')})"


def _overview(r: CheckReport) -> list[str]:
    s = r.sections
    lines: list[str] = []
    mx = s.get("mx") or {}
    lookup = mx.get("lookup") or {}
    hosts = mx.get("hosts") or []
    lines.append(f"  MX ({lookup.get('security', '?')}): "
                 + (", ".join(f"{h.get('preference')} {h['host']}" for h in hosts[:6])
                    or ("null MX" if mx.get("null_mx") else "none")))
    for h in hosts[:6]:
        for t in h.get("tls") or []:
            lines.extend(_wrap(f"{h['host']} {_tls_line(t)}", "    "))
    sts = s.get("mta_sts") or {}
    if sts.get("policy"):
        p = sts["policy"]
        text = (f"{p['mode']}, max_age {p['max_age']}, id {sts.get('record_id')}, "
                f"mx: {' '.join(p['mx'][:6])}")
    elif sts.get("record_error") or sts.get("policy_error"):
        text = "invalid"
    elif (sts.get("fetch") or {}).get("error"):
        text = f"record present, policy not fetched ({sts['fetch']['error']['kind']})"
    else:
        text = "none"
    lines.extend(_wrap(f"MTA-STS: {text}", "  "))
    rpt = s.get("tlsrpt") or {}
    lines.extend(_wrap(f"TLSRPT: {', '.join(rpt.get('rua') or []) or 'none'}", "  "))
    dane = s.get("dane") or {}
    per = ", ".join(f"{h['host']} {h['requirement']}" for h in (dane.get("hosts") or [])[:4])
    lines.extend(_wrap(f"DANE: {dane.get('status', 'n/a')}" + (f" ({per})" if per else ""),
                       "  "))
    decision = s.get("decision")
    if decision:
        answer = decision.get("policy") or decision["kind"].upper()
        lines.extend(_wrap(f"Sender decision: {answer} ({decision['reason']})", "  "))
    return lines


def _groups(findings: tuple[Finding, ...]) -> list[list[Finding]]:
    order: list[str] = []
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        if f.code not in groups:
            order.append(f.code)
            groups[f.code] = []
        groups[f.code].append(f)
    return [groups[c] for c in order]


def render_report(r: CheckReport, *, verbose: bool = True) -> str:
    counts = {s: sum(1 for f in r.findings if f.severity.value == s)
              for s in ("error", "warning", "info")}
    head = (f"{r.domain}: {counts['error']} error(s), {counts['warning']} warning(s), "
            f"{counts['info']} info")
    if not r.smtp_probed:
        head += "  (no SMTP probes)"
    lines = [head]
    if verbose:
        lines.extend(_overview(r))
    for group in _groups(r.findings):
        first = group[0]
        ref = f", {first.rfc}" if first.rfc else ""
        lines.append("")
        lines.append(f"{first.severity.value.upper():7} {first.code}  ({first.area.value}{ref})")
        fixes = {f.fix for f in group}
        shared = len(fixes) == 1
        for f in group[:20]:
            lines.extend(_wrap(f"{f.subject}: {f.message}", "  "))
            if not shared and f.fix:
                lines.extend(_wrap(f"fix: {f.fix}", "    "))
        if len(group) > 20:
            lines.append(f"  ... and {len(group) - 20} more")
        if shared and first.fix:
            lines.extend(_wrap(f"fix: {first.fix}", "  "))
    if not r.findings:
        lines.append("  no findings")
    return "\n".join(lines)
