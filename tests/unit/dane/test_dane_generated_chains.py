"""DANE-EE(3) and DANE-TA(2) on chains generated here, for every selector (0: the whole
certificate, 1: its SubjectPublicKeyInfo) and matching type (0: full, 1: SHA-256,
2: SHA-512), each with passing and failing records (RFC 7672 §3.1, RFC 6698 §2.1, RFC 7671
§5.2). The project's own proof of what the corpus' OpenSSL and Postfix DANE vectors show.

The chain is four deep, as a server sends it: leaf ``mx1.example.org`` <- issuing CA <-
policy CA <- root; a second chain has the same names under other keys (an impostor).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
from dane_certs import NOW, Issued, key, make_cert, rec

from smtptls.dane import DaneVerdict, TLSARecord, verify_chain

pytestmark = pytest.mark.rfc("7672 3.1")

HOST = "mx1.example.org"
KINDS = ["ec", "rsa"]
SELECTORS_AND_TYPES = [pytest.param(s, m, id=f"{s}-{m}") for s in (0, 1) for m in (0, 1, 2)]
#: anchor -> its depth in the chain as sent (leaf 0)
ANCHORS = {"issuing": 1, "policy": 2, "root": 3}


def anchor_depth(anchor: str, selector: int, mtype: int) -> int:
    """The match depth as OpenSSL reports it: a bare key (2 1 0) anchors the certificate it
    signed, one below; a certificate or a digest, its own place in the chain."""
    return ANCHORS[anchor] - (1 if (selector, mtype) == (1, 0) else 0)


@dataclass(frozen=True)
class Chain:
    root: Issued
    policy: Issued
    issuing: Issued
    leaf: Issued

    @property
    def sent(self) -> list[bytes]:
        return [self.leaf.der, self.issuing.der, self.policy.der, self.root.der]


@functools.cache
def chain(kind: str, slot: int = 70) -> Chain:
    """Root -> policy CA -> issuing CA -> leaf for HOST; ``slot`` picks the keys."""
    root = make_cert("Own Test Root", key(kind, slot), ca=True, key_usage="ca")
    policy = make_cert("Own Policy CA", key(kind, slot + 1), root, ca=True, path_len=1,
                       key_usage="ca")
    issuing = make_cert("Own Issuing CA", key(kind, slot + 2), policy, ca=True, path_len=0,
                        key_usage="ca")
    leaf = make_cert(HOST, key(kind, slot + 3), issuing, san=[HOST], key_usage="ee")
    return Chain(root, policy, issuing, leaf)


def impostor(kind: str) -> Chain:
    """The same names and shape, other keys."""
    return chain(kind, 80)


def verdict(records: list[TLSARecord], sent: list[bytes], names: tuple[str, ...] = (HOST,)
            ) -> DaneVerdict:
    return verify_chain(records, sent, list(names), NOW)


def flipped(record: TLSARecord, issued: Issued) -> TLSARecord:
    """The record with one bit of its data flipped: the last one, or for a whole
    certificate (0 0) the last bit of its key (an anchor is its name and key, RFC 5280
    §6.1.1 (d): a bit of the certificate's own signature changes nothing)."""
    data = bytearray(record.data)
    at = len(data) - 1
    if (record.selector, record.mtype) == (0, 0):
        at = bytes(data).find(issued.spki) + len(issued.spki) - 1
    data[at] ^= 1
    return TLSARecord(record.usage, record.selector, record.mtype, bytes(data))


def other_selector(usage: int, selector: int, mtype: int, issued: Issued) -> TLSARecord:
    """Data for the other selector, labelled as ``selector``."""
    wrong = rec(usage, 1 - selector, mtype, issued)
    return TLSARecord(usage, selector, mtype, wrong.data)


def failed(v: DaneVerdict, case: str, mtype: int) -> bool:
    """Not authenticated, for the reason the case gives: nothing matched; full (0) data of
    the other selector's shape may also be judged an unusable record."""
    reasons = {"no-match"}
    if case == "other-selector" and mtype == 0:
        reasons.add("no-usable-records")
    return not v.ok and v.reason in reasons


# --- DANE-EE(3): the leaf, names and dates ignored ---------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_TYPES)
def test_rfc7672_3_1_1_dane_ee_matches(kind: str, selector: int, mtype: int) -> None:
    c = chain(kind)
    record = rec(3, selector, mtype, c.leaf)
    v = verdict([record], c.sent)
    assert v.ok and v.reason == "dane-ee-match" and v.depth == 0 and v.matched == record
    # RFC 7672 §3.2.1: no name check for DANE-EE; the leaf alone is enough.
    assert verdict([record], [c.leaf.der], names=("other.example.net",)).ok


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_TYPES)
@pytest.mark.parametrize("case", ["impostor-leaf", "issuing-ca", "root", "bit-flipped",
                                  "other-selector"])
