"""The DANE requirements J1-J17 and K1-K4 (RFC 7672, RFC 7671, RFC 6698), one test per
rule, on the pure decision, verifier and publishing code with generated certificates."""

from __future__ import annotations

import pytest
from dane_certs import NOW, key, make_cert, pki, rec, zeros

from smtptls.dane import (
    DestinationLookup,
    HostLookup,
    Requirement,
    Security,
    TlsaLookup,
    TLSARecord,
    decide_destination,
    decide_host,
    rollover_advice,
    select_usable,
    tlsa_candidates,
    unusable_reason,
    verify_chain,
)
from smtptls.dane.names import cert_matches, is_address_literal

pytestmark = pytest.mark.rfc("7672")

S, N, B, X = Security.SECURE, Security.INSECURE, Security.BOGUS, Security.INDETERMINATE
DOMAIN = "example.com"
MX1, MX2 = "mx1.example.net", "mx2.example.net"
ALIAS, TARGET = "mx.example.com", "smtp.provider.example"
EE = TLSARecord(3, 1, 1, bytes(range(32)))


def codes(advice) -> set[str]:
    return {f.code for f in advice.findings}


# --- J1: DNSSEC status (§2.1.1, §2.1.2) ---------------------------------------------------


@pytest.mark.parametrize("where", ["tlsa", "address", "first-cname"])
def test_rfc7672_2_1_1_indeterminate_is_bogus(where: str) -> None:
    def decide(status: Security):
        if where == "tlsa":
            return decide_host(HostLookup(MX1, S), {MX1: TlsaLookup(status)})
        if where == "address":
            return decide_host(HostLookup(MX1, status), {})
        return decide_host(HostLookup(ALIAS, S, (TARGET,), first_security=status), {})

    bogus, indeterminate = decide(B), decide(X)
    assert bogus.requirement is indeterminate.requirement is Requirement.DEFER
    assert bogus.reason == indeterminate.reason
    assert not bogus.deliverable and not indeterminate.deliverable


def test_rfc7672_2_1_1_denial_of_existence_is_not_an_error() -> None:
    host = HostLookup(ALIAS, S, (TARGET,))
    # Secure NODATA/NXDOMAIN at both candidates: no DANE, but the host is usable.
    none = decide_host(host, {TARGET: TlsaLookup(S), ALIAS: TlsaLookup(S)})
    assert none.requirement is Requirement.NO_DANE and none.deliverable
    # A denial at the expanded name only moves the search on to the original name.
    found = decide_host(host, {TARGET: TlsaLookup(S), ALIAS: TlsaLookup(S, (EE,))})
    assert found.requirement is Requirement.DANE_REQUIRED and found.tlsa_base == ALIAS


@pytest.mark.parametrize("status", [B, X], ids=["bogus-or-servfail", "timeout"])
def test_rfc7672_2_1_2_tlsa_lookup_failure_makes_the_server_unreachable(
        status: Security) -> None:
    dest = DestinationLookup(DOMAIN, S, (MX1, MX2))
    hosts = [HostLookup(MX1, S), HostLookup(MX2, S)]
    d = decide_destination(dest, hosts, {MX1: TlsaLookup(status), MX2: TlsaLookup(S, (EE,))})
    first, second = d.entries
    # No delivery via MX1 at all (not even without DANE); MX2 is still a candidate.
    assert first.requirement is Requirement.DEFER and not first.deliverable
    assert second.requirement is Requirement.DANE_REQUIRED and not d.deferred


# --- J2, J12: the MX RRset (§2.2.1) -------------------------------------------------------


def test_rfc7672_2_2_1_insecure_mx_names_kept_unexpanded_never_secure() -> None:
    dest = DestinationLookup(DOMAIN, N, (MX1, MX2))
    # No host or TLSA lookup is needed below an insecure MX RRset.
    d = decide_destination(dest, [], {})
    assert [e.host for e in d.entries] == [MX1, MX2]
    assert all(e.requirement is Requirement.NO_DANE and e.reason == "mx-insecure"
               and not e.reference_names and e.tlsa_base is None for e in d.entries)
    assert d.mx_security is N and not d.dane_applies


