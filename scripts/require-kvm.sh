#!/usr/bin/env bash
# Checks that this machine can run VMs (a usable /dev/kvm) before a target
# that needs one (`make demo`, `make bench-*`) builds anything. Prints one
# sentence saying what is missing and exits 1 if not.
#
# usage: scripts/require-kvm.sh WHAT    (e.g. "make demo")
set -u
what=${1:-this}
why=""
if [ ! -e /dev/kvm ]; then
    why="/dev/kvm: No such file or directory"
elif [ ! -c /dev/kvm ] || [ "$(stat -Lc '%t:%T' /dev/kvm)" != "a:e8" ]; then
    why="/dev/kvm is not the KVM device (character device 10:232)"
elif ! { exec 3<>/dev/kvm; } 2>/dev/null; then
    why="/dev/kvm cannot be opened for reading and writing (run as root or in group kvm)"
elif command -v python3 >/dev/null 2>&1; then
    # KVM_GET_API_VERSION must answer 12.
    api=$(python3 -c 'import fcntl, os
fd = os.open("/dev/kvm", os.O_RDWR)
print(fcntl.ioctl(fd, 0xAE00))' 2>/dev/null) || api=""
    [ "$api" = 12 ] || why="/dev/kvm does not answer KVM_GET_API_VERSION with 12${api:+ (it says $api)}"
fi
if [ -n "$why" ]; then
    echo "$what needs KVM, and this machine has none ($why): run it on a Linux host with KVM (bare metal, or a VM with nested virtualisation enabled); without KVM, 'make test' still runs every test that needs no VM." >&2
    exit 1
fi
exit 0
