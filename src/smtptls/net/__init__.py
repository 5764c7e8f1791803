"""Thin async I/O adapters; the protocol rules live in the pure packages.

- :mod:`.dns`: lookups with a DNSSEC security status on every answer (AD bit of a
  validating resolver, RFC 7672 §2.1.1) — :class:`~.dns.DnsResolver`,
  :class:`~.dns.Answer`, :func:`~.dns.normalize_domain`, :func:`~.dns.run_sync`;
- :mod:`.https`: the MTA-STS policy fetch with the limits of RFC 8461 §3.3 —
  :func:`~.https.fetch_policy`, :class:`~.https.FetchResult`;
- :mod:`.smtp`, :mod:`.pkix`, :mod:`.dkim`: STARTTLS probing, certificate path checks and
  DKIM for the DANE, checker and report sides.

Submodules are imported on use, so importing :mod:`smtptls.net` costs nothing.
"""