@pytest.mark.parametrize("better", [
    pytest.param(TlsaLookup(S), id="better-mx-without-tlsa"),
    pytest.param(TlsaLookup(S, (TLSARecord(1, 1, 1, bytes(32)),)), id="better-mx-unusable"),
])
def test_rfc7672_2_2_1_tlsa_never_lets_a_worse_mx_preempt_a_better_one(
        better: TlsaLookup) -> None:
    dest = DestinationLookup(DOMAIN, S, (MX1, MX2))
    hosts = [HostLookup(MX2, S), HostLookup(MX1, S)]  # lookups in any order
    d = decide_destination(dest, hosts, {MX1: better, MX2: TlsaLookup(S, (EE,))})
    assert [e.host for e in d.entries] == [MX1, MX2]  # the MX RRset's preference order
    assert d.entries[0].deliverable and d.entries[1].requirement is Requirement.DANE_REQUIRED


# --- J3: TLSA base domain (§2.2.3) ------------------------------------------------------


def test_rfc7672_2_2_3_never_intermediate_names() -> None:
    hops = ("hop1.example", "hop2.example", TARGET)
    host = HostLookup(ALIAS, S, hops)
    assert tlsa_candidates(host) == (TARGET, ALIAS)
    ta = TLSARecord(2, 1, 1, bytes(32))
    d = decide_host(host, {"hop1.example": TlsaLookup(S, (EE,)), TARGET: TlsaLookup(S),
                           ALIAS: TlsaLookup(S, (ta,))})
    assert d.tlsa_base == ALIAS and d.records == (ta,)
    assert not {"hop1.example", "hop2.example"} & set(d.reference_names)


def test_rfc7672_2_2_3_first_secure_rrset_fixes_the_base() -> None:
    # A secure RRset at the expanded name ends the search even when none of its
    # records is usable; the original name's usable records are not consulted.
    host = HostLookup(ALIAS, S, (TARGET,))
    pkix = TLSARecord(1, 1, 1, bytes(32))
    d = decide_host(host, {TARGET: TlsaLookup(S, (pkix,)), ALIAS: TlsaLookup(S, (EE,))})
    assert d.requirement is Requirement.ENCRYPT_ONLY and d.tlsa_base == TARGET == d.sni


def test_rfc7672_2_2_3_cname_at_the_tlsa_name_keeps_the_base() -> None:
    # _25._tcp.mx1.example.net CNAME _25._tcp.tlsa.provider.example: the resolver
    # answers the query for the base; the base, SNI and names stay the host's.
    d = decide_host(HostLookup(MX1, S), {MX1: TlsaLookup(S, (EE,)),
                                         "tlsa.provider.example": TlsaLookup(S)})
    assert d.tlsa_base == MX1 == d.sni
    assert "tlsa.provider.example" not in d.reference_names


# --- J4: non-MX destinations (§2.2.2) ------------------------------------------------------


def test_rfc7672_2_2_2_insecure_address_answer_no_tlsa_query() -> None:
    dest = DestinationLookup(DOMAIN, S, (), has_mx=False)
    # No TLSA lookup is given: none may be needed.
    d = decide_destination(dest, [HostLookup(DOMAIN, N)], {})
    (entry,) = d.entries
    assert entry.requirement is Requirement.NO_DANE and entry.reason == "address-insecure"


def test_rfc7672_2_2_2_insecure_chain_with_secure_first_cname_uses_the_original_name() -> None:
    dest = DestinationLookup(DOMAIN, S, (), has_mx=False)
    host = HostLookup(DOMAIN, N, ("mail.hoster.example",), first_security=S)
    assert tlsa_candidates(host) == (DOMAIN,)
    d = decide_destination(dest, [host], {DOMAIN: TlsaLookup(S, (EE,))})
    assert d.entries[0].tlsa_base == DOMAIN
    assert d.entries[0].reference_names == (DOMAIN,)


# --- J8: DANE-TA reference identifiers (§3.2.2) -------------------------------------------


def _ta_verifies(names: tuple[str, ...], cert_name: str) -> bool:
    p = pki()
    leaf = make_cert(cert_name, key("ec", 80), p.inter, san=[cert_name])
    return verify_chain([rec(2, 0, 1, p.inter)], [leaf.der, p.inter.der], names, NOW).ok


