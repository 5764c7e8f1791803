"""RFC 8461 §3.3, §5, §5.1, §8: caching, refresh and the sender's per-MX decision."""

from __future__ import annotations

import pytest

from smtptls.errors import (
    DnsTimeout,
    FetchContentTypeError,
    FetchError,
    FetchStatusError,
    FetchTimeoutError,
    FetchTlsError,
    FetchTooLargeError,
    MultipleRecordsError,
    PolicyError,
    PolicySyntaxError,
    StsRecordError,
)
from smtptls.mtasts import (
    Action,
    CachedPolicy,
    Delivery,
    Failure,
    FetchOutcome,
    Mode,
    Policy,
    StsRecord,
    Verdict,
    apply_fetch_result,
    decide_refresh,
    effective_policy,
    live,
    needs_proactive_refresh,
    no_mx_left,
    parse_txt_records,
    sender_action,
)

T0 = 1_700_000_000.0
DAY = 86400.0
ENFORCE = Policy("STSv1", Mode.ENFORCE, int(7 * DAY), ("mx1.example.com", "*.mx.example.net"))
TESTING = Policy("STSv1", Mode.TESTING, int(DAY), ("mx1.example.com",))
NONE = Policy("STSv1", Mode.NONE, 300)


def cached(policy: Policy = ENFORCE, policy_id: str = "id1", at: float = T0) -> CachedPolicy:
    return CachedPolicy.from_fetch(policy, policy_id, at)


def txt(policy_id: str) -> StsRecord:
    return StsRecord(policy_id)


# --- C4: lifetime -----------------------------------------------------------------------


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_policy_applies_max_age_from_fetch():
    entry = cached(at=T0)
    assert entry.fetched_at == T0 == entry.last_checked
    assert entry.expires_at == T0 + ENFORCE.max_age
    assert not entry.is_expired(T0 + ENFORCE.max_age - 0.001)
    assert entry.is_expired(T0 + ENFORCE.max_age)
    assert effective_policy(entry, T0 + 1) == ENFORCE
    assert effective_policy(entry, T0 + ENFORCE.max_age + 1) is None
    assert live(entry, T0 + ENFORCE.max_age) is None


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_max_age_zero_applies_to_this_delivery_only():
    policy = Policy("STSv1", Mode.ENFORCE, 0, ("mx1.example.com",))
    result = apply_fetch_result(None, policy, "z", T0)
    assert result.outcome is FetchOutcome.STORED
    assert result.policy == policy  # applied to the delivery at hand
    assert result.cached is not None and result.cached.is_expired(T0)
    assert decide_refresh(result.cached, txt("z"), T0) is Action.FETCH


# --- D1: fetch when the id changed or nothing is cached ---------------------------------


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize(
    "entry, record, now, action",
    [
        pytest.param(None, txt("id1"), T0, Action.FETCH, id="nothing-cached"),
        pytest.param(cached(), txt("id2"), T0 + 60, Action.FETCH, id="id-changed"),
        pytest.param(cached(), txt("id1"), T0 + 60, Action.USE_CACHED, id="id-same"),
        pytest.param(cached(), txt("id1"), T0 + 8 * DAY, Action.FETCH, id="expired-same-id"),
        pytest.param(cached(), None, T0 + 60, Action.USE_CACHED, id="no-record-cached"),
        pytest.param(cached(), None, T0 + 8 * DAY, Action.NO_POLICY, id="no-record-expired"),
        pytest.param(None, None, T0, Action.NO_POLICY, id="no-record-no-cache"),
    ],
)
def test_rfc8461_3_1_refetch_when_id_changes(entry, record, now, action):
    assert decide_refresh(entry, record, now) is action


# --- A2 / B8: a missing or broken TXT record does not remove a cached policy ------------


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize(
    "answer",
    [
        pytest.param([], id="record-removed"),
        pytest.param(["v=STSv1; id=a", "v=STSv1; id=b"], id="two-records"),
        pytest.param(["v=STSv1; id=bad-id"], id="invalid-record"),
        pytest.param(DnsTimeout("timeout"), id="lookup-failed"),
    ],
)
def test_rfc8461_3_1_unusable_txt_keeps_cached_policy(answer):
    entry = cached()
    if isinstance(answer, Exception):
        record = None
    else:
        try:
            record = parse_txt_records(answer)
        except (StsRecordError, MultipleRecordsError):
            record = None
    assert record is None
    now = T0 + DAY
    assert decide_refresh(entry, record, now) is Action.USE_CACHED
    assert effective_policy(entry, now) == ENFORCE


# --- D2 / B7 / B8: failed refreshes ------------------------------------------------------

