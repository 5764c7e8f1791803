#!/usr/bin/env bash
# Install the Debian packages the test lab needs and make sure PostgreSQL and Redis run.
# Idempotent; safe to run on a fresh machine (as root) or again on a prepared one.
set -euo pipefail

# mmdebstrap + debian-archive-keyring: the lab's second sending Postfix (Debian trixie's
# 3.10 with libtlsrpt) in a root file system built on first use (tests/lab/debroot.py).
# The lab's sending Exim 4.96 (Debian bookworm's exim4-daemon-heavy) comes the same way
# (tests/lab/exim.py), not from this list: Debian's MTAs conflict with each other
# (mail-transport-agent), so installing exim4 here would remove the lab's Postfix.
# dovecot-imapd: the IMAP server the report-fetching tests start in a temporary directory.
PACKAGES=(nsd unbound bind9-utils bind9-dnsutils postfix iproute2 swaks chromium
          mmdebstrap debian-archive-keyring systemd opendkim-tools dovecot-imapd)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-system: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Never let package scripts start system services (the lab runs its own instances).
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# PostgreSQL on 127.0.0.1:5432 (trust auth) with a database "test".
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "install-system: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  fi
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi

# Redis on 127.0.0.1:6379.
if command -v redis-server >/dev/null 2>&1; then
  if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "install-system: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 0.2; done
  fi
fi
echo "install-system: ready"
