#!/usr/bin/env bash
# ternd.service under a real systemd, with the package `make deb` built:
# boots systemd as PID 1 of a container (systemd-nspawn, private network) on
# a throwaway overlay of this machine's root, installs the .deb there and
# checks what the unit promises (docs/ternd.md, "Under systemd"): no start
# without a certificate; Type=notify (ternctl answers once `systemctl start`
# returns); ternd in ternd.service/agent and a VM in
# ternd.service/vms/vm-NAME; the VM survives `systemctl restart`, `stop` +
# `start` and a SIGKILL of ternd (Restart=on-failure) and is re-attached
# each time. There is no KVM here, so the VM's process is a stand-in that
# answers the control socket (tests/deb/fakevmm.c). Everything lives in a
# tmpfs overlay and a container that the test stops and unmounts, also on
# failure.
source "$(dirname "$0")/../packaging/lib.sh"
OUT=${TERN_DEB_DIR:-$TERN_SOURCE/build-deb}
version=$(dpkg-parsechangelog -l "$TERN_SOURCE/debian/changelog" -S Version)
deb=$OUT/tern_${version}_amd64.deb
name=tern-t$$
work=
nspawn_pid=
leader=

cleanup() {
    if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
        kill -TERM "$nspawn_pid" # nspawn shuts the container down
        for _ in $(seq 150); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn_pid" 2>/dev/null
        wait "$nspawn_pid" 2>/dev/null
    fi
    if [ -n "$work" ]; then
        mountpoint -q "$work/root" && umount "$work/root"
        mountpoint -q "$work/t" && umount "$work/t"
        rm -rf "$work"
    fi
}
trap cleanup EXIT

give_up() {
    echo "test_systemd: $*"
    echo "0 passed, 1 failed"
    exit 1
}

[ "$(id -u)" = 0 ] || give_up "needs root"
[ -f "$deb" ] || give_up "no $deb: run make deb"
command -v systemd-nspawn >/dev/null || give_up "no systemd-nspawn: apt-get install systemd-container (scripts/install-deps.sh deb)"
grep -qw overlay /proc/filesystems || give_up "the kernel has no overlay file system"

# in_ct CMD...: runs a shell command inside the container.
in_ct() {
    nsenter -t "$leader" -a sh -c "$1"
}

boot() {
    work=$(mktemp -d /tmp/tern-systemd-XXXXXX)
    mkdir -p "$work/t" "$work/root"
    mount -t tmpfs -o size=2g tmpfs "$work/t" && mkdir "$work/t/upper" "$work/t/work" &&
        mount -t overlay overlay -o "lowerdir=/,upperdir=$work/t/upper,workdir=$work/t/work" "$work/root" ||
        give_up "cannot mount the overlay root in $work"
    cc -std=gnu11 -O2 -Wall -Wextra -Werror -o "$work/root/root/fakevmm" "$TERN_SOURCE/tests/deb/fakevmm.c" ||
        give_up "cannot build tests/deb/fakevmm.c"
    cp "$deb" "$work/root/root/tern.deb"
    # A single-node corosync of its own on the container's loopback.
    cat >"$work/root/etc/corosync/corosync.conf" <<CONF
totem {
    version: 2
    cluster_name: $name
    transport: knet
    crypto_cipher: none
    crypto_hash: none
    token: 300
    token_coefficient: 0
}
logging {
    to_syslog: yes
}
quorum {
    provider: corosync_votequorum
}
nodelist {
    node {
        name: node1
        nodeid: 1
        ring0_addr: 127.0.0.1
    }
}
CONF
    rm -f "$work/root/usr/sbin/policy-rc.d"
    # No systemd on the host side to allocate a scope: --keep-unit,
    # --register=no; a cgroup v2 tree inside, as on a current host.
    SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn -q -D "$work/root" -b -M "$name" \
        --register=no --keep-unit --private-network --console=passive >"$work/nspawn.log" 2>&1 &
    nspawn_pid=$!
    # The container's PID 1 is nspawn's child once it runs systemd (an
    # intermediate child comes and goes first).
    local i state
    for i in $(seq 100); do
        leader=$(awk '{print $1}' "/proc/$nspawn_pid/task/$nspawn_pid/children" 2>/dev/null)
        [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ] && break
        leader=
        sleep 0.1
    done
    [ -n "$leader" ] || give_up "systemd-nspawn did not start systemd in a container: $(cat "$work/nspawn.log")"
    for i in $(seq 300); do
        state=$(in_ct "systemctl is-system-running" 2>"$work/state.err")
        case $state in running | degraded) break ;; esac
        sleep 0.2
    done
    case $state in
        running | degraded) ;;
        *) give_up "systemd in the container did not come up (state '$state'): $(cat "$work/state.err"; tail -5 "$work/nspawn.log")" ;;
    esac
    echo "    systemd up in container $name (PID 1 is $leader here; state $state)"
}

prop() { in_ct "systemctl show -P $1 ternd"; }
vm_pid() { in_ct "cut -d' ' -f1 /run/tern/vms/v1/pid 2>/dev/null"; }
cg=/sys/fs/cgroup/system.slice/ternd.service

test_install_no_start_without_cert() {
    in_ct "dpkg -i /root/tern.deb >/root/dpkg.log 2>&1" || { fail "dpkg -i: $(in_ct 'tail -5 /root/dpkg.log')"; return 1; }
    [ "$(in_ct 'systemctl is-enabled ternd')" = enabled ] || { fail "ternd.service not enabled"; return 1; }
    in_ct "systemctl start ternd" || { fail "systemctl start ternd failed"; return 1; }
    [ "$(prop ActiveState)" = inactive ] && [ "$(prop ConditionResult)" = no ] ||
        { fail "without /etc/tern/tls/cert.pem: $(prop ActiveState), condition $(prop ConditionResult)"; return 1; }
}

