#!/usr/bin/env bash
# Runs the tests of the given kinds (unit, integration, packaging) and
# prints one closing line: "N passed, N failed". A kind's tests are the
# programs BUILD/tests/KIND/test_* (cmocka) and the scripts
# tests/KIND/test_*.sh (which print cmocka's summary lines too, see
# tests/packaging/lib.sh); their summary lines are counted.
set -u
build=${1:?usage: run-tests.sh BUILD_DIR KIND...}
shift
export TERN_BUILD=$(cd "$build" && pwd)
export TERN_SOURCE=$(cd "$(dirname "$0")/.." && pwd)

passed=0
failed=0
failed_bins=()
for kind in "$@"; do
    for bin in "$build/tests/$kind"/test_* "$TERN_SOURCE/tests/$kind"/test_*.sh; do
        [ -x "$bin" ] && [ -f "$bin" ] || continue
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
