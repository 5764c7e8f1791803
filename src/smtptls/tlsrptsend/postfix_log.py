"""Postfix logs to TLS session results (RFC 8460 §4.3), for Postfix without libtlsrpt.

Two pure steps:

1. :class:`PostfixLogParser` reads log lines (syslog text, or journald JSON entries) and
   rebuilds SMTP sessions of the ``smtp`` client (:class:`LogSession`): the receiving
   MX and address, the TLS trust level Postfix logged, the problems it logged, and the
   recipient domain. Lines are correlated by the ``smtp`` process id (one process runs
   one delivery at a time) and the queue id of the delivery.
2. :func:`~smtptls.tlsrptsend.postfix_results.session_result` maps a session and the
   policy that applied to its domain (:class:`~smtptls.tlsrptsend.postfix_results.
   PolicyContext`, which the collector obtains from the policy daemon's decision or the
   MTA-STS policy cache) to a :class:`~smtptls.tlsrptsend.results.SessionResult` with a
   §4.3 result type.

What the lines mean is in :mod:`smtptls.tlsrptsend.postfix_lines`. A session that
delivered without any TLS line is a plaintext session, reported as
``starttls-not-supported`` — which is why ``smtp_tls_loglevel`` must be 1 or more (the
TLS line is then always there). Sessions to an IP-literal relay (content filters,
``[127.0.0.1]:10025``) and connections reused from Postfix's connection cache (no new
TLS negotiation) are not counted. Report mails of our own (recognised by their
``message-id``, see :func:`~smtptls.tlsrptsend.postfix_lines.is_report_message_id`) are
never reported on.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from smtptls.errors import ResultError
from smtptls.tlsrptsend.postfix_lines import (
    _BSD_RE,
    _HOST_IN_TEXT_RE,
    _ISO_RE,
    _LEADING_HOST_RE,
    _MAX_NAMES,
    _MESSAGE_ID_RE,
    _MISSING,
    _QID_RE,
    _RELAY_RE,
    _SMTP_RE,
    _STATUS_RE,
    _TLSA_HOST_RE,
    MAX_LINE,
    MAX_REASON,
    LogLine,
    Problem,
    TlsLevel,
    _iso_key,
    _Stamps,
    _verify_problem,
    is_report_message_id,
    journal_line,
    problems_in,
)
from smtptls.tlsrptsend.results import normalize_domain_name, normalize_ip

__all__ = [
    "LogSession",
    "PostfixLogParser",
    "fold_key",
    "fold_sessions",
]

MAX_PROCESSES = 10_000  # smtp processes tracked at once
MAX_PENDING = 32  # closed sessions per process waiting for their recipient domain
MAX_MESSAGE_IDS = 100_000  # queue ids remembered as our own report mails
SESSION_TIMEOUT = timedelta(minutes=30)  # open/pending sessions older than this are dropped
DEFAULT_SERVICES = ("smtp", "relay")

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

    # Fast path kept: bench_tlsrpt_collect.py's mix log, ~214,000 lines/s here against
    # ~76,000 through parse_syslog_line + feed_line.
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
