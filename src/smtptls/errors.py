"""The one exception tree of smtptls.

Every public function raises a subclass of :class:`SmtpTlsError`; each carries what
was wrong and, where it applies, where (line, field, record)::

    SmtpTlsError
    ├── ConfigError                 bad configuration file or option
    ├── PolicyError                 MTA-STS (RFC 8461)
    │   ├── StsRecordError          _mta-sts TXT record syntax (§3.1)
    │   ├── MultipleRecordsError    more than one v=STSv1 record (§3.1)
    │   └── PolicySyntaxError       policy file syntax/semantics (§3.2); .line
    ├── DnsError                    DNS lookup failed
    │   ├── DnsTimeout              no answer in time
    │   ├── DnsBogus                validating resolver answered SERVFAIL (RFC 7672 §2.1.1)
    │   ├── DnsLimitError           CNAME chain or record count over its bound
    │   └── InvalidDomainError      not a valid DNS name (leading dot, empty label, ...)
    ├── FetchError                  HTTPS policy fetch (RFC 8461 §3.3)
    │   ├── FetchTlsError           certificate/handshake failure
    │   ├── FetchStatusError        non-200 status (redirects included); .status
    │   ├── FetchContentTypeError   media type not text/plain
    │   ├── FetchTooLargeError      body over the size cap
    │   └── FetchTimeoutError       connect/read/total timeout
    ├── DaneError                   DANE (RFC 7672 / 7671 / 6698)
    │   └── TlsaRecordError         malformed TLSA record
    ├── SmtpProbeError              STARTTLS probe; .stage says where it failed
    ├── ReportError                 TLSRPT (RFC 8460)
    │   ├── TlsrptRecordError       _smtp._tls TXT record syntax (§3)
    │   │   └── MultipleTlsrptRecordsError  more than one v=TLSRPTv1 record (§3)
    │   ├── ReportParseError        report JSON/model errors; .path
    │   ├── ReportTooLargeError     compressed or decompressed size over its cap
    │   ├── ReportMailError         report e-mail (§5.3) unusable
    │   │   └── NoReportAttachmentError  no report attachment in the message
    │   ├── ResultError             a sender's TLS session result is unusable
    │   │   └── DatagramError       a libtlsrpt datagram is malformed
    │   └── ReportDeliveryError     a report could not be delivered (§5.3); .permanent
    ├── StoreError                  storage backend failure
    └── ProtocolError               a peer spoke a wire protocol wrongly (socketmap, ...)
"""

from __future__ import annotations


class SmtpTlsError(Exception):
    """Root of every error smtptls raises on purpose."""

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def __str__(self) -> str:
        return self.message if self.detail is None else f"{self.message}: {self.detail}"


