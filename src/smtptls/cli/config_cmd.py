"""``smtptls config check|show``.

``check [FILE]`` validates a configuration file (default: ``$SMTPTLS_CONFIG``, else
``/etc/smtptls/smtptls.toml``): exit 0 valid (warnings on stderr), 2 invalid, with one
error line that names the file once. ``show [FILE]`` prints the effective
configuration, every default filled in, as TOML that ``check`` accepts (``--json``:
the same as JSON).
"""

from __future__ import annotations

import argparse
import sys

from smtptls import config, paths
from smtptls.cli.output import EXIT_ERROR, EXIT_OK, Formatter, print_json
from smtptls.errors import ConfigError, ReportError

EPILOG = """\
examples:
  smtptls config check /etc/smtptls/smtptls.toml
  smtptls config show > smtptls.toml       # every key with its default, valid TOML
  smtptls config show --json

default file: $SMTPTLS_CONFIG, else /etc/smtptls/smtptls.toml if it exists
exit status (check): 0 valid, 2 invalid or unreadable
"""


def errors(cfg: config.Config) -> list[str]:
    """Settings that parse but that the program refuses to run with, each with its key:
    the TLSRPT report identity (RFC 8460 §4.4, §5.3: the submitter, organization-name
    and a contact-info in the submitter's domain), as ``tlsrpt send`` checks it."""
    t = cfg.tlsrpt
    if not (t.submitter or t.contact_info or t.organization_name):
        return []  # all defaults: this host's FQDN and postmaster@ it always agree
    from smtptls.services.sender import identity_from_config

    try:
        identity_from_config(t)
    except (ConfigError, ReportError) as exc:
        return [str(exc)]
    return []


def warnings(cfg: config.Config) -> list[str]:
    """Valid but doubtful settings, each with the key it concerns."""
    return []


def _file(args: argparse.Namespace) -> str | None:
    if args.file:
        return args.file
    found = paths.default_config_path()
    return None if found is None else str(found)


def _check(args: argparse.Namespace) -> int:
    name = _file(args)
    if name is None:
        message = (f"no configuration file: give FILE, set ${paths.CONFIG_ENV} or create "
                   f"{paths.SYSTEM_CONFIG}")
        if args.json:
            print_json({"ok": False, "file": None, "error": message, "warnings": []})
        print(f"smtptls config check: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    try:
        cfg = config.load(name)
    except ConfigError as exc:  # the message starts with the file name
        if args.json:
            print_json({"ok": False, "file": name, "error": str(exc), "warnings": []})
        print(f"smtptls config check: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    refused = errors(cfg)
    if refused:
        message = f"{name}: {refused[0]}"
        if args.json:
            print_json({"ok": False, "file": name, "error": message, "warnings": []})
        print(f"smtptls config check: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    found = warnings(cfg)
    if args.json:
        print_json({"ok": True, "file": name, "warnings": found})
        return EXIT_OK
    for w in found:
        print(f"{name}: warning: {w}", file=sys.stderr)
    print(f"{name}: ok")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)
    if args.json:
        print_json(config.to_dict(cfg))
        return EXIT_OK
    name = _file(args)
    print(f"# smtptls effective configuration ({name or 'no file: all defaults'})")
    sys.stdout.write(config.to_toml(cfg))
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate or show the configuration",
                       formatter_class=Formatter, epilog=EPILOG)
    cs = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = cs.add_parser("check", help="validate a TOML config file (exit 0 ok, 2 invalid)")
    c.add_argument("file", nargs="?", help="default: $SMTPTLS_CONFIG or "
                   "/etc/smtptls/smtptls.toml")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_check)
    s = cs.add_parser("show", help="print the effective configuration (TOML) with all "
                      "defaults")
    s.add_argument("file", nargs="?", help="default: $SMTPTLS_CONFIG or "
                   "/etc/smtptls/smtptls.toml")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)
