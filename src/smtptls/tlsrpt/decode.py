"""TLSRPT report bodies (RFC 8460 §5.3, §5.4) to JSON text and trees, with every bound.

A body as received is gzip-compressed JSON (``application/tlsrpt+gzip``, detected by its
magic bytes), plain JSON, or (seen in the wild, tolerant mode only) a zip archive.
Every bound is explicit and named below: input size, decompressed size (streamed, so a
gzip bomb costs no more than the cap), JSON nesting depth, number length, list lengths,
string lengths. Only :class:`~smtptls.errors.ReportError` subclasses escape.

Two JSON decoders: :func:`loads_reference` (the standard decoder, which records
duplicate member names, bounds number literals as it reads them and checks the nesting
first) and :func:`loads_quick` (orjson, answering only where its tree is the same; see
its docstring). :mod:`smtptls.tlsrpt.reader` reads the members of either tree.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from typing import Any, Protocol

import orjson

from smtptls.errors import ReportError, ReportParseError, ReportTooLargeError

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED",
    "DEFAULT_MAX_SIZE",
    "decompress_report",
]

# --- bounds ----------------------------------------------------------------------------

#: Input cap (compressed or not), the same default as ``[reports] max_body``.
DEFAULT_MAX_SIZE = 5 * 1024 * 1024
#: Decompressed JSON cap, the same default as ``[reports] max_decompressed``.
DEFAULT_MAX_DECOMPRESSED = 50 * 1024 * 1024
#: JSON nesting depth; a report needs 5.
MAX_DEPTH = 32
#: Characters in one JSON number literal.
MAX_NUMBER_CHARS = 32
#: Session counts: non-negative integers exact in an IEEE 754 double (I-JSON, RFC 7493 §2.2).
MAX_COUNT = 2**53 - 1
MAX_POLICIES = 10_000
MAX_FAILURE_DETAILS = 10_000  # per policy
MAX_STRINGS = 1_000  # policy-string and mx-host entries
MAX_TEXT = 16_384  # characters in one string value
MAX_WARNINGS = 200
MAX_GZIP_MEMBERS = 16
MAX_ZIP_MEMBERS = 16

GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
_STRING_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
# a JSON escape that decodes to ':' (RFC 8259 §7), which the member count must not miss
_COLON_ESCAPE_RE = re.compile(r"\\u003[aA]")
_BRACKET_RE = re.compile(r"[\[\]{}]")


class Deviations(Protocol):
    """Where decoding tells what RFC 8460 does not allow (the reader: strict or tolerant)."""

    def deviation(self, path: str, message: str) -> None: ...


class _Ignore:
    """Deviations nobody reads: :func:`decompress_report` only hands the bytes on."""

    __slots__ = ()

    def deviation(self, path: str, message: str) -> None:
        pass


# --- decoding: bytes -> text -> JSON ---------------------------------------------------------


class _Obj(dict):  # type: ignore[type-arg]
    """A JSON object that remembers member names it saw more than once."""

    __slots__ = ("duplicates",)


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _Obj:
    obj = _Obj(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dups: dict[str, None] = {}  # ordered, O(1) membership: linear in the object size
        for key, _ in pairs:
            if key in seen:
                dups[key] = None
            seen.add(key)
        obj.duplicates = tuple(dups)
    else:
        obj.duplicates = ()
    return obj


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ReportParseError(
            f"number with {len(text)} digits (at most {MAX_NUMBER_CHARS})", path="$"
        )
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ReportParseError(
            f"number of {len(text)} characters (at most {MAX_NUMBER_CHARS})", path="$"
        )
    value = float(text)
    if value in (float("inf"), float("-inf")):
        # I-JSON, RFC 7493 §2.2: numbers beyond IEEE 754 double range are not interoperable
        raise ReportParseError(f"number {text} is out of range", path="$")
    return value


def _parse_constant(text: str) -> Any:
    # RFC 8259 §6: NaN and Infinity are not JSON
    raise ReportParseError(f"{text} is not a JSON value", path="$")


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before the JSON decoder recurses into it."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for bracket in _BRACKET_RE.findall(_STRING_RE.sub("", text)):
        if bracket in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ReportParseError(f"JSON nested deeper than {MAX_DEPTH} levels", path="$")
        else:
            depth -= 1


def loads_reference(text: str) -> Any:
    if not text.strip():
        raise ReportParseError("empty input, not a JSON report", path="$")
    _check_depth(text)
    try:
        # the number hooks bound literal length before int()/float() see them
        return json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except ReportParseError:
        raise
    except RecursionError:
        # the cause is hidden on purpose: its traceback is as deep as the hostile nesting
        raise ReportParseError("JSON nested too deeply", path="$") from None
    except json.JSONDecodeError as exc:
        raise ReportParseError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", path="$"
        ) from exc
    except (ValueError, OverflowError) as exc:
        raise ReportParseError(f"not valid JSON: {str(exc)[:100]}", path="$") from exc




def loads_quick(text: str) -> Any:
    """The JSON value of *text* decoded by orjson, or None where that may differ from
    :func:`loads_reference` (which then decides, errors included).

    orjson and the standard decoder accept the same RFC 8259 text and give the same
    dicts, lists, strings, booleans and integers up to 64 bits. What is left to check:

    - duplicate member names, which both decoders fold silently (last one wins) while
      :func:`loads_reference` reports them (I-JSON, RFC 7493 §2.3). Every ``:`` in JSON text is
      a name separator or a character inside a string; orjson re-encodes strings as
      they were and never writes ``:`` as an escape, so re-encoding the decoded value
      gives as many ``:`` as the input exactly when no member was folded away. The one
      way a decoded ``:`` has no ``:`` in the input is the escape ``\\u003a``: such text
      is left to :func:`loads_reference`.
    - floats (orjson also turns integers beyond 64 bits into floats) and nesting deeper
      than MAX_DEPTH: the reader in quick mode starts over wherever it would keep or skip
      such a value (see ``smtptls.tlsrpt.reader._Reader.quick``).
    - unpaired surrogates: orjson refuses them, so its strings have none.
    """
    if "\\" in text and _COLON_ESCAPE_RE.search(text):
        return None
    try:
        value = orjson.loads(text)
        # bounded: the input is at most max_decompressed characters
        again = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    if again.count(b":") != text.count(":"):
        return None  # a member name given twice
    return value



def _gunzip(data: bytes, cap: int, reader: Deviations) -> bytes:
    """Stream-decompress gzip (RFC 1952) to at most *cap* bytes; members concatenated."""
    out = bytearray()
    rest = data
    for member in range(MAX_GZIP_MEMBERS):
        decomp = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        chunk_in = rest
        try:
            while not decomp.eof:
                # never ask for more than one byte past the cap: a bomb stops here
                chunk = decomp.decompress(chunk_in, cap + 1 - len(out))
                out += chunk
                if len(out) > cap:
                    raise ReportTooLargeError(
                        f"report decompresses to more than {cap} bytes (gzip bomb?)"
                    )
                chunk_in = decomp.unconsumed_tail
                if not chunk and not chunk_in:
                    break
        except zlib.error as exc:
            raise ReportParseError(f"not valid gzip: {exc}", path="$") from exc
        if not decomp.eof:
            raise ReportParseError("gzip stream is truncated", path="$")
        rest = decomp.unused_data
        if not rest:
            return bytes(out)
        if rest[:2] != GZIP_MAGIC:
            reader.deviation("$", f"{len(rest)} bytes of trailing data after the gzip stream")
            return bytes(out)
        if member + 1 == MAX_GZIP_MEMBERS:
            break
    raise ReportParseError(f"more than {MAX_GZIP_MEMBERS} gzip members", path="$")


def _unzip(data: bytes, cap: int, reader: Deviations) -> bytes:
    """The one JSON report inside a zip archive (seen as application/tlsrpt+zip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = [i for i in archive.infolist() if not i.is_dir()]
            if len(infos) > MAX_ZIP_MEMBERS:
                raise ReportParseError(f"zip archive has more than {MAX_ZIP_MEMBERS} files")
            named = [i for i in infos if i.filename.lower().endswith((".json", ".json.gz"))]
            chosen = named or infos
            if len(chosen) != 1:
                raise ReportParseError(
                    f"zip archive holds {len(chosen)} candidate files; expected one report",
                    path="$",
                )
            with archive.open(chosen[0]) as handle:
                out = handle.read(cap + 1)
    except ReportError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError,
            EOFError, OSError, ValueError, zlib.error) as exc:
        raise ReportParseError(f"not a valid zip archive: {str(exc)[:100]}", path="$") from exc
    if len(out) > cap:
        raise ReportTooLargeError(f"report decompresses to more than {cap} bytes")
    if out[:2] == GZIP_MAGIC:
        out = _gunzip(out, cap, reader)
    return out


