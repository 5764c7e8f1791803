"""``smtptls`` command line: one module of :mod:`smtptls.cli` per command.

Each module ``smtptls.cli.<name>`` exposes ``register(subparsers)`` which adds its
sub-commands and sets ``func(args) -> int`` on them. :data:`COMMANDS` names them, so
that a run imports only the chosen command's module (the others pull in aiohttp,
dnspython, cryptography, ...): ``smtptls --help`` lists every command from this table
alone. ``build_parser()`` without arguments registers every module (manual page,
completion, tests).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

import smtptls
from smtptls.cli.output import EXIT_ERROR, Formatter, print_json
from smtptls.errors import SmtpTlsError

#: Top-level command -> (module in smtptls.cli, its one-line help); a test checks that
#: each module registers exactly this name with this help.
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("check", "audit domains: MX, TLS, MTA-STS, TLSRPT, DANE"),
    "completion": ("completion", "print a shell completion script"),
    "config": ("config_cmd", "validate or show the configuration"),
    "dane": ("dane", "check DANE for SMTP (RFC 7672) of a destination, live"),
    "demo": ("demo", "offline MTA-STS demo: validate, cache and apply a bundled policy"),
    "manpage": ("manpage", "print the smtptls(1) manual page (roff)"),
    "monitor": ("monitor", "watch own domains: alert before certificates, TLSA or MTA-STS "
                "break mail"),
    "mta-sts": ("mta_sts", "discover and validate a domain's MTA-STS policy, or check a "
                "policy file"),
    "policy-server": ("policy_server", "HTTPS host of MTA-STS policies for many domains"),
    "policyd": ("policyd", "Postfix TLS policy daemon (socketmap), or 'query DOMAIN' to "
                "explain an answer"),
    "publish": ("publish", "produce MTA-STS, TLSRPT and TLSA records to publish"),
    "reports": ("reports", "receive, store and read TLSRPT reports (RFC 8460)"),
    "tlsa": ("tlsa", "TLSA records for DANE (generate from certificates, check offline)"),
    "tlsrpt": ("tlsrpt_cmd", "collect TLS results and send TLSRPT reports (RFC 8460, "
               "sender side)"),
}
#: Global options that take a value (skipped when looking for the command name).
_VALUED = ("--log-level", "--log-format")


def chosen_command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (the first word that is no global option)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word in _VALUED:
            skip = True
        elif word == "--":
            continue
        elif not word.startswith("-"):
            return word
    return None


class Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr (exit 2), pointing at ``--help``.

    Sub-command parsers are of the same class (argparse makes them so).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the command it names is registered in full."""
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
    chosen = None if argv is None else chosen_command(argv)
    for name, (module_name, help_text) in COMMANDS.items():
        if argv is None or name == chosen:
            module = importlib.import_module(f"smtptls.cli.{module_name}")
            module.register(sub)
        else:
            sub.add_parser(name, help=help_text)  # listed; registered when chosen
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)  # --help and usage errors end here, before logging loads
    from smtptls import logs

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