class ConfigError(SmtpTlsError):
    """Configuration file or option is invalid."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message if key is None else f"{key}: {message}")
        self.key = key


# --- MTA-STS -------------------------------------------------------------------------


class PolicyError(SmtpTlsError):
    """An MTA-STS record or policy is unusable."""


class StsRecordError(PolicyError):
    """The `_mta-sts` TXT record does not follow RFC 8461 §3.1."""

    def __init__(self, message: str, *, record: str | None = None) -> None:
        super().__init__(message)
        self.record = record


class MultipleRecordsError(StsRecordError):
    """More than one TXT record starts with v=STSv1 (RFC 8461 §3.1: no policy)."""


class PolicySyntaxError(PolicyError):
    """The policy file does not follow RFC 8461 §3.2. ``line`` is 1-based or None."""

    def __init__(self, message: str, *, line: int | None = None, text: str | None = None) -> None:
        super().__init__(message if line is None else f"line {line}: {message}")
        self.reason = message
        self.line = line
        self.text = text


# --- DNS -----------------------------------------------------------------------------


class DnsError(SmtpTlsError):
    """A DNS lookup failed in a way that is not a plain negative answer."""

    def __init__(self, message: str, *, name: str | None = None, rdtype: str | None = None) -> None:
        super().__init__(message)
        self.name = name
        self.rdtype = rdtype


class DnsTimeout(DnsError):
    """No answer within the configured time."""


class DnsBogus(DnsError):
    """The validating resolver answered SERVFAIL: DNSSEC bogus or indeterminate."""


class DnsLimitError(DnsError):
    """A CNAME chain or an RRset exceeded its configured bound."""


class InvalidDomainError(DnsError):
    """A name is not a valid DNS host name (empty label, leading dot, too long, ...)."""


# --- HTTPS fetch ---------------------------------------------------------------------


class FetchError(SmtpTlsError):
    """The MTA-STS policy could not be fetched (RFC 8461 §3.3)."""

    kind = "fetch"

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class FetchTlsError(FetchError):
    kind = "tls"


class FetchStatusError(FetchError):
    kind = "status"

    def __init__(self, message: str, *, url: str | None = None, status: int = 0) -> None:
        super().__init__(message, url=url)
        self.status = status


class FetchContentTypeError(FetchError):
    kind = "content-type"


class FetchTooLargeError(FetchError):
    kind = "too-large"


class FetchTimeoutError(FetchError):
    kind = "timeout"


# --- DANE ----------------------------------------------------------------------------


class DaneError(SmtpTlsError):
    """DANE processing failed."""


class TlsaRecordError(DaneError):
    """A TLSA record is malformed (RFC 6698 §2)."""

    def __init__(self, message: str, *, record: str | None = None) -> None:
        super().__init__(message)
        self.record = record


class SmtpProbeError(SmtpTlsError):
    """An SMTP STARTTLS probe failed; ``stage`` is connect, banner, ehlo, starttls, ..."""

    def __init__(self, message: str, *, stage: str, host: str | None = None) -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.host = host


# --- TLSRPT --------------------------------------------------------------------------


class ReportError(SmtpTlsError):
    """A TLSRPT record or report is unusable."""


class TlsrptRecordError(ReportError):
    """The `_smtp._tls` TXT record does not follow RFC 8460 §3."""

    def __init__(self, message: str, *, record: str | None = None) -> None:
        super().__init__(message)
        self.record = record


class MultipleTlsrptRecordsError(TlsrptRecordError):
    """More than one TXT record starts with v=TLSRPTv1 (RFC 8460 §3: no TLSRPT)."""


class ReportParseError(ReportError):
    """A report is not valid JSON or does not follow RFC 8460 §4; ``path`` is a JSON path."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.reason = message
        self.path = path


class ReportTooLargeError(ReportError):
    """A report (compressed or decompressed) exceeded its size cap."""


class ReportMailError(ReportError):
    """A report e-mail (RFC 8460 §5.3) cannot be read: bad MIME, too many parts, ..."""


class NoReportAttachmentError(ReportMailError):
    """The message carries no TLSRPT report attachment."""


class ResultError(ReportError):
    """A TLS session result (the sending side's raw data for a report) is unusable."""


class DatagramError(ResultError):
    """A libtlsrpt datagram (JSON over a UNIX datagram socket) is malformed."""


class ReportDeliveryError(ReportError):
    """A report could not be delivered to a ``rua`` URI (RFC 8460 §5.3).

    ``permanent`` says whether retrying can help (an unusable URI, a 4xx answer, a 5xx
    SMTP reply); temporary failures are retried with back-off for about a day.
    """

    def __init__(self, message: str, *, uri: str | None = None, permanent: bool = False
                 ) -> None:
        super().__init__(message)
        self.uri = uri
        self.permanent = permanent


class AlertDeliveryError(SmtpTlsError):
    """An alert could not be delivered through a channel (webhook, mail relay)."""

    def __init__(self, message: str, *, channel: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel


class ImapError(ReportError):
    """Fetching report mail from an IMAP mailbox failed (login, TLS, folder, protocol)."""

    def __init__(self, message: str, *, stage: str | None = None) -> None:
        super().__init__(message)
        self.stage = stage


# --- storage and wire protocols --------------------------------------------------------


class StoreError(SmtpTlsError):
    """A storage backend failed."""


class ProtocolError(SmtpTlsError):
    """A peer violated a wire protocol (socketmap netstrings, ...)."""
