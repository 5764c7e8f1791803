"""DKIM verification of TLSRPT report mail (RFC 8460 §5.3, RFC 6376) with our DNS.

RFC 8460 §5.3: report mail MUST be DKIM-signed by the submitter, without the ``l=``
body-length tag, and receivers SHOULD verify it. The key record SHOULD carry the
``tlsrpt`` service type (``s=tlsrpt``, RFC 8460 §7.4); RFC 6376 §3.6.1 lets ``s=`` be a
colon-separated list, so ``s=email:tlsrpt`` is a valid key for report signing too.

The cryptography is dkimpy's. Two things are ours:

* key lookups go through :class:`smtptls.net.dns.DnsResolver` (the configured
  resolver, async, bounded): the keys are fetched first, then dkimpy verifies with a
  ``dnsfunc`` that only reads what was fetched, so no blocking DNS runs on the loop;
* dkimpy 1.1.8 rejects a key record whose ``s=`` is a list (``s=email:tlsrpt``) as an
  unknown service type. :func:`rewrite_key_record` hands it a record whose ``s=`` tag
  is the single service type that applies (``tlsrpt`` when listed), only for the
  verification; the published record is not changed anywhere.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from smtptls.errors import DnsError, DnsTimeout, SmtpTlsError
from smtptls.store.reports_base import DkimStatus

__all__ = ["DkimResult", "dns_txt_lookup", "rewrite_key_record", "signature_keys",
           "verify_report_mail"]

MAX_SIGNATURES = 5  # signatures examined per message (bounded work per message)
MAX_KEY_RECORD = 8192  # characters of one key record handed to dkimpy
MAX_MESSAGE = 64 * 1024 * 1024

TxtLookup = Callable[[str], Awaitable[list[str]]]

_log = logging.getLogger("smtptls.dkim")
_log.addHandler(logging.NullHandler())
_log.propagate = False  # dkimpy logs key material on errors at debug level; keep it quiet


@dataclass(frozen=True, slots=True)
class DkimResult:
    """The verdict for one message: the best result over its signatures."""

    status: DkimStatus
    domain: str | None = None  # d= of the signature the status is about
    selector: str | None = None
    reason: str = ""
    tlsrpt_service: bool = False  # the key record named the tlsrpt service type

    def to_dict(self) -> dict[str, object]:
        return {"status": str(self.status), "domain": self.domain, "selector": self.selector,
                "reason": self.reason, "tlsrpt_service": self.tlsrpt_service}


_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)


def _tags(text: str) -> list[tuple[str, str]] | None:
    out = []
    for part in text.split(";"):
        if not part.strip():
            continue
        m = _TAG.match(part)
        if m is None:
            return None
        out.append((m.group(1), m.group(2)))
    return out


def rewrite_key_record(record: str) -> str:
    """Give dkimpy a key record whose ``s=`` it understands (dkimpy 1.1.8 workaround).

    RFC 6376 §3.6.1: ``s=`` is a colon-separated list of service types; the key may be
    used for a service listed there, ``*`` meaning all. RFC 8460 §7.4 registers
    ``tlsrpt``. A list naming ``tlsrpt`` becomes ``s=tlsrpt``; a list naming ``*`` or
    ``email`` (but not ``tlsrpt``) becomes that single type; any other record, and any
    record that is not a clean tag list, is returned unchanged for dkimpy to judge.
    """
    if not isinstance(record, str) or len(record) > MAX_KEY_RECORD:
        return record if isinstance(record, str) else ""
    tags = _tags(record)
    if tags is None:
        return record
    names = [name for name, _ in tags]
    if names.count("s") != 1:
        return record
    out = []
    for name, value in tags:
        if name == "s":
            services = [s.strip().lower() for s in value.split(":")]
            if "tlsrpt" in services:
                value = "tlsrpt"
            elif "*" in services:
                value = "*"
            elif "email" in services:
                value = "email"
        out.append(f"{name}={value}")
    return "; ".join(out)


def _services(record: str) -> set[str]:
    tags = _tags(record) or []
    for name, value in tags:
        if name == "s":
            return {s.strip().lower() for s in value.split(":")}
    return {"*"}


def signature_keys(raw: bytes) -> list[tuple[str, str]]:
    """(domain, selector) of each DKIM-Signature header, in order, at most a few."""
    try:
        headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
        values = headers.get_all("DKIM-Signature") or []
    except Exception:  # a header parser failure means "no usable signature"
        return []
    out = []
    for value in values[:MAX_SIGNATURES]:
        text = re.sub(r"\s+", "", str(value))
        tags = dict(_tags(text) or [])
        d, s = tags.get("d", ""), tags.get("s", "")
        out.append((d.lower().rstrip("."), s))
    return out


def dns_txt_lookup(resolver: object) -> TxtLookup:
    """A TXT lookup for :func:`verify_report_mail` over a ``DnsResolver``."""

    async def lookup(name: str) -> list[str]:
        answer = await resolver.txt(name)  # type: ignore[attr-defined]
        return [str(r) for r in answer.records]

    return lookup


def _verify_one(raw: bytes, idx: int, record: str) -> tuple[bool, str]:
    """dkimpy's verification of signature ``idx`` against one key record (sync, pure)."""
    rewritten = rewrite_key_record(record).encode("utf-8", "replace")

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes:
        return rewritten

    import dkim  # dkimpy (and the DNS library it loads) only once a signature is checked

    d = dkim.DKIM(raw, logger=_log, minkey=1024, tlsrpt=True)
    try:
        ok = d.verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.DKIMException as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    except Exception as exc:  # dkimpy raises assorted errors on malformed input
        return False, f"malformed signature: {type(exc).__name__}"[:300]
    return bool(ok), "" if ok else "signature does not verify"


