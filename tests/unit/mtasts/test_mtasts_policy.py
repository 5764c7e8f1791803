"""RFC 8461 §3.2: the policy file; §3.3: its media type."""

from __future__ import annotations

import pytest

from smtptls.errors import PolicyError, PolicySyntaxError
from smtptls.mtasts import MAX_AGE_LIMIT, Mode, Policy, is_text_plain, parse_policy
from smtptls.mtasts.policy import MAX_LINES, MAX_MX, MAX_POLICY_BYTES, check_mx_pattern

BASE = "version: STSv1\nmode: enforce\nmx: mail.example.com\nmax_age: 86400\n"


def _policy(**fields: str) -> str:
    lines = {"version": "STSv1", "mode": "enforce", "mx": "mail.example.com", "max_age": "86400"}
    lines.update(fields)
    return "".join(f"{k}: {v}\n" for k, v in lines.items() if v is not None)


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param(BASE, id="lf"),
        pytest.param(BASE.replace("\n", "\r\n"), id="crlf"),
        pytest.param(
            "version: STSv1\r\nmode: enforce\nmx: mail.example.com\r\nmax_age: 86400",
            id="mixed-no-final-newline",
        ),
        pytest.param(
            "version:STSv1\nmode:enforce\nmx:mail.example.com\nmax_age:86400\n",
            id="no-space-after-colon",
        ),
        pytest.param(
            "version:\t STSv1 \t\nmode:  enforce\t\nmx: mail.example.com  \nmax_age: 86400\t\n",
            id="wsp-after-colon-and-at-end",
        ),
        pytest.param(
            "max_age: 86400\nmx: mail.example.com\nmode: enforce\nversion: STSv1\n", id="any-order"
        ),
    ],
)
def test_rfc8461_3_2_line_format(text):
    policy = parse_policy(text)
    assert policy == Policy("STSv1", Mode.ENFORCE, 86400, ("mail.example.com",))


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "text, line",
    [
        pytest.param(" version: STSv1\n", 1, id="leading-space"),
        pytest.param("version STSv1\n", 1, id="no-colon"),
        pytest.param("version: STSv1\nmode: enforce\r\r\n", 2, id="stray-cr"),
        pytest.param("version: STSv1\n: x\n", 2, id="empty-key"),
        pytest.param("version: STSv1\nmo de: x\n", 2, id="space-in-key"),
    ],
)
def test_rfc8461_3_2_bad_lines_name_the_line(text, line):
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(text)
    assert info.value.line == line
    assert f"line {line}" in str(info.value)
    assert info.value.reason


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "fields, reason",
    [
        pytest.param({"version": "STSv2"}, "bad version", id="version-2"),
        pytest.param({"version": "stsv1"}, "bad version", id="version-case"),
        pytest.param({"version": None}, "missing version", id="version-missing"),
        pytest.param({"mode": "Enforce"}, "bad mode", id="mode-case"),
        pytest.param({"mode": "report"}, "bad mode", id="mode-draft-report"),
        pytest.param({"mode": None}, "missing mode", id="mode-missing"),
        pytest.param({"max_age": None}, "missing max_age", id="max-age-missing"),
        pytest.param({"max_age": ""}, "bad max_age", id="max-age-empty"),
        pytest.param({"max_age": "12345678901"}, "bad max_age", id="max-age-11-digits"),
        pytest.param({"max_age": "+5"}, "bad max_age", id="max-age-plus"),
        pytest.param({"max_age": "1e3"}, "bad max_age", id="max-age-exponent"),
        pytest.param({"max_age": "\u0661\u0662"}, "bad max_age", id="max-age-arabic-digits"),
        pytest.param({"max_age": "1 2"}, "bad max_age", id="max-age-inner-space"),
    ],
)
def test_rfc8461_3_2_required_fields_and_values(fields, reason):
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(_policy(**fields))
    assert reason in str(info.value)


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "value, expected",
    [
        ("0", 0),
        ("1", 1),
        ("0000086400", 86400),
        ("31557600", MAX_AGE_LIMIT),
    ],
)
def test_rfc8461_3_2_max_age_range(value, expected):
    assert parse_policy(_policy(max_age=value)).max_age == expected


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize("value", ["31557601", "9999999999", "4294967296"])
def test_rfc8461_3_2_max_age_upper_bound(value):
    with pytest.raises(PolicySyntaxError, match="above the maximum"):
        parse_policy(_policy(max_age=value))


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize("mode", list(Mode))
def test_rfc8461_3_2_modes(mode):
    assert parse_policy(_policy(mode=mode.value)).mode is mode


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_mx_optional_for_mode_none_only():
    policy = parse_policy("version: STSv1\nmode: none\nmax_age: 60\n")
    assert policy.mode is Mode.NONE
    assert policy.mx == ()
    for mode in ("enforce", "testing"):
        with pytest.raises(PolicySyntaxError, match="missing mx"):
            parse_policy(f"version: STSv1\nmode: {mode}\nmax_age: 60\n")
    # mx may also be given with mode none
    assert parse_policy(_policy(mode="none")).mx == ("mail.example.com",)


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_several_mx_in_order():
    text = (
        "version: STSv1\nmode: testing\nmx: a.example\nmx: *.b.example\nmx: c.example\nmax_age: 5\n"
    )
    assert parse_policy(text).mx == ("a.example", "*.b.example", "c.example")


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "value",
    [
        "mail.example.com",
        "MAIL.Example.COM",
        "*.example.com",
        "localhost",
        "xn--mnchen-3ya.example",
        "a-b.c--d.example",
        "1.2.example",
        "a" * 63 + ".example",
        ".".join(["a" * 61] * 4),  # 247 characters
    ],
)
def test_rfc8461_3_2_mx_pattern_valid(value):
    assert check_mx_pattern(value) is None
    assert parse_policy(_policy(mx=value)).mx == (value,)


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "value, reason",
    [
        pytest.param("m\u00fcnchen.example", "non-ASCII", id="u-label"),
        pytest.param("mail.example.com.", "empty label", id="trailing-dot"),
        pytest.param(".example.com", "empty label", id="leading-dot"),
        pytest.param("a..example", "empty label", id="empty-label"),
        pytest.param("*", "wildcard", id="bare-star"),
        pytest.param("*.", "empty label", id="star-dot"),
        pytest.param("*.*.example", "wildcard", id="double-wildcard"),
        pytest.param("mail.*.example", "wildcard", id="inner-wildcard"),
        pytest.param("mx*.example", "wildcard", id="partial-wildcard"),
        pytest.param("*mx.example", "wildcard", id="star-prefix-label"),
        pytest.param("-mail.example", "hyphens", id="leading-hyphen"),
        pytest.param("mail-.example", "hyphens", id="trailing-hyphen"),
        pytest.param("mail_1.example", "hyphens", id="underscore"),
        pytest.param("a" * 64 + ".example", "longer than 63", id="label-64"),
        pytest.param(".".join(["a" * 62] * 4) + ".ab", "longer than 253", id="name-254"),
        pytest.param("mail example", "hyphens", id="inner-space"),
    ],
)
def test_rfc8461_3_2_mx_pattern_invalid(value, reason):
    assert reason in (check_mx_pattern(value) or "")
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(_policy(mx=value))
    assert info.value.line == 3


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_unknown_keys_ignored_as_extensions():
    text = (
        BASE
        + "comment: hello  world\nx-y.z_1: \u00e9t\u00e9 \t\n"
        + "k" * 32
        + ": 1\nMode: testing\n"
    )
    policy = parse_policy(text)
    assert policy.mode is Mode.ENFORCE
    assert policy.extensions == (
        ("comment", "hello  world"),
        ("x-y.z_1", "\u00e9t\u00e9"),
        ("k" * 32, "1"),
        ("Mode", "testing"),
    )
    assert parse_policy(policy.to_text()) == policy


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "line",
    [
        pytest.param("k" * 33 + ": 1", id="name-33"),
        pytest.param("_x: 1", id="name-underscore-start"),
        pytest.param(".x: 1", id="name-dot-start"),
        pytest.param("x:", id="empty-value"),
        pytest.param("x:   \t", id="blank-value"),
        pytest.param("x: a\x00b", id="nul-in-value"),
        pytest.param("x: a\x1bb", id="escape-in-value"),
        pytest.param("x: \ud800", id="lone-surrogate"),
        pytest.param("\u00e9x: 1", id="non-ascii-name"),
    ],
)
def test_rfc8461_3_2_invalid_extension(line):
    with pytest.raises(PolicySyntaxError):
        parse_policy(BASE + line + "\n")


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "extra, field, expected",
    [
        pytest.param("mode: testing", "mode", Mode.ENFORCE, id="mode"),
        pytest.param("max_age: 5", "max_age", 86400, id="max-age"),
        pytest.param("version: STSv1", "version", "STSv1", id="version"),
        pytest.param("mode: bogus", "mode", Mode.ENFORCE, id="later-value-not-interpreted"),
    ],
)
def test_rfc8461_3_2_duplicate_key_first_wins(extra, field, expected):
    policy = parse_policy(BASE + extra + "\n")
    assert getattr(policy, field) == expected
    assert any(f"duplicate {field!r}" in w for w in policy.warnings)
    assert policy.extensions == ()


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_duplicate_key_with_empty_value_is_invalid():
    with pytest.raises(PolicySyntaxError):
        parse_policy(BASE + "mode:\n")


