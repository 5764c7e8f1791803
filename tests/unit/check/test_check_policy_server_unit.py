"""The policy server's pure parts: Host header parsing and the directory store."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtptls.errors import ConfigError
from smtptls.services.policy_server import PolicyStore, ServerConfig, _host_domain


@pytest.mark.parametrize(("host", "domain"), [
    ("mta-sts.example.com", "example.com"),
    ("MTA-STS.Example.COM.", "example.com"),
    ("mta-sts.example.com:443", "example.com"),
    ("example.com", None),
    ("mta-sts.", None),
    ("[::1]:443", None),
    ("mta-sts.-bad-.com", None),
    ("", None),
    (None, None),
], ids=["plain", "case-and-dot", "port", "no-prefix", "prefix-only", "ip-literal",
        "bad-label", "empty", "missing"])
@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_host_names_the_policy_domain(host, domain):
    assert _host_domain(host) == domain


@given(st.text(max_size=400))
def test_host_domain_never_raises(host):
    got = _host_domain(host)
    assert got is None or host.lower().lstrip().startswith("mta-sts.")


@pytest.mark.parametrize("kwargs", [{"cache_max_age": -1}, {"cache_max_age": 10**6},
                                    {"reload_interval": 0}], ids=["negative", "huge", "zero"])
def test_server_config_bounds(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        ServerConfig(tmp_path, **kwargs)


def test_store_plain_mode_loads_policies_and_skips_broken_ones(tmp_path):
    good = tmp_path / "example.com"
    good.mkdir()
    (good / "mta-sts.txt").write_text("version: STSv1\nmode: testing\nmx: mx.example.com\n"
                                      "max_age: 60\n")
    bad = tmp_path / "broken.example"
    bad.mkdir()
    (bad / "mta-sts.txt").write_text("version: STSv2\n")
    (tmp_path / "not a domain").mkdir()
    store = PolicyStore(tmp_path, tls=False, cache_max_age=300)
    assert store.reload() is True
    entry = store.get("example.com")
    assert entry is not None and entry.cache_control == "max-age=60"
    assert store.get("broken.example") is None and "broken.example" in store.errors
    assert store.reload() is False  # nothing changed, the broken file not re-reported
