"""The CLI imports only what the chosen command needs (no timing here: what is imported).

``smtptls --help`` lists every command from :data:`smtptls.cli.main.COMMANDS`; a run of
one command imports that command's module only. The table must say what the modules
register.
"""

from __future__ import annotations

import argparse
import importlib

import pytest

from smtptls.cli.main import COMMANDS, build_parser, chosen_command
from tests.import_probe import imported_after

#: Modules no command needs for its parser, only for its work.
HEAVY = ("aiohttp", "dns.resolver", "cryptography.x509", "smtptls.check.gather",
         "smtptls.check.bulk", "smtptls.services.policy_server", "OpenSSL", "dkim")


def test_importing_the_cli_imports_no_heavy_module() -> None:
    loaded = imported_after("import smtptls.cli.main")
    assert not [m for m in HEAVY if m in loaded]


def test_policyd_daemon_imports_no_certificate_or_http_code() -> None:
    """policyd answers its first lookups before cryptography and aiohttp load: the
    DANE decision it imports reads no certificate (that is the MTA's job)."""
    loaded = imported_after("import smtptls.cli.policyd, smtptls.services.policyd.daemon")
    assert not {"cryptography", "cryptography.x509", "aiohttp", "dkim", "OpenSSL"} & loaded
    assert "smtptls.engine.destination" in loaded  # the decision itself is there


def test_help_builds_its_parser_without_any_command_module() -> None:
    loaded = imported_after("from smtptls.cli.main import build_parser\n"
                             "build_parser(['--help'])")
    assert not [m for m in HEAVY if m in loaded]
    modules = {f"smtptls.cli.{m}" for m, _ in COMMANDS.values()}
    assert not modules & loaded


def test_help_runs_without_the_event_loop_or_logging() -> None:
    """`smtptls --help` ends in argparse: asyncio and logging load only for a command."""
    loaded = imported_after("from smtptls.cli.main import main\n"
                            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass")
    assert not {"asyncio", "logging", "smtptls.logs"} & loaded
    assert "argparse" in loaded


def test_a_command_imports_its_own_module_only() -> None:
    loaded = imported_after("from smtptls.cli.main import build_parser\n"
                             "build_parser(['publish', 'tlsrpt', '--help'])")
    assert "smtptls.cli.publish" in loaded
    assert "smtptls.cli.check" not in loaded and "smtptls.check.bulk" not in loaded


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_table_says_what_each_module_registers(name: str) -> None:
    module_name, help_text = COMMANDS[name]
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(f"smtptls.cli.{module_name}").register(sub)
    names = [a.dest for a in sub._choices_actions]  # the (name, help) pairs registered
    helps = [a.help for a in sub._choices_actions]
    assert names == [name] and helps == [help_text]


def test_full_parser_has_every_command() -> None:
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)


@pytest.mark.parametrize(("argv", "name"), [
    (["check", "example.com"], "check"),
    (["--log-level", "debug", "policyd", "query", "x"], "policyd"),
    (["--log-format", "json", "--", "dane", "x"], "dane"),
    (["--help"], None),
    ([], None),
])
def test_chosen_command(argv: list[str], name: str | None) -> None:
    assert chosen_command(argv) == name
