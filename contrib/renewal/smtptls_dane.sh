#!/bin/sh
# acme.sh deploy hook: deploy a renewed certificate to the MTA only once the published
# TLSA records cover it (DANE key rollover, RFC 7671 §8.1). See docs/dane.md.
#
#   cp smtptls_dane.sh smtptls-dane-common.sh ~/.acme.sh/deploy/
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
#   SMTPTLS_HOOK_LIB   the shared check-and-deploy steps (default:
#                      smtptls-dane-common.sh beside this hook when run directly, else
#                      in the acme.sh deploy directory, $LE_WORKING_DIR/deploy)
# Status: 0 deployed (or covered), 1 refused: the new key is not covered yet (the
# records to publish are printed), 2 an error.

smtptls_dane_deploy() {
    _sd_domain=$1
    _sd_key=$2
    _sd_fullchain=$5
    _sd_conf=${SMTPTLS_HOOK_CONF:-/etc/default/smtptls-renewal}
    if [ -r "$_sd_conf" ]; then
        . "$_sd_conf"
    fi
    # acme.sh sources this file ($0 names acme.sh): the shared steps are then looked for in
    # its deploy directory; run directly, beside this file.
    case $0 in
        */smtptls_dane.sh) _sd_dir=${0%/*} ;;
        smtptls_dane.sh) _sd_dir=. ;;
        *) _sd_dir=${LE_WORKING_DIR:-$HOME/.acme.sh}/deploy ;;
    esac
    _sd_lib=${SMTPTLS_HOOK_LIB:-$_sd_dir/smtptls-dane-common.sh}
    if [ ! -r "$_sd_lib" ]; then
        printf 'smtptls-dane: cannot read %s: install it beside this hook, or set %s\n' \
            "$_sd_lib" SMTPTLS_HOOK_LIB >&2
        return 2
    fi
    . "$_sd_lib"
    if [ -z "${SMTPTLS_DEPLOYED:-}" ]; then
        smtptls_dane_say "set SMTPTLS_DEPLOYED to the certificate chain the MTA serves now"
        return 2
    fi
    if [ -z "$_sd_fullchain" ] || [ ! -r "$_sd_fullchain" ]; then
        smtptls_dane_say "no readable full chain given (argument 5): '$_sd_fullchain'"
        return 2
    fi
    smtptls_dane_check_deploy "${SMTPTLS_TLSA_HOST:-$_sd_domain}" "$_sd_fullchain" "$_sd_key" \
        "acme.sh --deploy again" ""
}

# Run directly (not sourced by acme.sh): smtptls_dane.sh DOMAIN KEY CERT CA FULLCHAIN
case ${0##*/} in
    smtptls_dane.sh)
        smtptls_dane_deploy "$@"
        exit $? ;;
esac
