"""The package as an operator installs it: metadata, extras, and what the wheel ships.

A wheel is built from a copy of the checkout (``pip wheel --no-deps
--no-build-isolation``, the build backend from the dev extra) and read back: its
METADATA (licence, Python versions, URLs, the extras) and its files (every module,
the package data, the licence, and the documents and units that the systemd units and
docs/install.md point to under the install prefix). The optional libraries are then
hidden from a fresh interpreter (``sys.modules[name] = None``, which makes ``import``
fail as it does when the package is absent) to show that policyd on SQLite needs none
of them and that a configuration asking for one gets one line naming the extra.
"""

from __future__ import annotations

import email.parser
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

from smtptls.errors import ConfigError
from smtptls.store.extras import EXTRA_OF, import_backend
from tests.conftest import ROOT

#: what goes into the build (the rest of the checkout is not part of the package)
BUILD_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "src", "docs", "contrib")
#: where docs/install.md puts the venv; the units' Documentation= paths are under it
PREFIX = "/opt/smtptls"
OPTIONAL = sorted({*EXTRA_OF, "shtab"})
#: the modules that exist to talk to an optional backend
BACKEND_MODULES = {"smtptls.store.postgres", "smtptls.store.pg_pool",
                   "smtptls.store.reports_postgres", "smtptls.store.results_postgres",
                   "smtptls.store.monitor_postgres", "smtptls.store.redis"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    src = tmp_path_factory.mktemp("tree")
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, ("wheel build failed (the build backend comes with "
                                  "pip install -e '.[dev]'):\n" + done.stderr[-3000:])
    (whl,) = out.glob("smtptls-*.whl")
    return zipfile.ZipFile(whl)


def _dist(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in wheel.namelist() if n.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def _data(wheel: zipfile.ZipFile) -> dict[str, str]:
    """Files installed under the prefix: 'share/doc/...' -> path in the wheel."""
    out = {}
    for n in wheel.namelist():
        m = re.match(r"[^/]+\.data/data/(.+)", n)
        if m:
            out[m.group(1)] = n
    return out


def test_wheel_metadata_names_licence_python_urls_and_keywords(wheel):
    meta = email.parser.Parser().parsestr(_dist(wheel, "METADATA"))
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["License-File"] == "LICENSE"
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in wheel.namelist())
    assert meta["Requires-Python"] == ">=3.11"
    versions = {c.rsplit(" :: ", 1)[1] for c in meta.get_all("Classifier")
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert "3.11" in versions and all(tuple(map(int, v.split("."))) >= (3, 11) for v in versions)
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls)
    assert urls["Install guide"].endswith("/docs/install.md")
    assert "mta-sts" in meta["Keywords"].split(",")
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_plain_install_pulls_no_optional_backend(wheel):
    meta = email.parser.Parser().parsestr(_dist(wheel, "METADATA"))
    requires = meta.get_all("Requires-Dist")
    core = {_requirement_name(r) for r in requires if "extra ==" not in r}
    assert not core & {"psycopg", "psycopg-pool", "redis", "shtab"}
    extras = set(meta.get_all("Provides-Extra"))
    assert {"postgres", "redis", "completion", "all", "dev"} <= extras
    by_extra: dict[str, set[str]] = {}
    for r in requires:
        m = re.search(r'extra == "([^"]+)"', r)
        if m:
            by_extra.setdefault(m.group(1), set()).add(_requirement_name(r))
    assert {"psycopg", "psycopg-pool"} <= by_extra["postgres"]
    assert by_extra["redis"] == {"redis"} and by_extra["completion"] == {"shtab"}


def test_dev_extra_installs_every_optional_library_the_tests_use():
    extras = PYPROJECT["project"]["optional-dependencies"]
    dev = {_requirement_name(r) for r in extras["dev"]}
    for name in ("postgres", "redis", "completion"):
        assert {_requirement_name(r) for r in extras[name]} <= dev, name
    assert "setuptools" in dev  # the wheel test builds without fetching a backend


def test_wheel_ships_every_module_and_package_data(wheel):
    names = set(wheel.namelist())
    pkg = ROOT / "src" / "smtptls"
    for path in pkg.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            assert f"smtptls/{path.relative_to(pkg).as_posix()}" in names, path
    assert "smtptls = smtptls.cli.main:main" in _dist(wheel, "entry_points.txt")


def test_wheel_ships_what_the_units_and_the_install_guide_point_to(wheel):
    data = _data(wheel)
    units = sorted((ROOT / "contrib" / "systemd").iterdir())
    assert units
    for unit in units:
        assert f"share/doc/smtptls/contrib/systemd/{unit.name}" in data, unit.name
        for line in unit.read_text().splitlines():
            if line.startswith("Documentation="):
                for ref in line.split("=", 1)[1].split():
                    if ref.startswith("file://"):
                        path = ref.removeprefix("file://")
                        assert path.startswith(PREFIX + "/"), ref
                        assert path.removeprefix(PREFIX + "/") in data, (unit.name, ref)
    guide = (ROOT / "docs" / "install.md").read_text()
    for ref in set(re.findall(rf"{PREFIX}/(share/doc/smtptls/[\w./-]+\w)", guide)):
        assert ref in data or any(k.startswith(ref + "/") for k in data), ref
    for doc in (ROOT / "docs").glob("*.md"):
        assert f"share/doc/smtptls/docs/{doc.name}" in data
    for path in (ROOT / "contrib").rglob("*"):  # what the docs link to, e.g. ../contrib/exim
        if path.is_file():
            assert f"share/doc/smtptls/{path.relative_to(ROOT).as_posix()}" in data, path
    assert "share/doc/smtptls/README.md" in data


def _run_without(code: str, *, hide: list[str] = OPTIONAL, cwd: Path | None = None
                 ) -> subprocess.CompletedProcess:
    prelude = f"import sys\nfor _m in {hide!r}: sys.modules[_m] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def test_every_module_but_the_backends_imports_without_optional_libraries():
    done = _run_without(f"""
        import importlib, pkgutil, smtptls
        skip = {sorted(BACKEND_MODULES)!r}
        for m in pkgutil.walk_packages(smtptls.__path__, "smtptls."):
            if m.name not in skip and not m.name.endswith("__main__"):
                importlib.import_module(m.name)
        print("ok")
    """)
    assert (done.returncode, done.stdout.strip()) == (0, "ok"), done.stderr[-3000:]


def test_policyd_on_sqlite_runs_without_optional_libraries(tmp_path):
    done = _run_without(f"""
        import asyncio
        from smtptls.config import CacheConfig
        from smtptls.store import open_policy_cache

        async def main():
            cache = await open_policy_cache(CacheConfig(sqlite_path={str(tmp_path / "c.sqlite3")!r}))
            print(await cache.get("example.com"))
            await cache.close()
        asyncio.run(main())
    """)
    assert (done.returncode, done.stdout.strip()) == (0, "None"), done.stderr[-3000:]
    assert (tmp_path / "c.sqlite3").is_file()


@pytest.mark.parametrize("opener, backend, extra", [
    pytest.param("cache", "postgres", "postgres", id="policy-cache-postgres"),
    pytest.param("cache", "redis", "redis", id="policy-cache-redis"),
    pytest.param("reports", "postgres", "postgres", id="report-store-postgres"),
    pytest.param("tlsrpt", "postgres", "postgres", id="result-store-postgres"),
])
def test_a_backend_without_its_library_is_a_config_error_naming_the_extra(opener, backend,
                                                                          extra):
    done = _run_without(f"""
        import asyncio
        from smtptls.config import CacheConfig, ReportsConfig, TlsrptConfig
        from smtptls.errors import ConfigError
        from smtptls.store import open_policy_backend
        from smtptls.store.open import open_report_store, open_result_store

        async def main():
            if {opener!r} == "cache":
                await open_policy_backend(CacheConfig(backend={backend!r}))
            elif {opener!r} == "reports":
                open_report_store(ReportsConfig(backend={backend!r}))
            else:
                open_result_store(TlsrptConfig(backend={backend!r}))
        try:
            asyncio.run(main())
        except ConfigError as exc:
            print(exc.key, "|", exc, "|", type(exc.__cause__).__name__)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    key, message, cause = (p.strip() for p in done.stdout.split("|"))
    assert key == f"{opener}.backend"
    assert f"install smtptls[{extra}]" in message
    assert cause in ("ImportError", "ModuleNotFoundError")


def test_cli_with_a_postgres_store_and_no_psycopg_says_which_extra(tmp_path):
    cfg = tmp_path / "smtptls.toml"
    cfg.write_text('[reports]\nbackend = "postgres"\n')
    done = _run_without(f"""
        from smtptls.cli.main import main
        sys.exit(main(["reports", "summary", "--config", {str(cfg)!r}]))
    """, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "reports.backend" in done.stderr and "install smtptls[postgres]" in done.stderr
    assert list(tmp_path.iterdir()) == [cfg]


def test_an_unrelated_import_error_is_not_blamed_on_an_extra():
    with pytest.raises(ModuleNotFoundError):
        import_backend("smtptls.store.no_such_backend", key="cache.backend")
    assert issubclass(ConfigError, Exception)
