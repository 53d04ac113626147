"""After preflight, cx7_network and nccl_env on the lab: what a Spark user would check by hand."""

from __future__ import annotations

import os

import pytest

TWINS = ("enp1s0f1np1", "enP2p1s0f1np1")
MGMT = "enP7s7"
PLAN = {
    "lab-spark-01": ("192.168.100.11", "192.168.101.11"),
    "lab-spark-02": ("192.168.100.12", "192.168.101.12"),
}
# The lab's management subnet (tests/lab/lab.py MGMT_NET): 172.31.255.0/24, 172.31.(255-ID) with DGXSPARK_LAB_ID.
MGMT_NET = "172.31.%d." % (255 - int(os.environ.get("DGXSPARK_LAB_ID") or 0))
PEER = {"lab-spark-01": "lab-spark-02", "lab-spark-02": "lab-spark-01"}


@pytest.fixture()
def name(host):
    return host.backend.get_hostname()


def test_netplan_file_is_private_and_names_only_the_twins(host):
    f = host.file("/etc/netplan/40-cx7.yaml")
    assert f.exists and f.user == "root" and f.mode == 0o600
    text = f.content_string
    for twin in TWINS:
        assert twin in text
    assert MGMT not in text
    assert "link-local: []" in text and "dhcp4: false" in text and "mtu: 9000" in text


def test_twins_are_up_with_their_planned_address_and_mtu_9000(host, name):
    for twin, address in zip(TWINS, PLAN[name]):
        iface = host.interface(twin)
        assert iface.exists
        assert address in iface.addresses
        assert host.file("/sys/class/net/%s/mtu" % twin).content_string.strip() == "9000"
        assert host.file("/sys/class/net/%s/operstate" % twin).content_string.strip() == "up"


def test_management_link_kept_its_address(host, name):
    assert host.interface(MGMT).addresses[0].startswith(MGMT_NET)


@pytest.mark.parametrize("size,ok", [(8972, True), (8973, False), (9000, False)])
def test_full_mtu_ping_with_do_not_fragment(host, name, size, ok):
    for twin, peer_address in zip(TWINS, PLAN[PEER[name]]):
        cmd = host.run("ping -M do -c 1 -i 0.2 -W 2 -s %s -I %s %s", str(size), twin, peer_address)
        assert (cmd.rc == 0) is ok, cmd.stdout + cmd.stderr


def test_nccl_env_names_the_cx7_twins_never_the_management_port(host):
    f = host.file("/etc/sglang/nccl.env")
    assert f.exists and f.mode == 0o644
    env = dict(
        line.split("=", 1) for line in f.content_string.splitlines() if line and not line.startswith("#")
    )
    assert env["NCCL_SOCKET_IFNAME"] == "=" + ",".join(TWINS)
    assert env["GLOO_SOCKET_IFNAME"] in TWINS
    assert env["NCCL_IB_DISABLE"] == "1"  # the lab's veths have no RDMA device
    assert MGMT not in f.content_string
