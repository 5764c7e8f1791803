"""The fast reading of Postfix logs gives what the line-by-line reading gives.

:meth:`PostfixLogParser.feed_many` / :meth:`~PostfixLogParser.feed_counted` pass over
lines by a substring test, remember time stamps, names and addresses, and sort a line
with one expression; :class:`LogFollower` decodes a whole chunk at once;
:class:`LogIngest` hands one result per kind of session with a count to the collector.
Each of these is checked here against the plain way (``parse_syslog_line`` +
``feed_line``, one result per session), on tables and on generated input.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from send_helpers import STS_LINES

from smtptls.services.collector import (
    Collector,
    LogFollower,
    LogIngest,
    SendingAddress,
    StaticPolicyLookup,
)
from smtptls.store.results_base import Batch, fold
from smtptls.tlsrpt.report import ResultType
from smtptls.tlsrptsend import postfix_lines as pl
from smtptls.tlsrptsend import postfix_log as plog
from smtptls.tlsrptsend.postfix_lines import (
    MAX_LINE,
    Problem,
    TlsLevel,
    parse_syslog_line,
    problems_in,
    report_message_id,
)
from smtptls.tlsrptsend.postfix_log import LogSession, PostfixLogParser, fold_sessions
from smtptls.tlsrptsend.postfix_results import PolicyContext, session_result

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CIPHER = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
MX1 = "mx1.mail.example.com[192.0.2.10]:25"
MX2 = "mx2.mail.example.com[192.0.2.11]:25"
OWN_MID = report_message_id("abc.0", "mta.sender.example")
CONTEXT = PolicyContext("example.com", "sts", "testing", STS_LINES, ("*.mail.example.com",))


def status(qid: str, rcpt: str, relay: str, state: str, text: str) -> str:
    return (f"{qid}: to=<{rcpt}>, relay={relay}, delay=0.4, delays=0.1/0/0.2/0.1, "
            f"dsn=2.0.0, status={state} ({text})")


def reference(lines, now: datetime = NOW, tz=UTC, parser: PostfixLogParser | None = None):
    """The line-by-line reading: ``parse_syslog_line`` then ``feed_line``."""
    parser = parser or PostfixLogParser(tz=tz)
    out = []
    for line in lines:
        parser.stats["lines"] += 1
        parsed = parse_syslog_line(line, now=now, tz=tz)
        if parsed is not None:
            out += parser.feed_line(parsed)
    return out, parser


def state(parser: PostfixLogParser):
    return (dict(parser.stats), list(parser._open.items()), list(parser._pending.items()),
            dict(parser._last_closed), list(parser._own))


# --- generated logs ----------------------------------------------------------------------------

MESSAGES = [
    f"Verified TLS connection established to {MX1}: {CIPHER}",
    f"Untrusted TLS connection established to {MX2}: {CIPHER}",
    f"Trusted TLS connection reused to {MX1}: {CIPHER}",
    f"Anonymous TLS connection established to {MX1}",
    f"certificate verification failed for {MX1}: untrusted issuer /CN=x",
    f"server certificate verification failed for {MX2}: num=62:hostname mismatch",
    "ABCDEF1234: Server certificate not verified",
    status("ABCDEF1234", "bob@example.com", MX1, "sent", "250 2.0.0 Ok: queued as 1234"),
    status("ABCDEF1234", "bob@example.com", MX2, "deferred", "Server certificate not trusted"),
    status("ABCDEF1235", "carol@EXAMPLE.com", MX1, "bounced", "550 no such user"),
    status("ABCDEF1236", "x@[192.0.2.1]", "192.0.2.1[192.0.2.1]:25", "sent", "250 Ok"),
    status("ABCDEF1237", "bob@example.net", "none", "deferred", "TLSA lookup error for a.b:25"),
    "ABCDEF1234: TLS is required, but was not offered by host mx[192.0.2.1]",
    "ABCDEF1234: host mx1.mail.example.com[192.0.2.10] said: 451 try again",
    "warning: mx1.example.net[192.0.2.20]:25: all TLSA records unusable",
    "connect to mx1.mail.example.com[192.0.2.10]:25: Connection refused",
    f"ABCDEF1234: message-id=<{OWN_MID}>",
    f"ABCDEF1234: message-id=<{OWN_MID.upper()}>",
    "ABCDEF1235: message-id=<20240501.x@sender.example>",
    "ABCDEF1234: from=<alice@sender.example>, size=1234, nrcpt=1 (queue active)",
    "ABCDEF1234: removed",
    f"Anonymous TLS connection established from client.example[192.0.2.50]: {CIPHER}",
]
PROGRAMS = ["postfix/smtp", "postfix/relay", "postfix/cleanup", "postfix/qmgr", "postfix/smtpd",
            "postfix/lmtp", "postfix-out/smtp", "smtp", "opendkim"]
STAMPS = ["May  1 10:00:01", "May  1 10:00:02.123456", "May 1 11:59:59", "Dec 31 23:59:59",
          "Feb 30 10:00:00", "2024-05-01T10:00:01Z", "2024-05-01T12:00:01.5+02:00",
          "2024-05-01 10:00:01.123456789+0000", "2024-05-01T10:00:01.000001-01:30",
          "2024-05-01T10:00:01", "2024-05-01T25:00:00Z", "2024-05-01T10:00:01.1234567Z"]


@st.composite
def log_lines(draw):
    stamp = draw(st.one_of(st.sampled_from(STAMPS), st.builds(
        "2024-05-01T10:00:01{}{}".format,
        st.sampled_from(["", ".", ".5", ".05", ".123456", ".1234567", ".123456789",
                         ".1234567890", ".\u0663", ".12\u0663"]),
        st.sampled_from(["Z", "+02:00", "-0130", ""]))))
    program = draw(st.sampled_from(PROGRAMS))
    pid = draw(st.integers(1, 4))
    message = draw(st.one_of(st.sampled_from(MESSAGES), st.text(max_size=60)))
    end = draw(st.sampled_from(["", "", "\r", "\r\n", "\n", "\nMay  1 10:00:03 x"]))
    line = f"{stamp} mta {program}[{pid}]: {message}{end}"
    return draw(st.sampled_from([line, line, line, line[: draw(st.integers(0, 40))],
                                 draw(st.text(max_size=40))]))


@pytest.mark.parametrize("tz", [UTC, timezone(timedelta(hours=2))], ids=["utc", "plus-2h"])
@pytest.mark.parametrize("now", [NOW, datetime(2025, 1, 1, 0, 5, tzinfo=UTC)],
                         ids=["may", "new-year"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(log_lines(), max_size=40))
def test_feed_many_is_the_line_by_line_reading(tz, now, lines):
    fast = PostfixLogParser(tz=tz)
    got = fast.feed_many(lines, now)
    want, slow = reference(lines, now, tz)
    assert got == want
    assert state(fast) == state(slow)


@settings(max_examples=150, deadline=None)
@given(st.lists(log_lines(), max_size=40), st.integers(1, 5))
def test_feed_counted_is_fold_of_feed_many(lines, reads):
    """Read in any number of pieces: the folded sessions are those of each piece."""
    counted_parser, plain_parser = PostfixLogParser(), PostfixLogParser()
    step = max(1, len(lines) // reads)
    for i in range(0, len(lines), step):
        piece = lines[i:i + step]
        counted = counted_parser.feed_counted(piece, NOW)
        assert counted == fold_sessions(plain_parser.feed_many(piece, NOW))
    assert state(counted_parser) == state(plain_parser)


def test_feed_is_feed_many_of_one_line():
    lines = [f"May  1 10:00:0{i} mta postfix/smtp[7]: {m}" for i, m in
             enumerate((MESSAGES[0], MESSAGES[7]))]
    one = PostfixLogParser()
    got = [s for line in lines for s in one.feed(line, NOW)]
    assert got == PostfixLogParser().feed_many(lines, NOW)
    assert [s.queue_id for s in got] == ["ABCDEF1234"]


def test_non_text_items_are_counted_and_skipped():
    parser = PostfixLogParser()
    assert parser.feed_many([None, b"May  1 10:00:00 mta postfix/smtp[1]: x", 5], NOW) == []
    assert parser.stats["lines"] == 3 and parser.stats["postfix_lines"] == 0


# --- the substring test before any expression --------------------------------------------------

@pytest.mark.parametrize("line", [
    pytest.param("May  1 10:00:00 mta postfix/smtpd[9]: connect from c.example[192.0.2.9]",
                 id="smtpd"),
    pytest.param("May  1 10:00:00 mta postfix/qmgr[9]: ABCDEF1234: from=<a@b.example>, size=1",
                 id="qmgr"),
    pytest.param("May  1 10:00:00 mta postfix/cleanup[9]: ABCDEF1234: message-id=<1@b.example>",
                 id="cleanup-other-mail"),
    pytest.param("May  1 10:00:00 mta postfix/lmtp[9]: ABCDEF1234: to=<a@b.example>, "
                 f"relay={MX1}, delay=1, status=sent (250 Ok)", id="lmtp"),
    pytest.param("May  1 10:00:00 mta dovecot[9]: imap-login: Login: user=<a@b.example>",
                 id="other-daemon"),
])
def test_prefilter_passes_over_lines_of_other_services(line, monkeypatch):
    calls = []
    for name in ("_BSD_RE", "_ISO_RE"):  # as the parser's module sees them
        regex = getattr(plog, name)
        monkeypatch.setattr(plog, name, _Spy(regex, calls))
    parser = PostfixLogParser()
    assert parser.feed_many([line], NOW) == []
    assert calls == []  # no expression was tried
    assert parser.stats == {**parser.stats, "lines": 1, "postfix_lines": 0}


class _Spy:
    def __init__(self, regex: re.Pattern[str], calls: list[str]) -> None:
        self.regex, self.calls = regex, calls

    def match(self, text: str):
        self.calls.append(text)
        return self.regex.match(text)


@pytest.mark.parametrize("mid", [OWN_MID, OWN_MID.upper(), f"TlsRpt.{OWN_MID[7:]}"],
                         ids=["lower", "upper", "mixed"])
def test_prefilter_keeps_cleanup_lines_of_our_report_mails(mid):
    lines = [f"May  1 10:00:00 mta postfix/cleanup[9]: 2B3C4D5E6F: message-id=<{mid}>",
             f"May  1 10:00:01 mta postfix/smtp[10]: {MESSAGES[0]}",
             "May  1 10:00:02 mta postfix/smtp[10]: " + status(
                 "2B3C4D5E6F", "tlsrpt@example.com", MX1, "sent", "250 Ok")]
    parser = PostfixLogParser()
    assert parser.feed_many(lines, NOW) == []
    assert parser.stats["own_dropped"] == 1


def test_prefilter_with_another_own_message_id_rule():
    """A custom rule may accept any Message-ID: every cleanup message-id line is read."""
    lines = ["May  1 10:00:00 mta postfix/cleanup[9]: 2B3C4D5E6F: message-id=<x@ours.example>",
             f"May  1 10:00:01 mta postfix/smtp[10]: {MESSAGES[0]}",
             "May  1 10:00:02 mta postfix/smtp[10]: " + status(
                 "2B3C4D5E6F", "bob@example.com", MX1, "sent", "250 Ok")]
    parser = PostfixLogParser(own_message_id=lambda mid: mid.endswith("@ours.example"))
    assert parser.feed_many(lines, NOW) == []
    assert parser.stats["own_dropped"] == 1


def test_prefilter_follows_configured_services():
    line = (f"May  1 10:00:00 mta postfix/smtp-tls[3]: {MESSAGES[0]}",
            "May  1 10:00:01 mta postfix/smtp-tls[3]: " + status(
                "ABCDEF1234", "bob@example.com", MX1, "sent", "250 Ok"))
    assert PostfixLogParser().feed_many(line, NOW) == []
    (s,) = PostfixLogParser(services=("smtp-tls",)).feed_many(line, NOW)
    assert (s.domain, s.tls) == ("example.com", TlsLevel.VERIFIED)


# --- one expression for an smtp line --------------------------------------------------------------

SEPARATE = [re.compile(pl._TLS_LINE), re.compile(pl._VERIFY), re.compile(pl._QID)]


def separate_groups(msg: str):
    """What the three expressions, tried one after the other, find."""
    for regex in SEPARATE:
        m = regex.match(msg)
        if m is not None:
            return regex.pattern, m.groupdict()
    return None


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.sampled_from(MESSAGES), st.text(max_size=80),
                 st.builds(lambda a, b: a + b, st.sampled_from(MESSAGES), st.text(max_size=20)),
                 st.builds(lambda a, b: a[:b], st.sampled_from(MESSAGES), st.integers(0, 60))))
def test_one_expression_sorts_smtp_lines_as_three_did(msg):
    m = pl._SMTP_RE.match(msg)
    want = separate_groups(msg)
    if want is None:
        assert m is None
        return
    pattern, groups = want
    got = {k: v for k, v in m.groupdict().items() if k in groups}
    assert got == groups
    assert {k for k, v in m.groupdict().items() if v is not None} <= set(groups)


# --- problems named in free text --------------------------------------------------------------------

def _alternatives(pattern: str) -> list[str]:
    """Top-level alternatives of a regular expression's source."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(pattern):
        if c == "(" and (i == 0 or pattern[i - 1] != "\\"):
            depth += 1
        elif c == ")" and pattern[i - 1] != "\\":
            depth -= 1
        elif c == "|" and depth == 0:
            out.append(pattern[start:i])
            start = i + 1
    return out + [pattern[start:]]