def decode_text(data: Any, reader: Deviations, max_size: int, max_decompressed: int) -> str:
    if isinstance(data, str):
        if len(data) > max_decompressed:
            raise ReportTooLargeError(f"report text over the {max_decompressed}-character cap")
        if data.startswith("\ufeff"):
            # RFC 8259 §8.1: implementations MUST NOT add a byte order mark
            reader.deviation("$", "byte order mark before the JSON text")
            data = data[1:]
        return data
    raw = _json_bytes(data, reader, max_size, max_decompressed)
    try:
        # I-JSON, RFC 7493 §2.1: MUST be encoded using UTF-8
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportParseError(
            f"not UTF-8 (I-JSON): bad byte at offset {exc.start}", path="$"
        ) from exc


def decompress_report(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> bytes:
    """The JSON text of a report as received, exactly as
    :func:`~smtptls.tlsrpt.reader.parse_report` reads it.

    The one bounded decompressor of TLSRPT bodies: gzip (every member of a multi-member
    stream, RFC 1952 §2.2), a zip archive, or plain JSON; a byte order mark is dropped.
    A receiver stores this beside the parsed report. Raises as ``parse_report`` does for
    the input and decompressed size caps and for broken compression.
    """
    return _json_bytes(data, _Ignore(), max_size, max_decompressed)


def _json_bytes(data: Any, reader: Deviations, max_size: int, max_decompressed: int) -> bytes:
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise ReportParseError(f"a report is bytes or str, not {type(data).__name__}", path="$")
    if len(data) > max_size:
        raise ReportTooLargeError(f"report of {len(data)} bytes is over the {max_size}-byte cap")
    if data[:2] == GZIP_MAGIC:
        # RFC 8460 §5.3/§5.4: application/tlsrpt+gzip carries the gzip-compressed JSON
        raw = _gunzip(data, max_decompressed, reader)
    elif data[:4] == ZIP_MAGIC:
        reader.deviation("$", "report is a zip archive; RFC 8460 §5 uses gzip")
        raw = _unzip(data, max_decompressed, reader)
    else:
        if len(data) > max_decompressed:
            raise ReportTooLargeError(f"report over the {max_decompressed}-byte cap")
        raw = data
    if raw.startswith(b"\xef\xbb\xbf"):
        reader.deviation("$", "byte order mark before the JSON text")
        raw = raw[3:]
    return raw

