"""The bulk resolver's query encoding (no network)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdatatype
import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtptls.check.dnsbulk import _question_end, query_wire


@pytest.mark.parametrize(("name", "rdtype", "code"), [
    ("example.com", "MX", 15), ("_mta-sts.example.com", "TXT", 16),
    ("_25._tcp.mx1.example.com", "TLSA", 52), ("a.b.c.example", "AAAA", 28),
], ids=["mx", "txt-service-label", "tlsa", "aaaa"])
@pytest.mark.rfc("6840 5.7")
def test_rfc6840_5_7_query_asks_ad_without_do(name, rdtype, code):
    wire = query_wire(0x1234, name, code)
    msg = dns.message.from_wire(wire)
    assert msg.id == 0x1234
    assert msg.flags & dns.flags.RD and msg.flags & dns.flags.AD
    assert not msg.ednsflags & dns.flags.DO  # no RRSIGs wanted
    assert msg.payload == 1232
    q = msg.question[0]
    assert q.name.to_text() == name + "." and q.rdtype == dns.rdatatype.from_text(rdtype)
    assert wire[12:_question_end(wire)] == msg.question[0].name.to_wire() + code.to_bytes(
        2, "big") + b"\x00\x01"


label = st.from_regex(r"[a-z0-9_][a-z0-9-]{0,20}", fullmatch=True)


@given(st.lists(label, min_size=1, max_size=6), st.sampled_from([1, 5, 15, 16, 28, 52]),
       st.integers(0, 65535))
def test_query_wire_round_trips_through_dnspython(labels, qtype, qid):
    name = ".".join(labels)
    msg = dns.message.from_wire(query_wire(qid, name, qtype))
    assert msg.id == qid
    assert msg.question[0].name.to_text(omit_final_dot=True) == name
