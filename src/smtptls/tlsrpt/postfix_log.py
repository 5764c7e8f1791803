"""Postfix logs to TLS session results (RFC 8460 §4.3), for Postfix without libtlsrpt.

Two pure steps:

1. :class:`PostfixLogParser` reads log lines (syslog text, or journald JSON entries) and
   rebuilds SMTP sessions of the ``smtp`` client (:class:`LogSession`): the receiving
   MX and address, the TLS trust level Postfix logged, the problems it logged, and the
   recipient domain. Lines are correlated by the ``smtp`` process id (one process runs
   one delivery at a time) and the queue id of the delivery.
2. :func:`session_result` maps a session and the policy that applied to its domain
   (:class:`PolicyContext`, which the collector obtains from the policy daemon's
   decision or the MTA-STS policy cache) to a
   :class:`~smtptls.tlsrpt.results.SessionResult` with a §4.3 result type.

What Postfix (3.x, ``smtp_tls_loglevel = 1``) logs and what it means::

    Verified|Trusted|Untrusted|Anonymous TLS connection established to H[IP]:P: ...
        a TLS session; the level is the certificate check's result
    [server |CA ]certificate verification failed for H[IP]:P: <why>
        why: certificate has expired / certificate not yet valid / untrusted issuer ...
        / self-signed certificate / not trusted by local or TLSA policy / num=62:hostname
        mismatch / num=65:no matching DANE TLSA records / num=N:<OpenSSL text>
        (logged only where Postfix verifies: enforced policies and DANE; at opportunistic
        levels only the summary level above is logged)
    QID: TLS is required, but was not offered by host H[IP]        starttls-not-supported
    QID: TLS is required, but host H[IP] refused to start TLS: ... starttls-not-supported
    QID: Server certificate not verified | not trusted             the cause logged before
    QID: Cannot start TLS: handshake failure                       validation-failure
    TLSA lookup error for H:P                                      dnssec-invalid
    no TLSA records found                                          dane-required
    TLSA records unusable / all TLSA records unusable              tlsa-invalid
    QID: to=<rcpt>, relay=H[IP]:P, ..., status=sent|deferred|bounced (text)
        the end of a session (one line per recipient; the first one counts)

A session that delivered without any TLS line is a plaintext session, reported as
``starttls-not-supported`` — which is why ``smtp_tls_loglevel`` must be 1 or more (the
TLS line is then always there). Sessions to an IP-literal relay (content filters,
``[127.0.0.1]:10025``) and connections reused from Postfix's connection cache (no new
TLS negotiation) are not counted. Report mails of our own (recognised by their
``message-id``, see :func:`is_report_message_id`) are never reported on.

Traditional syslog time stamps have no year and no zone: the parser takes the year
from the ``now`` it is given and the zone from ``tz``.
"""

from __future__ import annotations

import enum
import functools
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from smtptls.errors import ResultError
from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrpt.results import (
    AppliedPolicy,
    SessionResult,
    normalize_domain_name,
    normalize_ip,
)

__all__ = [
    "LogSession",
    "PolicyContext",
    "PostfixLogParser",
    "Problem",
    "TlsLevel",
    "fold_key",
    "fold_sessions",
    "is_report_message_id",
    "parse_syslog_line",
    "problems_in",
    "report_message_id",
    "session_result",
]

MAX_LINE = 16 * 1024  # longer lines are cut (Postfix caps its own at 2 KiB + names)
MAX_PROCESSES = 10_000  # smtp processes tracked at once
MAX_PENDING = 32  # closed sessions per process waiting for their recipient domain
MAX_MESSAGE_IDS = 100_000  # queue ids remembered as our own report mails
MAX_REASON = 200  # characters of Postfix text kept as failure-reason-code
SESSION_TIMEOUT = timedelta(minutes=30)  # open/pending sessions older than this are dropped
DEFAULT_SERVICES = ("smtp", "relay")


# --- what Postfix logged ------------------------------------------------------------------------


class TlsLevel(enum.StrEnum):
    """Postfix's summary of the peer certificate check (``tls_log_summary``)."""

    VERIFIED = "Verified"  # chain trusted and the name matched
    TRUSTED = "Trusted"  # chain trusted, name not matched (or not checked)
    UNTRUSTED = "Untrusted"  # chain not trusted
    ANONYMOUS = "Anonymous"  # no certificate (anonymous cipher)


class Problem(enum.StrEnum):
    """A TLS problem in Postfix's words, before the policy decides what it means."""

    NO_STARTTLS = "no-starttls"
    CERT_EXPIRED = "cert-expired"
    CERT_NOT_YET_VALID = "cert-not-yet-valid"
    CERT_UNTRUSTED = "cert-untrusted"
    CERT_NAME_MISMATCH = "cert-name-mismatch"
    CERT_OTHER = "cert-other"
    NOT_VERIFIED = "not-verified"
    HANDSHAKE = "handshake"
    TLSA_LOOKUP_ERROR = "tlsa-lookup-error"
    TLSA_NONE = "tlsa-none"
    TLSA_UNUSABLE = "tlsa-unusable"


