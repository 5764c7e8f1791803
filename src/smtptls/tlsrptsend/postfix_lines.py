"""What Postfix logs about TLS, and its syslog and journald lines, for the log mapping.

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

Traditional syslog time stamps have no year and no zone: a line's time takes the year
from the ``now`` it is given and the zone from ``tz``. Report mails of our own are
recognised by their ``message-id`` (:func:`report_message_id`). Pure: no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

__all__ = [
    "MAX_LINE",
    "LogLine",
    "Problem",
    "TlsLevel",
    "is_report_message_id",
    "journal_line",
    "parse_syslog_line",
    "problems_in",
    "report_message_id",
]

MAX_LINE = 16 * 1024  # longer lines are cut (Postfix caps its own at 2 KiB + names)
MAX_REASON = 200  # characters of Postfix text kept as failure-reason-code


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


# Fast path kept (with PostfixLogParser._feed_lines): bench_tlsrpt_collect.py, ~2.8x the
# lines/s of parse_syslog_line.
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