FAILURES = [
    pytest.param(FetchError("refused"), id="connect"),
    pytest.param(FetchTlsError("bad certificate"), id="tls"),
    pytest.param(FetchStatusError("redirect", status=301), id="redirect"),
    pytest.param(FetchStatusError("not found", status=404), id="404"),
    pytest.param(FetchContentTypeError("text/html"), id="content-type"),
    pytest.param(FetchTooLargeError("too large"), id="too-large"),
    pytest.param(FetchTimeoutError("timeout"), id="timeout"),
    pytest.param(PolicySyntaxError("bad mode", line=2), id="invalid-policy"),
]


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("error", FAILURES)
def test_rfc8461_3_3_failed_refresh_keeps_cached_policy(error):
    entry = cached()
    now = T0 + 2 * DAY
    new, outcome = apply_fetch_result(entry, error, "id2", now)
    assert outcome is FetchOutcome.KEPT_CACHED
    assert new is not None
    assert new.policy == ENFORCE
    assert new.policy_id == "id1"  # not replaced by the id that failed
    assert new.expires_at == entry.expires_at  # not extended, not shortened
    assert new.last_checked == now  # the attempt is remembered (rate limit)
    assert effective_policy(new, now) == ENFORCE


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("error", FAILURES)
def test_rfc8461_3_3_failed_fetch_without_cache_means_no_mta_sts(error):
    result = apply_fetch_result(None, error, "id1", T0)
    assert result == (None, FetchOutcome.NO_POLICY)
    assert result.policy is None
    delivery = sender_action(result.policy, "anything.example", cert_ok=False)
    assert delivery == Delivery(Verdict.DELIVER, None)


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_failed_fetch_with_expired_cache_drops_it():
    entry = cached()
    new, outcome = apply_fetch_result(entry, FetchError("down"), "id2", T0 + 8 * DAY)
    assert (new, outcome) == (None, FetchOutcome.NO_POLICY)


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_successful_fetch_replaces_cache():
    new, outcome = apply_fetch_result(cached(), TESTING, "id2", T0 + DAY)
    assert outcome is FetchOutcome.STORED
    assert new == CachedPolicy(TESTING, "id2", T0 + DAY, T0 + 2 * DAY, T0 + DAY)


# --- D4: mode none replaces the cached policy ---------------------------------------------


@pytest.mark.rfc("8461 8.3")
def test_rfc8461_8_3_mode_none_replaces_cached_policy():
    now = T0 + DAY
    assert decide_refresh(cached(), txt("withdraw1"), now) is Action.FETCH
    new, outcome = apply_fetch_result(cached(), NONE, "withdraw1", now)
    assert outcome is FetchOutcome.STORED
    assert new is not None and new.policy.mode is Mode.NONE
    assert new.expires_at == now + NONE.max_age
    # the none policy is in effect: deliver as without MTA-STS
    delivery = sender_action(effective_policy(new, now), "rogue.example", cert_ok=False)
    assert delivery.verdict is Verdict.DELIVER
    assert not delivery.require_tls
    # and later, once the TXT record is gone and the none policy expired: no policy
    assert decide_refresh(new, None, now + NONE.max_age) is Action.NO_POLICY


# --- D3: proactive refresh ----------------------------------------------------------------


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "entry, now, expected",
    [
        pytest.param(cached(), T0 + 60, False, id="fresh"),
        pytest.param(cached(), T0 + DAY - 1, False, id="just-under-a-day"),
        pytest.param(cached(), T0 + DAY, True, id="daily"),
        pytest.param(cached(TESTING), T0 + DAY - 3600, True, id="within-an-hour-of-expiry"),
        pytest.param(cached(TESTING), T0 + DAY - 3601, False, id="before-expiry-window"),
        pytest.param(cached(), T0 + 8 * DAY, False, id="expired"),
        pytest.param(cached().checked(T0 + DAY), T0 + DAY + 299, False, id="retry-rate-limited"),
        pytest.param(
            cached().checked(T0 + DAY), T0 + DAY + 300, True, id="retry-after-five-minutes"
        ),
        pytest.param(None, T0, False, id="nothing-cached"),
    ],
)
def test_rfc8461_3_3_proactive_refresh_due(entry, now, expected):
    assert needs_proactive_refresh(entry, now) is expected


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_proactive_refresh_parameters():
    entry = cached()
    assert needs_proactive_refresh(entry, T0 + 3600, interval=3600)
    assert needs_proactive_refresh(entry, T0 + 6 * DAY, before_expiry=DAY + 1)
    assert not needs_proactive_refresh(entry, T0 + DAY, retry_after=2 * DAY)


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_proactive_refresh_fetches_even_with_same_id():
    entry = cached()
    now = T0 + DAY
    assert decide_refresh(entry, txt("id1"), now) is Action.USE_CACHED
    assert decide_refresh(entry, txt("id1"), now, proactive=True) is Action.FETCH
    assert decide_refresh(entry, None, now, proactive=True) is Action.USE_CACHED
    new, _ = apply_fetch_result(entry, ENFORCE, "id1", now)
    assert new is not None and new.expires_at == now + ENFORCE.max_age


