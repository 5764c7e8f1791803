"""A failed MTA-STS policy fetch in reports (RFC 8461 §6, RFC 8460 §4.3.2.2, §4.4).

RFC 8461 §6 asks for reports of policy fetch failures when a valid TXT record is
present or a policy is cached (not for mode ``none``). With a cached policy in force the
sessions are judged under it as usual and each one also carries the fetch failure as a
failure detail, without counting as a failed session (docs/tlsrpt-sending.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from send_helpers import STS_LINES

from smtptls.engine.destination import Decision, DecisionKind
from smtptls.engine.mtasts_discovery import Discovery, Outcome
from smtptls.errors import FetchStatusError, FetchTlsError, PolicySyntaxError
from smtptls.mtasts import Mode, Policy
from smtptls.mtasts.cache_logic import Action
from smtptls.mtasts.record import StsRecord
from smtptls.services.collector.policy import RETRY_PENDING, context_from_explanation
from smtptls.services.policyd.decide import Explanation
from smtptls.tlsrpt.report import PolicyType, ResultType
from smtptls.tlsrptsend.aggregate import ReportIdentity, aggregate
from smtptls.tlsrptsend.postfix_log import PostfixLogParser
from smtptls.tlsrptsend.postfix_results import PolicyContext, session_result
from smtptls.tlsrptsend.results import SessionResult

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DAY = NOW.date()
IDENTITY = ReportIdentity.with_defaults("mta.sender.example")
SENDING_IP = "198.51.100.25"
MX = "mx1.mail.example.com[192.0.2.10]:25"
CIPHER = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
MX_PATTERNS = ("*.mail.example.com",)
REASON = "HTTP 503 from https://mta-sts.example.com/.well-known/mta-sts.txt"
KEPT = PolicyContext("example.com", "sts", "testing", STS_LINES, MX_PATTERNS,
                     sts_failure=ResultType.STS_POLICY_FETCH_ERROR,
                     sts_failure_reason=f"{REASON}; cached policy applied")
RECORD = StsRecord.parse("v=STSv1; id=2")
CACHED = Policy("STSv1", Mode.TESTING, 86400, MX_PATTERNS)
NOTFOUND = Decision(DecisionKind.NOTFOUND, None, "testing")


def postfix(*texts: str) -> list[str]:
    out = []
    for i, text in enumerate(texts):
        t = datetime(2024, 5, 1, 10, 0, 0) + timedelta(seconds=i)
        out.append(f"{t:%b} {t.day:2d} {t:%H:%M:%S} mta postfix/smtp[41]: {text}")
    return out


def delivered(qid: str, level: str = "Verified") -> list[str]:
    return postfix(f"{level} TLS connection established to {MX}: {CIPHER}",
                   f"{qid}: to=<bob@example.com>, relay={MX}, delay=0.4, "
                   "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)")


def results(lines: list[str], context: PolicyContext) -> list[SessionResult]:
    parser = PostfixLogParser(tz=UTC)
    sessions = [s for line in lines for s in parser.feed(line, NOW)]
    out = [session_result(s, context, sending_ip=SENDING_IP) for s in sessions]
    return [r for r in out if r is not None]


def explained(discovery: Discovery) -> PolicyContext:
    return context_from_explanation(
        "example.com", Explanation("example.com", NOTFOUND, None, None, discovery))


@pytest.mark.rfc("8461 6")
def test_rfc8461_6_session_under_a_kept_cached_policy_succeeds_and_reports_the_fetch():
    (r,) = results(delivered("AAAA000001"), KEPT)
    assert r.succeeded and not r.failed
    assert r.policy.policy_type is PolicyType.STS
    assert r.policy.policy_strings == STS_LINES  # the cached policy applied (§4.4)
    (f,) = r.failures
    assert f.result_type is ResultType.STS_POLICY_FETCH_ERROR
    assert f.failure_reason_code == f"{REASON}; cached policy applied"


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_refresh_failure_counts_sessions_in_details_not_in_the_summary():
    lines = delivered("AAAA000001") + delivered("AAAA000002") + postfix(
        f"Untrusted TLS connection established to {MX}: {CIPHER}",
        f"AAAA000003: to=<bob@example.com>, relay={MX}, delay=0.4, "
        "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)")
    (report,) = aggregate(results(lines, KEPT), DAY, IDENTITY)
    (p,) = report.policies
    assert (p.policy_type, p.policy_string, p.mx_host) == (PolicyType.STS, STS_LINES,
                                                           MX_PATTERNS)
    # §4.4: the summary counts TLS negotiations: two succeeded, the untrusted one failed
    assert (p.total_successful_session_count, p.total_failure_session_count) == (2, 1)
    by_type = {str(d.result_type): d.failed_session_count for d in p.failure_details}
    # every session went out while the policy could not be refreshed
    assert by_type == {"sts-policy-fetch-error": 3, "certificate-not-trusted": 1}
    (fetch,) = [d for d in p.failure_details
                if d.result_type is ResultType.STS_POLICY_FETCH_ERROR]
    assert fetch.failure_reason_code == f"{REASON}; cached policy applied"
    assert fetch.sending_mta_ip == SENDING_IP


def test_success_with_failure_details_keeps_its_json_form():
    (r,) = results(delivered("AAAA000001"), KEPT)
    data = r.to_dict()
    assert data["failed"] is False and data["failures"][0]["result-type"] == \
        "sts-policy-fetch-error"
    back = SessionResult.from_dict(data)
    assert back == r and back.succeeded
    failed = results(postfix(
        f"Untrusted TLS connection established to {MX}: {CIPHER}",
        f"AAAA000003: to=<bob@example.com>, relay={MX}, delay=0.4, "
        "delays=0.1/0/0.2/0.1, dsn=2.0.0, status=sent (250 Ok)"), KEPT)[0]
    assert "failed" not in failed.to_dict()  # failures and failed agree: not written
    assert SessionResult.from_dict(failed.to_dict()) == failed


@pytest.mark.rfc("8461 6")
@pytest.mark.parametrize(("error", "expected"), [
    (FetchStatusError("HTTP 503", status=503), ResultType.STS_POLICY_FETCH_ERROR),
    (FetchTlsError("certificate verify failed"), ResultType.STS_WEBPKI_INVALID),
    (PolicySyntaxError("no mode"), ResultType.STS_POLICY_INVALID),
], ids=["unreachable-or-status", "webpki", "invalid"])
def test_rfc8461_6_fetch_failed_kept_cached_context(error, expected):
    disc = Discovery("example.com", Outcome.FETCH_FAILED_KEPT_CACHED, Action.FETCH,
                     policy=CACHED, policy_id="1", record=RECORD, fetch_error=error)
    ctx = explained(disc)
    assert (ctx.kind, ctx.sts_mode, ctx.sts_strings, ctx.mx_patterns) == (
        "sts", "testing", STS_LINES, MX_PATTERNS)
    assert ctx.sts_failure is expected
    assert ctx.sts_failure_reason == f"{error}; cached policy applied"
    assert ctx.applied("mx1.mail.example.com").policy_strings == STS_LINES


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_rate_limited_refetch_is_still_a_fetch_failure():
    # the refetch was due but skipped: the last attempt failed moments ago
    disc = Discovery("example.com", Outcome.CACHED, Action.USE_CACHED, policy=CACHED,
                     policy_id="1", record=RECORD, rate_limited=True)
    ctx = explained(disc)
    assert (ctx.kind, ctx.sts_failure) == ("sts", ResultType.STS_POLICY_FETCH_ERROR)
    assert ctx.sts_failure_reason == f"{RETRY_PENDING}; cached policy applied"
    # nothing cached either: the B7 failure, not "no-policy-found"
    disc = Discovery("example.com", Outcome.FETCH_FAILED, Action.FETCH, record=RECORD,
                     rate_limited=True)
    ctx = explained(disc)
    assert (ctx.kind, ctx.sts_failure, ctx.sts_failure_reason) == (
        "none", ResultType.STS_POLICY_FETCH_ERROR, RETRY_PENDING)
    assert ctx.applied(None).policy_type is PolicyType.STS


@pytest.mark.rfc("8461 6")
def test_rfc8461_6_no_report_for_a_cached_mode_none_policy():
    none = Policy("STSv1", Mode.NONE, 86400, MX_PATTERNS)
    disc = Discovery("example.com", Outcome.FETCH_FAILED_KEPT_CACHED, Action.FETCH,
                     policy=none, policy_id="1", record=RECORD,
                     fetch_error=FetchStatusError("HTTP 503", status=503))
    assert explained(disc) == PolicyContext("example.com")


def test_plain_cached_or_fetched_policy_reports_no_failure():
    for outcome, action in ((Outcome.CACHED, Action.USE_CACHED),
                            (Outcome.FETCHED, Action.FETCH)):
        disc = Discovery("example.com", outcome, action, policy=CACHED, policy_id="1",
                         record=RECORD)
        ctx = explained(disc)
        assert (ctx.kind, ctx.sts_failure, ctx.sts_failure_reason) == ("sts", None, None)
        (r,) = results(delivered("AAAA000001"), ctx)
        assert r.succeeded and r.failures == ()


def test_no_policy_fetch_failure_reason_is_the_error():
    disc = Discovery("example.com", Outcome.FETCH_FAILED, Action.FETCH, record=RECORD,
                     fetch_error=FetchStatusError("HTTP 404", status=404))
    (r,) = results(delivered("AAAA000001"), explained(disc))
    assert r.failed and r.policy.policy_type is PolicyType.STS
    assert r.policy.policy_strings == ()
    (f,) = r.failures
    assert (f.result_type, f.failure_reason_code) == (ResultType.STS_POLICY_FETCH_ERROR,
                                                      "HTTP 404")
