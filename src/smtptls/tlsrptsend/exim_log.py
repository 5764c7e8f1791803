"""Exim main-log lines to TLS sessions (RFC 8460 §4.3), for ``tlsrpt collect``.

:class:`EximLogParser` reads Exim 4.96's main log (``log_selector`` as docs/exim.md
says: ``+tls_certificate_verified +tls_peerdn +outgoing_interface``; ``X=`` is logged by
default) and rebuilds one :class:`~smtptls.tlsrptsend.postfix_log.LogSession` per
delivery attempt to a host, the same value the Postfix parser gives, so that
:func:`~smtptls.tlsrptsend.postfix_results.session_result` (the one place that decides
RFC 8460 result types, under the policy the collector looked up for the domain) maps
both MTAs alike. Each line stands alone (Exim logs one line per attempt and
recipient):

- ``=> rcpt ... H=host [ip] X=<cipher> CV=yes|dane|no``: delivered over TLS;
  ``CV=yes`` (the chain and, with ``tls_verify_cert_hostnames``, the name verified) and
  ``CV=dane`` (DANE-authenticated) are ``Verified``; ``CV=no`` is ``Untrusted``: Exim
  does not log whether the chain or the name failed, so a testing-mode session with a
  wrong-name certificate counts as ``certificate-not-trusted`` (the documented
  fallback);
- ``=>`` without ``X=``: delivered in plaintext (``starttls-not-supported``);
- ``==`` (deferred) / ``**`` (failed) with ``H=host [ip]``: a TLS failure when the text
  says so: "did not offer TLS support" -> no STARTTLS; "(certificate verification
  failed)" -> not verified (with DANE, "The certificate differs" -> no TLSA record
  matched; otherwise the cause is not logged by Exim 4.96 with GnuTLS: a
  ``validation-failure``); other TLS handshake failures -> handshake; any other defer
  (connection refused, a 4xx reply) is no TLS session and not counted;
- ``->`` (more recipients of the same delivery), ``*>``, defers without a host (a router
  defer, "retry time not reached") are not sessions.

Several recipients deferred in one attempt give one line each with the same host and
time; they are counted once (bounded memory of recent attempts).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo

from smtptls.errors import ResultError
from smtptls.tlsrptsend.postfix_lines import MAX_LINE, MAX_REASON, Problem, TlsLevel
from smtptls.tlsrptsend.postfix_log import LogSession, fold_sessions
from smtptls.tlsrptsend.results import normalize_domain_name, normalize_ip

__all__ = ["EximLogParser"]

#: Deferred/failed attempts remembered to count several recipients once.
MAX_RECENT = 10_000

_LINE = re.compile(
    r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)(?P<off> [+-]\d{4})?"
    r"(?: \[\d+\])? (?P<mid>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) "
    r"(?P<flag>=>|==|\*\*) (?P<rcpt>\S+)(?: <[^>]*>)? (?P<rest>.*)$")
_HOST = re.compile(r"\bH=(?P<host>[^\s\[\]]+)(?: DS)? \[(?P<ip>[^\]\s]+)\]")
_CIPHER = re.compile(r"\bX=(?P<x>\S+)")
_CV = re.compile(r"\bCV=(?P<cv>yes|no|dane)\b")

_NO_STARTTLS = "did not offer TLS support"
_NOT_VERIFIED = "(certificate verification failed)"
_DANE_DIFFERS = "The certificate differs"
_TLS_FAILURE = ("TLS session:", "TLS error", "TLS negotiation failed")


class EximLogParser:
    """Exim main-log lines to :class:`LogSession` values (pure, bounded state).

    The same methods as :class:`~smtptls.tlsrptsend.postfix_log.PostfixLogParser` that
    the collector calls (``feed_many``, ``feed_counted``, ``feed_journal``). ``tz``:
    the zone of Exim's time stamps (local time unless ``timezone`` is set in Exim, or
    ``+tz`` in ``log_selector`` adds the offset, which is then used).
    """

    def __init__(self, *, tz: tzinfo = UTC) -> None:
        self.tz = tz
        self._recent: OrderedDict[tuple[str, str, str, str], None] = OrderedDict()
        self.stats = {"lines": 0, "exim_lines": 0, "sessions": 0}

    def feed(self, line: str, now: datetime) -> list[LogSession]:
        return self.feed_many((line,), now)

    def feed_many(self, lines: Iterable[str], now: datetime) -> list[LogSession]:
        out = []
        for line in lines:
            s = self._line(line)
            if s is not None:
                out.append(s)
        self.stats["sessions"] += len(out)
        return out

    def feed_counted(self, lines: Iterable[str], now: datetime
                     ) -> list[tuple[LogSession, int]]:
        return fold_sessions(self.feed_many(lines, now))

    def feed_journal(self, entry: object, now: datetime) -> list[LogSession]:
        """Exim logs to files, not to journald: nothing to read."""
        return []

    def expire(self, now: datetime) -> int:
        return 0

    # -- one line -------------------------------------------------------------------------

    def _time(self, stamp: str, offset: str | None) -> datetime:
        t = datetime.fromisoformat(stamp.replace(" ", "T"))
        if offset:
            return datetime.fromisoformat(f"{t.isoformat()}{offset.strip()}").astimezone(UTC)
        return t.replace(tzinfo=self.tz).astimezone(UTC)

    def _line(self, line: str) -> LogSession | None:
        self.stats["lines"] += 1
        if len(line) > MAX_LINE or (" => " not in line and " == " not in line
                                    and " ** " not in line):
            return None
        m = _LINE.match(line.rstrip("\n"))
        if m is None:
            return None
        self.stats["exim_lines"] += 1
        rest = m["rest"]
        h = _HOST.search(rest)
        if h is None:
            return None  # a router defer, "retry time not reached": no session
        _, _, domain = m["rcpt"].rpartition("@")
        try:
            domain = normalize_domain_name(domain)
            host = normalize_domain_name(h["host"])
            ip = normalize_ip(h["ip"])
        except ResultError:
            return None
        when = self._time(m["when"], m["off"])
        if m["flag"] == "=>":
            x = _CIPHER.search(rest)
            cv = _CV.search(rest)
            tls = None
            if x is not None:
                tls = (TlsLevel.VERIFIED if cv is not None and cv["cv"] in ("yes", "dane")
                       else TlsLevel.UNTRUSTED)
            return LogSession(when, domain, m["mid"], host, ip, tls, (), True)
        detail = rest.split(": ", 1)[1] if ": " in rest else rest
        problems = _problems(detail)
        if not problems:
            return None  # not a TLS failure: no TLS session to report
        key = (m["mid"], ip, m["when"], detail[:80])
        if key in self._recent:
            return None  # another recipient of the same attempt
        self._recent[key] = None
        if len(self._recent) > MAX_RECENT:
            self._recent.popitem(last=False)
        return LogSession(when, domain, m["mid"], host, ip, None, problems,
                          False if m["flag"] == "**" else None)


def _problems(detail: str) -> tuple[tuple[Problem, str], ...]:
    text = detail[:MAX_REASON]
    if _NO_STARTTLS in detail:
        return ((Problem.NO_STARTTLS, text),)
    if _NOT_VERIFIED in detail:
        cause = Problem.CERT_UNTRUSTED if _DANE_DIFFERS in detail else Problem.CERT_OTHER
        return ((cause, text), (Problem.NOT_VERIFIED, text))
    if any(t in detail for t in _TLS_FAILURE):
        return ((Problem.HANDSHAKE, text),)
    return ()
