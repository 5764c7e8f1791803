"""The policy-change verdict (smtptls.mtasts.change.compare), section by section of RFC 8461.

§3.1 the id, §3.2 max_age, §3.3 the order of policy and record, §4.1 MX matching
(wildcards), §5 the modes, §8.1 policy updates (MX migrations), §8.3 withdrawal.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtptls.cli.publish import PolicyState, body_digest, policy_state
from smtptls.mtasts.change import ChangeVerdict, Level, compare
from smtptls.mtasts.policy import Mode, Policy, short_enforced_max_age

D = "example.com"
MX1, MX2 = "mx1.example.com", "mx2.example.com"
T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
DAY = 86400


def _p(mode: str = "enforce", *mx: str, max_age: int = 604800) -> Policy:
    return Policy("STSv1", Mode(mode), max_age, mx)


def _codes(v: ChangeVerdict, level: Level | None = None) -> set[str]:
    return {f.code for f in v.findings if level is None or f.level is level}


def _index(steps: tuple[str, ...], fragment: str) -> int:
    hits = [i for i, s in enumerate(steps) if fragment in s]
    assert hits, (fragment, steps)
    return hits[0]


def _change(old: Policy | None, new: Policy, current=(MX1,), planned=None, *,
            old_id: str | None = "1", new_id: str = "2", min_max_age: int | None = DAY):
    return compare(D, new, new_id, old=old, old_id=old_id if old else None,
                   current_mx=current, planned_mx=planned, record=f"v=STSv1; id={new_id}",
                   min_max_age=min_max_age)


# --- §8.1 MX migrations ------------------------------------------------------------------


@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_mx_added_outside_enforced_policy_is_unsafe_with_rollout_order():
    v = _change(_p("enforce", MX1, max_age=DAY), _p("enforce", MX1, MX2), planned=(MX2,))
    assert not v.safe
    assert _codes(v, Level.UNSAFE) == {"planned-mx-outside-old"}
    assert MX2 in v.reasons[0] and "86400 s" in v.reasons[0]
    s = v.steps
    # list old + new, new id; TXT; wait the OLD max_age; change MX; drop the old MX
    first = _index(s, "listing the old and the new MX hosts")
    assert f"mx: {MX1}, {MX2}" in s[first]
    assert _index(s, "IN TXT") > first
    wait = _index(s, "wait the live policy's max_age (86400 s)")
    change = _index(s, f"change the MX RRset to the planned hosts ({MX2})")
    drop = _index(s, f"drop the old MX hosts from the policy (mx: {MX2}) with a new id")
    assert first < wait < change < drop
    assert [x[:2] for x in s] == ["1.", "2.", "3.", "4.", "5."]


@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_new_policy_dropping_a_current_mx_is_unsafe_and_bridged():
    v = _change(_p("enforce", MX1), _p("enforce", MX2))
    assert not v.safe
    assert _codes(v, Level.UNSAFE) == {"mx-not-covered"}
    assert f"current MX host {MX1}" in v.reasons[0] and "refuse" in v.reasons[0]
    bridge = v.steps[0]
    assert f"--mx {MX1} --mx {MX2}" in bridge  # the old host kept while it is in use
    assert "<its new id>" in v.steps[1]  # the bridging policy is not the one asked for
    assert "removing mx1.example.com" in v.steps[3]
    assert f"(mx: {MX2})" in v.steps[4]


@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_mx_set_covered_by_both_policies_is_safe():
    old = _p("enforce", MX1, MX2)
    v = _change(old, _p("enforce", MX1, MX2, max_age=1209600), current=(MX1, MX2),
                planned=(MX2,))
    assert v.safe and _codes(v, Level.UNSAFE) == set()
    assert _codes(v) == {"max-age-raised"}
    assert v.steps[0].startswith("1. publish the policy at https://mta-sts.example.com/")
    assert v.steps[1].startswith("2. then publish (or update) the TXT record")


@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_adding_an_mx_to_the_policy_only_is_safe_with_the_wait():
    v = _change(_p("enforce", MX1, max_age=DAY), _p("enforce", MX1, MX2))
    assert v.safe
    wait = _index(v.steps, "3. wait the live policy's max_age (86400 s)")
    later = _index(v.steps, f"4. new mx entries ({MX2}): only put such hosts into the MX")
    assert wait < later


@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_planned_mx_the_new_policy_misses_is_unsafe():
    v = _change(_p("enforce", MX1), _p("enforce", MX1), planned=(MX1, "mx3.example.com"))
    assert "planned-mx-not-covered" in _codes(v, Level.UNSAFE)


@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_planned_mx_outside_a_testing_policy_is_only_a_warning():
    v = _change(_p("testing", MX1), _p("testing", MX1, MX2), planned=(MX2,))
    assert v.safe
    assert "planned-mx-outside-old" in _codes(v, Level.WARNING)


# --- §4.1 wildcards ------------------------------------------------------------------------


@pytest.mark.rfc("8461 4.1")
@pytest.mark.parametrize(("old_mx", "new_mx", "current", "planned", "unsafe"), [
    (("*.mx.example.com",), ("*.mx.example.com",), ("a.mx.example.com",),
     ("b.mx.example.com",), set()),
    (("*.mx.example.com",), ("*.MX.example.com",), ("A.MX.Example.COM.",), None, set()),
    (("*.mx.example.com",), ("*.mx.example.com",), ("a.mx.example.com",),
     ("a.b.mx.example.com",), {"planned-mx-outside-old", "planned-mx-not-covered"}),
    (("*.mx.example.com",), ("*.example.com",), ("a.mx.example.com",), None,
     {"mx-not-covered"}),
    (("*.mx.example.com",), ("*.mx.example.com",), ("mx.example.com",), None,
     {"mx-not-covered"}),
    ((MX1,), ("*.example.com",), (MX1,), (MX2,), {"planned-mx-outside-old"}),
], ids=["same-wildcard", "case-and-dot", "one-label-only", "wider-is-not-deeper",
        "wildcard-not-the-base", "new-wildcard-old-literal"])
def test_rfc8461_4_1_wildcard_patterns(old_mx, new_mx, current, planned, unsafe):
    v = _change(_p("enforce", *old_mx), _p("enforce", *new_mx), current=current,
                planned=planned)
    assert _codes(v, Level.UNSAFE) == unsafe
    assert v.safe is (not unsafe)


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_a_new_wildcard_is_an_added_entry_a_covered_literal_is_not():
    old = _p("enforce", "*.mx.example.com", max_age=DAY)
    covered = _change(old, _p("enforce", "*.mx.example.com", "b.mx.example.com"),
                      current=("a.mx.example.com",))
    assert not any("new mx entries" in s for s in covered.steps)
    wider = _change(old, _p("enforce", "*.mx.example.com", "*.example.com"),
                    current=("a.mx.example.com",))
    assert any("new mx entries (*.example.com)" in s for s in wider.steps)


# --- §5 modes ----------------------------------------------------------------------------


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_testing_to_enforce_is_safe_and_says_what_to_watch():
    v = _change(_p("testing", MX1), _p("enforce", MX1))
    assert v.safe
    upgrade = next(f for f in v.findings if f.code == "mode-upgrade")
    assert upgrade.level is Level.WARNING and "TLSRPT" in upgrade.message
    assert any(s.startswith("watch (testing -> enforce)") for s in v.steps)


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_enforce_to_testing_is_a_downgrade():
    v = _change(_p("enforce", MX1), _p("testing", MX1))
    assert v.safe
    assert "mode-downgrade" in _codes(v, Level.WARNING)
    assert any("lowering security (enforce -> testing)" in s for s in v.steps)


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_a_testing_policy_missing_a_current_mx_only_warns():
    v = _change(_p("testing", MX1), _p("testing", MX2))
    assert v.safe
    assert "mx-not-covered" in _codes(v, Level.WARNING)


# --- §3.2 max_age -----------------------------------------------------------------------


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_max_age_lowered_is_a_warning_and_a_step():
    v = _change(_p("enforce", MX1, max_age=604800), _p("enforce", MX1, max_age=DAY))
    assert v.safe
    assert "max-age-lowered" in _codes(v, Level.WARNING)
    assert any(s.startswith("max_age lowered (604800 -> 86400 s)") for s in v.steps)


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(("mode", "max_age", "short"), [
    ("enforce", 3600, True), ("enforce", DAY, False), ("testing", 3600, False),
])
def test_rfc8461_3_2_max_age_too_short_for_enforce(mode, max_age, short):
    v = _change(_p(mode, MX1, max_age=max_age), _p(mode, MX1, max_age=max_age))
    assert ("max-age-short" in _codes(v, Level.WARNING)) is short
    assert v.safe


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(("max_age", "floor", "below"), [
    (3600, DAY, "below one day"), (DAY - 1, DAY, "below one day"), (3600, 7200, "below 7200 s"),
])
def test_rfc8461_3_2_short_max_age_words_come_from_the_one_rule(max_age, floor, below):
    # `publish mta-sts --check-change` (compare) and `check` (check/mtasts.py) both ask
    # short_enforced_max_age; the check's words are pinned by its golden files
    new = _p("enforce", MX1, max_age=max_age)
    text = short_enforced_max_age(new, floor)
    assert text is not None and text.startswith(f"max_age {max_age} s is {below}: ")
    (found,) = [f for f in _change(None, new, min_max_age=floor).findings
                if f.code == "max-age-short"]
    assert found.message == text
    assert short_enforced_max_age(_p("enforce", MX1, max_age=floor), floor) is None
    assert short_enforced_max_age(_p("testing", MX1, max_age=max_age), floor) is None


# --- §3.1 the id -------------------------------------------------------------------------


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_body_changed_but_id_unchanged_is_unsafe():
    v = _change(_p("enforce", MX1), _p("enforce", MX1, MX2), old_id="7", new_id="7")
    assert not v.safe
    assert _codes(v, Level.UNSAFE) == {"id-unchanged"}
    assert "never fetch the new one" in v.reasons[0]


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_ids_from_the_publish_rule_change_exactly_with_the_body():
    """The id of publish's policy_state, with the live body as the previous state."""
    live = _p("enforce", MX1)
    previous = PolicyState("20261101000000abcdef012345", body_digest(live.to_text()), "")
    same = policy_state(live.to_text(), previous, T0).id
    v = _change(live, _p("enforce", MX1), old_id=previous.id, new_id=same)
    assert same == previous.id and _codes(v) == {"no-change"} and v.safe
    new = _p("enforce", MX1, MX2)
    changed = policy_state(new.to_text(), previous, T0).id
    assert changed != previous.id
    assert "id-unchanged" not in _codes(_change(live, new, old_id=previous.id,
                                                new_id=changed))


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_same_body_new_id_is_harmless():
    v = _change(_p("enforce", MX1), _p("enforce", MX1), old_id="1", new_id="2")
    assert v.safe and _codes(v) == {"id-changed-same-body"}


