"""verify.yml on the converged lab: a passing report, then the two failures a user must see named.

Runs last in the scenario (file order): the failure cases break the SGLang group on purpose, and
the scenario's destroy follows.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[3]
LAB = ["python3", str(ROOT / "tests" / "lab" / "lab.py")]
# A lab started with DGXSPARK_LAB_ID / DGXSPARK_LAB_DIR has its own inventory (`lab.py up` prints its path).
INVENTORY = os.environ.get("DGXSPARK_LAB_INVENTORY") or "inventories/lab"


def verify(*extra):
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    run = subprocess.run(["ansible-playbook", "playbooks/verify.yml", "-i", INVENTORY, *extra], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    return run.returncode, run.stdout + run.stderr


def report_dir(out):
    marker = "verify report: "
    line = next(line for line in out.splitlines() if marker in line)
    return pathlib.Path(line.split(marker, 1)[1].split()[0]).parent


def last_lines(out, n=15):
    lines = out.splitlines()
    end = max(i for i, line in enumerate(lines) if line.startswith("PLAY RECAP"))
    return "\n".join(lines[max(0, end - n):end])


def test_1_verify_passes_with_a_correct_row_per_size_and_a_curve(lab, extra_vars_file):
    # At -vvv, with the Hugging Face token among its variables (as from a vault): neither it nor the API key (read from
    # rank 0's server.yaml) is printed.
    with extra_vars_file({"sglang_server_hf_token": lab.HUB_TOKEN}) as secrets:
        rc, out = verify("-vvv", "-e", secrets)
    assert rc == 0, out[-4000:]
    key = (ROOT / "inventories" / "credentials" / "lab" / "spark-api-key").read_text().split()[0]
    assert key not in out and lab.HUB_TOKEN not in out
    folder = report_dir(out)
    report = json.loads((folder / "report.json").read_text())
    assert report["verdict"] == "pass"
    rows = report["allreduce"]["results"]
    assert len(rows) >= 20 and all(row["correct"] for row in rows)
    assert "PASS" in (folder / "report.md").read_text()
    assert "<path" in (folder / "busbw.svg").read_text()


def test_2_stopped_server_on_rank0_fails_naming_the_host():
    subprocess.run(LAB + ["ssh", "lab-spark-01", "systemctl stop sglang"], check=True, timeout=120)
    rc, out = verify()
    assert rc != 0
    tail = last_lines(out)
    assert "lab-spark-01" in tail and "sglang" in tail, tail


def test_3_cx7_twin_down_fails_naming_the_host_and_the_link():
    subprocess.run(LAB + ["ssh", "lab-spark-02", "ip link set enp1s0f1np1 down"], check=True, timeout=60)
    rc, out = verify()
    assert rc != 0
    tail = last_lines(out)
    assert "lab-spark-02" in tail and "enp1s0f1np1" in tail, tail
