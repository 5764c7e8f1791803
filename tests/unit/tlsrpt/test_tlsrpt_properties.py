"""Round trips for generated reports: to_json -> parse_report(strict) gives the same report."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.tlsrpt import FailureDetail, PolicyResult, PolicyType, Report, ResultType, parse_report
from smtptls.tlsrpt.decode import MAX_COUNT

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,12}[a-z0-9])?", fullmatch=True)
_DOMAIN = st.builds(lambda a, b: f"{a}.{b}", _LABEL, st.sampled_from(["example", "com", "de"]))
_PATTERN = st.one_of(_DOMAIN, _DOMAIN.map(lambda d: "*." + d))
_TEXT = st.text(min_size=1, max_size=40).filter(lambda s: s.strip())
_IP = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
_COUNT = st.one_of(st.integers(0, 10_000), st.integers(0, MAX_COUNT))
_KNOWN = {t.value for t in ResultType}
_RESULT = st.one_of(
    st.sampled_from(list(ResultType)),
    st.from_regex(r"[a-z][a-z-]{2,20}", fullmatch=True).filter(lambda s: s not in _KNOWN),
)
_URI = st.builds(lambda d, p: f"https://{d}/{p}", _DOMAIN, _LABEL)
_MOMENT = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
)


@st.composite
def _details(draw):
    return FailureDetail(
        result_type=draw(_RESULT),
        failed_session_count=draw(_COUNT),
        sending_mta_ip=draw(_IP),
        receiving_mx_hostname=draw(_DOMAIN),
        receiving_mx_helo=draw(st.none() | _TEXT),
        receiving_ip=draw(st.none() | _IP),
        additional_information=draw(st.none() | _URI),
        failure_reason_code=draw(st.none() | _TEXT),
    )


@st.composite
def _policies(draw):
    policy_type = draw(st.sampled_from(list(PolicyType)))
    if policy_type is PolicyType.STS:
        mx = tuple(draw(st.lists(_PATTERN, min_size=1, max_size=3)))
        lines = ("version: STSv1", f"mode: {draw(st.sampled_from(['enforce', 'testing']))}",
                 *(f"mx: {m}" for m in mx), "max_age: 86400")
    elif policy_type is PolicyType.TLSA:
        mx = ()
        lines = tuple(draw(st.lists(st.from_regex(r"3 1 1 [0-9A-F]{64}", fullmatch=True),
                                    min_size=1, max_size=3)))
    else:
        mx, lines = (), ()
    return PolicyResult(
        policy_type=policy_type,
        policy_domain=draw(_DOMAIN),
        total_successful_session_count=draw(_COUNT),
        total_failure_session_count=draw(_COUNT),
        policy_string=lines,
        mx_host=mx,
        failure_details=tuple(draw(st.lists(_details(), max_size=4))),
    )


@st.composite
def _reports(draw):
    start = draw(_MOMENT)
    return Report(
        organization_name=draw(_TEXT),
        start_datetime=start,
        end_datetime=start + draw(st.timedeltas(timedelta(0), timedelta(days=8))),
        contact_info=f"{draw(_LABEL)}@{draw(_DOMAIN)}",
        report_id=draw(_TEXT),
        policies=tuple(draw(st.lists(_policies(), max_size=4))),
    )


@settings(max_examples=80, deadline=None)
@given(_reports())
def test_property_generated_report_round_trips_strictly(report):
    text = report.to_json()
    again = parse_report(text, strict=True)
    assert again == report
    assert parse_report(gzip.compress(text.encode()), strict=True) == report
    assert json.loads(text) == report.to_dict()
    assert again.total_successful == sum(
        p.total_successful_session_count for p in report.policies)


@settings(max_examples=50, deadline=None)
@given(_reports())
def test_property_tolerant_parse_of_valid_report_has_no_deviations(report):
    """A strictly valid report carries, in tolerant mode, only the notes strict mode shows."""
    text = report.to_json()
    assert parse_report(text).warnings == parse_report(text, strict=True).warnings