# --- §3.3 first publication, §8.3 withdrawal ---------------------------------------------


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_first_publication_is_safe_policy_before_txt():
    v = _change(None, _p("testing", MX1))
    assert v.safe and v.first_publication
    assert "first-publication" in _codes(v, Level.NOTE)
    assert v.steps[0].startswith("1. publish the policy at https://mta-sts.example.com/")
    assert v.steps[1].startswith("2. then publish (or update) the TXT record")
    assert 'IN TXT "v=STSv1; id=2"' in v.steps[1]


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_first_enforce_publication_missing_an_mx_is_unsafe():
    v = _change(None, _p("enforce", MX2))
    assert v.first_publication and not v.safe
    assert _codes(v, Level.UNSAFE) == {"mx-not-covered"}
    assert any("safest in mode testing" in s for s in v.steps)


@pytest.mark.rfc("8461 8.3")
def test_rfc8461_8_3_withdrawal_keeps_mode_none_for_the_old_max_age():
    v = _change(_p("enforce", MX1, max_age=DAY), Policy("STSv1", Mode.NONE, DAY, ()))
    assert v.safe
    assert "mode-downgrade" in _codes(v, Level.WARNING)
    assert any("to withdraw MTA-STS" in s and "86400 s" in s for s in v.steps)


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_no_mx_records_is_a_warning():
    v = _change(_p("enforce", MX1), _p("enforce", MX1), current=())
    assert "no-mx-records" in _codes(v, Level.WARNING)


