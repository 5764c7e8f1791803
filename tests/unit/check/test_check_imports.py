"""A bulk run without SMTP probes loads neither the HTTP client nor the certificate code.

aiohttp loads the system CA store twice when imported and cryptography is large; a
bulk checker starts once per list (or per shard), so what its start-up imports is
part of the CPU it spends per domain. What is imported, not how long it takes.
"""

from __future__ import annotations

from tests.import_probe import imported_after

#: Loaded only by SMTP probes (certificates, DANE chains) or HTTPS rua probes.
NOT_FOR_BULK = ("aiohttp", "cryptography", "OpenSSL", "smtptls.dane.verify",
                "smtptls.dane.publish", "smtptls.net.smtp",
                # the report side of TLSRPT: a checker reads only the record (§3)
                "smtptls.tlsrpt.mail", "smtptls.tlsrpt.reader", "smtptls.tlsrpt.decode")


def test_bulk_checker_imports_no_http_client_or_certificate_code() -> None:
    loaded = imported_after("import smtptls.cli.main, smtptls.cli.check\n"
                             "from smtptls.check.gather import CheckOptions, Gatherer\n"
                             "from smtptls.config import DnsConfig\n"
                             "Gatherer(CheckOptions(DnsConfig(nameservers=('127.0.0.1',)),"
                             " bulk_dns=True, smtp=False))")
    assert not [m for m in NOT_FOR_BULK if m in loaded]
    assert "smtptls.check.evaluate" in loaded  # the checks themselves are there
