from __future__ import annotations

import json
from pathlib import Path

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
    err = capsys.readouterr().err
    assert "logging.level" in err
    # the error names the file once, in one line
    assert err.count(str(bad)) == 1 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["[[[", "[dns]\nport='x'\n", "[nope]\na=1\n"])
def test_config_check_error_names_the_file_once(tmp_path, capsys, text):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["config", "check", str(bad)]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.count(str(bad)) == 1 and len(out.err.strip().splitlines()) == 1


def test_config_show_is_toml_that_check_accepts(tmp_path, capsys):
    """show -> check round trip, defaults and a file with every kind of value."""
    src = tmp_path / "in.toml"
    src.write_text('[dns]\nnameservers = ["127.0.0.1:5353"]\ntimeout = 2.5\n'
                   '[policyd]\noverrides = { "example.com" = "secure" }\n'
                   '[tlsrpt]\nlog_files = ["/var/log/mail.log"]\njournald = true\n')
    for args in (["config", "show"], ["config", "show", str(src)]):
        assert main(args) == 0
        shown = capsys.readouterr().out
        assert "()" not in shown and "None" not in shown
        out = tmp_path / "shown.toml"
        out.write_text(shown)
        assert main(["config", "check", str(out)]) == 0, capsys.readouterr().err
        capsys.readouterr()
        expected = config.load(src if len(args) == 3 else None)
        assert config.load(out) == expected


def test_config_show_json(capsys):
    assert main(["config", "show", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dns"]["dnssec_probe"] and data["cache"]["backend"] == "sqlite"


def test_config_check_without_a_file_is_an_error(monkeypatch, capsys):
    monkeypatch.delenv("SMTPTLS_CONFIG", raising=False)
    monkeypatch.setattr(config.paths, "SYSTEM_CONFIG", Path("/nonexistent/smtptls.toml"))
    assert main(["config", "check"]) == 2
    err = capsys.readouterr().err
    assert "SMTPTLS_CONFIG" in err and len(err.strip().splitlines()) == 1


def test_load_without_path_reads_smtptls_config(tmp_path, monkeypatch):
    f = tmp_path / "c.toml"
    f.write_text("[logging]\nlevel = 'debug'\n")
    monkeypatch.setenv("SMTPTLS_CONFIG", str(f))
    assert config.load(None).logging.level == "debug"


def test_default_sqlite_paths_are_in_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMTPTLS_STATE_DIR", str(tmp_path / "state"))
    cfg = config.Config()
    for path in (cfg.cache.sqlite_path, cfg.reports.sqlite_path, cfg.tlsrpt.sqlite_path):
        assert Path(path).parent == tmp_path / "state"
    assert not (tmp_path / "state").exists()  # computing a path creates nothing


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize("submitter, contact, refused", [
    ("mx.example.net", "tls@example.com", True),
    ("mta.example.com", "tlsrpt@example.com", True),  # a parent domain does not match
    ("example.com", "tlsrpt@reports.example.com", True),  # nor does a subdomain
    ("example.com", "tlsrpt@example.com", False),
    ("Example.COM", "tlsrpt@example.com.", False),
    ("example.com", "", False),  # default contact: postmaster@<submitter>
])
def test_rfc8460_5_3_contact_info_domain_is_the_submitter(tmp_path, capsys, submitter,
                                                          contact, refused):
    # RFC 8460 §5.3: TLS-Report-Submitter MUST match the contact-info domain
    f = tmp_path / "c.toml"
    f.write_text(f'[tlsrpt]\nsubmitter = "{submitter}"\ncontact_info = "{contact}"\n')
    assert main(["config", "check", str(f)]) == (2 if refused else 0)
    err = capsys.readouterr().err
    assert ("error: " in err and "tlsrpt.contact_info" in err
            and "RFC 8460 §5.3" in err) is refused
    assert err.count("\n") == (1 if refused else 0)  # one line, no traceback
    assert main(["config", "check", str(f), "--json"]) == (2 if refused else 0)
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is not refused
    assert ("tlsrpt.contact_info" in (data.get("error") or "")) is refused
