#!/usr/bin/env bash
# bash completion for ternctl (dist/bash-completion/ternctl) against
# cli/args.c's tables: every command and every option of each command is
# completed, and nothing that is not in the tables. VM and host names come
# from a stand-in ternctl that prints tables as the real one does.
source "$(dirname "$0")/lib.sh"
COMPLETION=$TERN_SOURCE/dist/bash-completion/ternctl

# complete WORD...: what <TAB> after the words offers (the last word is the
# one being completed; "" for a new word), one per line, sorted.
complete_words() {
    local -a COMP_WORDS=(ternctl "$@")
    local COMP_CWORD=$(($# ))
    local COMPREPLY=()
    _ternctl
    printf '%s\n' "${COMPREPLY[@]}" | sed '/^$/d' | sort
}

# same_set "WHAT" "EXPECTED (one per line)" "GOT (one per line)"
same_set() {
    local want got
    want=$(sort -u <<<"$2" | sed '/^$/d')
    got=$(sort -u <<<"$3" | sed '/^$/d')
    [ "$want" = "$got" ] && return 0
    fail "$1: missing [$(comm -23 <(echo "$want") <(echo "$got") | tr '\n' ' ')]," \
        "not in cli/args.c [$(comm -13 <(echo "$want") <(echo "$got") | tr '\n' ' ')]"
    return 1
}

# "VM_DEFINE" -> "vm define", "CLUSTER_INIT_CA" -> "cluster init-ca".
cmd_words() {
    local g=${1%%_*} v=${1#*_}
    [ "$1" = STATUS ] && { echo status; return; }
    echo "${g,,} $(tr '_' '-' <<<"${v,,}")"
}

setup_stub() {
    # A stand-in ternctl on PATH: tables with a header, one name cut short.
    stub=$(mktemp -d /tmp/tern-completion-XXXXXX)
    cat >"$stub/ternctl" <<'STUB'
#!/bin/sh
for a in "$@"; do last2=$last; last=$a; done
case "$last2 $last" in
    "vm list") printf 'NAME  STATE\nweb1  running\ndb    stopped\na-very-long-name-that-the-t...  running\n' ;;
    "host list") printf 'NAME  STATE\nhost-a  online\nhost-b  online\n' ;;
esac
STUB
    chmod +x "$stub/ternctl"
    PATH=$stub:$PATH
    trap 'rm -rf "$stub"' EXIT
}

test_commands() {
    local groups verbs g rc=0
    local table
    table=$(ternctl_commands)
    at_least 13 "ternctl commands" $table || return 1
    groups=$(awk '{print $1}' <<<"$table" | sort -u)
    same_set "top level" "$groups" "$(complete_words "")" || rc=1
    for g in $(awk 'NF == 2 {print $1}' <<<"$table" | sort -u); do
        verbs=$(awk -v g="$g" '$1 == g {print $2}' <<<"$table")
        same_set "$g verbs" "$verbs" "$(complete_words "$g" "")" || rc=1
    done
    # A prefix narrows it.
    same_set "vm s" "$(printf 'start\nstop\nshow')" "$(complete_words vm s)" || rc=1
    return $rc
}

test_options() {
    local table globals c words want rc=0
    table=$(ternctl_options)
    at_least 20 "ternctl options" $table || return 1
    # Global options, but not the short -h.
    globals=$(awk '$1 == "NONE" && $2 ~ /^--/ {print $2}' <<<"$table")
    same_set "global options before a command" "$globals" "$(complete_words --)" || rc=1
    for c in $(ternctl_commands | sed 's/ /_/' | tr 'a-z-' 'A-Z_'); do
        words=$(cmd_words "$c")
        want=$(awk -v c="$c" '$1 == c {print $2}' <<<"$table"; echo "$globals")
        # shellcheck disable=SC2086
        same_set "options of $words" "$want" "$(complete_words $words --)" || rc=1
    done
    # Options after global options and their values.
    same_set "after --socket X --json" \
        "$(awk '$1 == "VM_MIGRATE" {print $2}' <<<"$table"; echo "$globals")" \
        "$(complete_words --socket /x.sock --json vm migrate web1 --)" || rc=1
    return $rc
}

test_names() {
    local rc=0
    setup_stub
    same_set "vm migrate NAME" "$(printf 'web1\ndb')" "$(complete_words vm migrate "")" || rc=1
    same_set "vm start w" "web1" "$(complete_words vm start w)" || rc=1
    same_set "--to HOST" "$(printf 'host-a\nhost-b')" "$(complete_words vm migrate web1 --to "")" || rc=1
    same_set "host evacuate HOST" "$(printf 'host-a\nhost-b')" "$(complete_words host evacuate "")" || rc=1
    # No names where none belong, and nothing when the agent is not there.
    same_set "vm define NAME" "" "$(complete_words vm define "")" || rc=1
    printf '#!/bin/sh\necho "ternctl: cannot reach ternd" >&2\nexit 3\n' >"$stub/ternctl"
    same_set "no agent" "" "$(complete_words vm stop "")" || rc=1
    return $rc
}

test_registered() {
    complete -p ternctl 2>/dev/null | grep -q -- '-F _ternctl' || { fail "complete -p ternctl: not registered"; return 1; }
}

# The comparison itself fails on a difference.
test_same_set_can_fail() {
    ! same_set "x" "$(printf 'a\nb')" "a" 2>/dev/null
}

# shellcheck source=/dev/null
source "$COMPLETION" || { echo "cannot source $COMPLETION"; exit 1; }
run_test test_commands
run_test test_options
run_test test_names
run_test test_registered
run_test test_same_set_can_fail
summary
