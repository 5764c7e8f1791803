"""ReportRecord: the RFC 8460 §4 report flattened into store rows."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import ReportParseError, SmtpTlsError
from smtptls.services.reports_server.intake import ReportIntake
from smtptls.store.reports_base import MAX_COUNT, ReportRecord, report_digest, utc_text


def _report(**over):
    base = {
        "organization-name": "Company-X",
        "date-range": {"start-datetime": "2016-04-01T00:00:00Z",
                       "end-datetime": "2016-04-01T23:59:59Z"},
        "contact-info": "sts-reporting@company-x.example",
        "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
        "policies": [{
            "policy": {"policy-type": "sts", "policy-string": ["version: STSv1", "mode: testing"],
                       "policy-domain": "Company-Y.Example.", "mx-host": ["*.mail.company-y.example"]},
            "summary": {"total-successful-session-count": 5326, "total-failure-session-count": 303},
            "failure-details": [
                {"result-type": "certificate-expired", "sending-mta-ip": "2001:db8:abcd:0012::1",
                 "receiving-mx-hostname": "mx1.mail.company-y.example", "failed-session-count": 100},
                {"result-type": "starttls-not-supported", "sending-mta-ip": "2001:db8:abcd:0013::1",
                 "receiving-mx-hostname": "MX2.mail.company-y.example.", "receiving-ip": "203.0.113.56",
                 "failed-session-count": 200, "additional-information": "https://x.example/a"},
                {"result-type": "validation-failure", "sending-mta-ip": "198.51.100.62",
                 "receiving-ip": "203.0.113.58", "receiving-mx-hostname": "mx-backup.mail.company-y.example",
                 "failed-session-count": 3, "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"},
            ],
        }],
    }
    base.update(over)
    return base


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_report_fields_flattened():
    rec = ReportRecord.from_dict(_report())
    assert rec.report_id == "5065427c-23d3-47ca-b6e0-946ea0e8c4be"
    assert rec.organization == "Company-X"
    assert rec.start == datetime(2016, 4, 1, tzinfo=UTC)
    assert rec.day.isoformat() == "2016-04-01"
    assert (rec.successful, rec.failed) == (5326, 303)
    (p,) = rec.policies
    assert p.policy_domain == "company-y.example"  # case and trailing dot normalised
    assert [f.failed_session_count for f in p.failures] == [100, 200, 3]
    assert p.failures[1].receiving_mx_hostname == "mx2.mail.company-y.example"
    assert p.failures[2].failure_reason_code == "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
    assert json.loads(rec.raw_json)["report-id"] == rec.report_id


@pytest.mark.parametrize(
    ("change", "check"),
    [
        pytest.param({"date-range": {"start-datetime": "2023-01-10T00:00:00",
                                     "end-datetime": "2023-01-11T00:00:00"}},
                     lambda r: r.start.tzinfo is not None and r.start.hour == 0, id="no-time-zone-is-utc"),
        pytest.param({"date-range": {"start-datetime": "2024-05-01T00:00:00+02:00",
                                     "end-datetime": "2024-05-02T00:00:00+02:00"}},
                     lambda r: r.day.isoformat() == "2024-04-30", id="offset-converted-to-utc-day"),
        pytest.param({"contact-info": None}, lambda r: r.contact_info == "", id="contact-null"),
        pytest.param({"policies": []}, lambda r: r.policies == () and r.failed == 0, id="no-policies"),
        pytest.param({"policies": [{"policy": {"policy-type": "no-policy-found"},
                                    "summary": {"total-successful-session-count": 4}}]},
                     lambda r: r.policies[0].policy_domain == "" and r.failed == 0,
                     id="no-policy-domain-missing-failure-count"),
        pytest.param({"policies": [{"policy": {"policy-type": "sts", "policy-domain": "a.example",
                                               "mx-host": "mx.a.example"},
                                    "summary": {"total-successful-session-count": 1,
                                                "total-failure-session-count": 0}}]},
                     lambda r: r.policies[0].mx_hosts == ("mx.a.example",), id="mx-host-string-erratum-6241"),
        pytest.param({"policies": [{"policy": {"policy-type": "quantum", "policy-domain": "a.example"},
                                    "summary": {"total-successful-session-count": 0,
                                                "total-failure-session-count": 2},
                                    "failure-details": [{"result-type": "novel-failure",
                                                         "failed-session-count": 2}]}]},
                     lambda r: r.policies[0].failures[0].result_type == "novel-failure",
                     id="unknown-types-kept"),
    ],
)
def test_rfc8460_4_tolerated_variants(change, check):
    assert check(ReportRecord.from_dict(_report(**change)))


@pytest.mark.parametrize(
    ("data", "path"),
    [
        pytest.param([], "$", id="not-an-object"),
        pytest.param(_report(**{"report-id": None}), "$.report-id", id="missing-report-id"),
        pytest.param(_report(**{"report-id": ""}), "$.report-id", id="empty-report-id"),
        pytest.param(_report(**{"report-id": {"a": 1}}), "$.report-id", id="report-id-object"),
        pytest.param(_report(**{"date-range": "yesterday"}), "$.date-range", id="date-range-string"),
        pytest.param(_report(**{"date-range": {"start-datetime": "tuesday",
                                               "end-datetime": "2016-04-01T23:59:59Z"}}),
                     "$.date-range.start-datetime", id="bad-datetime"),
        pytest.param(_report(policies={"a": 1}), "$.policies", id="policies-object"),
        pytest.param(_report(policies=[{"policy": {}, "summary": {"total-successful-session-count": -1}}]),
                     "$.policies[0].summary.total-successful-session-count", id="negative-count"),
        pytest.param(_report(policies=[{"policy": {}, "summary": {"total-successful-session-count": True}}]),
                     "$.policies[0].summary.total-successful-session-count", id="boolean-count"),
        pytest.param(_report(policies=[{"policy": {}, "summary": {"total-failure-session-count": 10**30}}]),
                     "$.policies[0].summary.total-failure-session-count", id="huge-count"),
        pytest.param(_report(policies=[{"policy": {}, "summary": {"total-failure-session-count": 1.5}}]),
                     "$.policies[0].summary.total-failure-session-count", id="float-count"),
        pytest.param(_report(policies=[{"summary": {}}]), "$.policies[0].policy", id="policy-missing"),
        pytest.param(_report(policies=[{"policy": {}, "failure-details": [7]}]),
                     "$.policies[0].failure-details[0]", id="failure-detail-not-object"),
    ],
)
def test_rfc8460_4_malformed_reports_rejected_with_path(data, path):
    with pytest.raises(ReportParseError) as info:
        ReportRecord.from_dict(data)
    assert info.value.path == path


def test_count_bound_is_inclusive():
    ok = _report(policies=[{"policy": {}, "summary": {"total-successful-session-count": MAX_COUNT}}])
    assert ReportRecord.from_dict(ok).successful == MAX_COUNT


def test_warnings_from_parsed_report_are_kept():
    class Parsed:
        warnings = ("date-range without time zone",)

        def to_dict(self):
            return _report()

    rec = ReportRecord.from_report(Parsed())
    assert rec.warnings == ("date-range without time zone",)


# --- properties ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["report-id", "organization-name", "date-range", "policies", "policy",
                         "summary", "failure-details", "start-datetime", "end-datetime",
                         "total-successful-session-count", "result-type", "x"]),
        children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_property_only_typed_errors_escape(value):
    try:
        ReportRecord.from_dict(value)
    except SmtpTlsError:
        pass


counts = st.integers(min_value=0, max_value=MAX_COUNT)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=30)


@st.composite
def reports(draw):
    policies = []
    for _ in range(draw(st.integers(0, 3))):
        policies.append({
            "policy": {"policy-type": draw(st.sampled_from(["sts", "tlsa", "no-policy-found"])),
                       "policy-domain": draw(st.from_regex(r"[a-z]{1,10}\.example", fullmatch=True))},
            "summary": {"total-successful-session-count": draw(counts),
                        "total-failure-session-count": draw(counts)},
            "failure-details": [{"result-type": draw(names), "failed-session-count": draw(counts)}
                                for _ in range(draw(st.integers(0, 3)))],
        })
    day = draw(st.dates(min_value=datetime(2000, 1, 1).date(), max_value=datetime(2099, 1, 1).date()))
    return {"organization-name": draw(names), "report-id": draw(names),
            "date-range": {"start-datetime": f"{day}T00:00:00Z", "end-datetime": f"{day}T23:59:59Z"},
            "contact-info": draw(names), "policies": policies}


@settings(max_examples=200, deadline=None)
@given(reports())
def test_property_round_trip_through_raw_json(data):
    rec = ReportRecord.from_dict(data)
    again = ReportRecord.from_dict(json.loads(rec.raw_json))
    assert again == rec
    assert rec.successful == sum(p["summary"]["total-successful-session-count"] for p in data["policies"])


# --- the digest from the quick reading's tree ----------------------------------------------

_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(value=_JSON_VALUES, ascii_only=st.booleans(), indent=st.sampled_from([None, 1]))
def test_property_digest_from_the_tree_is_the_standard_digest(value, ascii_only, indent):
    # The tree orjson decodes (floats and integers past 64 bits included: there the
    # standard encoding decides) gives the digest the standard decoder's value gives.
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    try:
        tree = orjson.loads(text)
    except orjson.JSONDecodeError:
        return  # orjson refuses it (an unpaired surrogate): no tree is ever passed
    assert report_digest(text, tree=tree) == report_digest(text)


def test_digest_of_a_parsed_body_equals_the_digest_of_its_text():
    body = json.dumps(_report(), indent=2).encode()
    for data in (body, gzip.compress(body)):
        record = ReportIntake(None, max_body=10**6, max_decompressed=10**7).parse_body(data)
        assert record.raw_json == body.decode()
        assert record.digest == report_digest(body.decode())


@settings(max_examples=300, deadline=None)
@given(when=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)),
                                                    timezone(timedelta(hours=5, minutes=30))])))
def test_property_store_time_text_is_what_strftime_writes(when):
    assert utc_text(when) == when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
