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
#   SMTPTLS_HOOK_LIB   the shared check-and-deploy steps (default:
#                      smtptls-dane-common.sh beside this hook; install it too)
# Exit status: 0 deployed (or covered, without SMTPTLS_DEPLOY), 1 refused: the new key
# is not covered yet (the records to publish are printed), 2 an error.

conf=${SMTPTLS_HOOK_CONF:-/etc/default/smtptls-renewal}
if [ -r "$conf" ]; then
    . "$conf"
fi

lib=${SMTPTLS_HOOK_LIB:-$(dirname -- "$0")/smtptls-dane-common.sh}
[ -r "$lib" ] || {
    printf 'smtptls-dane: cannot read %s: install it beside this hook, or set %s\n' \
        "$lib" SMTPTLS_HOOK_LIB >&2
    exit 2
}
. "$lib"

if [ -z "${RENEWED_LINEAGE:-}" ]; then
    smtptls_dane_say "RENEWED_LINEAGE is not set: run this as a certbot deploy hook"
    exit 2
fi
if [ -z "${SMTPTLS_DEPLOYED:-}" ]; then
    smtptls_dane_say "set SMTPTLS_DEPLOYED to the certificate chain the MTA serves now"
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

smtptls_dane_check_deploy "$host" "$new_chain" "$new_key" \
    "this hook again (RENEWED_LINEAGE=$RENEWED_LINEAGE $0)" " (RENEWED_DOMAINS is empty)"
exit $?