def _hostaddr(tag: str = "") -> str:
    return (rf"(?P<host{tag}>[^\s\[\]]+)\[(?P<ip{tag}>[^\]\s]+)\]"
            rf"(?::(?P<port{tag}>\d+))?")


_HOSTADDR = _hostaddr()
_TLS_LINE = (r"(?P<level>Verified|Trusted|Untrusted|Anonymous) TLS connection "
             rf"(?P<how>established|reused) to {_hostaddr()}: ")  # the cipher text is not read
_VERIFY = (rf"(?:(?:server|CA) )?certificate verification failed for {_hostaddr('_v')}: "
           r"(?P<why>.*)")
_QID = r"(?P<qid>[0-9A-F]{6,20}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,20}): (?P<rest>.*)"
_QID_RE = re.compile(_QID)
# An smtp line is one of three kinds, told apart by one match: the TLS summary, a
# verification failure, or a line about a queued message. Alternatives are tried in
# this order and no text fits two of them (their first words differ).
_SMTP_RE = re.compile(f"{_TLS_LINE}|{_VERIFY}|{_QID}")
_STATUS_RE = re.compile(
    r"to=<(?P<rcpt>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,\s]+),"
    r".*? status=(?P<status>sent|deferred|bounced|expired|undeliverable)"
    r"(?: \((?P<text>.*)\))?\s*$")
_RELAY_RE = re.compile(_HOSTADDR)
_MESSAGE_ID_RE = re.compile(r"message-id=<?(?P<mid>[^>\s]*)>?")
_HOST_IN_TEXT_RE = re.compile(rf"(?:by|host) {_HOSTADDR}")
_LEADING_HOST_RE = re.compile(r"(?:warning: )?(?:(?P<host>[^\s\[\]:]+)(?:\[(?P<ip>[^\]\s]+)\])?"
                               r"(?::\d+)?): ")
_TLSA_HOST_RE = re.compile(r"TLSA (?:lookup error|records?)[^:]* for (?P<host>[^\s:\[\]]+):"
                           r"(?P<port>\d+)")
_NUM_RE = re.compile(r"num=(?P<num>\d+):(?P<text>.*)")

# Free text (a deferral reason, a status text, a warning) -> the problem it names.
# Table order matters: the first match wins.
_TEXT_PROBLEMS: tuple[tuple[re.Pattern[str], Problem], ...] = (
    (re.compile(r"TLS is required, but was not offered by host"), Problem.NO_STARTTLS),
    (re.compile(r"TLS is required, but host .* refused to start TLS"), Problem.NO_STARTTLS),
    (re.compile(r"TLS is required, but our TLS engine is unavailable"), Problem.HANDSHAKE),
    (re.compile(r"Server certificate not (?:verified|trusted)"), Problem.NOT_VERIFIED),
    (re.compile(r"Cannot start TLS: handshake failure"), Problem.HANDSHAKE),
    (re.compile(r"TLSA lookup error|DANE TLSA lookup problem"), Problem.TLSA_LOOKUP_ERROR),
    (re.compile(r"no TLSA records found"), Problem.TLSA_NONE),
    (re.compile(r"TLSA records? (?:are )?unusable|all TLSA records unusable|no usable TLSA"
                r"|DANE TLSA .*no usable"), Problem.TLSA_UNUSABLE),
    (re.compile(r"certificate name mismatch|hostname mismatch|name mismatch"),
     Problem.CERT_NAME_MISMATCH),
)

# The <why> of "certificate verification failed for H[IP]:P: <why>".
_VERIFY_PROBLEMS: tuple[tuple[re.Pattern[str], Problem], ...] = (
    (re.compile(r"certificate has expired|num=10:"), Problem.CERT_EXPIRED),
    (re.compile(r"certificate not yet valid|num=9:"), Problem.CERT_NOT_YET_VALID),
    (re.compile(r"hostname mismatch|name mismatch|num=62:"), Problem.CERT_NAME_MISMATCH),
    # num=65 (OpenSSL X509_V_ERR_DANE_NO_MATCH): "no matching DANE TLSA records"
    (re.compile(r"untrusted issuer|self-signed certificate|not trusted by local or TLSA"
                r"|no matching DANE TLSA|num=(?:2|18|19|20|21|27|65):"), Problem.CERT_UNTRUSTED),
)


# Every alternative of every row above holds one of these words (a unit test checks it):
# a text with none of them names no problem. Most texts ("250 2.0.0 Ok: queued as ...")
# are such, and three substring tests say so faster than nine searches.
_TEXT_PROBLEM_WORDS = ("TLS", "certificate not", "mismatch")


