"""What the monitor's integration tests share: a webhook receiver on loopback and a run
of ``smtptls monitor --once --json`` through the real command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web


@contextlib.asynccontextmanager
async def webhook_receiver(path: str = "/hook") -> AsyncIterator[tuple[list[dict], str]]:
    """``(received, url)``: every JSON body POSTed to ``url`` is appended to ``received``."""
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(path, hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield received, f"http://{host}:{port}{path}"
    finally:
        await runner.cleanup()


async def run_monitor(config: Path) -> tuple[int, dict]:
    """``smtptls monitor --once --json``: its exit status (0 or 1) and its JSON run."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smtptls", "monitor", "--once", "--json", "--config",
        str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    assert proc.returncode in (0, 1), err.decode()
    return proc.returncode, json.loads(out)


def alerts_of(doc: dict, domain: str) -> dict[tuple[str, str], dict]:
    """The alerts of one judged domain of a run, by (code, subject)."""
    entry = next(d for d in doc["domains"] if d["domain"] == domain)
    assert entry["judged"] is True
    return {(a["code"], a["subject"]): a for a in entry["alerts"]}