@pytest.mark.rfc("8461 3.2")
def test_rfc8461_3_2_blank_lines_skipped_with_warning():
    policy = parse_policy("version: STSv1\n\nmode: none\r\n \t\nmax_age: 1\n\n")
    assert policy.mode is Mode.NONE
    assert len(policy.warnings) == 3


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("\n", id="newline-only"),
        pytest.param("garbage", id="garbage"),
        pytest.param('{"version": "STSv1", "mode": "enforce"}', id="draft-json"),
        pytest.param("\ufeff" + BASE, id="bom"),
        pytest.param("<html><body>404</body></html>\n", id="html"),
    ],
)
def test_rfc8461_3_2_invalid_policy_is_typed_error(text):
    with pytest.raises(PolicySyntaxError) as info:
        parse_policy(text)
    assert isinstance(info.value, PolicyError)


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "text",
    [
        pytest.param(BASE + "x: " + "y" * MAX_POLICY_BYTES + "\n", id="over-64kib"),
        pytest.param(
            BASE + "x: " + "\u00e9" * (MAX_POLICY_BYTES // 2) + "\n", id="over-64kib-utf8"
        ),
        pytest.param(BASE + "\n" * (MAX_LINES + 1), id="too-many-lines"),
        pytest.param(BASE + "mx: a.example\n" * MAX_MX, id="too-many-mx"),
    ],
)
def test_rfc8461_3_3_policy_size_bounded(text):
    with pytest.raises(PolicySyntaxError):
        parse_policy(text)


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_policy_at_size_limits_accepted():
    text = BASE + "mx: a.example\n" * (MAX_MX - 1)
    assert len(parse_policy(text).mx) == MAX_MX


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize(
    "policy, text",
    [
        (
            Policy("STSv1", Mode.ENFORCE, 86400, ("mail.example.com", "*.example.net")),
            "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
        ),
        (Policy("STSv1", Mode.NONE, 0), "version: STSv1\r\nmode: none\r\nmax_age: 0\r\n"),
        (
            Policy("STSv1", "testing", 5, ["a.example"], [("x", "1")]),
            "version: STSv1\r\nmode: testing\r\nmx: a.example\r\nmax_age: 5\r\nx: 1\r\n",
        ),
    ],
)
def test_rfc8461_3_2_to_text_canonical_crlf_round_trip(policy, text):
    assert policy.to_text() == text
    assert parse_policy(text) == policy
    assert Policy.parse(text) == policy
    assert Policy.from_text(text) == policy


