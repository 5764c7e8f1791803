"""smtptls: MTA-STS (RFC 8461), DANE for SMTP (RFC 7672) and SMTP TLS Reporting (RFC 8460).

The pure protocol packages (:mod:`smtptls.mtasts`, :mod:`smtptls.dane`,
:mod:`smtptls.tlsrpt`) do no I/O; :mod:`smtptls.net` and :mod:`smtptls.store` are the
thin async adapters; :mod:`smtptls.services` and :mod:`smtptls.cli` are entry points.
"""

__version__ = "0.1.0"
