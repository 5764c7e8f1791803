"""``smtptls monitor``: watch the configured own domains and alert before mail breaks.

Exit status of ``--once``: 0 no alert active, 1 some alert active, 2 error. The
service (without ``--once``) runs until interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TYPE_CHECKING

from smtptls import config
from smtptls.cli.output import EXIT_NEGATIVE, EXIT_OK, Formatter, print_json
from smtptls.errors import ConfigError

if TYPE_CHECKING:
    from smtptls.monitor.runner import MonitorRun
    from smtptls.services.alerts import AlertDispatcher

HELP = "watch own domains: alert before certificates, TLSA or MTA-STS break mail"

EPILOG = """\
examples:
  smtptls monitor --once --config /etc/smtptls/smtptls.toml
  smtptls monitor --once --json
  smtptls monitor                      # the service: one run every monitor.interval

Configuration: [monitor] domains, warn_days (default 14), interval, staged (MX host ->
PEM file of the next certificate), store (SQLite file in the state directory, or
postgresql://...), retry_delay; alerts go through the [alerts] channels (log line,
webhook, mail), each condition once. See docs/monitor.md.

exit status (--once): 0 no alert active; 1 some alert active; 2 usage or error.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help=HELP, formatter_class=Formatter, epilog=EPILOG,
                       description="Check the configured own domains with the engine of "
                       "'smtptls check' and alert,\nwith the fix, when something is wrong "
                       "or will be.")
    p.add_argument("--config", metavar="FILE", help="TOML configuration file")
    p.add_argument("--once", action="store_true", help="one run, then exit (for cron)")
    p.add_argument("--json", action="store_true",
                   help="with --once: the run as JSON (schema smtptls.monitor/1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smtptls.cli._preflight import require_ca_file, require_resolver
    from smtptls.services.alerts import MemoryAlertState, dispatcher_from_config

    if args.json and not args.once:
        raise ConfigError("--json needs --once (the service logs its runs)")
    cfg = config.load(args.config)
    if not cfg.monitor.domains:
        raise ConfigError("no domains to watch: set monitor.domains", key="monitor.domains")
    require_ca_file(cfg.fetch.ca_file)
    require_resolver(cfg.dns)
    # the monitor store keeps what was sent (across restarts), not [alerts] state_path
    dispatcher = dispatcher_from_config(cfg.alerts)
    dispatcher.state = MemoryAlertState()
    if args.once:
        result = asyncio.run(_with_store(cfg, dispatcher, once=True))
        assert result is not None
        if args.json:
            print_json(result.to_dict())
        else:
            for alert in result.alerts:
                print(alert.to_text() + "\n")
            if not result.alerts:
                print(f"no alert for {', '.join(cfg.monitor.domains)}")
        return EXIT_NEGATIVE if result.alerts else EXIT_OK
    asyncio.run(_with_store(cfg, dispatcher, once=False))
    print("smtptls monitor: stopped", file=sys.stderr)
    return EXIT_OK


async def _with_store(cfg: config.Config, dispatcher: AlertDispatcher, *,
                      once: bool) -> MonitorRun | None:
    """Open ``monitor.store`` (importing the JSON state of earlier versions when it is
    empty), then one run or the service."""
    from smtptls.monitor.runner import run_forever, run_once
    from smtptls.monitor.state import import_legacy
    from smtptls.store.monitor_open import open_monitor_store

    store = open_monitor_store(cfg.monitor)
    await store.open()
    try:
        await import_legacy(store, cfg)
        if once:
            return await run_once(cfg, dispatcher, store)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await run_forever(cfg, dispatcher, store, stop=stop)
        return None
    finally:
        await store.close()
