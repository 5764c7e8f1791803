"""Postfix 3.10 policy-map answers: the MTA-STS attributes and their quoting.

The rules are Postfix's own (TLSRPT_README "MTA-STS Support via smtp_tls_policy_maps",
postconf(5) ``smtp_tls_policy_maps``): ``name=value`` separated by whitespace or commas,
``{ name = value }`` to protect whitespace and commas, braces read by nesting level.
A reader of that syntax (below) checks that every answer reads back as written; the
same answers were delivered through a real Postfix 3.10 in the lab
(tests/e2e/test_postfix310_tlsrpt.py).
"""

from __future__ import annotations

import pytest

from smtptls.errors import PolicyError, SmtpTlsError
from smtptls.mtasts.policy import Policy
from smtptls.services.policyd.postfix310 import (
    POLICY_TYPE_STS,
    AnswerSyntaxError,
    PolicyFailure,
    attribute,
    failure_answer,
    policy_strings,
    secure_answer,
    sts_attributes,
)

BASE = "secure match=mail.example.com:backupmx.example.com servername=hostname"
# RFC 8461 §3.2's example policy, as TLSRPT_README uses it
RFC_POLICY = ("version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.example.net\n"
              "mx: backupmx.example.com\nmax_age: 604800\n")


def read_answer(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split an answer the way Postfix does: tokens at whitespace/commas outside braces;
    a braced token is ``{ name = value }`` with the outer whitespace stripped."""
    tokens, cur, depth = [], "", 0
    for ch in text:
        if depth == 0 and ch in " \t\r\n,":
            if cur:
                tokens.append(cur)
            cur = ""
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            assert depth >= 0, f"unbalanced '}}' in {text!r}"
        cur += ch
    assert depth == 0, f"missing '}}' in {text!r}"
    if cur:
        tokens.append(cur)
    level, attrs = tokens[0], []
    for tok in tokens[1:]:
        if tok.startswith("{"):
            assert tok.endswith("}")
            tok = tok[1:-1].strip()
        name, eq, value = tok.partition("=")
        assert eq, f"missing '=' in {tok!r}"
        attrs.append((name.strip(), value.strip()))
    return level, attrs


def policy(extra: str = "") -> Policy:
    return Policy.parse(RFC_POLICY + extra)


# --- the attributes ----------------------------------------------------------------------


def test_tlsrpt_readme_secure_answer_carries_every_sts_attribute() -> None:
    answer = secure_answer(BASE, policy(), "example.com")
    level, attrs = read_answer(answer)
    assert level == "secure"
    assert attrs[:2] == [("match", "mail.example.com:backupmx.example.com"),
                         ("servername", "hostname")]
    assert ("policy_type", POLICY_TYPE_STS) in attrs
    assert ("policy_domain", "example.com") in attrs
    assert [v for k, v in attrs if k == "mx_host_pattern"] == [
        "mail.example.com", "*.example.net", "backupmx.example.com"]
    assert [v for k, v in attrs if k == "policy_string"] == [
        "version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net",
        "mx: backupmx.example.com", "max_age: 604800"]
    assert not any(k == "policy_ttl" for k, _ in attrs)  # deprecated: only when asked


def test_tlsrpt_readme_policy_strings_are_braced_mx_patterns_plain() -> None:
    answer = secure_answer(BASE, policy(), "example.com")
    assert "{ policy_string = version: STSv1 }" in answer
    assert "mx_host_pattern=*.example.net" in answer
    assert answer.startswith(BASE + " policy_type=sts policy_domain=example.com ")


def test_tlsrpt_readme_policy_ttl_written_only_when_given() -> None:
    attrs = sts_attributes(policy(), "example.com", ttl=604800)
    assert "policy_ttl=604800" in attrs
    with pytest.raises(AnswerSyntaxError):
        sts_attributes(policy(), "example.com", ttl=-1)
    with pytest.raises(AnswerSyntaxError):
        sts_attributes(policy(), "example.com", ttl=True)  # type: ignore[arg-type]


@pytest.mark.rfc("8460 4.4")
def test_rfc8460_4_4_policy_strings_one_per_policy_line() -> None:
    p = policy("ext-key: some value\n")
    assert policy_strings(p) == (
        "version: STSv1", "mode: enforce", "mx: mail.example.com", "mx: *.example.net",
        "mx: backupmx.example.com", "max_age: 604800", "ext-key: some value")


@pytest.mark.parametrize("failure", list(PolicyFailure))
def test_tlsrpt_readme_failure_answer_names_the_failure(failure: PolicyFailure) -> None:
    answer = failure_answer("secure match=example.com servername=hostname", "example.com",
                            failure)
    level, attrs = read_answer(answer)
    assert level == "secure"
    assert attrs[-3:] == [("policy_type", "sts"), ("policy_domain", "example.com"),
                          ("policy_failure", failure.value)]


def test_tlsrpt_readme_failure_types_are_the_documented_ones() -> None:
    assert {f.value for f in PolicyFailure} == {
        "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
        "validation-failure"}
    assert failure_answer("may", "example.com", "sts-policy-invalid").endswith(
        "policy_failure=sts-policy-invalid")
    with pytest.raises(AnswerSyntaxError):
        failure_answer("may", "example.com", "certificate-expired")


# --- quoting (postconf(5) smtp_tls_policy_maps, TLSRPT_README) ----------------------------


@pytest.mark.parametrize(("value", "written"), [
    ("example.com", "policy_domain=example.com"),
    ("*.example.net", "policy_domain=*.example.net"),
    ("a=b", "policy_domain=a=b"),  # Postfix splits name and value at the first "="
])
def test_postconf_policy_maps_plain_value_without_whitespace_or_comma(
        value: str, written: str) -> None:
    assert attribute("policy_domain", value) == written
    assert read_answer("may " + written)[1] == [("policy_domain", value)]


@pytest.mark.parametrize("value", [
    "mode: enforce",            # whitespace
    "x: a,b",                   # comma
    "x: a\tb",                  # tab
    "x: a, b {c}",              # balanced braces (delivered by Postfix 3.10.13)
    "x: {a} {b {c}}",
])
def test_tlsrpt_readme_braced_form_protects_whitespace_commas_and_balanced_braces(
        value: str) -> None:
    written = attribute("policy_string", value)
    assert written == f"{{ policy_string = {value} }}"
    assert read_answer("secure " + written)[1] == [("policy_string", value)]


@pytest.mark.parametrize("value", ["x: café ☃", "mx.bücher.example", "ключ: значение"])
def test_postfix_non_ascii_value_sent_as_utf8(value: str) -> None:
    # Postfix 3.10.13 passed "x: café ☃" through to libtlsrpt unchanged (lab capture)
    written = attribute("policy_string", value)
    assert read_answer("secure " + written)[1] == [("policy_string", value)]
    written.encode("utf-8")


@pytest.mark.parametrize("value", [
    "x: a } b",        # Postfix: malformed attribute/value pair "b"
    "x: a { b",        # Postfix: missing '}'
    "x: }{",
])
def test_postfix_unbalanced_brace_cannot_be_written(value: str) -> None:
    with pytest.raises(AnswerSyntaxError) as exc:
        attribute("policy_string", value)
    assert isinstance(exc.value, PolicyError | SmtpTlsError)


@pytest.mark.parametrize("value", ["", " x", "x ", "a\nb", "a\rb", "a\x00b", "a\x7fb"])
def test_postfix_empty_control_or_edge_whitespace_value_cannot_be_written(value: str) -> None:
    with pytest.raises(AnswerSyntaxError):
        attribute("policy_string", value)


def test_extension_line_postfix_cannot_carry_is_left_out_not_fatal() -> None:
    p = policy("ext-a: x } y\next-b: fine value\n")
    answer = secure_answer(BASE, p, "example.com")
    strings = [v for k, v in read_answer(answer)[1] if k == "policy_string"]
    assert "ext-b: fine value" in strings
    assert not any(s.startswith("ext-a") for s in strings)
    assert len(strings) == len(policy_strings(p)) - 1


def test_mx_patterns_and_domain_always_plain() -> None:
    attrs = sts_attributes(policy(), "example.com")
    assert all(not a.startswith("{") for a in attrs
               if a.startswith(("mx_host_pattern", "policy_domain", "policy_type")))


def test_testing_policy_answer_keeps_mode_testing_string() -> None:
    p = Policy.parse(RFC_POLICY.replace("mode: enforce", "mode: testing"))
    answer = secure_answer("may", p, "example.com")
    level, attrs = read_answer(answer)
    assert level == "may"
    assert ("policy_string", "mode: testing") in attrs