def test_live_mx_already_uncovered_is_reported_with_what_the_new_policy_does():
    v = _change(_p("enforce", MX1), _p("enforce", MX1, MX2), current=(MX1, MX2))
    live = next(f for f in v.findings if f.code == "live-mx-not-covered")
    assert MX2 in live.message and "the new policy matches it" in live.message


def test_to_dict_is_stable_json():
    v = _change(_p("enforce", MX1), _p("enforce", MX2), planned=(MX2,))
    data = json.loads(json.dumps(v.to_dict()))
    assert list(data) == ["domain", "verdict", "safe", "first_publication", "live", "new",
                          "current_mx", "planned_mx", "findings", "steps"]
    assert data["verdict"] == "unsafe" and data["live"]["id"] == "1"
    assert data["new"]["policy"]["mx"] == [MX2] and data["planned_mx"] == [MX2]
    assert {"code", "level", "message", "rfc"} == set(data["findings"][0])


# --- properties -------------------------------------------------------------------------

_label = st.sampled_from(["a", "b", "mx", "mx1", "mx2", "x-y"])
_host = st.lists(_label, min_size=1, max_size=3).map(lambda ls: ".".join([*ls, "example",
                                                                            "com"]))
_pattern = st.builds(lambda w, h: ("*." if w else "") + h, st.booleans(), _host)
_policy = st.builds(lambda mode, mx, age: Policy("STSv1", mode, age, tuple(mx)),
                    st.sampled_from([Mode.ENFORCE, Mode.TESTING]),
                    st.lists(_pattern, min_size=1, max_size=4),
                    st.integers(0, 31557600))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old=st.none() | _policy, new=_policy, current=st.lists(_host, max_size=4),
       planned=st.none() | st.lists(_host, max_size=4))
def test_compare_never_raises_and_unsafe_always_has_a_reason(old, new, current, planned):
    v = _change(old, new, current=current, planned=planned)
    assert v.safe is (not v.reasons)
    assert v.steps[0].startswith("1. ") and v.steps[1].startswith("2. ")
    json.dumps(v.to_dict())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=_policy, current=st.lists(_host, max_size=4))
@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_republishing_a_policy_covering_the_mx_set_is_safe(policy, current):
    current = [h for h in current if policy.matches_mx(h)]
    assert _change(policy, policy, current=current, old_id="1", new_id="1").safe