@pytest.mark.parametrize(("regex", "problem"), pl._TEXT_PROBLEMS,
                         ids=[f"{p}-{i}" for i, (_, p) in enumerate(pl._TEXT_PROBLEMS)])
def test_every_problem_pattern_holds_a_quick_word(regex, problem):
    for alternative in _alternatives(regex.pattern):
        assert any(word in alternative for word in pl._TEXT_PROBLEM_WORDS), alternative


def reference_problems(text: str) -> list[Problem]:
    out = []
    for regex, problem in pl._TEXT_PROBLEMS:
        if regex.search(text) and problem not in out:
            out.append(problem)
    return out


WORDS = ["TLS is required, but was not offered by host ", "Server certificate not trusted",
         "TLSA lookup error", "no TLSA records found", "DANE TLSA 3 1 1 no usable",
         "hostname mismatch", "Cannot start TLS: handshake failure", "TLS", "mismatch",
         "250 2.0.0 Ok: queued as 1A2B3C", "TLS is required, but host x refused to start TLS"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=10)), max_size=5))
def test_problems_in_same_as_the_whole_table(parts):
    text = " ".join(parts)
    assert problems_in(text) == reference_problems(text)


# --- time stamps -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ts", [
    "2024-05-01T10:00:01Z", "2024-05-01T10:00:01.5Z", "2024-05-01T10:00:01.05+02:00",
    "2024-05-01 10:00:01.123456789-0130", "2024-05-01T10:00:01.000000+00:00",
    "2024-05-01T10:00:01", "2024-05-01T10:00:01.123", "2024-02-30T10:00:01Z",
    "2024-05-01T23:59:60Z", "2024-05-01T10:00:01.9999999+14:00",
    "2024-05-01T10:00:01.\u0661\u0662Z",
])
def test_iso_stamps_as_the_careful_way(ts):
    stamps = pl._Stamps(UTC)
    assert stamps.iso_time(ts) == pl._iso_time(ts)
    assert stamps.iso_time(ts) == pl._iso_time(ts)  # from the memo


