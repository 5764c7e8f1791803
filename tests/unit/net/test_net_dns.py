"""Unit tests for smtptls.net.dns: name validation and answer building (no network)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.config import DnsConfig
from smtptls.dnssec import Security
from smtptls.errors import (
    ConfigError,
    DnsBogus,
    DnsError,
    DnsLimitError,
    InvalidDomainError,
    SmtpTlsError,
)
from smtptls.net.dns import (
    Answer,
    DnsResolver,
    MxHost,
    TlsaRdata,
    _normalize_domain_walk,
    answer_from_response,
    normalize_domain,
    run_sync,
)

CFG = DnsConfig(nameservers=("127.0.0.1",), max_cname_chain=3, max_records=4)


def response(*, rcode="NOERROR", ad=True, question="_mta-sts.a.example. IN TXT",
              answer=(), authority=()):
    flags = "QR RD RA" + (" AD" if ad else "")
    lines = ["id 1", "opcode QUERY", f"rcode {rcode}", f"flags {flags}", ";QUESTION",
             question, ";ANSWER", *answer, ";AUTHORITY", *authority]
    return dns.message.from_text("\n".join(lines) + "\n")


# --- normalize_domain ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("example.com", "example.com"),
        ("Example.COM.", "example.com"),
        ("  mx.example.com  ", "mx.example.com"),
        ("_mta-sts.example.com", "_mta-sts.example.com"),
        ("_25._tcp.mx.example.com", "_25._tcp.mx.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a" * 63 + ".example", "a" * 63 + ".example"),
        ("localhost", "localhost"),
    ],
    ids=["plain", "case-and-root-dot", "whitespace", "service-label", "tlsa-name",
         "u-label", "a-label", "63-octet-label", "single-label"],
)
def test_normalize_domain_accepts(name, expected):
    assert normalize_domain(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        ".good.loc",
        "a..example",
        "example..",
        "a" * 64 + ".example",
        ".".join(["abcdefghi"] * 26),
        "-bad.example",
        "bad-.example",
        "sp ace.example",
        "semi;colon.example",
        "slash/.example",
        "192.0.2.1",
        "[2001:db8::1]",
        "example.123",
        "a@b.example",
    ],
    ids=["empty", "root-only", "leading-dot", "empty-label", "two-trailing-dots",
         "64-octet-label", "over-253", "leading-hyphen", "trailing-hyphen", "space",
         "semicolon", "slash", "ipv4-literal", "ipv6-literal", "numeric-tld", "at-sign"],
)
def test_normalize_domain_rejects(name):
    with pytest.raises(InvalidDomainError):
        normalize_domain(name)


def test_rfc8461_3_1_leading_dot_policy_domain_rejected_before_io():
    # Corpus lookup_and_fetch ".good.loc": not a valid policy domain -> no policy; the
    # name is refused by the validator, so no query is ever sent.
    with pytest.raises(InvalidDomainError, match="starts with a dot"):
        normalize_domain(".good.loc")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_normalize_domain_only_typed_errors(text):
    try:
        out = normalize_domain(text)
    except InvalidDomainError:
        return
    # Round-trip: a normalized name is a fixed point.
    assert normalize_domain(out) == out
    assert len(out) <= 253 and out == out.lower()


# --- answer_from_response -----------------------------------------------------------------


def test_rfc8461_3_1_txt_strings_concatenated_without_spaces():
    r = response(answer=['_mta-sts.a.example. 300 IN TXT "v=STSv1;" " id=" "20240101"'])
    ans = answer_from_response("_mta-sts.a.example", "TXT", r, config=CFG)
    assert ans.records == ("v=STSv1; id=20240101",)
    assert ans.ttl == 300


@pytest.mark.parametrize(
    "ad, expected",
    [(True, Security.SECURE), (False, Security.INSECURE)],
    ids=["ad-set-secure", "ad-clear-insecure"],
)
def test_rfc7672_2_1_1_security_from_ad_bit(ad, expected):
    r = response(ad=ad, answer=['_mta-sts.a.example. 300 IN TXT "v=STSv1; id=1"'])
    ans = answer_from_response("_mta-sts.a.example", "TXT", r, config=CFG)
    assert ans.security is expected
    assert ans.secure is (expected is Security.SECURE)


def test_rfc7672_2_1_1_servfail_is_bogus():
    with pytest.raises(DnsBogus) as info:
        answer_from_response("_mta-sts.a.example", "TXT", response(rcode="SERVFAIL"),
                             config=CFG)
    assert info.value.name == "_mta-sts.a.example" and info.value.rdtype == "TXT"


@pytest.mark.parametrize("rcode", ["REFUSED", "FORMERR", "NOTIMP"])
def test_other_rcodes_are_dns_errors(rcode):
    with pytest.raises(DnsError) as info:
        answer_from_response("_mta-sts.a.example", "TXT", response(rcode=rcode), config=CFG)
    assert not isinstance(info.value, DnsBogus)
    assert rcode in str(info.value)


@pytest.mark.parametrize(
    "rcode, ad, nxdomain, security",
    [
        ("NXDOMAIN", True, True, Security.SECURE),
        ("NXDOMAIN", False, True, Security.INSECURE),
        ("NOERROR", True, False, Security.SECURE),
        ("NOERROR", False, False, Security.INSECURE),
    ],
    ids=["nxdomain-secure", "nxdomain-insecure", "nodata-secure", "nodata-insecure"],
)
def test_rfc7672_2_1_1_negative_answers_carry_security(rcode, ad, nxdomain, security):
    r = response(rcode=rcode, ad=ad,
                 authority=["a.example. 600 IN SOA ns.a.example. h.a.example. 1 2 3 4 120"])
    ans = answer_from_response("_mta-sts.a.example", "TXT", r, config=CFG)
    assert ans.records == () and not ans
    assert ans.nxdomain is nxdomain
    assert ans.security is security
    assert ans.ttl == 120  # RFC 2308 §5: min(SOA TTL, SOA MINIMUM)


def test_rfc8461_3_1_cname_chain_followed_and_recorded():
    r = response(answer=[
        "_mta-sts.a.cnames.example. 300 IN CNAME _mta-sts.b.cnames.example.",
        "_mta-sts.b.cnames.example. 300 IN CNAME _mta-sts.c.cnames.example.",
        '_mta-sts.c.cnames.example. 60 IN TXT "v=STSv1; id=1"',
    ], question="_mta-sts.a.cnames.example. IN TXT")
    ans = answer_from_response("_mta-sts.a.cnames.example", "TXT", r, config=CFG)
    assert ans.records == ("v=STSv1; id=1",)
    assert ans.cname_chain == ("_mta-sts.b.cnames.example", "_mta-sts.c.cnames.example")
    assert ans.canonical_name == "_mta-sts.c.cnames.example"
    assert ans.ttl == 60


def test_cname_chain_over_bound_is_limit_error():
    chain = [f"n{i}.example. 300 IN CNAME n{i + 1}.example." for i in range(5)]
    r = response(question="n0.example. IN TXT",
                 answer=[*chain, 'n5.example. 300 IN TXT "x"'])
    with pytest.raises(DnsLimitError, match="CNAME chain"):
        answer_from_response("n0.example", "TXT", r, config=CFG)


def test_records_over_bound_is_limit_error():
    r = response(answer=[f'_mta-sts.a.example. 300 IN TXT "r{i}"' for i in range(5)])
    with pytest.raises(DnsLimitError, match="more than the bound"):
        answer_from_response("_mta-sts.a.example", "TXT", r, config=CFG)


def test_mx_sorted_by_preference():
    r = response(question="a.example. IN MX", answer=[
        "a.example. 300 IN MX 20 MX2.a.example.",
        "a.example. 300 IN MX 10 mx1.a.example.",
    ])
    ans = answer_from_response("a.example", "MX", r, config=CFG)
    assert ans.records == (MxHost(10, "mx1.a.example"), MxHost(20, "mx2.a.example"))
    assert ans.records[0].to_text() == "10 mx1.a.example."


def test_tlsa_fields():
    r = response(question="_25._tcp.mx.a.example. IN TLSA", answer=[
        "_25._tcp.mx.a.example. 300 IN TLSA 3 1 1 " + "ab" * 32,
    ])
    ans = answer_from_response("_25._tcp.mx.a.example", "TLSA", r, config=CFG)
    assert ans.records == (TlsaRdata(3, 1, 1, bytes.fromhex("ab" * 32)),)
    assert ans.records[0].to_text() == "3 1 1 " + "ab" * 32


@pytest.mark.parametrize(
    "rdtype, rr, value",
    [
        ("A", "h.example. 300 IN A 192.0.2.7", "192.0.2.7"),
        ("AAAA", "h.example. 300 IN AAAA 2001:db8::7", "2001:db8::7"),
    ],
    ids=["a", "aaaa"],
)
def test_address_records(rdtype, rr, value):
    r = response(question=f"h.example. IN {rdtype}", answer=[rr])
    assert answer_from_response("h.example", rdtype, r, config=CFG).records == (value,)


def test_cname_only_answer_is_nodata_for_wanted_type():
    r = response(question="h.example. IN A", answer=["h.example. 300 IN CNAME t.example."])
    ans = answer_from_response("h.example", "A", r, config=CFG)
    assert ans.records == () and ans.cname_chain == ("t.example",) and not ans.nxdomain


def test_non_utf8_txt_does_not_raise():
    r = response(answer=['_mta-sts.a.example. 300 IN TXT "v=STSv1; id=\\255"'])
    ans = answer_from_response("_mta-sts.a.example", "TXT", r, config=CFG)
    assert ans.records[0].startswith("v=STSv1; id=")


# --- resolver construction (no queries sent) ------------------------------------------------


@pytest.mark.parametrize(
    "servers, port, expected",
    [
        (("127.0.0.1",), 53, [("127.0.0.1", 53)]),
        (("127.0.0.1",), 5353, [("127.0.0.1", 5353)]),
        (("127.0.0.1:5300", "[::1]:5301"), 53, [("127.0.0.1", 5300), ("::1", 5301)]),
    ],
    ids=["default-port", "config-port", "per-server-port"],
)
def test_resolver_nameserver_plumbing(servers, port, expected):
    r = DnsResolver(DnsConfig(nameservers=servers, port=port, timeout=1.5))
    got = [(ns.address, ns.port) for ns in r._resolver.nameservers]
    assert got == expected
    assert r._resolver.lifetime == 1.5
    # DO bit and AD request so the validating resolver reports validation.
    assert r._resolver.ednsflags & dns.flags.DO
    assert r._resolver.flags & dns.flags.AD


def test_resolver_rejects_hostname_nameserver():
    with pytest.raises(ConfigError, match="IP address"):
        DnsResolver(DnsConfig(nameservers=("dns.example",)))


async def test_query_rejects_invalid_name_before_io():
    r = DnsResolver(DnsConfig(nameservers=("127.0.0.1:9",), timeout=0.1))
    with pytest.raises(InvalidDomainError):
        await r.txt("_mta-sts..example")
    with pytest.raises(DnsError, match="unsupported"):
        await r.query("example.com", "SOA")


async def test_try_query_returns_failures_as_data():
    r = DnsResolver(DnsConfig(nameservers=("127.0.0.1:9",), timeout=0.1))
    ans = await r.try_query(".bad", "TXT")
    assert isinstance(ans, Answer) and ans.security is Security.INDETERMINATE
    assert isinstance(ans.error, InvalidDomainError)


async def test_run_sync_refuses_inside_loop():
    async def coro():
        return 1

    with pytest.raises(SmtpTlsError):
        run_sync(coro)


def test_run_sync_runs_coroutine():
    async def coro():
        return 42

    assert run_sync(coro) == 42



_strings = st.lists(st.binary(min_size=0, max_size=255), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(st.lists(_strings, min_size=0, max_size=6), st.booleans())
def test_rfc8461_3_1_txt_concatenation_property(records, ad):
    import dns.rdataclass
    import dns.rdtypes.ANY.TXT

    r = response(ad=ad)
    if records:
        rrset = r.find_rrset(r.answer, dns.name.from_text("_mta-sts.a.example."),
                             dns.rdataclass.IN, dns.rdatatype.TXT, create=True)
        for strings in records:
            rrset.add(dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings),
                      ttl=300)
    try:
        ans = answer_from_response("_mta-sts.a.example", "TXT", r, config=CFG)
    except DnsLimitError:
        assert len({tuple(s) for s in records}) > CFG.max_records
        return
    expected = {b"".join(s).decode("utf-8", "replace") for s in records}
    assert set(ans.records) == expected  # an RRset is a set: duplicates collapse
    assert ans.security is (Security.SECURE if ad else Security.INSECURE)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=300))
def test_answer_from_wire_garbage_only_typed_errors(wire):
    try:
        msg = dns.message.from_wire(wire)
    except Exception:
        return  # not a message at all: dnspython's own concern, before our code
    try:
        answer_from_response("x.example", "TXT", msg, config=CFG)
    except DnsError:
        pass


@pytest.mark.parametrize("opcode", ["UPDATE", "NOTIFY", "STATUS"])
def test_non_query_responses_are_dns_errors(opcode):
    msg = dns.message.from_text(f"id 1\nopcode {opcode}\nrcode NOERROR\nflags QR\n")
    with pytest.raises(DnsError):
        answer_from_response("x.example", "TXT", msg, config=CFG)


def test_response_without_question_is_dns_error():
    msg = dns.message.from_text("id 1\nopcode QUERY\nrcode NOERROR\nflags QR\n")
    with pytest.raises(DnsError):
        answer_from_response("x.example", "TXT", msg, config=CFG)


# --- normalize_domain's quick form is its label walk ---------------------------------------

_label = st.from_regex(r"[a-z0-9_](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_name = st.lists(_label, min_size=1, max_size=4).map(lambda x: ".".join(x) + ".test")
# names as answers carry them: any labels (all-numeric ones too), a final dot or not
_answer_name = st.tuples(st.lists(_label, min_size=1, max_size=4).map(".".join),
                         st.sampled_from(["", "."])).map("".join)


def _same_as_the_walk(name: str) -> None:
    try:
        expected = _normalize_domain_walk(name)
    except SmtpTlsError as exc:
        with pytest.raises(type(exc)):
            normalize_domain(name)
    else:
        assert normalize_domain(name) == expected


@given(st.text(max_size=80) | _name | _answer_name)
def test_normalize_domain_quick_form_is_the_label_walk(name):
    _same_as_the_walk(name)


@pytest.mark.parametrize("name", ["1.2.3.4", "10.0.0.256", "a..b", "-a.test", "A.Test",
                                  "_25._tcp.mx.test", "x" * 64 + ".test", "a.123",
                                  "mx.example.com.", "1.2.3.4.", "a..", ".", "x" * 253 + ".",
                                  "a.b-", " a.test"])
def test_normalize_domain_quick_form_named_cases(name):
    _same_as_the_walk(name)
