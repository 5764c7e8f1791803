#!/bin/sh
# acme.sh deploy hook: deploy a renewed certificate to the MTA only once the published
# TLSA records cover it (DANE key rollover, RFC 7671 §8.1). See docs/dane.md.
#
#   cp smtptls_dane.sh ~/.acme.sh/deploy/
#   SMTPTLS_DEPLOYED=/etc/postfix/chain.pem acme.sh --deploy -d mx.example.com \
#       --deploy-hook smtptls_dane
#
# acme.sh calls smtptls_dane_deploy DOMAIN KEY CERT CA FULLCHAIN. The file can also be
# run directly with those five arguments. Settings (environment, or the file
# SMTPTLS_HOOK_CONF, default /etc/default/smtptls-renewal):
#   SMTPTLS_DEPLOYED   the certificate chain the MTA serves now (required)
#   SMTPTLS_TLSA_HOST  the MX host whose TLSA RRset is checked (default: DOMAIN)
#   SMTPTLS_RECORDS    a file of TLSA records to check instead of a DNS lookup
#   SMTPTLS_TTL        TTL for the wait advice with SMTPTLS_RECORDS
#   SMTPTLS_NAMESERVER validating resolver for the lookup (IP[:PORT])
#   SMTPTLS_DEPLOY     command run when the new certificate is covered, with the new
#                      chain and key as arguments (copy them into place, reload the MTA)
#   SMTPTLS            the smtptls program (default: smtptls on PATH)
# Status: 0 deployed (or covered), 1 refused: the new key is not covered yet (the
# records to publish are printed), 2 an error.

smtptls_dane_say() { printf 'smtptls-dane: %s\n' "$*" >&2; }

smtptls_dane_deploy() {
    _sd_domain=$1
    _sd_key=$2
    _sd_fullchain=$5
    _sd_conf=${SMTPTLS_HOOK_CONF:-/etc/default/smtptls-renewal}
    if [ -r "$_sd_conf" ]; then
        . "$_sd_conf"
    fi
    if [ -z "${SMTPTLS_DEPLOYED:-}" ]; then
        smtptls_dane_say "set SMTPTLS_DEPLOYED to the certificate chain the MTA serves now"
        return 2
    fi
    if [ -z "$_sd_fullchain" ] || [ ! -r "$_sd_fullchain" ]; then
        smtptls_dane_say "no readable full chain given (argument 5): '$_sd_fullchain'"
        return 2
    fi
    _sd_host=${SMTPTLS_TLSA_HOST:-$_sd_domain}
    set -- tlsa check "$SMTPTLS_DEPLOYED" --next "$_sd_fullchain"
    if [ -n "${SMTPTLS_RECORDS:-}" ]; then
        set -- "$@" --records "$SMTPTLS_RECORDS"
        if [ -n "$_sd_host" ]; then
            set -- "$@" --name "$_sd_host"
        fi
        if [ -n "${SMTPTLS_TTL:-}" ]; then
            set -- "$@" --ttl "$SMTPTLS_TTL"
        fi
    else
        if [ -z "$_sd_host" ]; then
            smtptls_dane_say "no host to look up: set SMTPTLS_TLSA_HOST"
            return 2
        fi
        set -- "$@" --lookup "$_sd_host"
        if [ -n "${SMTPTLS_NAMESERVER:-}" ]; then
            set -- "$@" --nameserver "$SMTPTLS_NAMESERVER"
        fi
    fi
    "${SMTPTLS:-smtptls}" "$@"
    _sd_rc=$?
    case $_sd_rc in
        0) ;;
        1)
            smtptls_dane_say "refusing to deploy $_sd_fullchain: publish the record(s)" \
                "above, wait, then run acme.sh --deploy again"
            return 1 ;;
        *)
            smtptls_dane_say "cannot judge $_sd_fullchain (smtptls exit status $_sd_rc):" \
                "not deployed"
            return 2 ;;
    esac
    if [ -n "${SMTPTLS_DEPLOY:-}" ]; then
        # The command is the administrator's own setting: split into words on purpose.
        $SMTPTLS_DEPLOY "$_sd_fullchain" "$_sd_key" || {
            smtptls_dane_say "the deploy command failed"
            return 2
        }
        smtptls_dane_say "deployed $_sd_fullchain"
    fi
    return 0
}

# Run directly (not sourced by acme.sh): smtptls_dane.sh DOMAIN KEY CERT CA FULLCHAIN
case ${0##*/} in
    smtptls_dane.sh)
        smtptls_dane_deploy "$@"
        exit $? ;;
esac