# --- F1-F3 and D5: the sender's per-MX decision ---------------------------------------------


@pytest.mark.rfc("8461 5")
@pytest.mark.parametrize(
    "mx, cert_ok, starttls_ok, verdict, failure",
    [
        pytest.param("mx1.example.com", True, True, Verdict.DELIVER, None, id="valid"),
        pytest.param("a.mx.example.net", True, True, Verdict.DELIVER, None, id="valid-wildcard"),
        pytest.param(
            "evil.example.org",
            True,
            True,
            Verdict.TRY_NEXT_MX,
            Failure.MX_MISMATCH,
            id="mx-mismatch",
        ),
        pytest.param(
            "mx1.example.com",
            False,
            True,
            Verdict.TRY_NEXT_MX,
            Failure.CERTIFICATE_INVALID,
            id="bad-cert",
        ),
        pytest.param(
            "mx1.example.com",
            False,
            False,
            Verdict.TRY_NEXT_MX,
            Failure.STARTTLS_NOT_SUPPORTED,
            id="no-starttls",
        ),
    ],
)
def test_rfc8461_5_enforce_refuses_failing_mx(mx, cert_ok, starttls_ok, verdict, failure):
    delivery = sender_action(ENFORCE, mx, cert_ok, starttls_ok=starttls_ok)
    assert delivery.verdict is verdict
    assert delivery.mode is Mode.ENFORCE
    assert delivery.failure is failure
    assert delivery.require_tls is True
    assert delivery.report is (failure is not None)
    assert delivery.recheck_policy is (failure is not None)


@pytest.mark.rfc("8461 5")
@pytest.mark.parametrize(
    "mx, cert_ok, starttls_ok, failure",
    [
        pytest.param("mx1.example.com", True, True, None, id="valid"),
        pytest.param("evil.example.org", True, True, Failure.MX_MISMATCH, id="mx-mismatch"),
        pytest.param("mx1.example.com", False, True, Failure.CERTIFICATE_INVALID, id="bad-cert"),
        pytest.param(
            "mx1.example.com", True, False, Failure.STARTTLS_NOT_SUPPORTED, id="no-starttls"
        ),
    ],
)
def test_rfc8461_5_testing_delivers_and_reports(mx, cert_ok, starttls_ok, failure):
    delivery = sender_action(TESTING, mx, cert_ok, starttls_ok=starttls_ok)
    assert delivery.verdict is Verdict.DELIVER
    assert delivery.mode is Mode.TESTING
    assert delivery.failure is failure
    assert delivery.require_tls is False
    assert delivery.report is (failure is not None)
    assert delivery.recheck_policy is False


@pytest.mark.rfc("8461 5")
@pytest.mark.parametrize("policy", [None, NONE], ids=["no-policy", "mode-none"])
@pytest.mark.parametrize("cert_ok", [True, False])
def test_rfc8461_5_none_is_no_active_policy(policy, cert_ok):
    delivery = sender_action(policy, "anything.example", cert_ok, starttls_ok=cert_ok)
    assert delivery.verdict is Verdict.DELIVER
    assert delivery.failure is None
    assert not delivery.require_tls and not delivery.report and not delivery.recheck_policy


@pytest.mark.rfc("8461 5.1")
def test_rfc8461_5_1_enforce_tries_next_mx_then_defers_and_rechecks():
    mxs = [("evil.example.org", True), ("mx1.example.com", False), ("b.mx.example.net", False)]
    verdicts = [sender_action(ENFORCE, mx, ok).verdict for mx, ok in mxs]
    assert verdicts == [Verdict.TRY_NEXT_MX] * 3
    final = no_mx_left(ENFORCE)
    assert final.verdict is Verdict.DEFER  # temporary failure, never a bounce here
    assert final.recheck_policy is True  # check for an updated policy first (D5)
    # once the last MX validates, delivery goes ahead
    assert sender_action(ENFORCE, "b.mx.example.net", True).verdict is Verdict.DELIVER


