"""Property tests: the MTA-STS parsers raise only typed errors and round-trip."""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtptls.errors import PolicyError, StsRecordError
from smtptls.mtasts import (
    MAX_AGE_LIMIT,
    Mode,
    Policy,
    StsRecord,
    cert_matches,
    is_text_plain,
    mx_matches,
    normalize_host,
    parse_policy,
    parse_txt_records,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies ----------------------------------------------------------------------------

ALNUM = string.ascii_letters + string.digits
label = st.builds(
    lambda first, middle, last: first + middle + last,
    st.sampled_from(ALNUM),
    st.text(ALNUM + "-", max_size=20),
    st.sampled_from(ALNUM),
) | st.sampled_from(ALNUM)
domain = st.lists(label, min_size=1, max_size=5).map(".".join).filter(lambda d: len(d) <= 250)
mx_pattern = st.builds(lambda wild, d: ("*." if wild else "") + d, st.booleans(), domain)
ext_name = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(ALNUM),
    st.text(ALNUM + "_-.", max_size=31),
).filter(lambda n: n not in {"version", "mode", "max_age", "mx", "id"})
printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
record_ext_value = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="=;"),
    min_size=1,
    max_size=20,
)
policy_vchar = st.characters(blacklist_categories=("Cs",), min_codepoint=0x21).filter(
    lambda c: c != "\x7f"
)
policy_ext_value = (
    st.builds(
        lambda first, middle, last: first + middle + last,
        policy_vchar,
        st.text(st.sampled_from(" ") | policy_vchar, max_size=20),
        policy_vchar,
    )
    | policy_vchar
)


@st.composite
def policies(draw) -> Policy:
    mode = draw(st.sampled_from(list(Mode)))
    mx = draw(st.lists(mx_pattern, min_size=0 if mode is Mode.NONE else 1, max_size=6))
    exts = draw(st.lists(st.tuples(ext_name, policy_ext_value), max_size=4))
    return Policy("STSv1", mode, draw(st.integers(0, MAX_AGE_LIMIT)), tuple(mx), tuple(exts))


records = st.builds(
    StsRecord,
    st.text(ALNUM, min_size=1, max_size=32),
    st.lists(st.tuples(ext_name, record_ext_value), max_size=4).map(tuple),
)

any_text = st.text(max_size=400)
control_heavy = st.text(
    st.characters(max_codepoint=0x7F) | st.sampled_from("\r\n\t: ;=*."), max_size=400
)
huge = st.tuples(st.text(min_size=1, max_size=30), st.integers(1000, 5000)).map(
    lambda t: t[0] * t[1]
)


def _mutate(text: str, data) -> str:
    pos = data.draw(st.integers(0, len(text)))
    junk = data.draw(st.text(max_size=5))
    cut = data.draw(st.integers(0, 3))
    return text[:pos] + junk + text[pos + cut :]


# --- parsers raise only typed errors --------------------------------------------------------


@SETTINGS
@given(st.one_of(any_text, control_heavy, huge))
def test_parse_policy_raises_only_policy_errors(text):
    try:
        policy = parse_policy(text)
    except PolicyError:
        return
    assert isinstance(policy, Policy)
    assert parse_policy(policy.to_text()) == policy


@SETTINGS
@given(policies(), st.data())
def test_parse_policy_mutated_valid_policy(policy, data):
    text = _mutate(policy.to_text(), data)
    try:
        parsed = parse_policy(text)
    except PolicyError:
        return
    assert parse_policy(parsed.to_text()) == parsed


@SETTINGS
@given(st.one_of(any_text, control_heavy, huge))
def test_record_parse_raises_only_record_errors(text):
    try:
        record = StsRecord.parse(text)
    except StsRecordError:
        return
    assert StsRecord.parse(record.to_text()) == record


@SETTINGS
@given(st.lists(st.one_of(any_text, control_heavy, st.just("v=STSv1; id=a")), max_size=5))
def test_parse_txt_records_raises_only_record_errors(answer):
    try:
        result = parse_txt_records(answer)
    except StsRecordError:
        return
    assert result is None or isinstance(result, StsRecord)


@SETTINGS
@given(records, st.data())
def test_record_mutated_raises_only_record_errors(record, data):
    text = _mutate(record.to_text(), data)
    try:
        StsRecord.parse(text)
    except StsRecordError:
        pass


# --- round trips --------------------------------------------------------------------------


@SETTINGS
@given(policies())
def test_policy_round_trip(policy):
    text = policy.to_text()
    assert parse_policy(text) == policy
    assert parse_policy(text.replace("\r\n", "\n")) == policy
    assert parse_policy(text.rstrip("\r\n")) == policy


@SETTINGS
@given(records)
def test_record_round_trip(record):
    assert StsRecord.parse(record.to_text()) == record
    assert parse_txt_records(["v=spf1 -all", record.to_text()]) == record


# --- matching never raises -------------------------------------------------------------------


@SETTINGS
@given(st.one_of(any_text, mx_pattern), st.one_of(any_text, domain))
def test_mx_matches_never_raises(pattern, host):
    assert mx_matches(pattern, host) in (True, False)
    normalize_host(host)


@SETTINGS
@given(st.one_of(any_text, domain), st.lists(st.one_of(any_text, mx_pattern), max_size=5))
def test_cert_matches_never_raises(host, sans):
    assert cert_matches(host, sans) in (True, False)


@SETTINGS
@given(label, domain)
def test_wildcard_matches_exactly_one_label(first, base):
    host = f"{first}.{base}"
    assert mx_matches(f"*.{base}", host) is (len(host) <= 253)
    assert mx_matches(f"*.{base}", base) is False
    assert mx_matches(f"*.{base}", f"x.{host}") is False
    assert cert_matches(host.upper(), [f"*.{base}."]) is (len(host) <= 253)


@SETTINGS
@given(domain)
def test_exact_match_is_case_and_dot_insensitive(name):
    assert mx_matches(name, name.upper() + ".")
    assert cert_matches(name.swapcase(), [name])


@SETTINGS
@given(st.one_of(any_text, control_heavy))
def test_is_text_plain_never_raises(value):
    assert is_text_plain(value) in (True, False)
