"""``smtptls`` command line: discovers command modules in :mod:`smtptls.cli`.

Each module ``smtptls.cli.<name>`` exposes ``register(subparsers)`` which adds its
sub-commands and sets ``func(args) -> int`` on them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import smtptls
from smtptls import cli as cli_pkg
from smtptls import logs
from smtptls.cli.output import EXIT_ERROR, Formatter
from smtptls.errors import SmtpTlsError

_SKIP = {"main", "output", "__init__"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtptls",
        formatter_class=Formatter,
        description="MTA-STS, DANE for SMTP and SMTP TLS Reporting, in one toolkit.",
        epilog="examples:\n"
        "  smtptls mta-sts example.com\n"
        "  smtptls mta-sts parse mta-sts.txt --json\n"
        "  smtptls dane example.com --json\n"
        "  smtptls policyd --listen 127.0.0.1:8461\n"
        "  smtptls reports serve --smtp 127.0.0.1:2525\n"
        "  smtptls config check smtptls.toml",
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
        print(f"smtptls: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("smtptls: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
