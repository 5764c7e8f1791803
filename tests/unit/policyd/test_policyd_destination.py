"""The destination decision (pure): next-hop keys, TLSA states, match= derivation, and
the decision table — DANE first, then MTA-STS, then Postfix's default — including the
failures seen in other daemons against a real Postfix.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.dane.decide import HostLookup, MxDecision, Requirement, TlsaLookup, decide_host
from smtptls.dane.tlsa import TLSARecord
from smtptls.dnssec import Security
from smtptls.engine.destination import (
    DecisionKind,
    DestinationFacts,
    HostFacts,
    NextHop,
    NextHopKind,
    Options,
    decide,
    derive_match,
)
from smtptls.errors import InvalidDomainError, SmtpTlsError
from smtptls.mtasts.policy import Policy
from smtptls.net.dns import TlsaRdata

SHA256 = bytes(32)
SHA512 = bytes(64)


def policy(mode: str, *mx: str, max_age: int = 86400) -> Policy:
    return Policy("STSv1", mode, max_age, tuple(mx))  # type: ignore[arg-type]


ENFORCE = policy("enforce", "mx1.example.com", "mx2.example.com")
WILDCARD = policy("enforce", "*.example.com")
TESTING = policy("testing", "mx1.example.com")
NONE = policy("none")


def hosts(*spec: tuple[str, tuple[Requirement, str]]) -> tuple[HostFacts, ...]:
    """Hosts with the requirement :mod:`smtptls.dane.decide` gave them."""
    return tuple(HostFacts(h, 10 * (i + 1), MxDecision(h, req, reason, f"{h}: {reason}"))
                 for i, (h, (req, reason)) in enumerate(spec))


def facts(key: str = "example.com", *, mx: Security | None = Security.SECURE,
          hs: tuple[HostFacts, ...] = (), pol: Policy | None = None, **kw: object
          ) -> DestinationFacts:
    return DestinationFacts(NextHop.parse(key), mx, hs, policy=pol, **kw)  # type: ignore[arg-type]


# per-host requirements as smtptls.dane.decide.decide_host names them
U = (Requirement.DANE_REQUIRED, "usable-tlsa")
UN = (Requirement.ENCRYPT_ONLY, "unusable-tlsa")
NO = (Requirement.NO_DANE, "no-secure-tlsa")
INS = (Requirement.NO_DANE, "address-insecure")
BOG = (Requirement.DEFER, "tlsa-bogus")
IND = (Requirement.DEFER, "address-bogus")

# --- next-hop keys ------------------------------------------------------------------------

NEXTHOPS = [
    ("example.com", NextHopKind.DOMAIN, "example.com", None),
    ("Example.COM", NextHopKind.DOMAIN, "example.com", None),
    ("example.com.", NextHopKind.DOMAIN, "example.com", None),
    ("example.com:587", NextHopKind.DOMAIN, "example.com", 587),
    ("[relay.example.net]", NextHopKind.HOST, "relay.example.net", None),
    ("[relay.example.net]:587", NextHopKind.HOST, "relay.example.net", 587),
    ("[RELAY.example.net.]", NextHopKind.HOST, "relay.example.net", None),
    ("[192.0.2.1]", NextHopKind.IP_LITERAL, "192.0.2.1", None),
    ("[192.0.2.1]:2525", NextHopKind.IP_LITERAL, "192.0.2.1", 2525),
    ("[a:bb:ccc::dddd]:123", NextHopKind.IP_LITERAL, "a:bb:ccc::dddd", 123),
    ("[ipv6:2001:db8::1]", NextHopKind.IP_LITERAL, "ipv6:2001:db8::1", None),
    ("192.0.2.7", NextHopKind.IP_LITERAL, "192.0.2.7", None),
    (".example.com", NextHopKind.PARENT, ".example.com", None),
    ("bücher.example", NextHopKind.DOMAIN, "xn--bcher-kva.example", None),
]


@pytest.mark.parametrize(("key", "kind", "name", "port"), NEXTHOPS, ids=[n[0] for n in NEXTHOPS])
def test_nexthop_parse(key: str, kind: NextHopKind, name: str, port: int | None) -> None:
    nh = NextHop.parse(key)
    assert (nh.kind, nh.name, nh.port) == (kind, name, port)


@pytest.mark.parametrize("key", ["", "[unclosed", "[x.example]:0", "[x.example]:99999",
                                 "[x.example]:port", "example.com:", "exa mple.com",
                                 "a..b", "x" * 700])
def test_nexthop_invalid_keys_raise_typed_error(key: str) -> None:
    with pytest.raises(InvalidDomainError):
        NextHop.parse(key)


@pytest.mark.rfc("8461 3.4")
def test_rfc8461_3_4_smart_host_policy_domain_is_the_host() -> None:
    # RFC 8461 §3.4: for a smart host, the smart host's domain is the policy domain
    assert NextHop.parse("[smtp.relay.example]:587").policy_domain == "smtp.relay.example"
    assert NextHop.parse("example.com:587").policy_domain == "example.com"
    assert NextHop.parse("[192.0.2.1]").policy_domain is None


@pytest.mark.rfc("7672 2.2.3")
def test_rfc7672_tlsa_port_follows_the_next_hop_port() -> None:
    assert NextHop.parse("example.com").tlsa_port == 25
    assert NextHop.parse("[relay.example]:587").tlsa_port == 587


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_property_nexthop_parse_only_typed_errors(key: str) -> None:
    try:
        nh = NextHop.parse(key)
    except SmtpTlsError:
        return
    assert nh.kind in NextHopKind
    if nh.kind in (NextHopKind.DOMAIN, NextHopKind.HOST):
        assert nh.name == nh.name.lower() and not nh.name.endswith(".")  # type: ignore[union-attr]


# --- TLSA requirements (one place: smtptls.dane.decide) ---------------------------------

TLSA_CASES = [
    ("secure-3-1-1", Security.SECURE, [TlsaRdata(3, 1, 1, SHA256)], U),
    ("secure-2-0-2", Security.SECURE, [TlsaRdata(2, 0, 2, SHA512)], U),
    # RFC 7671 §9: a Full(0) record whose data is no SubjectPublicKeyInfo can never match
    ("secure-3-1-0-malformed-full", Security.SECURE, [TlsaRdata(3, 1, 0, b"\x30\x00")], UN),
    ("secure-pkix-only", Security.SECURE, [TlsaRdata(0, 0, 1, SHA256),
                                           TlsaRdata(1, 1, 1, SHA256)], UN),
    ("secure-bad-digest-length", Security.SECURE, [TlsaRdata(3, 1, 1, b"\x01" * 5)], UN),
    ("secure-unknown-mtype", Security.SECURE, [TlsaRdata(3, 1, 9, SHA256)], UN),
    ("secure-one-usable-among-unusable", Security.SECURE,
     [TlsaRdata(1, 1, 1, SHA256), TlsaRdata(3, 1, 1, SHA256)], U),
    ("secure-nodata", Security.SECURE, [], NO),
    ("insecure-with-records", Security.INSECURE, [TlsaRdata(3, 1, 1, SHA256)], NO),
    ("insecure-nodata", Security.INSECURE, [], NO),
    ("bogus", Security.BOGUS, [], BOG),
    ("indeterminate", Security.INDETERMINATE, [], BOG),
]


@pytest.mark.rfc("7672 3.1.3")
@pytest.mark.parametrize(("security", "records", "state"), [c[1:] for c in TLSA_CASES],
                         ids=[c[0] for c in TLSA_CASES])
def test_rfc7672_3_1_3_tlsa_requirement(security: Security, records: list[TlsaRdata],
                                        state: tuple[Requirement, str]) -> None:
    host = HostLookup("mx1.example.com", Security.SECURE)
    lookup = TlsaLookup(security, tuple(TLSARecord.from_rdata(r) for r in records))
    got = decide_host(host, {"mx1.example.com": lookup})
    assert (got.requirement, got.reason) == state


# --- match= derivation ------------------------------------------------------------------------

MATCH_CASES = [
    ("exact-names", ENFORCE, ["mx1.example.com", "mx2.example.com"],
     ("mx1.example.com", "mx2.example.com")),
    ("only-listed-mx-from-rrset", ENFORCE, ["mx1.example.com", "evil.example.net"],
     ("mx1.example.com",)),
    ("wildcard-lists-actual-hosts", WILDCARD, ["a.example.com", "b.example.com"],
     ("a.example.com", "b.example.com")),
    ("wildcard-one-label-only", WILDCARD, ["a.b.example.com", "c.example.com", "example.com"],
     ("c.example.com",)),
    # RFC 8461 §4.1: an MX that matches no pattern MUST NOT be used; nothing stands in
    ("no-mx-matches-lists-nothing", ENFORCE, ["other.example.net"], ()),
    ("unknown-mx-lists-nothing", ENFORCE, [], ()),
    ("wildcard-without-matching-hosts-is-empty", WILDCARD, ["x.y.example.com"], ()),
    ("duplicates-once", ENFORCE, ["mx1.example.com", "mx1.example.com"], ("mx1.example.com",)),
]


@pytest.mark.rfc("8461 4.1")
@pytest.mark.parametrize(("pol", "mx", "expected"), [c[1:] for c in MATCH_CASES],
                         ids=[c[0] for c in MATCH_CASES])
def test_rfc8461_4_1_match_derivation(pol: Policy, mx: list[str], expected: tuple[str, ...]
                                      ) -> None:
    names = derive_match(pol, mx)
    assert names == expected
    # never Postfix's ".domain" form, which would accept any depth of subdomain
    assert not any(n.startswith(".") or n.startswith("*") for n in names)


def test_match_derivation_is_bounded() -> None:
    many = [f"m{i}.example.com" for i in range(200)]
    assert len(derive_match(WILDCARD, many)) == 64


# --- the decision table --------------------------------------------------------------------------

M1, M2 = "mx1.example.com", "mx2.example.com"
SECURE_M12 = "secure match=mx1.example.com:mx2.example.com servername=hostname"

DECISIONS = [
    # DANE (RFC 7672) takes precedence over MTA-STS (RFC 8461 §2)
    ("dane-all-mx-usable", facts(hs=hosts((M1, U), (M2, U))), "dane-only"),
    ("dane-all-mx-usable-beats-mta-sts-enforce",
     facts(hs=hosts((M1, U), (M2, U)), pol=ENFORCE), "dane-only"),
    ("dane-some-mx-usable", facts(hs=hosts((M1, U), (M2, NO))), "dane"),
    ("dane-some-mx-usable-with-mta-sts", facts(hs=hosts((M1, U), (M2, NO)), pol=ENFORCE),
     "dane"),
    ("dane-bogus-tlsa", facts(hs=hosts((M1, BOG), (M2, NO))), "dane"),
    ("dane-bogus-tlsa-with-mta-sts", facts(hs=hosts((M1, BOG), (M2, NO)), pol=ENFORCE),
     "dane"),
    ("dane-every-host-bogus-defers", facts(hs=hosts((M1, BOG)), pol=ENFORCE), "TEMP"),
    ("dane-every-host-address-bogus-defers", facts(hs=hosts((M1, IND), (M2, BOG))), "TEMP"),
    ("dane-all-unusable-encrypt", facts(hs=hosts((M1, UN))), "dane"),
    ("dane-unusable-and-no-tlsa", facts(hs=hosts((M1, UN), (M2, NO)), pol=ENFORCE), "dane"),
    ("mx-bogus-defers", facts(mx=Security.BOGUS, mx_error="SERVFAIL"), "TEMP"),
    ("mx-bogus-defers-despite-mta-sts", facts(mx=Security.BOGUS, pol=ENFORCE), "TEMP"),
    ("insecure-mx-rrset-mta-sts-applies", facts(mx=Security.INSECURE, hs=hosts((M1, INS)),
                                                pol=ENFORCE),
     "secure match=mx1.example.com servername=hostname"),
    ("secure-mx-no-tlsa-mta-sts-applies", facts(hs=hosts((M1, NO), (M2, INS)), pol=ENFORCE),
     SECURE_M12),
    ("implicit-mx-dane", facts(hs=hosts(("example.com", U)), implicit_mx=True), "dane-only"),
    ("smart-host-dane", facts("[relay.example.net]:587", mx=None,
                              hs=hosts(("relay.example.net", U))), "dane-only"),
    # MTA-STS
    ("enforce", facts(mx=Security.INSECURE, hs=hosts((M1, INS), (M2, INS)), pol=ENFORCE),
     SECURE_M12),
    ("enforce-wildcard-lists-hosts",
     facts(mx=Security.INSECURE, hs=hosts(("a.example.com", INS), ("b.c.example.com", INS)),
           pol=WILDCARD), "secure match=a.example.com servername=hostname"),
    ("enforce-wildcard-no-matching-host-defers",
     facts(mx=Security.INSECURE, hs=hosts(("b.c.example.com", INS)), pol=WILDCARD), "TEMP"),
    ("enforce-no-mx-matches-defers",
     facts(mx=Security.INSECURE, hs=hosts(("other.example.net", INS)), pol=ENFORCE), "TEMP"),
    ("enforce-mx-lookup-failed-defers",
     facts(mx=Security.INDETERMINATE, mx_error="timeout", pol=ENFORCE), "TEMP"),
    ("testing-default-notfound", facts(mx=Security.INSECURE, hs=hosts((M1, INS)), pol=TESTING),
     None),
    ("none-mode", facts(mx=Security.INSECURE, hs=hosts((M1, INS)), pol=NONE), None),
    ("no-policy", facts(mx=Security.INSECURE, hs=hosts((M1, INS))), None),
    ("smart-host-listed", facts("[mx1.example.com]", mx=None, hs=hosts((M1, INS)),
                                pol=ENFORCE),
     "secure match=mx1.example.com servername=hostname"),
    # keys that never get a policy
    ("ip-literal", facts("[192.0.2.1]", pol=ENFORCE), None),
    ("ipv6-literal-port", facts("[a:bb:ccc::dddd]:123", pol=ENFORCE), None),
    ("parent-domain-lookup", facts(".example.com", pol=ENFORCE), None),
    ("null-mx", facts(mx=Security.INSECURE, null_mx=True, pol=ENFORCE), None),
]


def _reply(decision) -> str | None:  # type: ignore[no-untyped-def]
    if decision.kind is DecisionKind.TEMP:
        return "TEMP"
    return decision.policy


@pytest.mark.parametrize(("f", "expected"), [d[1:] for d in DECISIONS],
                         ids=[d[0] for d in DECISIONS])
def test_decision_table(f: DestinationFacts, expected: str | None) -> None:
    decision = decide(f)
    assert _reply(decision) == expected
    assert decision.reason  # every answer says why


@pytest.mark.rfc("8461 2")
def test_rfc8461_2_dane_takes_precedence_never_secure_for_dane_destination() -> None:
    # a known failure of another daemon: answering "secure" for a DANE-protected domain
    for hs in (hosts((M1, U)), hosts((M1, U), (M2, U)), hosts((M1, U), (M2, NO))):
        decision = decide(facts(hs=hs, pol=ENFORCE))
        assert decision.kind in (DecisionKind.DANE, DecisionKind.DANE_ONLY)
        assert not (decision.policy or "").startswith("secure")


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_wildcard_never_becomes_dot_domain() -> None:
    # a known failure of another daemon: "*.example.com" answered as
    # "match=.example.com", which Postfix applies to subdomains at any depth
    decision = decide(facts(mx=Security.INSECURE, hs=hosts(("a.example.com", INS)),
                            pol=WILDCARD))
    assert decision.policy == "secure match=a.example.com servername=hostname"
    assert ".example.com" not in decision.policy.replace("a.example.com", "")


@pytest.mark.rfc("8461 4.1")
def test_rfc8461_4_1_unlisted_mx_not_in_match_list() -> None:
    # a known failure of another daemon: an MX the policy does not list is usable when
    # the match list names it; we list only the MX hosts the policy covers
    decision = decide(facts(mx=Security.INSECURE,
                            hs=hosts((M1, INS), ("backup.example.net", INS)), pol=ENFORCE))
    assert decision.match == (M1,)
    assert "backup.example.net" not in (decision.policy or "")


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_testing_answer_and_strict_testing() -> None:
    f = facts(mx=Security.INSECURE, hs=hosts((M1, INS)), pol=TESTING)
    assert decide(f).kind is DecisionKind.NOTFOUND
    assert decide(f, Options(testing_answer="may")).policy == "may"
    strict = decide(f, Options(testing_answer="may", strict_testing=True))
    assert strict.policy == "secure match=mx1.example.com servername=hostname"


@pytest.mark.rfc("8461 5")
def test_rfc8461_5_mode_none_is_no_policy() -> None:
    decision = decide(facts(mx=Security.INSECURE, hs=hosts((M1, INS)), pol=NONE),
                      Options(testing_answer="may"))
    assert decision.kind is DecisionKind.NOTFOUND


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("example.com", "encrypt", "encrypt"),
    ("[relay.example.net]:587", "dane-only", "dane-only"),
    ("example.com", "NOTFOUND", None),
])
def test_overrides_answer_literally(key: str, value: str, expected: str | None) -> None:
    name = NextHop.parse(key).name
    assert name is not None
    decision = decide(facts(key, hs=hosts((M1, U))), Options(overrides={name: value}))
    assert decision.policy == expected


def test_override_does_not_apply_to_other_domains() -> None:
    decision = decide(facts("other.example", hs=hosts((M1, U))),
                      Options(overrides={"example.com": "encrypt"}))
    assert decision.policy == "dane-only"
