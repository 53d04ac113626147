"""Bad cluster descriptions fail in preflight, before any host is changed.

Each case runs the real site.yml against the converged lab with one mistake in the extra vars, and
with cx7_network_mtu=1500: had the play gone past preflight, the netplan file on every node would
have been rewritten. The file's checksum and mtime on every node are the host-side marker.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest
from conftest import lab_nodes

ROOT = pathlib.Path(__file__).resolve().parents[3]
MARKER = "/etc/netplan/40-cx7.yaml"
# A lab started with DGXSPARK_LAB_ID / DGXSPARK_LAB_DIR has its own inventory (`lab.py up` prints its path).
INVENTORY = os.environ.get("DGXSPARK_LAB_INVENTORY") or "inventories/lab"
# The scenario's machines (molecule/lab: four through a switch).
NODES = lab_nodes(ROOT / INVENTORY)

CASES = [
    ({"spark_cx7_subnets": ["192.168.100.0/24", "192.168.100.0/24"]}, "spark_cx7_subnets"),
    ({"spark_cx7_interfaces": ["enP7s7", "enP2p1s0f1np1"]}, "management port"),
    ({"spark_cx7_addresses": ["192.168.100.50", "192.168.101.50"]}, "spark_cx7_addresses"),
    ({"spark_cx7_addresses": ["172.31.255.11", "192.168.101.61"]}, "spark_cx7_addresses"),
    ({"spark_dist_init_port": 80}, "spark_dist_init_port"),
    # four machines cabled "back to back": refused, the switch named as the fix
    ({"spark_cx7_topology": "direct"}, "topology-direct-too-many"),
]


def marker(node):
    out = subprocess.run(
        ["python3", str(ROOT / "tests/lab/lab.py"), "ssh", node, "stat -c %Y " + MARKER + "; sha256sum " + MARKER],
        check=True, capture_output=True, text=True, timeout=30,
    )
    return out.stdout


@pytest.fixture(scope="module")
def before():
    return {node: marker(node) for node in NODES}


@pytest.mark.parametrize("extra,named", CASES, ids=[next(iter(c[0])) + str(i) for i, c in enumerate(CASES)])
def test_bad_input_fails_before_any_host_changes(before, extra, named):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    run = subprocess.run(
        ["ansible-playbook", "site.yml", "-i", INVENTORY, "-e", "cx7_network_mtu=1500", "-e", json.dumps(extra)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert named in out, out
    assert "Fix:" in out or "fix" in out.lower(), out
    assert "Write the CX7 netplan file" not in out, out
    for node in NODES:
        assert marker(node) == before[node], node


def test_a_node_in_two_sglang_groups_fails_before_any_host_changes(before, tmp_path):
    """The last machine also in a second SGLang group (a second inventory source): refused in preflight, with the fix."""
    extra = tmp_path / "second-group.yml"
    extra.write_text("all:\n  children:\n    spark_b:\n      hosts:\n        %s:\n" % NODES[-1])
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    run = subprocess.run(
        ["ansible-playbook", "site.yml", "-i", INVENTORY, "-i", str(extra), "-e", "cx7_network_mtu=1500",
         "-e", json.dumps({"preflight_sglang_groups": ["spark", "spark_b"]})],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0, out[-3000:]
    assert "[node-in-two-groups]" in out and "%s is in the SGLang groups spark and spark_b" % NODES[-1] in out, out[-3000:]
    assert "Write the CX7 netplan file" not in out, out[-3000:]
    for node in NODES:
        assert marker(node) == before[node], node
