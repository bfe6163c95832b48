#!/bin/sh
# Prints Tern's version for the build (the Makefile's VERSION default):
#   a tagged tree:   git describe, without a leading "v" (0.2.0, 0.2.0-3-gabc1234-dirty)
#   untagged:        the VERSION file's, then "-g" and the commit (0.1.0-gc92ea72-dirty)
#   no git at all:   the VERSION file's (a source tarball)
# The Debian build passes the package version instead (debian/rules).
cd "$(dirname "$0")/.." || exit 1
base=$(cat VERSION 2>/dev/null) || { echo "version.sh: cannot read VERSION" >&2; exit 1; }
if d=$(git describe --tags --always --dirty 2>/dev/null) && [ -n "$d" ]; then
    case $d in
        v[0-9]*) echo "${d#v}" ;;
        [0-9]*.*) echo "$d" ;;
        *) echo "$base-g$d" ;;
    esac
else
    echo "$base"
fi
