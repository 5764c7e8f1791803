"""Bounds and timings of ``smtptls tlsrpt collect``, each with why."""

from __future__ import annotations

MAX_HTTP_BODY = 4 * 1024 * 1024
MAX_HTTP_RESULTS = 10_000
MAX_READ = 1024 * 1024  # bytes of a log file read at once
MAX_CHUNKS = 8  # reads per poll: a backlog is handed on in steps of at most 8 MiB
MAX_PARTIAL = 64 * 1024  # an unterminated line longer than this is dropped
# A rotated log is read until it has had no new data for this long, then the new file:
# a syslog daemon writes to the old file until it reopens (on SIGHUP), and a line it
# wrote there after the rename must not be lost (tail -F closes it at once).
ROTATED_QUIET = 2.0
TAIL_BYTES = 1024  # bytes before a read position whose digest identifies it
RESUME_REPLAY = 1024 * 1024  # bytes before a resumed position read again (open sessions)
MAX_SIBLINGS = 64  # rotated files next to a log looked at for a position or a copy
MAX_DIR_ENTRIES = 10_000  # directory entries looked at for them
COMPRESSED = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".Z")  # not read
BACKLOG_WAIT = 30.0  # seconds log results wait for room in a full collector, then drop
SOCKET_RCVBUF = 4 * 1024 * 1024
CONTEXT_TTL = 300.0  # seconds a domain's policy context is reused
MAX_CONTEXTS = 10_000
MAX_RESULTS = 10_000  # kinds of log sessions whose result is remembered
SOURCES = ("datagram", "log", "journal", "api", "http")
