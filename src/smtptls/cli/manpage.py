"""``smtptls manpage``: the smtptls(1) manual page, written from the argparse tree.

One page for the whole command: NAME, SYNOPSIS, DESCRIPTION, the global OPTIONS, then a
COMMANDS section with every sub-command (nested ones as ``smtptls reports serve``), its
usage line, description, options and examples (its ``--help`` epilog), and the
ENVIRONMENT, FILES and EXIT STATUS of the whole tool. The text is the parser's own,
so the page and ``--help`` cannot disagree. Output is man(7) roff; nothing depends on
the time it is built (the date field is left empty), so the same version gives the
same page.

    smtptls manpage > /usr/local/share/man/man1/smtptls.1 && man smtptls
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import smtptls
from smtptls.cli.output import Formatter
from smtptls.paths import CONFIG_ENV, STATE_ENV, SYSTEM_CONFIG, SYSTEM_STATE_DIR

__all__ = ["Command", "commands", "render"]

EPILOG = """examples:
  smtptls manpage > /usr/local/share/man/man1/smtptls.1 && mandb -q
  smtptls manpage | man -l -"""

#: width argparse formats usage lines for (a man page reflows the rest)
USAGE_WIDTH = 78


@dataclass(frozen=True, slots=True)
class Command:
    """One sub-command: its words after ``smtptls``, one-line help and parser."""

    words: tuple[str, ...]
    summary: str
    parser: argparse.ArgumentParser

    @property
    def name(self) -> str:
        return " ".join(("smtptls", *self.words))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manpage", help="print the smtptls(1) manual page (roff)",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Print the manual page of every command and option, "
                       "generated from the same definitions as --help, on stdout.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smtptls.cli.main import build_parser

    sys.stdout.write(render(build_parser()))
    return 0


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()
             ) -> Iterator[Command]:
    """Every sub-command under ``parser``, depth first, in the order ``--help`` lists."""
    sub = _subparsers(parser)
    if sub is None:
        return
    summaries = {a.dest: a.help or "" for a in sub._choices_actions}
    for name, child in sub.choices.items():
        if name not in summaries:  # an alias
            continue
        cmd = Command((*words, name), summaries[name], child)
        yield cmd
        yield from commands(child, cmd.words)


# --- roff ------------------------------------------------------------------------------


def _esc(text: str) -> str:
    """Text safe inside a roff line: backslashes and dashes escaped."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def _lines(text: str) -> str:
    """Running text; a line that would start with a control character is protected."""
    out = []
    for line in _esc(text).splitlines():
        out.append("\\&" + line if line[:1] in (".", "'") else line)
    return "\n".join(out)


def _paragraphs(text: str) -> str:
    """Prose: blank lines separate paragraphs."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return "\n.PP\n".join(_lines(" ".join(p.split())) for p in parts)


def _verbatim(text: str) -> str:
    """Text as written (examples, usage): no fill, no adjustment."""
    return ".nf\n" + _lines(text.strip("\n")) + "\n.fi"


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups,
                        prefix="")
    return formatter.format_help().strip()


def _invocation(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return formatter._format_action_invocation(action)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help:
        return ""
    return parser._get_formatter()._expand_help(action)


def _options(parser: argparse.ArgumentParser) -> str:
    out = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        out.append(f".TP\n.B {_esc(_invocation(parser, action))}\n"
                   f"{_lines(' '.join(_help(parser, action).split())) or '.'}")
    return "\n".join(out)


def _command(cmd: Command) -> str:
    p = cmd.parser
    parts = [f'.SS "{_esc(cmd.name)}"', _lines(cmd.summary) if cmd.summary else "",
             ".PP", _verbatim(_usage(p))]
    if p.description:
        parts += [".PP", _paragraphs(p.description)]
    options = _options(p)
    if options:
        parts.append(options)
    if p.epilog:
        parts += [".PP", _verbatim(p.epilog)]
    return "\n".join(x for x in parts if x)


def render(parser: argparse.ArgumentParser) -> str:
    """The manual page of ``parser`` and all its sub-commands, as man(7) roff."""
    version = smtptls.__version__
    cmds = list(commands(parser))
    top = "\n".join(f".TP\n.B {_esc(c.name)}\n{_lines(c.summary) or '.'}"
                    for c in cmds if len(c.words) == 1)
    sections = [
        f'.TH SMTPTLS 1 "" "smtptls {_esc(version)}" "User Commands"',
        ".SH NAME",
        "smtptls \\- " + _lines(parser.description or "MTA-STS, DANE and TLSRPT toolkit"),
        ".SH SYNOPSIS",
        _verbatim(_usage(parser)),
        ".SH DESCRIPTION",
        _lines("smtptls implements MTA-STS (RFC 8461), DANE for SMTP (RFC 7672) and SMTP "
               "TLS Reporting (RFC 8460): a Postfix policy daemon, a report receiver, "
               "a report sender, an HTTPS host for MTA-STS policies and checks of "
               "domains. Every command has --help with examples."),
        top,
        ".SH OPTIONS",
        _options(parser),
        *([".SH EXAMPLES", _verbatim(parser.epilog)] if parser.epilog else []),
        ".SH COMMANDS",
        "\n".join(_command(c) for c in cmds),
        ".SH ENVIRONMENT",
        f".TP\n.B {CONFIG_ENV}\n"
        + _lines(f"the configuration file used without --config (else {SYSTEM_CONFIG} "
                 "if it exists, else the built-in defaults)"),
        f".TP\n.B {STATE_ENV}\n"
        + _lines(f"the directory of the SQLite databases (else {SYSTEM_STATE_DIR} as "
                 "root, else $XDG_STATE_HOME/smtptls or ~/.local/state/smtptls)"),
        ".SH FILES",
        f".TP\n.I {_esc(str(SYSTEM_CONFIG))}\n" + _lines("the configuration (TOML)"),
        f".TP\n.I {_esc(str(SYSTEM_STATE_DIR))}\n"
        + _lines("state of the services run by root or by systemd (StateDirectory=smtptls)"),
        ".SH EXIT STATUS",
        _lines("0 ok; 1 a finding or a negative result; 2 an error, reported in one line "
               "on standard error."),
        ".SH SEE ALSO",
        _lines("postfix(1), postconf(5), systemd.exec(5); the guides in "
               "share/doc/smtptls under the installation prefix (install.md first)."),
    ]
    return "\n".join(s for s in sections if s) + "\n"
