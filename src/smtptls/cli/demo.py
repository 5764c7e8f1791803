"""``smtptls demo``: the offline MTA-STS walk-through (what ``make run`` starts)."""

from __future__ import annotations

import argparse
import asyncio

from smtptls import config as config_mod
from smtptls.cli.output import Formatter


def _run(args: argparse.Namespace) -> int:
    from smtptls.demo import run_demo

    cfg = config_mod.load(args.config)
    return asyncio.run(run_demo(cfg.cache))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline MTA-STS demo: validate, cache and apply a bundled policy",
        description="Validate the bundled policy of demo.example, store it in the embedded\n"
        "SQLite cache (cache.sqlite_path) and print the sender's decision for a few MX\n"
        "hosts. Uses no network; a second run finds the policy in the cache.",
        formatter_class=Formatter,
        epilog="examples:\n  smtptls demo\n  smtptls demo --config smtptls.toml",
    )
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.set_defaults(func=_run)