def problems_in(text: str) -> list[Problem]:
    """The TLS problems Postfix names in a free-text reason (table above)."""
    if "TLS" not in text and "certificate not" not in text and "mismatch" not in text:
        return []
    out = []
    for regex, problem in _TEXT_PROBLEMS:
        if regex.search(text) and problem not in out:
            out.append(problem)
    return out


def _verify_problem(why: str) -> Problem:
    for regex, problem in _VERIFY_PROBLEMS:
        if regex.search(why):
            return problem
    return Problem.CERT_OTHER


# --- our own report mails ------------------------------------------------------------------------

_REPORT_MID_PREFIX = "tlsrpt."


def report_message_id(unique: str, submitter: str) -> str:
    """The Message-ID of a report mail of ours (without angle brackets): recognisable in
    Postfix's ``cleanup`` log line, so its deliveries are never reported on."""
    return f"{_REPORT_MID_PREFIX}{unique}@{submitter}"


def is_report_message_id(message_id: str, submitter: str | None = None) -> bool:
    """Whether ``message_id`` is one :func:`report_message_id` made (for ``submitter``)."""
    mid = message_id.strip().strip("<>").lower()
    if not mid.startswith(_REPORT_MID_PREFIX) or "@" not in mid:
        return False
    return submitter is None or mid.rpartition("@")[2] == submitter.lower().rstrip(".")


# --- syslog lines --------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
_BSD_STAMP = (r"(?P<stamp>(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):"
              r"(?P<s>\d\d))(?:\.\d+)?")
_ISO_STAMP = r"(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)?)"
_TAG = r"(?P<prog>[\w./-]+)\[(?P<pid>\d{1,10})\]: "
_BSD_RE = re.compile(rf"{_BSD_STAMP} (?P<host>\S+) {_TAG}(?P<msg>.*)")
_ISO_RE = re.compile(rf"{_ISO_STAMP} (?P<host>\S+) {_TAG}(?P<msg>.*)")


@dataclass(frozen=True, slots=True)
class LogLine:
    """One syslog line: when, which Postfix service (``smtp``, ``cleanup``), pid, text."""

    time: datetime
    program: str
    pid: int
    message: str

    @property
    def service(self) -> str:
        return self.program.rsplit("/", 1)[-1]


_STAMPS: dict[tuple[str, ...], datetime | None] = {}


def _bsd_time(m: re.Match[str], now: datetime, tz: tzinfo) -> datetime | None:
    # a busy log has thousands of lines per second stamp: convert each stamp once
    key = (m["mon"], m["day"], m["h"], m["m"], m["s"], str(now.date()), str(tz))
    if key in _STAMPS:
        return _STAMPS[key]
    if len(_STAMPS) > 4096:
        _STAMPS.clear()
    t = _STAMPS[key] = _bsd_time_uncached(m, now, tz)
    return t


def _bsd_time_uncached(m: re.Match[str], now: datetime, tz: tzinfo) -> datetime | None:
    month = _MONTHS.get(m["mon"])
    if month is None:
        return None
    local_now = now.astimezone(tz)
    for year in (local_now.year, local_now.year - 1):
        try:
            t = datetime(year, month, int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"]),
                         tzinfo=tz)
        except ValueError:
            continue
        # a line is never from the future: a December line read in January is last year's
        if t <= local_now + timedelta(days=1):
            return t.astimezone(UTC)
    return None


def _iso_time(text: str) -> datetime | None:
    t = text.replace(" ", "T")
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    if "." in t:  # Python takes at most 6 fraction digits
        head, _, frac = t.partition(".")
        digits = re.match(r"\d+", frac)
        if digits:
            t = head + "." + digits.group()[:6] + frac[len(digits.group()):]
    try:
        parsed = datetime.fromisoformat(t)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def parse_syslog_line(line: str, *, now: datetime, tz: tzinfo = UTC) -> LogLine | None:
    """A Postfix syslog line (``Mon DD HH:MM:SS host prog[pid]: text`` or with an RFC 3339
    time stamp), or None for anything else. Never raises for odd input."""
    if not isinstance(line, str):
        return None
    line = line[:MAX_LINE].rstrip("\r\n")
    m = _BSD_RE.match(line)
    if m is not None:
        t = _bsd_time(m, now, tz)
    else:
        m = _ISO_RE.match(line)
        if m is None:
            return None
        t = _iso_time(m["ts"])
    if t is None:
        return None
    return LogLine(t, m["prog"], int(m["pid"]), m["msg"])


