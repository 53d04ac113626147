"""The cx7_network role, then a reboot, on a machine whose management port belongs to NetworkManager.

As on DGX OS: Ubuntu's ``01-network-manager-all.yaml`` (NetworkManager the global netplan renderer),
Ubuntu's ``10-globally-managed-devices.conf`` (NM manages no Ethernet device unless netplan shadows it
at boot), and the management address set inside the machine by a NetworkManager profile
(``tests/lab/lab.py up 1 --network-manager``). A lab of its own, one machine: a reboot would break a
cluster's run. The lab takes the ids of the environment (``DGXSPARK_LAB_ID``, ``DGXSPARK_LAB_DIR``).

A global ``renderer: networkd`` in the role's netplan file (a later file than Ubuntu's) makes
networkd the renderer of every device without one: netplan then no longer shadows Ubuntu's file, and
after the reboot NetworkManager leaves the management port unmanaged, down, without its address (the
reboot task then times out: nothing answers SSH).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAB = [sys.executable, str(REPO / "tests/lab/lab.py")]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
MGMT = "enP7s7"
TWINS = {"enp1s0f1np1": "192.168.100.11/24", "enP2p1s0f1np1": "192.168.101.11/24"}
NETPLAN_FILE = "/etc/netplan/40-cx7.yaml"
LAB_UP = ("1", "--network-manager")   # the own_lab fixture (tests/integration/conftest.py)
NM_SHADOW = "run/NetworkManager/conf.d/10-globally-managed-devices.conf"


def sh(node_cmd: str) -> subprocess.CompletedProcess:
    """A command on lab-spark-01 over SSH (the lab's key and ProxyCommand)."""
    return subprocess.run(LAB + ["ssh", "1", node_cmd], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def inventory(own_lab):
    return own_lab


@pytest.fixture(scope="module")
def converged(inventory):
    """preflight and cx7_network, then Ansible's reboot module (tests/integration/reboot/converge.yml)."""
    res = subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, str(Path(__file__).with_name("converge.yml"))],
                         cwd=REPO, env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    return res.stdout


def test_the_machine_rebooted_and_answers_ssh(converged):
    # The reboot module fails unless the machine comes back with a new boot id; changed = it rebooted.
    task = converged.split("TASK [Reboot the node and wait until it answers over SSH again]", 1)[1]
    assert task.splitlines()[1].startswith("changed: [lab-spark-01]"), task[:500]
    assert sh("true").returncode == 0


def test_the_firewall_table_came_back_at_boot_from_its_own_unit(converged):
    # SSH answered through it (the reboot module waited for that); the table was loaded by dgxspark-firewall.service,
    # never by nftables.service (whose /etc/nftables.conf flushes the whole ruleset).
    assert sh("systemctl is-active dgxspark-firewall.service").stdout.strip() == "active"
    assert "table inet dgxspark" in sh("nft list tables").stdout.splitlines()
    # The API port (with node_exporter's) closed to every source but spark_allowed_cidrs.
    assert re.search(r"tcp dport (\{[^}]*\b30000\b[^}]*\}|30000) counter", sh("nft list table inet dgxspark").stdout)
    assert sh("systemctl is-enabled nftables.service").stdout.strip() != "enabled"


def test_networkmanager_still_manages_the_management_port(converged):
    res = sh("nmcli -t -f DEVICE,STATE,CONNECTION device status")
    assert res.returncode == 0, res.stderr
    assert "%s:connected:management" % MGMT in res.stdout.splitlines()
    # NetworkManager's own address (noprefixroute), not one set from elsewhere.
    addr = sh("ip -4 -o addr show dev %s" % MGMT).stdout
    assert "noprefixroute" in addr


def test_networkd_brought_the_twins_back_from_the_netplan_file(converged):
    links = sh("networkctl list --no-legend").stdout
    for twin, address in TWINS.items():
        assert address in sh("ip -4 -o addr show dev %s" % twin).stdout
        assert sh("cat /sys/class/net/%s/mtu" % twin).stdout.strip() == "9000"
        assert any(line.split()[1:2] == [twin] and line.split()[-1] == "configured" for line in links.splitlines())
    # networkd leaves the management port to NetworkManager.
    assert any(line.split()[1:2] == [MGMT] and line.split()[-1] == "unmanaged" for line in links.splitlines())


def test_the_netplan_file_names_a_renderer_per_twin_only(converged):
    text = sh("cat %s" % NETPLAN_FILE).stdout
    assert "\n  renderer:" not in text and "\nrenderer:" not in text
    assert text.count("      renderer: networkd") == len(TWINS)


@pytest.mark.parametrize("global_renderer, shadowed", [(None, True), ("networkd", False)])
def test_netplan_shadows_ubuntus_unmanaged_list_only_without_a_global_networkd(converged, global_renderer, shadowed):
    """`netplan generate` into a scratch root, from the machine's netplan files (plus, as a control,
    the role's file with a global renderer): the empty shadow file is what keeps NM on the port."""
    extra = ""
    if global_renderer:
        extra = "printf '  renderer: %s\\n' >> \"$r/etc/netplan/40-cx7.yaml\"; " % global_renderer
    script = ("r=$(mktemp -d); mkdir -p \"$r/etc/netplan\"; cp /etc/netplan/*.yaml \"$r/etc/netplan/\"; " + extra
              + "netplan generate --root-dir \"$r\"; test -e \"$r/%s\"; rc=$?; rm -rf \"$r\"; exit $rc" % NM_SHADOW)
    res = sh("sh -c %s" % shlex.quote(script))
    assert (res.returncode == 0) is shadowed, res.stdout + res.stderr