def test_rfc7672_3_2_2_reference_names_secure_mx_include_nexthop() -> None:
    dest = DestinationLookup(DOMAIN, S, (MX1,))
    d = decide_destination(dest, [HostLookup(MX1, S)], {MX1: TlsaLookup(S, (EE,))})
    refs = d.entries[0].reference_names
    assert refs[0] == MX1 and DOMAIN in refs
    # A hosting provider's certificate that names only the customer domain verifies.
    assert _ta_verifies(refs, DOMAIN)


def test_rfc7672_3_2_2_reference_names_secure_mx_include_nexthop_expansion() -> None:
    dest = DestinationLookup(DOMAIN, S, (MX1,), domain_expanded="mail.example.org")
    d = decide_destination(dest, [HostLookup(MX1, S)], {MX1: TlsaLookup(S, (EE,))})
    refs = d.entries[0].reference_names
    assert set(refs) == {MX1, DOMAIN, "mail.example.org"}
    assert _ta_verifies(refs, "mail.example.org")
    assert not _ta_verifies(refs, "other.example.org")


def test_rfc7672_3_2_2_reference_names_mx_alias_keeps_base_and_mx_name() -> None:
    dest = DestinationLookup(DOMAIN, S, (ALIAS,))
    d = decide_destination(dest, [HostLookup(ALIAS, S, (TARGET,))],
                           {TARGET: TlsaLookup(S, (EE,)), ALIAS: TlsaLookup(S)})
    assert d.entries[0].reference_names == (TARGET, ALIAS, DOMAIN)


def test_rfc7672_3_2_2_non_mx_via_cname_includes_the_original_name() -> None:
    dest = DestinationLookup(DOMAIN, S, (), has_mx=False)
    host = HostLookup(DOMAIN, S, ("mail.hoster.example",))
    d = decide_destination(dest, [host], {"mail.hoster.example": TlsaLookup(S, (EE,)),
                                          DOMAIN: TlsaLookup(S)})
    refs = d.entries[0].reference_names
    assert refs[0] == "mail.hoster.example" == d.entries[0].tlsa_base
    assert DOMAIN in refs and _ta_verifies(refs, DOMAIN)


def test_rfc7672_3_2_2_insecure_mx_no_nexthop_reference() -> None:
    # DANE is not used below an insecure MX RRset (the MAY of §2.2.1 is not taken),
    # so no name, in particular not the next-hop domain, is ever trusted there.
    d = decide_destination(DestinationLookup(DOMAIN, N, (MX1,), include_nexthop=True,
                                             domain_expanded="mail.example.org"), [], {})
    assert d.entries[0].reference_names == ()


# --- J11: CNAMEs (§2.1.3) -----------------------------------------------------------------


def test_rfc7672_2_1_3_insecure_cname_makes_the_rest_insecure() -> None:
    host = HostLookup(ALIAS, S, (TARGET,), first_security=N)
    assert host.address_security is N
    assert tlsa_candidates(host) == ()
    d = decide_host(host, {TARGET: TlsaLookup(S, (EE,))})
    assert d.requirement is Requirement.NO_DANE and not d.tls_required


@pytest.mark.parametrize("status", [B, X], ids=["bogus", "indeterminate"])
def test_rfc7672_2_1_3_expansion_error_fails_the_lookup(status: Security) -> None:
    # A failed step of the expansion (SERVFAIL, loop, over-long chain) is reported by
    # the resolver as a failed address lookup: the host is not used.
    d = decide_host(HostLookup(ALIAS, status, (TARGET,), first_security=S),
                    {TARGET: TlsaLookup(S, (EE,)), ALIAS: TlsaLookup(S, (EE,))})
    assert d.requirement is Requirement.DEFER and d.reason == "address-bogus"


# --- J13: presented identifiers (§3.2.3) ----------------------------------------------------


@pytest.mark.parametrize(("reference", "ok"), [
    pytest.param("mx.example.com", True, id="one-label"),
    pytest.param("a.mx.example.com", False, id="two-labels"),
    pytest.param("example.com", False, id="zero-labels"),
])
def test_rfc7672_3_2_3_wildcard_matches_exactly_the_first_label(reference: str,
                                                              ok: bool) -> None:
    cert = make_cert("ignored.example.org", key(), san=["*.example.com"]).cert
    assert cert_matches(cert, [reference])[0] is ok


