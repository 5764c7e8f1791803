"""``smtptls policy-server``: host ``/.well-known/mta-sts.txt`` for many domains.

Runs until SIGTERM or SIGINT; SIGHUP rescans the directory at once (it is also polled).
Exit status: 0 after a clean stop, 2 on a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from smtptls.cli.output import EXIT_OK, Formatter
from smtptls.services.policy_server import (
    DEFAULT_LISTEN,
    DEFAULT_PLAIN_LISTEN,
    HANDSHAKE_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_CONNECTIONS,
    PolicyServer,
    ServerConfig,
    default_directory,
)

EPILOG = """\
examples:
  smtptls policy-server --dir /var/lib/smtptls/mta-sts --listen 0.0.0.0:443
  smtptls policy-server --dir /srv/mta-sts --plain --listen 127.0.0.1:8080   # behind nginx
  smtptls policy-server --dir /srv/mta-sts --metrics 127.0.0.1:9443

layout: DIR/<policy-domain>/mta-sts.txt, cert.pem (chain for mta-sts.<policy-domain>),
  key.pem; 'smtptls publish mta-sts --out DIR --domain D' writes the policy there.
The default address is loopback (127.0.0.1:8443): give --listen 0.0.0.0:443 (or a
port forward) to serve senders. Reverse proxy snippets (nginx, haproxy): docs/publish.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy-server", help="HTTPS host of MTA-STS policies for many domains",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Serve https://mta-sts.<domain>/.well-known/mta-sts.txt "
                       "for every domain in a directory; SNI picks the certificate.")
    p.add_argument("--dir", metavar="DIR", type=Path, default=None,
                   help="policy directory (default $SMTPTLS_POLICY_DIR or "
                   "/var/lib/smtptls/mta-sts)")
    p.add_argument("--listen", metavar="ADDR", default=None,
                   help="address to listen on (default 127.0.0.1:8443, with --plain "
                   "127.0.0.1:8080)")
    p.add_argument("--plain", action="store_true",
                   help="plain HTTP behind a TLS-terminating reverse proxy (Host header only)")
    p.add_argument("--metrics", metavar="ADDR", default=None,
                   help="Prometheus /metrics address (default: off)")
    p.add_argument("--cache-max-age", metavar="S", type=int, default=300,
                   help="Cache-Control max-age, capped by each policy's max_age (default 300)")
    p.add_argument("--reload-interval", metavar="S", type=float, default=5.0,
                   help="seconds between directory scans (default 5; SIGHUP scans at once)")
    p.add_argument("--handshake-timeout", metavar="S", type=float, default=HANDSHAKE_TIMEOUT,
                   help=f"seconds a client has to finish the TLS handshake "
                   f"(default {HANDSHAKE_TIMEOUT:g})")
    p.add_argument("--idle-timeout", metavar="S", type=float, default=IDLE_TIMEOUT,
                   help=f"close a connection without a complete request after S seconds "
                   f"(default {IDLE_TIMEOUT:g})")
    p.add_argument("--max-connections", metavar="N", type=int, default=MAX_CONNECTIONS,
                   help=f"open connections at most; past it the least recently active are "
                   f"closed (default {MAX_CONNECTIONS})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    listen = args.listen or (DEFAULT_PLAIN_LISTEN if args.plain else DEFAULT_LISTEN)
    cfg = ServerConfig(directory=args.dir or default_directory(), listen=listen,
                       plain_http=args.plain, cache_max_age=args.cache_max_age,
                       reload_interval=args.reload_interval, metrics=args.metrics,
                       handshake_timeout=args.handshake_timeout,
                       idle_timeout=args.idle_timeout, max_connections=args.max_connections)
    asyncio.run(_serve(cfg))
    return EXIT_OK


async def _serve(cfg: ServerConfig) -> None:
    server = PolicyServer(cfg)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGHUP, server.reload)
    print(f"smtptls policy-server: listening on {server.bound} "
          f"({'plain HTTP' if cfg.plain_http else 'HTTPS'}, "
          f"{len(server.store.entries)} domain(s))", flush=True)
    try:
        await stop.wait()
    finally:
        await server.stop()
