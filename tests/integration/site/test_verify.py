"""verify.yml on the converged lab: a passing report, then the two failures a user must see named, then doctor.yml
on the cluster so broken.

Runs last but one in the scenario (file order; test_zz_teardown.py follows): the failure cases break the SGLang
group on purpose, and the teardown and the scenario's destroy follow.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import string
import subprocess
import tarfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]
LAB = ["python3", str(ROOT / "tests" / "lab" / "lab.py")]
# A lab started with DGXSPARK_LAB_ID / DGXSPARK_LAB_DIR has its own inventory (`lab.py up` prints its path).
INVENTORY = os.environ.get("DGXSPARK_LAB_INVENTORY") or "inventories/lab"


def ssh(node, command):
    """A command's output on a lab machine (it must succeed)."""
    return subprocess.run(LAB + ["ssh", node, command], check=True, timeout=120, capture_output=True,
                          text=True).stdout


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


def test_4_doctor_names_the_twin_down_and_redacts_every_secret(tmp_path):
    """doctor.yml on the cluster that tests 2 and 3 broke (rank 0 stopped, lab-spark-02's first twin down), with a
    Hugging Face token planted in a file it collects: the twin named with connectx_info's code and fix, the stopped
    unit named, and neither the planted token nor the group's API key (which the stand-in logs in its server_args
    line, as SGLang does) anywhere in the tarball. Then the twin comes back up."""
    token = "hf_" + "".join(random.choices(string.ascii_letters + string.digits, k=34))
    env_file = "/etc/sglang/nccl.env"
    original = ssh("lab-spark-02", "cat %s" % env_file)
    key = yaml.safe_load(ssh("lab-spark-01", "cat /etc/sglang/server.yaml"))["api-key"]
    ssh("lab-spark-02", "echo '# planted by test_4: HF_TOKEN=%s' >> %s" % (token, env_file))
    try:
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        run = subprocess.run(["ansible-playbook", "playbooks/doctor.yml", "-i", INVENTORY,
                              "-e", "doctor_report_dir=%s" % tmp_path], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600, check=False)
        out = run.stdout + run.stderr
        assert run.returncode == 0, out[-4000:]
        assert token not in out and key not in out
        tarballs = list(tmp_path.glob("doctor-spark-*.tar.gz"))
        assert len(tarballs) == 1 and "doctor tarball: %s" % tarballs[0] in out, out[-2000:]
        texts = {}
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                assert token not in member.name and key not in member.name
                if member.isfile():
                    texts[member.name.split("/", 1)[1]] = tar.extractfile(member).read().decode("utf-8", "replace")
        leaks = sorted(name for name, text in texts.items() if token in text or key in text)
        assert leaks == [], leaks
        # The secrets were there to redact: the planted line and the server_args line, each with its value replaced.
        assert "HF_TOKEN=<redacted>" in texts["lab-spark-02/etc-sglang-nccl.env"]
        for host in ("lab-spark-01", "lab-spark-02"):
            for name in ("kernel.txt", "gpu_info.json", "connectx_info.json", "etc-netplan-40-cx7.yaml",
                         "unit-status.txt", "unit-journal.txt", "versions.txt", "proc-meminfo", "disk-model-cache.txt"):
                assert "%s/%s" % (host, name) in texts, sorted(texts)
        findings = json.loads(texts["findings.json"])
        twin = [f for f in findings if f["host"] == "lab-spark-02" and f["code"] == "cx7-link-down"]
        assert twin and "enp1s0f1np1" in twin[0]["message"] and "Fix:" in twin[0]["message"], findings
        assert any(f["host"] == "lab-spark-01" and f["code"] == "sglang-unit-not-active" for f in findings), findings
        tail = out[out.rindex("doctor tarball: "):]
        assert "lab-spark-02" in tail and "[cx7-link-down]" in tail, tail
    finally:
        ssh("lab-spark-02", "printf '%%s' '%s' > %s" % (original.replace("'", "'\\''"), env_file))
        ssh("lab-spark-02", "ip link set enp1s0f1np1 up")
