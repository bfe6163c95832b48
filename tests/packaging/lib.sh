# Sourced by tests/packaging/test_*.sh: each test is a shell function that
# returns non-zero (after saying why on stderr) when it fails. run_test runs
# one in a subshell; summary prints cmocka's closing lines, which
# tests/run-tests.sh counts, and exits 1 if any failed.
# TERN_SOURCE and TERN_BUILD come from run-tests.sh (default: this tree, build/).
TERN_SOURCE=${TERN_SOURCE:-$(cd "$(dirname "$0")/../.." && pwd)}
TERN_BUILD=${TERN_BUILD:-$TERN_SOURCE/build}
_passed=0
_failed=()

# run_test FUNCTION
run_test() {
    echo "[ RUN      ] $1"
    if ( "$1" ); then
        echo "[       OK ] $1"
        _passed=$((_passed + 1))
    else
        echo "[  FAILED  ] $1"
        _failed+=("$1")
    fi
}

# fail MESSAGE...: says why and returns 1 (use as `... || fail "..."`, or
# `return $(fail ...)` is not needed: `fail ...; return 1`).
fail() {
    echo "    $*" >&2
    return 1
}

summary() {
    echo "[==========] $((_passed + ${#_failed[@]})) test(s) run."
    echo "[  PASSED  ] $_passed test(s)."
    if [ ${#_failed[@]} -gt 0 ]; then
        echo "[  FAILED  ] ${#_failed[@]} test(s), listed below:"
        for t in "${_failed[@]}"; do echo "[  FAILED  ] $t"; done
        exit 1
    fi
    exit 0
}

# The lists the programs' own tables hold (the sources are the truth):
# ternctl's commands ("status", "vm define", ...) from cli/args.c's commands[].
ternctl_commands() {
    sed -n 's/^ *{CLI_CMD_[A-Z_]*, *\(NULL\|"\([a-z-]*\)"\), *"\([a-z-]*\)",.*/\2 \3/p' \
        "$TERN_SOURCE/cli/args.c" | sed 's/^ //'
}
# ternctl's options: "CMD_ENUM --opt" from cli/args.c's options[].
ternctl_options() {
    sed -n 's/^ *{CLI_CMD_\([A-Z_]*\), *"\(-[a-z-]*\)",.*/\1 \2/p' "$TERN_SOURCE/cli/args.c"
}
# tern-vmm run's options from node-vmm/options.c.
vmm_run_options() {
    grep -o 'strcmp(opt, "--[a-z-]*")' "$TERN_SOURCE/node-vmm/options.c" |
        sed 's/.*"\(--[a-z-]*\)".*/\1/' | sort -u
}
# tern-vmm ctl's commands: the known[] list, save and migrate (node-vmm/main.c).
vmm_ctl_commands() {
    sed -n '/static const char \*const known\[\]/,/};/p' "$TERN_SOURCE/node-vmm/main.c" |
        grep -o '"[a-z-]*"' | tr -d '"'
    grep -o 'strcmp(cmd, "[a-z-]*")' "$TERN_SOURCE/node-vmm/main.c" | sed 's/.*"\([a-z-]*\)".*/\1/'
}
# tern-vmm ctl migrate's options (node-vmm/main.c).
vmm_migrate_options() {
    grep -o 'strcmp(\(o\|argv\[i\]\), "--[a-z-]*")' "$TERN_SOURCE/node-vmm/main.c" |
        sed 's/.*"\(--[a-z-]*\)".*/\1/' | sort -u
}
# ternd.conf keys from agent/config.c.
ternd_conf_keys() {
    grep -o 'strcmp(key, "[a-z_]*")' "$TERN_SOURCE/agent/config.c" | sed 's/.*"\([a-z_]*\)".*/\1/'
}
# ternd's long options from agent/main.c's getopt table.
ternd_options() {
    grep -o '{"[a-z-]*", *[a-z_]*_argument' "$TERN_SOURCE/agent/main.c" | sed 's/{"\([a-z-]*\)".*/--\1/'
}

# at_least N WHAT LIST...: a list extracted from the sources must not come
# out short (a changed table layout would otherwise make a test vacuous).
at_least() {
    local n=$1 what=$2
    shift 2
    [ $# -ge "$n" ] || { fail "found only $# $what in the sources (expected at least $n): has the table's layout changed? fix tests/packaging/lib.sh"; return 1; }
}
