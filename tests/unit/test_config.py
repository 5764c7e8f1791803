from __future__ import annotations

import pytest

from smtptls import config
from smtptls.cli.main import main
from smtptls.errors import ConfigError


def test_defaults_for_every_key():
    cfg = config.load(None)
    assert cfg.cache.backend == "sqlite"
    assert cfg.fetch.max_body == 65536
    assert cfg.fetch.total_timeout <= 60


def test_load_toml_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[dns]\nnameservers = ["127.0.0.1"]\nport = 5353\n[cache]\nbackend = "redis"\n')
    cfg = config.load(f)
    assert cfg.dns.nameservers == ("127.0.0.1",)
    assert cfg.dns.port == 5353
    assert cfg.cache.backend == "redis"
    assert cfg.fetch == config.FetchConfig()


@pytest.mark.parametrize(
    "text, key",
    [
        ("[nope]\na=1\n", "nope"),
        ("[dns]\nbogus=1\n", "dns.bogus"),
        ("[dns]\nport='x'\n", "dns.port"),
        ("[dns]\nport=-1\n", "dns.port"),
        ("[cache]\nbackend='mysql'\n", "cache.backend"),
        ("[policyd]\nstrict_testing=1\n", "policyd.strict_testing"),
    ],
)
def test_bad_config_names_the_key(tmp_path, text, key):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        config.load(f)
    assert ei.value.key == key


def test_not_toml(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[[[")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(f)


@pytest.mark.parametrize(
    "text, expected",
    [("127.0.0.1", ("127.0.0.1", 53)), ("127.0.0.1:5300", ("127.0.0.1", 5300)),
     ("[::1]:5300", ("::1", 5300)), ("::1", ("::1", 53))],
)
def test_parse_hostport(text, expected):
    assert config.parse_hostport(text, 53) == expected


def test_parse_hostport_bad_port():
    with pytest.raises(ConfigError):
        config.parse_hostport("127.0.0.1:99999", 53)


def test_cli_config_check(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text("[logging]\nlevel='debug'\n")
    bad = tmp_path / "bad.toml"
    bad.write_text("[logging]\nlevel='loud'\n")
    assert main(["config", "check", str(good)]) == 0
    assert main(["config", "check", str(bad)]) == 2
    assert "logging.level" in capsys.readouterr().out
