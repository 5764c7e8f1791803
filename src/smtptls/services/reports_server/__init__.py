"""``smtptls reports serve``: TLSRPT intake for domain owners (RFC 8460 §5.3, §5.4).

* :mod:`.intake`       parse, verify, store or quarantine (shared by every channel)
* :mod:`.parse_pool`   the parsing of small reports in worker processes (``parse_workers``)
* :mod:`.commit_queue` group commits: many submissions, one transaction, one fsync
* :mod:`.limits`       bytes in flight and posts per address, over all senders
* :mod:`.app`          aiohttp application: HTTPS POST intake, dashboard, /metrics
* :mod:`.mail`         SMTP and LMTP listeners (aiosmtpd) for the §5.3 mail form;
  :mod:`.imap_fetch` the same intake from an IMAP mailbox
* :mod:`.console`      the console's decisions (windows, ranking, silence), pure;
  :mod:`.views`, :mod:`.monitor_views` and :mod:`.dashboard` its pages,
  :mod:`.chart` their inline SVG chart, :mod:`.advice` the words for each result type
* :mod:`.alert_rules`  what in the stored reports needs the owner now;
  :mod:`.own_check` ``smtptls check`` of the owner's own domains
* :mod:`.metrics`      the Prometheus metrics of the intake
* :mod:`.server`       wiring: open the store, start the listeners, run until stopped
"""
