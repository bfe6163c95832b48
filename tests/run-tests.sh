#!/usr/bin/env bash
# Runs the tests of the given kinds (unit, integration, packaging, ...)
# and prints one closing line: "N passed, N failed, N skipped". A kind's
# tests are the programs BUILD/tests/KIND/test_* (cmocka) and the scripts
# tests/KIND/test_*.sh (which print cmocka's summary lines too, see
# tests/packaging/lib.sh); their summary lines are counted. Tests that need
# a VM skip on machines without a usable /dev/kvm (tests/support/kvm.h);
# when any did, the line above the closing one says why and how many.
# TERN_REQUIRE_KVM=1 makes a missing KVM a failure instead.
set -u
build=${1:?usage: run-tests.sh BUILD_DIR KIND...}
shift
export TERN_BUILD=$(cd "$build" && pwd)
export TERN_SOURCE=$(cd "$(dirname "$0")/.." && pwd)

sum_of() { # sed pattern capturing a count, log file
    sed -n "$1" "$2" | awk '{s+=$1} END {print s+0}'
}

passed=0
failed=0
skipped=0
kvm_skipped=0
kvm_reason=""
failed_bins=()
for kind in "$@"; do
    for bin in "$build/tests/$kind"/test_* "$TERN_SOURCE/tests/$kind"/test_*.sh; do
        [ -x "$bin" ] && [ -f "$bin" ] || continue
        log=$(mktemp)
        echo "=== $kind/$(basename "$bin")"
        "$bin" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        p=$(sum_of 's/^\[  PASSED  \] \([0-9]\+\) test(s)\./\1/p' "$log")
        f=$(sum_of 's/^\[  FAILED  \] \([0-9]\+\) test(s), listed below:/\1/p' "$log")
        s=$(sum_of 's/^\[  SKIPPED \] \([0-9]\+\) test(s), listed below:/\1/p' "$log")
        k=$(grep -c '^skip: needs KVM; ' "$log")
        r=$(sed -n 's/^skip\( part\)\?: needs KVM; \(.*; \)\?KVM: not available (\(.*\))$/\3/p' "$log" | tail -n1)
        rm -f "$log"
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            # Crashed or exited before cmocka could report: count it as one failure.
            f=1
        fi
        passed=$((passed + p))
        failed=$((failed + f))
        skipped=$((skipped + s))
        kvm_skipped=$((kvm_skipped + k))
        [ -n "$r" ] && kvm_reason=$r
        [ "$f" -gt 0 ] && failed_bins+=("$kind/$(basename "$bin")")
    done
done

if [ ${#failed_bins[@]} -gt 0 ]; then
    echo "failing: ${failed_bins[*]}"
fi
if [ -n "$kvm_reason" ]; then
    echo "KVM: not available ($kvm_reason): $kvm_skipped tests skipped (they need a VM; TERN_REQUIRE_KVM=1 makes this a failure)"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