async def verify_report_mail(raw: bytes, lookup: TxtLookup, *, lookup_timeout: float = 10.0
                             ) -> DkimResult:
    """Verify the DKIM signatures of a report mail; never raises for bad input.

    ``lookup(name)`` returns the TXT strings at ``name`` (empty list: no record) and
    may raise :class:`~smtptls.errors.DnsError`. The result is ``pass`` if any signature
    verifies, else the most telling failure: ``fail`` (a key was found, the signature
    does not verify: altered or forged), ``temperror`` (key lookup failed),
    ``permerror`` (no key, malformed signature), ``none`` (no signature).
    """
    if len(raw) > MAX_MESSAGE:
        return DkimResult(DkimStatus.PERMERROR, reason="message too large to verify")
    sigs = signature_keys(raw)
    if not sigs:
        return DkimResult(DkimStatus.NONE, reason="no DKIM-Signature header")
    results: list[DkimResult] = []
    for idx, (domain, selector) in enumerate(sigs):
        if not domain or not selector:
            results.append(DkimResult(DkimStatus.PERMERROR, domain or None, selector or None,
                                      "signature without d= or s="))
            continue
        name = f"{selector}._domainkey.{domain}"
        try:
            records = await asyncio.wait_for(lookup(name), lookup_timeout)
        except (TimeoutError, DnsTimeout):
            results.append(DkimResult(DkimStatus.TEMPERROR, domain, selector,
                                      f"key lookup for {name} timed out"))
            continue
        except DnsError as exc:
            results.append(DkimResult(DkimStatus.TEMPERROR, domain, selector,
                                      f"key lookup for {name} failed: {exc}"))
            continue
        except SmtpTlsError as exc:
            results.append(DkimResult(DkimStatus.PERMERROR, domain, selector, str(exc)))
            continue
        keys = [r for r in records if "p=" in r][:2]
        if not keys:
            results.append(DkimResult(DkimStatus.PERMERROR, domain, selector,
                                      f"no DKIM key record at {name}"))
            continue
        record = keys[0]
        ok, why = await asyncio.to_thread(_verify_one, raw, idx, record)
        service = "tlsrpt" in _services(record)
        if ok:
            note = "" if service else "key record does not name the tlsrpt service (RFC 8460 §5.3)"
            return DkimResult(DkimStatus.PASS, domain, selector, note, service)
        results.append(DkimResult(DkimStatus.FAIL, domain, selector, why, service))
    order = [DkimStatus.FAIL, DkimStatus.TEMPERROR, DkimStatus.PERMERROR]
    return min(results, key=lambda r: order.index(r.status))
