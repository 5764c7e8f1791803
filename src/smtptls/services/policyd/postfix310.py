"""Policy-map answers for Postfix >= 3.10: the MTA-STS attributes and policy failures.

Postfix 3.10's TLSRPT_README ("MTA-STS Support via smtp_tls_policy_maps") extends a
policy plug-in's answer with ``name=value`` attributes that tell Postfix which MTA-STS
policy applies, so that Postfix reports it through TLSRPT and, with
``smtp_tls_enforce_sts_mx_patterns = yes`` (postconf(5), the default since 3.10.5),
connects only to MX hosts whose name matches a pattern and matches the certificate
against that MX host name:

* ``policy_type=sts``; ``policy_domain=<domain>``;
* ``mx_host_pattern=<pattern>``, once per ``mx:`` line of the policy;
* ``{ policy_string = <line> }``, once per policy line ("enclosed inside { and } to
  protect whitespace in attribute values");
* ``policy_failure=<type>``: "forces MTA-STS policy enforcement to fail with the
  indicated error" — ``sts-policy-fetch-error``, ``sts-policy-invalid``,
  ``sts-webpki-invalid`` or ``validation-failure``;
* ``policy_ttl=<time>``: deprecated ("not used, and support for this attribute will
  eventually be removed"), written only when asked for.

Syntax (postconf(5) ``smtp_tls_policy_maps``, TLSRPT_README): attributes are separated
by whitespace or commas; ``{ name = value }`` protects whitespace and commas, Postfix
ignoring the whitespace after ``{``, around ``=`` and before ``}``. Braces inside a
value are read by nesting level: balanced ones pass (``{ policy_string = x: {a} }``),
an unbalanced one breaks the whole answer (Postfix: "malformed attribute/value pair",
delivery deferred as "client TLS configuration problem", seen on 3.10.13). So a value
is written plain when it has none of whitespace, comma and braces, braced when its
braces balance, and is refused (:class:`AnswerSyntaxError`) otherwise, as are empty
values, values with control characters and values that begin or end with whitespace
(the braces would strip it). Non-ASCII text is sent as UTF-8: Postfix passes it
through to libtlsrpt unchanged (seen on 3.10.13: ``"x: café ☃"`` in the datagram).
A policy line that cannot be written is left out of the policy strings (only an
extension line can be one; the report then lacks that line) rather than making
Postfix defer the mail; ``version``, ``mode``, ``mx`` and ``max_age`` lines always can.

Where Postfix acts on them (lab, Postfix 3.10.13): ``policy_failure`` fails delivery at
the ``verify`` and ``secure`` levels and is ignored at ``may`` and ``encrypt`` (the
session is then reported as a success); the MX patterns are enforced at ``secure``.
Which base answer goes with which outcome is the caller's decision
(:mod:`smtptls.engine.destination`); this module only writes the attributes. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from smtptls.errors import PolicyError
from smtptls.mtasts.policy import Policy

__all__ = [
    "POLICY_TYPE_STS",
    "AnswerSyntaxError",
    "PolicyFailure",
    "attribute",
    "failure_answer",
    "policy_strings",
    "secure_answer",
    "sts_answer",
    "sts_attributes",
]

#: ``policy_type`` of an MTA-STS answer (TLSRPT_README: ``sts`` or ``no-policy-found``).
POLICY_TYPE_STS = "sts"
#: Postfix splits attribute lists at these (postconf(5): "whitespace and/or comma").
_SEPARATORS = frozenset(" \t\r\n,")
_OPEN, _CLOSE = "{", "}"


class AnswerSyntaxError(PolicyError):
    """A value that Postfix's policy-map answer syntax cannot carry."""


class PolicyFailure(StrEnum):
    """TLSRPT_README's ``policy_failure`` values (RFC 8460 §4.3 result types)."""

    STS_POLICY_FETCH_ERROR = "sts-policy-fetch-error"
    STS_POLICY_INVALID = "sts-policy-invalid"
    STS_WEBPKI_INVALID = "sts-webpki-invalid"
    VALIDATION_FAILURE = "validation-failure"


def _balanced(value: str) -> bool:
    depth = 0
    for ch in value:
        if ch == _OPEN:
            depth += 1
        elif ch == _CLOSE:
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def attribute(name: str, value: str) -> str:
    """``name=value``, or ``{ name = value }`` when the value has whitespace, commas or
    (balanced) braces; :class:`AnswerSyntaxError` when Postfix cannot read it back."""
    if not value:
        raise AnswerSyntaxError(f"{name}: empty value")
    # RFC 8461 §3.2 values are VCHAR and WSP: a tab inside is whitespace, any other
    # control character (a line break would end the policy line) cannot be sent
    if any((ord(ch) < 0x20 and ch != "\t") or ord(ch) == 0x7F for ch in value):
        raise AnswerSyntaxError(f"{name}: control character in {value[:40]!r}")
    if value != value.strip(" \t"):
        raise AnswerSyntaxError(f"{name}: leading or trailing whitespace is stripped")
    if not any(ch in _SEPARATORS or ch in (_OPEN, _CLOSE) for ch in value):
        return f"{name}={value}"
    if not _balanced(value):
        raise AnswerSyntaxError(f"{name}: unbalanced braces in {value[:40]!r}")
    return f"{_OPEN} {name} = {value} {_CLOSE}"


def policy_strings(policy: Policy) -> tuple[str, ...]:
    """The policy's lines as RFC 8460 §4.4 ``policy-string`` entries."""
    return policy.lines()


def _written(name: str, values: Iterable[str]) -> list[str]:
    out = []
    for value in values:
        try:
            out.append(attribute(name, value))
        except AnswerSyntaxError:
            continue  # an extension line Postfix cannot carry (module docstring)
    return out


def sts_attributes(policy: Policy, domain: str, ttl: int | None = None) -> tuple[str, ...]:
    """The attributes naming ``policy`` of ``domain`` (TLSRPT_README order)."""
    attrs = [f"policy_type={POLICY_TYPE_STS}", attribute("policy_domain", domain)]
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
            raise AnswerSyntaxError(f"policy_ttl: {ttl!r} is not a number of seconds")
        attrs.append(f"policy_ttl={ttl}")
    attrs.extend(attribute("mx_host_pattern", p) for p in policy.mx)
    attrs.extend(_written("policy_string", policy_strings(policy)))
    return tuple(attrs)


def sts_answer(base: str, policy: Policy, domain: str, ttl: int | None = None) -> str:
    """``base`` (a Postfix TLS level with its options) with the MTA-STS attributes of
    ``policy`` for ``domain`` appended."""
    return " ".join((base.strip(), *sts_attributes(policy, domain, ttl)))


def secure_answer(base: str, policy: Policy, domain: str, ttl: int | None = None) -> str:
    """``base`` (e.g. ``secure match=a:b servername=hostname``) with the MTA-STS
    attributes of ``policy`` for ``domain`` appended."""
    return sts_answer(base, policy, domain, ttl)


def failure_answer(base: str, domain: str, failure: PolicyFailure | str) -> str:
    """``base`` with ``policy_type=sts``, the policy domain and ``policy_failure``.

    Postfix fails delivery on it at ``verify``/``secure`` and ignores it at ``may``/
    ``encrypt`` (module docstring): the base decides which.
    """
    try:
        kind = PolicyFailure(failure)
    except ValueError:
        raise AnswerSyntaxError(f"policy_failure: unknown type {failure!r}") from None
    return " ".join((base.strip(), f"policy_type={POLICY_TYPE_STS}",
                     attribute("policy_domain", domain), f"policy_failure={kind.value}"))
