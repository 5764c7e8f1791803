"""RFC 8461 §3.1: the ``_mta-sts`` TXT record."""

from __future__ import annotations

import pytest

from smtptls.errors import MultipleRecordsError, PolicyError, StsRecordError
from smtptls.mtasts import StsRecord, is_sts_candidate, parse_txt_records
from smtptls.mtasts.record import MAX_FIELDS, MAX_RECORD_LENGTH, MAX_RECORDS

pytestmark = pytest.mark.rfc("8461 3.1")


@pytest.mark.parametrize(
    "records, expected_id",
    [
        pytest.param(["v=STSv1; id=abc"], "abc", id="single"),
        pytest.param(["v=spf1 -all", "v=STSv1; id=abc;"], "abc", id="other-records-discarded"),
        pytest.param(["hello", "v=STSv1;id=Z9"], "Z9", id="garbage-discarded"),
        pytest.param(["v=STSv10; id=x", "v=STSv1; id=y"], "y", id="other-version-discarded"),
        pytest.param(["V=STSv1; id=x", "v=STSv1; id=y"], "y", id="version-is-case-sensitive"),
    ],
)
def test_rfc8461_3_1_discard_records_not_starting_with_version(records, expected_id):
    record = parse_txt_records(records)
    assert record is not None
    assert record.id == expected_id


@pytest.mark.parametrize(
    "records",
    [
        pytest.param([], id="no-records"),
        pytest.param(["v=spf1 -all"], id="only-spf"),
        pytest.param(["v=STSv2; id=a", "id=a; v=STSv1"], id="only-non-sts"),
        pytest.param([""], id="empty-string"),
    ],
)
def test_rfc8461_3_1_no_sts_record_is_none(records):
    assert parse_txt_records(records) is None


@pytest.mark.parametrize(
    "records",
    [
        pytest.param(["v=STSv1; id=a", "v=STSv1; id=b"], id="two-valid"),
        pytest.param(["v=STSv1; id=a", "v=STSv1; id=a"], id="two-identical"),
        pytest.param(["v=STSv1; id=a", "v=STSv1"], id="one-valid-one-invalid"),
    ],
)
def test_rfc8461_3_1_multiple_records_no_policy(records):
    with pytest.raises(MultipleRecordsError) as info:
        parse_txt_records(records)
    assert isinstance(info.value, StsRecordError)
    assert isinstance(info.value, PolicyError)


@pytest.mark.parametrize(
    "records",
    [
        pytest.param(["v=STSv1"], id="bare-version"),
        pytest.param(["v=STSv1; id=a b"], id="space-in-id"),
        pytest.param(["v=spf1", "v=STSv1 ; id=bad-id"], id="candidate-with-wsp-invalid"),
    ],
)
def test_rfc8461_3_1_single_invalid_record_raises(records):
    with pytest.raises(StsRecordError) as info:
        parse_txt_records(records)
    assert not isinstance(info.value, MultipleRecordsError)


@pytest.mark.parametrize(
    "text, candidate",
    [
        ("v=STSv1; id=a", True),
        ("v=STSv1;id=a", True),
        ("v=STSv1 ;id=a", True),
        ("v=STSv1\t; id=a", True),
        ("v=STSv1", True),
        ("v=STSv10; id=a", False),
        ("v=STSv12;id=a", False),
        ("v=STSv2; id=a", False),
        (" v=STSv1; id=a", False),
        ("id=a; v=STSv1", False),
    ],
)
def test_rfc8461_3_1_version_must_come_first(text, candidate):
    assert is_sts_candidate(text) is candidate


def test_rfc8461_3_1_strings_are_concatenated_without_spaces():
    # A1: a record made of several strings arrives here already joined ("" between)
    strings = ["v=STSv1; id=2016", "0831085700Z;"]
    record = parse_txt_records(["".join(strings)])
    assert record is not None
    assert record.id == "20160831085700Z"


@pytest.mark.parametrize(
    "text, expected_id",
    [
        ("v=STSv1; id=a", "a"),
        ("v=STSv1; id=" + "A1" * 16, "A1" * 16),
        ("v=STSv1;id=20160831085700Z;", "20160831085700Z"),
        ("v=STSv1 ; id=x", "x"),
        ("v=STSv1;\t\tid=x\t;", "x"),
        ("v=STSv1; ext=1; id=late", "late"),
    ],
)
def test_rfc8461_3_1_id_and_delimiters(text, expected_id):
    assert StsRecord.parse(text).id == expected_id


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("v=STSv1; id=", id="empty-id"),
        pytest.param("v=STSv1; id=" + "a" * 33, id="id-33-chars"),
        pytest.param("v=STSv1; id=a_b", id="id-underscore"),
        pytest.param("v=STSv1; id=a.b", id="id-dot"),
        pytest.param("v=STSv1; id=\u00e9t\u00e9", id="id-non-ascii"),
        pytest.param("v=STSv1; ID=abc", id="id-key-case-sensitive"),
        pytest.param("v=STSv1; id = abc", id="spaces-around-equals"),
        pytest.param("v=STSv1 id=abc", id="missing-delimiter"),
        pytest.param("v=STSv1;; id=abc", id="empty-field-middle"),
        pytest.param("v=STSv1; id=abc;;", id="two-trailing-delimiters"),
        pytest.param("v=STSv1; id=abc; ;", id="empty-field-with-space"),
        pytest.param("v=STSv1; id=abc; noequals", id="field-without-equals"),
        pytest.param("v=STSv1; id=abc\x00", id="nul-in-id"),
    ],
)
def test_rfc8461_3_1_invalid_fields(text):
    with pytest.raises(StsRecordError):
        StsRecord.parse(text)


