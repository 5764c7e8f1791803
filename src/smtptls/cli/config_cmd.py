"""``smtptls config check|show``."""

from __future__ import annotations

import argparse

from smtptls import config
from smtptls.cli.output import EXIT_ERROR, EXIT_OK, Formatter, print_json
from smtptls.errors import ConfigError


def _check(args: argparse.Namespace) -> int:
    try:
        config.load(args.file)
    except ConfigError as exc:
        if args.json:
            print_json({"ok": False, "error": str(exc)})
        else:
            print(f"{args.file}: {exc}")
        return EXIT_ERROR
    if args.json:
        print_json({"ok": True})
    else:
        print(f"{args.file}: ok")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)
    data = config.to_dict(cfg)
    if args.json:
        print_json(data)
        return EXIT_OK
    for section, values in data.items():
        print(f"[{section}]")
        for key, value in values.items():
            print(f"{key} = {value!r}")
        print()
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate or show the configuration",
                       formatter_class=Formatter,
                       epilog="examples:\n  smtptls config check /etc/smtptls.toml\n"
                       "  smtptls config show --json")
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = cs.add_parser("check", help="validate a TOML config file (exit 0 ok, 2 invalid)")
    c.add_argument("file")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)
    s = cs.add_parser("show", help="print the effective configuration with all defaults")
    s.add_argument("file", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)
