"""docs/conformance.md names only tests that exist, and covers every requirement id.

The requirement ids come from the project's own list, docs/requirements.md; when the
shared requirement folder is present (``shared_spec``), its ids must be the same.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"
REQUIREMENTS = ROOT / "docs" / "requirements.md"

#: ``- A1 ...`` and ``- H2: ...``: a list item that starts with a requirement id.
_ID_LINE = re.compile(r"^- ([A-K]\d+)(?::|\s)", re.M)
_ROW = re.compile(r"^\|\s*([A-K]\d+)\s*\|", re.M)


def requirement_ids(text: str) -> list[str]:
    """The requirement ids of a ``- X1 ...`` list, in order."""
    return _ID_LINE.findall(text)


def _test_sources() -> tuple[set[str], set[str]]:
    functions: set[str] = set()
    modules: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        modules.add(path.stem)
        functions.update(re.findall(r"def (test_\w+)", path.read_text(encoding="utf-8")))
    return functions, modules


def test_requirement_id_lines_in_both_forms():
    text = "- A1 MUST: x\n- H2: result types\n- H10 y\n  - B1 nested\n-C1 no space\n- A1x\n"
    assert requirement_ids(text) == ["A1", "H2", "H10"]


def test_every_named_test_exists():
    functions, modules = _test_sources()
    named = set(re.findall(r"\b(test_\w+)", DOC.read_text(encoding="utf-8")))
    missing = sorted(
        n for n in named
        if n not in functions and n not in modules
        and not any(f.startswith(n) for f in functions | modules)  # a documented prefix
    )
    assert named, "the matrix names no tests"
    assert missing == [], f"conformance.md names tests that do not exist: {missing}"


def test_requirement_ids_are_unique():
    ids = requirement_ids(REQUIREMENTS.read_text(encoding="utf-8"))
    assert ids, "no requirement ids found in docs/requirements.md"
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})


def test_every_requirement_id_has_a_row():
    ids = requirement_ids(REQUIREMENTS.read_text(encoding="utf-8"))
    rows = set(_ROW.findall(DOC.read_text(encoding="utf-8")))
    assert ids, "no requirement ids found in docs/requirements.md"
    missing = [i for i in ids if i not in rows]
    assert missing == [], f"requirement ids without a row in conformance.md: {missing}"


def test_requirement_ids_match_the_shared_list(shared_spec):
    shared = requirement_ids((shared_spec / "REQUIREMENTS.md").read_text(encoding="utf-8"))
    ours = requirement_ids(REQUIREMENTS.read_text(encoding="utf-8"))
    assert shared, "no requirement ids found in the shared REQUIREMENTS.md"
    assert sorted(set(ours)) == sorted(set(shared)), {
        "only in docs/requirements.md": sorted(set(ours) - set(shared)),
        "only in the shared list": sorted(set(shared) - set(ours)),
    }