@pytest.mark.parametrize(
    "text, extensions",
    [
        ("v=STSv1; id=a; x=1", (("x", "1"),)),
        (
            "v=STSv1; id=a; x-y.z_1=!\"#$%&'()*+,-./:<>?@[]^_`{|}~",
            (("x-y.z_1", "!\"#$%&'()*+,-./:<>?@[]^_`{|}~"),),
        ),
        ("v=STSv1; id=a; " + "n" * 32 + "=v", (("n" * 32, "v"),)),
        ("v=STSv1; b=2; id=a; c=3", (("b", "2"), ("c", "3"))),
        ("v=STSv1; id=a; v=STSv2", (("v", "STSv2"),)),
    ],
)
def test_rfc8461_3_1_extensions_kept_in_order_and_ignored(text, extensions):
    record = StsRecord.parse(text)
    assert record.id == "a"
    assert record.extensions == extensions


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("v=STSv1; id=a; " + "n" * 33 + "=v", id="name-33-chars"),
        pytest.param("v=STSv1; id=a; _x=1", id="name-starts-underscore"),
        pytest.param("v=STSv1; id=a; -x=1", id="name-starts-hyphen"),
        pytest.param("v=STSv1; id=a; x=", id="empty-value"),
        pytest.param("v=STSv1; id=a; x=a b", id="space-in-value"),
        pytest.param("v=STSv1; id=a; x=a=b", id="equals-in-value"),
        pytest.param("v=STSv1; id=a; x=\x7f", id="del-in-value"),
        pytest.param("v=STSv1; id=a; x=\u00e9", id="non-ascii-value"),
    ],
)
def test_rfc8461_3_1_invalid_extensions(text):
    with pytest.raises(StsRecordError):
        StsRecord.parse(text)


def test_rfc8461_3_1_duplicate_id_first_wins_with_warning():
    record = StsRecord.parse("v=STSv1; id=first; id=second")
    assert record.id == "first"
    assert record.extensions == ()
    assert len(record.warnings) == 1
    assert "duplicate id" in record.warnings[0]


def test_rfc8461_3_1_trailing_whitespace_tolerated():
    assert StsRecord.parse("v=STSv1; id=a  \t").id == "a"


@pytest.mark.parametrize(
    "record, text",
    [
        (StsRecord("a"), "v=STSv1; id=a;"),
        (StsRecord("abc", (("x", "1"), ("y", "2"))), "v=STSv1; id=abc; x=1; y=2;"),
    ],
)
def test_rfc8461_3_1_to_text_round_trip(record, text):
    assert record.to_text() == text
    assert StsRecord.parse(text) == record
    assert StsRecord.from_text(text) == record


def test_rfc8461_3_1_to_dict():
    record = StsRecord.parse("v=STSv1; id=abc; x=1")
    assert record.to_dict() == {"v": "STSv1", "id": "abc", "extensions": [["x", "1"]]}


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("",), id="empty-id"),
        pytest.param(("a-b",), id="bad-id"),
        pytest.param(("a", (("x", "a b"),)), id="bad-ext-value"),
        pytest.param(("a", (("_x", "1"),)), id="bad-ext-name"),
        pytest.param(("a", (("x",),)), id="ext-not-pair"),
        pytest.param((None,), id="id-not-text"),
    ],
)
def test_rfc8461_3_1_constructor_validates(args):
    with pytest.raises(StsRecordError):
        StsRecord(*args)


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(
            lambda: StsRecord.parse("v=STSv1; id=a; x=" + "y" * MAX_RECORD_LENGTH), id="too-long"
        ),
        pytest.param(
            lambda: StsRecord.parse("v=STSv1; id=a" + "; x=1" * (MAX_FIELDS + 1)),
            id="too-many-fields",
        ),
        pytest.param(lambda: parse_txt_records(["x"] * (MAX_RECORDS + 1)), id="too-many-records"),
        pytest.param(lambda: StsRecord.parse(b"v=STSv1; id=a"), id="bytes-record"),
        pytest.param(lambda: parse_txt_records([b"v=STSv1; id=a"]), id="bytes-in-list"),
        pytest.param(lambda: parse_txt_records("v=STSv1; id=a"), id="one-string-not-list"),
        pytest.param(lambda: parse_txt_records(None), id="none"),
        pytest.param(lambda: StsRecord("a", (1, 2)), id="extensions-not-pairs"),
    ],
)
def test_rfc8461_3_1_bounded_and_typed_errors(call):
    with pytest.raises(StsRecordError):
        call()
