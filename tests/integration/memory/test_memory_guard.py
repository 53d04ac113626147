"""earlyoom at work: the memory_guard role on one memory-limited lab machine, then SGLang's scheduler outgrows it.

Inside nspawn /proc/meminfo is the host's (24 GiB here, shared), so the machine gets a memory cgroup of its own with a
hard limit and its own view of meminfo (``lab.py up 1 --memory-max 1536M``: lxcfs, run by lab.py under the lab dir,
bind-mounted over the machine's /proc/meminfo). Nothing grows before both are proven in place: past the limit only the
kernel's OOM killer of that cgroup can act, never the host's memory.

Then, with the role's defaults (SIGTERM at 5% available, SIGKILL at 2.5%, ``^sglang::`` preferred, sshd & co avoided):
a bystander process (not preferred, not avoided) holds more memory than the scheduler will; ``sglang.service`` runs a
stand-in shaped like SGLang's launch_server (tests/integration/memory/memhog.py): a ``python3`` main process whose
child names itself ``sglang::scheduler_TP0`` as SGLang's scheduler does and grows. earlyoom must kill that child (not
the larger bystander, not the unit's main process, not sshd), before the kernel's OOM killer acts, and the machine
must answer SSH afterwards. A lab of its own (one machine); it takes the lab ids of the environment, as the scenarios
do (``DGXSPARK_LAB_ID``, ``DGXSPARK_LAB_DIR``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LAB = [sys.executable, str(REPO / "tests/lab/lab.py")]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
CONVERGE = Path(__file__).with_name("converge.yml")
MEMORY_MAX = "1536M"
LIMIT_KIB = 1536 * 1024
LAB_UP = ("1", "--memory-max", MEMORY_MAX)   # the own_lab fixture (tests/integration/conftest.py)
BYSTANDER_MIB = 800          # more than the scheduler holds when earlyoom acts (about 600 MiB here)
HOG = "/opt/dgxspark-sglang/tests/integration/memory/memhog.py"   # the checkout, mounted read-only in every machine
SCHEDULER_PID_FILE = "/run/sglang-scheduler.pid"
KILL_WAIT_S = 60
UNITS = {
    "membystander.service": "[Unit]\nDescription=A large process that is neither preferred nor avoided\n[Service]\n"
                            "ExecStart=/usr/bin/python3 %s hold --name bystander --mib %d\n" % (HOG, BYSTANDER_MIB),
    # Named like the SGLang unit; no restart, so that the kill is seen once.
    "sglang.service": "[Unit]\nDescription=SGLang stand-in: a scheduler that outgrows the node\n[Service]\n"
                      "ExecStart=/usr/bin/python3 %s server --pid-file %s\nRestart=no\n" % (HOG, SCHEDULER_PID_FILE),
}


def lab_module():
    """tests/lab/lab.py as a module (the home of the machine's memory cgroup path), with this run's lab ids."""
    spec = importlib.util.spec_from_file_location("dgxspark_lab", REPO / "tests/lab/lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sh(node_cmd: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """A command on lab-spark-01 over SSH (the lab's key and ProxyCommand)."""
    return subprocess.run(LAB + ["ssh", "1", node_cmd], capture_output=True, text=True, timeout=timeout, check=False)


def playbook(inventory, *extra):
    return subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, str(CONVERGE), *extra], cwd=REPO,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg")),
                          capture_output=True, text=True, check=False)


def recap(res):
    found = re.search(r"lab-spark-01\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", res.stdout)
    assert found, res.stdout[-4000:] + res.stderr[-2000:]
    return {k: int(v) for k, v in zip(("ok", "changed", "unreachable", "failed"), found.groups())}


@pytest.fixture(scope="module")
def inventory(own_lab):
    return own_lab


@pytest.fixture(scope="module")
def limited(inventory):
    """The guard against hurting the host: the cgroup limit is set and the machine sees it, or nothing grows."""
    lab = lab_module()
    memcg = lab.memcg_dirs(1)
    assert memcg and int((memcg[0] / "memory.limit_in_bytes").read_text()) == LIMIT_KIB * 1024, memcg
    meminfo = sh("cat /proc/meminfo").stdout
    assert re.search(r"^MemTotal:\s+%d kB$" % LIMIT_KIB, meminfo, re.M), meminfo[:300]
    return lab


@pytest.fixture(scope="module")
def converged(inventory, limited):
    """--check on the fresh machine, then the role, then the role again: (check, first, second) results."""
    runs = [playbook(inventory, "--check"), playbook(inventory), playbook(inventory)]
    for res in runs:
        assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    return runs