def journal_line(entry: Mapping[str, Any], *, now: datetime) -> LogLine | None:
    """A journald JSON entry (``journalctl -o json``) as a :class:`LogLine`, or None."""
    if not isinstance(entry, Mapping):
        return None
    program = entry.get("SYSLOG_IDENTIFIER")
    message = entry.get("MESSAGE")
    pid = entry.get("SYSLOG_PID") or entry.get("_PID")
    if isinstance(message, list) and all(isinstance(b, int) for b in message[:MAX_LINE]):
        message = bytes(b & 0xFF for b in message[:MAX_LINE]).decode("utf-8", "replace")
    if not isinstance(program, str) or not isinstance(message, str):
        return None
    try:
        pid_value = int(str(pid))
    except ValueError:
        return None
    try:
        micros = int(str(entry.get("__REALTIME_TIMESTAMP")))
        t = datetime.fromtimestamp(micros / 1_000_000, UTC)
    except (ValueError, OverflowError, OSError):
        t = now
    return LogLine(t, program, pid_value, message[:MAX_LINE])


# --- sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogSession:
    """One SMTP session of Postfix's ``smtp`` client, rebuilt from its log lines.

    ``problems`` pairs each :class:`Problem` with the Postfix text that named it.
    ``delivered`` is True/False when the session ended with a status line, None when it
    ended with a non-final failure (Postfix went on to the next MX).
    """

    time: datetime
    domain: str
    queue_id: str | None
    mx_host: str | None
    receiving_ip: str | None
    tls: TlsLevel | None
    problems: tuple[tuple[Problem, str], ...] = ()
    delivered: bool | None = None

    @property
    def problem_set(self) -> set[Problem]:
        return {p for p, _ in self.problems}


@dataclass(slots=True)
class _Open:
    started: datetime
    host: str | None = None
    ip: str | None = None
    tls: TlsLevel | None = None
    reused: bool = False
    problems: list[tuple[Problem, str]] = field(default_factory=list)
    queue_id: str | None = None
    delivered: bool | None = None

    def add(self, problem: Problem, text: str) -> None:
        if len(self.problems) < 8 and all(p != problem for p, _ in self.problems):
            self.problems.append((problem, text[:MAX_REASON]))

    @property
    def counts(self) -> bool:
        """Did TLS get negotiated or fail? (a connection that never got that far is no
        TLS session: connection refused, greeting timeout, ...)"""
        return not self.reused and (self.tls is not None or bool(self.problems))


def _relay(relay: str) -> tuple[str | None, str | None]:
    m = _RELAY_RE.fullmatch(relay)
    if m is None:
        return None, None
    return m["host"], m["ip"]


_LEVELS = {level.value: level for level in TlsLevel}


def _is_ip_literal(host: str | None) -> bool:
    if not host or not (host[0].isdigit() or ":" in host or host[0] == "["):
        return False  # a host name (a name starting with a digit is checked below)
    try:
        normalize_ip(host)
    except ResultError:
        return False
    return True


_MISSING: Any = object()
_MAX_STAMPS = 4096  # distinct time stamps remembered (one per second of log)
_MAX_NAMES = 10_000  # host names, addresses and program names remembered


def _iso_key(ts: str) -> tuple[str, int] | None:
    """An RFC 3339 stamp without the digits of its fraction, and the microseconds they
    say (at most 6 digits kept, as :func:`_iso_time` keeps them); None unless the stamp
    is ASCII and the fraction, if any, 1 to 9 digits (what _ISO_RE takes)."""
    if not ts.isascii() or len(ts) < 19:
        return None
    if ts[19:20] != ".":
        return ts, 0
    tail = ts[20:]
    zone = tail.lstrip("0123456789")
    digits = len(tail) - len(zone)
    if not 0 < digits <= 9:
        return None
    return ts[:19] + zone, int(tail[:min(digits, 6)].ljust(6, "0"))


