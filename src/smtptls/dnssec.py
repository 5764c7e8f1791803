"""DNSSEC security status of a DNS answer, as RFC 7672 §2.1.1 classifies it.

Like Postfix, smtptls trusts the AD bit of a configured validating resolver:

- ``SECURE``: validated (AD set).
- ``INSECURE``: provably unsigned (no AD, no error).
- ``BOGUS``: validation failed; a validating resolver answers SERVFAIL.
- ``INDETERMINATE``: the status could not be established (timeouts, other errors).

RFC 7672 §2.1.1: a stub resolver cannot tell bogus from indeterminate; both make
DANE-required destinations unusable, and neither allows a silent fallback.
"""

from __future__ import annotations

from enum import StrEnum


class Security(StrEnum):
    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    INDETERMINATE = "indeterminate"
