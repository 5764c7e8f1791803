"""The MTA-STS policy file (RFC 8461 §3.2) and its media type check (§3.3).

ABNF (RFC 8461 §3.2, abridged)::

    sts-policy-record   = sts-policy-field *WSP
                          *(sts-policy-term sts-policy-field *WSP) [sts-policy-term]
    sts-policy-field-delim = ":" *WSP
    sts-policy-version  = %s"version" ":" *WSP %s"STSv1"
    sts-policy-mode     = %s"mode" ":" *WSP (%s"testing" / %s"enforce" / %s"none")
    sts-policy-max-age  = %s"max_age" ":" *WSP 1*10(DIGIT)
    sts-policy-mx       = %s"mx" ":" *WSP ["*."] Domain          ; RFC 5321 Domain
    sts-policy-extension = sts-policy-ext-name ":" *WSP sts-policy-ext-value
    sts-policy-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
    sts-policy-ext-value = sts-policy-vchar [*(%x20 / sts-policy-vchar) sts-policy-vchar]
    sts-policy-term     = LF / CRLF

Choices where the RFC is silent or sources disagree (see docs/conformance.md):

- a repeated ``version``, ``mode`` or ``max_age``: the first wins (§3.2: "only the first
  instance is used"), the repeat is noted in :attr:`Policy.warnings`;
- unknown keys are extensions: kept in order, otherwise ignored (§3.2);
- ``max_age`` above 31557600 is an error, not clamped (§3.2 gives it as the maximum);
- blank lines are skipped with a warning; a tab inside an extension value is tolerated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smtptls.errors import PolicySyntaxError
from smtptls.mtasts.match import mx_matches, normalize_host

VERSION = "STSv1"

#: RFC 8461 §3.2: max_age has a maximum value of 31557600 (about one year).
MAX_AGE_LIMIT = 31557600
#: One day and one week, in seconds (max_age is in seconds).
ONE_DAY = 86400
ONE_WEEK = 7 * ONE_DAY
#: A policy body larger than this is refused (RFC 8461 §3.3 suggests bounding the body;
#: 64 KiB is the common cap).
MAX_POLICY_BYTES = 64 * 1024
#: At most this many lines in a policy.
MAX_LINES = 1000
#: At most this many ``mx`` entries in a policy.
MAX_MX = 500
#: RFC 1035 §2.3.4: a name is at most 253 characters in text form, a label 63.
MAX_NAME_LENGTH = 253

_WSP = " \t"
# RFC 8461 §3.2: sts-policy-ext-name (the known keys follow the same syntax)
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_EXT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,31}")
# RFC 8461 §3.2: sts-policy-ext-value = vchar [*(SP / vchar) vchar], vchar including
# UTF-8; a tab inside is tolerated. Surrogates are not characters and are refused.
_VCHAR = "\\x21-\\x7e\\u0080-\\ud7ff\\ue000-\\U0010ffff"
_EXT_VALUE_RE = re.compile(f"[{_VCHAR}](?:[ \\t{_VCHAR}]*[{_VCHAR}])?")
# RFC 8461 §3.2: sts-policy-max-age-value = 1*10(DIGIT)
_MAX_AGE_RE = re.compile(r"[0-9]{1,10}")
# RFC 5321 §4.1.2: sub-domain = Let-dig [Ldh-str]; Ldh-str ends in Let-dig
_LABEL_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?")


class Mode(StrEnum):
    """RFC 8461 §5: what a sender does when a policy's validation fails."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


def check_mx_pattern(value: str) -> str | None:
    """Why ``value`` is not a valid policy ``mx`` pattern, or None if it is.

    RFC 8461 §3.2: ``["*."] Domain``, the domain in A-labels; the wildcard only as the
    whole left-most label, once.
    """
    if not isinstance(value, str) or not value:
        return "empty mx"
    if len(value) > MAX_NAME_LENGTH:
        return f"mx longer than {MAX_NAME_LENGTH} characters"
    if not value.isascii():
        # RFC 8461 §3.2: internationalized names MUST be given as A-labels
        return f"mx {value!r} contains non-ASCII characters (U-labels must be A-labels)"
    domain = value[2:] if value.startswith("*.") else value
    for label in domain.split("."):
        if not label:
            return f"mx {value!r} has an empty label"
        if label == "*" or "*" in label:
            # RFC 8461 §3.2: "*." only as the whole left-most label
            return f"mx {value!r}: a wildcard is allowed only as the whole left-most label"
        if len(label) > 63:
            return f"mx {value!r} has a label longer than 63 characters"
        if not _LABEL_RE.fullmatch(label):
            # RFC 5321 §4.1.2: letters, digits, hyphens; no hyphen at either end
            return f"mx {value!r}: label {label!r} is not letters, digits and inner hyphens"
    return None