def test_policy_to_dict_is_the_json_shape():
    policy = parse_policy(BASE + "x: 1\n")
    assert policy.to_dict() == {
        "version": "STSv1",
        "mode": "enforce",
        "max_age": 86400,
        "mx": ["mail.example.com"],
    }


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        pytest.param({"version": "STSv2"}, "bad version", id="version"),
        pytest.param({"mode": "strict"}, "bad mode", id="mode"),
        pytest.param({"max_age": -1}, "max_age", id="negative-max-age"),
        pytest.param({"max_age": MAX_AGE_LIMIT + 1}, "max_age", id="max-age-over"),
        pytest.param({"max_age": "5"}, "max_age", id="max-age-str"),
        pytest.param({"max_age": True}, "max_age", id="max-age-bool"),
        pytest.param({"mx": "mail.example.com"}, "not one string", id="mx-str"),
        pytest.param({"mx": ("bad..example",)}, "empty label", id="mx-invalid"),
        pytest.param({"mx": ()}, "requires at least one mx", id="mx-empty-enforce"),
        pytest.param({"mx": ("a.example",) * (MAX_MX + 1)}, "more than", id="mx-too-many"),
        pytest.param({"extensions": (("mode", "x"),)}, "policy field", id="ext-known-key"),
        pytest.param({"extensions": (("x", ""),)}, "empty value", id="ext-empty"),
        pytest.param({"extensions": (("x",),)}, "pair", id="ext-not-pair"),
        pytest.param({"extensions": (1,)}, "sequences", id="ext-not-iterable"),
        pytest.param({"mx": 5}, "sequences", id="mx-not-iterable"),
    ],
)
def test_policy_constructor_validates(kwargs, reason):
    args = {"version": "STSv1", "mode": "enforce", "max_age": 60, "mx": ("a.example",)}
    args.update(kwargs)
    with pytest.raises(PolicySyntaxError, match=reason):
        Policy(**args)


def test_policy_is_frozen_and_hashable():
    policy = parse_policy(BASE)
    with pytest.raises(AttributeError):
        policy.mode = Mode.NONE  # type: ignore[misc]
    assert hash(policy) == hash(parse_policy(BASE.replace("\n", "\r\n")))


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize(
    "content_type, expected",
    [
        ("text/plain", True),
        ("Text/Plain; charset=us-ascii", True),
        ("text/plain;format=flowed", True),
        ("  text/plain  ", True),
        ("text/html", False),
        ("text/plain2", False),
        ("text/plainx; charset=utf-8", False),
        ("text", False),
        ("", False),
        ("application/json", False),
        ("text/plain" + " " * 2000, False),
        (None, False),
    ],
)
def test_rfc8461_3_3_media_type_text_plain(content_type, expected):
    assert is_text_plain(content_type) is expected