def test_rfc7672_3_1_1_dane_ee_fails(kind: str, selector: int, mtype: int, case: str) -> None:
    c = chain(kind)
    record = {
        "impostor-leaf": lambda: rec(3, selector, mtype, impostor(kind).leaf),
        "issuing-ca": lambda: rec(3, selector, mtype, c.issuing),  # EE matches the leaf only
        "root": lambda: rec(3, selector, mtype, c.root),
        "bit-flipped": lambda: flipped(rec(3, selector, mtype, c.leaf), c.leaf),
        "other-selector": lambda: other_selector(3, selector, mtype, c.leaf),
    }[case]()
    v = verdict([record], c.sent)
    assert failed(v, case, mtype), v.detail
    if v.reason == "no-match":
        assert v.result_type == "validation-failure"


# --- DANE-TA(2): an anchor in the chain, then the name ----------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_TYPES)
@pytest.mark.parametrize("anchor", list(ANCHORS))
def test_rfc7672_3_1_2_dane_ta_matches(kind: str, selector: int, mtype: int,
                                       anchor: str) -> None:
    c = chain(kind)
    record = rec(2, selector, mtype, getattr(c, anchor))
    v = verdict([record], c.sent)
    assert v.ok and v.reason == "dane-ta-match", v.detail
    assert v.depth == anchor_depth(anchor, selector, mtype) and v.matched == record


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_TYPES)
@pytest.mark.parametrize("case", ["impostor-ca", "leaf-is-no-anchor", "bit-flipped",
                                  "other-selector"])
def test_rfc7672_3_1_2_dane_ta_fails(kind: str, selector: int, mtype: int, case: str) -> None:
    c = chain(kind)
    record = {
        "impostor-ca": lambda: rec(2, selector, mtype, impostor(kind).issuing),
        "leaf-is-no-anchor": lambda: rec(2, selector, mtype, c.leaf),
        "bit-flipped": lambda: flipped(rec(2, selector, mtype, c.issuing), c.issuing),
        "other-selector": lambda: other_selector(2, selector, mtype, c.issuing),
    }[case]()
    v = verdict([record], c.sent)
    assert failed(v, case, mtype), v.detail


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_TYPES)
def test_rfc7672_3_2_2_dane_ta_name_mismatch(kind: str, selector: int, mtype: int) -> None:
    c = chain(kind)
    record = rec(2, selector, mtype, c.policy)
    v = verdict([record], c.sent, names=("mx2.example.org", "example.org"))
    assert not v.ok and v.reason == "name-mismatch", v.detail
    assert v.result_type == "certificate-host-mismatch"
    assert v.depth == anchor_depth("policy", selector, mtype)
    assert verdict([record], c.sent, names=("mx2.example.org", HOST.upper())).ok


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("selector", "mtype"), SELECTORS_AND_TYPES)
def test_rfc7671_5_2_dane_ta_not_sent(kind: str, selector: int, mtype: int) -> None:
    """The root left out of the chain: only a full (0) record carries the anchor itself."""
    c = chain(kind)
    v = verdict([rec(2, selector, mtype, c.root)], c.sent[:3])
    if mtype == 0:
        assert v.ok and v.reason == "dane-ta-match", v.detail
        # a bare key anchors the top certificate sent; a certificate sits one above it
        assert v.depth == (3 if selector == 0 else 2)
    else:
        assert not v.ok and v.reason == "no-match", v.detail


@pytest.mark.parametrize("kind", KINDS)
def test_rfc5280_6_1_1_carried_anchor_is_its_name_and_key(kind: str) -> None:
    """A 2 0 0 record whose certificate signature is damaged still anchors the chain."""
    c = chain(kind)
    der = c.issuing.der
    damaged = TLSARecord(2, 0, 0, der[:-1] + bytes([der[-1] ^ 1]))
    v = verdict([damaged], [c.leaf.der])
    assert v.ok and v.reason == "dane-ta-match" and v.depth == 1


@pytest.mark.parametrize("kind", KINDS)
def test_rfc7672_3_1_dane_ta_and_ee_in_one_rrset(kind: str) -> None:
    """Any usable record that authenticates the peer is enough; failing ones do not veto."""
    c, other = chain(kind), impostor(kind)
    records = [rec(3, 1, 1, other.leaf), rec(2, 0, 2, other.root), rec(2, 1, 1, c.policy)]
    v = verdict(records, c.sent)
    assert v.ok and v.matched == rec(2, 1, 1, c.policy)
    assert not verdict(records[:2], c.sent).ok
    # the impostor's chain is authenticated by the impostor's records only
    assert verdict(records[:2], impostor(kind).sent).ok