@pytest.mark.rfc("8461 5.1")
@pytest.mark.parametrize("policy", [None, NONE, TESTING], ids=["no-policy", "none", "testing"])
def test_rfc8461_5_1_no_mx_left_without_enforce_is_plain_defer(policy):
    final = no_mx_left(policy)
    assert final.verdict is Verdict.DEFER
    assert final.recheck_policy is False
    assert final.require_tls is False


@pytest.mark.rfc("8461 5.1")
def test_rfc8461_5_1_recheck_finds_updated_policy():
    # D5 in practice: the recheck looks up the TXT id; a new id means fetch again
    entry = cached()
    now = T0 + DAY
    assert sender_action(effective_policy(entry, now), "new-mx.example.org", True).recheck_policy
    assert decide_refresh(entry, txt("id2"), now) is Action.FETCH
    updated = Policy("STSv1", Mode.ENFORCE, int(DAY), ("new-mx.example.org",))
    new, _ = apply_fetch_result(entry, updated, "id2", now)
    assert (
        sender_action(effective_policy(new, now), "new-mx.example.org", True).verdict
        is Verdict.DELIVER
    )


# --- a whole life cycle ---------------------------------------------------------------------


def test_policy_life_cycle():
    store: CachedPolicy | None = None
    # day 0: first message, TXT present, fetch succeeds
    now = T0
    assert decide_refresh(store, txt("v1"), now) is Action.FETCH
    store, outcome = apply_fetch_result(store, ENFORCE, "v1", now)
    assert outcome is FetchOutcome.STORED
    # day 1: background refresh is due; an attacker blocks HTTPS
    now = T0 + DAY
    assert needs_proactive_refresh(store, now)
    assert decide_refresh(store, txt("v1"), now, proactive=True) is Action.FETCH
    store, outcome = apply_fetch_result(store, FetchTlsError("forged certificate"), "v1", now)
    assert outcome is FetchOutcome.KEPT_CACHED
    assert not needs_proactive_refresh(store, now + 60)  # rate limited
    # day 2: the attacker also strips the TXT record: the cached policy still applies
    now = T0 + 2 * DAY
    assert decide_refresh(store, None, now) is Action.USE_CACHED
    assert (
        sender_action(effective_policy(store, now), "evil.example.org", True).verdict
        is Verdict.TRY_NEXT_MX
    )
    # day 3: refresh works again and extends the lifetime
    now = T0 + 3 * DAY
    store, outcome = apply_fetch_result(store, ENFORCE, "v1", now)
    assert outcome is FetchOutcome.STORED and store is not None
    assert store.expires_at == now + ENFORCE.max_age
    # day 20: without refreshes the policy expired: deliver as without MTA-STS
    now = T0 + 20 * DAY
    assert decide_refresh(store, None, now) is Action.NO_POLICY
    assert (
        sender_action(effective_policy(store, now), "evil.example.org", False).verdict
        is Verdict.DELIVER
    )


# --- typed errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda: CachedPolicy(ENFORCE, "bad-id", T0, T0 + 1, T0), id="bad-id"),
        pytest.param(lambda: CachedPolicy("policy", "a", T0, T0 + 1, T0), id="not-a-policy"),
        pytest.param(lambda: CachedPolicy(ENFORCE, "a", T0, T0 - 1, T0), id="expires-before-fetch"),
        pytest.param(lambda: CachedPolicy(ENFORCE, "a", float("nan"), T0, T0), id="nan-time"),
        pytest.param(lambda: cached().is_expired("now"), id="str-now"),
        pytest.param(lambda: decide_refresh(cached(), None, float("inf")), id="inf-now"),
        pytest.param(
            lambda: apply_fetch_result(None, ValueError("x"), "a", T0), id="untyped-error"
        ),
        pytest.param(lambda: apply_fetch_result(None, ENFORCE, "bad id", T0), id="bad-txt-id"),
        pytest.param(lambda: needs_proactive_refresh(cached(), True), id="bool-now"),
        pytest.param(lambda: needs_proactive_refresh("entry", T0), id="not-an-entry"),
        pytest.param(lambda: CachedPolicy.from_fetch({"mode": "enforce"}, "a", T0), id="dict"),
        pytest.param(lambda: decide_refresh(cached(), "v=STSv1; id=a", T0), id="record-str"),
        pytest.param(lambda: effective_policy(object(), T0), id="cached-object"),
        pytest.param(lambda: sender_action("enforce", "mx.example", True), id="policy-str"),
        pytest.param(lambda: no_mx_left("enforce"), id="no-mx-left-str"),
    ],
)
def test_cache_logic_raises_typed_errors(call):
    with pytest.raises(PolicyError):
        call()
