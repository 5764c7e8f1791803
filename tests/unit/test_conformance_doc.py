"""docs/conformance.md names only tests that exist, and covers every requirement id."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"
REQUIREMENTS = ROOT.parent / "shared" / "spec" / "REQUIREMENTS.md"


def _test_sources() -> tuple[set[str], set[str]]:
    functions: set[str] = set()
    modules: set[str] = set()
    for path in (ROOT / "tests").rglob("*.py"):
        modules.add(path.stem)
        functions.update(re.findall(r"def (test_\w+)", path.read_text(encoding="utf-8")))
    return functions, modules


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


def test_every_requirement_id_has_a_row():
    ids = re.findall(r"^- ([A-K]\d+) ", REQUIREMENTS.read_text(encoding="utf-8"), re.M)
    doc = DOC.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\|\s*([A-K]\d+)\s*\|", doc, re.M))
    assert ids, "no requirement ids found in REQUIREMENTS.md"
    missing = [i for i in ids if i not in rows]
    assert missing == [], f"requirement ids without a row in conformance.md: {missing}"
