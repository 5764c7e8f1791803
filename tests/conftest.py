"""Shared pytest configuration: where the shared corpus is, and the ``rfc`` marker helper.

The real-world corpus (TLSRPT reports, OpenSSL's DANE vectors, other suites' vectors) is
data this repository does not copy. Tests reach it only through the ``corpus`` fixture
(or :func:`corpus_path` at import time), which looks at ``$SMTPTLS_CORPUS``, then at
``../shared/corpus`` beside the checkout. Without it those tests skip with one reason;
with ``SMTPTLS_REQUIRE_CORPUS=1`` (CI) a missing corpus fails them instead. The project's
own fixtures prove every behaviour without it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.lab.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
#: The project's own test data (written here; never copied from the corpus).
FIXTURES = ROOT / "tests" / "fixtures"

#: The one reason every corpus test gives when it skips.
CORPUS_MISSING = ("shared corpus not found (set SMTPTLS_CORPUS or place it at "
                  "../shared/corpus); the project's own fixtures cover these behaviours")
SPEC_MISSING = ("shared requirement list not found (set SMTPTLS_SPEC or place it at "
                "../shared/spec)")


def _located(env: str, default: Path) -> Path | None:
    value = os.environ.get(env)
    path = Path(value) if value else default
    return path if path.is_dir() else None


def corpus_path() -> Path | None:
    """The corpus folder, or None when this checkout has none."""
    return _located("SMTPTLS_CORPUS", ROOT.parent / "shared" / "corpus")


def spec_path() -> Path | None:
    """The shared requirement folder (``REQUIREMENTS.md``), or None."""
    return _located("SMTPTLS_SPEC", ROOT.parent / "shared" / "spec")


def _require() -> bool:
    return os.environ.get("SMTPTLS_REQUIRE_CORPUS", "") not in ("", "0")


def _missing(reason: str) -> None:
    if _require():
        pytest.fail(f"SMTPTLS_REQUIRE_CORPUS is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The shared corpus folder; skips (or fails under SMTPTLS_REQUIRE_CORPUS) if absent."""
    path = corpus_path()
    if path is None:
        _missing(CORPUS_MISSING)
    assert path is not None
    return path


@pytest.fixture(scope="session")
def shared_spec() -> Path:
    """The shared requirement folder; skips (or fails under SMTPTLS_REQUIRE_CORPUS)."""
    path = spec_path()
    if path is None:
        _missing(SPEC_MISSING)
    assert path is not None
    return path


def corpus_params(build: Callable[[Path], Iterable[Any]], arity: int = 1) -> list[Any]:
    """Parameters read from the corpus at collection time, for ``pytest.mark.parametrize``.

    ``build`` gets the corpus folder and returns the parameters. Without a corpus this is
    one placeholder (id ``no-corpus``, ``arity`` Nones) so collection never fails; the test
    also takes the ``corpus`` fixture, which skips it with the one reason (or fails it under
    ``SMTPTLS_REQUIRE_CORPUS``) before its body runs.
    """
    path = corpus_path()
    if path is None:
        return [pytest.param(*([None] * arity), id="no-corpus")]
    return list(build(path))


#: For ``pytest.mark.skipif`` on modules whose parametrization reads the corpus at import.
needs_corpus = pytest.mark.skipif(corpus_path() is None and not _require(),
                                  reason=CORPUS_MISSING)


#: What the whole suite runs under: state in a temporary folder (never /var/lib/smtptls
#: or ~/.local/state), no configuration file from the machine, and the lab's signed root
#: ``test.`` as the name whose AD bit proves a resolver validates (the lab's Unbound
#: answers nothing outside ``test.``).
SUITE_ENV = {"SMTPTLS_CONFIG": os.devnull, "SMTPTLS_DNSSEC_PROBE": "test."}


@pytest.fixture(scope="session", autouse=True)
def _suite_environment(tmp_path_factory: pytest.TempPathFactory):
    """Set :data:`SUITE_ENV` and ``SMTPTLS_STATE_DIR`` for every test and subprocess."""
    wanted = {**SUITE_ENV, "SMTPTLS_STATE_DIR": str(tmp_path_factory.mktemp("state"))}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    yield wanted
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


#: How long a test that gathers and reports one UTC day's sessions may take, at most.
ONE_DAY_MARGIN = 300.0


@pytest.fixture
def one_utc_day() -> None:
    """For a test that delivers mail, collects its sessions and reports "today": if less
    than :data:`ONE_DAY_MARGIN` seconds of the UTC day remain, wait for the next day, so
    the sessions and the report it asserts on fall on one day."""
    import time
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    left = (midnight - now).total_seconds()
    if left < ONE_DAY_MARGIN:
        time.sleep(left + 1.0)
