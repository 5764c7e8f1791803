"""A Postfix socketmap client's two steps, stdlib only, shared by the end-to-end tests
and the policy daemon benchmarks: connect as soon as a daemon listens, and one request
(netstring framing, the reply read up to its closing comma)."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A loopback TCP port free just now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect_when_listening(port: int, proc: subprocess.Popen[bytes], *, limit: float,
                           pause: float, connect_timeout: float) -> socket.socket | None:
    """A connection to ``127.0.0.1:port`` once ``proc`` listens there, tried every
    ``pause`` seconds; ``None`` when ``proc`` exits or ``limit`` seconds pass first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
        except OSError:
            time.sleep(pause)
    return None


def socketmap_exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send ``request`` as a netstring; the reply as received (netstring and all), up to
    its closing comma or the end of the connection."""
    sock.sendall(b"%d:%s," % (len(request), request))
    reply = b""
    while not reply.endswith(b","):
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply
