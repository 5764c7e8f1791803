"""``smtptls policyd``: the Postfix TLS policy daemon (socketmap for smtp_tls_policy_maps).

- :mod:`.socketmap`: netstring codec and the socketmap server;
- :mod:`.decide`: :class:`PolicyEngine` — DNS and MTA-STS facts, the destination
  decision of :mod:`smtptls.engine.destination`, the in-memory answer cache;
- :mod:`.refresh`: scheduled rechecks (TXT TTL) and proactive policy refresh;
- :mod:`.metrics`: Prometheus metrics on their own port;
- :mod:`.daemon`: process wiring, SIGTERM/SIGHUP, the event loop.

The names below are imported on first use, so that importing one submodule (the
socketmap codec, for the CLI) does not load the DNS, DANE and HTTPS machinery.

See docs/postfix.md for the Postfix side.
"""

from __future__ import annotations

from smtptls.lazy import lazy_exports

_EXPORTS = {
    "Explanation": "decide",
    "PolicyEngine": "decide",
    "NetstringDecoder": "socketmap",
    "Reply": "socketmap",
    "ReplyStatus": "socketmap",
    "Request": "socketmap",
    "SocketmapServer": "socketmap",
    "encode_netstring": "socketmap",
    "parse_request": "socketmap",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
