"""What the lab's sending MTAs (Postfix 3.7, 3.10, Exim) share: running one of their
command-line tools, and submitting a message to one over SMTP."""

from __future__ import annotations

import re
import smtplib
import subprocess
from collections.abc import Iterable

from .model import LabError

#: Seconds a command-line tool of an MTA (postconf, postqueue, exim -bp, ...) may take.
TOOL_TIMEOUT = 30.0


def run_tool(argv: list[str], what: str, stdin: bytes | None = None) -> str:
    """Run an MTA tool; its stdout, or :class:`LabError` with what it said."""
    out = subprocess.run(argv, input=stdin, capture_output=True, timeout=TOOL_TIMEOUT,
                         check=False)
    if out.returncode != 0:
        raise LabError(f"{what} failed ({out.returncode}): "
                       f"{(out.stderr or out.stdout).decode(errors='replace').strip()}")
    return out.stdout.decode(errors="replace")


def smtp_submit(address: str, sender: str, recipients: str | Iterable[str],
                data: bytes | str, *, mta: str, queue_id: re.Pattern[str]) -> str:
    """Submit a message to the MTA listening on ``address``:25 (from that address);
    the queue id its ``250`` reply names (``queue_id`` has it as group 1)."""
    rcpts = [recipients] if isinstance(recipients, str) else list(recipients)
    raw = data.encode() if isinstance(data, str) else data
    with smtplib.SMTP(address, 25, local_hostname="submit.lab.test", timeout=20,
                      source_address=(address, 0)) as s:
        s.ehlo()
        s.mail(sender)
        for r in rcpts:
            code, msg = s.rcpt(r)
            if code >= 400:
                raise LabError(f"{mta} refused recipient {r}: {code} {msg!r}")
        code, reply = s.data(raw)
    if code != 250:
        raise LabError(f"{mta} refused the message: {code} {reply!r}")
    m = queue_id.search(reply.decode(errors="replace"))
    if m is None:
        raise LabError(f"no queue ID in {reply!r}")
    return m.group(1)
