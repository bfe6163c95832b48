#!/usr/bin/env bash
# Installs the Debian packages Tern's build, tests and demo need (and, with
# the argument "deb", `make deb`'s), only the ones missing. Safe to run
# again; does nothing when all are present.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config
    liburing-dev liblz4-dev libssl-dev libjansson-dev libcmocka-dev zlib1g-dev
    libcpg-dev libvotequorum-dev libcmap-dev libquorum-dev libqb-dev libmicrohttpd-dev
    corosync iproute2 openssl python3 python3-prometheus-client
    scdoc groff-base man-db systemd
    spin
    # Fencing (docs/fencing.md): fence agents (fence_ipmilan, fence_dummy),
    # and for the test hosts' BMCs OpenIPMI's ipmi_sim and ipmitool.
    fence-agents openipmi ipmitool
)

# `install-deps.sh deb`: also what `make deb` and `make test-deb` need (debian/control's
# Build-Depends are in the list above).
if [ "${1:-}" = deb ]; then
    PACKAGES+=(debhelper dpkg-dev fakeroot lintian systemd-container)
fi

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run 'sudo make deps' (or install them with apt-get) and try again" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done"
