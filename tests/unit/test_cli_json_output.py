"""``--json`` output: orjson writes it, the same text as ``json.dumps(indent=2)``."""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from collections import OrderedDict, namedtuple
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from smtptls.cli.output import json_text


def reference(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str)


class Plain(enum.Enum):
    A = "a"


class Text(enum.StrEnum):
    B = "b"


class Number(enum.IntEnum):
    C = 3


@dataclasses.dataclass
class Row:
    x: int


Point = namedtuple("Point", "x y")  # noqa: PYI024 - a named tuple is the case tested

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.sampled_from([1e16, 1e-05, 0.1, 2.5, -0.0, 1e300]), st.text(),
    st.sampled_from([Plain.A, Text.B, Number.C, Row(1), Point(1, 2.5), b"raw", {1, 2},
                     datetime(2024, 5, 1, 12, tzinfo=UTC), date(2024, 5, 1),
                     uuid.UUID(int=7), 2**70, -(2**64), OrderedDict(a=1), "é", "\ud800"]),
)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner, inner),
                            st.dictionaries(st.one_of(st.text(max_size=5), st.integers()),
                                            inner, max_size=4)),
    max_leaves=20,
)


@given(trees)
def test_the_text_is_the_standard_encoders(tree):
    assert json_text(tree) == reference(tree)


def test_an_import_listing_is_written_by_orjson_and_is_the_same_text(monkeypatch):
    listing = {"sources": 2, "errors": [], "seconds": 1.234,
               "items": [{"source": f"/m/cur/{i}", "status": "stored", "id": i,
                          "report_id": f"r-{i}", "counted": True, "conflicts_with": []}
                         for i in range(2)]}
    expected = reference(listing)

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("the standard encoder was used")

    monkeypatch.setattr(json, "dumps", refuse)
    assert json_text(listing) == expected
    assert json_text({}) == "{}" and json_text([]) == "[]"
