#!/usr/bin/env bash
# Slow test: Debian's cloud kernel, booted by tern-vmm with
# --cmdline "console=ttyS0", prints its "Linux version" banner through our
# UART. The kernel package is fetched with `apt-get download` once and kept
# in $TERN_CACHE (default ~/.cache/tern).
set -u
build=${1:-build}
vmm="$build/tern-vmm"
cache=${TERN_CACHE:-$HOME/.cache/tern}/kernel
timeout_s=${TERN_BANNER_TIMEOUT:-240}
mkdir -p "$cache"

fail() {
    echo "linux-banner: $*" >&2
    echo "0 passed, 1 failed"
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
echo "1 passed, 0 failed"
