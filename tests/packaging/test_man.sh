#!/usr/bin/env bash
# The man pages (docs/man/*.scd, built into BUILD/man): each renders
# without a single groff or man warning, and each names everything the
# programs' own tables hold: ternctl's commands and options (cli/args.c),
# tern-vmm's run options and ctl commands (node-vmm/), ternd's options
# (agent/main.c) and every ternd.conf key (agent/config.c), which
# docs/ternd.md and the shipped dist/ternd.conf must list too.
source "$(dirname "$0")/lib.sh"
MAN=$TERN_BUILD/man

# The page rendered as text, hyphenation and adjustment off so that words
# are found whole.
page_text() {
    { printf '.nh\n.ad l\n'; cat "$MAN/$1"; } | groff -man -Tutf8 -P-cbou 2>/dev/null
}

# mentions PAGE WORD...: every WORD appears in PAGE's text.
mentions() {
    local page=$1 text w missing=()
    shift
    text=$(page_text "$page")
    for w in "$@"; do
        grep -qF -- "$w" <<<"$text" || missing+=("$w")
    done
    [ ${#missing[@]} -eq 0 ] || { fail "$page does not mention: ${missing[*]}"; return 1; }
}

test_pages_built() {
    local p
    for p in ternctl.1 tern-vmm.1 ternd.8 ternd.conf.5; do
        [ -s "$MAN/$p" ] || { fail "$MAN/$p missing: run make"; return 1; }
    done
}

test_no_warnings() {
    local p out rc=0
    for p in "$MAN"/*.[0-9]; do
        out=$(groff -man -ww -z "$p" 2>&1) || { fail "groff failed on $p"; rc=1; }
        [ -z "$out" ] || { fail "groff -man -ww on $p: $out"; rc=1; }
        out=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$p" 2>&1 >/dev/null)
        [ -z "$out" ] || { fail "man --warnings -l $p: $out"; rc=1; }
    done
    return $rc
}

test_ternctl_page() {
    local cmds opts
    mapfile -t cmds < <(ternctl_commands)
    mapfile -t opts < <(ternctl_options | awk '{print $2}' | sort -u)
    at_least 13 "ternctl commands" "${cmds[@]}" && at_least 20 "ternctl options" "${opts[@]}" &&
        mentions ternctl.1 "${cmds[@]}" "${opts[@]}"
}

test_tern_vmm_page() {
    local opts cmds mig
    mapfile -t opts < <(vmm_run_options)
    mapfile -t cmds < <(vmm_ctl_commands | sort -u)
    mapfile -t mig < <(vmm_migrate_options)
    at_least 13 "tern-vmm run options" "${opts[@]}" && at_least 9 "tern-vmm ctl commands" "${cmds[@]}" &&
        at_least 6 "ctl migrate options" "${mig[@]}" &&
        mentions tern-vmm.1 "${opts[@]}" "${cmds[@]}" "${mig[@]}" --version
}

test_ternd_page() {
    local opts
    mapfile -t opts < <(ternd_options)
    at_least 3 "ternd options" "${opts[@]}" && mentions ternd.8 "${opts[@]}" && mentions ternd.8 ternd.conf
}

# Every key: in ternd.conf(5), in docs/ternd.md's table and in the shipped
# example (as "key =", commented out or not).
test_conf_keys_everywhere() {
    local keys k rc=0
    mapfile -t keys < <(ternd_conf_keys)
    at_least 14 "ternd.conf keys" "${keys[@]}" || return 1
    mentions ternd.conf.5 "${keys[@]}" || rc=1
    for k in "${keys[@]}"; do
        grep -q "^| \`$k\` |" "$TERN_SOURCE/docs/ternd.md" || { fail "docs/ternd.md's table lacks $k"; rc=1; }
        grep -Eq "^#?$k = " "$TERN_SOURCE/dist/ternd.conf" || { fail "dist/ternd.conf lacks $k"; rc=1; }
    done
    return $rc
}

# ternd's exit statuses (its --help, agent/main.c) are each in ternd(8)'s
# EXIT STATUS and in docs/ternd.md's "Exit status:" paragraph. With an
# argument, the man page's source is read from that file instead.
ternd_exit_statuses() {
    grep -o 'Exit status: [^"]*' "$TERN_SOURCE/agent/main.c" | grep -oE '\b[0-9]+\b'
}
check_exit_statuses() {
    local scd=${1:-$TERN_SOURCE/docs/man/ternd.8.scd} codes c rc=0 man md
    mapfile -t codes < <(ternd_exit_statuses)
    at_least 4 "ternd exit statuses" "${codes[@]}" || return 1
    man=$(sed -n '/^# EXIT STATUS/,/^# /p' "$scd")
    md=$(sed -n '/^Exit status:/,/^$/p' "$TERN_SOURCE/docs/ternd.md")
    for c in "${codes[@]}"; do
        grep -qx "\*$c\*" <<<"$man" || { fail "ternd(8) EXIT STATUS lacks $c"; rc=1; }
        grep -qE "(^|[^0-9])$c([^0-9]|$)" <<<"$md" || { fail "docs/ternd.md's exit statuses lack $c"; rc=1; }
    done
    return $rc
}
test_ternd_exit_statuses() {
    check_exit_statuses
}
test_exit_statuses_can_fail() {
    local tmp
    tmp=$(mktemp)
    grep -vx '\*78\*' "$TERN_SOURCE/docs/man/ternd.8.scd" >"$tmp"
    ! check_exit_statuses "$tmp" 2>/dev/null
    local rc=$?
    rm -f "$tmp"
    return $rc
}

# A word that is not there is reported (the check itself can fail).
test_mentions_can_fail() {
    ! mentions ternctl.1 --no-such-option-anywhere 2>/dev/null
}

run_test test_pages_built
run_test test_no_warnings
run_test test_ternctl_page
run_test test_tern_vmm_page
run_test test_ternd_page
run_test test_conf_keys_everywhere
run_test test_mentions_can_fail
run_test test_ternd_exit_statuses
run_test test_exit_statuses_can_fail
summary
