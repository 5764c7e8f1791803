"""Postfix log sessions to TLS session results (RFC 8460 §4.3).

:func:`session_result` maps a :class:`~smtptls.tlsrptsend.postfix_log.LogSession` and the
policy that applied to its domain (:class:`PolicyContext`, which the collector obtains
from the policy daemon's decision or the MTA-STS policy cache) to a
:class:`~smtptls.tlsrptsend.results.SessionResult` with a §4.3 result type. A session
that delivered without any TLS line is a plaintext session: ``starttls-not-supported``.
Pure: no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.postfix_lines import _NUM_RE, MAX_REASON, Problem, TlsLevel
from smtptls.tlsrptsend.postfix_log import LogSession
from smtptls.tlsrptsend.results import AppliedPolicy, Failure, SessionResult

__all__ = ["PolicyContext", "results_for", "session_result"]



@functools.lru_cache(maxsize=10_000)
def _applied(ptype: PolicyType, domain: str, strings: tuple[str, ...],
             patterns: tuple[str, ...]) -> AppliedPolicy:
    return AppliedPolicy(ptype, domain, strings, patterns)


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What applied to deliveries to one domain, as the policy daemon decided.

    ``kind``: ``tlsa`` (DANE), ``sts`` or ``none``. ``sts_mode``: ``enforce`` or
    ``testing``. ``tlsa_records`` maps an MX host to its TLSA records (presentation
    form); a host without records under ``tlsa`` is reached without DANE.
    ``sts_failure``: the MTA-STS policy fetch failed (``sts-policy-fetch-error``,
    ``sts-policy-invalid``, ``sts-webpki-invalid``, RFC 8460 §4.3.2.2), and
    ``sts_failure_reason`` says why (``failure-reason-code``). Under kind ``none``
    (nothing cached) every session is reported as that failure under an ``sts`` policy
    without policy strings. Under kind ``sts`` (the refresh failed, the unexpired cached
    policy applied: RFC 8461 §3.3, §6) each session is judged under the cached policy
    as usual and also carries that failure as a failure detail, without counting as a
    failed session (docs/tlsrpt-sending.md).
    ``dane_required``: the sender requires DANE for this domain (RFC 8460 §4.3.2.1).
    """

    domain: str
    kind: str = "none"
    sts_mode: str | None = None
    sts_strings: tuple[str, ...] = ()
    mx_patterns: tuple[str, ...] = ()
    tlsa_records: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    sts_failure: ResultType | None = None
    dane_required: bool = False
    sts_failure_reason: str | None = None

    def applied(self, mx_host: str | None) -> AppliedPolicy:
        """The policy a session with ``mx_host`` was under (RFC 8460 §4.4 ``policy``)."""
        if self.kind == "tlsa" and mx_host is not None and self.tlsa_records.get(mx_host):
            return _applied(PolicyType.TLSA, self.domain, tuple(self.tlsa_records[mx_host]), ())
        if self.kind == "sts":
            return _applied(PolicyType.STS, self.domain, self.sts_strings, self.mx_patterns)
        if self.sts_failure is not None:
            return _applied(PolicyType.STS, self.domain, (), ())
        return _applied(PolicyType.NO_POLICY_FOUND, self.domain, (), ())

    def mx_allowed(self, mx_host: str | None) -> bool:
        """RFC 8461 §4.1: does ``mx_host`` match an ``mx`` pattern of the policy?"""
        if mx_host is None or not self.mx_patterns:
            return True
        for pattern in self.mx_patterns:
            if pattern.startswith("*."):
                head, _, parent = mx_host.partition(".")
                if head and parent == pattern[2:]:
                    return True
            elif mx_host == pattern:
                return True
        return False


def _cert_result(problems: set[Problem], tls: TlsLevel | None, ptype: PolicyType
                 ) -> ResultType:
    """The §4.3 result type of a certificate that did not pass, from the cause logged."""
    if Problem.CERT_EXPIRED in problems:
        return ResultType.CERTIFICATE_EXPIRED  # §4.3.1 certificate-expired
    if Problem.CERT_NAME_MISMATCH in problems:
        return ResultType.CERTIFICATE_HOST_MISMATCH  # §4.3.1 certificate-host-mismatch
    if Problem.CERT_UNTRUSTED in problems or tls is TlsLevel.UNTRUSTED:
        # §4.3.2.1 tlsa-invalid: none of the TLSA records matched the certificate;
        # §4.3.1 certificate-not-trusted for PKIX (MTA-STS, or no policy)
        return ResultType.TLSA_INVALID if ptype is PolicyType.TLSA \
            else ResultType.CERTIFICATE_NOT_TRUSTED
    if tls is TlsLevel.TRUSTED and ptype is not PolicyType.TLSA:
        # chain trusted, name not matched: the only reason left for "not verified"
        return ResultType.CERTIFICATE_HOST_MISMATCH
    return ResultType.VALIDATION_FAILURE  # §4.3.1: anything else


def _cut(text: str | None) -> str | None:
    return text[:MAX_REASON] if text else None


def _reason(session: LogSession, problems: tuple[Problem, ...]) -> str | None:
    for p, text in session.problems:
        if p in problems:
            m = _NUM_RE.search(text)
            return (f"X509 error {m['num']}: {m['text']}" if m else text)[:MAX_REASON]
    return None


