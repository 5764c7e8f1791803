"""Session results to a collector's ``POST /v1/results``, each batch counted once.

For MTAs and scripts that report their TLS sessions to ``smtptls tlsrpt collect`` over
HTTP. A batch is named once, before its first attempt, by an ``Idempotency-Key`` (a
random UUID unless the caller gives its own ``batch_id``) and keeps that name on every
retry: when the collector committed a batch but its answer was lost (a timeout, a
dropped connection), the retry is answered ``duplicate`` and the results are counted
once. That makes delivery exactly-once for as long as the caller keeps the id (a
caller that crashes and sends the batch again under a new id is counted twice: keep
the id with the batch if that matters). Without a key the collector's promise is
at-least-once.

Retried: connection failures, timeouts, ``503`` and other ``5xx``, ``429``; at most
``attempts`` times, waiting ``RETRY_BASE`` seconds, doubled each time. Not retried (a
retry cannot help): ``400`` (bad results), ``401``, ``409`` (the id was used for other
results), ``413``.

::

    from smtptls.net.results_client import post_results
    outcome = await post_results("http://127.0.0.1:8462", results, token="...")
    # PostOutcome(status="stored", stored=12, batch_id="…", attempts=1)
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from smtptls.errors import ResultError, StoreError
from smtptls.tlsrptsend.results import SessionResult

__all__ = ["IDEMPOTENCY_HEADER", "PostOutcome", "post_results"]

# The client's name for a batch, the same on every retry of it (the IETF HTTPAPI
# draft "The Idempotency-Key HTTP Header Field"); the collector counts a name once.
IDEMPOTENCY_HEADER = "Idempotency-Key"
ATTEMPTS = 5  # tries of one batch
RETRY_BASE = 0.5  # seconds before the first retry, doubled after each
RETRY_MAX = 30.0  # seconds between two tries at most (a Retry-After is capped to it)
TIMEOUT = 30.0  # seconds one try may take
MAX_ANSWER = 64 * 1024  # bytes of an answer read
_RETRIED = {408, 425, 429}


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What the collector answered: ``stored`` (counted now) or ``duplicate`` (counted
    by an earlier try whose answer was lost), the results counted by this answer, the
    batch id, and how many tries it took."""

    status: str
    stored: int
    batch_id: str
    attempts: int


def _answer(body: bytes) -> dict[str, object]:
    try:
        data = json.loads(body[:MAX_ANSWER])
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def post_results(url: str, results: Sequence[SessionResult], *,
                       token: str | None = None, batch_id: str | None = None,
                       attempts: int = ATTEMPTS, try_timeout: float = TIMEOUT,
                       session: aiohttp.ClientSession | None = None) -> PostOutcome:
    """POST ``results`` to the collector at ``url`` (``http://host:port``) as one batch.

    Each try may take ``try_timeout`` seconds. Raises :class:`ResultError` when the
    collector refused the batch (retrying cannot help) and :class:`StoreError` when no
    try got an answer that it was stored."""
    batch_id = batch_id or uuid.uuid4().hex
    body = json.dumps({"results": [r.to_dict() for r in results]}).encode()
    headers = {"Content-Type": "application/json", IDEMPOTENCY_HEADER: batch_id}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    endpoint = url.rstrip("/") + "/v1/results"
    own = session is None
    http = session or aiohttp.ClientSession()
    per_try = aiohttp.ClientTimeout(total=try_timeout)
    delay = RETRY_BASE
    last = "no try made"
    try:
        for attempt in range(1, max(1, attempts) + 1):
            wait = delay
            try:
                async with http.post(endpoint, data=body, headers=headers,
                                     timeout=per_try) as resp:
                    raw = await resp.content.read(MAX_ANSWER)
                    answer = _answer(raw)
                    if resp.status == 200:
                        stored = answer.get("stored", 0)
                        return PostOutcome(str(answer.get("status", "stored")),
                                           stored if isinstance(stored, int) else 0,
                                           batch_id, attempt)
                    reason = str(answer.get("reason", ""))[:200]
                    last = f"HTTP {resp.status} {reason}".strip()
                    if resp.status < 500 and resp.status not in _RETRIED:
                        raise ResultError(f"collector refused batch {batch_id}: {last}")
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        wait = max(wait, float(retry_after))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if attempt < attempts:
                await asyncio.sleep(min(wait, RETRY_MAX))
                delay = min(delay * 2, RETRY_MAX)
    finally:
        if own:
            await http.close()
    raise StoreError(f"batch {batch_id} not stored after {attempts} tries: {last}")
