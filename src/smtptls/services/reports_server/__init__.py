"""``smtptls reports serve``: TLSRPT intake for domain owners (RFC 8460 §5.3, §5.4).

* :mod:`.intake`    parse, verify, store or quarantine (shared by every channel)
* :mod:`.app`       aiohttp application: HTTPS POST intake, dashboard, /metrics
* :mod:`.mail`      SMTP and LMTP listeners (aiosmtpd) for the §5.3 mail form
* :mod:`.dashboard` server-rendered HTML pages, :mod:`.chart` their inline SVG chart
* :mod:`.server`    wiring: open the store, start the listeners, run until stopped
"""
