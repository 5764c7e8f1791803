"""Where state and configuration live: one function decides each (smtptls.paths)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smtptls import paths


@pytest.mark.parametrize("env, euid, expected", [
    ({"SMTPTLS_STATE_DIR": "/srv/st"}, 0, "/srv/st"),
    ({"SMTPTLS_STATE_DIR": "/srv/st"}, 1000, "/srv/st"),
    ({}, 0, "/var/lib/smtptls"),
    ({"XDG_STATE_HOME": "/home/u/.state"}, 0, "/var/lib/smtptls"),
    ({"XDG_STATE_HOME": "/home/u/.state"}, 1000, "/home/u/.state/smtptls"),
    ({"XDG_STATE_HOME": "relative/ignored"}, 1000, "/home/u/.local/state/smtptls"),
    ({}, 1000, "/home/u/.local/state/smtptls"),
    ({"SMTPTLS_STATE_DIR": ""}, 1000, "/home/u/.local/state/smtptls"),
])
def test_state_dir_order(env, euid, expected):
    assert paths.state_dir(env, euid=euid, home=Path("/home/u")) == Path(expected)


def test_state_dir_follows_the_environment_and_creates_nothing(tmp_path, monkeypatch):
    where = tmp_path / "state"
    monkeypatch.setenv("SMTPTLS_STATE_DIR", str(where))
    assert paths.state_dir() == where
    assert paths.state_file("x.sqlite3") == str(where / "x.sqlite3")
    assert not where.exists()


def test_the_suite_never_uses_the_system_state_dir():
    # tests/conftest.py points every test (and subprocess) at a temporary folder
    assert os.environ["SMTPTLS_STATE_DIR"]
    assert paths.state_dir() != paths.SYSTEM_STATE_DIR


def test_default_config_path(tmp_path):
    system = tmp_path / "etc" / "smtptls.toml"
    assert paths.default_config_path({}, system_config=system) is None
    system.parent.mkdir()
    system.write_text("")
    assert paths.default_config_path({}, system_config=system) == system
    chosen = tmp_path / "mine.toml"
    assert paths.default_config_path({"SMTPTLS_CONFIG": str(chosen)},
                                     system_config=system) == chosen


def test_system_paths_are_the_documented_ones():
    root = Path(__file__).resolve().parents[2]
    assert paths.SYSTEM_CONFIG == Path("/etc/smtptls/smtptls.toml")
    for doc in ("README.md", "docs/configuration.md"):
        text = (root / doc).read_text()
        assert str(paths.SYSTEM_CONFIG) in text and str(paths.SYSTEM_STATE_DIR) in text
        assert "/etc/smtptls.toml" not in text and "var/smtptls" not in text.replace(
            "/var/lib/smtptls", "")