test_starts_as_notify() {
    in_ct "ternctl cluster init-ca /root/ca >/dev/null && ternctl cluster issue-cert /root/ca node1 >/dev/null &&
           install -d -m 0700 /etc/tern/tls && cp -p /root/ca/node1/*.pem /etc/tern/tls/ &&
           echo 'vmm_path = /root/fakevmm' >>/etc/tern/ternd.conf" || { fail "setting up certificates"; return 1; }
    in_ct "systemctl start ternd" || { fail "systemctl start ternd: $(in_ct 'journalctl -u ternd --no-pager | tail -5')"; return 1; }
    # Type=notify: start returned after READY=1, so the API answers now
    # (the control socket is up and corosync joined). The state is in step
    # once this host's sync round (alone here) has ended, a moment later.
    local out i
    out=$(in_ct "ternctl status") || { fail "ternctl status right after start: $out"; return 1; }
    for i in $(seq 50); do
        grep -q "quorate: yes" <<<"$out" && break
        sleep 0.1
        out=$(in_ct "ternctl status")
    done
    grep -q "quorate: yes" <<<"$out" || { fail "not quorate 5 s after start: $out"; return 1; }
    [ "$(prop Type)" = notify ] && [ "$(prop ActiveState)" = active ] || { fail "not active/notify"; return 1; }
    local main
    main=$(prop MainPID)
    [ "$(in_ct "cat $cg/agent/cgroup.procs")" = "$main" ] || { fail "ternd ($main) is not in ternd.service/agent"; return 1; }
    [ -z "$(in_ct "cat $cg/cgroup.procs")" ] || { fail "ternd.service itself holds processes"; return 1; }
}

test_vm_in_its_cgroup() {
    # READY=1 means the API answers and corosync is joined; the host shows
    # as online once its own announcement has come back through CPG.
    local i
    for i in $(seq 50); do
        in_ct "ternctl host list" | grep -q "^node1 *online" && break
        sleep 0.1
    done
    in_ct "touch /root/kernel && ternctl vm define v1 --kernel /root/kernel --mem 64M --vcpus 1 >/dev/null &&
           ternctl vm start v1 >/dev/null" || { fail "vm define/start: $(in_ct 'ternctl vm show v1')"; return 1; }
    local pid
    pid=$(vm_pid)
    [ -n "$pid" ] && [ "$(in_ct "cat $cg/vms/vm-v1/cgroup.procs")" = "$pid" ] ||
        { fail "VM process '$pid' is not in ternd.service/vms/vm-v1"; return 1; }
}

# expect_reattached WHAT OLD_VM_PID: the VM's process is the same, alive,
# and the running ternd re-attached it.
expect_reattached() {
    local main
    main=$(prop MainPID)
    [ "$(prop ActiveState)" = active ] && [ "$main" != 0 ] || { fail "$1: ternd is $(prop ActiveState)"; return 1; }
    [ -n "$2" ] && [ "$(vm_pid)" = "$2" ] && in_ct "kill -0 $2" || { fail "$1: the VM's process '$2' is gone"; return 1; }
    in_ct "journalctl -u ternd --no-pager _PID=$main" | grep -q "re-attached VM v1 (pid $2)" ||
        { fail "$1: ternd $main did not re-attach VM v1"; return 1; }
    in_ct "ternctl vm show v1" | grep -q "^state: *running" || { fail "$1: v1 not running"; return 1; }
}

test_restart_keeps_vm() {
    local pid
    pid=$(vm_pid)
    in_ct "systemctl restart ternd" || { fail "systemctl restart ternd"; return 1; }
    expect_reattached "after restart" "$pid"
}

test_stop_start_keeps_vm() {
    local pid
    pid=$(vm_pid)
    in_ct "systemctl stop ternd" || { fail "systemctl stop ternd"; return 1; }
    [ "$(prop ActiveState)" = inactive ] || { fail "stopped ternd is $(prop ActiveState)"; return 1; }
    [ -n "$pid" ] && [ "$(in_ct "cat $cg/vms/vm-v1/cgroup.procs 2>/dev/null")" = "$pid" ] ||
        { fail "VM '$pid' did not survive systemctl stop"; return 1; }
    in_ct "systemctl start ternd" || { fail "systemctl start ternd"; return 1; }
    expect_reattached "after stop and start" "$pid"
}

test_crash_restarts() {
    local pid main i
    pid=$(vm_pid)
    main=$(prop MainPID)
    in_ct "systemctl kill --kill-whom=main -s KILL ternd" || { fail "systemctl kill"; return 1; }
    for i in $(seq 100); do # RestartSec=2
        [ "$(prop ActiveState)" = active ] && [ "$(prop MainPID)" != "$main" ] && [ "$(prop MainPID)" != 0 ] && break
        sleep 0.1
    done
    [ "$(prop NRestarts)" -ge 1 ] || { fail "no restart after SIGKILL"; return 1; }
    expect_reattached "after SIGKILL" "$pid"
}

test_vm_stop_cleans_up() {
    in_ct "ternctl vm stop v1 >/dev/null" || { fail "ternctl vm stop v1"; return 1; }
    ! in_ct "test -e $cg/vms/vm-v1" || { fail "vms/vm-v1 still there after the VM stopped"; return 1; }
}

boot
run_test test_install_no_start_without_cert
run_test test_starts_as_notify
run_test test_vm_in_its_cgroup
run_test test_restart_keeps_vm
run_test test_stop_start_keeps_vm
run_test test_crash_restarts
run_test test_vm_stop_cleans_up
summary
