#!/usr/bin/env bash
# `make deb`: builds the Debian package tern (debian/) from this tree as it
# is (uncommitted changes included), in a copy under /tmp, since
# dpkg-buildpackage writes its results next to the source directory. The
# .deb, .changes and .buildinfo land in OUT (default build-deb/), with
# lintian's report in OUT/lintian.txt. Installs what the build needs first.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/build-deb}

"$src/scripts/install-deps.sh" deb
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
work=$(mktemp -d /tmp/tern-deb-XXXXXX)
trap 'rm -rf "$work"' EXIT
tree=$work/tern-$version
mkdir -p "$tree"
tar -C "$src" -c --exclude-vcs --exclude=./build --exclude='./build-*' \
    --exclude=./debian/build --exclude=./debian/tern . | tar -C "$tree" -x

log=$work/build.log
echo "build-deb: building tern $version (log: $out/build.log)"
mkdir -p "$out"
rm -f "$out"/tern_* "$out"/tern-dbgsym_*
status=0
(cd "$tree" && dpkg-checkbuilddeps && dpkg-buildpackage -us -uc -b) >"$log" 2>&1 || status=$?
cp "$log" "$out/build.log"
if [ $status -ne 0 ]; then
    tail -30 "$log" >&2
    echo "build-deb: dpkg-buildpackage failed (exit $status); the whole log is $out/build.log" >&2
    exit 1
fi
mv "$work"/*.deb "$work"/*.changes "$work"/*.buildinfo "$out/"
changes=$(ls "$out"/tern_"$version"_*.changes)
# lintian's exit status is non-zero on errors; keep its report either way.
lintian_status=0
lintian --info "$changes" >"$out/lintian.txt" 2>&1 || lintian_status=$?
echo "build-deb: $(cd "$out" && ls ./*.deb | tr '\n' ' ')in $out"
if [ -s "$out/lintian.txt" ]; then
    echo "build-deb: lintian says:"
    sed 's/^/  /' "$out/lintian.txt"
else
    echo "build-deb: lintian: clean"
fi
if grep -q '^E: ' "$out/lintian.txt" || [ $lintian_status -ne 0 ]; then
    echo "build-deb: lintian found errors (exit $lintian_status)" >&2
    exit 1
fi
