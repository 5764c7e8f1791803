# Sourced by the certbot and acme.sh deploy hooks beside it (certbot-smtptls-dane.sh,
# smtptls_dane.sh); not a hook itself: install it without the execute bit, so that
# certbot, which runs every executable file in its hook directory, passes it over.
# See docs/dane.md.
#
# smtptls_dane_check_deploy HOST NEW_CHAIN NEW_KEY AGAIN NOHOST_HINT
#   Checks with `smtptls tlsa check --next` that the TLSA records of HOST (or the file
#   SMTPTLS_RECORDS) cover NEW_CHAIN beside SMTPTLS_DEPLOYED (RFC 7671 §8.1), then runs
#   SMTPTLS_DEPLOY NEW_CHAIN NEW_KEY. AGAIN says how to run the hook again after a
#   refusal; NOHOST_HINT ends the message for an empty HOST without SMTPTLS_RECORDS.
#   Status: 0 deployed (or covered, without SMTPTLS_DEPLOY), 1 refused: the new key is
#   not covered yet (the records to publish are printed), 2 an error.

smtptls_dane_say() { printf 'smtptls-dane: %s\n' "$*" >&2; }

smtptls_dane_check_deploy() {
    _sdc_host=$1
    _sdc_chain=$2
    _sdc_key=$3
    _sdc_again=$4
    _sdc_nohost=$5
    set -- tlsa check "$SMTPTLS_DEPLOYED" --next "$_sdc_chain"
    if [ -n "${SMTPTLS_RECORDS:-}" ]; then
        set -- "$@" --records "$SMTPTLS_RECORDS"
        if [ -n "$_sdc_host" ]; then
            set -- "$@" --name "$_sdc_host"
        fi
        if [ -n "${SMTPTLS_TTL:-}" ]; then
            set -- "$@" --ttl "$SMTPTLS_TTL"
        fi
    else
        if [ -z "$_sdc_host" ]; then
            smtptls_dane_say "no host to look up: set SMTPTLS_TLSA_HOST$_sdc_nohost"
            return 2
        fi
        set -- "$@" --lookup "$_sdc_host"
        if [ -n "${SMTPTLS_NAMESERVER:-}" ]; then
            set -- "$@" --nameserver "$SMTPTLS_NAMESERVER"
        fi
    fi
    "${SMTPTLS:-smtptls}" "$@"
    _sdc_rc=$?
    case $_sdc_rc in
        0) ;;
        1)
            smtptls_dane_say "refusing to deploy $_sdc_chain: publish the record(s) above," \
                "wait, then run $_sdc_again"
            return 1 ;;
        *)
            smtptls_dane_say "cannot judge $_sdc_chain (smtptls exit status $_sdc_rc):" \
                "not deployed"
            return 2 ;;
    esac
    if [ -n "${SMTPTLS_DEPLOY:-}" ]; then
        # The command is the administrator's own setting: split into words on purpose.
        $SMTPTLS_DEPLOY "$_sdc_chain" "$_sdc_key" || {
            smtptls_dane_say "the deploy command failed"
            return 2
        }
        smtptls_dane_say "deployed $_sdc_chain"
    fi
    return 0
}
