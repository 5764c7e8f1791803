"""Adapters translate library errors into the one error tree and keep the cause
(``raise X(...) from exc``), so a log or a debugger still shows what went wrong below."""

from __future__ import annotations

import json
import sqlite3

import idna
import pytest

from smtptls.errors import ConfigError, InvalidDomainError, StoreError
from smtptls.net.dns import normalize_domain
from smtptls.net.pkix import load_roots
from smtptls.store import codec
from smtptls.store.sqlite_thread import SqliteThreadStore


def test_dns_name_error_keeps_the_idna_error():
    with pytest.raises(InvalidDomainError) as info:
        normalize_domain("-\u00e9.example")
    assert isinstance(info.value.__cause__, idna.IDNAError)


def test_store_decode_error_keeps_the_json_error():
    with pytest.raises(StoreError) as info:
        codec.decode("{not json")
    assert isinstance(info.value.__cause__, json.JSONDecodeError)


def test_ca_file_error_keeps_the_os_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_roots(tmp_path / "missing.pem")
    assert isinstance(info.value.__cause__, OSError)


async def test_sqlite_open_error_keeps_the_cause(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = SqliteThreadStore(blocker / "sub" / "db.sqlite3")
    with pytest.raises(StoreError) as info:
        await store.open()
    assert isinstance(info.value.__cause__, OSError | sqlite3.Error)
