"""Whether and how DANE applies, from DNSSEC statuses (RFC 7672 §2, RFC 7671 §7)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import smtptls.dnssec
from smtptls.dane import (
    DestinationLookup,
    HostLookup,
    Requirement,
    Security,
    TlsaLookup,
    TLSARecord,
    decide_destination,
    decide_host,
    tlsa_candidates,
    tlsa_query_name,
)
from smtptls.errors import DaneError, SmtpTlsError

S, N, B, X = Security.SECURE, Security.INSECURE, Security.BOGUS, Security.INDETERMINATE
EE = TLSARecord(3, 1, 1, bytes(range(32)))
TA = TLSARecord(2, 1, 1, bytes(range(1, 33)))
PKIX = TLSARecord(1, 1, 1, bytes(32))
MX = "mx.example.com"


def test_security_is_the_shared_enum() -> None:
    assert Security is smtptls.dnssec.Security


# --- one host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "tlsa", "requirement", "reason"),
    [
        pytest.param(S, TlsaLookup(S, (EE,)), Requirement.DANE_REQUIRED, "usable-tlsa",
                     id="secure-usable"),
        pytest.param(S, TlsaLookup(S, (PKIX,)), Requirement.ENCRYPT_ONLY, "unusable-tlsa",
                     id="secure-all-unusable"),
        pytest.param(S, TlsaLookup(S, ()), Requirement.NO_DANE, "no-secure-tlsa",
                     id="secure-no-records"),
        pytest.param(S, TlsaLookup(N, (EE,)), Requirement.NO_DANE, "no-secure-tlsa",
                     id="tlsa-insecure"),
        pytest.param(S, TlsaLookup(B), Requirement.DEFER, "tlsa-bogus", id="tlsa-bogus"),
        pytest.param(S, TlsaLookup(X), Requirement.DEFER, "tlsa-bogus",
                     id="tlsa-indeterminate"),
        pytest.param(N, None, Requirement.NO_DANE, "address-insecure", id="address-insecure"),
        pytest.param(B, None, Requirement.DEFER, "address-bogus", id="address-bogus"),
        pytest.param(X, None, Requirement.DEFER, "address-bogus",
                     id="address-indeterminate"),
    ],
)
def test_rfc7672_2_1_2_and_2_2_host_requirement(address: Security, tlsa: TlsaLookup | None,
                                                requirement: Requirement, reason: str) -> None:
    lookups = {MX: tlsa} if tlsa is not None else {}
    d = decide_host(HostLookup(MX, address), lookups)
    assert d.requirement is requirement and d.reason == reason
    assert d.tls_required is (requirement in (Requirement.DANE_REQUIRED,
                                              Requirement.ENCRYPT_ONLY))
    assert d.deliverable is (requirement is not Requirement.DEFER)


def test_rfc7672_2_2_dane_required_carries_what_the_client_needs() -> None:
    d = decide_host(HostLookup(MX, S), {MX: TlsaLookup(S, (EE, PKIX))})
    assert d.records == (EE,) and d.all_records == (EE, PKIX)
    assert d.tlsa_base == MX and d.reference_names == (MX,)


def test_rfc7672_8_1_sni_is_tlsa_base_domain() -> None:
    host = HostLookup("mx.example.com", S, ("mx.hosting.example",))
    d = decide_host(host, {"mx.hosting.example": TlsaLookup(S, (EE,)), MX: TlsaLookup(S)})
    assert d.sni == "mx.hosting.example" == d.tlsa_base


def test_rfc7672_3_1_3_encrypt_only_explains_unusable_records() -> None:
    d = decide_host(HostLookup(MX, S), {MX: TlsaLookup(S, (PKIX, TLSARecord(3, 1, 1, b"x")))})
    assert d.requirement is Requirement.ENCRYPT_ONLY and d.records == ()
    assert "PKIX" in d.detail and d.tls_required


def test_rfc7671_9_agility_applied_in_decision() -> None:
    weak = TLSARecord(3, 1, 1, bytes(32))
    strong = TLSARecord(3, 1, 2, bytes(64))
    d = decide_host(HostLookup(MX, S), {MX: TlsaLookup(S, (weak, strong))})
    assert d.records == (strong,)


# --- CNAMEs: TLSA base domain (RFC 7672 §2.2.3, RFC 7671 §7) ---------------------------

ALIAS = "mx.example.com"
TARGET = "smtp.provider.example"


@pytest.mark.parametrize(
    ("host", "candidates"),
    [
        pytest.param(HostLookup(ALIAS, S), (ALIAS,), id="no-cname"),
        pytest.param(HostLookup(ALIAS, S, (TARGET,)), (TARGET, ALIAS), id="secure-chain"),
        pytest.param(HostLookup(ALIAS, S, ("hop.example", TARGET)), (TARGET, ALIAS),
                     id="secure-two-step-chain"),
        pytest.param(HostLookup(ALIAS, N, (TARGET,), first_security=S), (ALIAS,),
                     id="insecure-later-step"),
        pytest.param(HostLookup(ALIAS, N, (TARGET,)), (), id="insecure-first-step"),
        pytest.param(HostLookup(ALIAS, N), (), id="insecure-host"),
    ],
)
def test_rfc7672_2_2_3_tlsa_candidates(host: HostLookup, candidates: tuple) -> None:
    assert tlsa_candidates(host) == candidates


def test_rfc7672_2_2_3_expanded_name_first() -> None:
    host = HostLookup(ALIAS, S, (TARGET,))
    d = decide_host(host, {TARGET: TlsaLookup(S, (TA,)), ALIAS: TlsaLookup(S, (EE,))})
    assert d.tlsa_base == TARGET and d.records == (TA,)
    assert d.reference_names == (TARGET, ALIAS)


def test_rfc7672_2_2_3_fall_back_to_original_name() -> None:
    host = HostLookup(ALIAS, S, (TARGET,))
    for answer in (TlsaLookup(S), TlsaLookup(N, (TA,))):
        d = decide_host(host, {TARGET: answer, ALIAS: TlsaLookup(S, (EE,))})
        assert d.requirement is Requirement.DANE_REQUIRED
        assert d.tlsa_base == ALIAS == d.sni and d.records == (EE,)
        # RFC 7672 §3.2.2: both the original and the (secure) expanded name.
        assert set(d.reference_names) == {ALIAS, TARGET}


def test_rfc7672_2_1_2_bogus_expanded_tlsa_does_not_fall_back() -> None:
    host = HostLookup(ALIAS, S, (TARGET,))
    d = decide_host(host, {TARGET: TlsaLookup(B), ALIAS: TlsaLookup(S, (EE,))})
    assert d.requirement is Requirement.DEFER


def test_rfc7671_7_insecure_step_ignores_expanded_tlsa() -> None:
    host = HostLookup(ALIAS, N, ("hop.example", TARGET), first_security=S)
    d = decide_host(host, {TARGET: TlsaLookup(S, (TA,)), ALIAS: TlsaLookup(S, (EE,))})
    assert d.tlsa_base == ALIAS and d.records == (EE,)
    assert d.reference_names == (ALIAS,)


def test_missing_lookup_is_a_caller_error() -> None:
    host = HostLookup(ALIAS, S, (TARGET,))
    with pytest.raises(DaneError):
        decide_host(host, {TARGET: TlsaLookup(S)})


# --- destinations ------------------------------------------------------------------------


def test_rfc7672_2_2_1_insecure_mx_rrset_no_dane() -> None:
    dest = DestinationLookup("example.com", N, ("mx1.example.com", "mx2.example.com"))
    d = decide_destination(dest, [], {})
    assert [e.requirement for e in d.entries] == [Requirement.NO_DANE] * 2
    assert d.reason == "mx-insecure" and not d.dane_applies and not d.deferred


@pytest.mark.parametrize("status", [B, X], ids=["bogus", "indeterminate"])
def test_rfc7672_2_2_1_failed_mx_lookup_defers(status: Security) -> None:
    d = decide_destination(DestinationLookup("example.com", status, ("mx.example.com",)),
                           [], {})
    assert d.reason == "mx-bogus" and d.deferred and d.entries == ()


def test_rfc7672_2_2_per_mx_requirements() -> None:
    dest = DestinationLookup("example.com", S, ("mx1.example.com", "mx2.example.com",
                                                "mx3.example.com"))
    hosts = [HostLookup("mx1.example.com", S), HostLookup("mx2.example.com", N),
             HostLookup("mx3.example.com", S)]
    tlsa = {"mx1.example.com": TlsaLookup(S, (EE,)), "mx3.example.com": TlsaLookup(B)}
    d = decide_destination(dest, hosts, tlsa)
    assert [e.requirement for e in d.entries] == [
        Requirement.DANE_REQUIRED, Requirement.NO_DANE, Requirement.DEFER]
    assert d.dane_applies and not d.deferred


def test_rfc7672_2_1_2_all_hosts_deferred() -> None:
    dest = DestinationLookup("example.com", S, ("mx.example.com",))
    d = decide_destination(dest, [HostLookup("mx.example.com", S)],
                           {"mx.example.com": TlsaLookup(X)})
    assert d.deferred


def test_rfc7672_2_2_2_non_mx_destination() -> None:
    dest = DestinationLookup("example.com", S, (), has_mx=False)
    d = decide_destination(dest, [HostLookup("example.com", S)],
                           {"example.com": TlsaLookup(S, (EE,))})
    assert len(d.entries) == 1 and d.entries[0].host == "example.com"
    assert d.entries[0].requirement is Requirement.DANE_REQUIRED
    assert "RFC 7672 §2.2.2" in d.detail


def test_rfc7672_2_2_2_non_mx_destination_with_secure_cname() -> None:
    dest = DestinationLookup("example.com", S, (), has_mx=False)
    host = HostLookup("example.com", S, ("mail.example.net",))
    d = decide_destination(dest, [host], {"mail.example.net": TlsaLookup(S),
                                          "example.com": TlsaLookup(S, (TA,))})
    assert d.entries[0].tlsa_base == "example.com"
    assert set(d.entries[0].reference_names) == {"example.com", "mail.example.net"}


def test_rfc7672_2_2_3_tlsa_query_name() -> None:
    assert tlsa_query_name("MX.Example.COM.") == "_25._tcp.mx.example.com"
    assert tlsa_query_name("mx.example.com", 587) == "_587._tcp.mx.example.com"
    with pytest.raises(DaneError):
        tlsa_query_name("mx.example.com", 0)
    with pytest.raises(DaneError):
        tlsa_query_name("a..b")


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: HostLookup("", S), id="empty-host"),
        pytest.param(lambda: HostLookup("mx.example.com", "maybe"), id="bad-status"),
        pytest.param(lambda: HostLookup("mx.example.com", S, ("x.example",) * 17),
                     id="cname-chain-too-long"),
        pytest.param(lambda: TlsaLookup(S, ("3 1 1 00",)), id="records-not-typed"),
        pytest.param(lambda: TlsaLookup(S, None), id="records-none"),
        pytest.param(lambda: HostLookup("mx.example.com", S, None), id="cname-chain-none"),
        pytest.param(lambda: DestinationLookup("example.com", S, "mx.example.com"),
                     id="mx-hosts-string"),
        pytest.param(lambda: decide_host(HostLookup(MX, S), {MX: "secure"}),
                     id="tlsa-lookup-not-typed"),
        pytest.param(lambda: DestinationLookup("example.com", S, ("mx.example",) * 65),
                     id="too-many-mx"),
        pytest.param(lambda: decide_destination(
            DestinationLookup("example.com", S, ("mx.example.com",)), [], {}),
            id="host-lookup-missing"),
    ],
)
def test_input_errors_are_typed(build) -> None:
    with pytest.raises(DaneError):
        build()


def test_status_strings_accepted() -> None:
    assert HostLookup("mx.example.com", "secure").address_security is S


statuses = st.sampled_from(list(Security))
tlsa_records = st.lists(st.sampled_from([EE, TA, PKIX, TLSARecord(3, 1, 2, bytes(64))]),
                        max_size=3).map(tuple)


@given(statuses, statuses, st.booleans(), statuses, tlsa_records, statuses, tlsa_records)
def test_property_decide_host_consistent(first: Security, addr: Security, cname: bool,
                                         s1: Security, r1: tuple, s2: Security,
                                         r2: tuple) -> None:
    chain = (TARGET,) if cname else ()
    host = HostLookup(ALIAS, addr, chain, first if cname else None)
    try:
        d = decide_host(host, {TARGET: TlsaLookup(s1, r1), ALIAS: TlsaLookup(s2, r2)})
    except SmtpTlsError:
        raise AssertionError("all lookups were given") from None
    assert (d.requirement is Requirement.DANE_REQUIRED) == bool(d.records)
    if d.requirement in (Requirement.DANE_REQUIRED, Requirement.ENCRYPT_ONLY):
        assert d.sni == d.tlsa_base and d.tlsa_base in d.reference_names
        assert d.tlsa_base in tlsa_candidates(host)
    if host.first_security is not Security.SECURE:
        assert not d.tls_required