def session_result(session: LogSession, context: PolicyContext | None, *,
                   sending_ip: str | None = None) -> SessionResult | None:
    """The RFC 8460 result of one Postfix session under the policy that applied.

    Returns None when the session says nothing about TLS (it never reached the TLS
    step and logged no TLS problem). ``sending_ip`` fills ``sending-mta-ip`` (Postfix
    does not log its own address).
    """
    context = context or PolicyContext(session.domain)
    result = _judged(session, context, sending_ip)
    if result is None or context.kind != "sts" or context.sts_failure is None:
        return result
    # RFC 8461 §6: the policy refresh failed and the cached policy applied. The session
    # counts as it went (RFC 8460 §4.4 counts TLS negotiations, and this one was not
    # failed by the refresh); the refresh failure is one more failure detail of it.
    refresh = Failure(context.sts_failure,
                      failure_reason_code=_cut(context.sts_failure_reason))
    return replace(result, failures=(*result.failures, refresh), failed=result.failed)


def _judged(session: LogSession, context: PolicyContext, sending_ip: str | None
            ) -> SessionResult | None:
    policy = context.applied(session.mx_host)
    ptype = policy.policy_type
    problems = session.problem_set
    fields = {"mx_host": session.mx_host, "receiving_ip": session.receiving_ip,
              "sending_mta_ip": sending_ip}

    def fail(result_type: ResultType, *keys: Problem, code: str | None = None
             ) -> SessionResult:
        reason = code or _reason(session, keys or tuple(problems))
        return SessionResult.failure(session.time, policy, result_type,
                                     failure_reason_code=reason, **fields)

    # The discovery of the policy itself failed (RFC 8460 §4.3.2.2): every session to
    # the domain counts as that failure, whatever happened on the wire.
    if context.kind == "none" and context.sts_failure is not None:
        return fail(context.sts_failure, code=_cut(context.sts_failure_reason))
    # DANE problems found before or instead of a connection (RFC 8460 §4.3.2.1).
    if Problem.TLSA_LOOKUP_ERROR in problems:
        return fail(ResultType.DNSSEC_INVALID, Problem.TLSA_LOOKUP_ERROR)
    if Problem.TLSA_NONE in problems:
        return fail(ResultType.DANE_REQUIRED, Problem.TLSA_NONE)
    if Problem.TLSA_UNUSABLE in problems:
        return fail(ResultType.TLSA_INVALID, Problem.TLSA_UNUSABLE)
    if Problem.NO_STARTTLS in problems:
        # §4.3.1 starttls-not-supported: the MX did not offer (or refused) STARTTLS
        return fail(ResultType.STARTTLS_NOT_SUPPORTED, Problem.NO_STARTTLS)
    if Problem.HANDSHAKE in problems:
        return fail(ResultType.VALIDATION_FAILURE, Problem.HANDSHAKE)
    cert_problems = problems & {Problem.CERT_EXPIRED, Problem.CERT_NOT_YET_VALID,
                                Problem.CERT_UNTRUSTED, Problem.CERT_NAME_MISMATCH,
                                Problem.CERT_OTHER}
    if Problem.NOT_VERIFIED in problems:
        # Postfix refused the certificate (an enforced policy); the cause came first
        return fail(_cert_result(problems, session.tls, ptype),
                    *(cert_problems or {Problem.NOT_VERIFIED}))
    if session.tls is None:
        if session.delivered:
            # delivered in plaintext: the MX offered no STARTTLS (needs smtp_tls_loglevel>=1)
            return fail(ResultType.STARTTLS_NOT_SUPPORTED,
                        code="delivered without TLS (STARTTLS not offered)")
        if cert_problems:
            return fail(_cert_result(problems, None, ptype), *cert_problems)
        return None
    if ptype is PolicyType.NO_POLICY_FOUND:
        # opportunistic TLS: an encrypted session is a success, whatever the certificate
        return SessionResult.success(session.time, policy, **fields)
    # A policy applied but Postfix did not enforce it (MTA-STS testing, RFC 8461 §5):
    # judge the certificate as the policy would have (RFC 8460 §4.3, REQUIREMENTS F2).
    if ptype is PolicyType.STS and not context.mx_allowed(session.mx_host):
        return fail(ResultType.VALIDATION_FAILURE,
                    code=f"MX host {session.mx_host} does not match the policy's mx patterns")
    if session.tls is TlsLevel.VERIFIED:
        return SessionResult.success(session.time, policy, **fields)
    if session.tls is TlsLevel.TRUSTED and not cert_problems:
        if ptype is PolicyType.STS and context.sts_mode != "enforce":
            # "Trusted" under a non-verifying level: the chain is good and the MX matched
            # the policy; Postfix did not check the name (see docs/tlsrpt-sending.md)
            return SessionResult.success(session.time, policy, **fields)
        return fail(ResultType.CERTIFICATE_HOST_MISMATCH,
                    code="certificate chain trusted, name not matched")
    if session.tls is TlsLevel.ANONYMOUS:
        return fail(ResultType.VALIDATION_FAILURE, code="anonymous TLS (no certificate)")
    return fail(_cert_result(problems, session.tls, ptype), *cert_problems)


def results_for(sessions: list[LogSession], context_for: Callable[[str], PolicyContext | None],
                *, sending_ip: str | None = None) -> list[SessionResult]:
    """:func:`session_result` over several sessions (``None`` results left out)."""
    out = []
    for s in sessions:
        r = session_result(s, context_for(s.domain), sending_ip=sending_ip)
        if r is not None:
            out.append(r)
    return out
