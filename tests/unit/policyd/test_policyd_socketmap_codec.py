"""Netstring codec and socketmap request/reply model (Postfix socketmap_table(5)).

Pure: bytes in, frames or typed errors out. The server side of the same rules is in
tests/integration/test_policyd_protocol.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import ProtocolError
from smtptls.services.policyd.socketmap import (
    NetstringDecoder,
    Reply,
    ReplyStatus,
    Request,
    encode_netstring,
    parse_request,
)

# --- decoding ---------------------------------------------------------------------------

GOOD = [
    pytest.param(b"0:,", [b""], id="empty-frame"),
    pytest.param(b"19:postfix example.com,", [b"postfix example.com"], id="one-request"),
    pytest.param(b"3:abc,3:def,", [b"abc", b"def"], id="pipelined-two"),
    pytest.param(b"1:x,2:yz,3:abc,4:defg,", [b"x", b"yz", b"abc", b"defg"],
                 id="pipelined-four"),
    pytest.param(b"5:a,b:c,", [b"a,b:c"], id="separators-inside-data"),
    pytest.param(b"3:abc,3:de", [b"abc"], id="second-frame-incomplete"),
    pytest.param(b"3:abc", [], id="terminator-missing-so-far"),
    pytest.param(b"12", [], id="length-digits-only-so-far"),
    pytest.param(b"", [], id="nothing"),
]


@pytest.mark.parametrize(("data", "frames"), GOOD)
def test_netstring_decode_whole(data: bytes, frames: list[bytes]) -> None:
    assert NetstringDecoder(1024).feed(data) == frames


@pytest.mark.parametrize(("data", "frames"), GOOD)
def test_netstring_decode_fragmented_byte_by_byte(data: bytes, frames: list[bytes]) -> None:
    dec = NetstringDecoder(1024)
    out: list[bytes] = []
    for i in range(len(data)):
        out.extend(dec.feed(data[i:i + 1]))
    assert out == frames


def test_netstring_keeps_partial_frame_between_feeds() -> None:
    dec = NetstringDecoder(1024)
    assert dec.feed(b"19:postfix exa") == []
    assert dec.buffered == len(b"19:postfix exa")
    assert dec.feed(b"mple.com,3:") == [b"postfix example.com"]
    assert dec.feed(b"abc,") == [b"abc"]
    assert dec.buffered == 0


BAD = [
    pytest.param(b"-1:x,", "not a decimal", id="negative-length"),
    pytest.param(b"+1:x,", "not a decimal", id="plus-sign"),
    pytest.param(b"01:x,", "leading zero", id="leading-zero"),
    pytest.param(b"00:,", "leading zero", id="double-zero"),
    pytest.param(b":x,", "empty", id="no-digits"),
    pytest.param(b"3:abc;", "terminated", id="wrong-terminator"),
    pytest.param(b"3:abcd,", "terminated", id="data-longer-than-length"),
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", "not a decimal", id="http-garbage"),
    pytest.param(b"\x00\x01\x02", "not a decimal", id="binary-garbage"),
    pytest.param(b"1 :x,", "not a decimal", id="space-in-length"),
    pytest.param(b"99999:", "exceeds", id="oversized-length"),
    pytest.param(b"12345678901234567890", "exceeds", id="endless-digits"),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_netstring_broken_framing_is_a_protocol_error(data: bytes, message: str) -> None:
    dec = NetstringDecoder(1024)
    with pytest.raises(ProtocolError, match=message):
        dec.feed(data)
    assert dec.broken
    with pytest.raises(ProtocolError):
        dec.feed(b"3:abc,")  # framing can't be recovered: the decoder stays failed


def test_netstring_error_carries_frames_decoded_before_it() -> None:
    dec = NetstringDecoder(1024)
    with pytest.raises(ProtocolError) as info:
        dec.feed(b"3:abc,3:def,x")
    assert info.value.frames == [b"abc", b"def"]  # type: ignore[attr-defined]


def test_netstring_oversized_refused_before_the_data_arrives() -> None:
    dec = NetstringDecoder(100)
    with pytest.raises(ProtocolError, match="exceeds the limit of 100"):
        dec.feed(b"101:")
    assert dec.buffered == 0


def test_netstring_at_the_limit_is_accepted() -> None:
    assert NetstringDecoder(5).feed(b"5:abcde,") == [b"abcde"]


def test_netstring_decoder_rejects_a_zero_limit() -> None:
    with pytest.raises(ProtocolError):
        NetstringDecoder(0)


@pytest.mark.parametrize(("data", "wire"), [
    pytest.param(b"", b"0:,", id="empty"),
    pytest.param(b"OK dane-only", b"12:OK dane-only,", id="ok"),
    pytest.param(b"NOTFOUND ", b"9:NOTFOUND ,", id="notfound"),
])
def test_netstring_encode(data: bytes, wire: bytes) -> None:
    assert encode_netstring(data) == wire


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(1, 50))
@settings(max_examples=200, deadline=None)
def test_property_netstring_roundtrip_any_fragmentation(frames: list[bytes], chunk: int) -> None:
    wire = b"".join(encode_netstring(f) for f in frames)
    dec = NetstringDecoder(1024)
    out: list[bytes] = []
    for i in range(0, len(wire), chunk):
        out.extend(dec.feed(wire[i:i + chunk]))
    assert out == frames
    assert dec.buffered == 0


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_property_netstring_garbage_only_typed_errors(data: bytes) -> None:
    dec = NetstringDecoder(256)
    try:
        frames = dec.feed(data)
    except ProtocolError:
        assert dec.buffered == 0
        return
    assert all(len(f) <= 256 for f in frames)
    assert dec.buffered <= 256 + 5  # never more than one bounded frame is held


# --- requests and replies -----------------------------------------------------------------


@pytest.mark.parametrize(("frame", "expected"), [
    pytest.param(b"postfix example.com", Request("postfix", "example.com"), id="plain"),
    pytest.param(b"postfix [mx.example.com]:587", Request("postfix", "[mx.example.com]:587"),
                 id="bracketed-port"),
    pytest.param(b"postfix ", Request("postfix", ""), id="empty-key"),
    pytest.param(b"map key with spaces", Request("map", "key with spaces"),
                 id="key-keeps-spaces"),
])
def test_socketmap_parse_request(frame: bytes, expected: Request) -> None:
    assert parse_request(frame) == expected
    assert parse_request(expected.to_bytes().split(b":", 1)[1][:-1]) == expected


@pytest.mark.parametrize("frame", [
    pytest.param(b"postfix", id="no-space"),
    pytest.param(b" example.com", id="empty-name"),
    pytest.param(b"postfix \xff\xfe", id="not-utf8"),
])
def test_socketmap_bad_request_is_protocol_error(frame: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(frame)


@pytest.mark.parametrize(("reply", "text"), [
    pytest.param(Reply.ok("dane-only"), "OK dane-only", id="ok"),
    pytest.param(Reply.notfound(), "NOTFOUND ", id="notfound-keeps-the-space"),
    pytest.param(Reply.temp("dns timeout"), "TEMP dns timeout", id="temp"),
    pytest.param(Reply.perm("unknown map name"), "PERM unknown map name", id="perm"),
    pytest.param(Reply.temp("a\r\nb"), "TEMP a  b", id="control-characters-removed"),
])
def test_socketmap_reply_text(reply: Reply, text: str) -> None:
    assert reply.to_text() == text
    assert reply.to_bytes() == encode_netstring(text.encode())
    assert Reply.parse(text).status is reply.status


@pytest.mark.parametrize("text", ["MAYBE x", "OK", ""])
def test_socketmap_reply_parse_rejects(text: str) -> None:
    with pytest.raises(ProtocolError):
        Reply.parse(text)


def test_socketmap_reply_is_bounded() -> None:
    assert len(Reply.ok("x" * 500000).to_bytes()) <= 100000 + 10
    assert ReplyStatus("TEMP") is ReplyStatus.TEMP


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_property_parse_request_only_typed_errors(frame: bytes) -> None:
    try:
        request = parse_request(frame)
    except ProtocolError:
        return
    assert parse_request(request.to_bytes()[request.to_bytes().index(b":") + 1:-1]) == request


@given(st.sampled_from(list(ReplyStatus)), st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_property_reply_roundtrip(status: ReplyStatus, data: str) -> None:
    reply = Reply(status, data)
    text = reply.to_text()
    parsed = Reply.parse(text)
    assert parsed.status is status
    assert parsed.to_text() == text  # printable, single line, stable
    frames = NetstringDecoder(200000).feed(reply.to_bytes())
    assert frames == [text.encode("utf-8")]


@given(st.text(max_size=100))
@settings(max_examples=200, deadline=None)
def test_property_reply_parse_only_typed_errors(text: str) -> None:
    try:
        reply = Reply.parse(text)
    except ProtocolError:
        return
    assert reply.status in ReplyStatus
    assert text.startswith(reply.status.value + " ")
