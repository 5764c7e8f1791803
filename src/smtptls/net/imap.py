"""A thin IMAP adapter for fetching report mail: TLS always, verified always.

Built on the standard library's :mod:`imaplib` (IMAP4rev1, RFC 3501), driven from a
thread by the async callers. Security: the connection is IMAPS (TLS from the first
octet, port 993) or STARTTLS (RFC 2595 / RFC 3501 §6.2.1, port 143) before LOGIN; the
server certificate is verified against the system trust store or ``ca_file`` and its
name checked. There is no switch to turn that off: a server that does not offer
STARTTLS is an error, never a plain-text login. The password is never logged.

Bounds: a message's size is read first (``RFC822.SIZE``) and a message over
``max_message`` is not fetched; imaplib bounds a response line (``_MAXLINE``); every
socket operation has a timeout.

Messages are fetched with ``BODY.PEEK[]`` (fetching does not mark them read); the caller
marks or moves each one only after it was stored (:meth:`ImapMailbox.done`).
"""

from __future__ import annotations

import imaplib
import re
import ssl
from dataclasses import dataclass
from enum import StrEnum

from smtptls.errors import ConfigError, ImapError

__all__ = ["ImapMailbox", "ImapSecurity", "ImapSettings"]

#: Messages handled in one run at most (the next run takes the rest).
MAX_MESSAGES_PER_RUN = 1000
#: The keyword set on every message handled, so a later run can skip it even if
#: marking it \\Seen or moving it was undone by a mail client.
DONE_KEYWORD = "$TLSRPTImported"
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")


class ImapSecurity(StrEnum):
    IMAPS = "imaps"  # TLS from the start (RFC 8314 §3.2, port 993)
    STARTTLS = "starttls"  # RFC 3501 §6.2.1, port 143


@dataclass(frozen=True, slots=True)
class ImapSettings:
    host: str
    username: str
    password: str
    port: int = 0  # 0: 993 for imaps, 143 for starttls
    security: ImapSecurity = ImapSecurity.IMAPS
    ca_file: str | None = None  # None: the system trust store
    folder: str = "INBOX"
    done_folder: str = ""  # "": flag \\Seen and keep in the folder
    quarantine_folder: str = ""  # "": mails that are not reports are flagged like the others
    timeout: float = 60.0
    max_message: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("an IMAP host is required", key="reports.imap.host")
        if not self.username:
            raise ConfigError("an IMAP user name is required", key="reports.imap.username")
        object.__setattr__(self, "security", ImapSecurity(self.security))

    @property
    def effective_port(self) -> int:
        if self.port:
            return self.port
        return 993 if self.security is ImapSecurity.IMAPS else 143

    def where(self) -> str:
        """``imap://user@host:port/folder`` (no password) for logs and report origins."""
        return f"imap://{self.username}@{self.host}:{self.effective_port}/{self.folder}"


