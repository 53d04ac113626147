"""After preflight, cx7_network and nccl_env on the lab: what a Spark user would check by hand."""

from __future__ import annotations

import os

import pytest
import testinfra
from conftest import lab_nodes

TWINS = ("enp1s0f1np1", "enP2p1s0f1np1")
MGMT = "enP7s7"
# The scenario's machines in rank order (molecule/lab: four through a switch, the bridges cx7a and cx7b): every
# node's twins on the same two subnets, host part .11, .12, ... by rank.
NODES = lab_nodes()
PLAN = {node: ("192.168.100.%d" % (11 + rank), "192.168.101.%d" % (11 + rank)) for rank, node in enumerate(NODES)}
# The lab's management subnet (tests/lab/lab.py MGMT_NET): 172.31.255.0/24, 172.31.(255-ID) with DGXSPARK_LAB_ID.
MGMT_NET = "172.31.%d." % (255 - int(os.environ.get("DGXSPARK_LAB_ID") or 0))
# Each node's ring successor: cx7_network pings it over both twins, so every twin sends and receives.
PEER = {node: NODES[(rank + 1) % len(NODES)] for rank, node in enumerate(NODES)}


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


CONNECT = ("python3 -c 'import socket,sys\n"
           "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3).close(); print(\"open\")\n"
           "except OSError as e: print(\"closed\", e)' %s %s")


def test_between_machines_only_ssh_crosses_the_management_network(host, name, pytestconfig):
    """tests/lab/lab.py filters the management bridge as a Spark's LAN would be for cluster traffic: a port that
    answers on the peer's CX7 address is unreachable on its management address, while SSH stays open."""
    if name != "lab-spark-01":
        pytest.skip("one direction is enough: lab-spark-01 connects to lab-spark-02")
    peer = testinfra.get_host("paramiko://lab-spark-02", ssh_config=pytestconfig.option.ssh_config)
    peer.run("systemctl stop dgxlab-probe-listen; systemctl reset-failed dgxlab-probe-listen")
    listen = peer.run("systemd-run --unit dgxlab-probe-listen timeout 60 python3 -c 'import socket\n"
                      "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                      "s.bind((\"0.0.0.0\", 47123)); s.listen(8)\n"
                      "while True: s.accept()[0].close()'")
    assert listen.rc == 0, listen.stderr
    try:
        mgmt = peer.interface(MGMT).addresses[0]
        assert host.check_output(CONNECT, PLAN["lab-spark-02"][0], "47123").startswith("open")
        assert host.check_output(CONNECT, mgmt, "47123").startswith("closed")
        assert host.check_output(CONNECT, mgmt, "22").startswith("open")
        # and the default route leads out of the management port, as on a Spark (SGLang's 8.8.8.8 rule)
        assert "dev %s" % MGMT in host.check_output("ip -4 route get 8.8.8.8")
    finally:
        peer.run("systemctl stop dgxlab-probe-listen")
