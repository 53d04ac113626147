#!/bin/sh
# A lab machine's file list, for the teardown test (tests/integration/site/test_zz_teardown.py): every path under
# /etc, /usr/local, /var/lib and /opt on the machine's own file system (-xdev: not the lab's read-only mounts), less
# what the packages' own tools keep there (dpkg's and apt's databases, ucf's, the state of the daemons that packages
# start: Docker's images and containers, systemd's timers and seeds) and logs. molecule/shared/create.yml takes it on
# the fresh machines, before site.yml; the test again after teardown.yml.
find /etc /usr/local /var/lib /opt -xdev \
    \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/lib/ucf -o -path /var/lib/docker \
       -o -path /var/lib/containerd -o -path /var/lib/systemd -o -path /var/lib/dhcp -o -path /var/log \
       -o -path /etc/ld.so.cache \) -prune -o -print | LC_ALL=C sort
