#!/usr/bin/env bash
# Runs the test binaries of the given kinds (unit, integration) from BUILD
# and prints one closing line: "N passed, N failed".  Each binary is a
# cmocka program; its own summary lines are counted.
set -u
build=${1:?usage: run-tests.sh BUILD_DIR KIND...}
shift
export TERN_BUILD=$(cd "$build" && pwd)
export TERN_SOURCE=$(cd "$(dirname "$0")/.." && pwd)

passed=0
failed=0
failed_bins=()
for kind in "$@"; do
    for bin in "$build/tests/$kind"/test_*; do
        [ -x "$bin" ] || continue
        log=$(mktemp)
        echo "=== $kind/$(basename "$bin")"
        "$bin" 2>&1 | tee "$log"
        rc=${PIPESTATUS[0]}
        p=$(sed -n 's/^\[  PASSED  \] \([0-9]\+\) test(s)\./\1/p' "$log" | awk '{s+=$1} END {print s+0}')
        f=$(sed -n 's/^\[  FAILED  \] \([0-9]\+\) test(s), listed below:/\1/p' "$log" | awk '{s+=$1} END {print s+0}')
        rm -f "$log"
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
            # Crashed or exited before cmocka could report: count it as one failure.
            f=1
        fi
        passed=$((passed + p))
        failed=$((failed + f))
        [ "$f" -gt 0 ] && failed_bins+=("$kind/$(basename "$bin")")
    done
done

if [ ${#failed_bins[@]} -gt 0 ]; then
    echo "failing: ${failed_bins[*]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
