#!/bin/sh
# certbot deploy hook: deploy a renewed certificate to the MTA only once the published
# TLSA records cover it (DANE key rollover, RFC 7671 §8.1). See docs/dane.md.
#
#   certbot renew --deploy-hook /usr/local/lib/smtptls/certbot-smtptls-dane.sh
#
# certbot sets RENEWED_LINEAGE (the live/ directory of the renewed certificate) and
# RENEWED_DOMAINS. Settings (environment, or the file SMTPTLS_HOOK_CONF, default
# /etc/default/smtptls-renewal):
#   SMTPTLS_DEPLOYED   the certificate chain the MTA serves now (required)
#   SMTPTLS_TLSA_HOST  the MX host whose TLSA RRset is checked (default: the first of
#                      RENEWED_DOMAINS)
#   SMTPTLS_RECORDS    a file of TLSA records to check instead of a DNS lookup
#   SMTPTLS_TTL        TTL for the wait advice with SMTPTLS_RECORDS
#   SMTPTLS_NAMESERVER validating resolver for the lookup (IP[:PORT])
#   SMTPTLS_DEPLOY     command run when the new certificate is covered, with the new
#                      chain and key as arguments (copy them into place, reload the MTA)
#   SMTPTLS            the smtptls program (default: smtptls on PATH)
# Exit status: 0 deployed (or covered, without SMTPTLS_DEPLOY), 1 refused: the new key
# is not covered yet (the records to publish are printed), 2 an error.

conf=${SMTPTLS_HOOK_CONF:-/etc/default/smtptls-renewal}
if [ -r "$conf" ]; then
    . "$conf"
fi

say() { printf 'smtptls-dane: %s\n' "$*" >&2; }

if [ -z "${RENEWED_LINEAGE:-}" ]; then
    say "RENEWED_LINEAGE is not set: run this as a certbot deploy hook"
    exit 2
fi
if [ -z "${SMTPTLS_DEPLOYED:-}" ]; then
    say "set SMTPTLS_DEPLOYED to the certificate chain the MTA serves now"
    exit 2
fi
new_chain=$RENEWED_LINEAGE/fullchain.pem
new_key=$RENEWED_LINEAGE/privkey.pem
host=${SMTPTLS_TLSA_HOST:-}
if [ -z "$host" ]; then
    # RENEWED_DOMAINS is space-separated; the first name is taken.
    # (no globbing: a wildcard name must not expand)
    set -f
    set -- ${RENEWED_DOMAINS:-}
    set +f
    host=${1:-}
fi

set -- tlsa check "$SMTPTLS_DEPLOYED" --next "$new_chain"
if [ -n "${SMTPTLS_RECORDS:-}" ]; then
    set -- "$@" --records "$SMTPTLS_RECORDS"
    if [ -n "$host" ]; then
        set -- "$@" --name "$host"
    fi
    if [ -n "${SMTPTLS_TTL:-}" ]; then
        set -- "$@" --ttl "$SMTPTLS_TTL"
    fi
else
    if [ -z "$host" ]; then
        say "no host to look up: set SMTPTLS_TLSA_HOST (RENEWED_DOMAINS is empty)"
        exit 2
    fi
    set -- "$@" --lookup "$host"
    if [ -n "${SMTPTLS_NAMESERVER:-}" ]; then
        set -- "$@" --nameserver "$SMTPTLS_NAMESERVER"
    fi
fi

"${SMTPTLS:-smtptls}" "$@"
rc=$?
case $rc in
    0) ;;
    1)
        say "refusing to deploy $new_chain: publish the record(s) above, wait, then run" \
            "this hook again (RENEWED_LINEAGE=$RENEWED_LINEAGE $0)"
        exit 1 ;;
    *)
        say "cannot judge $new_chain (smtptls exit status $rc): not deployed"
        exit 2 ;;
esac

if [ -n "${SMTPTLS_DEPLOY:-}" ]; then
    # The command is the administrator's own setting: split into words on purpose.
    $SMTPTLS_DEPLOY "$new_chain" "$new_key" || {
        say "the deploy command failed"
        exit 2
    }
    say "deployed $new_chain"
fi
exit 0
