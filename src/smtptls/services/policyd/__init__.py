"""``smtptls policyd``: the Postfix TLS policy daemon (socketmap for smtp_tls_policy_maps).

- :mod:`.socketmap`: netstring codec and the socketmap server;
- :mod:`.decide`: :class:`PolicyEngine` — DNS and MTA-STS facts, the destination
  decision of :mod:`smtptls.engine.destination`, the in-memory answer cache;
- :mod:`.refresh`: scheduled rechecks (TXT TTL) and proactive policy refresh;
- :mod:`.metrics`: Prometheus metrics on their own port;
- :mod:`.daemon`: process wiring, SIGTERM/SIGHUP.

See docs/postfix.md for the Postfix side.
"""

from smtptls.services.policyd.decide import Explanation, PolicyEngine
from smtptls.services.policyd.socketmap import (
    NetstringDecoder,
    Reply,
    ReplyStatus,
    Request,
    SocketmapServer,
    encode_netstring,
    parse_request,
)

__all__ = [
    "Explanation",
    "NetstringDecoder",
    "PolicyEngine",
    "Reply",
    "ReplyStatus",
    "Request",
    "SocketmapServer",
    "encode_netstring",
    "parse_request",
]
