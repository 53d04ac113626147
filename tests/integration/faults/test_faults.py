"""Faults a running group must survive, on a lab of its own (two machines, the native runtime).

The group's recovery (roles/sglang_server/README.md, "When a rank dies"): a rank whose peer died ends itself, as
SGLang's scheduler does (gloo's ``Connection closed by peer`` at its next broadcast, or its watchdog after
``--watchdog-timeout``), a rank >= 1 exits 0 on rank 0's shutdown broadcast, and the unit (``Restart=always``) starts
every such rank again; the restarted ranks form the group again at ``--dist-init-addr``, without a controller run.

In the order they run here:

- (c) rank 0's main process is killed (SIGKILL): systemd restarts it, rank 1 ends on the closed connection and is
  restarted too, rank 0 serves again, and verify.yml passes;
- (b) the head machine reboots: rank 0 comes back as rank 0 from its enabled unit, rank 1 (ended by rank 0's
  shutdown broadcast) is restarted and joins it: healthy without a controller run;
- (d) a CX7 twin of one machine loses its link (its cable pulled at the lab's switch) while the group serves:
  verify.yml fails naming the machine, the twin and the fix;
- (a) one machine's management link is cut while site.yml is in the sglang_server role with a change to make: cut
  before the stop, no node is stopped and both keep their running rank; cut right after the stop, no node is started
  (both stay stopped, none on the new settings); then, plugged back, a rerun converges and rank 0 serves.

The lab takes the ids of the environment (``DGXSPARK_LAB_ID``, ``DGXSPARK_LAB_DIR``), as the scenarios do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import lab_sh, load_lab  # pylint: disable=import-error  # tests/integration/conftest.py

REPO = Path(__file__).resolve().parents[3]
LAB = [sys.executable, str(REPO / "tests/lab/lab.py")]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
LAB_UP = ("2", "--with-torch")   # the own_lab fixture (tests/integration/conftest.py)
CREDENTIALS = "sglang_server_credentials_dir=%s" % (REPO / "inventories" / "credentials" / "faults")
NATIVE = ("-e", "sglang_server_runtime=native", "-e", CREDENTIALS)
SERVICE = "sglang"
TWIN = "enP2p1s0f1np1"   # the second twin: the group's own traffic (SGLANG_HOST_IP, --dist-init-addr) is on the first
# A change for the sglang_server role to make (a flag more in every unit, as an AWX survey answer): it restarts the group.
CHANGE = ("-e", '{"sglang_server_args_override": {"max-running-requests": 64}}')
HEALTHY_WITHIN_S = 120


def playbook(inventory, path, *extra, timeout=900):
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, str(REPO / path), *NATIVE, *extra], cwd=REPO,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
                          capture_output=True, text=True, timeout=timeout, check=False)


def lab(*args):
    res = subprocess.run(LAB + list(args), capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def unit(node):
    """The unit's state on NODE over SSH: {ActiveState, NRestarts, MainPID, ...}."""
    res = lab_sh(node, "systemctl show %s.service -p ActiveState,SubState,NRestarts,MainPID" % SERVICE)
    assert res.returncode == 0, res.stderr
    return dict(line.split("=", 1) for line in res.stdout.split())


def unit_inside(node):
    """The unit's ActiveState read inside the machine without SSH (nsenter into its init's namespaces)."""
    init = load_lab().container_init_pid(node)
    res = subprocess.run(["nsenter", "-t", str(init), "-m", "-p", "--", "systemctl", "is-active", SERVICE + ".service"],
                         capture_output=True, text=True, timeout=10, check=False)
    return res.stdout.strip()


def journal(node, lines=40):
    return lab_sh(node, "journalctl -u %s -n %d -o cat --no-pager" % (SERVICE, lines)).stdout


def health(node=1):
    """Rank 0's /health (SGLang's one-token generation) as seen on the head, or the error."""
    probe = ("python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:30000/health', timeout=10)"
             ".status)\"")
    res = lab_sh(node, probe, timeout=30)
    return res.stdout.strip() or res.stderr.strip()[-200:]


def wait_healthy(timeout=HEALTHY_WITHIN_S):
    started = time.monotonic()
    seen = None
    while time.monotonic() < started + timeout:
        seen = health()
        if seen == "200":
            return time.monotonic() - started
        time.sleep(2)
    raise AssertionError("rank 0 not healthy within %d s (last: %s)\nrank 0:\n%s\nrank 1:\n%s"
                         % (timeout, seen, journal(1), journal(2)))


@pytest.fixture(scope="module")
def deployed(own_lab):
    """The lab scenario's plays (preflight, cx7_network, nccl_env, staging, sglang_server), native runtime."""
    res = playbook(own_lab, "molecule/lab/converge.yml")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    wait_healthy()
    return own_lab


def test_c_rank0_killed_the_group_comes_back_and_verify_passes(deployed):
    before = {node: unit(node) for node in (1, 2)}
    assert all(u["ActiveState"] == "active" for u in before.values()), before
    res = lab_sh(1, "kill -KILL %s" % before[1]["MainPID"])
    assert res.returncode == 0, res.stderr
    took = wait_healthy()
    after = {node: unit(node) for node in (1, 2)}
    # systemd restarted rank 0 (killed: a failure), and rank 1, which ended on the closed connection (SGLang's
    # scheduler: gloo's "Connection closed by peer", SIGQUIT, the process tree killed).
    for node in (1, 2):
        assert int(after[node]["NRestarts"]) == int(before[node]["NRestarts"]) + 1, (node, before, after)
        assert after[node]["MainPID"] != before[node]["MainPID"]
    assert "Connection closed by peer" in journal(2, 200)
    print("\n(c) rank 0 killed: the group served again after %.1f s" % took)
    res = playbook(deployed, "playbooks/verify.yml")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]


