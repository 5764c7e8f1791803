"""The earliest RRSIG expiration on an Answer (RFC 4034 §3.1.5), built from resolver
responses without the network, and carried by the in-memory twin."""

from __future__ import annotations

import datetime as dt

import dns.message
import pytest

from smtptls.config import DnsConfig
from smtptls.dnssec import Security
from smtptls.net.dns import Answer, answer_from_response, sig_expiration
from smtptls.net.memory import MemoryResolver

CFG = DnsConfig(nameservers=("127.0.0.1",))
KEY = "AQPSKmynfzW4kyBv015MUG2DeIQ3Cbl+BBZH4b/0PY1kxkmvHjcZc8nokfzj31GajIQKY+5CptLr3buXA10hWqTkF7H6RfoRqXQeogmMHfpftf6zMv1LyBUgia7za6ZEzOJBOztyvhjL742iU/TpPSEDhm2SNKLijfUppn1UaNvv4w=="


def _sig(covered: str, expiration: str, inception: str = "20261101000000") -> str:
    return (f"RRSIG {covered} 13 3 30 {expiration} {inception} 12345 example. {KEY}")


def _response(question: str, *answer: str, ad: bool = True) -> dns.message.Message:
    flags = "QR RD RA" + (" AD" if ad else "")
    lines = ["id 1", "opcode QUERY", "rcode NOERROR", f"flags {flags}", ";QUESTION",
             question, ";ANSWER", *answer, ";AUTHORITY"]
    return dns.message.from_text("\n".join(lines) + "\n")


def _utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


@pytest.mark.rfc
def test_rfc4034_3_1_5_signature_expiration_of_the_answer_rrset():
    r = _response("example. IN MX", "example. 30 IN MX 10 mx1.example.",
                  f"example. 30 IN {_sig('MX', '20261205120000')}")
    ans = answer_from_response("example", "MX", r, config=CFG)
    assert ans.sig_expires == _utc(2026, 12, 5, 12) and ans.secure


@pytest.mark.rfc
def test_rfc4034_3_1_5_earliest_of_several_signatures_counts():
    r = _response("_25._tcp.mx.example. IN TLSA",
                  "_25._tcp.mx.example. 30 IN TLSA 3 1 1 " + "ab" * 32,
                  f"_25._tcp.mx.example. 30 IN {_sig('TLSA', '20261230000000')}",
                  f"_25._tcp.mx.example. 30 IN {_sig('TLSA', '20261204000000')}")
    ans = answer_from_response("_25._tcp.mx.example", "TLSA", r, config=CFG)
    assert ans.sig_expires == _utc(2026, 12, 4)


def test_rfc4034_3_1_5_signatures_over_other_rrsets_do_not_count():
    # the CNAME's own RRSIG covers the alias, not the answer RRset at the target
    r = _response("a.example. IN TXT", "a.example. 30 IN CNAME b.example.",
                  f"a.example. 30 IN {_sig('CNAME', '20261203000000')}",
                  'b.example. 30 IN TXT "v=STSv1; id=1"',
                  f"b.example. 30 IN {_sig('TXT', '20261220000000')}")
    ans = answer_from_response("a.example", "TXT", r, config=CFG)
    assert ans.cname_chain == ("b.example",) and ans.sig_expires == _utc(2026, 12, 20)


def test_unsigned_and_negative_answers_have_no_signature_time():
    unsigned = _response("example. IN MX", "example. 30 IN MX 10 mx1.example.", ad=False)
    assert answer_from_response("example", "MX", unsigned, config=CFG).sig_expires is None
    nodata = _response("example. IN TLSA")
    assert answer_from_response("example", "TLSA", nodata, config=CFG).sig_expires is None


@pytest.mark.rfc
def test_rfc4034_3_1_5_serial_arithmetic_past_2106():
    # expiration numerically below inception: the 32-bit counter wrapped
    assert sig_expiration(100, 2**32 - 100) == dt.datetime.fromtimestamp(2**32 + 100, dt.UTC)
    assert sig_expiration(2000, 1000) == dt.datetime.fromtimestamp(2000, dt.UTC)


def test_answer_field_defaults_to_none_is_not_compared_and_keeps_slots():
    when = _utc(2026, 12, 5)
    plain = Answer("example", "MX", (), Security.SECURE)
    signed = Answer("example", "MX", (), Security.SECURE, sig_expires=when)
    assert plain.sig_expires is None and plain == signed
    assert not hasattr(plain, "__dict__")
    with pytest.raises(AttributeError):
        signed.sig_expires = None  # type: ignore[misc]


async def test_memory_twin_carries_signature_times_through_cnames():
    when = _utc(2026, 12, 5)
    world = MemoryResolver()
    world.mx("example.com", "mx.example.com", security=Security.SECURE)
    world.sign("example.com", "MX", when)
    world.txt_record("target.example.com", "v=STSv1; id=1", security=Security.SECURE)
    world.sign("target.example.com", "TXT", when)
    world.cname("_mta-sts.example.com", "target.example.com")
    assert (await world.query("example.com", "MX")).sig_expires == when
    assert (await world.txt("_mta-sts.example.com")).sig_expires == when
    assert (await world.query("mx.example.com", "A")).sig_expires is None