def test_rfc7672_3_2_3_cn_id_only_without_dns_ids() -> None:
    with_san = make_cert(DOMAIN, key(), san=["mail.example.org"]).cert
    without = make_cert(DOMAIN, key()).cert
    assert not cert_matches(with_san, [DOMAIN])[0]
    assert cert_matches(without, [DOMAIN])[0]


# --- J14: no delivery without a match (§9.1) ------------------------------------------------


def test_rfc7672_9_1_no_matching_usable_record_fails_authentication() -> None:
    p = pki()
    for records in ([zeros(3, 1, 1)], [zeros(2, 0, 1)], [rec(2, 0, 1, pki("rsa").inter)]):
        v = verify_chain(records, p.chain, [p.leaf.cert.subject.rfc4514_string()], NOW)
        assert not v.ok and v.result_type is not None


# --- J15: address literals (§2.2) -----------------------------------------------------------


@pytest.mark.parametrize(("name", "literal"), [
    ("192.0.2.1", True), ("[192.0.2.1]", True), ("[IPv6:2001:db8::1]", True),
    ("2001:db8::1", True), ("[ipv6:::1]", True), ("mx.example.com", False),
    ("[mx.example.com]", False), ("192.0.2.1.example", False), ("", False),
])
def test_rfc7672_2_2_address_literal_recognised(name: str, literal: bool) -> None:
    assert is_address_literal(name) is literal


@pytest.mark.parametrize("literal", ["[192.0.2.1]", "[IPv6:2001:db8::25]", "192.0.2.1"])
def test_rfc7672_2_2_address_literal_next_hop_gets_no_dane(literal: str) -> None:
    dest = DestinationLookup(literal, S, (), has_mx=False)
    host = HostLookup(literal, S)
    d = decide_destination(dest, [host], {literal: TlsaLookup(S, (EE,))})
    (entry,) = d.entries
    assert entry.requirement is Requirement.NO_DANE and entry.reason == "address-literal"
    assert d.reason == "address-literal" and not d.dane_applies
    assert decide_host(host, {}).reason == "address-literal"


# --- J16, J9: unusable records (RFC 6698 §4.1, RFC 7671 §9) ---------------------------------


@pytest.mark.parametrize("record", [
    pytest.param(TLSARecord(3, 1, 0, b"\x30\x59"), id="3-1-0-truncated"),
    pytest.param(TLSARecord(3, 0, 0, b"garbage"), id="3-0-0-garbage"),
    pytest.param(TLSARecord(2, 0, 0, bytes.fromhex("300a300506032b6570030100")),
                 id="2-0-0-an-spki-not-a-cert"),
    pytest.param(TLSARecord(2, 1, 0, b"\x30\x80\x00\x00"), id="2-1-0-indefinite-length"),
    pytest.param(TLSARecord(3, 1, 1, bytes(31)), id="3-1-1-short-digest"),
    pytest.param(TLSARecord(3, 2, 1, bytes(32)), id="unknown-selector"),
    pytest.param(TLSARecord(9, 1, 1, bytes(32)), id="unknown-usage"),
    pytest.param(TLSARecord(3, 1, 7, bytes(32)), id="unknown-matching-type"),
])
def test_rfc6698_4_1_malformed_or_unknown_record_is_unusable(record: TLSARecord) -> None:
    assert unusable_reason(record) is not None
    d = decide_host(HostLookup(MX1, S), {MX1: TlsaLookup(S, (record,))})
    # Every record unusable: TLS is required, without authentication (RFC 7672 §2.2).
    assert d.requirement is Requirement.ENCRYPT_ONLY and d.records == ()
    v = verify_chain([record], pki().chain, [MX1], NOW)
    assert not v.ok and v.reason == "no-usable-records"