def _quote(name: str) -> str:
    """A mailbox name as an IMAP quoted string (RFC 3501 §4.3)."""
    if any(c in name for c in "\r\n\0"):
        raise ConfigError("IMAP folder names cannot contain line breaks")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapMailbox:
    """One authenticated IMAP session on one folder (synchronous; run it in a thread)."""

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self._imap: imaplib.IMAP4 | None = None
        self._caps: set[str] = set()

    # --- session --------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=self.settings.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the CA file: {exc}", key="reports.imap.ca_file") \
                from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    def open(self) -> None:
        s = self.settings
        stage = "connect"
        try:
            if s.security is ImapSecurity.IMAPS:
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    s.host, s.effective_port, ssl_context=self._context(), timeout=s.timeout)
            else:
                imap = imaplib.IMAP4(s.host, s.effective_port, timeout=s.timeout)
                stage = "starttls"
                if "STARTTLS" not in imap.capabilities:
                    imap.shutdown()
                    raise ImapError(f"{s.host} does not offer STARTTLS: refusing to log in "
                                    "in clear text (use security = \"imaps\")", stage=stage)
                imap.starttls(ssl_context=self._context())
            self._imap = imap
            stage = "login"
            imap.login(s.username, s.password)
            self._caps = {c.upper() for c in imap.capabilities}
            stage = "select"
            typ, data = imap.select(_quote(s.folder))
            if typ != "OK":
                raise ImapError(f"cannot open folder {s.folder!r}: {_text(data)}", stage=stage)
        except ImapError:
            self.close()
            raise
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise ImapError(f"{s.host}: certificate not trusted: {exc.verify_message}",
                            stage=stage) from exc
        except (TimeoutError, imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
            self.close()
            # imaplib's errors carry the server's words, never the password
            raise ImapError(f"{s.host}:{s.effective_port} {stage}: {type(exc).__name__}: "
                            f"{str(exc)[:200]}", stage=stage) from exc

    def close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is None:
            return
        try:
            if imap.state == "SELECTED":
                imap.close()
            imap.logout()
        except (imaplib.IMAP4.error, OSError, ssl.SSLError):
            try:
                imap.shutdown()
            except OSError:
                pass

    def __enter__(self) -> ImapMailbox:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- messages -------------------------------------------------------------------

    def _call(self, stage: str, *args: str) -> list:
        assert self._imap is not None, "open() first"
        try:
            typ, data = self._imap.uid(*args)
        except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
            raise ImapError(f"{stage}: {type(exc).__name__}: {str(exc)[:200]}",
                            stage=stage) from exc
        if typ != "OK":
            raise ImapError(f"{stage}: server answered {typ} {_text(data)}", stage=stage)
        return data

    def pending(self) -> list[int]:
        """UIDs of unseen messages not handled before, oldest first (bounded)."""
        data = self._call("search", "SEARCH", "UNSEEN", "UNKEYWORD", DONE_KEYWORD)
        uids = sorted(int(x) for x in b" ".join(d for d in data if d).split() if x.isdigit())
        return uids[:MAX_MESSAGES_PER_RUN]

    def size(self, uid: int) -> int | None:
        for item in self._call("fetch", "FETCH", str(uid), "(RFC822.SIZE)"):
            raw = item[0] if isinstance(item, tuple) else item
            if isinstance(raw, bytes) and (m := _SIZE.search(raw)):
                return int(m.group(1))
        return None

    def fetch(self, uid: int) -> bytes | None:
        """The whole message (``BODY.PEEK[]``: it stays unseen), or None if it is gone."""
        for item in self._call("fetch", "FETCH", str(uid), "(BODY.PEEK[])"):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
                return item[1]
        return None

    def done(self, uid: int, *, folder: str = "") -> None:
        """Mark a stored message handled: \\Seen and the keyword; then moved to ``folder``
        when one is given (MOVE, RFC 6851, or COPY + \\Deleted + UID EXPUNGE)."""
        self._call("store", "STORE", str(uid), "+FLAGS.SILENT", f"(\\Seen {DONE_KEYWORD})")
        if not folder:
            return
        target = _quote(folder)
        if "MOVE" in self._caps:
            self._call("move", "MOVE", str(uid), target)
            return
        self._call("copy", "COPY", str(uid), target)
        self._call("store", "STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
        if "UIDPLUS" in self._caps:
            self._call("expunge", "EXPUNGE", str(uid))

    def ensure_folder(self, folder: str) -> None:
        """Create ``folder`` if it does not exist (an existing one is fine)."""
        assert self._imap is not None, "open() first"
        try:
            self._imap.create(_quote(folder))  # NO [ALREADYEXISTS] is fine
        except (imaplib.IMAP4.error, OSError, ssl.SSLError) as exc:
            raise ImapError(f"create {folder!r}: {str(exc)[:200]}", stage="create") from exc


def _text(data: object) -> str:
    if isinstance(data, list):
        data = b" ".join(d for d in data if isinstance(d, bytes))
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return " ".join(str(data).split())[:200]