@settings(max_examples=300, deadline=None)
@given(st.from_regex(pl._ISO_STAMP, fullmatch=True))
def test_property_iso_stamps_as_the_careful_way(ts):
    assert pl._Stamps(UTC).iso_time(ts) == pl._iso_time(ts)


def test_traditional_stamps_take_the_year_of_each_reading_day():
    """A stamp's year depends on ``now``: the memo holds for one day of ``now`` only."""
    line = "Dec 31 23:59:59 mta postfix/smtp[1]: " + MESSAGES[0]
    parser = PostfixLogParser()
    for now, year in ((datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC), 2024),
                      (datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC), 2024),
                      (datetime(2024, 12, 30, 0, 0, tzinfo=UTC), 2023)):
        parser.feed_many([line], now)
        assert parser._open[1].started.year == year


def test_memos_are_bounded():
    parser = PostfixLogParser()
    start = datetime(2024, 5, 1, tzinfo=UTC)
    lines = []
    for i in range(max(pl._MAX_NAMES, plog.MAX_PROCESSES) + 50):
        t = start + timedelta(seconds=i)
        lines.append(f"{t:%b} {t.day:2d} {t:%H:%M:%S} mta p{i % 3}/smtp[{i}]: "
                     + status(f"ABCDEF{i:04X}", f"u@d{i}.example", f"mx.d{i}.example"
                              f"[192.0.{i // 250 % 250}.{i % 250 + 1}]:25", "sent", "250 Ok"))
    sessions = parser.feed_many(lines, start + timedelta(hours=2))
    assert len(sessions) == len(lines)  # plaintext deliveries, each a session
    assert len(parser._stamps.bsd) <= pl._MAX_STAMPS
    assert all(len(memo) <= pl._MAX_NAMES for memo in (
        parser._programs, parser._relays, parser._domains, parser._peers,
        parser._stamps.tags, parser._stamps.traditional, parser._stamps.seconds))
    assert len(parser._last_closed) <= plog.MAX_PROCESSES


