#!/usr/bin/env bash
# The Tern demo cluster (README's main command, `make demo`): three test
# hosts in network namespaces on one machine, each with its own corosync and
# ternd; a test-guest VM with a dirtying workload and a disk on shared
# storage is started, live-migrated across the hosts, a host is evacuated,
# and `ternctl status` is printed. Everything is removed at the end, also
# when the demo fails, unless KEEP=1: then the cluster, its processes and
# its logs stay, succeeded or failed, and `make demo-down` removes them.
# tests/packaging/test_demo.sh checks both ends with stand-in programs.
#
# usage: scripts/demo.sh BUILD_DIR [up|down]
# TERN_DEMO_DIR: where the cluster lives (/tmp/tern-demo).
set -euo pipefail

BUILD=${1:-build}
ACTION=${2:-up}
DIR=${TERN_DEMO_DIR:-/tmp/tern-demo}
HOSTS=3
TESTHOSTS="$BUILD/tern-testhosts"
TERNCTL="$BUILD/ternctl"
START=$(date +%s.%N)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

down() {
    if [ -d "$DIR" ]; then
        "$TESTHOSTS" down "$DIR" || true
    fi
}

if [ "$ACTION" = down ]; then
    down
    echo "demo cluster removed"
    exit 0
fi

if [ -e "$DIR/hosts.json" ]; then
    echo "demo: a demo cluster already exists in $DIR; removing it first"
    down
fi

# The last lines of each host's ternd log, on stderr.
show_logs() {
    local h
    for h in $(seq 1 $HOSTS); do
        if [ -f "$DIR/h$h/ternd.log" ]; then
            echo "--- h$h/ternd.log (last lines)" >&2
            tail -n 15 "$DIR/h$h/ternd.log" >&2
        fi
    done
}

# How to remove a kept cluster.
down_hint() {
    if [ "$DIR" = /tmp/tern-demo ]; then
        echo "make demo-down"
    else
        echo "TERN_DEMO_DIR=$DIR make demo-down"
    fi
}

# The end, however the demo got there (status rc): with KEEP=1 everything
# stays, and the message says where; otherwise it is torn down.
finish() {
    local rc=$1
    if [ "${KEEP:-0}" = 1 ]; then
        if [ "$rc" -eq 0 ]; then
            echo
            echo "demo: left running (KEEP=1). Try:"
            echo "  $TERNCTL --socket $DIR/h1/run/tern/ternd.sock status"
        else
            show_logs
            echo "demo: failed (status $rc); kept as it is (KEEP=1): the cluster in $DIR," >&2
            echo "  ternd logs $DIR/h*/ternd.log, corosync logs $DIR/h*/log/," >&2
            echo "  VM logs $DIR/h*/run/tern/vms/*/vmm.log;" >&2
            echo "  ternctl: $TERNCTL --socket $DIR/h1/run/tern/ternd.sock status" >&2
        fi
        echo "remove it with: $(down_hint)"
        return
    fi
    if [ "$rc" -ne 0 ]; then
        show_logs
        echo "demo: failed (status $rc); the logs above are all that stays: run it with KEEP=1" \
            "to keep the cluster and its logs for a look" >&2
    fi
    say "tearing down"
    down
}

cleanup() {
    local rc=$?
    trap - EXIT
    finish $rc
    exit $rc
}
trap cleanup EXIT

say "creating $HOSTS test hosts with corosync in network namespaces ($DIR)"
"$TESTHOSTS" up "$DIR" "$HOSTS"

say "certificates for mutual TLS (ternctl cluster init-ca / issue-cert)"
"$TERNCTL" cluster init-ca "$DIR/ca" >/dev/null
for i in $(seq 1 $HOSTS); do
    "$TERNCTL" cluster issue-cert "$DIR/ca" "h$i" >/dev/null
done
ls "$DIR/ca"

say "starting ternd on every host"
for i in $(seq 1 $HOSTS); do
    cat >"$DIR/h$i/ternd.conf" <<CONF
# ternd on demo host h$i (migration_addr: corosync's address for this node)
host = h$i
run_dir = $DIR/h$i/run/tern
state_dir = $DIR/h$i/state
shared_dir = $DIR/shared
tls_dir = $DIR/ca/h$i
vmm_path = $(realpath "$BUILD/tern-vmm")
mem = 2G
vcpus = 4
CONF
    "$TESTHOSTS" spawn "$DIR" "$i" "$DIR/h$i/ternd.log" -- "$(realpath "$BUILD/ternd")" --config "$DIR/h$i/ternd.conf" >/dev/null
done

ctl() { local h=$1; shift; "$TERNCTL" --socket "$DIR/h$h/run/tern/ternd.sock" "$@"; }

for _ in $(seq 1 100); do
    if ctl 1 --json status 2>/dev/null | python3 -c '
import json,sys
s=json.load(sys.stdin)
sys.exit(0 if s["cluster"]["synced"] and s["cluster"]["quorate"] and sum(h["online"] for h in s["hosts"])==3 else 1)' 2>/dev/null; then
        break
    fi
    sleep 0.2
done
ctl 1 status

say "defining a VM (test guest: 256 MiB filled, dirtying 25 MB/s, heartbeats, disk journal on shared storage)"
truncate -s 64M "$DIR/shared/demo1.img"
ctl 2 vm define demo1 --kernel "$BUILD/testguest.elf" --mem 512M --vcpus 1 \
    --disk "$DIR/shared/demo1.img" --cmdline "fill=256 dirty=25 hb=10000 check=2000 disk=1"
ctl 3 vm start demo1 --host h1
ctl 1 vm list
sleep 2 # let the guest fill its memory first, so there is something to move

say "live-migrating demo1: h1 -> h2 (asked at h3)"
ctl 3 vm migrate demo1 --to h2
say "live-migrating demo1: h2 -> h3 (asked at h1)"
ctl 1 vm migrate demo1 --to h3

say "two more VMs on h3, then evacuating h3"
for v in demo2 demo3; do
    ctl 1 vm define $v --kernel "$BUILD/testguest.elf" --mem 256M --vcpus 1 --cmdline "fill=64 dirty=5 hb=10000"
    ctl 1 vm start $v --host h3
done
ctl 2 host evacuate h3
ctl 2 host list
ctl 2 host activate h3

say "ternctl status"
ctl 1 status
ctl 1 vm show demo1

END=$(date +%s.%N)
say "demo finished in $(python3 -c "print(f'{$END-$START:.1f}')") s"
