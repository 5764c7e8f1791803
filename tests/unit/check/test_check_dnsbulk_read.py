"""The bulk resolver's answer reader gives exactly what the project's reader gives.

``read_answer`` reads the common response shapes itself and leaves every other one to
dnspython and ``net.dns.answer_from_response``; on generated responses, whenever it
reads one, the two :class:`Answer` values are equal, and the common shapes are read.
"""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.check.dnsbulk import (
    _RDTYPES,
    _question_end,
    query_wire,
    read_answer,
)
from smtptls.config import DnsConfig
from smtptls.errors import SmtpTlsError
from smtptls.net.dns import answer_from_response

CONFIG = DnsConfig(max_records=8)
label = st.from_regex(r"[a-z0-9_](?:[a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
name_st = st.lists(label, min_size=1, max_size=4).map(lambda x: ".".join(x) + ".test")

VALUES = {
    "A": st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t))),
    "AAAA": st.sampled_from(["::1", "2001:db8::5", "::ffff:1.2.3.4", "fe80::1:2:3:4"]),
    "MX": st.tuples(st.integers(0, 65535), name_st | st.just(""), st.booleans()).map(
        lambda t: f"{t[0]} {t[1].upper() if t[2] else t[1]}."),
    # any bytes, invalid UTF-8 included, in presentation form (RFC 1035 §5.1 \DDD)
    "TXT": st.lists(st.binary(max_size=30), min_size=1, max_size=3).map(
        lambda parts: " ".join('"' + "".join(f"\\{b:03d}" for b in p) + '"'
                               for p in parts)),
    "TLSA": st.tuples(st.integers(0, 255), st.integers(0, 255), st.sampled_from([0, 1, 2, 7]),
                      st.binary(min_size=1, max_size=40), st.binary(min_size=64, max_size=64)).map(
        lambda t: f"{t[0]} {t[1]} {t[2]} "
                  + {1: t[4][:32], 2: t[4]}.get(t[2], t[3]).hex()),
}


@st.composite
def responses(draw):
    rdtype = draw(st.sampled_from(sorted(VALUES)))
    qname = draw(name_st)
    wire = query_wire(draw(st.integers(0, 65535)), qname, _RDTYPES[rdtype])
    query = dns.message.from_wire(wire)
    resp = dns.message.make_response(query)
    resp.set_rcode(draw(st.sampled_from([dns.rcode.NOERROR] * 4 + [
        dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED])))
    if draw(st.booleans()):
        resp.flags |= dns.flags.AD
    if draw(st.integers(0, 9)) == 0:
        resp.flags |= dns.flags.TC
    simple = True
    for _ in range(draw(st.integers(0, 10))):
        kind = draw(st.sampled_from(["wanted"] * 6 + ["cname", "other-name", "other-type"]))
        ttl = draw(st.integers(0, 86400))
        if kind == "wanted":
            owner = qname.upper() if draw(st.booleans()) else qname
            rrset = dns.rrset.from_text(owner + ".", ttl, "IN", rdtype,
                                        draw(VALUES[rdtype]))
        elif kind == "cname":
            simple = False
            rrset = dns.rrset.from_text(qname + ".", ttl, "IN", "CNAME", draw(name_st) + ".")
        elif kind == "other-name":
            simple = False
            rrset = dns.rrset.from_text(draw(name_st) + ".", ttl, "IN", rdtype,
                                        draw(VALUES[rdtype]))
        else:
            simple = False
            other = "TXT" if rdtype != "TXT" else "A"
            rrset = dns.rrset.from_text(qname + ".", ttl, "IN", other, draw(VALUES[other]))
        resp.answer.append(rrset)
    if draw(st.booleans()):
        resp.authority.append(dns.rrset.from_text(
            "test.", draw(st.integers(0, 86400)), "IN", "SOA",
            f"ns.test. admin.test. 1 2 3 4 {draw(st.integers(0, 86400))}"))
    data = resp.to_wire()
    if draw(st.integers(0, 19)) == 0:
        simple = False
        data += b"\x00"  # trailing junk
    simple = simple and resp.rcode() == dns.rcode.NOERROR and not resp.flags & dns.flags.TC
    return qname, rdtype, wire[12:_question_end(wire)], data, simple


def _reference(qname, rdtype, data):
    try:
        msg = dns.message.from_wire(data)
        return answer_from_response(qname, rdtype, msg, config=CONFIG)
    except (SmtpTlsError, dns.exception.DNSException, ValueError) as exc:
        return exc


@settings(max_examples=400, deadline=None)
@given(responses())
def test_bulk_reader_agrees_with_the_project_reader(case):
    qname, rdtype, question, data, simple = case
    fast = read_answer(qname, rdtype, question, data, CONFIG)
    ref = _reference(qname, rdtype, data)
    if fast is not None:
        assert not isinstance(ref, Exception), ref
        assert fast == ref
        assert (fast.ttl, fast.nxdomain, fast.cname_chain) == (ref.ttl, ref.nxdomain,
                                                              ref.cname_chain)
    elif simple and not isinstance(ref, Exception) and len(ref.records) <= 8:
        pytest.fail(f"a common shape left to the reference reader: {ref}")


def test_rfc7505_null_mx_reads_as_the_root_like_the_project_reader():
    wire = query_wire(5, "nullmx.test", 15)
    question = wire[12:_question_end(wire)]
    query = dns.message.from_wire(wire)
    resp = dns.message.make_response(query)
    resp.answer.append(dns.rrset.from_text("nullmx.test.", 300, "IN", "MX", "0 ."))
    data = resp.to_wire()
    fast = read_answer("nullmx.test", "MX", question, data, CONFIG)
    assert fast is not None and fast == _reference("nullmx.test", "MX", data)
    assert [r.to_text() for r in fast.records] == ["0 .."]


def test_tlsa_digest_of_the_wrong_length_is_left_to_the_reference_reader():
    wire = query_wire(9, "_25._tcp.mx.test", 52)
    question = wire[12:_question_end(wire)]
    rdata = b"\x03\x01\x01" + b"\xab" * 31  # SHA-256 is 32 bytes
    data = (bytes.fromhex("000981800001000100000000") + question + b"\xc0\x0c"
            + b"\x00\x34\x00\x01\x00\x00\x00\x10" + len(rdata).to_bytes(2, "big") + rdata)
    assert read_answer("_25._tcp.mx.test", "TLSA", question, data, CONFIG) is None
    assert isinstance(_reference("_25._tcp.mx.test", "TLSA", data), Exception)


def test_compression_loop_and_truncated_data_are_left_to_the_reference_reader():
    wire = query_wire(7, "a.test", 1)
    question = wire[12:_question_end(wire)]
    head = bytes.fromhex("000781800001000100000000")  # id 7, QR RD RA, 1 question, 1 answer
    loop = head + question + b"\xc0\x30" + b"\x00\x01\x00\x01\x00\x00\x00\x10\x00\x04"
    assert read_answer("a.test", "A", question, loop + b"\x01\x02\x03\x04", CONFIG) is None
    assert read_answer("a.test", "A", question, head + question + b"\xc0", CONFIG) is None
    assert read_answer("a.test", "A", question, b"\x00" * 5, CONFIG) is None


