#!/usr/bin/env bash
# scripts/demo.sh's ends, without KVM or namespaces: stand-ins for
# tern-testhosts and ternctl (in a fake build directory) record what the
# demo asks of them. A demo that fails is torn down, unless KEEP=1: then
# its cluster and logs stay and the message says where they are. One that
# succeeds is torn down, or with KEEP=1 left running.
source "$(dirname "$0")/lib.sh"
DEMO=$TERN_SOURCE/scripts/demo.sh

# make_fake_build DIR: DIR/tern-testhosts and DIR/ternctl. The stand-in
# tern-testhosts logs its calls to $STUB_CALLS; "up" makes the hosts'
# directories with a ternd log each, "down" removes the demo directory.
# The stand-in ternctl fails `cluster init-ca` when STUB_FAIL=1, and
# answers `--json status` with a synced, quorate cluster of three.
make_fake_build() {
    local b=$1
    mkdir -p "$b"
    cat >"$b/tern-testhosts" <<'EOF'
#!/bin/sh
echo "$*" >>"$STUB_CALLS"
case $1 in
up)
    for i in 1 2 3; do
        mkdir -p "$2/h$i/log"
        echo "ternd: 00:00:00.000 h$i (node $i) up" >"$2/h$i/ternd.log"
    done
    mkdir -p "$2/shared"
    echo '{}' >"$2/hosts.json"
    ;;
down) rm -rf "$2" ;;
esac
exit 0
EOF
    cat >"$b/ternctl" <<'EOF'
#!/bin/sh
case " $* " in
*" init-ca "*)
    if [ "${STUB_FAIL:-0}" = 1 ]; then
        echo "ternctl: simulated failure" >&2
        exit 1
    fi
    mkdir -p "$(eval echo "\${$#}")" 2>/dev/null
    ;;
*" --json status "*)
    echo '{"cluster":{"synced":true,"quorate":true},"hosts":[{"online":true},{"online":true},{"online":true}]}'
    ;;
esac
exit 0
EOF
    chmod +x "$b/tern-testhosts" "$b/ternctl"
}

# run_demo KEEP FAIL: runs the demo in a fresh directory; sets DEMO_DIR,
# CALLS, OUT (stdout and stderr) and RC.
run_demo() {
    local keep=$1 fail=$2 tmp
    tmp=$(mktemp -d /tmp/tern-test-demo-XXXXXX)
    # Each test runs in a subshell (run_test): removed when it ends.
    TMPDIRS+=("$tmp")
    trap 'rm -rf "${TMPDIRS[@]}"' EXIT
    make_fake_build "$tmp/build"
    DEMO_DIR=$tmp/demo
    CALLS=$tmp/calls
    : >"$CALLS"
    OUT=$(KEEP=$keep STUB_FAIL=$fail STUB_CALLS=$CALLS TERN_DEMO_DIR=$DEMO_DIR \
        "$DEMO" "$tmp/build" 2>&1)
    RC=$?
}

TMPDIRS=()

test_failure_kept_with_keep() {
    run_demo 1 1
    [ "$RC" -ne 0 ] || { fail "the demo did not fail (status $RC)"; return 1; }
    grep -qx "up $DEMO_DIR 3" "$CALLS" || { fail "no hosts were made: $(cat "$CALLS")"; return 1; }
    ! grep -q "^down" "$CALLS" || { fail "KEEP=1, but the demo was torn down: $OUT"; return 1; }
    [ -f "$DEMO_DIR/h1/ternd.log" ] || { fail "the logs are gone"; return 1; }
    grep -qF "kept as it is (KEEP=1): the cluster in $DEMO_DIR" <<<"$OUT" &&
        grep -qF "ternd logs $DEMO_DIR/h*/ternd.log" <<<"$OUT" &&
        grep -qF "remove it with: TERN_DEMO_DIR=$DEMO_DIR make demo-down" <<<"$OUT" ||
        { fail "the message does not say where things are: $OUT"; return 1; }
    ! grep -q "tearing down" <<<"$OUT" || { fail "says it tears down: $OUT"; return 1; }
}

test_failure_torn_down_without_keep() {
    run_demo 0 1
    [ "$RC" -ne 0 ] || { fail "the demo did not fail (status $RC)"; return 1; }
    grep -qx "down $DEMO_DIR" "$CALLS" || { fail "not torn down: $(cat "$CALLS")"; return 1; }
    [ ! -e "$DEMO_DIR" ] || { fail "$DEMO_DIR is still there"; return 1; }
    grep -qF "run it with KEEP=1 to keep the cluster" <<<"$OUT" &&
        grep -qF "ternd: 00:00:00.000 h1 (node 1) up" <<<"$OUT" ||
        { fail "no logs or no hint: $OUT"; return 1; }
}

test_success_left_running_with_keep() {
    run_demo 1 0
    [ "$RC" -eq 0 ] || { fail "the demo with stand-ins failed (status $RC): $OUT"; return 1; }
    ! grep -q "^down" "$CALLS" || { fail "KEEP=1, but the demo was torn down"; return 1; }
    grep -qF "demo: left running (KEEP=1)" <<<"$OUT" || { fail "no word that it runs: $OUT"; return 1; }
    # `make demo-down`'s way removes it.
    STUB_CALLS=$CALLS TERN_DEMO_DIR=$DEMO_DIR "$DEMO" "$(dirname "$CALLS")/build" down >/dev/null &&
        grep -qx "down $DEMO_DIR" "$CALLS" || { fail "demo.sh down did not remove it"; return 1; }
}

run_test test_failure_kept_with_keep
run_test test_failure_torn_down_without_keep
run_test test_success_left_running_with_keep
summary