class _Stamps:
    """Time stamp texts to UTC datetimes, each distinct text converted once (a busy log
    has thousands of lines per second stamp), and the halves of line heads already read.
    A traditional stamp takes its year from ``now``, so those are remembered for one day
    of ``now`` only. All bounded; the results are those of :func:`parse_syslog_line`."""

    __slots__ = ("bsd", "day", "iso", "seconds", "tags", "traditional", "tz")

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.day: Any = None
        self.bsd: dict[str, datetime | None] = {}
        self.iso: dict[str, datetime | None] = {}
        # The two halves of line heads already read whole by the expressions (see
        # PostfixLogParser._feed_lines), so that a line made of known halves needs none:
        # traditional stamps of 15 characters ("May  1 10:00:01") -> time;
        self.traditional: dict[str, datetime] = {}
        # RFC 3339 stamps, the digits of their fraction left out -> the whole second in
        # UTC (year, month, day, hour, minute, second);
        self.seconds: dict[str, tuple[int, ...]] = {}
        # tags with the host before them (" mta postfix/smtp[1234]: ") -> service, pid.
        self.tags: dict[str, tuple[str, int]] = {}

    def valid_for(self, now: datetime) -> dict[str, datetime | None]:
        day = now.date()
        if day != self.day:
            self.day = day
            self.bsd = {}
            self.traditional = {}
        return self.bsd

    def learn(self, line: str, m: re.Match[str], t: datetime, service: str, pid: int) -> None:
        """Remember the halves of a head the expressions read (``m``, its message starting
        at the first "]: " of the line)."""
        host = m.start("host")
        for memo in (self.tags, self.traditional, self.seconds):
            if len(memo) >= _MAX_NAMES:
                memo.clear()
        self.tags[line[host - 1:m.start("msg")]] = (service, pid)
        if m.re is _BSD_RE:
            if host == 16 and m.end("stamp") == 15:  # no fraction, the day padded
                self.traditional[line[:15]] = t
            return
        key = _iso_key(m["ts"])
        if key is not None:
            self.seconds[key[0]] = (t.year, t.month, t.day, t.hour, t.minute, t.second)

    def bsd_time(self, stamp: str, m: re.Match[str], now: datetime) -> datetime | None:
        if len(self.bsd) >= _MAX_STAMPS:
            self.bsd.clear()
        t = self.bsd[stamp] = _bsd_time_uncached(m, now, self.tz)
        return t

    def iso_time(self, ts: str) -> datetime | None:
        """``_iso_time(ts)``, with the second and the zone converted once and the
        fraction (at most 6 digits are kept, as there) added."""
        found = _iso_key(ts)
        if found is None:
            return _iso_time(ts)  # digits of other scripts: the careful way
        key, micro = found
        base = self.iso.get(key, _MISSING)
        if base is _MISSING:
            if len(self.iso) >= _MAX_STAMPS:
                self.iso.clear()
            base = self.iso[key] = _iso_time(key)
        if base is None or not micro:
            return base  # type: ignore[no-any-return]
        # (the constructor is quicker than replace(); base is in UTC, zones are whole
        # minutes, so base has no microseconds of its own)
        return datetime(base.year, base.month, base.day, base.hour, base.minute, base.second,
                        micro, UTC)


_Folded = dict[tuple[Any, ...], list[Any]]  # fold key -> [first session, count]
_Sink = list[LogSession] | _Folded


def fold_key(s: LogSession) -> tuple[Any, ...]:
    """What makes sessions alike for :func:`fold_sessions`: the UTC day and everything
    :func:`session_result` reads but the time."""
    t = s.time
    return (t.toordinal() if t.tzinfo is UTC else t.astimezone(UTC).toordinal(),
            s.domain, s.mx_host, s.receiving_ip, s.tls, s.problems, s.delivered)


def fold_sessions(sessions: Iterable[LogSession]) -> list[tuple[LogSession, int]]:
    """Sessions alike in everything :func:`session_result` reads, on the same UTC day, as
    the first of them and their number: each maps to the same result but for its time,
    and a TLSRPT report counts sessions per UTC day (RFC 8460 §4.1), so one result with
    a count stands for all of them. (The queue id is not read: our own report mails
    were dropped before.)"""
    out: _Folded = {}
    for s in sessions:
        key = fold_key(s)
        folded = out.get(key)
        if folded is None:
            out[key] = [s, 1]
        else:
            folded[1] += 1
    return [(s, n) for s, n in out.values()]