def _check_extension(name: str, value: str, line: int | None) -> None:
    if not isinstance(name, str) or not _EXT_NAME_RE.fullmatch(name):
        raise PolicySyntaxError(
            f"invalid key {name!r}: a letter or digit, then up to 31 of letters, digits, "
            "'_', '-', '.'",
            line=line,
        )
    if not isinstance(value, str) or not value:
        raise PolicySyntaxError(f"empty value for {name!r}", line=line)
    if not _EXT_VALUE_RE.fullmatch(value):
        raise PolicySyntaxError(
            f"invalid value for {name!r}: printable characters only", line=line, text=value
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """A parsed MTA-STS policy (RFC 8461 §3.2).

    ``mx`` holds the patterns as written (``mail.example.com`` or ``*.example.com``).
    ``extensions`` are the unknown ``(key, value)`` pairs in file order (ignored, kept).
    ``warnings`` lists tolerated oddities for an auditor; it is not part of equality.
    Constructing a Policy validates it, so every Policy serializes to a valid file.
    """

    version: str
    mode: Mode
    max_age: int
    mx: tuple[str, ...] = ()
    extensions: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.version != VERSION:
            # RFC 8461 §3.2: version: currently only "STSv1" is supported
            raise PolicySyntaxError(f"bad version {self.version!r}: expected {VERSION}")
        try:
            mode = Mode(self.mode)
        except ValueError:
            # RFC 8461 §3.2: mode is one of "enforce", "testing", "none"
            raise PolicySyntaxError(f"bad mode {self.mode!r}") from None
        object.__setattr__(self, "mode", mode)
        if (
            not isinstance(self.max_age, int)
            or isinstance(self.max_age, bool)
            or not 0 <= self.max_age <= MAX_AGE_LIMIT
        ):
            # RFC 8461 §3.2: non-negative integer seconds, at most 31557600
            raise PolicySyntaxError(f"max_age {self.max_age!r} not in 0..{MAX_AGE_LIMIT}")
        if isinstance(self.mx, str):
            raise PolicySyntaxError("mx must be a sequence of patterns, not one string")
        try:
            mx = tuple(self.mx)
            exts = tuple(tuple(pair) for pair in self.extensions)
        except TypeError:
            raise PolicySyntaxError("mx and extensions must be sequences") from None
        if len(mx) > MAX_MX:
            raise PolicySyntaxError(f"more than {MAX_MX} mx entries")
        for pattern in mx:
            reason = check_mx_pattern(pattern)
            if reason is not None:
                raise PolicySyntaxError(reason)
        if not mx and mode is not Mode.NONE:
            # RFC 8461 §3.2: mx is required at least once unless mode is "none"
            raise PolicySyntaxError(f"mode {mode.value} requires at least one mx")
        object.__setattr__(self, "mx", mx)
        for pair in exts:
            if len(pair) != 2:
                raise PolicySyntaxError(f"extension {pair!r} is not a (key, value) pair")
            if pair[0] in _KNOWN_KEYS:
                raise PolicySyntaxError(f"extension key {pair[0]!r} is a policy field")
            _check_extension(pair[0], pair[1], None)
        object.__setattr__(self, "extensions", exts)
        object.__setattr__(self, "warnings", tuple(self.warnings))

    @classmethod
    def parse(cls, text: str) -> Policy:
        return parse_policy(text)

    from_text = parse

    def lines(self) -> tuple[str, ...]:
        """The policy's lines, known fields first (canonical order): also the RFC 8460
        §4.4 ``policy-string`` entries of a report, one string per line."""
        lines = [f"version: {self.version}", f"mode: {self.mode.value}"]
        lines.extend(f"mx: {pattern}" for pattern in self.mx)
        lines.append(f"max_age: {self.max_age}")
        lines.extend(f"{key}: {value}" for key, value in self.extensions)
        return tuple(lines)

    def to_text(self) -> str:
        """Canonical serialization: CRLF-terminated :meth:`lines`."""
        return "".join(line + "\r\n" for line in self.lines())

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape: ``{"version", "mode", "max_age", "mx"}``."""
        return {
            "version": self.version,
            "mode": self.mode.value,
            "max_age": self.max_age,
            "mx": list(self.mx),
        }

    def matches_mx(self, host: str) -> bool:
        """RFC 8461 §4.1: does the MX host match one of this policy's ``mx`` patterns?

        Never raises; an unusable host name matches nothing.
        """
        normalized = normalize_host(host)
        if normalized is None:
            return False
        return any(mx_matches(pattern, normalized) for pattern in self.mx)


_KNOWN_KEYS = frozenset({"version", "mode", "max_age", "mx"})
_SINGULAR_KEYS = ("version", "mode", "max_age")


def _byte_length_over(text: str, limit: int) -> bool:
    if len(text) > limit:
        return True
    return len(text.encode("utf-8", "surrogatepass")) > limit



def short_enforced_max_age(policy: Policy, floor: int = ONE_DAY) -> str | None:
    """Why ``policy`` caches too briefly, or None: an ``enforce`` policy whose ``max_age``
    is below ``floor`` soon leaves senders without a policy once an attacker blocks its
    refresh (RFC 8461 §3.2; weeks are recommended). The one place ``check`` and
    ``publish`` judge it."""
    if policy.mode is not Mode.ENFORCE or policy.max_age >= floor:
        return None
    below = "one day" if floor == ONE_DAY else f"{floor} s"
    return (f"max_age {policy.max_age} s is below {below}: an attacker who blocks the policy "
            "fetch soon leaves senders without a policy")


def parse_policy(text: str) -> Policy:
    """Parse an MTA-STS policy file body (RFC 8461 §3.2).

    Lines end in CRLF or LF (mixed is fine, the last may lack one). Raises a
    :class:`~smtptls.errors.PolicySyntaxError` (a ``PolicyError``) naming the reason
    and the 1-based line; an invalid policy means "no policy" to a sender (§3.2).
    """
    if not isinstance(text, str):
        raise PolicySyntaxError("policy must be text")
    if _byte_length_over(text, MAX_POLICY_BYTES):
        raise PolicySyntaxError(f"policy larger than {MAX_POLICY_BYTES} bytes")
    if text.count("\n") > MAX_LINES:
        raise PolicySyntaxError(f"policy has more than {MAX_LINES} lines")
    lines = text.split("\n")
    # RFC 8461 §3.2: [sts-policy-term] - the final line may or may not end in a newline
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise PolicySyntaxError("empty policy (missing version)")

    seen: dict[str, Any] = {}
    mx: list[str] = []
    extensions: list[tuple[str, str]] = []
    warnings: list[str] = []
    for number, raw in enumerate(lines, start=1):
        # RFC 8461 §3.2: sts-policy-term = LF / CRLF
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip(_WSP):
            warnings.append(f"line {number}: blank line ignored")
            continue
        key, colon, rest = line.partition(":")
        if not colon:
            raise PolicySyntaxError("not a 'key: value' line", line=number, text=line[:80])
        if not _KEY_RE.fullmatch(key):
            raise PolicySyntaxError(f"invalid key {key[:40]!r}", line=number)
        if len(key) > 32:
            # RFC 8461 §3.2: sts-policy-ext-name is at most 32 characters
            raise PolicySyntaxError(f"key {key[:40]!r} longer than 32 characters", line=number)
        # RFC 8461 §3.2: sts-policy-field-delim = ":" *WSP, and *WSP at the line end
        value = rest.strip(_WSP)
        if key in _SINGULAR_KEYS and key in seen:
            # RFC 8461 §3.2: a field given more than once - only the first is used
            _check_extension(key, value, number)
            warnings.append(f"line {number}: duplicate {key!r} ignored; the first one is used")
            continue
        if key == "version":
            if value != VERSION:
                # RFC 8461 §3.2: version: STSv1 (case-sensitive)
                raise PolicySyntaxError(f"bad version {value[:40]!r}", line=number)
            seen[key] = value
        elif key == "mode":
            try:
                seen[key] = Mode(value)
            except ValueError:
                # RFC 8461 §3.2: "enforce" / "testing" / "none", case-sensitive
                raise PolicySyntaxError(f"bad mode {value[:40]!r}", line=number) from None
        elif key == "max_age":
            if not _MAX_AGE_RE.fullmatch(value):
                # RFC 8461 §3.2: max_age = 1*10(DIGIT)
                raise PolicySyntaxError(
                    f"bad max_age {value[:40]!r}: 1 to 10 digits expected", line=number
                )
            max_age = int(value)
            if max_age > MAX_AGE_LIMIT:
                # RFC 8461 §3.2: max_age has a maximum value of 31557600
                raise PolicySyntaxError(
                    f"max_age {max_age} above the maximum {MAX_AGE_LIMIT}", line=number
                )
            seen[key] = max_age
        elif key == "mx":
            reason = check_mx_pattern(value)
            if reason is not None:
                raise PolicySyntaxError(reason, line=number, text=value[:80])
            if len(mx) >= MAX_MX:
                raise PolicySyntaxError(f"more than {MAX_MX} mx entries", line=number)
            mx.append(value)
        else:
            # RFC 8461 §3.2: unknown fields are ignored (kept as extensions)
            _check_extension(key, value, number)
            extensions.append((key, value))

    for key in _SINGULAR_KEYS:
        if key not in seen:
            # RFC 8461 §3.2: version, mode and max_age are required
            raise PolicySyntaxError(f"missing {key}")
    if not mx and seen["mode"] is not Mode.NONE:
        # RFC 8461 §3.2: mx is required unless mode is "none"
        raise PolicySyntaxError(f"missing mx (required for mode {seen['mode'].value})")
    return Policy(
        version=seen["version"],
        mode=seen["mode"],
        max_age=seen["max_age"],
        mx=tuple(mx),
        extensions=tuple(extensions),
        warnings=tuple(warnings),
    )


def is_text_plain(content_type: str) -> bool:
    """RFC 8461 §3.3: is this Content-Type the ``text/plain`` media type?

    Case-insensitive; parameters such as ``charset`` are allowed. Never raises.
    """
    if not isinstance(content_type, str) or len(content_type) > 1024:
        return False
    media_type = content_type.split(";", 1)[0].strip(" \t")
    return media_type.lower() == "text/plain"
