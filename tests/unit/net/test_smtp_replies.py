"""SMTP reply parsing and probe bounds, without any network (RFC 5321 §4.2, RFC 3207)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import ProtocolError, SmtpProbeError
from smtptls.net.smtp import ProbeResult, ReplyReader, SmtpReply, Stage, _offers_starttls, _sni


def parse_all(data: bytes, **kw) -> list[SmtpReply]:
    r = ReplyReader(**kw)
    r.feed(data)
    out = []
    for _ in range(1000):
        reply = r.next_reply()
        if reply is None:
            break
        out.append(reply)
    return out


@pytest.mark.parametrize(
    "wire, code, lines",
    [
        pytest.param(b"220 mx.example ESMTP\r\n", 220, ("mx.example ESMTP",), id="single-line"),
        pytest.param(b"250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n", 250,
                     ("mx.example", "PIPELINING", "STARTTLS"), id="multi-line"),
        pytest.param(b"250\r\n", 250, ("",), id="code-only"),
        pytest.param(b"220 bare lf\n", 220, ("bare lf",), id="bare-lf-accepted"),
        pytest.param(b"554 5.7.1 go away\r\n", 554, ("5.7.1 go away",), id="negative"),
        pytest.param(b"250-a\r\n250\r\n", 250, ("a", ""), id="final-code-only"),
    ],
)
def test_rfc5321_4_2_reply_lines(wire, code, lines):
    (reply,) = parse_all(wire)
    assert reply.code == code
    assert reply.lines == lines


@pytest.mark.parametrize(
    "wire, message",
    [
        pytest.param(b"hello world\r\n", "not an SMTP reply line", id="garbage"),
        pytest.param(b"22 short\r\n", "not an SMTP reply line", id="two-digits"),
        pytest.param(b"120 intermediate\r\n", "not an SMTP reply line", id="first-digit-1"),
        pytest.param(b"620 six\r\n", "not an SMTP reply line", id="first-digit-6"),
        pytest.param(b"220:colon\r\n", "bad separator", id="bad-separator"),
        pytest.param(b"\x16\x03\x01\x02\x00\r\n", "not an SMTP reply line", id="tls-bytes"),
        pytest.param(b"250-a\r\n251 b\r\n", "changes its code", id="code-changes"),
    ],
)
def test_rfc5321_4_2_malformed_replies_raise_protocol_error(wire, message):
    with pytest.raises(ProtocolError, match=message):
        parse_all(wire)


def test_incomplete_reply_waits_for_more():
    r = ReplyReader()
    r.feed(b"250-first\r\n250 sec")
    assert r.next_reply() is None
    assert r.mid_reply
    r.feed(b"ond\r\n")
    assert r.next_reply() == SmtpReply(250, ("first", "second"))
    assert r.pending == 0


@pytest.mark.parametrize(
    "wire, kw, message",
    [
        pytest.param(b"220 " + b"x" * 100, {"max_line": 64}, "line too long",
                     id="unterminated-line-over-limit"),
        pytest.param(b"220 " + b"x" * 100 + b"\r\n", {"max_line": 64}, "line too long",
                     id="terminated-line-over-limit"),
        pytest.param(b"220-x\r\n" * 11, {"max_lines": 10}, "too many lines",
                     id="endless-multiline-banner"),
        pytest.param(b"250-x\r\n" * 200, {"max_line": 16, "max_lines": 10}, "too much data",
                     id="buffer-over-limit"),
    ],
)
def test_reply_bounds(wire, kw, message):
    with pytest.raises(ProtocolError, match=message):
        parse_all(wire, **kw)


def test_reply_limits_must_be_sane():
    with pytest.raises(ProtocolError):
        ReplyReader(max_line=1)


@pytest.mark.parametrize(
    "lines, offered",
    [
        pytest.param(("mx", "PIPELINING", "STARTTLS"), True, id="offered"),
        pytest.param(("mx", "starttls"), True, id="case-insensitive"),
        pytest.param(("mx", "8BITMIME"), False, id="absent"),
        pytest.param(("STARTTLS greets you",), False, id="greeting-line-is-not-a-keyword"),
        pytest.param(("mx", "XSTARTTLS"), False, id="other-keyword"),
    ],
)
def test_rfc3207_4_starttls_keyword(lines, offered):
    assert _offers_starttls(SmtpReply(250, lines)) is offered


@pytest.mark.parametrize(
    "name, sni",
    [
        pytest.param("MX1.Example.COM.", "mx1.example.com", id="lowercased-no-dot"),
        pytest.param("192.0.2.1", None, id="ipv4-literal-no-sni"),
        pytest.param("2001:db8::1", None, id="ipv6-literal-no-sni"),
        pytest.param(None, None, id="none"),
    ],
)
def test_rfc7672_8_1_sni_is_a_dns_name(name, sni):
    assert _sni(name) == sni


def test_rfc7672_8_1_sni_must_be_a_label():
    with pytest.raises(SmtpProbeError) as ei:
        _sni("bücher.example")
    assert ei.value.stage == Stage.HANDSHAKE


def test_probe_result_error_is_typed_and_reported():
    err = SmtpProbeError("no complete reply within 1s", stage=Stage.BANNER, host="mx")
    res = ProbeResult(host="mx", address="127.0.0.1", port=25, server_name="mx",
                      stage_reached=Stage.CONNECT, error=err)
    assert not res.ok
    assert res.to_dict()["error"] == {"stage": "banner",
                                      "message": "banner: no complete reply within 1s"}
    with pytest.raises(SmtpProbeError):
        res.raise_for_error()


# --- properties ------------------------------------------------------------------------

reply_line = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
replies = st.builds(
    SmtpReply,
    code=st.integers(200, 599),
    lines=st.lists(reply_line, min_size=1, max_size=5).map(tuple),
)


@given(st.lists(replies, min_size=1, max_size=5), st.data())
@settings(max_examples=200, deadline=None)
def test_round_trip_in_any_chunking(items, data):
    wire = "".join(r.to_text() for r in items).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    r = ReplyReader()
    got = []
    prev = 0
    for cut in [*cuts, len(wire)]:
        r.feed(wire[prev:cut])
        prev = cut
        while (reply := r.next_reply()) is not None:
            got.append(reply)
    assert got == items


@given(st.binary(max_size=600), st.integers(8, 64), st.integers(1, 8))
@settings(max_examples=300, deadline=None)
def test_only_protocol_error_escapes(data, max_line, max_lines):
    r = ReplyReader(max_line=max_line, max_lines=max_lines)
    try:
        r.feed(data)
        for _ in range(len(data) + 1):
            reply = r.next_reply()
            if reply is None:
                break
            assert 200 <= reply.code <= 599
            assert len(reply.lines) <= max_lines
    except ProtocolError as exc:
        assert str(exc)
