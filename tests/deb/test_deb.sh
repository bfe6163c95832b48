#!/usr/bin/env bash
# `make test-deb`: the package `make deb` built (build-deb/): lintian has no
# error, the contents and metadata are right, and installed on this system
# (apt-get, then purged, also on failure) it works: ternctl --help, the
# three --version, man pages, the unit verifies and is enabled, ternd finds
# the installed tern-vmm. Needs root; refuses to touch a system where a tern
# package is already installed.
source "$(dirname "$0")/../packaging/lib.sh"
OUT=${TERN_DEB_DIR:-$TERN_SOURCE/build-deb}
version=$(dpkg-parsechangelog -l "$TERN_SOURCE/debian/changelog" -S Version)
deb=$OUT/tern_${version}_amd64.deb
scratch=$(mktemp -d /tmp/tern-test-deb-XXXXXX)
installed_by_us=0
cleanup() {
    if [ $installed_by_us = 1 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq tern >/dev/null 2>&1 ||
            echo "test_deb: could not purge tern: run 'apt-get purge tern'" >&2
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

[ -f "$deb" ] || { echo "test_deb: no $deb: run make deb"; echo "0 passed, 1 failed"; exit 1; }
# Known to dpkg in any state but "not-installed" (installed, or purged
# config files left behind): someone else's; leave it alone.
state=$(dpkg-query -W -f='${Status}' tern 2>/dev/null)
if [ -n "$state" ] && [[ $state != *not-installed ]]; then
    echo "test_deb: a tern package is installed here already; not touching it (apt-get purge tern first)"
    echo "0 passed, 1 failed"
    exit 1
fi

test_lintian_no_errors() {
    [ -f "$OUT/lintian.txt" ] || { fail "no $OUT/lintian.txt"; return 1; }
    ! grep -q '^E: ' "$OUT/lintian.txt" || { fail "lintian errors: $(grep '^E: ' "$OUT/lintian.txt")"; return 1; }
}

test_metadata() {
    local f rc=0 depends conffiles
    depends=$(dpkg-deb -f "$deb" Depends)
    for f in corosync libcpg4 libvotequorum8 libcmap4 liburing2 libjansson4 liblz4-1 libssl3; do
        grep -q "\b$f\b" <<<"$depends" || { fail "Depends lacks $f: $depends"; rc=1; }
    done
    conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
    [ "$conffiles" = /etc/tern/ternd.conf ] || { fail "conffiles: '$conffiles'"; rc=1; }
    for f in ./usr/sbin/ternd ./usr/bin/ternctl ./usr/libexec/tern/tern-vmm ./lib/systemd/system/ternd.service \
        ./usr/share/man/man1/ternctl.1.gz ./usr/share/man/man1/tern-vmm.1.gz ./usr/share/man/man8/ternd.8.gz \
        ./usr/share/man/man5/ternd.conf.5.gz ./usr/share/bash-completion/completions/ternctl ./etc/tern/ternd.conf; do
        dpkg-deb -c "$deb" | awk '{print $6}' | grep -qx "$f" || { fail "not in the package: $f"; rc=1; }
    done
    return $rc
}

test_install() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$deb" >"$scratch/apt.log" 2>&1 ||
        { fail "apt-get install $deb: $(tail -5 "$scratch/apt.log")"; return 1; }
}

test_programs_run() {
    local out rc=0
    out=$(ternctl --help) && grep -q "^usage: ternctl" <<<"$out" || { fail "ternctl --help: $out"; rc=1; }
    [ "$(ternd --version)" = "ternd $version" ] || { fail "ternd --version: $(ternd --version 2>&1)"; rc=1; }
    [ "$(ternctl --version)" = "ternctl $version" ] || { fail "ternctl --version: $(ternctl --version 2>&1)"; rc=1; }
    [ "$(/usr/libexec/tern/tern-vmm --version)" = "tern-vmm $version" ] ||
        { fail "tern-vmm --version: $(/usr/libexec/tern/tern-vmm --version 2>&1)"; rc=1; }
    [ "$(command -v ternd)" = /usr/sbin/ternd ] || { fail "ternd is $(command -v ternd)"; rc=1; }
    return $rc
}

test_man_pages() {
    local p rc=0
    for p in ternctl.1 tern-vmm.1 ternd.8 ternd.conf.5; do
        [ "$(man -w "${p%.*}" "${p##*.}" 2>/dev/null)" = "/usr/share/man/man${p##*.}/$p.gz" ] 2>/dev/null ||
            [ "$(man -w "${p##*.}" "${p%.*}" 2>/dev/null)" = "/usr/share/man/man${p##*.}/$p.gz" ] ||
            { fail "man does not find $p"; rc=1; }
    done
    return $rc
}

test_unit() {
    local out
    out=$(cd "$scratch" && systemd-analyze verify /lib/systemd/system/ternd.service 2>&1) &&
        [ -z "$out" ] || { fail "systemd-analyze verify: $out"; return 1; }
    # dh_installsystemd enabled it the Debian way.
    [ "$(readlink /etc/systemd/system/multi-user.target.wants/ternd.service)" = /lib/systemd/system/ternd.service ] ||
        { fail "ternd.service is not enabled (no multi-user.target.wants link)"; return 1; }
}

# The installed ternd, with a configuration that leaves vmm_path out, gets
# past its configuration (to corosync): it found /usr/libexec/tern/tern-vmm.
test_default_vmm_path() {
    local d=$scratch/conf out rc
    mkdir -p "$d/tls" "$d/run" "$d/state"
    touch "$d/tls/ca.pem" "$d/tls/cert.pem" "$d/tls/key.pem"
    printf 'tls_dir = %s\nrun_dir = %s\nstate_dir = %s\ncpg_group = tern-t%s\n' \
        "$d/tls" "$d/run" "$d/state" $$ >"$d/ternd.conf"
    out=$(timeout 10 ternd --config "$d/ternd.conf" 2>&1)
    rc=$?
    ! grep -q vmm_path <<<"$out" && { grep -q corosync <<<"$out" || [ $rc -eq 124 ]; } ||
        { fail "ternd with the default vmm_path (exit $rc): $out"; return 1; }
}

test_purge() {
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq tern >"$scratch/purge.log" 2>&1 ||
        { fail "apt-get purge tern: $(tail -5 "$scratch/purge.log")"; return 1; }
    installed_by_us=0
    local f rc=0
    for f in /usr/sbin/ternd /usr/libexec/tern /etc/tern/ternd.conf /lib/systemd/system/ternd.service \
        /etc/systemd/system/multi-user.target.wants/ternd.service; do
        [ ! -e "$f" ] || { fail "left after purge: $f"; rc=1; }
    done
    return $rc
}

run_test test_lintian_no_errors
run_test test_metadata
installed_by_us=1
run_test test_install
run_test test_programs_run
run_test test_man_pages
run_test test_unit
run_test test_default_vmm_path
run_test test_purge
# test_purge ran in a subshell: the exit trap purges only if it failed.
dpkg-query -W -f='${Status}' tern 2>/dev/null | grep -q "ok installed" || installed_by_us=0
summary