class PostfixLogParser:
    """Rebuilds ``smtp`` client sessions from Postfix log lines (pure, bounded state).

    ``feed(line, now)`` returns the sessions the line completed; :meth:`feed_many` does
    the same for many lines at once (what a log follower reads), faster. ``feed_line``
    takes an already split :class:`LogLine`. ``own_message_id`` says whether a
    ``message-id`` is one of our report mails; their sessions are dropped. ``stats``
    counts what was seen.

    How many lines a second it takes: most lines of a mail log are not the ``smtp``
    client's (``smtpd``, ``qmgr``, ``cleanup``, other daemons) and are passed over by
    substring tests before any regular expression; the head of a line of interest is
    read from remembered halves (by one expression the first time), its message sorted
    by one more; time stamps, program names, host names and addresses are converted once
    each (bounded memos), not once per line. See docs/performance.md.
    """

    def __init__(self, *, tz: tzinfo = UTC,
                 own_message_id: Callable[[str], bool] | None = None,
                 services: tuple[str, ...] = DEFAULT_SERVICES) -> None:
        self.tz = tz
        self.own_message_id = own_message_id or is_report_message_id
        self.services = services
        self._open: OrderedDict[int, _Open] = OrderedDict()
        self._pending: OrderedDict[int, list[_Open]] = OrderedDict()
        self._last_closed: OrderedDict[int, tuple[str, str]] = OrderedDict()
        self._own: OrderedDict[str, None] = OrderedDict()
        self.stats = {"lines": 0, "postfix_lines": 0, "sessions": 0, "own_dropped": 0,
                      "expired": 0}
        # A line of service S has "S[" right after its program name (``postfix/S[pid]``),
        # so a line holding none of these strings is nobody's we read.
        self._needles = tuple(f"{service}[" for service in services)
        self._stamps = _Stamps(tz)
        self._programs: dict[str, str] = {}
        self._relays: dict[str, tuple[str | None, str | None]] = {}
        self._domains: dict[str, str | None] = {}
        self._peers: dict[tuple[str | None, str | None], tuple[str | None, str | None] | None] \
            = {}

    # -- input ------------------------------------------------------------------------------

    def feed(self, line: str, now: datetime) -> list[LogSession]:
        """One syslog text line."""
        return self.feed_many((line,), now)

    def feed_many(self, lines: Iterable[str], now: datetime) -> list[LogSession]:
        """Syslog text lines, in order: the sessions they completed. The same sessions
        and state as :meth:`feed` line by line (and as :func:`parse_syslog_line` with
        :meth:`feed_line`), at a fraction of the cost per line."""
        out: list[LogSession] = []
        self._feed_lines(lines, now, out)
        return out

    def feed_counted(self, lines: Iterable[str], now: datetime
                     ) -> list[tuple[LogSession, int]]:
        """:meth:`feed_many`, the sessions folded as :func:`fold_sessions` folds them
        (the first of each kind, and how many there were), without building the others."""
        out: _Folded = {}
        self._feed_lines(lines, now, out)
        return [(s, n) for s, n in out.values()]

    def _feed_lines(self, lines: Iterable[str], now: datetime, out: _Sink) -> None:
        # the first two needles by name (the default services are two), padded with a
        # needle that lets through only what the cleanup test would let through anyway
        n0, n1 = (self._needles + self._needles[:1] + ("cleanup[",))[:2]
        more = self._needles[2:]
        services = self.services
        own_default = self.own_message_id is is_report_message_id
        programs = self._programs
        stamps = self._stamps
        bsd = stamps.valid_for(now)
        traditional, seconds, tags = stamps.traditional, stamps.seconds, stamps.tags
        bsd_match = _BSD_RE.match
        smtp = self._smtp
        count = postfix = 0
        for line in lines:
            count += 1
            if not isinstance(line, str):
                continue
            # Cheap rejection first: a line of none of our services, and no cleanup line
            # that could name a report mail of ours, can change nothing.
            if n0 not in line and n1 not in line and not (
                    more and any(needle in line for needle in more)) and (
                    "cleanup[" not in line or "message-id=" not in line
                    or (own_default and "tlsrpt." not in line.lower())):
                continue
            if len(line) > MAX_LINE:
                line = line[:MAX_LINE]
            line = line.rstrip("\r\n")
            # A head is a stamp, then " host tag: ", and ends at the first "]: " of the
            # line (no part of it holds one before the end of the tag: stamps have no
            # "]", the host no space). Its form leaves one way to read it, so a line
            # whose stamp and " host tag: " were both read before (a stamp has many
            # lines, a tag many stamps) is read from the memos, without an expression.
            end = line.find("]: ") + 3
            tag = None
            if end > 2:
                if line[15:16] == " ":  # a traditional stamp, the day padded to two
                    t = traditional.get(line[:15])
                    if t is not None:
                        tag = tags.get(line[15:end])
                else:
                    space = line.find(" ", 19)  # (RFC 3339 may have a space at 10)
                    if 19 <= space < end:
                        key = _iso_key(line[:space])
                        if key is not None:
                            second = seconds.get(key[0])
                            if second is not None:
                                tag = tags.get(line[space:end])
                                t = datetime(*second, key[1], UTC)
            if tag is not None:
                service, pid = tag
                msg = line[end:]
                if "\n" in msg:  # the message of a line ends at a newline
                    msg = msg[:msg.index("\n")]
            else:
                # (a traditional stamp starts with a capital: others are not tried on it)
                m = bsd_match(line) if "A" <= line[:1] <= "Z" else None
                if m is not None:
                    stamp, prog, pid_text, msg = m.group("stamp", "prog", "pid", "msg")
                    t = bsd.get(stamp, _MISSING)
                    if t is _MISSING:
                        t = stamps.bsd_time(stamp, m, now)
                else:
                    m = _ISO_RE.match(line)
                    if m is None:
                        continue
                    ts, prog, pid_text, msg = m.group("ts", "prog", "pid", "msg")
                    t = stamps.iso_time(ts)
                if t is None:
                    continue
                service = programs.get(prog)
                if service is None:
                    if len(programs) >= _MAX_NAMES:
                        programs.clear()
                    service = programs[prog] = prog.rsplit("/", 1)[-1]
                pid = int(pid_text)
                if m.start("msg") == end:
                    stamps.learn(line, m, t, service, pid)
            if service == "cleanup":
                self._cleanup(msg)
            elif service in services:
                postfix += 1
                smtp(pid, t, msg, out)
        self.stats["lines"] += count
        self.stats["postfix_lines"] += postfix

    def feed_journal(self, entry: Mapping[str, Any], now: datetime) -> list[LogSession]:
        """One journald JSON entry."""
        self.stats["lines"] += 1
        parsed = journal_line(entry, now=now)
        return [] if parsed is None else self.feed_line(parsed)

    def feed_line(self, line: LogLine) -> list[LogSession]:
        service = line.service
        if service == "cleanup":
            self._cleanup(line.message)
            return []
        if service not in self.services:
            return []
        self.stats["postfix_lines"] += 1
        out: list[LogSession] = []
        message = line.message
        if "\n" in message:
            # the expressions read a message up to its first newline (a journal entry
            # may hold more); a warning's text is read whole
            self._smtp(line.pid, line.time, message, out, message[:message.index("\n")])
        else:
            self._smtp(line.pid, line.time, message, out)
        return out

    def expire(self, now: datetime) -> int:
        """Forget sessions that never saw their end (lost lines, a crashed process)."""
        cutoff = now - SESSION_TIMEOUT
        dropped = 0
        for pid in [p for p, s in self._open.items() if s.started < cutoff]:
            del self._open[pid]
            dropped += 1
        for pid in [p for p, lst in self._pending.items() if not lst or lst[-1].started < cutoff]:
            dropped += len(self._pending.pop(pid))
        self.stats["expired"] += dropped
        return dropped

    # -- cleanup: message-ids of our own report mails -----------------------------------------

    def _cleanup(self, message: str) -> None:
        m = _QID_RE.match(message)
        if m is None:
            return
        mid = _MESSAGE_ID_RE.match(m["rest"])
        if mid is not None and self.own_message_id(mid["mid"]):
            self._own[m["qid"]] = None
            while len(self._own) > MAX_MESSAGE_IDS:
                self._own.popitem(last=False)

    # -- smtp: sessions ---------------------------------------------------------------------------

    def _start(self, pid: int, t: datetime, host: str | None, ip: str | None) -> _Open:
        self._open[pid] = s = _Open(t, host, ip)
        self._open.move_to_end(pid)
        if len(self._open) > MAX_PROCESSES:
            while len(self._open) > MAX_PROCESSES:
                self._open.popitem(last=False)
        return s

    def _park(self, pid: int, s: _Open) -> None:
        """A session that ended before its recipient domain is known."""
        if not s.counts:
            return
        lst = self._pending.setdefault(pid, [])
        lst.append(s)
        self._pending.move_to_end(pid)
        del lst[:-MAX_PENDING]
        while len(self._pending) > MAX_PROCESSES:
            self._pending.popitem(last=False)

    def _smtp(self, pid: int, t: datetime, msg: str, out: _Sink,
              first_line: str | None = None) -> None:
        current = self._open.get(pid)
        text = msg if first_line is None else first_line
        m = _SMTP_RE.match(text)
        kind = None if m is None else m.lastgroup

        if kind == "port" or kind == "ip":  # a TLS line: its last group is the address
            level, how, host, ip = m.group("level", "how", "host", "ip")  # type: ignore[union-attr]
            if current is not None and current.tls is None and not current.reused \
                    and current.host == host and current.ip in (None, ip):
                s = current  # the verification lines (or a TLSA warning) came first
                s.ip = ip
            else:
                if current is not None:
                    self._park(pid, current)
                s = self._start(pid, t, host, ip)
            s.tls = _LEVELS[level]
            s.reused = how == "reused"
            self._last_closed.pop(pid, None)
            return

        if kind == "why":
            host, ip, why = m.group("host_v", "ip_v", "why")  # type: ignore[union-attr]
            if current is None or current.tls is not None or current.reused \
                    or current.host != host or current.ip not in (None, ip):
                if current is not None:
                    self._park(pid, current)
                current = self._start(pid, t, host, ip)
            current.ip = ip
            current.add(_verify_problem(why), f"certificate verification failed: {why}")
            self._last_closed.pop(pid, None)
            return

        if m is None:
            # warnings without a queue id ("warning: ... all TLSA records unusable ...")
            found = problems_in(msg)
            if found:
                if current is None:
                    host, ip = self._host_in(msg)
                    current = self._start(pid, t, host, ip)
                for p in found:
                    current.add(p, msg)
            return
        # (the status expression read where the rest begins, not on a copy of it: the
        # text holds no newline, so its end is the rest's end)
        status = _STATUS_RE.match(text, m.start("rest"))
        if status is None:
            self._non_final(pid, t, m["qid"], m["rest"], current)
        else:
            self._status(pid, t, m["qid"], status, current, out)

    def _non_final(self, pid: int, t: datetime, qid: str, text: str,
                   current: _Open | None) -> None:
        # Postfix gave up on this MX and goes on to the next one (same delivery, same pid).
        found = problems_in(text)
        if current is None:
            if not found:
                return
            host, ip = self._host_in(text)
            current = self._start(pid, t, host, ip)
        for p in found:
            current.add(p, text)
        current.queue_id = qid
        del self._open[pid]
        self._park(pid, current)
        self._last_closed.pop(pid, None)

    @staticmethod
    def _host_in(text: str) -> tuple[str | None, str | None]:
        m = _HOST_IN_TEXT_RE.search(text)
        if m is not None:
            return m["host"], m["ip"]
        m = _TLSA_HOST_RE.search(text)
        if m is not None:
            return m["host"], None
        m = _LEADING_HOST_RE.match(text)
        if m is not None and "." in m["host"]:
            return m["host"], m["ip"]
        return None, None

    def _status(self, pid: int, t: datetime, qid: str, status: re.Match[str],
                current: _Open | None, out: _Sink) -> None:
        rcpt, relay, state, text = status.group("rcpt", "relay", "status", "text")
        text = text or ""
        domain = rcpt.rpartition("@")[2]
        peer = self._relays.get(relay)
        if peer is None:
            if len(self._relays) >= _MAX_NAMES:
                self._relays.clear()
            peer = self._relays[relay] = _relay(relay)
        host, ip = peer
        key = (qid, relay)
        if current is None and self._last_closed.get(pid) == key:
            return  # another recipient of a session already counted
        # (the quick test of problems_in first: most status texts name no problem)
        found = problems_in(text) if "TLS" in text or "certificate not" in text \
            or "mismatch" in text else ()
        if current is None:
            if host is None:
                if not found:  # relay=none: no connection (DNS, suspended, ...)
                    self._flush_pending(pid, qid, domain, out)
                    return
                host, ip = self._host_in(text)
            current = self._start(pid, t, host, ip)
        elif current.host is None:
            current.host, current.ip = host, ip
        for p in found:
            current.add(p, text)
        current.queue_id = qid
        current.delivered = state == "sent"
        del self._open[pid]
        self._last_closed[pid] = key
        self._last_closed.move_to_end(pid)
        if len(self._last_closed) > MAX_PROCESSES:  # pids are reused: keep the latest only
            self._last_closed.popitem(last=False)
        if pid in self._pending:
            self._flush_pending(pid, qid, domain, out)
        # current.counts, or a delivery without TLS
        if not current.reused and (current.tls is not None or current.problems
                                   or current.delivered):
            self._session(current, domain, out)

    def _flush_pending(self, pid: int, qid: str, domain: str, out: _Sink) -> None:
        pending = self._pending.pop(pid, None)
        if pending:
            for s in pending:
                if s.queue_id in (None, qid):
                    self._session(s, domain, out)

    def _session(self, s: _Open, domain: str, out: _Sink) -> None:
        if s.queue_id is not None and s.queue_id in self._own:
            self.stats["own_dropped"] += 1
            return
        # content filters and address literals have no policy domain; names that do not
        # normalize are no session either (each name and address checked once)
        name = self._domains.get(domain, _MISSING)
        if name is _MISSING:
            name = self._domain(domain)
        if name is None:
            return
        peer = self._peers.get((s.host, s.ip), _MISSING)
        if peer is _MISSING:
            peer = self._peer(s.host, s.ip)
        if peer is None:
            return
        self.stats["sessions"] += 1
        problems = tuple(s.problems)
        if type(out) is dict:
            # the key of fold_sessions, from the parts at hand
            t = s.started
            key = (t.toordinal() if t.tzinfo is UTC else t.astimezone(UTC).toordinal(),
                   name, peer[0], peer[1], s.tls, problems, s.delivered)
            folded = out.get(key)
            if folded is not None:
                folded[1] += 1
                return
            out[key] = [LogSession(s.started, name, s.queue_id, peer[0], peer[1], s.tls,
                                   problems, s.delivered), 1]
        else:
            out.append(LogSession(s.started, name, s.queue_id, peer[0],  # type: ignore[union-attr]
                                  peer[1], s.tls, problems, s.delivered))

    def _domain(self, domain: str) -> str | None:
        if len(self._domains) >= _MAX_NAMES:
            self._domains.clear()
        name: str | None = None
        if domain and not _is_ip_literal(domain.strip("[]")):
            try:
                name = normalize_domain_name(domain, "recipient domain")
            except ResultError:
                name = None
        self._domains[domain] = name
        return name

    def _peer(self, host: str | None, ip: str | None
              ) -> tuple[str | None, str | None] | None:
        if len(self._peers) >= _MAX_NAMES:
            self._peers.clear()
        peer: tuple[str | None, str | None] | None = None
        if not _is_ip_literal(host):
            try:
                peer = (None if host is None else normalize_domain_name(host, "MX host"),
                        None if ip is None else normalize_ip(ip))
            except ResultError:
                peer = None
        self._peers[(host, ip)] = peer
        return peer


# --- sessions to results -------------------------------------------------------------------------


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
    ``sts_failure``: the discovery failed (``sts-policy-fetch-error``,
    ``sts-policy-invalid``, ``sts-webpki-invalid``): every session is reported as that
    failure (RFC 8460 §4.3.2.2) under an ``sts`` policy without policy strings.
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
        return fail(context.sts_failure)
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
