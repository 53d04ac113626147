"""A node whose SGLang is not the version the flags were checked against is refused before its unit is written.

The lab scenario's SGLang runs natively from the lab's venv (SGLang 0.5.23). Here each node gets an interpreter that
reports another SGLang release, as a venv upgraded by hand would: site.yml must stop on every node, naming the host and
both versions, and leave the running unit as it was.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

from conftest import lab_nodes

ROOT = pathlib.Path(__file__).resolve().parents[3]
INVENTORY = os.environ.get("DGXSPARK_LAB_INVENTORY") or "inventories/lab"
# The scenario's machines (molecule/lab: four through a switch).
NODES = lab_nodes(ROOT / INVENTORY)
UNIT = "/etc/systemd/system/sglang.service"
# What `python -c "import importlib.metadata ..."` prints for an install of SGLang 0.5.22.
OTHER = "/usr/local/bin/python-with-sglang-0.5.22"


def lab_ssh(node, command):
    return subprocess.run(["python3", str(ROOT / "tests/lab/lab.py"), "ssh", node, command],
                          check=True, capture_output=True, text=True, timeout=60).stdout


def test_another_sglang_release_is_refused_before_the_unit_is_written():
    for node in NODES:
        lab_ssh(node, "printf '#!/bin/sh\\necho 0.5.22\\n' > %s && chmod 755 %s" % (OTHER, OTHER))
    before = {node: lab_ssh(node, "sha256sum %s; systemctl show -p MainPID --value sglang" % UNIT) for node in NODES}
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    run = subprocess.run(
        ["ansible-playbook", "site.yml", "-i", INVENTORY, "--tags", "sglang_server",
         "-e", "sglang_server_runtime=native", "-e", "sglang_server_native_python=" + OTHER,
         "-e", "sglang_server_credentials_dir=%s" % (ROOT / "inventories/credentials/lab")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0, out[-3000:]
    for node in NODES:
        assert "the native Python of %s runs SGLang 0.5.22, but the flags are checked against SGLang 0.5.23" % node \
            in out, out[-3000:]
    assert "[sglang-version-mismatch]" in out and "sglang_server_allow_other_version: true" in out
    assert "Write the systemd unit of this rank" not in out, out[-3000:]
    assert {node: lab_ssh(node, "sha256sum %s; systemctl show -p MainPID --value sglang" % UNIT)
            for node in NODES} == before