def test_lines_are_cut_at_the_line_limit():
    head = "May  1 10:00:00 mta postfix/smtp[5]: "
    long_line = head + status("ABCDEF1234", "bob@example.com", MX1, "sent",
                              "x" * (MAX_LINE + 100))
    cut_line = head + "ABCDEF1234: Server certificate not verified" + " " * MAX_LINE
    for lines in ([long_line], [cut_line]):
        got = PostfixLogParser().feed_many(lines, NOW)
        assert got == reference(lines)[0]


# --- names and addresses -------------------------------------------------------------------------

@pytest.mark.parametrize(("rcpt", "relay", "want"), [
    pytest.param("bob@Example.COM.", MX1, ("example.com", "mx1.mail.example.com", "192.0.2.10"),
                 id="normalized"),
    pytest.param("bob@bücher.example", "mx.xn--bcher-kva.example[2001:DB8::1]:25",
                 ("xn--bcher-kva.example", "mx.xn--bcher-kva.example", "2001:db8::1"),
                 id="idn-and-ipv6"),
    pytest.param("bob@[192.0.2.1]", MX1, None, id="address-literal-domain"),
    pytest.param("bob@example.com", "10.0.0.1[10.0.0.1]:10025", None, id="ip-relay"),
    pytest.param("bob@exa mple.com", MX1, None, id="bad-domain"),
    pytest.param("bob@example.com", "mx_bad!.example[192.0.2.1]:25", None, id="bad-mx"),
    pytest.param("bob@example.com", "mx.example[192.0.2.999]:25", None, id="bad-ip"),
])
def test_names_and_addresses_checked_once_each(rcpt, relay, want):
    parser = PostfixLogParser()
    for qid in ("ABCDEF1234", "ABCDEF1235"):  # the second time from the memos
        line = "May  1 10:00:00 mta postfix/smtp[5]: " + status(qid, rcpt, relay, "sent",
                                                                  "250 Ok")
        got = parser.feed_many([line], NOW)
        assert got == reference([line])[0]
        assert [(s.domain, s.mx_host, s.receiving_ip) for s in got] == ([want] if want else [])