@pytest.fixture(scope="module")
def outgrown(converged, limited):
    """The bystander holds its memory; then sglang.service's scheduler grows until something is killed."""
    for name, text in UNITS.items():
        res = sh("cat > /etc/systemd/system/%s <<'EOF'\n%sEOF" % (name, text))
        assert res.returncode == 0, res.stderr
    sshd_before = sh("pgrep -o -x sshd").stdout.strip()
    oom_before = limited.memcg_oom_kills(1)
    res = sh("systemctl daemon-reload && systemctl start membystander && "
             "until journalctl -u membystander -o cat | grep -q 'bystander holds %d MiB'; do sleep 0.2; done && "
             "systemctl start sglang" % BYSTANDER_MIB, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    started = time.monotonic()
    deadline = started + KILL_WAIT_S
    state = ""
    while time.monotonic() < deadline:
        state = sh("systemctl is-active sglang").stdout.strip()
        if state in ("failed", "inactive"):
            break
        time.sleep(0.5)
    took = time.monotonic() - started
    return {
        "state": state,
        "took_s": took,
        "scheduler_pid": sh("cat %s" % SCHEDULER_PID_FILE).stdout.strip(),
        "sshd_before": sshd_before,
        "sshd_after": sh("pgrep -o -x sshd").stdout.strip(),
        "earlyoom": sh("journalctl -u earlyoom -o cat --no-pager").stdout,
        "sglang": sh("journalctl -u sglang -o cat --no-pager").stdout,
        "bystander": sh("systemctl is-active membystander").stdout.strip(),
        "oom_before": oom_before,
        "oom_after": limited.memcg_oom_kills(1),
    }


def test_check_mode_predicts_and_the_second_run_changes_nothing(converged):
    check, first, second = (recap(r) for r in converged)
    assert check["changed"] > 0 and first["changed"] > 0
    assert second["changed"] == 0, converged[2].stdout[-4000:]


def test_earlyoom_runs_with_the_roles_options(converged):
    assert sh("systemctl is-active earlyoom").stdout.strip() == "active"
    assert sh("systemctl is-enabled earlyoom").stdout.strip() == "enabled"
    log = sh("journalctl -u earlyoom -o cat --no-pager").stdout
    assert "Preferring to kill process names that match regex '^sglang::'" in log
    assert re.search(r"Will avoid killing process names that match regex '\^\(sshd\|", log), log[:2000]
    # lxcfs's view: earlyoom measures the machine's limit, not the host's memory.
    assert "mem total: 1536 MiB" in log
    assert "sending SIGTERM when mem <=  5.00% and swap <= 100.00%" in log
    assert sh("ps -o ni= -C earlyoom").stdout.strip() == "-20"


def test_earlyoom_killed_the_scheduler_not_the_larger_bystander(outgrown):
    assert outgrown["state"] == "failed", outgrown["sglang"][-2000:]
    kills = re.findall(r'sending (SIGTERM|SIGKILL) to process (\d+) uid \d+ "([^"]*)": badness (-?\d+), VmRSS (\d+) MiB',
                       outgrown["earlyoom"])
    assert kills, outgrown["earlyoom"][-3000:]
    assert {(pid, name) for _sig, pid, name, _badness, _rss in kills} == {(outgrown["scheduler_pid"], "sglang::schedul")}
    # The bystander held more memory than the scheduler when it was killed: the preference decided, not the size.
    assert all(int(rss) < BYSTANDER_MIB for *_rest, rss in kills), kills
    assert outgrown["bystander"] == "active"
    # The unit's main process (python3, like launch_server) was left alone; it ended the server itself.
    assert "died of signal" in outgrown["sglang"] and "ending the server" in outgrown["sglang"]


def test_earlyoom_acted_before_the_kernels_oom_killer(outgrown):
    assert outgrown["oom_before"] == 0
    assert outgrown["oom_after"] == 0, "the kernel's OOM killer acted in the machine's cgroup: earlyoom was too late"


def test_the_node_stays_reachable_over_ssh(outgrown):
    assert outgrown["sshd_before"] and outgrown["sshd_after"] == outgrown["sshd_before"]
    res = sh("echo reachable; cat /proc/meminfo | head -1")
    assert res.returncode == 0 and res.stdout.startswith("reachable"), res.stderr
    kills = [line for line in outgrown["earlyoom"].splitlines() if " to process " in line or line.startswith("escalating")]
    print("\nsglang.service ended %.1f s after it started; earlyoom: %s" % (outgrown["took_s"], "; ".join(kills)))