def test_rfc6698_4_1_well_formed_full_records_stay_usable() -> None:
    p = pki()
    for record in (rec(3, 1, 0, p.leaf), rec(3, 0, 0, p.leaf), rec(2, 0, 0, p.root),
                   rec(2, 1, 0, p.inter)):
        assert unusable_reason(record) is None
        assert verify_chain([record], p.chain, ["mx.example.com"], NOW).ok


def test_rfc7671_9_malformed_full_dropped_before_agility() -> None:
    p = pki()
    good = rec(3, 1, 1, p.leaf)
    assert select_usable([TLSARecord(3, 1, 0, b"\x30\x00"), good]) == (good,)


# --- J17: trust anchors carried in DNS (RFC 7671 §5.2.2, §5.2.3) ---------------------------


def test_rfc7671_5_2_2_full_anchor_from_dns_only() -> None:
    p = pki()
    # The root is not sent: "2 0 0" carries it; "2 1 0" carries its key.
    for record in (rec(2, 0, 0, p.root), rec(2, 1, 0, p.root)):
        v = verify_chain([record], [p.leaf.der, p.inter.der], ["mx.example.com"], NOW)
        assert v.ok and v.reason == "dane-ta-match"
    # A digest of the unsent root cannot be an anchor.
    v = verify_chain([rec(2, 0, 1, p.root)], [p.leaf.der, p.inter.der],
                     ["mx.example.com"], NOW)
    assert not v.ok


# --- K1-K4: publishing (RFC 7672 §3.1, §4; RFC 7671 §5.2, §8) ------------------------------


def test_rfc7672_3_1_2_ta_root_not_sent_is_flagged() -> None:
    p = pki()
    sent = [p.leaf.cert, p.inter.cert]  # the root is left out
    a = rollover_advice([rec(2, 0, 1, p.root)], sent)
    assert "ta-not-sent" in codes(a) and not a.safe
    # "2 1 0" still authenticates (RFC 7671 §5.2.3) but the root must be sent too.
    b = rollover_advice([rec(2, 1, 0, p.root)], sent)
    assert "current-covered" in codes(b) and "ta-not-sent" in codes(b)
    # Only "2 0 0" carries the anchor certificate itself: nothing to send.
    c = rollover_advice([rec(2, 0, 0, p.root)], sent)
    assert "current-covered" in codes(c) and "ta-not-sent" not in codes(c)
    # The full chain sent: nothing to say.
    d = rollover_advice([rec(2, 0, 1, p.root)], sent + [p.root.cert])
    assert "ta-not-sent" not in codes(d) and "current-covered" in codes(d)


def test_rfc7672_3_1_2_self_signed_ta_leaf_counts_as_sent() -> None:
    leaf = make_cert("mx.example.com", key("ec", 81), san=["mx.example.com"], ca=True,
                     key_usage="ca")
    a = rollover_advice([rec(2, 0, 1, leaf)], [leaf.cert])
    assert "ta-not-sent" not in codes(a)


def test_rfc7672_4_every_combination_matches_the_live_chain() -> None:
    p = pki()
    other_ca = pki("rsa").inter
    sent = [p.leaf.cert, p.inter.cert]
    # A DANE-TA record for a CA the server does not use yet: clients that use
    # "2 0 1" cannot authenticate it today (publish it once the new chain is live).
    a = rollover_advice([rec(3, 1, 1, p.leaf), rec(2, 0, 1, other_ca)], sent)
    assert "combination-not-covered" in codes(a) and not a.safe
    assert any("2 0 1" in f.message for f in a.findings if f.code == "combination-not-covered")
    # Current and next key in the same combination are fine (RFC 7671 §8.1).
    b = rollover_advice([rec(3, 1, 1, p.leaf), rec(3, 1, 1, pki("rsa").leaf)], sent)
    assert "combination-not-covered" not in codes(b) and b.safe
    # Both combinations matching: fine.
    c = rollover_advice([rec(3, 1, 1, p.leaf), rec(2, 0, 1, p.inter)], sent)
    assert "combination-not-covered" not in codes(c)


def test_rfc7672_2_2_chain_matches_at_least_one_record() -> None:
    p = pki()
    a = rollover_advice([zeros(3, 1, 1), zeros(2, 0, 1)], [p.leaf.cert, p.inter.cert])
    assert "current-not-covered" in codes(a) and not a.safe
