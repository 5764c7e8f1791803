"""``smtptls`` command line: discovers command modules in :mod:`smtptls.cli`.

Each module ``smtptls.cli.<name>`` exposes ``register(subparsers)`` which adds its
sub-commands and sets ``func(args) -> int`` on them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import NoReturn

import smtptls
from smtptls import cli as cli_pkg
from smtptls import logs
from smtptls.cli.output import EXIT_ERROR, Formatter, print_json
from smtptls.errors import SmtpTlsError

_SKIP = {"main", "output", "__init__"}


class Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr (exit 2), pointing at ``--help``.

    Sub-command parsers are of the same class (argparse makes them so).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="smtptls",
        formatter_class=Formatter,
        description="MTA-STS, DANE for SMTP and SMTP TLS Reporting, in one toolkit.",
        epilog="examples:\n"
        "  smtptls mta-sts example.com\n"
        "  smtptls mta-sts parse mta-sts.txt --json\n"
        "  smtptls dane example.com --json\n"
        "  smtptls policyd --listen 127.0.0.1:8461\n"
        "  smtptls reports serve --smtp 127.0.0.1:2525\n"
        "  smtptls config check /etc/smtptls/smtptls.toml\n"
        "\n"
        "configuration: --config FILE, else $SMTPTLS_CONFIG, else /etc/smtptls/smtptls.toml\n"
        "  if it exists; state (SQLite files): $SMTPTLS_STATE_DIR, else /var/lib/smtptls as\n"
        "  root, else $XDG_STATE_HOME/smtptls (~/.local/state/smtptls). See 'config show'.\n"
        "exit status: 0 ok, 1 a finding or negative result, 2 an error (one line on stderr)",
    )
    parser.add_argument("--version", action="version", version=f"smtptls {smtptls.__version__}")
    parser.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", default=None, choices=["text", "json"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"smtptls.cli.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level or "warning", args.log_format or "text")
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_ERROR
    try:
        return int(func(args) or 0)
    except SmtpTlsError as exc:
        return _error(args, str(exc), type(exc).__name__)
    except KeyboardInterrupt:
        print("smtptls: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file or socket the operator named; never a traceback
        where = f"{exc.filename}: " if exc.filename else ""
        return _error(args, f"{where}{exc.strerror or exc}", "OSError")


def _error(args: argparse.Namespace, message: str, kind: str) -> int:
    """One line on stderr; with ``--json`` also ``{"error", "type"}`` on stdout."""
    text = " ".join(message.split())
    print(f"smtptls: error: {text}", file=sys.stderr)
    if getattr(args, "json", False):
        print_json({"error": text, "type": kind})
    return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
