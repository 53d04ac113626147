#!/usr/bin/env bash
# Install the host packages that tests/lab/lab.py needs (Debian/Ubuntu, run as root).
# Idempotent: runs `apt-get update` and `apt-get install` only when a package is missing.
set -euo pipefail

# docker-registry: the lab's registry (the CNCF distribution registry), which lab.py runs in the lab's own namespace.
# lxcfs: the per-machine /proc/meminfo of `lab.py up --memory-max` (make memory-test).
# prometheus: promtool for the monitoring role's unit tests, and the Prometheus that the site scenario runs in the lab's
# controller namespace (tests/integration/site/test_monitoring.py).
packages=(systemd-container debootstrap iproute2 nftables openssh-client netcat-openbsd python3 python3-venv
          docker-registry lxcfs prometheus)

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
# The same for Debian's prometheus (port 9090 on the host): the tests start their own where they need one.
for service in docker-registry prometheus; do
    if [[ " ${missing[*]} " == *" $service "* ]]; then
        if [ -d /run/systemd/system ]; then
            systemctl disable --now "$service.service"
        else
            invoke-rc.d "$service" stop || true
            update-rc.d "$service" disable
        fi
    fi
done
