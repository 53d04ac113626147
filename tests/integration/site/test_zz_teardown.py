"""teardown.yml on the converged lab: every machine's file list back to what it was before site.yml, less what
teardown leaves on purpose (roles/teardown/meta/argument_specs.yml): the packages with what their own scripts made,
Docker's daemon.json and state, and the model cache.

The file list (tests/lab/file_list.sh: every path under /etc, /usr/local, /var/lib and /opt, less package databases,
daemons' state and logs) was taken on the fresh machines by molecule/shared/create.yml. Runs last in the scenario
(file order: the name puts it after test_verify.py), since it removes the deployment; the scenario's destroy follows.
"""

from __future__ import annotations

import fnmatch
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
LAB = ["python3", str(ROOT / "tests" / "lab" / "lab.py")]
LAB_DIR = pathlib.Path(os.environ.get("DGXSPARK_LAB_DIR") or "/var/lib/dgxspark-lab")
INVENTORY = os.environ.get("DGXSPARK_LAB_INVENTORY") or "inventories/lab"
NODES = ("lab-spark-01", "lab-spark-02")

# What site.yml writes, which must be gone after teardown.yml.
ADDED = ("/etc/systemd/system/sglang.service", "/etc/sglang/server.yaml", "/etc/sglang/pins.json",
         "/etc/sglang/nccl.env", "/etc/netplan/40-cx7.yaml", "/etc/default/earlyoom",
         "/etc/systemd/system/earlyoom.service.d/50-dgxspark-priority.conf")
# ... and on the source node of the staging (the head), the staging server, when the others lacked something.
ADDED_ON_SOURCE = ("/usr/local/libexec/dgxspark-sglang/staging_server.py",)
# What teardown leaves on purpose, beyond the files that the installed packages own (dpkg -L):
KEPT = (
    # what the packages' maintainer scripts made: the services they enabled (and systemd-networkd, which
    # cx7_network enabled), init links, alternatives, AppArmor and SGML catalogs, the backups of the user and group
    # files that adding their system users leaves;
    "/etc/systemd/system/*.wants", "/etc/systemd/system/*.wants/*", "/etc/systemd/system/dbus-org.freedesktop.*",
    "/etc/rc?.d/*", "/etc/alternatives/*", "/etc/apparmor.d/*", "/etc/sgml", "/etc/sgml/*", "/usr/local/share/sgml",
    "/usr/local/share/sgml/*", "/var/lib/sgml-base/*", "/etc/networks",
    "/etc/group-", "/etc/gshadow-", "/etc/passwd-", "/etc/shadow-", "/etc/subuid", "/etc/subgid", "/etc/subuid-",
    "/etc/subgid-",
    # Docker's and containerd's own state beside daemon.json, which container_runtime merges, never owns;
    "/etc/docker", "/etc/docker/*", "/etc/cni", "/etc/cni/*",
    # the standard folder that the staging role's script folder was made in (empty now);
    "/usr/local/libexec",
    # the model cache (teardown_remove_model_cache: false).
    "/var/lib/sglang", "/var/lib/sglang/*",
)


def ssh(node, command):
    return subprocess.run(LAB + ["ssh", node, command], check=True, timeout=300, capture_output=True, text=True).stdout


def file_list(node):
    return set(ssh(node, "sh /opt/dgxspark-sglang/tests/lab/file_list.sh").split("\n")) - {""}


def package_files(node):
    """Every path that an installed package owns (dpkg -L of each), and their folders."""
    return set(ssh(node, "dpkg-query -W -f='${Package}\\n' | xargs dpkg-query -L 2>/dev/null").split("\n")) - {""}


def teardown():
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    run = subprocess.run(["ansible-playbook", "playbooks/teardown.yml", "-i", INVENTORY], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    return run.returncode, run.stdout + run.stderr


def recap_changed(out):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r'^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)', out, re.M)}


def kept(path):
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in KEPT)


def test_teardown_leaves_the_machines_as_before_site_but_what_it_documents():
    before = {}
    for node in NODES:
        listed = LAB_DIR / ("files-before-%s.txt" % node)
        if not listed.is_file():
            pytest.fail("%s is missing: molecule/shared/create.yml takes it on the fresh machines (run the site "
                        "scenario through molecule)" % listed)
        before[node] = set(listed.read_text().split("\n")) - {""}
        deployed = file_list(node)
        assert set(ADDED) <= deployed - before[node], sorted(set(ADDED) - deployed)

    rc, out = teardown()
    assert rc == 0, out[-4000:]
    rc, again = teardown()
    assert rc == 0, again[-4000:]
    assert set(recap_changed(again).values()) == {0}, again[-3000:]

    for node in NODES:
        after = file_list(node)
        owned = package_files(node)
        left = sorted(p for p in after - before[node] if p not in owned and not kept(p))
        assert left == [], "%s keeps what teardown.yml should have removed: %s" % (node, left)
        assert not (set(ADDED) | set(ADDED_ON_SOURCE)) & after
        # The model cache stays unless asked.
        assert "/var/lib/sglang/huggingface" in after
        # The twins lost their addresses with the netplan file; nothing else of the network was touched.
        assert "192.168.100." not in ssh(node, "ip -4 -o addr show dev enp1s0f1np1")
