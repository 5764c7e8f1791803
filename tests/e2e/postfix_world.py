"""Shared pieces of the end-to-end tests with the lab's real Postfix.

``smtptls policyd`` as a subprocess resolving through the lab's Unbound and trusting the
lab CA, a Postfix configured as docs/postfix.md says and pointed at it, and a helper that
submits a message and waits for what Postfix did.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.e2e.socketmap_client import connect_when_listening, free_port, socketmap_exchange

ROOT = Path(__file__).resolve().parents[2]


def sts_policy(*mx: str, mode: str = "enforce") -> str:
    """An MTA-STS policy body listing ``mx`` (max_age one day)."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), "max_age: 86400"]
    return "\n".join(lines) + "\n"


class Policyd:
    """``smtptls policyd`` as a subprocess against the lab."""

    def __init__(self, lab, workdir: Path, *,  # type: ignore[no-untyped-def]
                 txt_recheck_interval: float | None = None,
                 log_level: str | None = None, policyd_extra: str = "",
                 total_timeout: float = 6.0) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_level = log_level
        host, port = lab.resolver
        self.config = workdir / "smtptls.toml"
        recheck = ("" if txt_recheck_interval is None
                   else f"txt_recheck_interval = {txt_recheck_interval}\n")
        self.config.write_text(
            f'[dns]\nnameservers = ["{host}:{port}"]\ntimeout = 3.0\n\n'
            f'[fetch]\nca_file = "{lab.ca_file}"\nconnect_timeout = 3.0\n'
            f'total_timeout = {total_timeout}\n\n'
            f'[cache]\nsqlite_path = "{workdir / "policies.sqlite3"}"\n\n'
            f'[policyd]\nlisten = "127.0.0.1:{self.port}"\nmetrics = ""\n{recheck}'
            f'{policyd_extra}')
        self.proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(ROOT / "src")}

    def start(self) -> None:
        log = open(self.workdir / "policyd.log", "ab")  # noqa: SIM115
        level = ["--log-level", self.log_level] if self.log_level else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtptls", *level, "policyd", "--config", str(self.config)],
            stdout=log, stderr=log, env=self._env(), cwd=self.workdir)
        sock = connect_when_listening(self.port, self.proc, limit=20, pause=0.1,
                                      connect_timeout=0.5)
        if sock is not None:
            sock.close()
            return
        raise AssertionError(f"policyd did not start: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self) -> str:
        return (self.workdir / "policyd.log").read_text(errors="replace")

    def ask(self, key: str, map_name: str = "postfix") -> str:
        """What the running daemon answers Postfix for ``key`` (socketmap, its cache)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            reply = socketmap_exchange(s, f"{map_name} {key}".encode())
        return reply.partition(b":")[2][:-1].decode()

    def query(self, key: str) -> str:
        """The reply ``smtptls policyd query --json`` computes for ``key``."""
        out = subprocess.run(
            [sys.executable, "-m", "smtptls", "policyd", "query", key, "--json", "--config",
             str(self.config)], capture_output=True, text=True, timeout=60,
            env=self._env(), cwd=self.workdir)
        return json.loads(out.stdout)["reply"]


@contextmanager
def postfix_with_policyd(lab, daemon: Policyd, *,  # type: ignore[no-untyped-def]
                         version: str = "3.7") -> Iterator:
    """Start ``daemon`` and a lab Postfix ``version`` asking it (settings of
    docs/postfix.md)."""
    daemon.start()
    pf = lab.postfix(policy_map=f"socketmap:inet:127.0.0.1:{daemon.port}:postfix",
                     version=version, smtp_tls_security_level="dane",
                     smtp_tls_mandatory_protocols=">=TLSv1.2")
    try:
        yield pf
    finally:
        pf.stop()
        daemon.stop()


def deliver(pf, domain: str, want: str, *, tag: str = "policyd e2e",  # type: ignore[no-untyped-def]
            timeout: float = 40.0):
    """Submit to user@domain; wait for ``want`` (sent / deferred); return the Delivery."""
    qid = pf.submit("sender@postfix.lab.test", f"user@{domain}",
                    f"Subject: {tag} {domain}\r\n\r\nhello\r\n")
    try:
        return pf.wait_delivery(qid, timeout=timeout, statuses=(want,))
    finally:
        if want != "sent":
            pf.delete_all()


#: The lab's sending Postfix versions the end-to-end tables run on: the machine's own
#: 3.7 and Debian trixie's 3.10 (tests/lab/README.md). Rows that differ by version say so.
POSTFIX_VERSIONS = ("3.7", "3.10")