# --- folding sessions --------------------------------------------------------------------------

def session(t: datetime, qid: str = "ABCDEF1234", **kw) -> LogSession:
    base = dict(domain="example.com", queue_id=qid, mx_host="mx1.mail.example.com",
                receiving_ip="192.0.2.10", tls=TlsLevel.VERIFIED, problems=(), delivered=True)
    return LogSession(t, **{**base, **kw})


@pytest.mark.rfc("8460 4.1")
def test_rfc8460_4_1_sessions_fold_per_utc_day():
    """Reports count sessions per UTC day: a fold never spans midnight UTC."""
    late = datetime(2024, 5, 1, 23, 59, 59, tzinfo=UTC)
    local = timezone(timedelta(hours=2))
    sessions = [session(late - timedelta(hours=3), "A1"), session(late, "A2"),
                session(late + timedelta(seconds=1), "A3"),
                session(datetime(2024, 5, 2, 1, 0, 30, tzinfo=local), "A4"),  # 23:00:30Z
                session(late, "A5", tls=TlsLevel.TRUSTED),
                session(late, "A6", problems=((Problem.CERT_EXPIRED, "expired"),)),
                session(late, "A7", delivered=None), session(late, "A8", mx_host="mx2.x"),
                session(late, "A9", receiving_ip="192.0.2.99"), session(late, "B1",
                                                                         domain="example.org")]
    folded = fold_sessions(sessions)
    assert [(s.queue_id, n) for s, n in folded] == [
        ("A1", 3), ("A3", 1), ("A5", 1), ("A6", 1), ("A7", 1), ("A8", 1), ("A9", 1), ("B1", 1)]
    assert sum(n for _, n in folded) == len(sessions)


@pytest.mark.rfc("8460 4.1")
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3 * 86400), st.sampled_from(list(TlsLevel)),
                          st.sampled_from([True, False, None]), st.integers(0, 2)),
                max_size=30))
def test_rfc8460_4_1_folded_results_give_the_same_counters(raw):
    """One result with a count per kind, or one result per session: the same counters."""
    sessions = [session(NOW + timedelta(seconds=s), f"Q{i}", tls=tls, delivered=d,
                        mx_host=f"mx{m}.mail.example.com")
                for i, (s, tls, d, m) in enumerate(raw)]
    each = [r for r in (session_result(s, CONTEXT) for s in sessions) if r is not None]
    batch = Batch()
    for s, n in fold_sessions(sessions):
        r = session_result(s, CONTEXT)
        if r is not None:
            batch.add(r, n)
    assert batch == fold(each)


# --- the collector side -----------------------------------------------------------------------

