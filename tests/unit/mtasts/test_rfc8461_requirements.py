"""RFC 8461 requirements of docs/requirements.md that the pure core proves directly.

Each test names the section it proves; the larger tables live in the other modules of
this folder (record, policy, match, cache logic). No network, no clock: times are
arguments.
"""

from __future__ import annotations

import pytest

from smtptls.errors import FetchError, PolicyError, StsRecordError
from smtptls.mtasts import (
    Action,
    CachedPolicy,
    FetchOutcome,
    Mode,
    Policy,
    StsRecord,
    alert_on_refresh_failure,
    apply_fetch_result,
    cert_matches,
    decide_refresh,
    effective_policy,
    is_text_plain,
    live,
    needs_proactive_refresh,
    parse_txt_records,
)

T0 = 1_700_000_000.0
DAY = 86400.0
ENFORCE = Policy("STSv1", Mode.ENFORCE, int(DAY), ("mx1.example.com",))
TESTING = Policy("STSv1", Mode.TESTING, int(DAY), ("mx1.example.com",))
NONE = Policy("STSv1", Mode.NONE, int(DAY))


# --- A1: US-ASCII TXT record ------------------------------------------------------------


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize("text", [
    "v=STSv1; id=20160831085700Z\u00e9",  # a non-ASCII letter in the id
    "v=STSv1; id=\uff11\uff12",  # full-width digits are not DIGIT
    "v=STSv1; id=abc; ext=caf\u00e9",  # a non-ASCII extension value
    "v=STSv1;\u00a0id=abc",  # a no-break space is not WSP
], ids=["id-latin", "id-fullwidth-digits", "ext-value", "nbsp-delimiter"])
def test_rfc8461_3_1_record_is_us_ascii(text):
    with pytest.raises(StsRecordError):
        parse_txt_records([text])


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_repeated_fields_first_wins_and_extensions_ignored():
    record = parse_txt_records(["v=STSv1; id=first; x-ext=1; id=second;"])
    assert record == StsRecord("first", (("x-ext", "1"),))
    assert "duplicate id" in record.warnings[0]
    # extensions carry no meaning: a record that differs only there is the same policy id
    assert decide_refresh(CachedPolicy.from_fetch(ENFORCE, "first", T0), record, T0 + 1) \
        is Action.USE_CACHED


# --- B4: text/plain, charset and other parameters ignored --------------------------------


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(("value", "ok"), [
    ("text/plain", True),
    ("text/plain; charset=utf-8", True),
    ("text/plain; charset=us-ascii", True),
    ("TEXT/Plain ;charset=UTF-8", True),
    ("text/plain; charset=iso-8859-1; format=flowed", True),  # parameters ignored
    ("text/html; charset=utf-8", False),
    ("text/plainx", False),
    ("application/octet-stream", False),
    ("", False),
])
def test_rfc8461_3_2_media_type_parameters_ignored(value, ok):
    assert is_text_plain(value) is ok


# --- B2 / E2: DNS-ID only, "*" only as the whole left-most label -------------------------


@pytest.mark.rfc("8461 4.2")
@pytest.mark.parametrize(("host", "sans", "ok"), [
    ("mta-sts.example.com", ["mta-sts.example.com"], True),
    ("mta-sts.example.com", ["*.example.com"], True),
    ("mta-sts.example.com", ["*.com"], False),
    ("mta-sts.example.com", ["mta-*.example.com"], False),
    ("mta-sts.example.com", ["m*.example.com"], False),
    ("mta-sts.example.com", ["mta-sts.*.com"], False),
    ("a.mta-sts.example.com", ["*.example.com"], False),
    ("mta-sts.example.com", [], False),  # a CN is never looked at: there is none here
], ids=["exact", "wildcard", "wildcard-two-labels", "partial-1", "partial-2", "inner",
        "deeper-host", "no-dns-id"])
def test_rfc8461_4_2_dns_id_and_whole_label_wildcard_only(host, sans, ok):
    assert cert_matches(host, sans) is ok


# --- C4: cache up to max_age, never apply an expired policy ------------------------------


@pytest.mark.rfc("8461 5.1")
def test_rfc8461_5_1_expired_policy_never_applied():
    entry = CachedPolicy.from_fetch(ENFORCE, "1", T0)
    assert effective_policy(entry, T0 + DAY - 1) == ENFORCE
    expired_at = T0 + DAY  # max_age seconds after the fetch
    for now in (expired_at, expired_at + 1, expired_at + 365 * DAY):
        assert live(entry, now) is None and effective_policy(entry, now) is None
        # no record, a record with the same id, or a failed refetch: still not applied
        assert decide_refresh(entry, None, now) is Action.NO_POLICY
        assert decide_refresh(entry, StsRecord("1"), now) is Action.FETCH
        result = apply_fetch_result(entry, FetchError("down"), "1", now)
        assert result.outcome is FetchOutcome.NO_POLICY and result.policy is None
        assert not needs_proactive_refresh(entry, now)  # dropped, not kept alive


# --- B6: >= 5 minutes per policy id before retrying a failed fetch -----------------------


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_proactive_retry_waits_five_minutes_after_a_failure():
    week = Policy("STSv1", Mode.ENFORCE, int(7 * DAY), ("mx1.example.com",))
    entry = CachedPolicy.from_fetch(week, "1", T0)
    due = T0 + DAY  # daily refresh due ...
    entry = apply_fetch_result(entry, FetchError("down"), "1", due - 1).cached
    assert entry is not None and entry.policy == week  # ... but it failed just now
    assert not needs_proactive_refresh(entry, due + 298)
    assert needs_proactive_refresh(entry, due - 1 + 300)


# --- D6: alert on refresh failures unless the cached mode is none ------------------------


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(("policy", "alert"), [
    (ENFORCE, True), (TESTING, True), (NONE, False), (None, True),
], ids=["enforce", "testing", "none", "expired"])
def test_rfc8461_3_3_refresh_failure_alerts_unless_mode_none(policy, alert):
    assert alert_on_refresh_failure(policy) is alert


def test_alert_on_refresh_failure_checks_its_argument():
    with pytest.raises(PolicyError):
        alert_on_refresh_failure("enforce")  # type: ignore[arg-type]
