"""The firewall role on the converged lab: who reaches which port, tried for real from inside and outside the allowed
ranges, and the table's life (its own table beside Docker's, loaded at boot by its own unit, restored when changed).

Sources: the controller's namespace has the lab inventory's allowed address (lab.CTL_IP, spark_allowed_cidrs) and a
second one outside it (lab.CTL_OUTSIDE_IP), both on the management network; the other machine reaches a node over the
CX7 link. The lab's management bridge lets only SSH cross between machines, so machine-to-machine tries go over CX7.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
NODES = ("lab-spark-01", "lab-spark-02")
CX7 = {"lab-spark-01": "192.168.100.11", "lab-spark-02": "192.168.100.12"}
API_PORT = 30000
OTHER_PORT = 8099  # a listener the tests start on a node: closed on the management network, open over CX7
TABLE = "dgxspark"
# Connects from SRC (or any address) to DST:PORT and says what happened: open, refused (the node answered: nothing
# listens) or dropped (no answer: the firewall).
TRY = r"""
import errno, socket, sys
src, dst, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket()
s.settimeout(3)
if src != "-":
    s.bind((src, 0))
try:
    s.connect((dst, port))
    print("open")
except socket.timeout:
    print("dropped")
except OSError as exc:
    print("refused" if exc.errno == errno.ECONNREFUSED else "error %s" % exc)