class MemoryStore:
    """Just enough of a result store: the batches it was given."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def add_batch(self, batch: Batch) -> int:
        self.batches.append(batch)
        return batch.results


def merged(batches: list[Batch]) -> Batch:
    out = Batch()
    for b in batches:
        out.policies.update(b.policies)
        for key, (ok, failed) in b.sessions.items():
            entry = out.sessions.setdefault(key, [0, 0])
            entry[0] += ok
            entry[1] += failed
        for key, (rtype, n) in b.details.items():
            out.details.setdefault(key, [rtype, 0])[1] += n
        out.results += b.results
    return out


def mixed_log(n: int, start: datetime) -> list[str]:
    lines = []
    for i in range(n):
        t = start + timedelta(seconds=i * 37)  # crosses midnight UTC
        stamp = f"{t:%b} {t.day:2d} {t:%H:%M:%S}"
        pid, qid = 100 + i % 5, f"ABCD{i:06X}"
        mx = (MX1, MX2)[i % 2]
        lines.append(f"{stamp} mta postfix/qmgr[9]: {qid}: from=<a@s.example>, size=1, nrcpt=1")
        if i % 7 == 3:
            lines.append(f"{stamp} mta postfix/smtp[{pid}]: server certificate verification "
                         f"failed for {mx}: certificate has expired")
        level = ("Verified", "Untrusted", "Trusted")[i % 3]
        lines.append(f"{stamp} mta postfix/smtp[{pid}]: {level} TLS connection established "
                     f"to {mx}: {CIPHER}")
        lines.append(f"{stamp} mta postfix/smtp[{pid}]: " + status(
            qid, f"u{i}@example.com", mx, "sent" if i % 5 else "deferred", "250 Ok"))
        lines.append(f"{stamp} mta postfix/smtpd[8]: disconnect from c.example[192.0.2.9]")
    return lines


async def test_log_ingest_hands_the_same_counters_as_one_result_per_session():
    start = datetime(2024, 5, 1, 22, 30, tzinfo=UTC)
    lines = mixed_log(400, start)
    store = MemoryStore()
    collector = Collector(store, flush_interval=0)  # type: ignore[arg-type]
    collector.start()
    ingest = LogIngest(collector, StaticPolicyLookup([CONTEXT]),
                       sending=SendingAddress("198.51.100.1"), tz=UTC)
    now = start + timedelta(days=1)
    for i in range(0, len(lines), 333):  # several reads
        folded = ingest.parser.feed_counted(lines[i:i + 333], now)
        await ingest._submit(folded)
    await collector.stop()
    # the plain way: each session its own result
    sessions, _ = reference(lines, now)
    results = [session_result(s, CONTEXT, sending_ip="198.51.100.1") for s in sessions]
    want = fold([r for r in results if r is not None])
    got = merged(store.batches)
    assert got.sessions == want.sessions and got.details == want.details
    assert got.results == want.results == collector.stored == ingest.sessions == 400
    assert len(got.days) == 2
    assert collector.metrics.results.labels("log")._value.get() == 400
    assert any(rtype == ResultType.CERTIFICATE_EXPIRED.value
               for rtype, _ in got.details.values())


async def test_submit_counted_counts_sessions_and_bounds_the_backlog():
    sessions = [session(NOW, f"Q{i}", mx_host=f"mx{i % 2}.mail.example.com")
                for i in range(3)]
    r0, r1 = (session_result(s, CONTEXT) for s in sessions[:2])
    store = MemoryStore()
    collector = Collector(store, max_pending=10, flush_interval=60)  # type: ignore[arg-type]
    assert collector.submit_counted([(r0, 4), (r1, 0), (r1, 3)]) == 7
    assert collector.submit_counted([(r0, 4)]) == 0  # 7 + 4 > 10: dropped, counted
    assert collector.submit_counted([(r1, 0)]) == 0  # nothing to queue
    assert collector.metrics.dropped.labels("backlog")._value.get() == 4
    assert collector.submit([r0, r0, r1]) == 3
    collector.start()
    await collector.stop()
    (batch,) = store.batches
    assert batch == fold([r0] * 6 + [r1] * 4)
    assert collector.stored == 10


# --- the follower reads whole chunks ----------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=30), st.sampled_from(
    [b"\xe2\x82", b"\xac", "é€😀".encode(), b"\xff\xfe", b"\r", b"\xf0\x9f"])), max_size=40),
    st.integers(1, 64))
def test_follower_lines_as_decoding_each_line(parts, chunk):
    data = b"".join(parts)
    want = [c.decode("utf-8", "replace") for c in data.split(b"\n")[:-1]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mail.log"
        path.write_bytes(data)
        follower = LogFollower(None, path, from_start=True,  # type: ignore[arg-type]
                               max_read=chunk)
        got: list[str] = []
        for _ in range(len(data) + 2):
            got += follower.poll_once()
        follower._file.close()
    assert got == want
    assert follower.lines == len(want)



# --- line heads read once ------------------------------------------------------------------------

@pytest.mark.parametrize("lines", [
    pytest.param([f"May  1 10:00:00 mta postfix/smtp[5]: {MESSAGES[0]}",
                  f"May  1 10:00:00 mta postfix/smtp[5]: {MESSAGES[7]}\nMay  1 x",
                  f"May  1 10:00:00 mta postfix/smtp[5]: {MESSAGES[7]}"], id="newline-in-line"),
    pytest.param([f"May  1 10:00:00 mta]: postfix/smtp[5]: {MESSAGES[0]}",
                  f"May  1 10:00:00 mta]: postfix/smtp[5]: {MESSAGES[7]}"],
                 id="host-holding-the-tag-end"),
    pytest.param([f"May  1 10:00:00.25 mta postfix/smtp[5]: {MESSAGES[0]}",
                  f"May  1 10:00:00.25 mta postfix/smtp[5]: {MESSAGES[7]}"],
                 id="fraction-of-a-second"),
    pytest.param([f"May  1 10:00:00 mta postfix/smtp[5]: {MESSAGES[0]}",
                  f"May  1 10:00:00 mta postfix/smtp[5]:  {MESSAGES[7]}",
                  "May  1 10:00:00 mta postfix/smtp[5]: ]: " + MESSAGES[7]], id="odd-messages"),
    pytest.param([f"2024-05-01T10:00:00Z mta postfix/smtp[5]: {MESSAGES[0]}",
                  f"2024-05-01T10:00:00Z mta postfix/smtp[5]: {MESSAGES[7]}"], id="rfc3339"),
    pytest.param([f"2024-05-01T10:00:00.25+02:00 mta postfix/smtp[5]: {MESSAGES[0]}",
                  f"2024-05-01T10:00:00.000007+02:00 mta postfix/smtp[5]: {MESSAGES[7]}",
                  f"2024-05-01T10:00:00.123456789+02:00 mta postfix/smtp[5]: {MESSAGES[0]}",
                  f"2024-05-01T10:00:00.1234567890+02:00 mta postfix/smtp[5]: {MESSAGES[7]}",
                  f"2024-05-01T10:00:00.+02:00 mta postfix/smtp[5]: {MESSAGES[7]}",
                  f"2024-05-01 10:00:00.5 mta postfix/smtp[5]: {MESSAGES[7]}",
                  f"2024-05-01T10:00:00.\u0665+02:00 mta postfix/smtp[5]: {MESSAGES[7]}",
                  f"2024-05-01T10:00:00.9Z mta postfix/smtp[5]: {MESSAGES[7]}"],
                 id="rfc3339-fractions"),
    pytest.param([f"May  1 10:00:00 mta.1 postfix/smtp[5]: {MESSAGES[0]}",
                  f"May  1 10:00:00 mta.2 postfix/smtp[5]: {MESSAGES[7]}"],
                 id="dot-where-a-fraction-would-be"),
])
def test_line_heads_read_once_give_the_same_lines(lines):
    parser = PostfixLogParser()
    for _ in range(2):  # the second time the heads come from the memo
        assert parser.feed_many(lines, NOW) == reference(lines)[0]
    # the halves of heads: tags with their host, 15-character traditional stamps, RFC
    # 3339 stamps without the digits of a fraction
    memo = parser._stamps
    assert all(key[0] == " " and key.endswith("]: ") and key.count("]: ") == 1
               and key.count(" ") == 3 for key in memo.tags)
    assert all(len(key) == 15 and pl._BSD_RE.match(key + " h p[1]: x") for key in
               memo.traditional)
    assert all(pl._ISO_RE.match(key + " h p[1]: x") and "." not in key for key in
               memo.seconds)


# --- backlogs: the writer commits while the next step is read, and nothing is dropped -----------

class SlowStore(MemoryStore):
    async def add_batch(self, batch: Batch) -> int:
        await asyncio.sleep(0.01)
        return await super().add_batch(batch)


async def test_log_backlog_waits_for_the_writer_instead_of_dropping(tmp_path):
    path = tmp_path / "mail.log"
    path.write_text("\n".join(mixed_log(300, datetime(2024, 5, 1, 8, 0, tzinfo=UTC))) + "\n")
    store = SlowStore()
    collector = Collector(store, max_pending=20, batch_size=5,  # type: ignore[arg-type]
                          flush_interval=0)
    collector.start()
    ingest = LogIngest(collector, StaticPolicyLookup([CONTEXT]), tz=UTC)
    follower = LogFollower(ingest, path, from_start=True, max_read=4096, max_chunks=1)
    steps = 0
    while await follower.step():
        steps += 1
    assert not await follower.step()  # the end of the file
    await collector.stop()
    follower._file.close()
    assert steps > 10
    assert collector.metrics.dropped.labels("backlog")._value.get() == 0
    assert collector.stored == ingest.sessions == 300
    assert merged(store.batches).results == 300
    assert len(store.batches) > 1


def test_a_transaction_is_bounded_by_results_not_sessions():
    """A result with a count is one counter increment: batch_size counts results."""
    r = session_result(session(NOW), CONTEXT)
    collector = Collector(MemoryStore(), batch_size=3)  # type: ignore[arg-type]
    for _ in range(3):
        collector.submit_counted([(r, 1000), (r, 1000)], source="log")
    items, sessions = collector._take()
    assert (len(items), sessions) == (2, 4000)
    items, sessions = collector._take()
    assert (len(items), sessions) == (1, 2000)
    collector.submit([r] * 5)
    assert collector._take()[1] == 5  # one item is always taken whole


async def test_room_for_returns_when_the_writer_is_not_running():
    collector = Collector(MemoryStore(), max_pending=5)  # type: ignore[arg-type]
    r = session_result(session(NOW), CONTEXT)
    assert collector.submit_counted([(r, 5)]) == 5
    async with asyncio.timeout(1):
        await collector.room_for(3)  # not started: nothing would make room
    assert collector.submit_counted([(r, 3)]) == 0


# --- results remembered across reads ----------------------------------------------------------

async def test_results_remembered_across_reads_follow_policy_changes():
    store = MemoryStore()
    collector = Collector(store, flush_interval=0)  # type: ignore[arg-type]
    collector.start()
    inner = StaticPolicyLookup([CONTEXT])
    ingest = LogIngest(collector, inner, tz=UTC, sending=SendingAddress("198.51.100.1"),
                       max_results=3)
    start = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    now = start + timedelta(hours=1)
    lines = mixed_log(12, start)
    for i in range(0, len(lines), 10):  # several reads, the same kinds again and again
        await ingest._submit(ingest.parser.feed_counted(lines[i:i + 10], now))
    assert len(ingest._results) <= 3
    # the policy changes (a new context once the cached one expires): new results
    inner.contexts["example.com"] = PolicyContext("example.com")
    ingest.lookup._entries.clear()
    later = mixed_log(24, start)[len(lines):]
    await ingest._submit(ingest.parser.feed_counted(later, now))
    await collector.stop()
    got = merged(store.batches)
    first = {f"ABCD{i:06X}" for i in range(12)}
    want_each = [session_result(s, CONTEXT if s.queue_id in first
                                else PolicyContext("example.com"), sending_ip="198.51.100.1")
                 for s in reference(lines + later, now)[0]]
    want = fold([r for r in want_each if r is not None])
    assert got.sessions == want.sessions and got.details == want.details
    assert {p.policy_type.value for p in got.policies.values()} == {"sts", "no-policy-found"}


def test_journal_messages_read_up_to_their_first_newline():
    """Expressions read a message up to its first newline, as on a syslog line; a
    warning's problems are looked for in the whole text."""
    base = 1714557600_000000
    dane_mx = "mx1.example.net[192.0.2.20]:25"

    def entry(i: int, message: str) -> dict[str, str]:
        return {"SYSLOG_IDENTIFIER": "postfix/smtp", "_PID": "42",
                "__REALTIME_TIMESTAMP": str(base + i), "MESSAGE": message}

    parser = PostfixLogParser()
    entries = [
        entry(0, f"Verified TLS connection established to {MX1}: {CIPHER}\nsecond line"),
        entry(1, status("ABCDEF1234", "bob@example.com", MX1, "sent", "250 Ok") + "\n)x"),
        entry(2, f"warning: {dane_mx}: see below\nall TLSA records unusable"),
        entry(3, f"Untrusted TLS connection established to {dane_mx}: {CIPHER}"),
        entry(4, status("ABCDEF1235", "erin@example.net", dane_mx, "sent", "250 Ok")),
    ]
    got = [s for e in entries for s in parser.feed_journal(e, NOW)]
    assert [(s.domain, s.tls, s.delivered, [p for p, _ in s.problems]) for s in got] == [
        ("example.com", TlsLevel.VERIFIED, True, []),
        ("example.net", TlsLevel.UNTRUSTED, True, [Problem.TLSA_UNUSABLE])]
