"""``smtptls monitor`` usage errors: one line on stderr, exit 2, never a traceback."""

from __future__ import annotations

import json

import pytest

from smtptls.cli.main import main


@pytest.mark.parametrize(("toml", "needle"), [
    pytest.param("", "no domains to watch", id="no-domains"),
    pytest.param("[monitor]\nwarn_days = -1\n", "monitor.warn_days", id="negative-days"),
    pytest.param("[monitor]\nstaged = 3\n", "monitor.staged", id="staged-not-a-table"),
    pytest.param("[monitor]\nbogus = 1\n", "unknown key", id="unknown-key"),
])
def test_bad_monitor_configuration_is_one_line_exit_2(tmp_path, capsys, toml, needle):
    cfg = tmp_path / "smtptls.toml"
    cfg.write_text(toml)
    assert main(["monitor", "--once", "--json", "--config", str(cfg)]) == 2
    out, err = capsys.readouterr()
    assert needle in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["type"] == "ConfigError"


def test_json_without_once_is_a_usage_error(capsys):
    assert main(["monitor", "--json"]) == 2
    out, err = capsys.readouterr()
    assert "--json needs --once" in err and json.loads(out)["type"] == "ConfigError"


def test_help_stays_within_100_columns(capsys):
    with pytest.raises(SystemExit):
        main(["monitor", "--help"])
    out = capsys.readouterr().out
    assert "smtptls monitor --once" in out
    assert max(len(line) for line in out.splitlines()) <= 100
