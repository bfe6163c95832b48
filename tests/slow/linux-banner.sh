#!/usr/bin/env bash
# Slow tests with Debian's cloud kernel, fetched with `apt-get download` once
# and kept in $TERN_CACHE (default ~/.cache/tern):
#  - the bzImage/ELF loaders' unit tests that read a real kernel
#    (test_boot_bzimage, test_boot_load with TERN_REAL_KERNEL; no KVM needed);
#  - booted by tern-vmm with --cmdline "console=ttyS0", it prints its
#    "Linux version" banner through our UART (needs KVM; skipped without).
set -u
build=${1:-build}
vmm="$build/tern-vmm"
cache=${TERN_CACHE:-$HOME/.cache/tern}/kernel
timeout_s=${TERN_BANNER_TIMEOUT:-240}
passed=0
failed=0
skipped=0
mkdir -p "$cache"

fail() {
    echo "linux-banner: $*" >&2
    echo "$passed passed, $((failed + 1)) failed, $skipped skipped"
    exit 1
}

kernel=$(ls "$cache"/boot/vmlinuz-* 2>/dev/null | head -n1)
if [ -z "$kernel" ]; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    [ -n "$pkg" ] || fail "cannot find the package behind linux-image-cloud-amd64 (apt-get update?)"
    (cd "$cache" && apt-get download "$pkg" >/dev/null 2>&1) || fail "apt-get download $pkg failed"
    dpkg-deb -x "$cache"/"$pkg"_*.deb "$cache" || fail "unpacking $pkg failed"
    rm -f "$cache"/*.deb
    kernel=$(ls "$cache"/boot/vmlinuz-* 2>/dev/null | head -n1)
    [ -n "$kernel" ] || fail "no vmlinuz in $pkg"
fi

for t in test_boot_bzimage test_boot_load; do
    if TERN_REAL_KERNEL=$kernel "$build/tests/unit/$t" 2>&1 | grep -q '^\[  FAILED  \]'; then
        echo "linux-banner: $t failed on $(basename "$kernel"):" >&2
        TERN_REAL_KERNEL=$kernel "$build/tests/unit/$t" >&2
        failed=$((failed + 1))
    else
        echo "linux-banner: $t passed on $(basename "$kernel")"
        passed=$((passed + 1))
    fi
done

if ! why=$("$(dirname "$0")/../../scripts/require-kvm.sh" "the boot test" 2>&1); then
    echo "skip: needs KVM; $why"
    echo "$passed passed, $failed failed, 1 skipped"
    [ "$failed" -eq 0 ]
    exit
fi

work=$(mktemp -d /tmp/tern-banner-XXXXXX)
serial="$work/serial.log"
"$vmm" run --kernel "$kernel" --mem 512M --cmdline "console=ttyS0" \
    --serial "file:$serial" >"$work/vmm.out" 2>"$work/vmm.err" </dev/null &
pid=$!
cleanup() {
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

start_ms=$(($(date +%s%N) / 1000000))
found=0
for ((i = 0; i < timeout_s * 10; i++)); do
    if grep -q "Linux version" "$serial" 2>/dev/null; then
        found=1
        break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))

if [ "$found" -ne 1 ]; then
    echo "--- serial ---" >&2; cat "$serial" >&2
    echo "--- tern-vmm stderr ---" >&2; cat "$work/vmm.err" >&2
    fail "no 'Linux version' banner from $(basename "$kernel") within ${timeout_s}s"
fi
echo "linux-banner: $(grep -m1 'Linux version' "$serial" | cut -c1-100)"
echo "linux-banner: banner after ${elapsed_ms} ms"
echo "$((passed + 1)) passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
