"""docs/architecture.md matches the tree, and the pure packages import no I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "smtptls"
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
#: What the pure packages may import from the project (themselves and the shared
#: error tree and DNSSEC enum): no net, store, engine, services, cli, config.
PURE = ("mtasts", "dane", "tlsrpt", "tlsrptsend")
ALLOWED = {"errors", "dnssec", "lazy"}  # lazy: PEP 562 hooks importing only package modules


def _packages() -> list[str]:
    return sorted(str(p.parent.relative_to(SRC.parent)).replace("/", ".")
                  for p in SRC.rglob("__init__.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", _packages())
def test_every_package_is_named_in_the_architecture_page(package: str) -> None:
    short = package.split(".")[-1]
    assert f"`{package}`" in DOC or f"`{short}`" in DOC, package


def _project_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            if name.startswith("smtptls."):
                out.add(name.split(".")[1])
    return out


@pytest.mark.parametrize("package", PURE)
def test_pure_packages_import_no_io(package: str) -> None:
    bad = {}
    for path in sorted((SRC / package).rglob("*.py")):
        extra = _project_imports(path) - ALLOWED - {package, *PURE}
        if extra:
            bad[str(path.relative_to(SRC))] = sorted(extra)
    assert bad == {}


def test_the_report_format_does_not_import_its_sending_side() -> None:
    """``tlsrptsend`` builds on ``tlsrpt``, never the other way round."""
    bad = sorted(str(p.relative_to(SRC)) for p in (SRC / "tlsrpt").rglob("*.py")
                 if "tlsrptsend" in _project_imports(p))
    assert bad == []


#: The interfaces of ``store/`` and the backends each implements: a base module imports
#: none of them, nor the openers (``store/open.py`` sits above both).
STORE_BASES = ("base", "reports_base", "results_base")
STORE_ABOVE_BASES = {"open", "sqlite", "postgres", "redis", "reports_sqlite", "reports_postgres",
                     "reports_sql", "results_sqlite", "results_postgres"}


def _store_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("smtptls.store"):
            parts = (node.module or "").split(".")
            out.update([parts[2]] if len(parts) > 2 else [a.name for a in node.names])
    return out


@pytest.mark.parametrize("module", STORE_BASES)
def test_store_base_modules_import_no_backend(module: str) -> None:
    assert _store_imports(SRC / "store" / f"{module}.py") & STORE_ABOVE_BASES == set()