"""


def lab_ssh(node, command, check=True):
    return subprocess.run([sys.executable, str(ROOT / "tests/lab/lab.py"), "ssh", node, command], capture_output=True,
                          text=True, check=check, timeout=180).stdout.strip()


def from_controller(lab, src, node, port):
    out = subprocess.run(["ip", "netns", "exec", lab.CTL_NS, sys.executable, "-c", TRY, src,
                          lab.node_ip(lab.node_index(node)), str(port)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def from_node(node, dst, port):
    return lab_ssh(node, "python3 -c '%s' - %s %d" % (TRY.replace("'", "'\\''"), dst, port))


def drops(node):
    """Packets the table's last rule (every other port) and the exposed ports' drop have counted on NODE."""
    rules = json.loads(lab_ssh(node, "nft -j list chain inet %s input" % TABLE))["nftables"]
    counted = [r["rule"] for r in rules if "rule" in r and any("drop" in e for e in r["rule"]["expr"])]
    return sum(e["counter"]["packets"] for r in counted for e in r["expr"] if "counter" in e)


@pytest.fixture(scope="module")
def listener():
    """A TCP listener on every address of lab-spark-01, port OTHER_PORT, for the length of this module."""
    lab_ssh("lab-spark-01", "systemd-run --unit dgxspark-fw-test --quiet python3 -m http.server %d" % OTHER_PORT)
    lab_ssh("lab-spark-01", "for i in $(seq 50); do ss -ltn | grep -q ':%d ' && break; sleep 0.1; done" % OTHER_PORT)
    yield OTHER_PORT
    lab_ssh("lab-spark-01", "systemctl stop dgxspark-fw-test", check=False)


@pytest.mark.parametrize("node", NODES)
def test_the_api_port_answers_the_allowed_address_and_drops_any_other(lab, node):
    assert from_controller(lab, lab.CTL_IP, node, API_PORT) == "open"
    before = drops(node)
    assert from_controller(lab, lab.CTL_OUTSIDE_IP, node, API_PORT) == "dropped"
    assert drops(node) > before


@pytest.mark.parametrize("node", NODES)
def test_ssh_is_untouched_for_every_source(lab, node):
    assert from_controller(lab, lab.CTL_OUTSIDE_IP, node, 22) == "open"
    assert from_controller(lab, lab.CTL_IP, node, 22) == "open"


def test_other_ports_are_closed_on_the_management_network_to_everyone(lab, listener):
    assert from_controller(lab, lab.CTL_IP, "lab-spark-01", listener) == "dropped"
    assert from_controller(lab, lab.CTL_OUTSIDE_IP, "lab-spark-01", listener) == "dropped"
    # The node itself still reaches it (loopback).
    assert from_node("lab-spark-01", "127.0.0.1", listener) == "open"


def test_everything_from_the_cx7_subnets_is_accepted(listener):
    # The other node over CX7: the listener, the API, and a port where nothing listens (refused, not dropped).
    assert from_node("lab-spark-02", CX7["lab-spark-01"], listener) == "open"
    assert from_node("lab-spark-02", CX7["lab-spark-01"], API_PORT) == "open"
    assert from_node("lab-spark-02", CX7["lab-spark-01"], 39999) == "refused"


@pytest.mark.parametrize("node", NODES)
def test_the_rules_live_in_a_table_of_their_own_beside_dockers(node):
    tables = lab_ssh(node, "nft list tables").splitlines()
    assert "table inet %s" % TABLE in tables
    # Docker's own tables (iptables-nft) are there too: nothing flushed them.
    assert "table ip nat" in tables and "table ip filter" in tables, tables
    assert "DOCKER" in lab_ssh(node, "nft list table ip nat")
    # Debian's nftables.service (whose /etc/nftables.conf flushes the whole ruleset) is never enabled or started.
    assert lab_ssh(node, "systemctl is-enabled nftables.service", check=False) != "enabled"
    assert lab_ssh(node, "systemctl is-active nftables.service", check=False) != "active"


def test_at_boot_the_unit_loads_the_table_again_and_touches_no_other(lab):
    """What a boot does, without one: the table gone (a node just started), then the enabled unit, started as
    sysinit.target starts it, loads it from its file; a table that is not ours stays."""
    node = "lab-spark-02"
    assert lab_ssh(node, "systemctl is-enabled dgxspark-firewall.service") == "enabled"
    assert "WantedBy=sysinit.target" in lab_ssh(node, "cat /etc/systemd/system/dgxspark-firewall.service")
    before = lab_ssh(node, "nft list table inet %s | grep -v counter" % TABLE)
    lab_ssh(node, "nft add table inet not_ours && systemctl stop dgxspark-firewall")
    assert "table inet %s" % TABLE not in lab_ssh(node, "nft list tables")
    assert from_controller(lab, lab.CTL_OUTSIDE_IP, node, API_PORT) == "open"  # no table: the API is open
    lab_ssh(node, "systemctl start dgxspark-firewall")
    try:
        assert lab_ssh(node, "nft list table inet %s | grep -v counter" % TABLE) == before
        assert "table inet not_ours" in lab_ssh(node, "nft list tables")
        assert from_controller(lab, lab.CTL_OUTSIDE_IP, node, API_PORT) == "dropped"
    finally:
        lab_ssh(node, "nft delete table inet not_ours", check=False)


def test_a_table_changed_by_hand_is_found_by_check_on_that_node_only(lab, site_playbook):
    """--check tells the truth: the node whose table was emptied by hand, and only it, would change (the role loads
    the file again there, as the unit's reload does below); nothing changes in check mode. A run after converge
    changing nothing is Molecule's idempotence step."""
    node = "lab-spark-02"
    lab_ssh(node, "nft flush chain inet %s input" % TABLE)
    try:
        assert from_controller(lab, lab.CTL_OUTSIDE_IP, node, API_PORT) == "open"
        check = site_playbook("--check", "--tags", "firewall")
        out = check.stdout + check.stderr
        assert check.returncode == 0, out[-3000:]
        assert recap(out) == {"lab-spark-01": 0, node: 1}, out[-3000:]
        assert from_controller(lab, lab.CTL_OUTSIDE_IP, node, API_PORT) == "open"
    finally:
        lab_ssh(node, "systemctl reload dgxspark-firewall")
    assert from_controller(lab, lab.CTL_OUTSIDE_IP, node, API_PORT) == "dropped"


def recap(out):
    """changed= per host of the PLAY RECAP."""
    found = {}
    for line in out.split("PLAY RECAP", 1)[-1].splitlines():
        words = line.split()
        if words and words[0] in NODES:
            found[words[0]] = int(next(w for w in words if w.startswith("changed=")).split("=")[1])
    return found