def test_b_the_head_reboots_and_the_group_is_healthy_without_a_controller_run(deployed):
    restarts = int(unit(2)["NRestarts"])
    started = time.monotonic()
    lab("reboot", "1")
    took = wait_healthy()
    # The same rank from the unit on disk (enabled at boot), and rank 1 restarted by systemd after rank 0's shutdown
    # broadcast (exit 0: Restart=always), joined to the new rank 0.
    assert "rank 0 of 2" in lab_sh(1, "journalctl -b -u %s -o cat --no-pager" % SERVICE).stdout
    assert unit(1)["NRestarts"] == "0"   # started at boot, not restarted
    assert int(unit(2)["NRestarts"]) == restarts + 1
    log = journal(2, 200)
    assert "shutdown broadcast from rank 0" in log and log.count("rank 1 joined the group of 2") >= 2
    print("\n(b) the head rebooted: the group served again %.1f s after the reboot began (%.1f s after SSH answered)"
          % (time.monotonic() - started, took))


def test_d_a_cx7_twin_down_is_named_by_verify(deployed):
    lab("cut", "2", TWIN)
    try:
        res = playbook(deployed, "playbooks/verify.yml")
    finally:
        lab("mend", "2", TWIN)
    out = res.stdout
    assert res.returncode != 0, out[-4000:]
    # One line per failure: host, check, reason with the fix, [code].
    line = next((ln for ln in out.splitlines() if "lab-spark-02" in ln and "[cx7-link-down]" in ln), None)
    assert line, out[-6000:]
    assert TWIN in line and "Fix:" in line, line
    assert not any("lab-spark-01" in ln and "cx7-link-down" in ln for ln in out.splitlines())


def cut_when(inventory, condition, what):
    """site.yml --tags sglang_server with CHANGE; lab-spark-02's management link is cut once CONDITION(output so far)
    holds. Returns (result, seconds from the start to the cut)."""
    proc = subprocess.Popen([ANSIBLE_PLAYBOOK, "-i", inventory, str(REPO / "site.yml"), "--tags", "sglang_server",
                             *NATIVE, *CHANGE], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"))
    out = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    started = time.monotonic()
    cut_at = None
    try:
        while proc.poll() is None and cut_at is None:
            if condition("".join(out)):
                lab("cut", "2")
                cut_at = time.monotonic() - started
            time.sleep(0.05)
        proc.wait(600)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(10)
    assert cut_at is not None, "site.yml ended before %s:\n%s" % (what, "".join(out)[-6000:])
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), ""), cut_at


def test_a_management_link_cut_in_sglang_server_then_a_rerun_converges(deployed):
    before = {node: unit(node) for node in (1, 2)}
    # 1. Cut when the role has written the new unit everywhere: the decision needs every node's answer.
    res, cut_at = cut_when(deployed, lambda text: "TASK [dgxspark.sglang.sglang_server : Check whether SGLang runs" in text,
                           "the unit was written")
    lab("mend", "2")
    assert res.returncode != 0
    assert re.search(r"lab-spark-02 of group spark failed in an earlier task or did\s+not answer now", res.stdout), \
        res.stdout[-6000:]
    assert "TASK [dgxspark.sglang.sglang_server : Stop SGLang" not in res.stdout
    for node in (1, 2):   # nothing stopped: both still run the rank they ran
        assert unit(node)["MainPID"] == before[node]["MainPID"], node
    assert wait_healthy() >= 0
    print("\n(a) cut at %.1f s, before the stop: no node stopped, the group kept serving" % cut_at)

    # 2. Cut right after lab-spark-02's rank stopped (seen inside the machine, without SSH): no node may start.
    res, cut_at = cut_when(deployed, lambda text: "TASK [dgxspark.sglang.sglang_server : Stop SGLang" in text
                           and unit_inside(2) == "inactive", "the stop")
    states = {node: unit_inside(node) for node in (1, 2)}
    lab("mend", "2")
    assert res.returncode != 0
    assert re.search(r"lab-spark-02 of group spark did not stop or stopped answering\s+after the group's stop",
                     res.stdout), res.stdout[-6000:]
    assert "TASK [dgxspark.sglang.sglang_server : Start SGLang" not in res.stdout
    assert states == {1: "inactive", 2: "inactive"}, states
    time.sleep(12)   # longer than RestartSec: a stopped unit stays stopped
    assert {node: unit(node)["ActiveState"] for node in (1, 2)} == {1: "inactive", 2: "inactive"}
    print("(a) cut at %.1f s, after the stop: every node left stopped" % cut_at)

    # 3. Plugged back: a rerun starts the whole group on the new settings.
    res = playbook(deployed, "site.yml", "--tags", "sglang_server", *CHANGE)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert all(unit(node)["ActiveState"] == "active" for node in (1, 2))
    assert "--max-running-requests 64" in lab_sh(2, "systemctl cat %s" % SERVICE).stdout
    assert wait_healthy() >= 0
