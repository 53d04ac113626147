#!/usr/bin/env bash
# Install the host packages that tests/lab/lab.py needs (Debian/Ubuntu, run as root).
# Idempotent: runs `apt-get update` and `apt-get install` only when a package is missing.
set -euo pipefail

# docker-registry: the lab's registry (the CNCF distribution registry), which lab.py runs in the lab's own namespace.
# lxcfs: the per-machine /proc/meminfo of `lab.py up --memory-max` (make memory-test).
packages=(systemd-container debootstrap iproute2 nftables openssh-client netcat-openbsd python3 python3-venv
          docker-registry lxcfs)

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: run as root (apt-get install needs it)" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps.sh: all lab packages present (${packages[*]})"
    exit 0
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

# The package enables and starts its own registry on the host (port 5000, all addresses): the lab runs its own, in the
# lab's namespace, so the host's is stopped and disabled again when this script installed the package.
if [[ " ${missing[*]} " == *" docker-registry "* ]]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now docker-registry.service
    else
        invoke-rc.d docker-registry stop || true
        update-rc.d docker-registry disable
    fi
fi
