"""``python -m tests.lab up|down|status``: run the lab by hand.

``up`` starts a lab, publishes a few example domains, prints where everything is and
stays in the foreground until Ctrl-C, SIGTERM or ``python -m tests.lab down``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from . import runtime
from .lab import Lab
from .model import LabDomain, LabError, LabMx, PolicyHost

EXAMPLE_POLICY = "version: STSv1\nmode: enforce\nmx: mx1.good.secure.test\nmax_age: 86400\n"


def examples() -> list[LabDomain]:
    return [
        LabDomain("good.secure.test",
                  mx=[LabMx("mx1.good.secure.test", cert="good", tlsa=["3 1 1 auto"])],
                  txt={"_mta-sts": ["v=STSv1; id=1"],
                       "_smtp._tls": ["v=TLSRPTv1; rua=mailto:tlsrpt@good.secure.test"]},
                  policy=PolicyHost(body=EXAMPLE_POLICY)),
        LabDomain("plain.insecure.test",
                  mx=[LabMx("mx.plain.insecure.test", cert="self-signed", starttls=True)]),
        LabDomain("nostarttls.insecure.test",
                  mx=[LabMx("mx.nostarttls.insecure.test", starttls=False)]),
        LabDomain("broken.bogus.test", mx=[LabMx("mx.broken.bogus.test")]),
    ]


def lab_config(lab: Lab) -> str:
    """A ready smtptls.toml: the lab's validating resolver, its CA and its signed root."""
    ip, port = lab.resolver
    return (f'[dns]\nnameservers = ["{ip}:{port}"]\n'
            'dnssec_probe = "test."        # the lab resolver answers only below test.\n'
            f'\n[fetch]\nca_file = "{lab.ca_file}"\n')


def cmd_up(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        lab = Lab(net=args.net).start()
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    try:
        domains = lab.add(*examples())
        lab._write_state(mode="up")
        info = {
            "net": f"127.{lab.net.n}.0.0/16" if lab.net else None,
            "dir": str(lab.dir),
            "resolver": f"{lab.resolver[0]}:{lab.resolver[1]} (Unbound, validating)",
            "authoritative": f"{lab.authoritative[0]}:{lab.authoritative[1]} (NSD)",
            "policy_hosts": f"{lab.policy_address}:443 (HTTPS, SNI mta-sts.<domain>)",
            "ca_file": str(lab.ca_file),
            "trust_anchor_file": str(lab.trust_anchor_file),
            "trust_anchor": lab.trust_anchor,
            "resolv_conf": str(lab.resolv_conf),
            "startup_seconds": round(lab.startup_seconds or 0, 2),
            "examples": {d.name: {m.host: m.address for m in d.mx} for d in domains},
        }
        print(json.dumps(info, indent=2))
        config = lab_config(lab)
        config_file = lab.dir / "smtptls.toml"
        config_file.write_text(config)
        print(f"\nsmtptls configuration for this lab ({config_file}):\n\n{config}")
        print(f"try: smtptls --log-level info check good.secure.test --config {config_file}")
        print(f"\ntry: dig +dnssec @{lab.resolver[0]} good.secure.test MX", flush=True)
        print("stop with Ctrl-C or: python -m tests.lab down", flush=True)
        while not stop.is_set():
            stop.wait(1)
    finally:
        lab.close()
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    labs = runtime.running_labs()
    stopped = 0
    for state in labs:
        if state.get("mode") != "up" or (args.net is not None and state.get("net") != args.net):
            continue
        pid = int(state["owner_pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and runtime._pid_alive(pid):
            time.sleep(0.1)
        print(f"stopped lab 127.{state['net']}.0.0/16 (pid {pid})")
        stopped += 1
    cleaned = runtime.reap_all_stale() if args.net is None else []
    for n in cleaned:
        print(f"removed leftovers of lab 127.{n}.0.0/16")
    if not stopped and not cleaned:
        print("no lab started with 'up' is running")
    return 0


def cmd_status(_args: argparse.Namespace) -> int:
    labs = runtime.running_labs()
    print(json.dumps(labs, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a lab and keep it running")
    up.add_argument("--net", type=int, default=None,
                    help="use 127.NET.0.0/16 (default: $SMTPTLS_LAB_NET or a free one)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop labs started with 'up' (all, or --net N)")
    down.add_argument("--net", type=int, default=None, help="only the lab on 127.NET.0.0/16")
    down.set_defaults(func=cmd_down)
    sub.add_parser("status", help="list running labs").set_defaults(func=cmd_status)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
